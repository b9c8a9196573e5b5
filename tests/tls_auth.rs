//! TLS and authentication end to end: the TLS upgrade after INFO, mutual
//! TLS and certificate mapping, passwords, tokens and bcrypt, permissions,
//! the failed-login limiter, configuration reload, and the audit trail of
//! the real binary. Certificates are generated per test with
//! `rnats::tls::dev::DevPki` (and rcgen for special client certificates).
//!
//! Clients are async-nats where a real client's view matters, and raw TCP
//! or tokio-rustls connections where the exact protocol lines (or the TLS
//! parameters) are the point.

mod common;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use rnats::auth::{AuthConfig, AuthLimits, Permissions, Secret, SubjectPermission, UserEntry};
use rnats::tls::TlsOptions;
use rnats::tls::dev::{CertPair, DEV_ORG, DevOptions, DevPki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const AUTH_VIOLATION: &str = "-ERR 'Authorization Violation'";
const TLS_REQUIRED: &str = "-ERR 'Secure Connection - TLS Required'";

// ---------------------------------------------------------------------------
// Certificates.

/// A development PKI written to a scratch directory.
struct Pki {
    dir: TempDir,
    pki: DevPki,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let pki = DevPki::generate(&DevOptions::default()).expect("generate dev PKI");
        pki.write_to(&dir.0, false).expect("write dev PKI");
        Pki { dir, pki }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path("ca.pem")
    }

    fn client_cert(&self) -> PathBuf {
        self.dir.path("client-cert.pem")
    }

    fn client_key(&self) -> PathBuf {
        self.dir.path("client-key.pem")
    }

    /// Server TLS with this PKI's server certificate, no client certificates.
    fn tls(&self) -> TlsOptions {
        TlsOptions::new(
            self.dir.path("server-cert.pem"),
            self.dir.path("server-key.pem"),
        )
    }

    /// Server TLS requiring client certificates from this PKI's CA.
    fn verify(&self) -> TlsOptions {
        TlsOptions {
            ca_file: Some(self.ca()),
            verify: true,
            ..self.tls()
        }
    }

    /// A client certificate signed by this PKI's CA, valid from
    /// `from_days` to `to_days` relative to today (negative: in the past).
    fn issue_client(
        &self,
        cn: &str,
        email: Option<&str>,
        from_days: i64,
        to_days: i64,
    ) -> CertPair {
        use chrono::Datelike;
        use rcgen::{
            CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
            KeyUsagePurpose, SanType,
        };
        // The issuer is the dev CA: its key, and its subject exactly as
        // `DevPki::generate` writes it (chains are built by name).
        let ca_key = KeyPair::from_pem(&self.pki.ca.key_pem).expect("CA key");
        let mut ca_params = CertificateParams::default();
        let mut ca_dn = DistinguishedName::new();
        ca_dn.push(DnType::OrganizationName, DEV_ORG);
        ca_dn.push(DnType::CommonName, "rnats dev CA");
        ca_params.distinguished_name = ca_dn;
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, DEV_ORG);
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        if let Some(e) = email {
            params
                .subject_alt_names
                .push(SanType::Rfc822Name(e.to_string().try_into().expect("ia5")));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let day = |offset: i64| {
            let d = chrono::Utc::now() + chrono::Duration::days(offset);
            rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
        };
        params.not_before = day(from_days);
        params.not_after = day(to_days);
        let cert = params.signed_by(&key, &issuer).expect("sign client cert");
        CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Write a certificate pair next to the PKI; returns (cert, key) paths.
    fn write_pair(&self, name: &str, pair: &CertPair) -> (PathBuf, PathBuf) {
        let cert = self.dir.path(&format!("{name}-cert.pem"));
        let key = self.dir.path(&format!("{name}-key.pem"));
        std::fs::write(&cert, &pair.cert_pem).expect("write cert");
        std::fs::write(&key, &pair.key_pem).expect("write key");
        (cert, key)
    }
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// A rustls client configuration trusting `ca_pem`, with an optional
/// client certificate, limited to `versions`.
fn client_config(
    ca_pem: &str,
    client: Option<&CertPair>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem) {
        roots.add(c).expect("root certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("protocol versions")
    .with_root_certificates(roots);
    let config = match client {
        Some(pair) => builder
            .with_client_auth_cert(
                certs(&pair.cert_pem),
                PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("client key"),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

const ALL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
const TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

// ---------------------------------------------------------------------------
// A protocol client over any stream (used over TLS; plain TCP tests use
// `common::Raw`).

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

struct Proto<S> {
    s: S,
    buf: BytesMut,
}

/// A message as a raw client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivery {
    subject: String,
    sid: String,
    payload: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Proto<S> {
    fn new(s: S) -> Self {
        Proto {
            s,
            buf: BytesMut::with_capacity(4096),
        }
    }

    async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.s.write_all(data).await?;
        self.s.flush().await
    }

    /// The next line without CRLF; `Ok(None)` at EOF; `TimedOut` after
    /// `timeout`.
    async fn try_line(&mut self, timeout: Duration) -> io::Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(i + 1);
                return Ok(Some(
                    String::from_utf8_lossy(&line)
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                ));
            }
            self.buf.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf)).await {
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    async fn line(&mut self) -> String {
        match self.try_line(TIMEOUT).await {
            Ok(Some(l)) => l,
            Ok(None) => panic!("EOF while expecting a line"),
            Err(e) => panic!("reading a line: {e}"),
        }
    }

    async fn payload(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        while self.buf.len() < n + 2 {
            self.buf.reserve(16 * 1024);
            let r = tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf))
                .await
                .expect("payload timed out")
                .expect("reading payload");
            assert!(r > 0, "EOF inside a payload");
        }
        let mut p = self.buf.split_to(n + 2).to_vec();
        assert_eq!(&p[n..], b"\r\n");
        p.truncate(n);
        p
    }

    /// PING, then everything up to the PONG: other lines, and messages.
    async fn ping_collect(&mut self) -> (Vec<String>, Vec<Delivery>) {
        self.send(b"PING\r\n").await.expect("send PING");
        let mut lines = Vec::new();
        let mut msgs = Vec::new();
        // Bounded: each round consumes a line and `line` times out.
        for _ in 0..10_000 {
            let line = self.line().await;
            if line == "PONG" {
                return (lines, msgs);
            }
            if let Some(rest) = line.strip_prefix("MSG ") {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                let size: usize = parts.last().unwrap().parse().expect("size");
                let payload = self.payload(size).await;
                msgs.push(Delivery {
                    subject: parts[0].into(),
                    sid: parts[1].into(),
                    payload,
                });
            } else {
                lines.push(line);
            }
        }
        panic!("no PONG after 10000 lines");
    }

    /// Everything until the server closes (read errors count as closed:
    /// a TLS alert is how a refused handshake ends). Panics if still open
    /// after `TIMEOUT`.
    async fn expect_closed(&mut self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            self.buf.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf)).await {
                Err(_) => panic!(
                    "connection still open; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return String::from_utf8_lossy(&self.buf.split()).into_owned();
                }
                Ok(Ok(_)) => {}
            }
        }
    }
}

