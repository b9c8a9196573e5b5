//! Hardening of the protocol and permissions paths: queue-scoped
//! subscribe denies, response permissions, bounded pending work before a
//! PING, refusal before CONNECT, `max_pending` for protocol replies, safe
//! logging. Each test talks to a real server over TCP.

mod common;

use common::*;
use rnats::auth::{AuthConfig, Permissions, Secret, SubjectPermission, UserEntry};

fn user(name: &str, perms: Option<Permissions>) -> UserEntry {
    UserEntry {
        user: name.into(),
        password: Some(Secret::parse(name).expect("secret")),
        permissions: perms,
        account: None,
    }
}

fn with_users(users: Vec<UserEntry>) -> rnats::Options {
    rnats::Options {
        auth: AuthConfig {
            users,
            ..AuthConfig::default()
        },
        ..opts()
    }
}

fn login(name: &str) -> String {
    format!(r#"{{"verbose":false,"pedantic":false,"user":"{name}","pass":"{name}"}}"#)
}

fn sub_deny(deny: &[&str]) -> Permissions {
    Permissions {
        publish: None,
        subscribe: Some(SubjectPermission {
            allow: None,
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }),
        allow_responses: None,
    }
}

/// `deny: ["foo.> q1"]` forbids taking q1's work on foo.>: `SUB > q1` is
/// accepted (as in nats-server) but never receives foo.* messages, which
/// go to the other q1 member; other queues and other subjects still flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_scoped_subscribe_deny_is_enforced_at_delivery() {
    let server = start(with_users(vec![
        user("a", Some(sub_deny(&["foo.> q1"]))),
        user("b", None),
    ]))
    .await;
    let addr = server.client_addr();
    let mut a = Raw::handshake(addr, &login("a")).await;
    let mut b = Raw::handshake(addr, &login("b")).await;
    a.send(b"SUB > q1 1\r\nSUB foo.bar q1 2\r\nSUB > q2 3\r\n")
        .await;
    let (lines, _) = a.ping_collect().await;
    assert_eq!(
        lines,
        vec![
            "-ERR 'Permissions Violation for Subscription to \"foo.bar\" using queue \"q1\"'"
                .to_string()
        ]
    );
    b.send(b"SUB foo.* q1 9\r\n").await;
    let mut pubs = Vec::new();
    for _ in 0..20 {
        pubs.extend_from_slice(b"PUB foo.x 1\r\n1\r\n");
    }
    pubs.extend_from_slice(b"PUB bar 1\r\n2\r\n");
    b.send(&pubs).await;
    let (lines, b_msgs) = b.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    let (lines, a_msgs) = a.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    // All 20 foo.x go to b's q1 member; a gets them only on q2.
    assert_eq!(b_msgs.len(), 20, "b: {b_msgs:?} a: {:?}", a_msgs);
    assert!(b_msgs.iter().all(|m| m.sid == "9"));
    let on = |sid: &str, subj: &str| {
        a_msgs
            .iter()
            .filter(|m| m.sid == sid && m.subject == subj)
            .count()
    };
    assert_eq!(on("1", "foo.x"), 0, "q1 deny leaked: {a_msgs:?}");
    assert_eq!(on("3", "foo.x"), 20, "{a_msgs:?}");
    assert_eq!(on("1", "bar"), 1, "{a_msgs:?}");
    assert_eq!(on("3", "bar"), 1, "{a_msgs:?}");
    assert_eq!(a_msgs.len(), 22);
    server.shutdown().await;
}

fn responder(max: u64, expires: std::time::Duration) -> Permissions {
    Permissions {
        publish: Some(SubjectPermission {
            allow: Some(vec!["ok.>".into()]),
            deny: vec![],
        }),
        subscribe: Some(SubjectPermission {
            allow: Some(vec!["svc.>".into()]),
            deny: vec![],
        }),
        allow_responses: Some(rnats::auth::ResponsePermission { max, expires }),
    }
}

/// A requester (`b`) sends `svc.x` with reply `_INBOX.<n>` for each n in
/// `replies`; the responder (`r`) has received them all on return.
async fn requests(r: &mut Raw, b: &mut Raw, replies: &[&str]) {
    let mut out = Vec::new();
    for reply in replies {
        out.extend_from_slice(format!("PUB svc.x {reply} 1\r\nq\r\n").as_bytes());
    }
    b.send(&out).await;
    let (lines, _) = b.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    let (lines, msgs) = r.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    let got: Vec<_> = msgs.iter().filter_map(|m| m.reply.clone()).collect();
    assert_eq!(got, replies, "requests delivered with their reply subjects");
}

