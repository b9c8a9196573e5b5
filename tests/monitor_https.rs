//! The HTTPS monitoring port and the rnats-specific `monitor_auth`:
//! /varz over TLS, plain HTTP refused on that port, Basic and Bearer
//! credentials (plain and bcrypt), /healthz open for probes, and a
//! client-certificate requirement.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rnats::auth::Secret;
use rnats::config::MonitorAuth;
use rnats::tls::TlsOptions;
use rnats::tls::dev::{DevOptions, DevPki};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "rnats-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let pki = DevPki::generate(&DevOptions::default()).expect("dev PKI");
        pki.write_to(&dir, false).expect("write PKI");
        Pki { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(pki: &Pki, monitor_auth: Option<MonitorAuth>) -> rnats::Server {
    let opts = rnats::Options {
        host: "127.0.0.1".into(),
        port: -1,
        http_host: "127.0.0.1".into(),
        https_port: -1,
        tls: Some(TlsOptions::new(
            pki.path("server-cert.pem"),
            pki.path("server-key.pem"),
        )),
        monitor_auth,
        ..Default::default()
    };
    rnats::Server::start(opts).await.expect("server starts")
}

fn connector(pki: &Pki, client_cert: bool) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = if client_cert {
        let certs = CertificateDer::pem_file_iter(pki.path("client-cert.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.path("client-key.pem")).unwrap();
        builder.with_client_auth_cert(certs, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// GET over HTTPS; returns (status code, body), or None when the server
/// refused the TLS session.
async fn get(
    server: &rnats::Server,
    conn: &tokio_rustls::TlsConnector,
    path: &str,
    auth: Option<&str>,
) -> Option<(u16, String)> {
    let addr = server.https_addr.expect("https port");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(TIMEOUT, conn.connect(name, tcp))
        .await
        .unwrap()
        .ok()?;
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.ok()?;
    let mut resp = Vec::new();
    tokio::time::timeout(TIMEOUT, tls.read_to_end(&mut resp))
        .await
        .unwrap()
        .ok()?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("{user}:{pass}").as_bytes())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_monitor_serves_varz_and_refuses_plain_http() {
    let pki = Pki::new("https");
    let server = start(&pki, None).await;
    let conn = connector(&pki, false);
    let (status, body) = get(&server, &conn, "/varz", None).await.expect("TLS");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["server_id"], serde_json::json!(server.ctx.server_id));
    assert_eq!(v["tls_required"], serde_json::json!(true));

    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let mut plain = TcpStream::connect(server.https_addr.unwrap())
        .await
        .unwrap();
    plain
        .write_all(b"GET /varz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, plain.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
        "plain HTTP was served on the HTTPS port"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_auth_requires_credentials_but_leaves_healthz_open() {
    let pki = Pki::new("monauth");
    let hash = bcrypt::hash("bcrypt-pass", 4).unwrap();
    let server = start(
        &pki,
        Some(MonitorAuth {
            user: Some("admin".into()),
            password: Some(Secret::parse(&hash).unwrap()),
            token: Some(Secret::parse("the-token").unwrap()),
            ca_file: None,
            healthz_open: true,
        }),
    )
    .await;
    let conn = connector(&pki, false);
    assert_eq!(get(&server, &conn, "/healthz", None).await.unwrap().0, 200);
    assert_eq!(get(&server, &conn, "/varz", None).await.unwrap().0, 401);
    assert_eq!(
        get(&server, &conn, "/connz", Some(&basic("admin", "wrong")))
            .await
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        get(
            &server,
            &conn,
            "/connz",
            Some(&basic("root", "bcrypt-pass"))
        )
        .await
        .unwrap()
        .0,
        401,
        "wrong user with the right password"
    );
    assert_eq!(
        get(
            &server,
            &conn,
            "/varz",
            Some(&basic("admin", "bcrypt-pass"))
        )
        .await
        .unwrap()
        .0,
        200
    );
    assert_eq!(
        get(&server, &conn, "/varz", Some("Bearer the-token"))
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        get(&server, &conn, "/varz", Some("Bearer nope"))
            .await
            .unwrap()
            .0,
        401
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_auth_ca_requires_a_client_certificate() {
    let pki = Pki::new("monca");
    let server = start(
        &pki,
        Some(MonitorAuth {
            user: None,
            password: None,
            token: None,
            ca_file: Some(pki.path("ca.pem")),
            healthz_open: true,
        }),
    )
    .await;
    let with_cert = connector(&pki, true);
    assert_eq!(
        get(&server, &with_cert, "/varz", None).await.map(|r| r.0),
        Some(200)
    );
    let without = connector(&pki, false);
    assert_eq!(
        get(&server, &without, "/varz", None).await,
        None,
        "served without a client certificate"
    );
    server.shutdown().await;
}

/// Two requests on one TLS session: the HTTPS port keeps connections alive
/// as the plain one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_monitor_keeps_the_connection_alive() {
    let pki = Pki::new("https-ka");
    let server = start(&pki, None).await;
    let conn = connector(&pki, false);
    let tcp = TcpStream::connect(server.https_addr.unwrap())
        .await
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(TIMEOUT, conn.connect(name, tcp))
        .await
        .unwrap()
        .expect("TLS");
    let mut buf = Vec::new();
    for path in ["/healthz", "/varz"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        // Read until this response's body is complete.
        let body = loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .expect("content-length");
                if rest.len() >= len {
                    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
                    buf.drain(..head.len() + 4 + len);
                    break rest[..len].to_string();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(TIMEOUT, tls.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "{path}: the server closed the TLS session");
            buf.extend_from_slice(&chunk[..n]);
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v.is_object(), "{path}: {body}");
    }
    server.shutdown().await;
}

/// The HTTPS acceptor's client-certificate CA is fixed at start: a reload
/// that would swap the token for a `ca_file` (which would then not be
/// enforced) is refused, and the token stays required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_cannot_change_the_monitor_ca() {
    let pki = Pki::new("monca-reload");
    let token = MonitorAuth {
        user: None,
        password: None,
        token: Some(Secret::parse("the-token").unwrap()),
        ca_file: None,
        healthz_open: true,
    };
    let server = start(&pki, Some(token)).await;
    let conn = connector(&pki, false);
    assert_eq!(get(&server, &conn, "/connz", None).await.unwrap().0, 401);
    let mut opts = (*server.ctx.opts()).clone();
    opts.monitor_auth = Some(MonitorAuth {
        user: None,
        password: None,
        token: None,
        ca_file: Some(pki.path("ca.pem")),
        healthz_open: true,
    });
    let err = server.reload(opts).expect_err("reload accepted");
    assert!(
        err.contains("config reload not supported for monitor_auth.ca_file"),
        "{err}"
    );
    assert_eq!(
        get(&server, &conn, "/connz", None).await.unwrap().0,
        401,
        "the reload opened the HTTPS port"
    );
    server.shutdown().await;
}
