//! `handshake_first`: the TLS handshake comes before INFO, for clients
//! that use "TLS first" (async-nats `tls_first()`); a client that waits for
//! INFO in clear gets nothing in clear.

use std::time::Duration;

use futures::StreamExt;
use rnats::tls::TlsOptions;
use rnats::tls::dev::{DevOptions, DevPki};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_first_clients_are_served_and_no_info_goes_out_in_clear() {
    let dir = std::env::temp_dir().join(format!(
        "rnats-tlsfirst-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    DevPki::generate(&DevOptions::default())
        .unwrap()
        .write_to(&dir, false)
        .unwrap();
    let tls = TlsOptions {
        handshake_first: true,
        ..TlsOptions::new(dir.join("server-cert.pem"), dir.join("server-key.pem"))
    };
    let server = rnats::Server::start(rnats::Options {
        host: "127.0.0.1".into(),
        port: -1,
        tls: Some(tls),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("nats://localhost:{}", server.client_addr().port());

    // A plain client waiting for INFO receives nothing in clear.
    let mut plain = tokio::net::TcpStream::connect(server.client_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_millis(300), plain.read(&mut buf)).await;
    assert!(
        !matches!(got, Ok(Ok(n)) if n > 0 && buf.starts_with(b"INFO")),
        "INFO was sent in clear"
    );

    // A TLS-first client publishes and receives.
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(dir.join("ca.pem"))
        .tls_first()
        .connect(&url)
        .await
        .expect("TLS-first client connects");
    let mut sub = client.subscribe("tf").await.unwrap();
    client.flush().await.unwrap();
    client.publish("tf", "hello".into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("message in time")
        .expect("subscription open");
    assert_eq!(&msg.payload[..], b"hello");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `handshake_first: auto` (a fallback delay): TLS-first clients are
/// served at once, and a client that waits for INFO gets it after the
/// delay and upgrades as usual, as with nats-server (async-nats's
/// `tls_auto` case). Without the fallback such a client hung until the TLS
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_first_auto_falls_back_to_info_first() {
    let dir = std::env::temp_dir().join(format!(
        "rnats-tlsauto-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    DevPki::generate(&DevOptions::default())
        .unwrap()
        .write_to(&dir, false)
        .unwrap();
    let tls = TlsOptions {
        handshake_first: true,
        handshake_first_fallback: Some(rnats::config::tls::DEFAULT_HANDSHAKE_FIRST_FALLBACK),
        // Long, so a client stuck until the TLS timeout fails the test.
        timeout: Duration::from_secs(30),
        ..TlsOptions::new(dir.join("server-cert.pem"), dir.join("server-key.pem"))
    };
    let server = rnats::Server::start(rnats::Options {
        host: "127.0.0.1".into(),
        port: -1,
        tls: Some(tls),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("nats://localhost:{}", server.client_addr().port());

    // A plain socket that waits gets INFO in clear after the delay.
    let mut plain = tokio::net::TcpStream::connect(server.client_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), plain.read_exact(&mut buf))
        .await
        .expect("INFO after the fallback delay")
        .expect("read INFO");
    assert_eq!(&buf, b"INFO ");

    for tls_first in [false, true] {
        let mut opts = async_nats::ConnectOptions::new()
            .add_root_certificates(dir.join("ca.pem"))
            .require_tls(true);
        if tls_first {
            opts = opts.tls_first();
        }
        let client = tokio::time::timeout(Duration::from_secs(10), opts.connect(&url))
            .await
            .unwrap_or_else(|_| panic!("tls_first={tls_first}: connect timed out"))
            .unwrap_or_else(|e| panic!("tls_first={tls_first}: {e}"));
        let mut sub = client.subscribe("ta").await.unwrap();
        client.flush().await.unwrap();
        client.publish("ta", "hello".into()).await.unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("message in time")
            .expect("subscription open");
        assert_eq!(&msg.payload[..], b"hello");
    }
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