fn violation(subject: &str) -> String {
    format!("-ERR 'Permissions Violation for Publish to \"{subject}\"'")
}

/// `allow_responses: true`: one response to the reply subject of a request
/// received; a second one, a publish to a reply subject never delivered and
/// a publish to any other subject are refused with nats-server's error,
/// and the connection stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_responses_permits_one_reply_per_request() {
    let server = start(with_users(vec![
        user(
            "r",
            Some(responder(
                rnats::auth::DEFAULT_RESPONSE_MAX,
                rnats::auth::DEFAULT_RESPONSE_EXPIRES,
            )),
        ),
        user("b", None),
    ]))
    .await;
    let addr = server.client_addr();
    let mut r = Raw::handshake(addr, &login("r")).await;
    let mut b = Raw::handshake(addr, &login("b")).await;
    r.send(b"SUB svc.> 1\r\n").await;
    b.send(b"SUB _INBOX.> 5\r\n").await;
    // Before any request, the inbox is not publishable.
    r.send(b"PUB _INBOX.1 1\r\nz\r\n").await;
    let (lines, _) = r.ping_collect().await;
    assert_eq!(lines, vec![violation("_INBOX.1")]);
    requests(&mut r, &mut b, &["_INBOX.1"]).await;
    r.send(b"PUB _INBOX.1 1\r\na\r\nPUB _INBOX.1 1\r\nb\r\nPUB other 1\r\nc\r\nPUB ok.fine 1\r\nd\r\nPUB _INBOX.2 1\r\ne\r\n")
        .await;
    let (lines, _) = r.ping_collect().await;
    assert_eq!(
        lines,
        vec![
            violation("_INBOX.1"),
            violation("other"),
            violation("_INBOX.2")
        ]
    );
    let (lines, msgs) = b.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(msgs.len(), 1, "exactly one response: {msgs:?}");
    assert_eq!(
        (msgs[0].subject.as_str(), &msgs[0].payload[..]),
        ("_INBOX.1", &b"a"[..])
    );
    assert_eq!(server.ctx.conns.len(), 2, "violations keep the connection");
    server.shutdown().await;
}

