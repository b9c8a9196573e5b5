//! Clusters of real server processes routed to each other (nats-server's
//! route protocol and `cluster {}` configuration), exercised with real
//! clients.
//!
//! The binary under test is rnats-server unless `RNATS_CLUSTER_TEST_BIN`
//! names another one (e.g. `RNATS_CLUSTER_TEST_BIN=nats-server` runs the
//! same tests against the reference server).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::ConnectOptions;
use bytes::Bytes;
use common::cluster::*;
use common::probe::*;
use common::*;
use futures::StreamExt;
use tokio::time::Instant;

/// After a node restarts, traffic through it must flow again within this
/// long (the process start, the routes re-forming and interest being
/// exchanged again).
const RESUME_BOUND: Duration = Duration::from_secs(5);

async fn three() -> Cluster {
    Cluster::start(&test_bin(), 3, ClusterOpts::default()).await
}

fn seq_of(m: &async_nats::Message) -> u64 {
    std::str::from_utf8(&m.payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a sequence number: {:?}", m.payload))
}

#[tokio::test]
async fn publish_on_one_node_delivers_on_another() {
    let c = three().await;
    let a = c[0].client().await;
    let cc = c[2].client().await;
    let mut sub = cc.subscribe("route.basic").await.unwrap();
    wait_interest(&a, &cc).await;

    a.publish("route.basic", Bytes::from_static(b"across"))
        .await
        .unwrap();
    a.flush().await.unwrap();
    let m = next_msg(&mut sub).await;
    assert_eq!(m.subject.as_str(), "route.basic");
    assert_eq!(&m.payload[..], b"across");

    // Routes are one hop: B, which also wants the subject, must not pass
    // A's message on to C. If it did, the copy would travel B -> C ahead
    // of anything B's own client publishes after B delivered the message
    // locally; so C must see exactly A's message, A's marker and B's
    // marker.
    let bc = c[1].client().await;
    let mut wild = bc.subscribe("route.>").await.unwrap();
    wait_interest(&a, &bc).await;
    wait_interest(&bc, &cc).await;
    a.publish("route.basic", Bytes::from_static(b"two"))
        .await
        .unwrap();
    a.publish("route.basic", Bytes::from_static(b"a-marker"))
        .await
        .unwrap();
    a.flush().await.unwrap();
    assert_eq!(&next_msg(&mut wild).await.payload[..], b"two");
    bc.publish("route.basic", Bytes::from_static(b"b-marker"))
        .await
        .unwrap();
    bc.flush().await.unwrap();
    let mut got = BTreeSet::new();
    while !(got.contains("a-marker") && got.contains("b-marker")) {
        let m = next_msg(&mut sub).await;
        let p = String::from_utf8_lossy(&m.payload).into_owned();
        assert!(got.insert(p.clone()), "C got {p:?} twice");
    }
    assert_eq!(
        got,
        BTreeSet::from(["two".into(), "a-marker".into(), "b-marker".into()])
    );
}

#[tokio::test]
async fn unsubscribe_propagates_across_routes() {
    let c = three().await;
    let a = c[0].client().await;
    let cc = c[2].client().await;
    let c_id = c[2].server_id.clone();
    let a_id = c[0].server_id.clone();

    let mut sub = cc.subscribe("unsub.topic").await.unwrap();
    let mut marker = cc.subscribe("unsub.marker").await.unwrap();
    wait_interest(&a, &cc).await;
    assert!(
        c[0].route_has_sub(&c_id, "unsub.topic").await,
        "A's /routez does not list C's interest in unsub.topic: {}",
        c[0].routez(true).await
    );
    a.publish("unsub.topic", Bytes::from_static(b"before"))
        .await
        .unwrap();
    a.flush().await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"before");

    sub.unsubscribe().await.unwrap();
    // The probe's interest travels behind the UNSUB on C's route, so once
    // it reached A the removal has too.
    wait_interest(&a, &cc).await;
    let deadline = Instant::now() + TIMEOUT;
    while c[0].route_has_sub(&c_id, "unsub.topic").await {
        assert!(
            Instant::now() < deadline,
            "A still lists C's interest after the unsubscribe: {}",
            c[0].routez(true).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A no longer forwards the subject to C at all: count what C receives
    // from A. 200 messages on the dropped subject, then a marker C still
    // wants, all on one connection: when the marker has been counted
    // anything forwarded before it has been too.
    let before = c[2].in_msgs_from(&a_id).await;
    for _ in 0..200 {
        a.publish("unsub.topic", Bytes::from_static(b"after"))
            .await
            .unwrap();
    }
    a.publish("unsub.marker", Bytes::from_static(b"marker"))
        .await
        .unwrap();
    a.flush().await.unwrap();
    assert_eq!(&next_msg(&mut marker).await.payload[..], b"marker");
    let deadline = Instant::now() + TIMEOUT;
    let delta = loop {
        let d = c[2].in_msgs_from(&a_id).await - before;
        if d >= 1 {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "C's /routez never counted the marker from A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Other traffic (system account events) may share the count; the 200
    // dropped messages may not.
    assert!(
        delta < 100,
        "A kept forwarding unsub.topic to C: {delta} messages"
    );
}

/// Collect every message of a three-member queue group after a marker.
async fn drain_group(
    members: &mut [(async_nats::Subscriber, async_nats::Subscriber)],
) -> Vec<Vec<u64>> {
    let mut got = Vec::new();
    for (q, marker) in members.iter_mut() {
        // The marker was published after the sequence on the same
        // connection, so once a member's connection delivered it, every
        // message meant for that member has been handed to its queue
        // subscription (the client dispatches one connection in order).
        next_msg(marker).await;
        got.push(drain_now(q).iter().map(seq_of).collect());
    }
    got
}

fn check_exactly_once(got: &[Vec<u64>], n: u64, what: &str) {
    let mut seen = BTreeMap::new();
    for (member, seqs) in got.iter().enumerate() {
        for s in seqs {
            if let Some(other) = seen.insert(*s, member) {
                panic!("{what}: message {s} delivered twice (members {other} and {member})");
            }
        }
    }
    let missing: Vec<u64> = (0..n).filter(|s| !seen.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} messages lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(seen.len() as u64, n, "{what}: unexpected sequence numbers");
}

#[tokio::test]
async fn queue_group_across_three_nodes_delivers_exactly_once() {
    let c = three().await;
    let clients = [
        c[0].client().await,
        c[1].client().await,
        c[2].client().await,
    ];
    let mut members = Vec::new();
    for cl in &clients {
        let q = cl
            .queue_subscribe("work.items", "workers".into())
            .await
            .unwrap();
        let m = cl.subscribe("work.done").await.unwrap();
        members.push((q, m));
    }
    let publisher = c[0].client().await;
    for cl in &clients {
        wait_interest(&publisher, cl).await;
    }

    const N: u64 = 1_000;
    for i in 0..N {
        publisher
            .publish("work.items", Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    publisher.publish("work.done", Bytes::new()).await.unwrap();
    publisher.flush().await.unwrap();
    let got = drain_group(&mut members).await;
    check_exactly_once(&got, N, "all three members");

    // Without a member on the publisher's node, the group is served
    // across the routes, by both remote members, still exactly once.
    let (q, _) = &mut members[0];
    q.unsubscribe().await.unwrap();
    wait_interest(&publisher, &clients[0]).await;
    // B's and C's members are all that is left of the group.
    for i in 0..N {
        publisher
            .publish("work.items", Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    publisher.publish("work.done", Bytes::new()).await.unwrap();
    publisher.flush().await.unwrap();
    let got = drain_group(&mut members[1..]).await;
    check_exactly_once(&got, N, "members on B and C");
    assert!(
        got.iter().all(|g| !g.is_empty()),
        "one remote member got nothing: B {} C {}",
        got[0].len(),
        got[1].len()
    );
    // A's (unsubscribed) member got nothing more.
    let (q, marker) = &mut members[0];
    next_msg(marker).await;
    assert!(
        drain_now(q).is_empty(),
        "an unsubscribed member still got messages"
    );
}

#[tokio::test]
async fn request_reply_across_nodes() {
    let c = three().await;
    let responder = c[2].client().await;
    let mut service = responder.subscribe("svc.echo").await.unwrap();
    let r2 = responder.clone();
    let serve = tokio::spawn(async move {
        while let Some(m) = service.next().await {
            if let Some(reply) = m.reply {
                let mut body = b"echo:".to_vec();
                body.extend_from_slice(&m.payload);
                r2.publish(reply, body.into()).await.unwrap();
            }
        }
    });
    let requester = c[0].client().await;
    wait_interest(&requester, &responder).await;
    for i in 0..20 {
        let resp = tokio::time::timeout(
            TIMEOUT,
            requester.request("svc.echo", Bytes::from(format!("r{i}"))),
        )
        .await
        .expect("request timed out")
        .expect("request failed");
        assert_eq!(resp.payload, Bytes::from(format!("echo:r{i}")));
    }
    serve.abort();
}

#[tokio::test]
async fn ten_thousand_messages_cross_in_order() {
    let c = three().await;
    let a = c[0].client().await;
    let cc = c[2].client().await;
    let mut sub = cc.subscribe("bulk.seq").await.unwrap();
    wait_interest(&a, &cc).await;

    const N: u64 = 10_000;
    let pubr = a.clone();
    let publish = tokio::spawn(async move {
        for i in 0..N {
            pubr.publish("bulk.seq", Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        pubr.flush().await.unwrap();
    });
    for want in 0..N {
        let m = next_msg(&mut sub).await;
        assert_eq!(seq_of(&m), want, "out of order or lost");
    }
    publish.await.unwrap();
}

#[tokio::test]
async fn headers_cross_a_route() {
    let c = three().await;
    let a = c[0].client().await;
    let cc = c[2].client().await;
    let mut sub = cc.subscribe("hdr.x").await.unwrap();
    wait_interest(&a, &cc).await;

    let mut h = async_nats::HeaderMap::new();
    h.insert("X-Trace", "abc-123");
    h.append("X-Multi", "one");
    h.append("X-Multi", "two");
    a.publish_with_headers("hdr.x", h, Bytes::from_static(b"with headers"))
        .await
        .unwrap();
    // A header-only message (empty payload) too.
    let mut h2 = async_nats::HeaderMap::new();
    h2.insert("X-Only", "yes");
    a.publish_with_headers("hdr.x", h2, Bytes::new())
        .await
        .unwrap();
    a.flush().await.unwrap();

    let m = next_msg(&mut sub).await;
    assert_eq!(&m.payload[..], b"with headers");
    let hs = m.headers.expect("headers crossed the route");
    assert_eq!(hs.get("X-Trace").map(|v| v.as_str()), Some("abc-123"));
    let multi: Vec<&str> = hs.get_all("X-Multi").map(|v| v.as_str()).collect();
    assert_eq!(multi, ["one", "two"]);

    let m = next_msg(&mut sub).await;
    assert!(m.payload.is_empty());
    let hs = m.headers.expect("headers of the empty message");
    assert_eq!(hs.get("X-Only").map(|v| v.as_str()), Some("yes"));
}

#[tokio::test]
async fn accounts_stay_isolated_across_routes() {
    let opts = ClusterOpts {
        common: "accounts {\n  A: { users: [ { user: a, password: a } ] }\n  \
                 B: { users: [ { user: b, password: b } ] }\n}\n"
            .into(),
        ..Default::default()
    };
    let c = Cluster::start(&test_bin(), 3, opts).await;
    let login = |u: &str| ConnectOptions::with_user_and_password(u.into(), u.into());
    let a_on_a = c[0].client_with(login("a")).await;
    let b_on_a = c[0].client_with(login("b")).await;
    let a_on_c = c[2].client_with(login("a")).await;
    let b_on_c = c[2].client_with(login("b")).await;

    let mut a_sub = a_on_c.subscribe("iso.x").await.unwrap();
    let mut b_sub = b_on_c.subscribe("iso.x").await.unwrap();
    wait_interest(&a_on_a, &a_on_c).await;
    wait_interest(&b_on_a, &b_on_c).await;

    for i in 0..100u64 {
        a_on_a
            .publish("iso.x", Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    a_on_a.flush().await.unwrap();
    for want in 0..100u64 {
        assert_eq!(seq_of(&next_msg(&mut a_sub).await), want);
    }
    // Account B's subscriber on the same node got none of them. The
    // messages reached C (A's subscriber there has them); C hands one
    // message to all its local subscribers at once, and a round trip on
    // B's connection afterwards flushes anything queued to it.
    barrier(&b_on_c).await;
    // And B's own traffic still flows: a marker from B on node A is the
    // first thing B's subscriber sees.
    b_on_a
        .publish("iso.x", Bytes::from_static(b"b-marker"))
        .await
        .unwrap();
    b_on_a.flush().await.unwrap();
    let m = next_msg(&mut b_sub).await;
    assert_eq!(&m.payload[..], b"b-marker", "B received A's message");
    barrier(&b_on_c).await;
    let extra = drain_now(&mut b_sub);
    assert!(
        extra.is_empty(),
        "B's subscriber got {} unexpected messages",
        extra.len()
    );
    // A's subscriber got nothing of B's.
    barrier(&a_on_c).await;
    assert!(drain_now(&mut a_sub).is_empty(), "A received B's marker");
}

#[tokio::test]
async fn killed_node_fails_over_and_rejoins() {
    let mut c = three().await;
    let a = c[0].client().await;
    let b = c[1].client().await;

    // A client that knows every URL, connected to C first.
    let urls: Vec<async_nats::ServerAddr> = [2, 0, 1]
        .iter()
        .map(|&i| c[i].client_url().parse().unwrap())
        .collect();
    let roaming = ConnectOptions::new()
        .retain_servers_order()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connection_timeout(Duration::from_secs(2))
        .connect(urls)
        .await
        .expect("connect to C");
    let mut roam_sub = roaming.subscribe("failover.x").await.unwrap();
    wait_interest(&a, &roaming).await;
    a.publish("failover.x", Bytes::from_static(b"before"))
        .await
        .unwrap();
    a.flush().await.unwrap();
    assert_eq!(&next_msg(&mut roam_sub).await.payload[..], b"before");

    let mut b_sub = b.subscribe("failover.ab").await.unwrap();
    wait_interest(&a, &b).await;

    c.kill(2).await;

    // A and B keep routing to each other.
    a.publish("failover.ab", Bytes::from_static(b"still"))
        .await
        .unwrap();
    a.flush().await.unwrap();
    assert_eq!(&next_msg(&mut b_sub).await.payload[..], b"still");
    c.wait_mesh(&[0, 1]).await;

    // The roaming client reconnects to a survivor and resubscribes; A's
    // messages reach it again.
    probe_until_delivered(&a, "failover.x", &mut roam_sub, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("roaming client never resubscribed: {e}"));

    // C comes back on the same ports and rejoins the mesh.
    let restarted = Instant::now();
    c.restart(2).await;
    c.wait_full_mesh().await;
    let cc = c[2].client().await;
    // Interest re-propagates both ways: C learns the subscriptions that
    // already exist on the survivors...
    probe_until_delivered(&cc, "failover.x", &mut roam_sub, RESUME_BOUND)
        .await
        .unwrap_or_else(|e| panic!("C does not forward to the old subscriber: {e}"));
    // ...and the survivors learn C's new ones.
    let mut c_sub = cc.subscribe("failover.c").await.unwrap();
    probe_until_delivered(&a, "failover.c", &mut c_sub, RESUME_BOUND)
        .await
        .unwrap_or_else(|e| panic!("A does not forward to C after the restart: {e}"));
    let took = restarted.elapsed();
    assert!(
        took < RESUME_BOUND,
        "delivery through the restarted node took {took:?} (bound {RESUME_BOUND:?})"
    );
}

#[tokio::test]
async fn frozen_node_does_not_stall_the_others() {
    let c = three().await;
    let a = c[0].client().await;
    let b = c[1].client().await;
    let cc = c[2].client().await;
    let mut b_sub = b.subscribe("freeze.x").await.unwrap();
    let mut c_sub = cc.subscribe("freeze.x").await.unwrap();
    wait_interest(&a, &b).await;
    wait_interest(&a, &cc).await;

    c.freeze(2);
    // A keeps delivering to B while C, which also wants the messages,
    // reads nothing. 1,000 small messages fit in the route's socket
    // buffers, so the route to C is not cut either.
    const N: u64 = 1_000;
    for i in 0..N {
        a.publish("freeze.x", Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    a.flush().await.unwrap();
    for want in 0..N {
        assert_eq!(seq_of(&next_msg(&mut b_sub).await), want);
    }
    c.thaw(2);
    // C catches up in order once it runs again.
    for want in 0..N {
        assert_eq!(seq_of(&next_msg(&mut c_sub).await), want);
    }
}

#[tokio::test]
async fn client_info_lists_every_nodes_client_url() {
    let mut c = three().await;
    let all: BTreeSet<String> = c.nodes.iter().map(Node::client_hostport).collect();
    // The URLs arrive with the routes; poll fresh connections until the
    // full set is there (a bounded wait, not a sleep).
    let deadline = Instant::now() + TIMEOUT;
    let mut raw = loop {
        let raw = Raw::connect(c[0].client_addr()).await;
        let got = connect_urls(&raw.info_json());
        // nats-server lists the node's own client URL too.
        if got == all {
            break raw;
        }
        assert!(
            Instant::now() < deadline,
            "connect_urls {got:?}, want {all:?}\n{}",
            raw.info.as_deref().unwrap_or("")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let info = raw.info_json();
    assert_eq!(info["cluster"].as_str(), Some("rnats-test"), "{info}");

    // A client that announced it understands async INFO is told when a
    // node goes away.
    raw.send(b"CONNECT {\"verbose\":false,\"protocol\":1}\r\nPING\r\n")
        .await;
    raw.expect("PONG").await;
    let gone = c[2].client_hostport();
    c.kill(2).await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let line = raw
            .try_line(deadline.saturating_duration_since(Instant::now()))
            .await
            .unwrap_or_else(|e| panic!("no INFO without {gone}: {e}"))
            .expect("server closed the client");
        if let Some(json) = line.strip_prefix("INFO ") {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            let urls = connect_urls(&v);
            if !urls.contains(&gone) {
                assert!(urls.contains(&c[1].client_hostport()), "{line}");
                break;
            }
        }
    }
}

fn connect_urls(info: &serde_json::Value) -> BTreeSet<String> {
    info["connect_urls"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Route TLS.

/// Development certificates: client/server CA `ca.pem` with server- and
/// client- pairs, and a separate route CA `route-ca.pem` with a route- pair.
fn certs(c_dir: &TempDir, name: &str) -> std::path::PathBuf {
    let dir = c_dir.path(name);
    dev_certs(&dir);
    assert!(
        dir.join("route-ca.pem").exists(),
        "`rnats certs dev` did not write route-ca.pem (the separate route CA)"
    );
    dir
}

fn route_tls(dir: &std::path::Path) -> String {
    route_tls_block(dir, "route-cert.pem", "route-key.pem", "route-ca.pem")
}

/// Three nodes meshed over mutual TLS, messages cross. (That these route
/// ports really demand TLS is `route_tls_refuses_plain_tcp`'s subject.)
#[tokio::test]
async fn route_tls_mutual_three_nodes() {
    let tmp = TempDir::new("route-tls");
    let pki = certs(&tmp, "pki");
    let opts = ClusterOpts {
        cluster_extra: route_tls(&pki),
        ..Default::default()
    };
    let c = Cluster::start(&test_bin(), 3, opts).await;
    let a = c[0].client().await;
    for target in [1, 2] {
        let t = c[target].client().await;
        let mut sub = t.subscribe("tls.x").await.unwrap();
        wait_interest(&a, &t).await;
        a.publish("tls.x", Bytes::from_static(b"secret"))
            .await
            .unwrap();
        a.flush().await.unwrap();
        assert_eq!(&next_msg(&mut sub).await.payload[..], b"secret");
    }
}

/// Nodes 0 and 1 are a healthy pair; node 2 (configured by the caller)
/// dials them (by default both), and they do not dial it. Returns once 0 and 1 meshed
/// and node 0 logged at least two refusals of node 2 with every one of
/// `log_needles` (two, so the refusal is not a one-off: node 2 retried
/// and was refused again), after which node 2 must have no route to
/// either and neither to it.
async fn assert_refused(opts: ClusterOpts, log_needles: &[&str]) -> Cluster {
    let mut opts = opts;
    opts.wait_mesh = false;
    let defaults = [
        (0, vec![RouteTo::node(1)]),
        (1, vec![RouteTo::node(0)]),
        (2, vec![RouteTo::node(0), RouteTo::node(1)]),
    ];
    for (i, routes) in defaults {
        opts.node_routes.entry(i).or_insert(routes);
    }
    let c = Cluster::start(&test_bin(), 3, opts).await;
    c.wait_mesh(&[0, 1]).await;
    let lines = c[0]
        .wait_log_lines(log_needles, 2, Duration::from_secs(20))
        .await;
    eprintln!("refusal logged by the accepting node: {}", lines[0]);
    let bad = &c[2].server_id;
    for i in [0, 1] {
        let peers = c[i].route_peers().await;
        assert!(
            !peers.contains(bad),
            "{} has a route to the refused node: {}",
            c[i].name,
            c[i].routez(false).await
        );
    }
    let rz = c[2].routez(false).await;
    assert_eq!(rz["num_routes"].as_u64(), Some(0), "refused node: {rz}");
    c
}

#[tokio::test]
async fn route_tls_refuses_an_untrusted_ca() {
    let tmp = TempDir::new("route-tls-ca");
    let good = certs(&tmp, "good");
    let other = certs(&tmp, "other");
    let mut opts = ClusterOpts {
        cluster_extra: route_tls(&good),
        ..Default::default()
    };
    // Node 2's certificate comes from another route CA; it trusts the
    // good CA, so the refusal is the accepting side's.
    opts.node_cluster_extra.insert(
        2,
        format!(
            "  tls {{\n    cert_file: \"{o}/route-cert.pem\"\n    key_file: \"{o}/route-key.pem\"\n    \
             ca_file: \"{g}/route-ca.pem\"\n    timeout: 5\n  }}\n",
            o = other.display(),
            g = good.display()
        ),
    );
    assert_refused(opts, &["TLS route handshake error"]).await;
}

#[tokio::test]
async fn route_tls_refuses_a_client_certificate() {
    let tmp = TempDir::new("route-tls-client");
    let pki = certs(&tmp, "pki");
    let mut opts = ClusterOpts {
        cluster_extra: route_tls(&pki),
        ..Default::default()
    };
    // Node 2 presents the CLIENT certificate on the route port (signed by
    // the client CA, not the route CA).
    opts.node_cluster_extra.insert(
        2,
        route_tls_block(&pki, "client-cert.pem", "client-key.pem", "route-ca.pem"),
    );
    assert_refused(opts, &["TLS route handshake error"]).await;
}

#[tokio::test]
async fn route_tls_refuses_plain_tcp() {
    let tmp = TempDir::new("route-tls-plain");
    let pki = certs(&tmp, "pki");
    let mut opts = ClusterOpts {
        cluster_extra: route_tls(&pki),
        ..Default::default()
    };
    opts.node_cluster_extra.insert(2, String::new());
    assert_refused(opts, &["TLS route handshake error"]).await;
}

#[tokio::test]
async fn route_refuses_wrong_credentials() {
    let mut opts = ClusterOpts::default();
    opts.node_cluster_extra.insert(
        0,
        "  authorization { user: r, password: s, timeout: 2 }\n".into(),
    );
    // Node 1 dials node 0 with the right credentials (so the pair meshing
    // shows they are accepted), node 2 with a wrong password.
    opts.node_routes
        .insert(1, vec![RouteTo::with_auth(0, "r", "s")]);
    opts.node_routes
        .insert(2, vec![RouteTo::with_auth(0, "r", "wrong")]);
    assert_refused(opts, &["authentication error"]).await;
}

/// Gossip: nodes given only one seed route (node 0) learn of each other
/// from its INFO and form the full mesh (the harness waits for it), also
/// with route credentials, which implicit routes reuse; then a message
/// crosses the route they made themselves.
#[tokio::test]
async fn one_seed_route_joins_the_full_mesh() {
    let mut opts = ClusterOpts {
        cluster_extra: "authorization { user: r, password: s }".into(),
        ..Default::default()
    };
    opts.node_routes.insert(0, vec![]);
    for i in [1, 2] {
        opts.node_routes.insert(
            i,
            vec![RouteTo {
                node: 0,
                userinfo: Some("r:s".into()),
            }],
        );
    }
    let c = Cluster::start(&test_bin(), 3, opts).await;
    let b = c[1].client().await;
    let cc = c[2].client().await;
    wait_interest(&b, &cc).await;
    assert!(
        c[2].in_msgs_from(&c[1].server_id).await > 0,
        "n1 -> n2 directly"
    );
}
