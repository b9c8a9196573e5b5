//! TLS unit tests. Certificates are generated at test time with rcgen.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::ServerName;

use super::dev::{DevOptions, DevPki};
use super::*;
use crate::config::parser::Spanned;
use crate::config::value::testing::{b, f, map, s, strs};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "rnats-tls-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pki() -> (TempDir, DevPki) {
    let dir = TempDir::new();
    let pki = DevPki::generate(&DevOptions::default()).expect("generate");
    pki.write_to(&dir.0, false).expect("write");
    (dir, pki)
}

fn opts(dir: &TempDir) -> TlsOptions {
    TlsOptions::new(dir.0.join("server-cert.pem"), dir.0.join("server-key.pem"))
}

fn verify_opts(dir: &TempDir) -> TlsOptions {
    let mut o = opts(dir);
    o.ca_file = Some(dir.0.join("ca.pem"));
    o.verify = true;
    o
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("pem")
}

/// A rustls client trusting the dev CA, optionally with a client cert and a
/// restricted protocol version.
fn client_config(
    pki: &DevPki,
    client_cert: Option<&super::dev::CertPair>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in certs(&pki.ca.cert_pem) {
        roots.add(c).expect("root");
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(roots);
    let cfg = match client_cert {
        Some(cp) => b
            .with_client_auth_cert(
                certs(&cp.cert_pem),
                PrivateKeyDer::from_pem_slice(cp.key_pem.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// What the server saw: version, suite, client identity, client leaf DER.
type ServerView = (String, String, Option<CertIdentity>, Option<Vec<u8>>);

struct Outcome {
    server: Result<ServerView, TlsError>,
    client_ok: bool,
}

/// Run a handshake over an in-memory pipe.
async fn handshake(server: Arc<ServerConfig>, client: Arc<rustls::ClientConfig>) -> Outcome {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = ServerName::try_from("localhost").expect("name");
    let server_side = async {
        let stream = accept(&acceptor, s, Duration::from_secs(5)).await?;
        let (_, conn) = stream.get_ref();
        let (v, suite) = negotiated(conn);
        let info = (
            v,
            suite,
            peer_identity(conn),
            peer_leaf_der(conn).map(<[u8]>::to_vec),
        );
        // Keep the stream open until the client has had its look: dropping
        // it here would make the client's read fail with an EOF.
        Ok::<_, TlsError>((info, stream))
    };
    let client_side = async {
        use tokio::io::AsyncReadExt;
        match connector.connect(name, c).await {
            // TLS 1.3 client auth failures surface on the first read.
            Ok(mut s) => {
                let mut b = [0u8; 1];
                !matches!(
                    tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await,
                    Ok(Err(_))
                )
            }
            Err(_) => false,
        }
    };
    let (server, client_ok) = tokio::join!(server_side, client_side);
    Outcome {
        server: server.map(|(info, _stream)| info),
        client_ok,
    }
}

#[test]
fn good_config_loads() {
    let (dir, _) = pki();
    assert!(server_config(&opts(&dir)).is_ok());
    assert!(server_config(&verify_opts(&dir)).is_ok());
}

#[test]
fn missing_files_are_named() {
    let (dir, _) = pki();
    let mut o = opts(&dir);
    o.cert_file = dir.0.join("nope.pem");
    let e = server_config(&o).unwrap_err();
    assert!(
        matches!(
            e,
            TlsError::Read {
                what: "cert_file",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("nope.pem"), "{e}");

    let mut o = opts(&dir);
    o.key_file = dir.0.join("nokey.pem");
    let e = server_config(&o).unwrap_err();
    assert!(e.to_string().contains("key_file") && e.to_string().contains("nokey.pem"));

    let mut o = verify_opts(&dir);
    o.ca_file = Some(dir.0.join("noca.pem"));
    let e = server_config(&o).unwrap_err();
    assert!(e.to_string().contains("ca_file"), "{e}");
}

#[test]
fn files_without_pem_content() {
    let (dir, _) = pki();
    let junk = dir.0.join("junk.pem");
    std::fs::write(&junk, "hello\n").expect("write");
    let mut o = opts(&dir);
    o.key_file = junk.clone();
    let e = server_config(&o).unwrap_err();
    assert!(
        matches!(
            e,
            TlsError::Content {
                what: "key_file",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("no PEM private key"), "{e}");

    let mut o = opts(&dir);
    o.cert_file = junk;
    let e = server_config(&o).unwrap_err();
    assert!(e.to_string().contains("no PEM certificate"), "{e}");

    // A key where a certificate belongs.
    let mut o = opts(&dir);
    o.cert_file = dir.0.join("server-key.pem");
    assert!(server_config(&o).is_err());
}

#[test]
fn mismatched_key_is_refused() {
    let (dir, _) = pki();
    let mut o = opts(&dir);
    o.key_file = dir.0.join("client-key.pem");
    let e = server_config(&o).unwrap_err();
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
    assert!(e.to_string().contains("does not match"), "{e}");
}

#[test]
fn unknown_and_weak_cipher_names_are_errors() {
    let (dir, _) = pki();
    let mut o = opts(&dir);
    o.cipher_suites = vec![
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
        "TLS_BOGUS_SUITE".into(),
        "TLS_RSA_WITH_AES_128_CBC_SHA".into(),
    ];
    let e = server_config(&o).unwrap_err().to_string();
    assert!(
        e.contains("unknown cipher suite(s): TLS_BOGUS_SUITE"),
        "{e}"
    );
    assert!(e.contains("not allowed"), "{e}");
    assert!(e.contains("TLS_RSA_WITH_AES_128_CBC_SHA"), "{e}");
}

#[test]
fn cipher_names_narrow_and_accept_aliases() {
    let go = select_suites(&["tls_ecdhe_ecdsa_with_chacha20_poly1305".into()]).expect("ok");
    let names: Vec<String> = go.iter().map(suite_name).collect();
    // The named TLS 1.2 suite, plus every TLS 1.3 suite (Go semantics).
    assert_eq!(names[0], "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256");
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(names.iter().filter(|n| n.starts_with("TLS13_")).count(), 3);

    let only13 = select_suites(&["TLS_AES_128_GCM_SHA256".into()]).expect("ok");
    assert_eq!(only13.len(), 1);
    let p = CryptoProvider {
        cipher_suites: only13,
        ..rustls::crypto::ring::default_provider()
    };
    // Naming only TLS 1.3 suites turns TLS 1.2 off.
    let v = versions_for(&TlsOptions::new("", ""), &p).expect("ok");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].version, rustls::ProtocolVersion::TLSv1_3);

    assert_eq!(select_suites(&[]).expect("ok").len(), 9);
}

#[test]
fn curves() {
    let g = select_groups(&["CurveP384".into(), "x25519".into()]).expect("ok");
    let names: Vec<String> = g.iter().map(group_name).collect();
    assert_eq!(names, ["secp384r1", "X25519"]);
    let Err(e) = select_groups(&["CurveP521".into()]) else {
        panic!("CurveP521 must be refused");
    };
    assert!(e.to_string().contains("CurveP521"), "{e}");
}

#[tokio::test]
async fn default_config_negotiates_tls13_and_accepts_tls12() {
    let (dir, pki) = pki();
    let server = server_config(&opts(&dir)).expect("config");
    let out = handshake(
        server.clone(),
        client_config(&pki, None, &[&rustls::version::TLS13]),
    )
    .await;
    let (v, suite, id, _) = out.server.expect("handshake");
    assert!(out.client_ok);
    assert_eq!(v, "1.3");
    assert!(suite.starts_with("TLS13_"), "{suite}");
    assert!(id.is_none());

    let out = handshake(
        server,
        client_config(&pki, None, &[&rustls::version::TLS12]),
    )
    .await;
    let (v, suite, _, _) = out.server.expect("tls 1.2 handshake");
    assert_eq!(v, "1.2");
    assert!(suite.starts_with("TLS_ECDHE_ECDSA_WITH_"), "{suite}");
}

#[tokio::test]
async fn min_version_13_refuses_tls12_clients() {
    let (dir, pki) = pki();
    let mut o = opts(&dir);
    o.min_version = Some("1.3".into());
    assert_eq!(
        versions_for(&o, &provider_for(&o).expect("provider")).expect("versions"),
        vec![&rustls::version::TLS13]
    );
    let server = server_config(&o).expect("config");
    let out = handshake(
        server.clone(),
        client_config(&pki, None, &[&rustls::version::TLS12]),
    )
    .await;
    assert!(out.server.is_err());
    assert!(!out.client_ok);
    let out = handshake(
        server,
        client_config(&pki, None, &[&rustls::version::TLS13]),
    )
    .await;
    assert!(out.server.is_ok());
}

#[tokio::test]
async fn verify_requires_a_client_certificate_from_the_ca() {
    let (dir, pki) = pki();
    let server = server_config(&verify_opts(&dir)).expect("config");
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];

    let out = handshake(server.clone(), client_config(&pki, None, all)).await;
    assert!(out.server.is_err(), "no client cert must fail");

    // A client certificate from another CA.
    let other = DevPki::generate(&DevOptions::default()).expect("other pki");
    let out = handshake(
        server.clone(),
        client_config(&pki, Some(&other.client), all),
    )
    .await;
    assert!(out.server.is_err(), "foreign client cert must fail");

    let out = handshake(server, client_config(&pki, Some(&pki.client), all)).await;
    let (_, _, id, leaf) = out.server.expect("handshake with client cert");
    assert!(out.client_ok);
    let id = id.expect("identity");
    assert_eq!(id.subject, "CN=alice,O=rnats dev");
    assert_eq!(id.emails, ["alice@example.com"]);
    assert!(id.dns_names.is_empty());
    assert!(dn_matches("O=rnats dev,CN=alice", &id));

    let leaf = leaf.expect("leaf");
    let mut o = verify_opts(&dir);
    assert!(check_pinned(&o, Some(&leaf)), "no pins: everything passes");
    let other_fp = spki_sha256_hex(certs(&other.client.cert_pem)[0].as_ref()).expect("fp");
    o.pinned_certs = vec![other_fp];
    assert!(!check_pinned(&o, Some(&leaf)));
    assert!(!check_pinned(&o, None));
    o.pinned_certs
        .push(spki_sha256_hex(&leaf).expect("fp").to_ascii_lowercase());
    assert!(check_pinned(&o, Some(&leaf)));
}

#[test]
fn server_identity_has_dns_sans() {
    let pki = DevPki::generate(&DevOptions::default()).expect("pki");
    let id = identity_from_der(certs(&pki.server.cert_pem)[0].as_ref()).expect("id");
    assert_eq!(id.subject, "CN=rnats server,O=rnats dev");
    for h in ["localhost", "rnats-0", "rnats-2", "n3"] {
        assert!(
            id.dns_names.iter().any(|d| d == h),
            "{h} in {:?}",
            id.dns_names
        );
    }
}

#[test]
fn dev_files_are_written_once_with_private_keys_0600() {
    let dir = TempDir::new();
    let pki = DevPki::generate(&DevOptions::default()).expect("pki");
    let written = pki.write_to(&dir.0, false).expect("write");
    assert_eq!(written.len(), 8);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |n: &str| {
            std::fs::metadata(dir.0.join(n))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("server-key.pem"), 0o600);
        assert_eq!(mode("ca-key.pem"), 0o600);
        assert_eq!(mode("ca.pem"), 0o644);
    }
    let e = pki.write_to(&dir.0, false).unwrap_err().to_string();
    assert!(e.contains("refusing to overwrite"), "{e}");
    assert!(pki.write_to(&dir.0, true).is_ok());
}

#[test]
fn from_config_full_block() {
    let block = map(vec![
        ("cert_file", s("/x/server-cert.pem")),
        ("key_file", s("/x/server-key.pem")),
        ("ca_file", s("/x/ca.pem")),
        ("verify_and_map", b(true)),
        ("timeout", f(0.5)),
        ("handshake_first", s("auto")),
        ("min_version", f(1.3)),
        (
            "cipher_suites",
            strs(&[
                "TLS_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            ]),
        ),
        ("curve_preferences", strs(&["X25519"])),
        (
            "pinned_certs",
            strs(&[
                "AB:CD:EF:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89",
            ]),
        ),
    ]);
    let o = TlsOptions::from_config(&block).expect("parse");
    assert_eq!(o.cert_file, PathBuf::from("/x/server-cert.pem"));
    assert_eq!(o.ca_file, Some(PathBuf::from("/x/ca.pem")));
    assert!(o.verify_and_map && !o.verify && o.requires_client_cert());
    assert_eq!(o.timeout, Duration::from_millis(500));
    assert!(o.handshake_first);
    assert_eq!(
        o.handshake_first_fallback,
        Some(DEFAULT_HANDSHAKE_FIRST_FALLBACK)
    );
    assert_eq!(o.min_version.as_deref(), Some("1.3"));
    assert_eq!(o.cipher_suites.len(), 2);
    assert_eq!(o.pinned_certs, ["abcdef0123456789".repeat(4)]);

    let minimal = map(vec![("cert_file", s("c.pem")), ("key_file", s("k.pem"))]);
    let o = TlsOptions::from_config(&minimal).expect("minimal");
    assert_eq!(o.timeout, DEFAULT_TLS_TIMEOUT);
    assert!(!o.handshake_first && o.handshake_first_fallback.is_none());
}

#[test]
fn from_config_errors() {
    let base = || vec![("cert_file", s("c.pem")), ("key_file", s("k.pem"))];
    let with = |extra: Vec<(&'static str, Spanned)>| {
        let mut v = base();
        v.extend(extra);
        TlsOptions::from_config(&map(v))
            .map(|_| ())
            .unwrap_err()
            .msg
    };
    assert!(with(vec![("bogus", b(true))]).contains("unknown field \"bogus\""));
    assert!(with(vec![("insecure", b(true))]).contains("not supported"));
    assert!(with(vec![("verify", b(true))]).contains("ca_file"));
    assert!(with(vec![("min_version", s("1.1"))]).contains("1.1"));
    assert!(with(vec![("cipher_suites", strs(&["NOPE"]))]).contains("NOPE"));
    assert!(with(vec![("curve_preferences", s("CurveP521"))]).contains("CurveP521"));
    assert!(with(vec![("pinned_certs", strs(&["abc"]))]).contains("64 hex"));
    assert!(with(vec![("pinned_certs", strs(&[&"a".repeat(64)]))]).contains("needs verify"));
    assert!(with(vec![("timeout", s("soon"))]).contains("duration"));
    assert!(
        TlsOptions::from_config(&map(vec![("cert_file", s("c.pem"))]))
            .unwrap_err()
            .msg
            .contains("key_file")
    );
    assert!(TlsOptions::from_config(&s("x")).is_err());
}

#[test]
fn config_suite_table_matches_the_provider() {
    // `crate::config::tls` checks names without the crypto library; its
    // table must be exactly what `server_config` can offer.
    let ours: Vec<String> = allowed_suites().iter().map(suite_name).collect();
    let table: Vec<String> = crate::config::tls::SUITES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (mut a, mut b) = (ours.clone(), table.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "provider {ours:?} vs config table {table:?}");
    for g in ["X25519", "CurveP256", "CurveP384"] {
        let want = crate::config::tls::canonical_group_name(g);
        assert!(
            rustls::crypto::ring::ALL_KX_GROUPS
                .iter()
                .any(|k| Some(group_name(k).as_str()) == want),
            "{g}"
        );
    }
}
