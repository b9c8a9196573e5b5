//! `rnats certs dev`: the client/server CA and the separate route CA.
//! Chains are checked with rustls' WebPKI verifiers, and a real nats-server
//! cluster shows that its route port refuses a client certificate while it
//! accepts the route certificate.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const RNATS_CLI: &str = env!("CARGO_BIN_EXE_rnats");

/// `rnats ARGS`: (success, stdout, stderr).
fn rnats(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(RNATS_CLI)
        .args(args)
        .output()
        .expect("run rnats");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn make_certs(dir: &TempDir, extra: &[&str]) {
    let d = dir.path("certs");
    let mut args = vec!["certs", "dev", d.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (ok, out, err) = rnats(&args);
    assert!(ok, "rnats certs dev failed: {out}{err}");
}

fn cert(dir: &Path, name: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(dir.join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .into_owned()
}

fn roots(dir: &Path, ca: &str) -> Arc<RootCertStore> {
    let mut r = RootCertStore::empty();
    r.add(cert(dir, ca)).unwrap();
    Arc::new(r)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Does `leaf` verify as a client certificate against `ca`? (A route
/// port acts as the TLS server for an incoming route.)
fn client_ok(dir: &Path, ca: &str, leaf: &str) -> bool {
    let v = WebPkiClientVerifier::builder_with_provider(roots(dir, ca), provider())
        .build()
        .unwrap();
    v.verify_client_cert(&cert(dir, leaf), &[], UnixTime::now())
        .is_ok()
}

/// Does `leaf` verify as a server certificate for `name` against `ca`?
fn server_ok(dir: &Path, ca: &str, leaf: &str, name: &str) -> bool {
    let v = WebPkiServerVerifier::builder_with_provider(roots(dir, ca), provider())
        .build()
        .unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    v.verify_server_cert(&cert(dir, leaf), &[], &name, &[], UnixTime::now())
        .is_ok()
}

#[test]
fn route_certificates_chain_only_to_the_route_ca() {
    let tmp = TempDir::new("certs-route-ca");
    make_certs(&tmp, &["--host", "node.example", "--route-names", "a,b"]);
    let d = tmp.path("certs");
    for f in [
        "ca.pem",
        "ca-key.pem",
        "server-cert.pem",
        "server-key.pem",
        "client-cert.pem",
        "client-key.pem",
        "route-ca.pem",
        "route-ca-key.pem",
        "route-cert.pem",
        "route-key.pem",
        "route-a-cert.pem",
        "route-a-key.pem",
        "route-b-cert.pem",
        "route-b-key.pem",
    ] {
        assert!(d.join(f).is_file(), "{f} not written");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["route-ca-key.pem", "route-key.pem", "route-a-key.pem"] {
            let mode = d.join(key).metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key} mode {mode:o}");
        }
    }
    assert_ne!(cert(&d, "ca.pem"), cert(&d, "route-ca.pem"));

    // Routes dial and accept, so route certificates verify in both roles,
    // under the route CA only.
    for leaf in ["route-cert.pem", "route-a-cert.pem", "route-b-cert.pem"] {
        assert!(client_ok(&d, "route-ca.pem", leaf), "{leaf} as client");
        for name in ["localhost", "127.0.0.1", "::1", "node.example"] {
            assert!(
                server_ok(&d, "route-ca.pem", leaf, name),
                "{leaf} as server for {name}"
            );
        }
        assert!(
            !client_ok(&d, "ca.pem", leaf),
            "{leaf} must not chain to ca.pem"
        );
    }
    assert!(server_ok(&d, "route-ca.pem", "route-a-cert.pem", "a"));
    assert!(!server_ok(&d, "route-ca.pem", "route-a-cert.pem", "b"));

    // The client certificate is for the client port, not for routes.
    assert!(client_ok(&d, "ca.pem", "client-cert.pem"));
    assert!(!client_ok(&d, "route-ca.pem", "client-cert.pem"));
    assert!(server_ok(&d, "ca.pem", "server-cert.pem", "localhost"));
    assert!(!server_ok(
        &d,
        "route-ca.pem",
        "server-cert.pem",
        "localhost"
    ));
}

#[test]
fn existing_files_need_force_and_route_names_are_checked() {
    let tmp = TempDir::new("certs-force");
    make_certs(&tmp, &[]);
    let d = tmp.path("certs");
    let before = std::fs::read(d.join("route-ca.pem")).unwrap();

    let (ok, _, err) = rnats(&["certs", "dev", d.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("route-ca.pem") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(d.join("route-ca.pem")).unwrap(), before);

    // A per-node file that does not exist yet does not let the run through.
    let (ok, _, err) = rnats(&["certs", "dev", d.to_str().unwrap(), "--route-names", "x"]);
    assert!(!ok, "{err}");
    assert!(!d.join("route-x-cert.pem").exists());

    let (ok, out, err) = rnats(&["certs", "dev", d.to_str().unwrap(), "--force"]);
    assert!(ok, "{out}{err}");
    assert_ne!(std::fs::read(d.join("route-ca.pem")).unwrap(), before);
    assert!(client_ok(&d, "route-ca.pem", "route-cert.pem"));

    for bad in ["a,a", "a/b", "", "-a", "a b"] {
        let (ok, _, err) = rnats(&[
            "certs",
            "dev",
            tmp.path("other").to_str().unwrap(),
            &format!("--route-names={bad}"),
        ]);
        assert!(!ok, "route names {bad:?} accepted");
        assert!(err.contains("route name"), "{bad:?}: {err}");
    }
}

/// A nats-server node with route TLS from `certs`; `routes` are route
/// ports to dial. Returns the process, its route port and monitor port.
async fn nats_node(bin: &Path, tmp: &TempDir, name: &str, routes: &[u16]) -> (Proc, u16, u16) {
    let c = tmp.path("certs");
    let routes: Vec<String> = routes
        .iter()
        .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
        .collect();
    let conf = format!(
        r#"
server_name: {name}
listen: 127.0.0.1:-1
http: 127.0.0.1:-1
cluster {{
  name: certs-test
  listen: 127.0.0.1:-1
  routes: [{routes}]
  tls {{
    cert_file: "{cert}"
    key_file: "{key}"
    ca_file: "{ca}"
    timeout: 2
  }}
}}
"#,
        routes = routes.join(", "),
        cert = c.join("route-cert.pem").display(),
        key = c.join("route-key.pem").display(),
        ca = c.join("route-ca.pem").display(),
    );
    let conf_path = tmp.path(&format!("{name}.conf"));
    std::fs::write(&conf_path, conf).unwrap();
    let mut p = Proc::spawn(
        bin.to_str().unwrap(),
        &["-c", conf_path.to_str().unwrap()],
        &tmp.path(&format!("{name}.log")),
    );
    // The route listener may start after "Server is ready" is logged.
    p.wait_log("Server is ready").await;
    let log = p.wait_log("Listening for route connections on ").await;
    let route = log_port(&log, "Listening for route connections on ").expect("route port");
    let http = log_port(&log, "Starting http monitor on ").expect("monitor port");
    (p, route, http)
}

/// Route connections in the node's /routez. HTTP/1.0, so Go answers
/// without chunked encoding.
async fn num_routes(http: u16) -> u64 {
    use tokio::io::AsyncWriteExt;
    let fut = async {
        let mut s = TcpStream::connect(("127.0.0.1", http)).await?;
        s.write_all(b"GET /routez HTTP/1.0\r\n\r\n").await?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await?;
        Ok::<_, std::io::Error>(resp)
    };
    let resp = tokio::time::timeout(TIMEOUT, fut)
        .await
        .expect("/routez timed out")
        .expect("/routez");
    let text = String::from_utf8_lossy(&resp);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["num_routes"].as_u64().unwrap_or(0)
}

/// Open TLS to a route port presenting `cert`/`key`, trusting the route CA.
/// Returns what the server sent first (the route INFO), or None when the
/// session was refused.
async fn route_hello(d: &Path, port: u16, cert: &str, key: &str) -> Option<String> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(d, "route-ca.pem"))
        .with_client_auth_cert(
            vec![self::cert(d, cert)],
            PrivateKeyDer::from_pem_file(d.join(key)).unwrap(),
        )
        .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .ok()?;
    // With TLS 1.3 the client finishes its side before the server has
    // judged the certificate; the refusal arrives as an alert on read.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(TIMEOUT, tls.read(&mut buf))
        .await
        .expect("no answer from the route port")
        .ok()?;
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn nats_server_route_port_refuses_a_client_certificate() {
    let Some(bin) = on_path("nats-server") else {
        eprintln!("skipping: nats-server not on PATH");
        return;
    };
    let tmp = TempDir::new("certs-routes");
    make_certs(&tmp, &[]);
    let d = tmp.path("certs");

    let (mut a, a_route, a_http) = nats_node(&bin, &tmp, "a", &[]).await;
    let (_b, _b_route, b_http) = nats_node(&bin, &tmp, "b", &[a_route]).await;
    let mut formed = false;
    for _ in 0..200 {
        if num_routes(a_http).await >= 1 && num_routes(b_http).await >= 1 {
            formed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(tmp.path("b.log")).unwrap_or_default();
    assert!(
        formed,
        "route with the route certificates never formed:\n{log}"
    );

    let hello = route_hello(&d, a_route, "route-cert.pem", "route-key.pem").await;
    assert!(
        hello.as_deref().is_some_and(|h| h.starts_with("INFO ")),
        "route certificate refused: {hello:?}"
    );
    let hello = route_hello(&d, a_route, "client-cert.pem", "client-key.pem").await;
    assert!(
        hello.is_none(),
        "client certificate accepted on the route port: {hello:?}"
    );
    // The refusal is logged as the connection closes, maybe after our read.
    a.wait_log("handshake error").await;
}
