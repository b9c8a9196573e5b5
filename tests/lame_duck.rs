//! Lame duck mode: a server stops accepting, tells its clients with an
//! INFO carrying `"ldm":true` (async-nats raises its lame-duck event),
//! closes them spread over the configured duration, and the clients move
//! to another server of their list.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;

fn ldm_opts() -> rnats::Options {
    let mut o = opts();
    o.lame_duck_grace_period = Duration::from_millis(200);
    o.lame_duck_duration = Duration::from_millis(1200);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_the_event_and_move_to_another_server() {
    let a = start(ldm_opts()).await;
    let b = start_default().await;
    let (a_addr, b_addr) = (a.client_addr(), b.client_addr());

    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .retain_servers_order()
        .event_callback(move |e| {
            let tx = ev_tx.clone();
            async move {
                let _ = tx.send(e.to_string());
            }
        })
        .connect(vec![
            format!("nats://{a_addr}")
                .parse::<async_nats::ServerAddr>()
                .unwrap(),
            format!("nats://{b_addr}").parse().unwrap(),
        ])
        .await
        .expect("connects");
    assert_eq!(client.server_info().port, a_addr.port(), "starts on A");
    let mut sub = client.subscribe("work").await.unwrap();
    barrier(&client).await;

    let a = std::sync::Arc::new(a);
    let runner = tokio::spawn({
        let a = a.clone();
        async move { a.lame_duck().await }
    });

    // The lame-duck event reaches the client.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let e = tokio::time::timeout_at(deadline, ev_rx.recv())
            .await
            .expect("lame duck event within the timeout")
            .expect("event channel open");
        if e.contains("lame duck") {
            break;
        }
    }
    // A takes no new clients meanwhile.
    assert_eventually(
        || std::net::TcpStream::connect(a_addr).is_err(),
        TIMEOUT,
        "A refuses new connections",
    )
    .await;

    runner.await.unwrap();
    assert_eventually(|| a.ctx.conns.is_empty(), TIMEOUT, "A closed its clients").await;
    // The client is now on B, with its subscription restored.
    assert_eventually(
        || {
            client.server_info().port == b_addr.port()
                && client.connection_state() == async_nats::connection::State::Connected
        },
        TIMEOUT,
        "client reconnected to B",
    )
    .await;
    barrier(&client).await;
    let other = nats(b_addr).await;
    other
        .publish("work", Bytes::from_static(b"on b"))
        .await
        .unwrap();
    other.flush().await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"on b");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldm_info_is_sent_and_clients_close_spread_over_the_duration() {
    let a = std::sync::Arc::new(start(ldm_opts()).await);
    let mut raws = Vec::new();
    for _ in 0..4 {
        let mut r = Raw::handshake(a.client_addr(), CONNECT).await;
        r.ping_collect().await;
        raws.push(r);
    }
    let started = tokio::time::Instant::now();
    let runner = tokio::spawn({
        let a = a.clone();
        async move { a.lame_duck().await }
    });
    // Watch every client at once, each noting when its socket closed.
    let watchers = raws.into_iter().map(|mut r| async move {
        let (bytes, end) = r.read_to_end(TIMEOUT).await;
        assert!(end.is_closed());
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("\"ldm\":true"), "no ldm INFO in {text:?}");
        started.elapsed()
    });
    let closed_at: Vec<Duration> = futures::future::join_all(watchers).await;
    runner.await.unwrap();
    // Nobody closes before the grace period; the last one goes within the
    // duration (plus scheduling slack).
    assert!(
        closed_at.iter().all(|t| *t >= Duration::from_millis(200)),
        "{closed_at:?}"
    );
    assert!(
        closed_at.iter().all(|t| *t < Duration::from_secs(5)),
        "{closed_at:?}"
    );
    assert!(
        closed_at
            .iter()
            .max()
            .unwrap()
            .saturating_sub(*closed_at.iter().min().unwrap())
            >= Duration::from_millis(300),
        "closes spread out: {closed_at:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_runs_lame_duck_then_exits() {
    let dir = TempDir::new("ldm");
    let conf = dir.path("ldm.conf");
    std::fs::write(
        &conf,
        "listen: 127.0.0.1:-1\nlame_duck_grace_period: \"100ms\"\nlame_duck_duration: \"30s\"\n",
    )
    .unwrap();
    let log = dir.path("ldm.log");
    let mut p = Proc::spawn(
        env!("CARGO_BIN_EXE_rnats-server"),
        &["-c", conf.to_str().unwrap()],
        &log,
    );
    let port = p.client_port().await;
    let mut raw = Raw::handshake(format!("127.0.0.1:{port}").parse().unwrap(), CONNECT).await;
    raw.ping_collect().await;
    p.signal(libc::SIGUSR2);
    let (bytes, end) = raw.read_to_end(TIMEOUT).await;
    assert!(end.is_closed());
    assert!(String::from_utf8_lossy(&bytes).contains("\"ldm\":true"));
    let status = p
        .wait_exit(TIMEOUT)
        .await
        .expect("server exits after lame duck mode");
    assert!(status.success(), "{status:?}");
    p.wait_log("Entering lame duck mode").await;
}
