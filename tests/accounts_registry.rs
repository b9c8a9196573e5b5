//! The account registry: accounts are created on demand under the
//! accounts supervisor (with their own shard actors), binding twice gives
//! the same account, subject spaces are separate, and a client binds to
//! the default account at CONNECT.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use rnats::outbound::{Outlet, OutletKind};
use rnats::router::Subscription;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_created_on_demand_with_their_own_actors() {
    let server = start_default().await;
    let accounts = &server.ctx.accounts;
    assert!(accounts.get("TENANT").is_none());
    let a = accounts.bind(Some("TENANT")).await.expect("bind");
    let again = accounts.bind(Some("TENANT")).await.expect("bind again");
    assert!(Arc::ptr_eq(&a, &again), "one account per name");
    assert_eq!(a.name, "TENANT");
    assert_eq!(
        accounts.all().len(),
        3,
        "the default account, the system account and TENANT"
    );

    // Its shard actors run: a subscription is acknowledged once matchable.
    let outlet = Arc::new(Outlet::new(
        u64::MAX,
        OutletKind::Client,
        "127.0.0.1:1".parse().unwrap(),
        1 << 20,
    ));
    let sub = Arc::new(Subscription::client(
        Bytes::from_static(b"orders.new"),
        None,
        Bytes::from_static(b"1"),
        outlet,
    ));
    let ack = a
        .router
        .subscribe(sub.clone())
        .expect("shard actor running");
    tokio::time::timeout(TIMEOUT, ack)
        .await
        .expect("ack in time")
        .expect("acked");
    assert_eq!(a.router.lookup(b"orders.new").psubs.len(), 1);

    // Isolation: the default account's clients do not see it.
    let default = accounts.default_account();
    assert_eq!(default.router.lookup(b"orders.new").psubs.len(), 0);
    let c = nats(server.client_addr()).await;
    let mut mine = c.subscribe("orders.new").await.unwrap();
    barrier(&c).await;
    assert_eq!(default.router.lookup(b"orders.new").psubs.len(), 1);
    assert_eq!(a.router.lookup(b"orders.new").psubs.len(), 1);
    c.publish("orders.new", Bytes::from_static(b"x"))
        .await
        .unwrap();
    c.flush().await.unwrap();
    assert_eq!(&next_msg(&mut mine).await.payload[..], b"x");
    assert_eq!(sub.delivered(), 0, "a message crossed accounts");
    a.router.unsubscribe([sub]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_bind_to_the_default_account_at_connect() {
    let server = start_default().await;
    let default = server.ctx.accounts.default_account();
    assert_eq!(default.num_connections(), 0);
    let mut raw = Raw::connect(server.client_addr()).await;
    // INFO only: not bound yet.
    assert_eventually(|| server.ctx.conns.len() == 1, TIMEOUT, "accepted").await;
    assert_eq!(default.num_connections(), 0, "bound before CONNECT");
    raw.send(format!("CONNECT {CONNECT}\r\n").as_bytes()).await;
    raw.ping_collect().await;
    assert_eq!(default.num_connections(), 1);
    drop(raw);
    assert_eventually(|| default.num_connections() == 0, TIMEOUT, "unbound").await;
}
