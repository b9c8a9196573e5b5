//! The engine on its own: which targets get a message, and the exact
//! bytes queued for each (client MSG/HMSG, route RMSG with queue names).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::*;
use crate::outbound::OutletKind;
use crate::router::InternalHandler;

fn peer() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

fn outlet(id: u64, kind: OutletKind) -> Arc<Outlet> {
    let o = Arc::new(Outlet::new(id, kind, peer(), 1 << 20));
    o.headers.store(true, Ordering::Relaxed);
    o
}

fn sub(
    acc: &Account,
    subject: &str,
    queue: Option<&str>,
    sid: &str,
    o: &Arc<Outlet>,
) -> Arc<Subscription> {
    let s = Arc::new(Subscription::client(
        Bytes::copy_from_slice(subject.as_bytes()),
        queue.map(|q| Bytes::copy_from_slice(q.as_bytes())),
        Bytes::copy_from_slice(sid.as_bytes()),
        o.clone(),
    ));
    acc.router.insert_now(s.clone());
    s
}

fn drain(o: &Outlet) -> String {
    let mut segs = Vec::new();
    o.out.take(&mut segs);
    segs.iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}

fn send(
    acc: &Account,
    subject: &str,
    reply: Option<&str>,
    payload: &str,
    origin: Origin<'_>,
) -> usize {
    let payload = Bytes::copy_from_slice(payload.as_bytes());
    let msg = Message {
        subject: subject.as_bytes(),
        reply: reply.map(str::as_bytes),
        header_len: None,
        payload: &payload,
    };
    let mut batch = Batch::default();
    let mut cache = LookupCache::default();
    let n = publish(acc, &mut cache, &msg, origin, &mut batch);
    batch.finish();
    n
}

#[test]
fn client_gets_msg_with_its_sid() {
    let acc = Account::detached("$G");
    let c = outlet(1, OutletKind::Client);
    sub(&acc, "foo.*", None, "7", &c);
    assert_eq!(send(&acc, "foo.bar", Some("r"), "hi", Origin::Internal), 1);
    assert_eq!(drain(&c), "MSG foo.bar 7 r 2\r\nhi\r\n");
}

#[test]
fn a_route_gets_one_copy_however_many_of_its_subscriptions_match() {
    let acc = Account::detached("ACC");
    let r = outlet(2, OutletKind::Route);
    sub(&acc, "foo.*", None, "a", &r);
    sub(&acc, "foo.>", None, "b", &r);
    sub(&acc, "foo.bar", None, "c", &r);
    assert_eq!(send(&acc, "foo.bar", None, "hello", Origin::Internal), 1);
    assert_eq!(drain(&r), "RMSG ACC foo.bar 5\r\nhello\r\n");
    send(&acc, "foo.bar", Some("_INBOX.x"), "hello", Origin::Internal);
    assert_eq!(drain(&r), "RMSG ACC foo.bar _INBOX.x 5\r\nhello\r\n");
}

#[test]
fn route_queue_members_are_named_in_the_rmsg() {
    let acc = Account::detached("$G");
    let r = outlet(2, OutletKind::Route);
    sub(&acc, "jobs", Some("q1"), "a", &r);
    sub(&acc, "jobs", Some("q2"), "b", &r);
    sub(&acc, "jobs", None, "c", &r);
    send(&acc, "jobs", None, "x", Origin::Internal);
    assert_eq!(drain(&r), "RMSG $G jobs | q1 q2 1\r\nx\r\n");
    send(&acc, "jobs", Some("rep"), "x", Origin::Internal);
    assert_eq!(drain(&r), "RMSG $G jobs + rep q1 q2 1\r\nx\r\n");
}

#[test]
fn headers_cross_a_route_as_hmsg() {
    let acc = Account::detached("$G");
    let r = outlet(2, OutletKind::Route);
    sub(&acc, "h", Some("q"), "a", &r);
    let payload = Bytes::from_static(b"NATS/1.0\r\n\r\nbody");
    let msg = Message {
        subject: b"h",
        reply: Some(b"rep"),
        header_len: Some(12),
        payload: &payload,
    };
    let mut batch = Batch::default();
    publish(
        &acc,
        &mut LookupCache::default(),
        &msg,
        Origin::Internal,
        &mut batch,
    );
    assert_eq!(
        drain(&r),
        "HMSG $G h + rep q 12 16\r\nNATS/1.0\r\n\r\nbody\r\n"
    );
}

#[test]
fn local_queue_members_are_preferred() {
    let acc = Account::detached("$G");
    let local = outlet(1, OutletKind::Client);
    let route = outlet(2, OutletKind::Route);
    sub(&acc, "work", Some("w"), "1", &local);
    sub(&acc, "work", Some("w"), "r", &route);
    for _ in 0..200 {
        assert_eq!(send(&acc, "work", None, "j", Origin::Internal), 1);
    }
    assert_eq!(drain(&local).matches("MSG work 1 1").count(), 200);
    assert_eq!(drain(&route), "");
}