impl Proto<TlsStream> {
    fn local_addr(&self) -> SocketAddr {
        self.s.get_ref().0.local_addr().expect("local addr")
    }

    fn tls(&self) -> &rustls::ClientConnection {
        self.s.get_ref().1
    }
}

/// Connect over TCP, read INFO in clear, then run the TLS handshake.
/// Returns the INFO document and the handshake's result.
async fn tls_dial(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> (serde_json::Value, io::Result<Proto<TlsStream>>) {
    let raw = Raw::connect(addr).await;
    let info = raw.info_json();
    let Raw { stream, .. } = raw;
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let connector = tokio_rustls::TlsConnector::from(config);
    let result = tokio::time::timeout(TIMEOUT, connector.connect(name, stream))
        .await
        .expect("TLS handshake neither finished nor failed in time");
    (info, result.map(Proto::new))
}

/// A TLS connection that has sent CONNECT `json` and had it accepted.
async fn tls_client(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    json: &str,
) -> Proto<TlsStream> {
    let (_, conn) = tls_dial(addr, config).await;
    let mut c = conn.expect("TLS handshake");
    c.send(format!("CONNECT {json}\r\n").as_bytes())
        .await
        .expect("send CONNECT");
    let (lines, _) = c.ping_collect().await;
    assert!(lines.is_empty(), "CONNECT refused: {lines:?}");
    c
}

/// How a TLS login attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The client's handshake failed.
    HandshakeFailed,
    /// The handshake finished on the client's side, but the server then
    /// closed (or alerted) before answering; `String` is what came first.
    Closed(String),
    /// CONNECT and PING were answered with PONG.
    Served,
}

async fn tls_attempt(addr: SocketAddr, config: Arc<rustls::ClientConfig>, json: &str) -> Outcome {
    let (_, conn) = tls_dial(addr, config).await;
    let Ok(mut c) = conn else {
        return Outcome::HandshakeFailed;
    };
    if c.send(format!("CONNECT {json}\r\nPING\r\n").as_bytes())
        .await
        .is_err()
    {
        return Outcome::Closed(String::new());
    }
    match c.try_line(TIMEOUT).await {
        Ok(Some(l)) if l == "PONG" => Outcome::Served,
        Ok(Some(l)) => {
            let rest = c.expect_closed().await;
            Outcome::Closed(format!("{l}\r\n{rest}"))
        }
        Ok(None) => Outcome::Closed(String::new()),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            panic!("server neither answered nor closed")
        }
        Err(e) => Outcome::Closed(format!("read error: {e}")),
    }
}

fn is_refused(o: &Outcome) -> bool {
    !matches!(o, Outcome::Served)
}

// ---------------------------------------------------------------------------
// Server options and async-nats clients.

/// Limits for tests that fail logins on purpose: never ban loopback, and
/// no connection rate limit.
fn no_bans() -> AuthLimits {
    AuthLimits {
        max_failures: 0,
        max_conn_rate: 0,
        ..AuthLimits::default()
    }
}

fn secret(s: &str) -> Secret {
    Secret::parse(s).expect("secret")
}

fn single_user(user: &str, pass: &str) -> AuthConfig {
    AuthConfig {
        user: Some(user.into()),
        password: Some(secret(pass)),
        ..AuthConfig::default()
    }
}

fn user(name: &str, pass: Option<&str>, permissions: Option<Permissions>) -> UserEntry {
    UserEntry {
        user: name.into(),
        password: pass.map(secret),
        permissions,
        account: None,
    }
}

fn users(list: Vec<UserEntry>) -> AuthConfig {
    AuthConfig {
        users: list,
        ..AuthConfig::default()
    }
}

fn sp(allow: Option<&[&str]>, deny: &[&str]) -> Option<SubjectPermission> {
    Some(SubjectPermission {
        allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
        deny: deny.iter().map(|s| s.to_string()).collect(),
    })
}

fn with_auth(auth: AuthConfig) -> rnats::Options {
    rnats::Options {
        auth,
        auth_limits: no_bans(),
        ..opts()
    }
}

fn with_tls(tls: TlsOptions) -> rnats::Options {
    rnats::Options {
        tls: Some(tls),
        ..opts()
    }
}

fn tls_nats(pki: &Pki) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca())
        .require_tls(true)
}

fn mtls_nats(pki: &Pki, cert: PathBuf, key: PathBuf) -> async_nats::ConnectOptions {
    tls_nats(pki).add_client_certificate(cert, key)
}

