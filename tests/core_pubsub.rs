//! Core publish/subscribe behaviour, driven by async-nats and by raw
//! protocol clients against an in-process server over real TCP.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use common::*;
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_subscriber() {
    let server = start_default().await;
    let sub_client = nats(server.client_addr()).await;
    let pub_client = nats(server.client_addr()).await;
    let mut sub = sub_client.subscribe("greet.hello").await.unwrap();
    barrier(&sub_client).await;

    pub_client
        .publish("greet.hello", Bytes::from_static(b"world"))
        .await
        .unwrap();
    barrier(&pub_client).await;

    let msg = next_msg(&mut sub).await;
    assert_eq!(msg.subject.as_str(), "greet.hello");
    assert_eq!(&msg.payload[..], b"world");
    assert!(msg.reply.is_none());
    server.shutdown().await;
}

/// Collect payloads until one equal to "end" arrives.
async fn until_end(sub: &mut async_nats::Subscriber) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..100 {
        let m = next_msg(sub).await;
        if m.subject.starts_with("_INBOX.") {
            // The `barrier` round trip of the subscribing client.
            continue;
        }
        let p = String::from_utf8(m.payload.to_vec()).unwrap();
        let done = p == "end";
        got.push(format!("{}={p}", m.subject));
        if done {
            return got;
        }
    }
    panic!("no end marker: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_match_and_do_not_overmatch() {
    let server = start_default().await;
    let s = nats(server.client_addr()).await;
    let p = nats(server.client_addr()).await;
    let mut star = s.subscribe("foo.*").await.unwrap();
    let mut tail = s.subscribe("foo.>").await.unwrap();
    let mut all = s.subscribe(">").await.unwrap();
    let mut star_bar = s.subscribe("*.bar").await.unwrap();
    let mut literal = s.subscribe("foo.bar").await.unwrap();
    barrier(&s).await;

    // Publish in one order from one connection; "foo.bar"="end" goes last
    // and matches every subscription, so anything wrongly delivered shows
    // up before it.
    for subj in [
        "foo",
        "foo.bar",
        "foo.bar.baz",
        "bar.baz",
        "fooo.bar",
        "foo.baz",
    ] {
        p.publish(subj, Bytes::from(subj)).await.unwrap();
    }
    p.publish("foo.bar", Bytes::from_static(b"end"))
        .await
        .unwrap();
    barrier(&p).await;

    assert_eq!(
        until_end(&mut star).await,
        ["foo.bar=foo.bar", "foo.baz=foo.baz", "foo.bar=end"]
    );
    assert_eq!(
        until_end(&mut tail).await,
        [
            "foo.bar=foo.bar",
            "foo.bar.baz=foo.bar.baz",
            "foo.baz=foo.baz",
            "foo.bar=end"
        ]
    );
    assert_eq!(
        until_end(&mut all).await,
        [
            "foo=foo",
            "foo.bar=foo.bar",
            "foo.bar.baz=foo.bar.baz",
            "bar.baz=bar.baz",
            "fooo.bar=fooo.bar",
            "foo.baz=foo.baz",
            "foo.bar=end"
        ]
    );
    assert_eq!(
        until_end(&mut star_bar).await,
        ["foo.bar=foo.bar", "fooo.bar=fooo.bar", "foo.bar=end"]
    );
    assert_eq!(
        until_end(&mut literal).await,
        ["foo.bar=foo.bar", "foo.bar=end"]
    );
    server.shutdown().await;
}

