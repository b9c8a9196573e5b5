mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use rnats::config::cluster::{ClusterOptions, RouteUrl};

fn clustered(routes: &[u16]) -> rnats::Options {
    let mut o = opts();
    o.cluster = Some(ClusterOptions {
        name: "t".into(),
        host: "127.0.0.1".into(),
        port: -1,
        advertise: None,
        no_advertise: false,
        routes: routes
            .iter()
            .map(|p| RouteUrl {
                display: format!("nats-route://127.0.0.1:{p}"),
                host: "127.0.0.1".into(),
                port: *p,
                user: None,
                password: None,
            })
            .collect(),
        connect_retries: 0,
        auth: None,
        tls: None,
        tls_check_known_urls: false,
        ping_interval: None,
        ping_max: None,
    });
    o
}

fn route_port(s: &rnats::Server) -> u16 {
    s.ctx.cluster.get().unwrap().listen_addr.port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_route_a_message() {
    let a = start(clustered(&[])).await;
    let b = start(clustered(&[route_port(&a)])).await;
    assert!(
        b.ctx
            .cluster
            .get()
            .unwrap()
            .wait_for_routes(1, TIMEOUT)
            .await,
        "route up"
    );
    let cb = nats(b.client_addr()).await;
    let mut sub = cb.subscribe("foo").await.unwrap();
    cb.flush().await.unwrap();
    let ca = nats(a.client_addr()).await;
    let ok = wait_until(
        || {
            a.ctx
                .cluster
                .get()
                .unwrap()
                .routes()
                .iter()
                .any(|r| r.subs.load(std::sync::atomic::Ordering::Relaxed) > 0)
        },
        TIMEOUT,
    )
    .await;
    assert!(ok, "interest reached A");
    ca.publish("foo", "hello".into()).await.unwrap();
    ca.flush().await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("delivered")
        .unwrap();
    assert_eq!(&m.payload[..], b"hello");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_with_nats_server() {
    let Some(bin) = on_path("nats-server") else {
        eprintln!("SKIP: nats-server not on PATH");
        return;
    };
    let dir = TempDir::new("mixed");
    let (cport, rport) = (free_port(), free_port());
    let conf = dir.path("ns.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{cport}\nserver_name: ns\ncluster {{ name: t, listen: 127.0.0.1:{rport} }}\n"
        ),
    )
    .unwrap();
    let log = dir.path("ns.log");
    let mut ns = Proc::spawn(
        bin.to_str().unwrap(),
        &["-c", conf.to_str().unwrap(), "-DV"],
        &log,
    );
    ns.wait_log("Server is ready").await;
    let r = start(clustered(&[rport])).await;
    assert!(
        r.ctx
            .cluster
            .get()
            .unwrap()
            .wait_for_routes(1, TIMEOUT)
            .await,
        "route to nats-server up"
    );
    let ns_addr: std::net::SocketAddr = format!("127.0.0.1:{cport}").parse().unwrap();
    let cn = nats(ns_addr).await;
    let cr = nats(r.client_addr()).await;
    // nats-server side subscribes, rnats side publishes.
    let mut sub_n = cn.subscribe("x.>").await.unwrap();
    cn.flush().await.unwrap();
    let mut sub_r = cr.subscribe("y").await.unwrap();
    cr.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut got_n = None;
    while got_n.is_none() && tokio::time::Instant::now() < deadline {
        cr.publish("x.1", "to-ns".into()).await.unwrap();
        cr.flush().await.unwrap();
        got_n = tokio::time::timeout(Duration::from_millis(200), sub_n.next())
            .await
            .ok()
            .flatten();
    }
    assert_eq!(&got_n.expect("rnats → nats-server").payload[..], b"to-ns");
    let mut got_r = None;
    while got_r.is_none() && tokio::time::Instant::now() < deadline {
        cn.publish("y", "to-rnats".into()).await.unwrap();
        cn.flush().await.unwrap();
        got_r = tokio::time::timeout(Duration::from_millis(200), sub_r.next())
            .await
            .ok()
            .flatten();
    }
    assert_eq!(
        &got_r.expect("nats-server → rnats").payload[..],
        b"to-rnats"
    );
    // Request/reply across: responder on nats-server, requester on rnats.
    let mut svc = cn.subscribe("svc").await.unwrap();
    cn.flush().await.unwrap();
    let cn2 = cn.clone();
    tokio::spawn(async move {
        while let Some(m) = svc.next().await {
            if let Some(r) = m.reply {
                let _ = cn2.publish(r, "pong".into()).await;
            }
        }
    });
    let mut answered = None;
    while answered.is_none() && tokio::time::Instant::now() < deadline {
        answered =
            tokio::time::timeout(Duration::from_millis(300), cr.request("svc", "ping".into()))
                .await
                .ok()
                .and_then(|r| r.ok());
    }
    assert_eq!(&answered.expect("request answered").payload[..], b"pong");
    drop(ns);
    if std::env::var("SHOW_NS_LOG").is_ok() {
        eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
}
