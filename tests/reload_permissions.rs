//! A configuration reload applies new permissions to clients that are
//! already connected: publishing is checked against them at once, and
//! subscriptions they forbid stop receiving.

mod common;

use common::*;
use rnats::auth::{AuthConfig, Permissions, Secret, SubjectPermission, UserEntry};

fn with_user(perms: Option<Permissions>) -> rnats::Options {
    rnats::Options {
        auth: AuthConfig {
            users: vec![UserEntry {
                user: "app".into(),
                password: Some(Secret::parse("pw").unwrap()),
                permissions: perms,
                account: None,
            }],
            ..AuthConfig::default()
        },
        ..opts()
    }
}

fn deny(publish: &[&str], subscribe: &[&str]) -> Permissions {
    let sp = |d: &[&str]| {
        Some(SubjectPermission {
            allow: None,
            deny: d.iter().map(|s| s.to_string()).collect(),
        })
    };
    Permissions {
        publish: sp(publish),
        subscribe: sp(subscribe),
        allow_responses: None,
    }
}

const LOGIN: &str = r#"{"verbose":false,"pedantic":false,"user":"app","pass":"pw"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_new_permissions_to_connected_clients() {
    let server = start(with_user(None)).await;
    let mut client = Raw::handshake(server.client_addr(), LOGIN).await;
    client.send(b"SUB secret 1\r\nSUB open 2\r\n").await;
    client
        .send(b"PUB secret 1\r\na\r\nPUB open 1\r\nb\r\n")
        .await;
    let (lines, msgs) = client.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(msgs.len(), 2, "both subjects allowed before the reload");

    server
        .reload(with_user(Some(deny(&["secret"], &["secret"]))))
        .unwrap();
    // The reload re-checks clients in the background: wait until the new
    // permissions are in place (the forbidden subscription is gone).
    assert_eventually(
        || server.ctx.accounts.total_subscriptions() == 1,
        TIMEOUT,
        "forbidden subscription removed",
    )
    .await;

    client
        .send(b"PUB secret 1\r\nc\r\nPUB open 1\r\nd\r\n")
        .await;
    let (lines, msgs) = client.ping_collect().await;
    assert_eq!(
        lines,
        vec!["-ERR 'Permissions Violation for Publish to \"secret\"'".to_string()]
    );
    assert_eq!(
        msgs.len(),
        1,
        "only the allowed subject is delivered: {msgs:?}"
    );
    assert_eq!(msgs[0].subject, "open");
    // Still connected, same credentials.
    assert_eq!(server.ctx.conns.len(), 1);
    server.shutdown().await;
}
