//! Logins under attack, against a real server over real TCP: failed-login
//! bans that spare the neighbours of a misconfigured client, login floods
//! that cannot queue unbounded bcrypt work, connection bursts the server
//! must accept like nats-server does, and limiter state across reloads.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rnats::auth::{AuthConfig, AuthLimits, Secret, UserEntry};

const AUTH_VIOLATION: &str = "-ERR 'Authorization Violation'";
const AUTH_TIMEOUT: &str = "-ERR 'Authentication Timeout'";

fn user(name: &str, secret: &str) -> UserEntry {
    UserEntry {
        user: name.into(),
        password: Some(Secret::parse(secret).expect("secret")),
        permissions: None,
        account: None,
    }
}

fn users(list: Vec<UserEntry>) -> AuthConfig {
    AuthConfig {
        users: list,
        ..AuthConfig::default()
    }
}

fn bcrypt(pw: &str, cost: u32) -> String {
    bcrypt::hash(pw, cost).expect("hash")
}

fn connect_json(user: &str, pass: &str) -> String {
    serde_json::json!({"verbose": false, "pedantic": false, "user": user, "pass": pass}).to_string()
}

/// CONNECT (+PING) on a fresh connection; what the server answered and
/// whether it closed.
async fn login(addr: SocketAddr, user: &str, pass: &str) -> (String, End) {
    let mut raw = Raw::connect(addr).await;
    raw.send(format!("CONNECT {}\r\nPING\r\n", connect_json(user, pass)).as_bytes())
        .await;
    let mut got = String::new();
    let end = loop {
        match raw.try_line(TIMEOUT).await {
            Ok(Some(l)) if l == "PONG" => break End::Open,
            Ok(Some(l)) => got.push_str(&l),
            Ok(None) => break End::Closed,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break End::Reset,
            Err(e) => panic!("login as {user}: {e}"),
        }
    };
    (got, end)
}

async fn assert_ok(addr: SocketAddr, user: &str, pass: &str, what: &str) {
    let (got, end) = login(addr, user, pass).await;
    assert!(
        matches!(end, End::Open) && got.is_empty(),
        "{what}: {got:?} {end:?}"
    );
}