/// Everything already delivered to `sub`'s connection is in its channel
/// once a `barrier` on that connection has returned (async-nats handles
/// the socket in order); take it without waiting.
fn drain_now(sub: &mut async_nats::Subscriber) -> Vec<Bytes> {
    use futures::FutureExt;
    let mut out = Vec::new();
    // `unconstrained`: tokio's co-operative budget would otherwise make a
    // ready channel look empty after ~128 polls.
    while let Some(Some(m)) = tokio::task::unconstrained(sub.next()).now_or_never() {
        out.push(m.payload);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_group_delivers_each_message_exactly_once() {
    const N: usize = 1000;
    let server = start_default().await;
    let addr = server.client_addr();
    let mut members = Vec::new();
    for _ in 0..4 {
        let c = nats(addr).await;
        let sub = c.queue_subscribe("work", "workers".into()).await.unwrap();
        barrier(&c).await;
        members.push((c, sub));
    }
    let plain_client = nats(addr).await;
    let mut plain = plain_client.subscribe("work").await.unwrap();
    barrier(&plain_client).await;
    assert_eventually(|| sub_count(&server) == 5, TIMEOUT, "5 subscriptions").await;

    let publisher = nats(addr).await;
    for i in 0..N {
        publisher
            .publish("work", Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    barrier(&publisher).await;

    // The plain subscriber sees all of them, in order.
    for i in 0..N {
        let m = next_msg(&mut plain).await;
        assert_eq!(m.payload, Bytes::from(i.to_string()));
    }

    // Every message the server queued for a member was queued before that
    // member's barrier echo, so after the barrier its share is complete.
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut per_member = Vec::new();
    for (c, sub) in &mut members {
        barrier(c).await;
        let got = drain_now(sub);
        per_member.push(got.len());
        total += got.len();
        for p in got {
            assert!(seen.insert(p.clone()), "message {p:?} delivered twice");
        }
    }
    assert_eq!(total, N, "per member: {per_member:?}");
    assert_eq!(seen.len(), N);
    // Random member choice spreads 1000 messages over all four members.
    assert!(
        per_member.iter().all(|&n| n > 0),
        "a member got nothing: {per_member:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply() {
    let server = start_default().await;
    let responder = nats(server.client_addr()).await;
    let mut svc = responder.subscribe("svc.echo").await.unwrap();
    barrier(&responder).await;
    let r = responder.clone();
    let task = tokio::spawn(async move {
        // Bounded: the test sends exactly 20 requests.
        for _ in 0..20 {
            let Some(m) = svc.next().await else { return };
            let mut answer = b"echo: ".to_vec();
            answer.extend_from_slice(&m.payload);
            r.publish(m.reply.expect("request has a reply subject"), answer.into())
                .await
                .unwrap();
        }
    });

    let requester = nats(server.client_addr()).await;
    let replies = futures::future::join_all((0..20).map(|i| {
        let requester = requester.clone();
        async move {
            requester
                .request("svc.echo", Bytes::from(format!("q{i}")))
                .await
        }
    }))
    .await;
    for (i, r) in replies.into_iter().enumerate() {
        let m = r.unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(m.payload, Bytes::from(format!("echo: q{i}")));
    }
    tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_round_trip() {
    let server = start_default().await;
    let s = nats(server.client_addr()).await;
    let mut sub = s.subscribe("hdr").await.unwrap();
    barrier(&s).await;
    // A raw subscriber that did not ask for headers gets the body only.
    let mut raw = Raw::handshake(server.client_addr(), CONNECT).await;
    raw.send(b"SUB hdr 9\r\n").await;
    raw.ping_collect().await;

    let p = nats(server.client_addr()).await;
    let mut headers = HeaderMap::new();
    headers.insert("X-Trace-Id", "abc-123");
    headers.append("X-Multi", "one");
    headers.append("X-Multi", "two");
    p.publish_with_headers("hdr", headers, Bytes::from_static(b"body"))
        .await
        .unwrap();
    barrier(&p).await;

    let m = next_msg(&mut sub).await;
    assert_eq!(&m.payload[..], b"body");
    let h = m.headers.expect("headers arrive");
    assert_eq!(h.get("X-Trace-Id").map(|v| v.as_str()), Some("abc-123"));
    let multi: Vec<&str> = h.get_all("X-Multi").map(|v| v.as_str()).collect();
    assert_eq!(multi, ["one", "two"]);

    let m = raw.msg().await;
    assert_eq!(m.header_len, None, "plain MSG for a client without headers");
    assert_eq!(m.payload, b"body");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_responders_fails_fast() {
    let server = start_default().await;
    let c = nats_with(
        server.client_addr(),
        // A long timeout: the error must come from the server's 503, not a timeout.
        async_nats::ConnectOptions::new().request_timeout(Some(Duration::from_secs(30))),
    )
    .await;
    let started = std::time::Instant::now();
    let err = c
        .request("nobody.listens", Bytes::from_static(b"?"))
        .await
        .expect_err("no responders");
    assert_eq!(
        err.kind(),
        async_nats::RequestErrorKind::NoResponders,
        "{err}"
    );
    assert!(started.elapsed() < TIMEOUT);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_off_suppresses_own_messages_only() {
    let server = start_default().await;
    let mut quiet = Raw::handshake(
        server.client_addr(),
        r#"{"verbose":false,"pedantic":false,"echo":false}"#,
    )
    .await;
    quiet.send(b"SUB chat 1\r\nPUB chat 4\r\nmine\r\n").await;
    let (lines, msgs) = quiet.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert!(msgs.is_empty(), "echo off still echoed: {msgs:?}");

    // With echo on (the default) the same sequence echoes.
    let mut loud = Raw::handshake(server.client_addr(), CONNECT).await;
    loud.send(b"SUB loud 1\r\nPUB loud 4\r\nmine\r\n").await;
    let (_, msgs) = loud.ping_collect().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].payload, b"mine");

    // Messages from others still reach the echo-off connection.
    let other = nats(server.client_addr()).await;
    other
        .publish("chat", Bytes::from_static(b"theirs"))
        .await
        .unwrap();
    barrier(&other).await;
    let m = quiet.msg().await;
    assert_eq!((m.subject.as_str(), m.sid.as_str()), ("chat", "1"));
    assert_eq!(m.payload, b"theirs");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_keep_publisher_order() {
    const N: u32 = 10_000;
    let server = start_default().await;
    let s = nats(server.client_addr()).await;
    let mut sub = s.subscribe("seq").await.unwrap();
    barrier(&s).await;
    let p = nats(server.client_addr()).await;
    let publisher = tokio::spawn(async move {
        for i in 0..N {
            p.publish("seq", Bytes::from(i.to_be_bytes().to_vec()))
                .await
                .unwrap();
        }
        barrier(&p).await;
    });
    for i in 0..N {
        let m = next_msg(&mut sub).await;
        let got = u32::from_be_bytes(m.payload[..].try_into().unwrap());
        assert_eq!(got, i, "out of order");
    }
    publisher.await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_payload_round_trip() {
    let server = start_default().await;
    assert_eq!(server.ctx.opts().max_payload, 1024 * 1024);
    let s = nats(server.client_addr()).await;
    let mut sub = s.subscribe("big").await.unwrap();
    barrier(&s).await;
    let payload: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let p = nats(server.client_addr()).await;
    p.publish("big", payload.clone().into()).await.unwrap();
    barrier(&p).await;
    let m = next_msg(&mut sub).await;
    assert_eq!(m.payload.len(), payload.len());
    assert!(m.payload[..] == payload[..], "payload corrupted");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsub_with_max_auto_unsubscribes() {
    let server = start_default().await;
    let mut sub = Raw::handshake(server.client_addr(), CONNECT).await;
    sub.send(b"SUB auto 7\r\nUNSUB 7 3\r\n").await;
    sub.ping_collect().await;
    assert_eventually(|| sub_count(&server) == 1, TIMEOUT, "subscription count").await;

    let p = nats(server.client_addr()).await;
    for i in 1..=5 {
        p.publish("auto", Bytes::from(format!("m{i}")))
            .await
            .unwrap();
    }
    barrier(&p).await;

    let (lines, msgs) = sub.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    let payloads: Vec<_> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(payloads, ["m1", "m2", "m3"]);
    assert!(msgs.iter().all(|m| m.sid == "7"));
    assert_eventually(
        || sub_count(&server) == 0,
        TIMEOUT,
        "auto-unsubscribed sub leaves the router",
    )
    .await;

    // A later publish reaches nobody.
    p.publish("auto", Bytes::from_static(b"late"))
        .await
        .unwrap();
    barrier(&p).await;
    let (_, msgs) = sub.ping_collect().await;
    assert!(msgs.is_empty(), "{msgs:?}");

    // UNSUB with a max already reached removes the subscription at once.
    sub.send(b"SUB auto 8\r\n").await;
    sub.ping_collect().await;
    p.publish("auto", Bytes::from_static(b"x")).await.unwrap();
    barrier(&p).await;
    let (_, msgs) = sub.ping_collect().await;
    assert_eq!(msgs.len(), 1);
    sub.send(b"UNSUB 8 1\r\n").await;
    sub.ping_collect().await;
    assert_eventually(|| sub_count(&server) == 0, TIMEOUT, "sub 8 removed").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_mode_acknowledges_ops() {
    let server = start_default().await;
    let mut c = Raw::connect(server.client_addr()).await;
    c.send(b"CONNECT {\"verbose\":true,\"pedantic\":false}\r\n")
        .await;
    c.expect("+OK").await;
    c.send(b"SUB v 1\r\n").await;
    c.expect("+OK").await;
    // The +OK for a PUB precedes the message it fans out to the sender.
    c.send(b"PUB v 2\r\nhi\r\n").await;
    c.expect("+OK").await;
    let m = c.msg().await;
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("v", &b"hi"[..]));
    c.send(b"UNSUB 1\r\n").await;
    c.expect("+OK").await;
    // PING is answered by PONG alone.
    c.send(b"PING\r\n").await;
    c.expect("PONG").await;
    // An invalid SUB subject gets -ERR and no +OK.
    c.send(b"SUB a..b 2\r\nPING\r\n").await;
    c.expect("-ERR 'Invalid Subject'").await;
    c.expect("PONG").await;

    // Without verbose, nothing is acknowledged.
    let mut q = Raw::handshake(server.client_addr(), CONNECT).await;
    q.send(b"SUB v 1\r\nPUB v 0\r\n\r\nUNSUB 1\r\n").await;
    let (lines, msgs) = q.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(msgs.len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pedantic_flags_invalid_publish_subject() {
    let server = start_default().await;
    let mut watcher = Raw::handshake(server.client_addr(), CONNECT).await;
    watcher.send(b"SUB > 1\r\n").await;
    watcher.ping_collect().await;

    let mut p = Raw::handshake(server.client_addr(), r#"{"verbose":false,"pedantic":true}"#).await;
    p.send(b"PUB foo.* 1\r\na\r\n").await;
    let (lines, _) = p.ping_collect().await;
    assert_eq!(lines, ["-ERR 'Invalid Publish Subject'"]);
    // The connection stays usable.
    p.send(b"PUB foo.bar 1\r\nb\r\n").await;
    let (lines, _) = p.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");

    // Without pedantic the same publish is accepted silently.
    let mut lax = Raw::handshake(server.client_addr(), CONNECT).await;
    lax.send(b"PUB foo.* 1\r\nc\r\n").await;
    let (lines, _) = lax.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");

    // nats-server treats the pedantic error as a warning and still routes
    // the message (docs/NATS_BEHAVIOUR.md 3.4), so `>` sees all three.
    let (_, msgs) = watcher.ping_collect().await;
    let got: Vec<_> = msgs
        .iter()
        .map(|m| format!("{}={}", m.subject, String::from_utf8_lossy(&m.payload)))
        .collect();
    assert_eq!(got, ["foo.*=a", "foo.bar=b", "foo.*=c"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omitted_connect_fields_default_to_verbose() {
    // nats-server's defaults: a CONNECT without "verbose" is verbose.
    let server = start_default().await;
    let mut c = Raw::connect(server.client_addr()).await;
    c.send(b"CONNECT {}\r\nSUB d 1\r\nPING\r\n").await;
    c.expect("+OK").await;
    c.expect("+OK").await;
    c.expect("PONG").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_subscriber_in_order() {
    const SUBSCRIBERS: usize = 20;
    const N: u32 = 500;
    let server = start_default().await;
    let addr = server.client_addr();
    let mut subs = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let c = nats(addr).await;
        let s = c.subscribe("fan.out").await.unwrap();
        barrier(&c).await;
        subs.push((c, s));
    }
    let p = nats(addr).await;
    for i in 0..N {
        p.publish("fan.out", Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    barrier(&p).await;
    for (_, s) in &mut subs {
        for i in 0..N {
            assert_eq!(next_msg(s).await.payload, Bytes::from(i.to_string()));
        }
    }
    let out = server
        .ctx
        .stats
        .out_msgs
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(out >= (SUBSCRIBERS as u64) * u64::from(N), "out_msgs {out}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let server = start_default().await;
    let c = nats(server.client_addr()).await;
    let mut keep = c.subscribe("unsub.test").await.unwrap();
    let mut drop_me = c.subscribe("unsub.test").await.unwrap();
    barrier(&c).await;
    c.publish("unsub.test", Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(&next_msg(&mut keep).await.payload[..], b"1");
    assert_eq!(&next_msg(&mut drop_me).await.payload[..], b"1");

    drop_me.unsubscribe().await.unwrap();
    barrier(&c).await;
    assert_eventually(|| sub_count(&server) == 1, TIMEOUT, "one sub left").await;
    c.publish("unsub.test", Bytes::from_static(b"2"))
        .await
        .unwrap();
    assert_eq!(&next_msg(&mut keep).await.payload[..], b"2");
    assert!(
        drop_me.next().await.is_none(),
        "unsubscribed stream still yields"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_group_survives_a_member_leaving() {
    const N: usize = 300;
    let server = start_default().await;
    let addr = server.client_addr();
    let leaving = nats(addr).await;
    let mut leaving_sub = leaving.queue_subscribe("jobs", "g".into()).await.unwrap();
    barrier(&leaving).await;
    let staying = nats(addr).await;
    let mut staying_sub = staying.queue_subscribe("jobs", "g".into()).await.unwrap();
    barrier(&staying).await;

    let p = nats(addr).await;
    for i in 0..N {
        p.publish("jobs", Bytes::from(format!("a{i}")))
            .await
            .unwrap();
    }
    barrier(&p).await;
    barrier(&leaving).await;
    barrier(&staying).await;
    let first = drain_now(&mut leaving_sub).len() + drain_now(&mut staying_sub).len();
    assert_eq!(first, N, "every job delivered once while both are members");

    // One member disconnects; all later jobs go to the other.
    drop(leaving_sub);
    drop(leaving);
    assert_eventually(|| sub_count(&server) == 1, TIMEOUT, "member gone").await;
    for i in 0..N {
        p.publish("jobs", Bytes::from(format!("b{i}")))
            .await
            .unwrap();
    }
    barrier(&p).await;
    for i in 0..N {
        assert_eq!(
            next_msg(&mut staying_sub).await.payload,
            Bytes::from(format!("b{i}"))
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_disconnects_clients_promptly() {
    let server = start_default().await;
    let addr = server.client_addr();
    let mut raws = Vec::new();
    for _ in 0..5 {
        let mut r = Raw::handshake(addr, CONNECT).await;
        r.send(b"SUB x 1\r\n").await;
        r.ping_collect().await;
        raws.push(r);
    }
    let ctx = server.ctx.clone();
    tokio::time::timeout(TIMEOUT, server.shutdown())
        .await
        .expect("shutdown finishes");
    assert!(ctx.conns.is_empty());
    for r in &mut raws {
        let (_, end) = r.read_to_end(TIMEOUT).await;
        assert!(end.is_closed(), "client still connected after shutdown");
    }
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Publish on `subject` from `publishers` connections until `stop` is set
/// (bounded by `max_each` messages per publisher).
fn flood(
    addr: std::net::SocketAddr,
    subject: &'static str,
    publishers: usize,
    max_each: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..publishers)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let c = nats(addr).await;
                let mut sent = 0;
                while sent < max_each && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.publish(subject, Bytes::from_static(b"flood"))
                        .await
                        .unwrap();
                    sent += 1;
                    if sent % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                barrier(&c).await;
                sent
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_delivered_after_unsub_is_acknowledged() {
    let server = start_default().await;
    let addr = server.client_addr();
    let mut sub = Raw::handshake(addr, CONNECT).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishers = flood(addr, "race", 3, 1_000_000, stop.clone());
    for round in 1..=20 {
        sub.send(format!("SUB race {round}\r\n").as_bytes()).await;
        // Wait until messages are flowing to this subscription.
        let (_, msgs) = sub.ping_collect().await;
        assert!(msgs.iter().all(|m| m.sid == round.to_string()));
        let m = sub.msg().await;
        assert_eq!(m.sid, round.to_string());

        // UNSUB while publishers keep going. Whatever was queued before the
        // UNSUB arrives before the PONG; nothing may come after it.
        sub.send(format!("UNSUB {round}\r\n").as_bytes()).await;
        sub.ping_collect().await;
        for _ in 0..3 {
            let (lines, msgs) = sub.ping_collect().await;
            assert!(lines.is_empty(), "{lines:?}");
            assert!(
                msgs.is_empty(),
                "round {round}: {} message(s) after UNSUB",
                msgs.len()
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in publishers {
        tokio::time::timeout(TIMEOUT, p).await.unwrap().unwrap();
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_unsubscribe_is_exact_under_concurrent_publishers() {
    const MAX: usize = 100;
    let server = start_default().await;
    let addr = server.client_addr();
    let mut sub = Raw::handshake(addr, CONNECT).await;
    sub.send(format!("SUB burst 1\r\nUNSUB 1 {MAX}\r\n").as_bytes())
        .await;
    sub.ping_collect().await;

    // Four publishers race well past the limit.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishers = flood(addr, "burst", 4, 2_000, stop);
    let mut sent = 0;
    for p in publishers {
        sent += tokio::time::timeout(TIMEOUT, p).await.unwrap().unwrap();
    }
    assert_eq!(sent, 8_000);
    let (lines, msgs) = sub.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(msgs.len(), MAX, "exactly max messages, then unsubscribed");
    assert_eventually(|| sub_count(&server) == 0, TIMEOUT, "sub removed").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_with_a_stuck_subscriber() {
    let server = start_default().await;
    let addr = server.client_addr();
    // A subscriber that never reads, with a tiny receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = Raw::from_stream(socket.connect(addr).await.unwrap());
    stuck.line().await.unwrap();
    stuck
        .send(format!("CONNECT {CONNECT}\r\nSUB load 1\r\n").as_bytes())
        .await;
    stuck.ping_collect().await;
    let reader = nats(addr).await;
    let _sub = reader.subscribe("load").await.unwrap();
    barrier(&reader).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishers = flood(addr, "load", 2, 50_000, stop.clone());
    // Let traffic build up, then shut down in the middle of it.
    assert_eventually(
        || {
            server
                .ctx
                .stats
                .in_msgs
                .load(std::sync::atomic::Ordering::Relaxed)
                > 5_000
        },
        TIMEOUT,
        "traffic flowing",
    )
    .await;
    let ctx = server.ctx.clone();
    let started = std::time::Instant::now();
    tokio::time::timeout(TIMEOUT, server.shutdown())
        .await
        .expect("shutdown under load finishes");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(ctx.conns.is_empty());
    // The stuck subscriber's socket is closed too.
    let (_, end) = stuck.read_to_end(TIMEOUT).await;
    assert!(end.is_closed(), "stuck subscriber still connected");
    // The publishers' clients would try to reconnect forever: stop them.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in publishers {
        p.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_to_a_queue_group_of_responders() {
    const REQUESTS: usize = 400;
    let server = start_default().await;
    let addr = server.client_addr();
    let mut responders = Vec::new();
    for id in 0..4 {
        let c = nats(addr).await;
        let mut sub = c.queue_subscribe("svc.add", "adders".into()).await.unwrap();
        barrier(&c).await;
        responders.push(tokio::spawn(async move {
            let mut served = 0usize;
            // Aborted at the end of the test.
            while let Some(m) = sub.next().await {
                let text = String::from_utf8(m.payload.to_vec()).unwrap();
                let (a, b) = text.split_once('+').unwrap();
                let sum = a.parse::<u64>().unwrap() + b.parse::<u64>().unwrap();
                c.publish(m.reply.unwrap(), Bytes::from(format!("{sum} by {id}")))
                    .await
                    .unwrap();
                served += 1;
                if served == REQUESTS {
                    break;
                }
            }
            served
        }));
    }
    let requesters: Vec<_> = futures::future::join_all((0..4).map(|_| nats(addr))).await;
    let answers = futures::future::join_all((0..REQUESTS).map(|i| {
        let c = requesters[i % requesters.len()].clone();
        async move {
            let r = c
                .request("svc.add", Bytes::from(format!("{i}+{}", i * 2)))
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            (i, String::from_utf8(r.payload.to_vec()).unwrap())
        }
    }))
    .await;
    let mut by_responder = [0usize; 4];
    for (i, answer) in answers {
        let (sum, who) = answer.split_once(" by ").unwrap();
        assert_eq!(sum, (i * 3).to_string(), "request {i} got another's answer");
        by_responder[who.parse::<usize>().unwrap()] += 1;
    }
    assert_eq!(by_responder.iter().sum::<usize>(), REQUESTS);
    assert!(by_responder.iter().all(|&n| n > 0), "{by_responder:?}");
    // The responders' clients would wait for the server forever.
    for r in responders {
        r.abort();
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_subscriptions_come_and_go() {
    let server = start_default().await;
    let mut c = Raw::handshake(server.client_addr(), CONNECT).await;
    let mut subs = Vec::new();
    for i in 0..10_000 {
        let subject = match i % 4 {
            0 => format!("a.{i}.x"),
            1 => format!("a.*.{i}"),
            2 => format!("b.{i}.>"),
            _ => format!("*.{i}"),
        };
        subs.extend_from_slice(format!("SUB {subject} {i}\r\n").as_bytes());
    }
    c.send(&subs).await;
    c.ping_collect().await;
    assert_eventually(
        || sub_count(&server) == 10_000,
        TIMEOUT,
        "subscription count",
    )
    .await;
    // A few of them still route correctly.
    c.send(b"PUB a.8.x 1\r\n1\r\nPUB a.q.9 1\r\n2\r\nPUB b.10.y.z 1\r\n3\r\nPUB c.11 1\r\n4\r\n")
        .await;
    let (_, msgs) = c.ping_collect().await;
    let mut sids: Vec<_> = msgs.iter().map(|m| m.sid.clone()).collect();
    sids.sort();
    assert_eq!(sids, ["10", "11", "8", "9"]);

    let mut unsubs = Vec::new();
    for i in 0..10_000 {
        unsubs.extend_from_slice(format!("UNSUB {i}\r\n").as_bytes());
    }
    c.send(&unsubs).await;
    c.ping_collect().await;
    assert_eventually(|| sub_count(&server) == 0, TIMEOUT, "all unsubscribed").await;
    c.send(b"PUB a.8.x 1\r\n1\r\n").await;
    let (_, msgs) = c.ping_collect().await;
    assert!(msgs.is_empty());
    server.shutdown().await;
}
