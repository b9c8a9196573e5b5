//! Re-checking connected clients on reload, under load and races: one
//! bcrypt per distinct credential, the newest reload wins, logins in
//! flight are judged by the configuration that is current when they
//! finish, and a revoked or kicked connection stops reading at once.

mod common;

use std::time::Duration;

use common::*;
use rnats::auth::{AuthConfig, AuthLimits, Permissions, Secret, SubjectPermission, UserEntry};
use tokio::time::Instant;

const AUTH_VIOLATION: &str = "-ERR 'Authorization Violation'";

/// bcrypt hashes made once (cost 10 and cost 12): a reload that re-checked
/// each client with its own bcrypt would take seconds for 150 clients.
fn bcrypt_secret(pass: &str, cost: u32) -> Secret {
    Secret::parse(&bcrypt::hash(pass, cost).unwrap()).unwrap()
}

fn user(name: &str, pass: Secret, permissions: Option<Permissions>) -> UserEntry {
    UserEntry {
        user: name.into(),
        password: Some(pass),
        permissions,
        account: None,
    }
}

fn with_users(users: Vec<UserEntry>) -> rnats::Options {
    rnats::Options {
        auth: AuthConfig {
            users,
            ..AuthConfig::default()
        },
        auth_limits: AuthLimits {
            max_conn_rate: 0,
            ..AuthLimits::default()
        },
        // 150 bcrypt logins at once queue for longer than the default.
        auth_timeout: Duration::from_secs(20),
        ..opts()
    }
}

fn allow_publish(subjects: &[&str]) -> Permissions {
    Permissions {
        publish: Some(SubjectPermission {
            allow: Some(subjects.iter().map(|s| s.to_string()).collect()),
            deny: Vec::new(),
        }),
        subscribe: None,
        allow_responses: None,
    }
}