/// `{max: 2, expires: ...}`: two responses per request, and none after
/// the reply subject expired; a redelivered request re-arms its subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_responses_honours_max_and_expires() {
    let expires = std::time::Duration::from_millis(300);
    let server = start(with_users(vec![
        user("r", Some(responder(2, expires))),
        user("b", None),
    ]))
    .await;
    let addr = server.client_addr();
    let mut r = Raw::handshake(addr, &login("r")).await;
    let mut b = Raw::handshake(addr, &login("b")).await;
    r.send(b"SUB svc.> 1\r\n").await;
    b.send(b"SUB _INBOX.> 5\r\n").await;
    r.ping_collect().await;
    b.ping_collect().await;
    requests(&mut r, &mut b, &["_INBOX.1", "_INBOX.2"]).await;
    let delivered_at = tokio::time::Instant::now();
    r.send(b"PUB _INBOX.1 1\r\na\r\nPUB _INBOX.1 1\r\nb\r\nPUB _INBOX.1 1\r\nc\r\n")
        .await;
    let (lines, _) = r.ping_collect().await;
    assert!(
        delivered_at.elapsed() < expires,
        "the machine is too slow for this test's timing"
    );
    assert_eq!(lines, vec![violation("_INBOX.1")], "third response refused");
    let (_, msgs) = b.ping_collect().await;
    let payloads: Vec<_> = msgs.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(payloads, vec![b"a".to_vec(), b"b".to_vec()]);
    // Let _INBOX.2 expire (time must pass; there is nothing to await).
    tokio::time::sleep_until(delivered_at + expires + std::time::Duration::from_millis(100)).await;
    r.send(b"PUB _INBOX.2 1\r\nd\r\n").await;
    let (lines, _) = r.ping_collect().await;
    assert_eq!(lines, vec![violation("_INBOX.2")], "expired");
    // A new request on the same reply subject re-arms it.
    requests(&mut r, &mut b, &["_INBOX.2"]).await;
    r.send(b"PUB _INBOX.2 1\r\ne\r\n").await;
    let (lines, _) = r.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    let (_, msgs) = b.ping_collect().await;
    let got: Vec<_> = msgs
        .iter()
        .map(|m| {
            (
                m.subject.clone(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [("_INBOX.2", "e")]
        .iter()
        .map(|(s, p)| (s.to_string(), p.to_string()))
        .collect();
    assert_eq!(got, want);
    server.shutdown().await;
}

/// An async-nats service whose user has only `allow_responses` answers
/// requests; publishing anything else is refused by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_responses_lets_an_async_nats_service_answer() {
    use futures::StreamExt;
    let server = start(with_users(vec![
        user(
            "r",
            Some(Permissions {
                publish: None,
                subscribe: None,
                allow_responses: Some(rnats::auth::ResponsePermission {
                    max: 1,
                    expires: std::time::Duration::from_secs(60),
                }),
            }),
        ),
        user("b", None),
    ]))
    .await;
    let addr = server.client_addr();
    let (err_tx, mut err_rx) = tokio::sync::mpsc::unbounded_channel();
    let svc = nats_with(
        addr,
        async_nats::ConnectOptions::with_user_and_password("r".into(), "r".into()).event_callback(
            move |e| {
                let tx = err_tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = e {
                        let _ = tx.send(e.to_string());
                    }
                }
            },
        ),
    )
    .await;
    let client = nats_with(
        addr,
        async_nats::ConnectOptions::with_user_and_password("b".into(), "b".into()),
    )
    .await;
    let mut reqs = svc.subscribe("svc.echo").await.expect("subscribe");
    // The responder's own PUB to its inbox is allowed: a reply subject
    // delivered to it.
    barrier(&svc).await;
    let task = tokio::spawn(async move {
        for _ in 0..3 {
            let Some(m) = reqs.next().await else { return };
            if let Some(reply) = m.reply {
                svc.publish(reply, m.payload).await.expect("respond");
                // The client must not drop the last response unsent.
                svc.flush().await.expect("flush");
            }
        }
    });
    for i in 0..3 {
        let payload = format!("req {i}");
        let resp =
            tokio::time::timeout(TIMEOUT, client.request("svc.echo", payload.clone().into()))
                .await
                .expect("request timed out")
                .expect("response");
        assert_eq!(resp.payload, payload.as_bytes());
    }
    tokio::time::timeout(TIMEOUT, task)
        .await
        .expect("service done")
        .expect("service task");
    assert!(
        err_rx.try_recv().is_err(),
        "no permission errors for responses"
    );
    server.shutdown().await;
}

/// `SUB a 1` / `UNSUB 1` in a loop with no PING or PUB: the reader awaits
/// the shard's acknowledgements every `MAX_UNACKED_SUBS` SUBs instead of
/// holding one per SUB until the next PING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_unsub_loop_keeps_pending_acknowledgements_bounded() {
    let server = start_default().await;
    let mut c = Raw::handshake(server.client_addr(), CONNECT).await;
    let local = c.stream.local_addr().expect("local addr");
    let cid = cid_of(&server, local).expect("connection");
    let rounds = rnats::client::MAX_UNACKED_SUBS * 20;
    let mut flood = Vec::with_capacity(rounds * 24);
    for _ in 0..rounds {
        flood.extend_from_slice(b"SUB a 1\r\nUNSUB 1\r\n");
    }
    c.send(&flood).await;
    let (lines, msgs) = c.ping_collect().await;
    assert!(lines.is_empty() && msgs.is_empty(), "{lines:?} {msgs:?}");
    let conn = server.ctx.conns.get(&cid).expect("still connected").clone();
    let peak = conn
        .unacked_subs_peak
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=rnats::client::MAX_UNACKED_SUBS).contains(&peak),
        "outstanding SUB acknowledgements peaked at {peak}"
    );
    // UNSUB is not acknowledged (the subscription stops delivering at
    // once; the shard drops it from the trie when it gets there), so the
    // count reaches zero shortly after the PONG.
    assert!(
        wait_until(|| sub_count(&server) == 0, TIMEOUT).await,
        "subscriptions left: {}",
        sub_count(&server)
    );
    server.shutdown().await;
}

