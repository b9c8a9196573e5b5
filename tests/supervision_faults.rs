//! Supervision that cannot leak: a panic injected into the client
//! supervisor, a listener, a subscription shard, a connection's reader or
//! its writer leaves no subscription, connection or count behind; the
//! port keeps accepting; and (except for the client supervisor, whose
//! failure closes every client so they reconnect) other clients are
//! unharmed.

mod common;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::*;

/// Subscribe a raw victim with three subscriptions; returns it and its cid.
async fn victim(server: &rnats::Server) -> (Raw, u64) {
    let mut v = Raw::handshake(server.client_addr(), CONNECT).await;
    v.send(b"SUB steady 1\r\nSUB other.* 2\r\nSUB q.> workers 3\r\n")
        .await;
    v.ping_collect().await;
    let cid = cid_of(server, v.stream.local_addr().unwrap()).expect("victim cid");
    (v, cid)
}

/// Everything is accounted for: no subscription beyond `subs`, the
/// connection table and the account's count agree.
async fn no_leaks(server: &rnats::Server, subs: usize) {
    assert_eventually(
        || sub_count(server) == subs,
        TIMEOUT,
        "subscriptions back to the expected count",
    )
    .await;
    assert_eq!(
        server.ctx.accounts.default_account().num_connections(),
        server.ctx.conns.len(),
        "account connection count matches the connection table"
    );
}

/// A brand-new client can connect, subscribe and receive.
async fn port_accepts(server: &rnats::Server) {
    let c = nats(server.client_addr()).await;
    let mut sub = c.subscribe("fresh.check").await.unwrap();
    c.publish("fresh.check", Bytes::from_static(b"ok"))
        .await
        .unwrap();
    c.flush().await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"ok");
}

/// A bystander pair keeps receiving.
async fn bystander_works(pub_client: &async_nats::Client, sub: &mut async_nats::Subscriber) {
    pub_client
        .publish("bystander", Bytes::from_static(b"still here"))
        .await
        .unwrap();
    pub_client.flush().await.unwrap();
    assert_eq!(&next_msg(sub).await.payload[..], b"still here");
}

async fn with_bystander(server: &rnats::Server) -> (async_nats::Client, async_nats::Subscriber) {
    let c = nats(server.client_addr()).await;
    let sub = c.subscribe("bystander").await.unwrap();
    barrier(&c).await;
    (c, sub)
}

