//! Clusters mixing rnats-server and nats-server nodes: the route protocol
//! must interoperate with the reference implementation in both directions.
//!
//! Skipped (with a message) when nats-server is not on PATH. The rnats side
//! is rnats-server unless `RNATS_CLUSTER_TEST_BIN` names another binary;
//! `RNATS_CLUSTER_TEST_BIN=nats-server` makes every node nats-server, which
//! checks the tests themselves.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::cluster::*;
use common::probe::*;
use common::*;
use futures::StreamExt;
use tokio::time::Instant;

/// After a node restarts, traffic through it must flow again within this.
const RESUME_BOUND: Duration = Duration::from_secs(5);

/// (rnats side, nats-server side), or `None` when nats-server is missing.
fn bins(test: &str) -> Option<(String, String)> {
    let nats = nats_server_bin(test)?;
    Some((test_bin(), nats))
}

fn seq_of(m: &async_nats::Message) -> u64 {
    std::str::from_utf8(&m.payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a sequence number: {:?}", m.payload))
}

/// 1,000 messages (the first with headers) published on node `from` arrive
/// in order at a subscriber on node `to`.
async fn assert_stream(c: &Cluster, from: usize, to: usize, subject: &str) {
    let p = c[from].client().await;
    let s = c[to].client().await;
    let mut sub = s.subscribe(subject.to_string()).await.unwrap();
    wait_interest(&p, &s).await;
    let mut h = async_nats::HeaderMap::new();
    h.insert("X-From", c[from].name.as_str());
    p.publish_with_headers(subject.to_string(), h, Bytes::from_static(b"hdr"))
        .await
        .unwrap();
    const N: u64 = 1_000;
    for i in 0..N {
        p.publish(subject.to_string(), Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    p.flush().await.unwrap();
    let first = next_msg(&mut sub).await;
    assert_eq!(&first.payload[..], b"hdr");
    let h = first.headers.expect("headers crossed");
    assert_eq!(
        h.get("X-From").map(|v| v.as_str()),
        Some(c[from].name.as_str())
    );
    for want in 0..N {
        assert_eq!(
            seq_of(&next_msg(&mut sub).await),
            want,
            "{} -> {}",
            bin_label(&c[from].bin),
            bin_label(&c[to].bin)
        );
    }
}

#[tokio::test]
async fn mixed_delivery_both_ways() {
    let Some((r, n)) = bins("mixed_delivery_both_ways") else {
        return;
    };
    let c = Cluster::start_mixed(&[r, n], ClusterOpts::default()).await;
    assert_stream(&c, 0, 1, "mixed.r2n").await;
    assert_stream(&c, 1, 0, "mixed.n2r").await;
}

#[tokio::test]
async fn mixed_queue_group_exactly_once() {
    let Some((r, n)) = bins("mixed_queue_group_exactly_once") else {
        return;
    };
    // Members on nodes 0 (rnats) and 1 (nats-server); publishers on nodes
    // 2 (rnats) and 3 (nats-server), which have no member, so each
    // publishing server must pick one remote member per message.
    let c = Cluster::start_mixed(&[r.clone(), n.clone(), r, n], ClusterOpts::default()).await;
    let member_clients = [c[0].client().await, c[1].client().await];
    let mut members = Vec::new();
    for m in &member_clients {
        let q = m.queue_subscribe("mq.work", "group".into()).await.unwrap();
        let done = m.subscribe("mq.done").await.unwrap();
        members.push((q, done));
    }
    let publishers = [c[2].client().await, c[3].client().await];
    for p in &publishers {
        for m in &member_clients {
            wait_interest(p, m).await;
        }
    }
    const PER: u64 = 500;
    for (k, p) in publishers.iter().enumerate() {
        let base = k as u64 * PER;
        for i in base..base + PER {
            p.publish("mq.work", Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        p.publish("mq.done", Bytes::new()).await.unwrap();
        p.flush().await.unwrap();
    }
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut per_member = Vec::new();
    for (idx, (q, done)) in members.iter_mut().enumerate() {
        // One marker from each publisher; each came after that
        // publisher's messages on the same route.
        next_msg(done).await;
        next_msg(done).await;
        let got = drain_now(q);
        per_member.push(got.len());
        for m in &got {
            let s = seq_of(m);
            if let Some(other) = seen.insert(s, idx) {
                panic!("message {s} delivered to members {other} and {idx}");
            }
        }
    }
    let missing: Vec<u64> = (0..2 * PER).filter(|s| !seen.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "{} lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        per_member.iter().all(|&k| k > 0),
        "a member got nothing: {per_member:?}"
    );
}

async fn assert_request_reply(c: &Cluster, requester: usize, responder: usize, subject: &str) {
    let resp_client = c[responder].client().await;
    let mut service = resp_client.subscribe(subject.to_string()).await.unwrap();
    let rc = resp_client.clone();
    let serve = tokio::spawn(async move {
        while let Some(m) = service.next().await {
            if let Some(reply) = m.reply {
                rc.publish(reply, m.payload).await.unwrap();
            }
        }
    });
    let req = c[requester].client().await;
    wait_interest(&req, &resp_client).await;
    for i in 0..20 {
        let body = Bytes::from(format!("q{i}"));
        let resp = tokio::time::timeout(TIMEOUT, req.request(subject.to_string(), body.clone()))
            .await
            .expect("request timed out")
            .unwrap_or_else(|e| {
                panic!(
                    "request {} -> {} failed: {e}",
                    bin_label(&c[requester].bin),
                    bin_label(&c[responder].bin)
                )
            });
        assert_eq!(resp.payload, body);
    }
    serve.abort();
}

#[tokio::test]
async fn mixed_request_reply() {
    let Some((r, n)) = bins("mixed_request_reply") else {
        return;
    };
    let c = Cluster::start_mixed(&[r, n], ClusterOpts::default()).await;
    assert_request_reply(&c, 0, 1, "mixed.svc.a").await;
    assert_request_reply(&c, 1, 0, "mixed.svc.b").await;
}

#[tokio::test]
async fn mixed_route_tls() {
    let Some((r, n)) = bins("mixed_route_tls") else {
        return;
    };
    let tmp = TempDir::new("mixed-tls");
    let pki = tmp.path("pki");
    dev_certs(&pki);
    assert!(
        pki.join("route-ca.pem").exists(),
        "`rnats certs dev` did not write route-ca.pem (the separate route CA)"
    );
    let opts = ClusterOpts {
        cluster_extra: route_tls_block(&pki, "route-cert.pem", "route-key.pem", "route-ca.pem"),
        ..Default::default()
    };
    let c = Cluster::start_mixed(&[r, n], opts).await;
    assert_stream(&c, 0, 1, "mixed.tls.r2n").await;
    assert_stream(&c, 1, 0, "mixed.tls.n2r").await;
}

/// Kill -9 node `victim`, restart it on the same ports, and check that
/// delivery through it resumes both ways within `RESUME_BOUND`.
async fn bounce(c: &mut Cluster, victim: usize, other: usize) {
    let survivor = c[other].client().await;
    let mut keep = survivor.subscribe("bounce.keep").await.unwrap();
    c.kill(victim).await;
    let restarted = Instant::now();
    c.restart(victim).await;
    c.wait_full_mesh().await;
    let back = c[victim].client().await;
    // The restarted node learns the survivor's existing interest...
    probe_until_delivered(&back, "bounce.keep", &mut keep, RESUME_BOUND)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "restarted {} does not forward to {}: {e}\n{}",
                bin_label(&c[victim].bin),
                bin_label(&c[other].bin),
                c.describe()
            )
        });
    // ...and the survivor learns the restarted node's new interest.
    let mut fresh = back.subscribe("bounce.fresh").await.unwrap();
    probe_until_delivered(&survivor, "bounce.fresh", &mut fresh, RESUME_BOUND)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{} does not forward to restarted {}: {e}\n{}",
                bin_label(&c[other].bin),
                bin_label(&c[victim].bin),
                c.describe()
            )
        });
    let took = restarted.elapsed();
    assert!(
        took < RESUME_BOUND,
        "delivery through restarted node {victim} took {took:?}"
    );
}

#[tokio::test]
async fn mixed_restart_of_either_side() {
    let Some((r, n)) = bins("mixed_restart_of_either_side") else {
        return;
    };
    let mut c = Cluster::start_mixed(&[r, n], ClusterOpts::default()).await;
    bounce(&mut c, 0, 1).await;
    bounce(&mut c, 1, 0).await;
    // And plain traffic is still fine after both restarts.
    assert_stream(&c, 0, 1, "mixed.after.r2n").await;
    assert_stream(&c, 1, 0, "mixed.after.n2r").await;
}