/// async-nats must fail to connect (and must not hang).
async fn nats_refused(
    addr: SocketAddr,
    opts: async_nats::ConnectOptions,
) -> async_nats::ConnectError {
    let opts = opts.connection_timeout(Duration::from_secs(5));
    match tokio::time::timeout(TIMEOUT, opts.connect(format!("nats://{addr}"))).await {
        Err(_) => panic!("async-nats connect neither succeeded nor failed in time"),
        Ok(Ok(_)) => panic!("async-nats client was accepted"),
        Ok(Err(e)) => e,
    }
}

/// A message published on `client` comes back to its own subscription.
async fn round_trip(client: &async_nats::Client, payload: &'static [u8]) {
    let subject = client.new_inbox();
    let mut sub = client.subscribe(subject.clone()).await.expect("subscribe");
    client
        .publish(subject, Bytes::from_static(payload))
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    assert_eq!(&next_msg(&mut sub).await.payload[..], payload);
}

/// One client publishes, another receives, both through the server.
async fn pub_sub_between(a: &async_nats::Client, b: &async_nats::Client) {
    let mut sub = b.subscribe("tls.check").await.expect("subscribe");
    barrier(b).await;
    a.publish("tls.check", Bytes::from_static(b"over tls"))
        .await
        .expect("publish");
    barrier(a).await;
    let m = next_msg(&mut sub).await;
    assert_eq!(&m.payload[..], b"over tls");
}

/// The server side's negotiated TLS version for the connection whose peer
/// address is `local`.
fn server_tls_version(server: &rnats::Server, local: SocketAddr) -> Option<String> {
    server
        .ctx
        .conns
        .iter()
        .find(|c| c.value().peer == local)
        .and_then(|c| c.value().meta.lock().tls_version.clone())
}

fn server_user(server: &rnats::Server, local: SocketAddr) -> Option<String> {
    server
        .ctx
        .conns
        .iter()
        .find(|c| c.value().peer == local)
        .and_then(|c| c.value().meta.lock().user.clone())
}

fn connect_json(user: &str, pass: &str) -> String {
    serde_json::json!({"verbose": false, "pedantic": false, "user": user, "pass": pass}).to_string()
}

fn token_json(token: &str) -> String {
    serde_json::json!({"verbose": false, "pedantic": false, "auth_token": token}).to_string()
}

/// A plain-TCP CONNECT that must be refused with 'Authorization Violation'
/// and a close.
async fn assert_login_refused(addr: SocketAddr, json: &str) {
    let mut raw = Raw::connect(addr).await;
    raw.send(format!("CONNECT {json}\r\nPING\r\n").as_bytes())
        .await;
    let (got, end) = raw.read_to_end(TIMEOUT).await;
    assert_eq!(
        (String::from_utf8_lossy(&got).into_owned(), end),
        (format!("{AUTH_VIOLATION}\r\n"), End::Closed),
        "CONNECT {json}"
    );
}

/// A plain-TCP CONNECT that must be accepted.
async fn assert_login_ok(addr: SocketAddr, json: &str) -> Raw {
    Raw::handshake(addr, json).await
}

