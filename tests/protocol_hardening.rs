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
    assert_eq!(b_msgs.len(), 20, "{b_msgs:?}");
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