fn login(user: &str, pass: &str) -> String {
    format!(r#"{{"verbose":false,"pedantic":false,"user":"{user}","pass":"{pass}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_of_many_clients_of_one_user_costs_one_bcrypt() {
    const CLIENTS: usize = 150;
    let old = bcrypt_secret("pw1", 10);
    let server = start(with_users(vec![user("a", old.clone(), None)])).await;
    let addr = server.client_addr();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = Raw::connect(addr).await;
        c.send(format!("CONNECT {}\r\n", login("a", "pw1")).as_bytes())
            .await;
        clients.push(c);
    }
    for c in &mut clients {
        let (lines, _) = c.ping_collect().await;
        assert!(lines.is_empty(), "{lines:?}");
    }
    let started = Instant::now();
    server
        .reload(with_users(vec![user("a", bcrypt_secret("pw2", 10), None)]))
        .unwrap();
    for c in &mut clients {
        let got = c.expect_closed().await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("{AUTH_VIOLATION}\r\n")
        );
    }
    let took = started.elapsed();
    // One bcrypt at cost 10 is tens of milliseconds here; one per client
    // would be 150 of them, seconds even on both cores.
    assert!(
        took < Duration::from_secs(3),
        "revoking {CLIENTS} clients took {took:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_of_two_quick_reloads_decides() {
    let pw = bcrypt_secret("pw", 10);
    let server = start(with_users(vec![user("a", pw.clone(), None)])).await;
    let mut c = Raw::handshake(server.client_addr(), &login("a", "pw")).await;
    c.ping_collect().await;
    // Broad, then narrow, back to back: the narrow one must be in force
    // however the two re-checks interleave.
    server
        .reload(with_users(vec![user(
            "a",
            pw.clone(),
            Some(allow_publish(&[">"])),
        )]))
        .unwrap();
    server
        .reload(with_users(vec![user(
            "a",
            pw.clone(),
            Some(allow_publish(&["ok"])),
        )]))
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        c.send(b"PUB other 1\r\nx\r\n").await;
        let (lines, _) = c.ping_collect().await;
        if lines.iter().any(|l| l.contains("Permissions Violation")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "narrow permissions never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And it stays so once both re-checks are done.
    let gen_deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < gen_deadline {
        c.send(b"PUB other 1\r\nx\r\n").await;
        let (lines, _) = c.ping_collect().await;
        assert_eq!(
            lines,
            vec!["-ERR 'Permissions Violation for Publish to \"other\"'".to_string()]
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_in_flight_during_a_reload_is_judged_by_the_new_configuration() {
    // Cost 12: the login's bcrypt takes long enough for the reload to land
    // while it runs.
    let slow = bcrypt_secret("pw1", 12);
    let keep = bcrypt_secret("keep", 12);
    let server = start(with_users(vec![
        user("a", slow.clone(), None),
        user("b", keep.clone(), None),
    ]))
    .await;
    let addr = server.client_addr();
    let mut revoked = Raw::connect(addr).await;
    let mut kept = Raw::connect(addr).await;
    revoked
        .send(format!("CONNECT {}\r\nPING\r\n", login("a", "pw1")).as_bytes())
        .await;
    kept.send(format!("CONNECT {}\r\nPING\r\n", login("b", "keep")).as_bytes())
        .await;
    // Both logins are now verifying; a's password changes meanwhile, b's
    // does not.
    server
        .reload(with_users(vec![
            user("a", bcrypt_secret("pw2", 4), None),
            user("b", keep.clone(), None),
        ]))
        .unwrap();
    let got = String::from_utf8_lossy(&revoked.expect_closed().await).into_owned();
    assert!(got.ends_with(&format!("{AUTH_VIOLATION}\r\n")), "{got:?}");
    // The client still logging in with valid credentials is not kicked
    // for "missing credentials".
    kept.expect("PONG").await;
    let (lines, _) = kept.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_connection_stops_before_the_rest_of_its_read_buffer() {
    let slow = bcrypt_secret("pw", 12);
    let server = start(with_users(vec![
        user("a", slow, None),
        user("watch", bcrypt_secret("w", 4), None),
    ]))
    .await;
    let addr = server.client_addr();
    let mut watcher = Raw::handshake(addr, &login("watch", "w")).await;
    watcher.send(b"SUB work 1\r\n").await;
    watcher.ping_collect().await;
    // CONNECT and 200 PUBs in one write: while CONNECT's bcrypt runs the
    // PUBs wait in the reader's buffer.
    let mut burst = format!("CONNECT {}\r\n", login("a", "pw")).into_bytes();
    for _ in 0..200 {
        burst.extend_from_slice(b"PUB work 2\r\nhi\r\n");
    }
    let mut c = Raw::connect(addr).await;
    let local = c.stream.local_addr().unwrap();
    c.send(&burst).await;
    let cid = {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(cid) = cid_of(&server, local) {
                break cid;
            }
            assert!(Instant::now() < deadline, "connection registered");
            tokio::task::yield_now().await;
        }
    };
    server.ctx.kick(cid);
    c.expect_closed().await;
    let (lines, msgs) = watcher.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert!(
        msgs.is_empty(),
        "{} PUBs were processed after the kick",
        msgs.len()
    );
    assert_eq!(
        server
            .ctx
            .stats
            .in_msgs
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_has_not_sent_connect_follows_a_reload_that_turns_auth_on() {
    let server = start(opts()).await;
    let mut c = Raw::connect(server.client_addr()).await;
    c.clear();
    server
        .reload(with_users(vec![user("a", bcrypt_secret("pw", 4), None)]))
        .unwrap();
    // No CONNECT yet: under the new configuration a PUB is refused.
    c.send(b"PUB x 1\r\na\r\n").await;
    let got = String::from_utf8_lossy(&c.expect_closed().await).into_owned();
    assert_eq!(got, format!("{AUTH_VIOLATION}\r\n"));
    server.shutdown().await;
}