// ---------------------------------------------------------------------------
// TLS.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_refuses_plain_clients_and_serves_tls_clients() {
    let pki = Pki::new("tls-req");
    let server = start(with_tls(pki.tls())).await;
    let addr = server.client_addr();

    // INFO goes out in clear and says TLS is required.
    let mut plain = Raw::connect(addr).await;
    let info = plain.info_json();
    assert_eq!(info["tls_required"], true, "{info}");
    assert!(info.get("auth_required").is_none(), "{info}");
    assert!(info.get("tls_verify").is_none(), "{info}");

    // A client that answers in plain text is told why, in plain text.
    plain
        .send(format!("CONNECT {CONNECT}\r\n").as_bytes())
        .await;
    let got = plain.expect_closed().await;
    assert_eq!(String::from_utf8_lossy(&got), format!("{TLS_REQUIRED}\r\n"));

    // async-nats upgrades on its own when INFO says so, but without the
    // dev CA it cannot trust the server: no connection.
    nats_refused(addr, async_nats::ConnectOptions::new()).await;

    // With the CA: a working connection, TLS 1.3 by default.
    let a = nats_with(addr, tls_nats(&pki)).await;
    let b = nats_with(addr, tls_nats(&pki)).await;
    pub_sub_between(&a, &b).await;
    round_trip(&a, b"echo").await;
    assert_eventually(|| server.ctx.conns.len() == 2, TIMEOUT, "two TLS clients").await;
    for c in server.ctx.conns.iter() {
        let meta = c.value().meta.lock().clone();
        assert_eq!(meta.tls_version.as_deref(), Some("1.3"));
        assert!(meta.tls_cipher.is_some_and(|s| s.starts_with("TLS13_")));
    }

    // A raw rustls client offering 1.2 and 1.3 gets 1.3.
    let c = tls_client(
        addr,
        client_config(&pki.pki.ca.cert_pem, None, ALL_VERSIONS),
        CONNECT,
    )
    .await;
    assert_eq!(
        c.tls().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        server_tls_version(&server, c.local_addr()).as_deref(),
        Some("1.3")
    );

    // TLS 1.2 is allowed by default.
    let mut c12 = tls_client(
        addr,
        client_config(&pki.pki.ca.cert_pem, None, TLS12_ONLY),
        CONNECT,
    )
    .await;
    assert_eq!(
        c12.tls().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        server_tls_version(&server, c12.local_addr()).as_deref(),
        Some("1.2")
    );
    c12.send(b"SUB over.12 1\r\nPUB over.12 2\r\nhi\r\n")
        .await
        .unwrap();
    let (lines, msgs) = c12.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].payload, b"hi");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_refuses_tls12_clients() {
    let pki = Pki::new("tls-min13");
    let server = start(with_tls(TlsOptions {
        min_version: Some("1.3".into()),
        ..pki.tls()
    }))
    .await;
    let addr = server.client_addr();
    let ca = &pki.pki.ca.cert_pem;

    let o = tls_attempt(addr, client_config(ca, None, TLS12_ONLY), CONNECT).await;
    assert_eq!(o, Outcome::HandshakeFailed);
    // The refused connection is gone from the server.
    assert_eventually(|| server.ctx.conns.is_empty(), TIMEOUT, "no connections").await;

    let c = tls_client(addr, client_config(ca, None, ALL_VERSIONS), CONNECT).await;
    assert_eq!(
        c.tls().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_timeout_closes_stalled_clients() {
    let timeout = Duration::from_millis(600);
    let pki = Pki::new("tls-timeout");
    let server = start(with_tls(TlsOptions {
        timeout,
        ..pki.tls()
    }))
    .await;
    let addr = server.client_addr();

    let started = Instant::now();
    // Reads INFO, then says nothing at all.
    let mut silent = Raw::connect(addr).await;
    // Starts a TLS record (handshake type, version) and stalls.
    let mut partial = Raw::connect(addr).await;
    partial.send(&[0x16, 0x03, 0x01]).await;
    // A client that completes its handshake in time is not affected.
    let mut good = tls_client(
        addr,
        client_config(&pki.pki.ca.cert_pem, None, ALL_VERSIONS),
        CONNECT,
    )
    .await;

    let (silent_end, partial_end) = tokio::join!(
        async {
            let got = silent.expect_closed().await;
            (got, started.elapsed())
        },
        async {
            let got = partial.expect_closed().await;
            (got, started.elapsed())
        }
    );
    for (what, (got, elapsed)) in [("silent", silent_end), ("partial", partial_end)] {
        assert!(got.is_empty(), "{what}: unexpected bytes {got:?}");
        assert!(elapsed >= timeout, "{what}: closed too early: {elapsed:?}");
        // One deadline for the whole upgrade: not one for waiting for the
        // first byte and another for the handshake after it.
        assert!(
            elapsed < timeout + Duration::from_millis(500),
            "{what}: closed only after {elapsed:?} (TLS timeout {timeout:?})"
        );
    }
    let (lines, _) = good.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eventually(
        || server.ctx.conns.len() == 1,
        TIMEOUT,
        "only the good client",
    )
    .await;
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Mutual TLS.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_good_certificates_and_refuses_the_rest() {
    let pki = Pki::new("mtls");
    let server = start(with_tls(pki.verify())).await;
    let addr = server.client_addr();
    let ca = &pki.pki.ca.cert_pem;

    let raw = Raw::connect(addr).await;
    let info = raw.info_json();
    assert_eq!(info["tls_required"], true, "{info}");
    assert_eq!(info["tls_verify"], true, "{info}");
    drop(raw);

    // A good certificate: served, and the server knows who it is.
    let a = nats_with(addr, mtls_nats(&pki, pki.client_cert(), pki.client_key())).await;
    let b = nats_with(addr, mtls_nats(&pki, pki.client_cert(), pki.client_key())).await;
    pub_sub_between(&a, &b).await;
    let c = tls_client(
        addr,
        client_config(ca, Some(&pki.pki.client), ALL_VERSIONS),
        CONNECT,
    )
    .await;
    let identity = server
        .ctx
        .conns
        .iter()
        .find(|x| x.value().peer == c.local_addr())
        .and_then(|x| x.value().tls_identity.lock().clone())
        .expect("client certificate identity");
    assert_eq!(identity.subject, format!("CN=alice,O={DEV_ORG}"));
    assert_eq!(identity.emails, ["alice@example.com"]);
    drop(c);
    assert_eventually(|| server.ctx.conns.len() == 2, TIMEOUT, "two clients").await;

    // No certificate.
    nats_refused(addr, tls_nats(&pki)).await;
    for versions in [ALL_VERSIONS, TLS12_ONLY] {
        let o = tls_attempt(addr, client_config(ca, None, versions), CONNECT).await;
        assert!(is_refused(&o), "no certificate: {o:?}");
    }

    // A certificate from a CA the server does not trust.
    let other = Pki::new("mtls-other");
    nats_refused(
        addr,
        mtls_nats(&pki, other.client_cert(), other.client_key()),
    )
    .await;
    let o = tls_attempt(
        addr,
        client_config(ca, Some(&other.pki.client), ALL_VERSIONS),
        CONNECT,
    )
    .await;
    assert!(is_refused(&o), "untrusted CA: {o:?}");

    // An expired certificate from the right CA is refused; the same
    // certificate made valid today is served, so expiry is the reason.
    let expired = pki.issue_client("alice", Some("alice@example.com"), -10, -2);
    let current = pki.issue_client("alice", Some("alice@example.com"), -1, 2);
    let o = tls_attempt(
        addr,
        client_config(ca, Some(&expired), ALL_VERSIONS),
        CONNECT,
    )
    .await;
    assert!(is_refused(&o), "expired certificate: {o:?}");
    let (cert, key) = pki.write_pair("expired", &expired);
    nats_refused(addr, mtls_nats(&pki, cert, key)).await;
    let o = tls_attempt(
        addr,
        client_config(ca, Some(&current), ALL_VERSIONS),
        CONNECT,
    )
    .await;
    assert_eq!(o, Outcome::Served, "current certificate");

    // Refused handshakes leave nothing behind; the good clients still work.
    assert_eventually(
        || server.ctx.conns.len() == 2,
        TIMEOUT,
        "only the good clients",
    )
    .await;
    pub_sub_between(&b, &a).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_map_applies_the_mapped_users_permissions() {
    let pki = Pki::new("tls-map");
    let bob_dn = format!("CN=bob,O={DEV_ORG}");
    let server = start(rnats::Options {
        tls: Some(TlsOptions {
            verify_and_map: true,
            ..pki.verify()
        }),
        auth: users(vec![
            // Mapped by the SAN e-mail of the dev client certificate.
            user(
                "alice@example.com",
                None,
                Some(Permissions {
                    publish: sp(None, &["secret.>"]),
                    ..Permissions::default()
                }),
            ),
            // Mapped by subject DN (bob's certificate has no e-mail).
            user(
                &bob_dn,
                None,
                Some(Permissions {
                    publish: sp(Some(&["bob.>"]), &[]),
                    ..Permissions::default()
                }),
            ),
        ]),
        auth_limits: no_bans(),
        ..opts()
    })
    .await;
    let addr = server.client_addr();
    let ca = &pki.pki.ca.cert_pem;
    let alice = client_config(ca, Some(&pki.pki.client), ALL_VERSIONS);
    let bob_pair = pki.issue_client("bob", None, -1, 30);
    let bob = client_config(ca, Some(&bob_pair), ALL_VERSIONS);

    let (info, _) = tls_dial(addr, alice.clone()).await;
    assert_eq!(info["auth_required"], true, "{info}");
    assert_eq!(info["tls_verify"], true, "{info}");

    // No credentials in CONNECT: the certificate is the login.
    let mut watcher = tls_client(addr, alice.clone(), CONNECT).await;
    watcher.send(b"SUB > 1\r\n").await.unwrap();
    let (lines, _) = watcher.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(
        server_user(&server, watcher.local_addr()).as_deref(),
        Some("alice@example.com")
    );

    let mut a = tls_client(addr, alice.clone(), CONNECT).await;
    a.send(b"PUB ok 2\r\nhi\r\nPUB secret.x 6\r\nhidden\r\n")
        .await
        .unwrap();
    let (lines, _) = a.ping_collect().await;
    assert_eq!(
        lines,
        [r#"-ERR 'Permissions Violation for Publish to "secret.x"'"#]
    );

    let mut b = tls_client(addr, bob.clone(), CONNECT).await;
    assert_eq!(
        server_user(&server, b.local_addr()).as_deref(),
        Some(bob_dn.as_str())
    );
    b.send(b"PUB bob.1 3\r\nbob\r\nPUB ok 4\r\nnope\r\n")
        .await
        .unwrap();
    let (lines, _) = b.ping_collect().await;
    assert_eq!(
        lines,
        [r#"-ERR 'Permissions Violation for Publish to "ok"'"#]
    );

    // Only the permitted messages went through (a violation is not fatal:
    // both publishers answered PING afterwards).
    let (lines, msgs) = watcher.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    let got: Vec<(&str, &[u8])> = msgs
        .iter()
        .map(|m| (m.subject.as_str(), &m.payload[..]))
        .collect();
    assert_eq!(got, [("ok", &b"hi"[..]), ("bob.1", &b"bob"[..])]);

    // A trusted certificate that maps to no user: refused at CONNECT.
    let mallory = pki.issue_client("mallory", Some("mallory@example.com"), -1, 30);
    let o = tls_attempt(
        addr,
        client_config(ca, Some(&mallory), ALL_VERSIONS),
        CONNECT,
    )
    .await;
    assert_eq!(o, Outcome::Closed(format!("{AUTH_VIOLATION}\r\n")));
    assert_eventually(
        || server.ctx.conns.len() == 3,
        TIMEOUT,
        "three mapped clients",
    )
    .await;
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Passwords and tokens.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_user_and_password() {
    let server = start(with_auth(single_user("derek", "s3cr3t-plain"))).await;
    let addr = server.client_addr();

    let raw = Raw::connect(addr).await;
    assert_eq!(raw.info_json()["auth_required"], true);
    drop(raw);

    let ok =
        async_nats::ConnectOptions::new().user_and_password("derek".into(), "s3cr3t-plain".into());
    let c = nats_with(addr, ok).await;
    round_trip(&c, b"authorized").await;

    let mut raw = assert_login_ok(addr, &connect_json("derek", "s3cr3t-plain")).await;
    let (lines, _) = raw.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");

    assert_login_refused(addr, &connect_json("derek", "wrong")).await;
    assert_login_refused(addr, &connect_json("someone", "s3cr3t-plain")).await;
    assert_login_refused(addr, &connect_json("derek", "")).await;
    // Missing credentials altogether.
    assert_login_refused(addr, CONNECT).await;
    // A token is not a password.
    assert_login_refused(addr, &token_json("s3cr3t-plain")).await;

    let e = nats_refused(
        addr,
        async_nats::ConnectOptions::new().user_and_password("derek".into(), "nope".into()),
    )
    .await;
    assert_eq!(
        e.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
    );
    nats_refused(addr, async_nats::ConnectOptions::new()).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bcrypt_password() {
    let hash = bcrypt::hash("hashed-pw", 4).expect("bcrypt");
    let server = start(with_auth(single_user("derek", &hash))).await;
    let addr = server.client_addr();

    let ok =
        async_nats::ConnectOptions::new().user_and_password("derek".into(), "hashed-pw".into());
    let c = nats_with(addr, ok).await;
    round_trip(&c, b"bcrypt").await;
    assert_login_ok(addr, &connect_json("derek", "hashed-pw")).await;

    assert_login_refused(addr, &connect_json("derek", "hashed-pwx")).await;
    // The hash itself is not the password.
    assert_login_refused(addr, &connect_json("derek", &hash)).await;
    assert_login_refused(addr, &connect_json("nobody", "hashed-pw")).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_token() {
    let server = start(with_auth(AuthConfig {
        token: Some(secret("tok-123-plain")),
        ..AuthConfig::default()
    }))
    .await;
    let addr = server.client_addr();

    let c = nats_with(
        addr,
        async_nats::ConnectOptions::new().token("tok-123-plain".into()),
    )
    .await;
    round_trip(&c, b"token").await;
    assert_login_ok(addr, &token_json("tok-123-plain")).await;

    assert_login_refused(addr, &token_json("tok-123-plainx")).await;
    assert_login_refused(addr, CONNECT).await;
    // The token in the password field is not a token.
    assert_login_refused(addr, &connect_json("x", "tok-123-plain")).await;
    let e = nats_refused(
        addr,
        async_nats::ConnectOptions::new().token("wrong".into()),
    )
    .await;
    assert_eq!(
        e.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bcrypt_token() {
    let hash = bcrypt::hash("tok-hashed", 4).expect("bcrypt");
    let server = start(with_auth(AuthConfig {
        token: Some(secret(&hash)),
        ..AuthConfig::default()
    }))
    .await;
    let addr = server.client_addr();

    let c = nats_with(
        addr,
        async_nats::ConnectOptions::new().token("tok-hashed".into()),
    )
    .await;
    round_trip(&c, b"bcrypt token").await;
    assert_login_refused(addr, &token_json("tok-hashe")).await;
    assert_login_refused(addr, &token_json(&hash)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_array_checks_each_users_own_password() {
    let bob_hash = bcrypt::hash("bob-pw", 4).expect("bcrypt");
    let server = start(with_auth(users(vec![
        user("alice", Some("alice-pw"), None),
        user("bob", Some(&bob_hash), None),
    ])))
    .await;
    let addr = server.client_addr();

    let mut alice = assert_login_ok(addr, &connect_json("alice", "alice-pw")).await;
    let mut bob = assert_login_ok(addr, &connect_json("bob", "bob-pw")).await;
    assert_eq!(
        server_user(&server, alice.stream.local_addr().unwrap()).as_deref(),
        Some("alice")
    );
    assert_eq!(
        server_user(&server, bob.stream.local_addr().unwrap()).as_deref(),
        Some("bob")
    );
    // Users of one server see each other's messages (one account).
    bob.send(b"SUB shared 1\r\n").await;
    bob.ping_collect().await;
    alice.send(b"PUB shared 5\r\nhello\r\n").await;
    alice.ping_collect().await;
    let (_, msgs) = bob.ping_collect().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].payload, b"hello");

    assert_login_refused(addr, &connect_json("alice", "bob-pw")).await;
    assert_login_refused(addr, &connect_json("bob", "alice-pw")).await;
    assert_login_refused(addr, &connect_json("carol", "alice-pw")).await;
    assert_login_refused(addr, CONNECT).await;

    let c = nats_with(
        addr,
        async_nats::ConnectOptions::new().user_and_password("bob".into(), "bob-pw".into()),
    )
    .await;
    round_trip(&c, b"bob via async-nats").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_before_connect_are_authorization_violations() {
    let server = start(with_auth(single_user("u", "p"))).await;
    let addr = server.client_addr();
    for op in [&b"PING\r\n"[..], b"SUB foo 1\r\n", b"PUB foo 2\r\nhi\r\n"] {
        let mut raw = Raw::connect(addr).await;
        raw.send(op).await;
        let got = raw.expect_closed().await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("{AUTH_VIOLATION}\r\n"),
            "{}",
            String::from_utf8_lossy(op)
        );
    }
    assert_eventually(|| server.ctx.conns.is_empty(), TIMEOUT, "all closed").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_timeout_closes_clients_that_never_connect() {
    let timeout = Duration::from_millis(300);
    let server = start(rnats::Options {
        auth_timeout: timeout,
        ..with_auth(single_user("u", "p"))
    })
    .await;
    let addr = server.client_addr();
    let started = Instant::now();
    let mut silent = Raw::connect(addr).await;
    let mut polite = assert_login_ok(addr, &connect_json("u", "p")).await;
    let got = silent.expect_closed().await;
    let elapsed = started.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR 'Authentication Timeout'\r\n"
    );
    assert!(elapsed >= timeout, "closed too early: {elapsed:?}");
    let (lines, _) = polite.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Permissions.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_deny_beats_allow_and_filter_wildcard_deliveries() {
    let server = start(with_auth(users(vec![
        user(
            "limited",
            Some("lpw"),
            Some(Permissions {
                publish: sp(Some(&["app.>"]), &["app.secret"]),
                subscribe: sp(Some(&["admin.>", "app.>"]), &["admin.x"]),
                allow_responses: None,
            }),
        ),
        user("root", Some("rpw"), None),
    ])))
    .await;
    let addr = server.client_addr();
    let mut limited = assert_login_ok(addr, &connect_json("limited", "lpw")).await;
    let mut root = assert_login_ok(addr, &connect_json("root", "rpw")).await;

    limited
        .send(b"SUB admin.x 1\r\nSUB other 2\r\nSUB > 3\r\nSUB admin.y 4\r\nSUB admin.* 5\r\nSUB admin.> 6\r\n")
        .await;
    let (lines, _) = limited.ping_collect().await;
    assert_eq!(
        lines,
        [
            // Denied although admin.> allows it: deny beats allow.
            r#"-ERR 'Permissions Violation for Subscription to "admin.x"'"#,
            // Not in the allow list.
            r#"-ERR 'Permissions Violation for Subscription to "other"'"#,
            r#"-ERR 'Permissions Violation for Subscription to ">"'"#,
        ]
    );
    // Only the three allowed subscriptions exist.
    assert_eventually(|| sub_count(&server) == 3, TIMEOUT, "subscription count").await;

    // Wildcards overlapping the denied subject: allowed, but messages on
    // admin.x never reach them.
    root.send(b"PUB admin.x 6\r\nsecret\r\nPUB admin.y 4\r\nfine\r\n")
        .await;
    root.ping_collect().await;
    let (lines, msgs) = limited.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    let mut got: Vec<(String, String, Vec<u8>)> = msgs
        .into_iter()
        .map(|m| (m.subject, m.sid, m.payload))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("admin.y".into(), "4".into(), b"fine".to_vec()),
            ("admin.y".into(), "5".into(), b"fine".to_vec()),
            ("admin.y".into(), "6".into(), b"fine".to_vec()),
        ]
    );

    // Publish: deny beats allow, and outside the allow list is refused;
    // the connection stays up.
    root.send(b"SUB app.> 1\r\n").await;
    root.ping_collect().await;
    limited
        .send(b"PUB app.secret 1\r\nx\r\nPUB app.ok 1\r\ny\r\nPUB elsewhere 1\r\nz\r\n")
        .await;
    let (lines, _) = limited.ping_collect().await;
    assert_eq!(
        lines,
        [
            r#"-ERR 'Permissions Violation for Publish to "app.secret"'"#,
            r#"-ERR 'Permissions Violation for Publish to "elsewhere"'"#,
        ]
    );
    let (_, msgs) = root.ping_collect().await;
    let subjects: Vec<&str> = msgs.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["app.ok"]);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Failed-login limiter.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_ban_the_user_from_that_source_until_the_ban_ends() {
    let ban = Duration::from_secs(1);
    let server = start(rnats::Options {
        auth: single_user("u", "good"),
        auth_limits: AuthLimits {
            max_failures: 3,
            window: Duration::from_secs(10),
            ban,
            ..AuthLimits::default()
        },
        ..opts()
    })
    .await;
    let addr = server.client_addr();
    let good = connect_json("u", "good");
    let bad = connect_json("u", "bad");

    assert_login_refused(addr, &bad).await;
    assert_login_refused(addr, &bad).await;
    // Two failures: not banned yet. A success does not reset the count.
    assert_login_ok(addr, &good).await;
    let third = Instant::now();
    assert_login_refused(addr, &bad).await;

    // Banned: the connection is admitted (a ban is per user, decided at
    // CONNECT), but even good credentials are refused, as any failed
    // login is: 'Authorization Violation'.
    assert_login_refused(addr, &good).await;
    assert_login_refused(addr, &good).await;
    assert!(server.ctx.auth().limiter().stats().banned_refusals >= 2);

    // After the ban: good credentials work again.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "still banned after {TIMEOUT:?}");
        let mut raw = Raw::connect(addr).await;
        raw.send(format!("CONNECT {good}\r\nPING\r\n").as_bytes())
            .await;
        let first = raw.line().await.unwrap_or_default();
        if first == AUTH_VIOLATION {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(first, "PONG");
        break;
    }
    assert!(
        third.elapsed() >= ban,
        "ban lifted after {:?}",
        third.elapsed()
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Reload.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_changed_password_drops_clients_using_the_old_one() {
    let server = start(with_auth(users(vec![
        user("a", Some("pw1"), None),
        user("b", Some("bpw"), None),
    ])))
    .await;
    let addr = server.client_addr();
    let mut old_a = assert_login_ok(addr, &connect_json("a", "pw1")).await;
    let mut still_b = assert_login_ok(addr, &connect_json("b", "bpw")).await;
    let old_local = old_a.stream.local_addr().unwrap();
    assert!(cid_of(&server, old_local).is_some());

    server
        .reload(with_auth(users(vec![
            user("a", Some("pw2"), None),
            user("b", Some("bpw"), None),
        ])))
        .expect("reload");

    let got = old_a.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("{AUTH_VIOLATION}\r\n")
    );
    assert_eventually(
        || cid_of(&server, old_local).is_none(),
        TIMEOUT,
        "old client removed",
    )
    .await;

    assert_login_refused(addr, &connect_json("a", "pw1")).await;
    let c = nats_with(
        addr,
        async_nats::ConnectOptions::new().user_and_password("a".into(), "pw2".into()),
    )
    .await;
    round_trip(&c, b"new password").await;
    // A client whose credentials are still valid stays connected.
    let (lines, _) = still_b.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert!(cid_of(&server, still_b.stream.local_addr().unwrap()).is_some());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_disconnects_are_not_counted_as_failed_logins() {
    // Three clients of one host lose their login in a password rotation.
    // The server dropping them is not three failed login attempts: the
    // host must not be banned from logging in with the new password.
    let limits = AuthLimits {
        max_failures: 2,
        window: Duration::from_secs(60),
        ban: Duration::from_secs(60),
        max_conn_rate: 0,
        ..AuthLimits::default()
    };
    let server = start(rnats::Options {
        auth: single_user("a", "pw1"),
        auth_limits: limits.clone(),
        ..opts()
    })
    .await;
    let addr = server.client_addr();
    let mut old = Vec::new();
    for _ in 0..3 {
        old.push(assert_login_ok(addr, &connect_json("a", "pw1")).await);
    }
    server
        .reload(rnats::Options {
            auth: single_user("a", "pw2"),
            auth_limits: limits,
            ..opts()
        })
        .expect("reload");
    for c in &mut old {
        let got = c.expect_closed().await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("{AUTH_VIOLATION}\r\n")
        );
    }
    let mut fresh = assert_login_ok(addr, &connect_json("a", "pw2")).await;
    let (lines, _) = fresh.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(server.ctx.auth().limiter().stats().bans, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_new_certificates_keeps_existing_tls_connections() {
    let first = Pki::new("reload-tls-1");
    let second = Pki::new("reload-tls-2");
    let server = start(with_tls(first.tls())).await;
    let addr = server.client_addr();

    let old = nats_with(addr, tls_nats(&first)).await;
    let mut old_raw = tls_client(
        addr,
        client_config(&first.pki.ca.cert_pem, None, ALL_VERSIONS),
        CONNECT,
    )
    .await;
    let old_cert = old_raw.tls().peer_certificates().expect("server cert")[0].clone();
    assert_eq!(old_cert, certs(&first.pki.server.cert_pem)[0]);

    server.reload(with_tls(second.tls())).expect("reload");

    // New connections get the new certificate: clients trusting only the
    // first CA fail, clients trusting the second succeed.
    let o = tls_attempt(
        addr,
        client_config(&first.pki.ca.cert_pem, None, ALL_VERSIONS),
        CONNECT,
    )
    .await;
    assert_eq!(o, Outcome::HandshakeFailed);
    nats_refused(addr, tls_nats(&first)).await;
    let new_raw = tls_client(
        addr,
        client_config(&second.pki.ca.cert_pem, None, ALL_VERSIONS),
        CONNECT,
    )
    .await;
    let new_cert = new_raw.tls().peer_certificates().expect("server cert")[0].clone();
    assert_eq!(new_cert, certs(&second.pki.server.cert_pem)[0]);
    let new = nats_with(addr, tls_nats(&second)).await;

    // Connections made before the reload are still up and working.
    let (lines, _) = old_raw.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    pub_sub_between(&old, &new).await;
    pub_sub_between(&new, &old).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_pinned_certs_drops_clients_whose_certificate_is_not_pinned() {
    // nats-server re-checks pinned_certs on reload and disconnects the
    // clients whose certificate is no longer in the list.
    let pki = Pki::new("pin-reload");
    let server = start(with_tls(pki.verify())).await;
    let addr = server.client_addr();
    let ca = &pki.pki.ca.cert_pem;
    let bob = pki.issue_client("bob", None, -1, 30);
    let mut alice_c = tls_client(
        addr,
        client_config(ca, Some(&pki.pki.client), ALL_VERSIONS),
        CONNECT,
    )
    .await;
    let mut bob_c = tls_client(addr, client_config(ca, Some(&bob), ALL_VERSIONS), CONNECT).await;
    let alice_pin = rnats::tls::spki_sha256_hex(&certs(&pki.pki.client.cert_pem)[0]).unwrap();

    let mut pinned = pki.verify();
    pinned.pinned_certs = vec![alice_pin];
    server.reload(with_tls(pinned)).expect("reload");

    let got = bob_c.expect_closed().await;
    assert_eq!(got, format!("{AUTH_VIOLATION}\r\n"));
    let (lines, _) = alice_c.ping_collect().await;
    assert!(lines.is_empty(), "the pinned client stays: {lines:?}");
    assert_eventually(|| server.ctx.conns.len() == 1, TIMEOUT, "only alice left").await;
    // A new connection with the unpinned certificate is refused too.
    let o = tls_attempt(addr, client_config(ca, Some(&bob), ALL_VERSIONS), CONNECT).await;
    assert!(is_refused(&o), "unpinned certificate: {o:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_in_flight_when_its_certificate_is_unpinned_is_closed() {
    // The reload's scan skips clients still logging in; their login must
    // check the pins of the configuration current when it finishes.
    let pki = Pki::new("pin-inflight");
    // Cost 12: the CONNECT's bcrypt runs long enough for the reload to
    // land while it does.
    let slow = bcrypt::hash("pw", 12).unwrap();
    let opts_with = |pinned: Vec<String>| {
        let mut tls = pki.verify();
        tls.pinned_certs = pinned;
        rnats::Options {
            tls: Some(tls),
            ..with_auth(single_user("a", &slow))
        }
    };
    let server = start(opts_with(Vec::new())).await;
    let addr = server.client_addr();
    let ca = &pki.pki.ca.cert_pem;
    let bob = pki.issue_client("bob", None, -1, 30);
    let (_, conn) = tls_dial(addr, client_config(ca, Some(&bob), ALL_VERSIONS)).await;
    let mut c = conn.expect("TLS handshake");
    c.send(format!("CONNECT {}\r\nPING\r\n", connect_json("a", "pw")).as_bytes())
        .await
        .expect("send CONNECT");
    let alice_pin = rnats::tls::spki_sha256_hex(&certs(&pki.pki.client.cert_pem)[0]).unwrap();
    server.reload(opts_with(vec![alice_pin])).expect("reload");
    let got = c.expect_closed().await;
    assert!(got.ends_with(&format!("{AUTH_VIOLATION}\r\n")), "{got:?}");
    assert!(!got.contains("PONG"), "{got:?}");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Audit trail (the real binary: the audit events go to its log file).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_records_logins_without_secrets() {
    const GOOD: &str = "Plain-Secret-31337";
    const WRONG: &str = "Wrong-Guess-4242";
    let dir = TempDir::new("audit");
    let conf = dir.path("server.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:-1\"\n\
             authorization {{\n  users: [\n    {{ user: auditor, password: \"{GOOD}\" }}\n  ]\n}}\n\
             auth_limits {{ max_failures: 0 }}\n"
        ),
    )
    .expect("write config");
    let log = dir.path("server.log");
    // -V: even the protocol trace must not show the credentials.
    let mut proc = Proc::spawn(RNATS_BIN, &["-c", conf.to_str().unwrap(), "-V"], &log);
    let port = proc.client_port().await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    assert_login_refused(addr, &connect_json("auditor", WRONG)).await;
    proc.wait_log("authentication failed").await;
    let mut ok = assert_login_ok(addr, &connect_json("auditor", GOOD)).await;
    ok.ping_collect().await;
    let text = proc.wait_log("authentication ok").await;

    let audit: Vec<&str> = text.lines().filter(|l| l.contains("result=")).collect();
    assert_eq!(audit.len(), 2, "one audit line per login:\n{text}");
    let failed: Vec<&&str> = audit.iter().filter(|l| l.contains("failed")).collect();
    let passed: Vec<&&str> = audit
        .iter()
        .filter(|l| l.contains("authentication ok"))
        .collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert_eq!(passed.len(), 1, "{text}");
    for line in &audit {
        for field in ["method=", "user=", "result=", "client=127.0.0.1:"] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
        assert!(line.contains("auditor"), "{line}");
    }
    assert!(failed[0].contains("[WRN]"), "{}", failed[0]);
    assert!(failed[0].contains("wrong password"), "{}", failed[0]);
    assert!(passed[0].contains("[INF]"), "{}", passed[0]);
    for secret in [GOOD, WRONG] {
        assert!(!text.contains(secret), "log contains {secret:?}:\n{text}");
    }
    // The trace did run (so the check above covered traced CONNECTs).
    assert!(text.contains("CONNECT [REDACTED]"), "{text}");
}
