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
