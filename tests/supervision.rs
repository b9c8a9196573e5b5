//! Supervision: a connection actor that fails is cleaned up completely by
//! its supervisor, and the rest of the server carries on.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_connection_actor_is_cleaned_up() {
    let server = start_default().await;
    let addr = server.client_addr();

    // A healthy pair that must keep working throughout.
    let healthy = nats(addr).await;
    let mut healthy_sub = healthy.subscribe("steady").await.unwrap();
    barrier(&healthy).await;
    // Only `steady` once the barrier's own subscription is gone.
    let base_subs = 1;
    assert_eventually(|| sub_count(&server) == base_subs, TIMEOUT, "one sub").await;

    // The victim: a raw client with three subscriptions.
    let mut victim = Raw::handshake(addr, CONNECT).await;
    victim
        .send(b"SUB steady 1\r\nSUB other.* 2\r\nSUB q.> workers 3\r\n")
        .await;
    victim.ping_collect().await;
    assert_eventually(
        || sub_count(&server) == base_subs + 3,
        TIMEOUT,
        "subscription count",
    )
    .await;
    let cid = cid_of(&server, victim.stream.local_addr().unwrap()).expect("victim cid");
    let conns_before = server.ctx.conns.len();

    server.ctx.inject_connection_panic(cid);

    // Its subscriptions leave the router, it leaves the connection table,
    // and its socket is closed.
    assert_eventually(
        || sub_count(&server) == base_subs,
        TIMEOUT,
        "victim's subscriptions removed",
    )
    .await;
    assert_eventually(
        || !server.ctx.conns.contains_key(&cid),
        TIMEOUT,
        "victim removed from conns",
    )
    .await;
    assert_eq!(server.ctx.conns.len(), conns_before - 1);
    let (_, end) = victim.read_to_end(TIMEOUT).await;
    assert!(end.is_closed(), "victim's socket still open");
    assert_eq!(
        server.ctx.accounts.default_account().num_connections(),
        server.ctx.conns.len()
    );

    // The others carry on: existing connections and brand new ones.
    let publisher = nats(addr).await;
    publisher
        .publish("steady", Bytes::from_static(b"after"))
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    assert_eq!(&next_msg(&mut healthy_sub).await.payload[..], b"after");

    let mut fresh = Raw::handshake(addr, CONNECT).await;
    fresh
        .send(b"SUB other.x 1\r\nPUB other.x 2\r\nok\r\n")
        .await;
    let (_, msgs) = fresh.ping_collect().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].payload, b"ok");

    // The failure is on record as a closed connection.
    assert!(
        server.ctx.closed.lock().iter().any(|c| c.cid == cid),
        "victim listed among closed connections"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_panics_do_not_disturb_the_supervisor() {
    let server = start_default().await;
    let addr = server.client_addr();
    for round in 0..10 {
        let mut c = Raw::handshake(addr, CONNECT).await;
        c.send(format!("SUB round.{round} 1\r\n").as_bytes()).await;
        c.ping_collect().await;
        let cid = cid_of(&server, c.stream.local_addr().unwrap()).unwrap();
        server.ctx.inject_connection_panic(cid);
        let (_, end) = c.read_to_end(TIMEOUT).await;
        assert!(end.is_closed(), "round {round}: socket still open");
        assert_eventually(
            || server.ctx.conns.is_empty() && sub_count(&server) == 0,
            TIMEOUT,
            "cleanup after a panic",
        )
        .await;
    }
    let c = nats(addr).await;
    let mut sub = c.subscribe("alive").await.unwrap();
    c.publish("alive", Bytes::from_static(b"yes"))
        .await
        .unwrap();
    c.flush().await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"yes");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_come_and_go_without_leaks() {
    let server = start_default().await;
    let addr = server.client_addr();

    // 25 async-nats clients and 25 raw ones, each with subscriptions.
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    for i in 0..25 {
        let c = nats(addr).await;
        subs.push(c.subscribe(format!("churn.{i}")).await.unwrap());
        subs.push(c.queue_subscribe("churn.all", "q".into()).await.unwrap());
        barrier(&c).await;
        clients.push(c);
    }
    let mut raws = Vec::new();
    for i in 0..25 {
        let mut r = Raw::handshake(addr, CONNECT).await;
        r.send(format!("SUB churn.{i} 1\r\nSUB churn.> 2\r\nSUB churn.all q 3\r\n").as_bytes())
            .await;
        r.ping_collect().await;
        raws.push(r);
    }
    assert_eq!(server.ctx.conns.len(), 50);
    assert_eventually(
        || sub_count(&server) == 50 + 75,
        TIMEOUT,
        "all subscriptions in place",
    )
    .await;

    // Traffic while they are all connected.
    let p = nats(addr).await;
    for i in 0..25 {
        p.publish(format!("churn.{i}"), Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    barrier(&p).await;
    drop(p);

    // Everyone leaves: async-nats clients by dropping every handle, raw
    // ones by dropping the socket.
    drop(subs);
    drop(clients);
    drop(raws);
    assert_eventually(
        || server.ctx.conns.is_empty(),
        TIMEOUT,
        "all connections gone",
    )
    .await;
    assert_eventually(
        || sub_count(&server) == 0,
        TIMEOUT,
        "all subscriptions gone",
    )
    .await;
    assert_eq!(server.ctx.accounts.default_account().num_connections(), 0);
    assert!(
        server
            .ctx
            .stats
            .total_connections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 51
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_while_subscribing_leaves_no_subscriptions_behind() {
    // The connection's reader may still be handling a burst of SUBs when
    // its actor fails and the supervisor cleans up: none of those SUBs may
    // outlive the connection in the router.
    let server = start_default().await;
    let addr = server.client_addr();
    for round in 0..20 {
        let mut c = Raw::handshake(addr, CONNECT).await;
        let cid = cid_of(&server, c.stream.local_addr().unwrap()).unwrap();
        let mut burst = Vec::new();
        for i in 0..5_000 {
            burst.extend_from_slice(format!("SUB burst.{round}.{i} {i}\r\n").as_bytes());
        }
        let writer = tokio::spawn(async move {
            // The server may close mid-burst; write errors are expected.
            let _ = tokio::io::AsyncWriteExt::write_all(&mut c.stream, &burst).await;
            c
        });
        // Let part of the burst in, then fail the actor.
        assert_eventually(
            || sub_count(&server) > 0,
            TIMEOUT,
            "some subscriptions arrive",
        )
        .await;
        server.ctx.inject_connection_panic(cid);
        let _c = writer.await.unwrap();
        assert_eventually(
            || !server.ctx.conns.contains_key(&cid),
            TIMEOUT,
            "connection removed",
        )
        .await;
        let cleaned = wait_until(|| sub_count(&server) == 0, Duration::from_secs(3)).await;
        assert!(
            cleaned,
            "round {round}: {} subscriptions leaked",
            sub_count(&server)
        );
    }
    server.shutdown().await;
}