/// With authentication, `PUB x <max_payload>` before CONNECT is refused
/// at its control line (at its first byte, as nats-server does), not after
/// the server buffered the payload or the auth timeout passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_before_connect_is_refused_at_the_control_line() {
    let mut o = with_users(vec![user("a", None)]);
    o.auth_timeout = std::time::Duration::from_secs(30);
    let server = start(o).await;
    let mut c = Raw::connect(server.client_addr()).await;
    let started = tokio::time::Instant::now();
    c.send(format!("PUB x {}\r\n", 1024 * 1024).as_bytes())
        .await;
    let got = c.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR 'Authorization Violation'\r\n"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    server.shutdown().await;
}

/// PONGs (and +OK, -ERR) count toward `max_pending`: a client that floods
/// PINGs and never reads is cut as a slow consumer instead of growing its
/// outbound queue without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_pongs_count_toward_max_pending() {
    use tokio::io::AsyncWriteExt;
    let server = start(rnats::Options {
        max_pending: 64 * 1024,
        max_payload: 32 * 1024,
        // Only max_pending may cut it, not a stuck write.
        write_deadline: std::time::Duration::from_secs(120),
        ..opts()
    })
    .await;
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    // A small receive window, so the server's writes back up quickly.
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stream = sock.connect(server.client_addr()).await.expect("connect");
    stream
        .write_all(format!("CONNECT {CONNECT}\r\n").as_bytes())
        .await
        .expect("CONNECT");
    // Never read; at most 64 MiB of PINGs (the socket errors once the
    // server cuts us).
    let writer = tokio::spawn(async move {
        let chunk = b"PING\r\n".repeat(10_000);
        for _ in 0..1_000 {
            if stream.write_all(&chunk).await.is_err() {
                break;
            }
        }
        stream
    });
    assert_eventually(
        || {
            server
                .ctx
                .stats
                .slow_consumers
                .load(std::sync::atomic::Ordering::Relaxed)
                == 1
        },
        TIMEOUT,
        "the PING flooder is cut as a slow consumer",
    )
    .await;
    assert_eventually(|| server.ctx.conns.is_empty(), TIMEOUT, "connection gone").await;
    writer.abort();
    server.shutdown().await;
}

/// Control characters in a subject (non-pedantic clients may send them)
/// are escaped as nats-server's `%q` does, in the `-ERR` line and in the
/// log; a numeric `pass` in a malformed CONNECT is not echoed into the log
/// by the JSON error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_bytes_are_escaped_and_secrets_redacted_in_logs() {
    let dir = TempDir::new("escape");
    let conf = dir.path("s.conf");
    std::fs::write(
        &conf,
        "listen: 127.0.0.1:-1\n\
         authorization { users = [ { user: p, password: p, permissions: { publish: { allow: [\"ok\"] } } } ] }\n",
    )
    .expect("config");
    let conf = conf.to_string_lossy().into_owned();
    let mut server = Proc::spawn(RNATS_BIN, &["-c", &conf, "-DV"], &dir.path("log"));
    let port = server.client_port().await;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut c = Raw::handshake(addr, &login("p")).await;
    c.send(b"PUB a\x1b[31mb 1\r\nx\r\nPUB a\rb\"q 1\r\nx\r\n")
        .await;
    let (lines, _) = c.ping_collect().await;
    // Byte for byte what nats-server v2.15.1 sends.
    assert_eq!(
        lines,
        vec![
            r#"-ERR 'Permissions Violation for Publish to "a\x1b[31mb"'"#.to_string(),
            r#"-ERR 'Permissions Violation for Publish to "a\rb\"q"'"#.to_string(),
        ]
    );
    let mut bad = Raw::connect(addr).await;
    bad.send(b"CONNECT {\"user\":\"p\",\"pass\":987654321}\r\n")
        .await;
    bad.expect_closed().await;
    let log = server.wait_log("invalid CONNECT").await;
    assert!(!log.contains("987654321"), "secret in the log:\n{log}");
    assert!(
        log.contains(r#"Subject "a\x1b[31mb""#) && log.contains(r#"Subject "a\rb\"q""#),
        "violations logged escaped:\n{log}"
    );
    assert!(log.contains(r#"PUB a\x1b[31mb 1"#), "trace escaped:\n{log}");
    for line in log.split('\n') {
        assert!(
            !line.contains('\r') && !line.contains('\x1b'),
            "raw control character in the log: {line:?}"
        );
    }
}
