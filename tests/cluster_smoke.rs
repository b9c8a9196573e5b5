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