/// A panic injected into one of the victim's tasks closes the victim
/// and leaves nothing behind, while everything else carries on.
async fn task_panic_is_cleaned_up(inject: fn(&rnats::server::ServerContext, u64)) {
    let server = start_default().await;
    let (by, mut by_sub) = with_bystander(&server).await;
    assert_eventually(|| sub_count(&server) == 1, TIMEOUT, "bystander sub").await;
    let (mut v, cid) = victim(&server).await;
    assert_eventually(|| sub_count(&server) == 4, TIMEOUT, "4 subscriptions").await;
    inject(&server.ctx, cid);
    let (_, end) = v.read_to_end(TIMEOUT).await;
    assert!(end.is_closed(), "victim socket still open");
    assert_eventually(
        || !server.ctx.conns.contains_key(&cid),
        TIMEOUT,
        "victim gone",
    )
    .await;
    no_leaks(&server, 1).await;
    bystander_works(&by, &mut by_sub).await;
    port_accepts(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_panic_is_cleaned_up() {
    task_panic_is_cleaned_up(|ctx, cid| ctx.inject_reader_panic(cid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_panic_is_cleaned_up() {
    task_panic_is_cleaned_up(|ctx, cid| ctx.inject_writer_panic(cid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_panic_loses_no_subscription() {
    let server = start_default().await;
    let (by, mut by_sub) = with_bystander(&server).await;
    let (_v, _cid) = victim(&server).await;
    assert_eventually(|| sub_count(&server) == 4, TIMEOUT, "4 subscriptions").await;
    let restarts_before = server.ctx.accounts.default_account().router.shards().len();
    for shard in 0..restarts_before {
        server.ctx.inject_shard_panic(shard);
    }
    // Subscriptions live outside the shard actors: none is lost, and new
    // SUBs reach the restarted actors.
    port_accepts(&server).await;
    no_leaks(&server, 4).await;
    bystander_works(&by, &mut by_sub).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_panic_leaves_exactly_one_accept_loop() {
    let mut o = opts();
    o.http_port = -1;
    let server = start(o).await;
    assert_eventually(
        || server.ctx.accept_loops.load(Ordering::Relaxed) == 2,
        TIMEOUT,
        "client and monitor accept loops",
    )
    .await;
    let (by, mut by_sub) = with_bystander(&server).await;
    for _ in 0..3 {
        let before = server.ctx.stats.restarts.load(Ordering::Relaxed);
        server.inject_listener_panic();
        assert_eventually(
            || server.ctx.stats.restarts.load(Ordering::Relaxed) == before + 1,
            TIMEOUT,
            "listener restarted",
        )
        .await;
        port_accepts(&server).await;
        assert_eq!(
            server.ctx.accept_loops.load(Ordering::Relaxed),
            2,
            "one accept loop per listener after a restart"
        );
    }
    bystander_works(&by, &mut by_sub).await;
    no_leaks(&server, 1).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_supervisor_panic_closes_and_cleans_every_connection() {
    let server = start_default().await;
    let mut victims = Vec::new();
    for _ in 0..5 {
        victims.push(victim(&server).await);
    }
    assert_eventually(|| sub_count(&server) == 15, TIMEOUT, "15 subscriptions").await;
    assert_eq!(server.ctx.conns.len(), 5);
    let before = server.ctx.stats.restarts.load(Ordering::Relaxed);
    server.ctx.inject_client_supervisor_panic();
    assert_eventually(
        || server.ctx.stats.restarts.load(Ordering::Relaxed) == before + 1,
        TIMEOUT,
        "client supervisor restarted",
    )
    .await;
    // The old supervisor's connections were killed with it: their sockets
    // close, and nothing of them stays in the router or the tables.
    for (v, _) in victims.iter_mut() {
        let (_, end) = v.read_to_end(TIMEOUT).await;
        assert!(end.is_closed(), "orphaned socket still open");
    }
    assert_eventually(|| server.ctx.conns.is_empty(), TIMEOUT, "table emptied").await;
    no_leaks(&server, 0).await;
    assert_eq!(server.ctx.accounts.default_account().num_connections(), 0);
    for (_, cid) in &victims {
        assert!(server.ctx.closed.lock().iter().any(|c| c.cid == *cid));
    }
    // New clients are served by the new supervisor, and closing them
    // cleans up as usual.
    port_accepts(&server).await;
    let (by, mut by_sub) = with_bystander(&server).await;
    bystander_works(&by, &mut by_sub).await;
    drop(by_sub);
    drop(by);
    assert_eventually(|| server.ctx.conns.is_empty(), TIMEOUT, "clean close").await;
    no_leaks(&server, 0).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_and_expiry_go_through_the_control_path() {
    let server = start_default().await;
    let (mut v, cid) = victim(&server).await;
    server.ctx.kick(cid);
    let (_, end) = v.read_to_end(TIMEOUT).await;
    assert!(end.is_closed());
    assert_eventually(|| !server.ctx.conns.contains_key(&cid), TIMEOUT, "kicked").await;
    no_leaks(&server, 0).await;

    // Credentials that expire: the connection actor's timer closes the
    // client with nats-server's error.
    let (mut v, cid) = victim(&server).await;
    server.ctx.control(
        cid,
        rnats::client::ConnCtl::ExpireAt(
            tokio::time::Instant::now() + std::time::Duration::from_millis(200),
        ),
    );
    let (bytes, end) = v.read_to_end(TIMEOUT).await;
    assert!(end.is_closed());
    assert!(
        String::from_utf8_lossy(&bytes).contains("-ERR 'User Authentication Expired'"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    no_leaks(&server, 0).await;
    server.shutdown().await;
}
