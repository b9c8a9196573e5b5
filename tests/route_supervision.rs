//! Route supervision, in process: a route whose (TLS) session breaks
//! mid-stream is restarted by the cluster supervisor, the restart is
//! counted in /routez, and traffic resumes. The break is real: the route
//! runs through a userspace TCP proxy on loopback that the test cuts.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A TCP proxy to `target`; `cut()` drops every connection it carries
/// (new ones are accepted again).
struct Proxy {
    addr: SocketAddr,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    stop: CancellationToken,
    carried: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(tx);
        let stop = CancellationToken::new();
        let carried = Arc::new(AtomicU64::new(0));
        let (g, s, c) = (generation.clone(), stop.clone(), carried.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    r = l.accept() => match r { Ok(x) => x, Err(_) => return },
                };
                let mut cut = g.subscribe();
                let c = c.clone();
                let s = s.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                        _ = s.cancelled() => {}
                    }
                    // Dropping both halves resets the session mid-stream.
                });
            }
        });
        Proxy {
            addr,
            generation,
            stop,
            carried,
        }
    }

    fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn route_port(s: &rnats::Server) -> u16 {
    s.ctx.cluster.get().expect("clustered").listen_addr.port()
}

fn routes(s: &rnats::Server) -> usize {
    s.ctx.cluster.get().map(|c| c.num_routes()).unwrap_or(0)
}

fn restarts(s: &rnats::Server) -> u64 {
    s.ctx
        .cluster
        .get()
        .map(|c| c.solicit_stats().iter().map(|(_, x)| x.restarts).sum())
        .unwrap_or(0)
}

/// Publish on `from` until `sub` gets one (interest may still be on its
/// way), bounded.
async fn probe(from: &async_nats::Client, subject: &str, sub: &mut async_nats::Subscriber) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        from.publish(subject.to_string(), "probe".into())
            .await
            .unwrap();
        from.flush().await.unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery across the route"
        );
    }
}

async fn broken_session_is_restarted(tls: Option<&TempDir>) {
    let tls_block = |d: &TempDir| {
        format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\" }}",
            d.path("route-cert.pem").display(),
            d.path("route-key.pem").display(),
            d.path("route-ca.pem").display()
        )
    };
    let t = tls.map(tls_block).unwrap_or_default();
    let (a, _da) = start_from_config(
        "rsup-a",
        &format!("cluster {{ name: t, host: 127.0.0.1, port: -1\n {t} }}"),
    )
    .await;
    let proxy = Proxy::start(format!("127.0.0.1:{}", route_port(&a)).parse().unwrap()).await;
    // B dials A through the proxy, by host name so TLS verifies "localhost".
    let (b, _db) = start_from_config(
        "rsup-b",
        &format!(
            "cluster {{ name: t, host: 127.0.0.1, port: -1\n routes: [\"nats-route://localhost:{}\"]\n {t} }}",
            proxy.addr.port()
        ),
    )
    .await;
    assert_eventually(|| routes(&a) == 1 && routes(&b) == 1, TIMEOUT, "route up").await;
    let ca = nats(a.client_addr()).await;
    let cb = nats(b.client_addr()).await;
    let mut sub = ca.subscribe("across").await.unwrap();
    ca.flush().await.unwrap();
    probe(&cb, "across", &mut sub).await;
    assert_eq!(restarts(&b), 0);

    proxy.cut();
    assert_eventually(|| restarts(&b) >= 1, TIMEOUT, "restart counted").await;
    assert_eventually(|| routes(&a) == 1 && routes(&b) == 1, TIMEOUT, "route back").await;
    assert!(
        proxy.carried.load(Ordering::Relaxed) >= 2,
        "redialed through the proxy"
    );
    // The restart shows in /routez (rnats's own field) and traffic flows.
    let v = rnats::monitor::route(&b.ctx, "/routez", "");
    assert_eq!(v.0, 200);
    assert!(
        v.1["solicited"][0]["restarts"].as_u64() >= Some(1),
        "{}",
        v.1
    );
    probe(&cb, "across", &mut sub).await;
    // Interest from before the break was re-sent on the new route.
    let mut sub_b = cb.subscribe("back").await.unwrap();
    cb.flush().await.unwrap();
    probe(&ca, "back", &mut sub_b).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_plain_route_is_restarted_and_counted() {
    broken_session_is_restarted(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_tls_route_is_restarted_and_counted() {
    let dir = TempDir::new("rsup-certs");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_rnats"))
        .args(["certs", "dev", dir.0.to_str().unwrap(), "--force"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    broken_session_is_restarted(Some(&dir)).await;
}

/// A killed route peer: the survivor's solicited route fails, is restarted
/// (counted) and redials until the peer is back; its subscriptions from
/// the dead peer are gone meanwhile (no interest leaks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_leaves_no_interest_behind() {
    let (a, _da) =
        start_from_config("rsup-da", "cluster { name: t, host: 127.0.0.1, port: -1 }").await;
    let (b, _db) = start_from_config(
        "rsup-db",
        &format!(
            "cluster {{ name: t, host: 127.0.0.1, port: -1\n routes: [\"nats-route://127.0.0.1:{}\"] }}",
            route_port(&a)
        ),
    )
    .await;
    assert_eventually(|| routes(&a) == 1, TIMEOUT, "route up").await;
    // Without discovery: the client must not fail over to A (it learns A's
    // URL from connect_urls) and subscribe there itself.
    let cb = nats_with(
        b.client_addr(),
        async_nats::ConnectOptions::new().ignore_discovered_servers(),
    )
    .await;
    let _s1 = cb.subscribe("x.1").await.unwrap();
    let _s2 = cb.queue_subscribe("x.2", "q".into()).await.unwrap();
    cb.flush().await.unwrap();
    let g = a.ctx.accounts.default_account();
    let interest = |subject: &[u8]| !g.router.lookup(subject).is_empty();
    assert_eventually(
        || interest(b"x.1") && interest(b"x.2"),
        TIMEOUT,
        "interest reached A",
    )
    .await;
    b.shutdown().await;
    assert_eventually(|| routes(&a) == 0, TIMEOUT, "route gone").await;
    assert_eventually(
        || !interest(b"x.1") && !interest(b"x.2"),
        TIMEOUT,
        "the dead peer's interest removed",
    )
    .await;
    a.shutdown().await;
}

/// Two configured cluster names must agree: the route is refused (and
/// keeps being refused), as nats-server refuses a cluster name conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_name_conflict_is_refused() {
    let (a, _da) = start_from_config(
        "rsup-na",
        "cluster { name: east, host: 127.0.0.1, port: -1 }",
    )
    .await;
    let (b, _db) = start_from_config(
        "rsup-nb",
        &format!(
            "cluster {{ name: west, host: 127.0.0.1, port: -1\n routes: [\"nats-route://127.0.0.1:{}\"] }}",
            route_port(&a)
        ),
    )
    .await;
    let refused = || {
        b.ctx.cluster.get().is_some_and(|c| {
            c.solicit_stats().iter().any(|(_, s)| {
                s.restarts >= 2
                    && s.last_error.as_deref().is_some_and(|e| {
                        e.contains("Cluster Name Conflict") || e.contains("does not match")
                    })
            })
        })
    };
    assert_eventually(
        refused,
        TIMEOUT,
        "route refused twice for the name conflict",
    )
    .await;
    assert_eq!(routes(&a), 0);
    assert_eq!(routes(&b), 0);
    a.shutdown().await;
    b.shutdown().await;
}
