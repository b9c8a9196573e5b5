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

/// The real binary with a lame duck grace period of `grace` (and a 30 s
/// duration), and a connected client.
async fn binary_with_a_client(dir: &TempDir, grace: &str) -> (Proc, Raw) {
    let conf = dir.path("ldm.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:-1\nlame_duck_grace_period: \"{grace}\"\n\
             lame_duck_duration: \"30s\"\n"
        ),
    )
    .unwrap();
    let mut p = Proc::spawn(
        env!("CARGO_BIN_EXE_rnats-server"),
        &["-c", conf.to_str().unwrap()],
        &dir.path("ldm.log"),
    );
    let port = p.client_port().await;
    let mut raw = Raw::handshake(format!("127.0.0.1:{port}").parse().unwrap(), CONNECT).await;
    raw.ping_collect().await;
    (p, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_runs_lame_duck_then_exits() {
    let dir = TempDir::new("ldm");
    let (mut p, mut raw) = binary_with_a_client(&dir, "100ms").await;
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

/// As in nats-server, SIGTERM does not cut lame duck mode short (Kubernetes
/// sends it right after a `--signal ldm` preStop hook returns); SIGINT does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_ignored_during_lame_duck_mode_and_sigint_is_not() {
    let dir = TempDir::new("ldm-term");
    let (mut p, mut raw) = binary_with_a_client(&dir, "20s").await;
    p.signal(libc::SIGUSR2);
    p.wait_log("Entering lame duck mode").await;
    p.signal(libc::SIGTERM);
    p.wait_log("ignored, lame duck mode in progress").await;
    // Still serving its client (a PONG; the grace period has not run out),
    // which was told of lame duck mode.
    let (lines, _) = raw.ping_collect().await;
    assert!(
        lines.iter().any(|l| l.contains("\"ldm\":true")),
        "{lines:?}"
    );
    assert!(
        p.wait_exit(Duration::ZERO).await.is_none(),
        "exited on SIGTERM"
    );
    p.signal(libc::SIGINT);
    let status = p
        .wait_exit(TIMEOUT)
        .await
        .expect("server exits on SIGINT during lame duck mode");
    assert!(status.success(), "{status:?}");
}

/// nats-py's client, driven by a script: it connects to A then B (in that
/// order), subscribes, reports "ready", then "ldm" when its
/// `lame_duck_mode_cb` fires and "moved <port>" once it is connected to B
/// with its subscription working there.
const NATS_PY_SCRIPT: &str = r#"
import asyncio, sys
import nats

async def main(a, b):
    ldm = asyncio.Event()
    async def on_ldm():
        ldm.set()
    nc = await nats.connect(servers=[a, b], dont_randomize=True,
                            lame_duck_mode_cb=on_ldm, reconnect_time_wait=0.1,
                            max_reconnect_attempts=50)
    got = asyncio.Queue()
    async def on_msg(m):
        await got.put(m.data)
    await nc.subscribe("work", cb=on_msg)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.wait_for(ldm.wait(), 10)
    print("ldm", flush=True)
    for _ in range(200):
        if nc.is_connected and nc.connected_url.port == int(b.rsplit(":", 1)[1]):
            break
        await asyncio.sleep(0.05)
    await nc.flush()
    await nc.publish("work", b"on b")
    data = await asyncio.wait_for(got.get(), 10)
    assert data == b"on b", data
    print("moved", nc.connected_url.port, flush=True)
    await nc.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

fn nats_py_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import nats"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_lame_duck_callback_fires_and_it_moves() {
    if !nats_py_available() {
        eprintln!("SKIPPED: nats-py is not installed (pip install nats-py)");
        return;
    }
    use tokio::io::AsyncBufReadExt;
    let a = std::sync::Arc::new(start(ldm_opts()).await);
    let b = start_default().await;
    let mut child = tokio::process::Command::new("python3")
        .args([
            "-c",
            NATS_PY_SCRIPT,
            &format!("nats://{}", a.client_addr()),
            &format!("nats://{}", b.client_addr()),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(TIMEOUT * 2, lines.next_line())
            .await
            .expect("the nats-py script answers in time")
            .expect("stdout readable")
            .unwrap_or_default()
    };
    assert_eq!(next().await, "ready");
    let runner = tokio::spawn({
        let a = a.clone();
        async move { a.lame_duck().await }
    });
    assert_eq!(next().await, "ldm", "nats-py's lame_duck_mode_cb fired");
    assert_eq!(
        next().await,
        format!("moved {}", b.client_addr().port()),
        "nats-py reconnected to B with its subscription"
    );
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("script exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
    runner.await.unwrap();
    b.shutdown().await;
}