async fn assert_refused(addr: SocketAddr, user: &str, pass: &str, what: &str) {
    let (got, end) = login(addr, user, pass).await;
    assert!(end.is_closed(), "{what}: still open after {got:?}");
    assert_eq!(got, AUTH_VIOLATION, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_looping_on_a_wrong_password_never_locks_out_its_neighbours() {
    // Behind one NAT address: `app` retries an old password in a loop,
    // `ops` logs in all along. Only `app` gets banned.
    let server = start(rnats::Options {
        auth: users(vec![user("app", "new-pw"), user("ops", "ops-pw")]),
        auth_limits: AuthLimits {
            max_failures: 3,
            ..AuthLimits::default()
        },
        ..opts()
    })
    .await;
    let addr = server.client_addr();
    let steady = nats_with(
        addr,
        async_nats::ConnectOptions::new().user_and_password("ops".into(), "ops-pw".into()),
    )
    .await;
    for i in 0..20 {
        assert_refused(addr, "app", "old-pw", &format!("app attempt {i}")).await;
        assert_ok(addr, "ops", "ops-pw", &format!("ops login {i}")).await;
    }
    let stats = server.ctx.auth().limiter().stats();
    assert_eq!(stats.bans, 1, "{stats:?}");
    assert!(stats.banned_refusals >= 17, "{stats:?}");
    // The target itself stays banned, right password or not.
    assert_refused(addr, "app", "new-pw", "app while banned").await;
    assert_ok(addr, "ops", "ops-pw", "ops at the end").await;
    steady
        .flush()
        .await
        .expect("the steady ops client still works");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connects_that_hang_up_leaves_no_bcrypt_work_behind() {
    let auth_timeout = Duration::from_secs(3);
    let server = start(rnats::Options {
        auth: users(vec![user("u", &bcrypt("right", 12))]),
        auth_timeout,
        auth_limits: AuthLimits {
            max_failures: 0,
            bcrypt_workers: 1,
            ..AuthLimits::default()
        },
        ..opts()
    })
    .await;
    let addr = server.client_addr();
    let limiter = server.ctx.auth().limiter().clone();
    let flood = 40;
    for _ in 0..flood {
        let mut raw = Raw::connect(addr).await;
        raw.send(format!("CONNECT {}\r\n", connect_json("u", "guess")).as_bytes())
            .await;
        // ...and hang up at once.
    }
    assert_eventually(
        || limiter.stats().pending_checks == 0,
        auth_timeout,
        "pending checks back to idle within the auth timeout",
    )
    .await;
    let ran = server.ctx.auth().bcrypt_pool().verifications();
    assert!(
        ran < flood / 2,
        "{ran} of {flood} checks ran for gone clients"
    );
    assert!(limiter.stats().abandoned_checks > 0);
    // The server is free for a real login at once.
    let bcrypt_free = server.ctx.auth().bcrypt_pool().verifications();
    assert_ok(addr, "u", "right", "login after the flood").await;
    assert_eq!(
        server.ctx.auth().bcrypt_pool().verifications(),
        bcrypt_free + 1
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_check_is_bounded_by_the_auth_timeout() {
    // Clients that stay: more queued bcrypt work than fits in the auth
    // timeout. The late ones get 'Authentication Timeout' in time, as they
    // would from nats-server's auth timer, instead of waiting for ever.
    let auth_timeout = Duration::from_secs(1);
    let server = start(rnats::Options {
        auth: users(vec![user("u", &bcrypt("right", 12))]),
        auth_timeout,
        auth_limits: AuthLimits {
            max_failures: 0,
            bcrypt_workers: 1,
            ..AuthLimits::default()
        },
        ..opts()
    })
    .await;
    let addr = server.client_addr();
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut raw = Raw::connect(addr).await;
        raw.send(format!("CONNECT {}\r\n", connect_json("u", "guess")).as_bytes())
            .await;
        clients.push(raw);
    }
    let mut timeouts = 0;
    for c in &mut clients {
        let (got, end) = c.read_to_end(auth_timeout * 3).await;
        assert!(
            end.is_closed(),
            "not closed: {:?}",
            String::from_utf8_lossy(&got)
        );
        let got = String::from_utf8_lossy(&got).into_owned();
        match got.trim_end() {
            AUTH_VIOLATION => {}
            AUTH_TIMEOUT => timeouts += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(timeouts > 0, "no check was cut off by the auth timeout");
    let limiter = server.ctx.auth().limiter().clone();
    assert_eventually(
        || limiter.stats().pending_checks == 0,
        auth_timeout,
        "pending checks back to idle",
    )
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_cannot_exceed_the_failure_budget() {
    let max_failures = 5;
    let server = start(rnats::Options {
        auth: users(vec![user("u", &bcrypt("right", 11))]),
        auth_limits: AuthLimits {
            max_failures,
            bcrypt_workers: 1,
            ..AuthLimits::default()
        },
        ..opts()
    })
    .await;
    let addr = server.client_addr();
    let limiter = server.ctx.auth().limiter().clone();
    // Queue all the guesses before the first is decided, the right
    // password last.
    let guesses = 30;
    let mut clients = Vec::new();
    for i in 0..guesses {
        let pass = if i == guesses - 1 { "right" } else { "wrong" };
        let mut raw = Raw::connect(addr).await;
        raw.send(format!("CONNECT {}\r\nPING\r\n", connect_json("u", pass)).as_bytes())
            .await;
        clients.push(raw);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let got = c.expect_closed().await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("{AUTH_VIOLATION}\r\n"),
            "guess {i}"
        );
    }
    let ran = server.ctx.auth().bcrypt_pool().verifications();
    assert_eq!(ran, u64::from(max_failures), "bcrypt guesses run");
    let s = limiter.stats();
    assert_eq!(s.bans, 1, "{s:?}");
    assert_eq!(
        s.banned_refusals,
        guesses - u64::from(max_failures),
        "{s:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_5000_connections_is_accepted_under_defaults() {
    // nats-server has no connection-rate limit; rnats has none by default.
    let server = start_default().await;
    let addr = server.client_addr();
    let tasks = 25;
    let per_task = 200;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        handles.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for _ in 0..per_task {
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let mut raw = Raw::from_stream(stream);
                let first = raw.line().await.unwrap_or_default();
                if !first.starts_with("INFO ") {
                    refused.push(first);
                }
            }
            refused
        }));
    }
    let mut refused = Vec::new();
    for h in handles {
        refused.extend(h.await.expect("join"));
    }
    assert!(
        refused.is_empty(),
        "{} of {} refused, e.g. {:?}",
        refused.len(),
        tasks * per_task,
        refused.first()
    );
    assert_eq!(server.ctx.auth().limiter().stats().rate_limited, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_answers_like_nats_server_even_with_a_rate_limit() {
    let server = start(rnats::Options {
        max_connections: 2,
        auth_limits: AuthLimits {
            max_conn_rate: 1000,
            conn_burst: 100,
            ..AuthLimits::default()
        },
        ..opts()
    })
    .await;
    let addr = server.client_addr();
    let json = r#"{"verbose":false}"#;
    let _first = Raw::handshake(addr, json).await;
    let _second = Raw::handshake(addr, json).await;
    // Far more extra clients than the bucket holds: every one is refused
    // for the true reason, INFO first, as nats-server does.
    for i in 0..300 {
        let mut extra = Raw::connect(addr).await;
        let got = extra.expect_closed().await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            "-ERR 'maximum connections exceeded'\r\n",
            "extra client {i}"
        );
    }
    assert_eq!(server.ctx.auth().limiter().stats().rate_limited, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_rate_limit_refuses_with_its_reason_after_info() {
    let server = start(rnats::Options {
        auth_limits: AuthLimits {
            max_conn_rate: 1,
            conn_burst: 1,
            ..AuthLimits::default()
        },
        ..opts()
    })
    .await;
    let addr = server.client_addr();
    let _first = Raw::handshake(addr, r#"{"verbose":false}"#).await;
    // The bucket refills one token a second; a few immediate attempts
    // find it empty.
    let mut refusal = None;
    for _ in 0..20 {
        let mut next = Raw::connect(addr).await;
        let (got, end) = next.read_to_end(Duration::from_millis(200)).await;
        if end.is_closed() {
            refusal = Some(String::from_utf8_lossy(&got).into_owned());
            break;
        }
    }
    assert_eq!(
        refusal.as_deref(),
        Some("-ERR 'Connection Rate Limit Exceeded'\r\n")
    );
    assert!(server.ctx.auth().limiter().stats().rate_limited >= 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_and_failure_counts_survive_a_reload() {
    let options = || rnats::Options {
        auth: users(vec![user("u", "right"), user("v", "v-pw")]),
        auth_limits: AuthLimits {
            max_failures: 3,
            ..AuthLimits::default()
        },
        ..opts()
    };
    let server = start(options()).await;
    let addr = server.client_addr();
    let limiter = Arc::as_ptr(server.ctx.auth().limiter());
    assert_refused(addr, "u", "wrong", "failure 1").await;
    assert_refused(addr, "u", "wrong", "failure 2").await;
    server.reload(options()).expect("reload");
    assert_eq!(Arc::as_ptr(server.ctx.auth().limiter()), limiter);
    // The third failure, counted with the two before the reload, bans.
    assert_refused(addr, "u", "wrong", "failure 3").await;
    assert_refused(addr, "u", "right", "banned").await;
    server.reload(options()).expect("reload");
    assert_refused(addr, "u", "right", "still banned after a reload").await;
    assert_ok(addr, "v", "v-pw", "another user").await;
    assert_eq!(server.ctx.auth().limiter().stats().bans, 1);
    server.shutdown().await;
}