#[test]
fn route_members_are_chosen_by_weight() {
    let acc = Account::detached("$G");
    let light = outlet(2, OutletKind::Route);
    let heavy = outlet(3, OutletKind::Route);
    sub(&acc, "work", Some("w"), "a", &light);
    sub(&acc, "work", Some("w"), "b", &heavy).set_weight(3);
    for _ in 0..4000 {
        send(&acc, "work", None, "j", Origin::Internal);
    }
    let (l, h) = (
        drain(&light).matches("RMSG").count(),
        drain(&heavy).matches("RMSG").count(),
    );
    assert_eq!(l + h, 4000, "each message exactly once");
    // Expect 1000 / 3000; allow generous randomness.
    assert!((700..1300).contains(&l), "light got {l}, heavy {h}");
}

#[test]
fn a_message_from_a_route_never_goes_back_to_a_route() {
    let acc = Account::detached("$G");
    let local = outlet(1, OutletKind::Client);
    let r1 = outlet(2, OutletKind::Route);
    let r2 = outlet(3, OutletKind::Route);
    sub(&acc, "x", None, "1", &local);
    sub(&acc, "x", None, "a", &r1);
    sub(&acc, "x", Some("q"), "b", &r2);
    sub(&acc, "x", Some("q"), "2", &local);
    sub(&acc, "x", Some("other"), "3", &local);
    let queues = [Bytes::from_static(b"q")];
    // The plain subscriber and the named queue group's local member only.
    assert_eq!(
        send(&acc, "x", None, "m", Origin::Route { queues: &queues }),
        2
    );
    let got = drain(&local);
    assert!(
        got.contains("MSG x 1 1\r\n") && got.contains("MSG x 2 1\r\n"),
        "{got}"
    );
    assert!(!got.contains("MSG x 3 "), "unnamed group served: {got}");
    assert_eq!(drain(&r1), "");
    assert_eq!(drain(&r2), "");
}

#[test]
fn echo_off_skips_the_publisher() {
    let acc = Account::detached("$G");
    let me = outlet(1, OutletKind::Client);
    let other = outlet(2, OutletKind::Client);
    sub(&acc, "e", None, "1", &me);
    sub(&acc, "e", None, "2", &other);
    let origin = Origin::Client {
        outlet: &me,
        echo: false,
    };
    assert_eq!(send(&acc, "e", None, "m", origin), 1);
    assert_eq!(drain(&me), "");
    assert_eq!(drain(&other), "MSG e 2 1\r\nm\r\n");
}

struct Counter(AtomicUsize);

impl InternalHandler for Counter {
    fn deliver(&self, msg: &Message<'_>, _cx: &mut dyn std::any::Any) {
        assert_eq!(msg.subject, b"$SYS.REQ.SERVER.PING");
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn internal_handlers_are_called_in_place() {
    let acc = Account::detached("$SYS");
    let h = Arc::new(Counter(AtomicUsize::new(0)));
    let s = Arc::new(Subscription::new(
        Bytes::from_static(b"$SYS.REQ.SERVER.>"),
        None,
        Bytes::from_static(b"i1"),
        SubTarget::Internal(h.clone()),
    ));
    acc.router.insert_now(s);
    assert_eq!(
        send(
            &acc,
            "$SYS.REQ.SERVER.PING",
            Some("r"),
            "",
            Origin::Internal
        ),
        1
    );
    assert_eq!(h.0.load(Ordering::Relaxed), 1);
}

#[test]
fn a_cached_result_sees_a_new_subscription_on_its_subject_only() {
    let acc = Account::detached("$G");
    let c = outlet(1, OutletKind::Client);
    let hot = acc.router.lookup_shared(b"hot.subject");
    let cold = acc.router.lookup_shared(b"cold.subject");
    assert!(hot.is_valid() && cold.is_valid());
    // Churn on an unrelated literal subject leaves both entries valid.
    for i in 0..100 {
        let s = sub(&acc, &format!("churn.{i}"), None, "x", &c);
        acc.router.remove_now(&s);
    }
    assert!(
        hot.is_valid() && cold.is_valid(),
        "unrelated churn invalidated"
    );
    // A subscription on the hot subject invalidates that entry alone...
    sub(&acc, "hot.subject", None, "1", &c);
    assert!(!hot.is_valid() && cold.is_valid());
    assert_eq!(
        acc.router.lookup_shared(b"hot.subject").result.psubs.len(),
        1
    );
    // ...and a wildcard one every cached subject it matches.
    let cold = acc.router.lookup_shared(b"cold.subject");
    let hot = acc.router.lookup_shared(b"hot.subject");
    sub(&acc, "cold.*", None, "2", &c);
    assert!(!cold.is_valid() && hot.is_valid());
    assert_eq!(
        acc.router.lookup_shared(b"cold.subject").result.psubs.len(),
        1
    );
}

#[test]
fn auto_unsubscribe_is_exact_and_reported_to_the_outlet() {
    let acc = Account::detached("$G");
    let c = outlet(1, OutletKind::Client);
    let s = sub(&acc, "n", None, "9", &c);
    s.set_max(2);
    for _ in 0..5 {
        send(&acc, "n", None, "m", Origin::Internal);
    }
    assert_eq!(drain(&c).matches("MSG n 9 1").count(), 2);
    assert_eq!(c.take_expired(), vec![Bytes::from_static(b"9")]);
    assert_eq!(acc.router.count(), 0);
}
