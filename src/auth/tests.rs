//! Authenticator, audit and limiter integration tests. bcrypt hashes use the
//! minimum cost (4) so the suite stays fast; the cost does not change the
//! logic under test.

use std::net::SocketAddr;
use std::sync::Mutex;

use super::*;
use crate::tls::DnAttr;

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

fn hash(pw: &str) -> Secret {
    Secret::parse(&bcrypt::hash(pw, 4).expect("hash")).expect("bcrypt")
}

fn plain(pw: &str) -> Secret {
    Secret::parse(pw).expect("plain")
}

fn no_limits() -> Arc<FailureLimiter> {
    Arc::new(FailureLimiter::new(&AuthLimits {
        max_failures: 0,
        max_conn_rate: 0,
        ..AuthLimits::default()
    }))
}

fn auth(cfg: AuthConfig) -> Authenticator {
    Authenticator::new(&cfg, false, no_limits(), 1).expect("authenticator")
}

fn user(name: &str, pw: Option<Secret>, perms: Option<Permissions>) -> UserEntry {
    UserEntry {
        user: name.into(),
        password: pw,
        permissions: perms,
        account: None,
    }
}

fn perms(publish: &str) -> Permissions {
    Permissions {
        publish: Some(SubjectPermission {
            allow: Some(vec![publish.into()]),
            deny: vec![],
        }),
        ..Permissions::default()
    }
}

#[tokio::test]
async fn open_server_accepts_anyone() {
    let a = auth(AuthConfig::default());
    assert!(!a.auth_required());
    let ok = a
        .authenticate(PEER, Some("x"), Some("y"), None, None)
        .await
        .expect("ok");
    assert_eq!(ok.method, AuthMethod::None);
}

#[tokio::test]
async fn token_plain_and_bcrypt() {
    for secret in [plain("s3cret"), hash("s3cret")] {
        let a = auth(AuthConfig {
            token: Some(secret),
            ..AuthConfig::default()
        });
        assert!(a.auth_required());
        let ok = a
            .authenticate(PEER, None, None, Some("s3cret"), None)
            .await
            .expect("good token");
        assert_eq!((ok.method, ok.user), (AuthMethod::Token, None));
        let e = a
            .authenticate(PEER, None, None, Some("s3cret!"), None)
            .await
            .unwrap_err();
        assert_eq!((e.reason, e.method), (REASON_BAD_TOKEN, AuthMethod::Token));
        let e = a
            .authenticate(PEER, Some("u"), Some("s3cret"), None, None)
            .await
            .unwrap_err();
        assert_eq!(e.reason, REASON_MISSING);
        assert_eq!(e.user.as_deref(), Some("u"));
    }
}

#[tokio::test]
async fn single_user() {
    for secret in [plain("pw"), hash("pw")] {
        let a = auth(AuthConfig {
            user: Some("derek".into()),
            password: Some(secret),
            default_permissions: Some(perms("a.>")),
            ..AuthConfig::default()
        });
        let ok = a
            .authenticate(PEER, Some("derek"), Some("pw"), None, None)
            .await
            .expect("ok");
        assert_eq!(ok.user.as_deref(), Some("derek"));
        assert_eq!(ok.method, AuthMethod::UserPassword);
        assert_eq!(ok.permissions.as_deref(), Some(&perms("a.>")));
        let e = a
            .authenticate(PEER, Some("derek"), Some("nope"), None, None)
            .await
            .unwrap_err();
        assert_eq!(e.reason, REASON_BAD_PASSWORD);
        let e = a
            .authenticate(PEER, Some("derec"), Some("pw"), None, None)
            .await
            .unwrap_err();
        assert_eq!(e.reason, REASON_UNKNOWN_USER);
        let e = a
            .authenticate(PEER, None, Some("pw"), Some("pw"), None)
            .await
            .unwrap_err();
        assert_eq!(e.reason, REASON_MISSING);
    }
}

fn users_cfg() -> AuthConfig {
    AuthConfig {
        users: vec![
            user("alice", Some(hash("apw")), Some(perms("alice.>"))),
            user("bob", Some(plain("bpw")), None),
            user("certonly", None, None),
        ],
        default_permissions: Some(perms("default.>")),
        ..AuthConfig::default()
    }
}

#[tokio::test]
async fn users_and_permissions() {
    let a = auth(users_cfg());
    let ok = a
        .authenticate(PEER, Some("alice"), Some("apw"), None, None)
        .await
        .expect("alice");
    assert_eq!(ok.permissions.as_deref(), Some(&perms("alice.>")));
    let ok = a
        .authenticate(PEER, Some("bob"), Some("bpw"), None, None)
        .await
        .expect("bob");
    assert_eq!(ok.permissions.as_deref(), Some(&perms("default.>")));
    for (u, p, reason) in [
        ("alice", "bpw", REASON_BAD_PASSWORD),
        ("bob", "apw", REASON_BAD_PASSWORD),
        ("carol", "apw", REASON_UNKNOWN_USER),
        ("certonly", "", REASON_NO_PASSWORD),
    ] {
        let e = a
            .authenticate(PEER, Some(u), Some(p), None, None)
            .await
            .unwrap_err();
        assert_eq!(e.reason, reason, "{u}");
        assert_eq!(e.user.as_deref(), Some(u));
    }
    let e = a
        .authenticate(PEER, None, None, Some("apw"), None)
        .await
        .unwrap_err();
    assert_eq!(e.reason, REASON_MISSING);
}

#[tokio::test]
async fn every_password_failure_costs_one_bcrypt() {
    let a = auth(users_cfg());
    let pool = a.bcrypt_pool();
    let mut before = pool.verifications();
    // Wrong password for a bcrypt user, for a plain user, unknown user and
    // a certificate-only user: each runs exactly one bcrypt verification.
    for (u, p) in [
        ("alice", "x"),
        ("bob", "x"),
        ("nobody", "x"),
        ("certonly", "x"),
    ] {
        assert!(
            a.authenticate(PEER, Some(u), Some(p), None, None)
                .await
                .is_err()
        );
        let after = pool.verifications();
        assert_eq!(after - before, 1, "{u}");
        before = after;
    }
    // With no bcrypt anywhere, nothing needs equalising.
    let a = auth(AuthConfig {
        users: vec![user("bob", Some(plain("bpw")), None)],
        ..AuthConfig::default()
    });
    assert!(
        a.authenticate(PEER, Some("nobody"), Some("x"), None, None)
            .await
            .is_err()
    );
    assert_eq!(a.bcrypt_pool().verifications(), 0);
}

fn hash_at(pw: &str, cost: u32) -> Secret {
    Secret::parse(&bcrypt::hash(pw, cost).expect("hash")).expect("bcrypt")
}

#[tokio::test]
async fn a_failure_costs_the_bcrypt_cost_of_a_real_user() {
    // Mixed costs: a wrong password costs the user's own hash; an unknown
    // name (or a plain-password user) costs one of the configured costs,
    // the same one for the same name every time, spread over the costs in
    // use, so timing does not tell unknown names from real ones.
    let cfg = AuthConfig {
        users: vec![
            user("four", Some(hash_at("x", 4)), None),
            user("five", Some(hash_at("y", 5)), None),
            user("plain", Some(plain("p")), None),
        ],
        ..AuthConfig::default()
    };
    let a = auth(cfg);
    let pool = a.bcrypt_pool();
    assert_eq!(a.timing_cost(Some("four")), Some(4));
    assert_eq!(a.timing_cost(Some("five")), Some(5));
    assert!(
        a.authenticate(PEER, Some("four"), Some("bad"), None, None)
            .await
            .is_err()
    );
    assert_eq!((pool.verifications_at(4), pool.verifications_at(5)), (1, 0));
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..64 {
        let name = format!("nobody{n}");
        let cost = a.timing_cost(Some(&name)).expect("a cost");
        assert_eq!(a.timing_cost(Some(&name)), Some(cost), "stable per name");
        let before = pool.verifications_at(cost);
        assert!(
            a.authenticate(PEER, Some(&name), Some("x"), None, None)
                .await
                .is_err()
        );
        assert_eq!(pool.verifications_at(cost), before + 1, "{name}");
        seen.insert(cost);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [4, 5]);
    let c = a
        .timing_cost(Some("plain"))
        .expect("plain user gets a cost");
    assert!(c == 4 || c == 5);
    // With no bcrypt anywhere there is nothing to equalise.
    let a = auth(AuthConfig {
        users: vec![user("bob", Some(plain("bpw")), None)],
        ..AuthConfig::default()
    });
    assert_eq!(a.timing_cost(Some("nobody")), None);
}

fn attr(oid: &str, v: &str) -> DnAttr {
    DnAttr {
        oid: oid.into(),
        text: Some(v.into()),
        raw: Vec::new(),
    }
}

fn identity() -> CertIdentity {
    CertIdentity {
        subject: "CN=alice,O=Acme".into(),
        emails: vec!["alice@example.com".into()],
        dns_names: vec!["alice.example.com".into()],
        rdns: vec![
            vec![attr("2.5.4.3", "alice")],
            vec![attr("2.5.4.10", "Acme")],
        ],
    }
}

fn map_auth(names: &[&str]) -> Authenticator {
    let cfg = AuthConfig {
        users: names
            .iter()
            .map(|n| user(n, None, Some(perms(n))))
            .collect(),
        ..AuthConfig::default()
    };
    Authenticator::new(&cfg, true, no_limits(), 1).expect("tls map")
}

#[tokio::test]
async fn tls_map_order_email_dns_subject() {
    let id = identity();
    let cases: [(&[&str], &str); 4] = [
        (
            &["CN=alice,O=Acme", "alice.example.com", "alice@example.com"],
            "alice@example.com",
        ),
        (
            &["CN=alice,O=Acme", "alice.example.com"],
            "alice.example.com",
        ),
        (&["CN=alice,O=Acme", "bob"], "CN=alice,O=Acme"),
        (&["o=Acme, cn=alice"], "o=Acme, cn=alice"),
    ];
    for (names, want) in cases {
        let a = map_auth(names);
        let ok = a
            .authenticate(PEER, None, None, None, Some(&id))
            .await
            .expect("mapped");
        assert_eq!(ok.method, AuthMethod::TlsMap);
        assert_eq!(ok.user.as_deref(), Some(want));
        assert_eq!(ok.permissions.as_deref(), Some(&perms(want)));
    }
    let a = map_auth(&["bob"]);
    let e = a
        .authenticate(PEER, Some("bob"), Some("x"), None, Some(&id))
        .await
        .unwrap_err();
    assert_eq!(
        (e.reason, e.method),
        (REASON_CERT_UNMAPPED, AuthMethod::TlsMap)
    );
    let e = a
        .authenticate(PEER, Some("bob"), None, None, None)
        .await
        .unwrap_err();
    assert_eq!(e.reason, REASON_NO_CERT);
    // Two spellings of the same DN: ambiguous, refused.
    let a = map_auth(&["O=Acme,CN=alice", "cn=alice,o=Acme"]);
    assert!(
        a.authenticate(PEER, None, None, None, Some(&id))
            .await
            .is_err()
    );
}

#[test]
fn invalid_combinations() {
    let token = AuthConfig {
        token: Some(plain("t")),
        ..AuthConfig::default()
    };
    assert!(Authenticator::new(&token, true, no_limits(), 1).is_err());
    assert!(Authenticator::new(&AuthConfig::default(), true, no_limits(), 1).is_err());
}

fn limiter(max_failures: u32) -> Arc<FailureLimiter> {
    Arc::new(FailureLimiter::new(&AuthLimits {
        max_failures,
        ..AuthLimits::default()
    }))
}

#[tokio::test]
async fn token_failures_ban_the_source() {
    let limiter = limiter(3);
    let cfg = AuthConfig {
        token: Some(plain("tok")),
        ..AuthConfig::default()
    };
    let a = Authenticator::new(&cfg, false, limiter.clone(), 1).expect("auth");
    for _ in 0..3 {
        let e = a
            .authenticate(PEER, None, None, Some("bad"), None)
            .await
            .unwrap_err();
        assert_eq!(e.reason, REASON_BAD_TOKEN);
    }
    // Even the right token is refused now, without being checked.
    let e = a
        .authenticate(PEER, None, None, Some("tok"), None)
        .await
        .unwrap_err();
    assert_eq!(e.reason, REASON_BANNED);
    // Connections are still admitted: the ban is decided at CONNECT.
    assert_eq!(a.limiter().admit(PEER), Admission::Allowed);
    let other: IpAddr = "192.0.2.2".parse().expect("ip");
    assert!(
        a.authenticate(other, None, None, Some("tok"), None)
            .await
            .is_ok()
    );
    let s = limiter.stats();
    assert_eq!((s.auth_failures, s.bans, s.banned_keys), (3, 1, 1));
    assert_eq!(s.banned_refusals, 1);
}

#[tokio::test]
async fn bans_are_per_user_and_sprays_share_one_budget() {
    let cfg = AuthConfig {
        users: vec![
            user("app", Some(plain("apw")), None),
            user("ops", Some(plain("opw")), None),
        ],
        ..AuthConfig::default()
    };
    let a = Authenticator::new(&cfg, false, limiter(3), 1).expect("auth");
    let login =
        |u: &'static str, p: &'static str| a.authenticate(PEER, Some(u), Some(p), None, None);
    for _ in 0..3 {
        assert_eq!(
            login("app", "old").await.unwrap_err().reason,
            REASON_BAD_PASSWORD
        );
    }
    // The target is banned, even with its right password...
    assert_eq!(login("app", "apw").await.unwrap_err().reason, REASON_BANNED);
    // ...the other user of the same address is not.
    assert!(login("ops", "opw").await.is_ok());
    // Unknown names share the source's budget; its ban refuses only them.
    for n in ["x1", "x2", "x3"] {
        let e = a
            .authenticate(PEER, Some(n), Some("p"), None, None)
            .await
            .unwrap_err();
        assert_eq!(e.reason, REASON_UNKNOWN_USER);
    }
    let e = a
        .authenticate(PEER, Some("x4"), Some("p"), None, None)
        .await
        .unwrap_err();
    assert_eq!(e.reason, REASON_BANNED);
    assert!(login("ops", "opw").await.is_ok());
    assert_eq!(a.limiter().stats().bans, 2);
}

/// Poll `cond` (bounded) while something runs elsewhere.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_decided_after_the_ban_engaged_is_refused() {
    // Parallel attempts all pass the first ban check; the one that guesses
    // right must not get in if the ban engaged while it was verified.
    let cfg = AuthConfig {
        users: vec![user("u", Some(hash_at("right", 12)), None)],
        ..AuthConfig::default()
    };
    let limiter = limiter(3);
    let a = Arc::new(Authenticator::new(&cfg, false, limiter.clone(), 1).expect("auth"));
    let a2 = a.clone();
    let guess = tokio::spawn(async move {
        a2.authenticate(PEER, Some("u"), Some("right"), None, None)
            .await
    });
    eventually("verification running", || {
        a.bcrypt_pool().verifications() == 1
    })
    .await;
    // Meanwhile other attempts fail and ban (PEER, u).
    for _ in 0..3 {
        limiter.record_failure_for(PEER, Some("u"));
    }
    let e = guess.await.expect("join").unwrap_err();
    assert_eq!(e.reason, REASON_BANNED);
    assert_eq!(a.bcrypt_pool().verifications(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_queued_behind_the_ban_runs_no_bcrypt() {
    let cfg = AuthConfig {
        users: vec![
            user("slow", Some(hash_at("s", 12)), None),
            user("u", Some(hash_at("right", 4)), None),
        ],
        ..AuthConfig::default()
    };
    let limiter = limiter(3);
    let a = Arc::new(Authenticator::new(&cfg, false, limiter.clone(), 1).expect("auth"));
    // Occupy the only worker, then queue a guess behind it.
    let a1 = a.clone();
    let busy = tokio::spawn(async move {
        a1.authenticate(PEER, Some("slow"), Some("s"), None, None)
            .await
    });
    eventually("worker busy", || a.bcrypt_pool().verifications() == 1).await;
    let a2 = a.clone();
    let queued = tokio::spawn(async move {
        a2.authenticate(PEER, Some("u"), Some("guess"), None, None)
            .await
    });
    eventually("guess queued", || limiter.stats().pending_checks == 2).await;
    for _ in 0..3 {
        limiter.record_failure_for(PEER, Some("u"));
    }
    assert!(busy.await.expect("join").is_ok());
    let e = queued.await.expect("join").unwrap_err();
    assert_eq!(e.reason, REASON_BANNED);
    assert_eq!(
        a.bcrypt_pool().verifications(),
        1,
        "the queued guess ran no bcrypt"
    );
    let s = limiter.stats();
    assert_eq!((s.pending_checks, s.abandoned_checks), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_check_leaves_the_queue() {
    let cfg = AuthConfig {
        users: vec![
            user("slow", Some(hash_at("s", 12)), None),
            user("u", Some(hash_at("right", 4)), None),
        ],
        ..AuthConfig::default()
    };
    let limiter = no_limits();
    let a = Arc::new(Authenticator::new(&cfg, false, limiter.clone(), 1).expect("auth"));
    let a1 = a.clone();
    let busy = tokio::spawn(async move {
        a1.authenticate(PEER, Some("slow"), Some("s"), None, None)
            .await
    });
    eventually("worker busy", || a.bcrypt_pool().verifications() == 1).await;
    let a2 = a.clone();
    let queued = tokio::spawn(async move {
        a2.authenticate(PEER, Some("u"), Some("right"), None, None)
            .await
    });
    eventually("queued", || limiter.stats().pending_checks == 2).await;
    // The client hangs up: its reader drops the check.
    queued.abort();
    eventually("dropped", || limiter.stats().pending_checks == 1).await;
    assert!(busy.await.expect("join").is_ok());
    let s = limiter.stats();
    assert_eq!((s.pending_checks, s.abandoned_checks), (0, 1));
    assert_eq!(a.bcrypt_pool().verifications(), 1);
}

#[test]
fn reload_keeps_the_limiter_and_the_pool() {
    let mut o = crate::config::Options {
        auth: AuthConfig {
            users: vec![user("u", Some(plain("p")), None)],
            ..AuthConfig::default()
        },
        ..Default::default()
    };
    o.auth_limits.max_failures = 3;
    o.auth_limits.bcrypt_workers = 2;
    let first = Authenticator::from_options(&o).expect("auth");
    first.limiter().record_failure_for(PEER, Some("u"));
    o.auth_limits.max_failures = 2;
    let second = Authenticator::reloaded(&o, &first).expect("reload");
    assert!(Arc::ptr_eq(first.limiter(), second.limiter()));
    assert!(std::ptr::eq(first.bcrypt_pool(), second.bcrypt_pool()));
    assert_eq!(second.limiter().limits().max_failures, 2);
    // The failure before the reload still counts.
    assert!(second.limiter().record_failure_for(PEER, Some("u")));
    o.auth_limits.bcrypt_workers = 3;
    let third = Authenticator::reloaded(&o, &second).expect("reload");
    assert!(Arc::ptr_eq(second.limiter(), third.limiter()));
    assert_eq!(third.bcrypt_pool().workers(), 3);
}

#[test]
fn from_options_wires_limits_and_tls_map() {
    let mut o = crate::config::Options::default();
    assert!(
        !Authenticator::from_options(&o)
            .expect("open")
            .auth_required()
    );
    o.auth.users = vec![user("CN=alice,O=Acme", None, None)];
    let mut t = crate::tls::TlsOptions::new("c", "k");
    t.verify_and_map = true;
    o.tls = Some(t);
    o.auth_limits.max_failures = 7;
    let a = Authenticator::from_options(&o).expect("auth");
    assert_eq!(a.method(), AuthMethod::TlsMap);
    assert_eq!(a.limiter().limits().max_failures, 7);
}

// ---- audit ----

#[derive(Default)]
struct Captured {
    target: String,
    fields: Vec<(String, String)>,
}

struct Capture(Arc<Mutex<Vec<Captured>>>);

struct FieldVisitor<'a>(&'a mut Vec<(String, String)>);

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut c = Captured {
            target: event.metadata().target().to_string(),
            ..Captured::default()
        };
        event.record(&mut FieldVisitor(&mut c.fields));
        if let Ok(mut v) = self.0.lock() {
            v.push(c);
        }
    }
}

fn capture(f: impl FnOnce()) -> Vec<Captured> {
    use tracing_subscriber::layer::SubscriberExt;
    let store = Arc::new(Mutex::new(Vec::new()));
    let sub = tracing_subscriber::registry().with(Capture(store.clone()));
    tracing::subscriber::with_default(sub, f);
    let mut v = store.lock().expect("lock");
    std::mem::take(&mut *v)
}

fn field<'a>(c: &'a Captured, name: &str) -> &'a str {
    c.fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("<missing>")
}

#[tokio::test]
async fn audit_event_fields_and_no_secrets() {
    let a = auth(users_cfg());
    let client: SocketAddr = "192.0.2.1:40000".parse().expect("addr");
    let bad = a
        .authenticate(
            PEER,
            Some("bob\n[INF] forged"),
            Some("hunter2-secret"),
            None,
            None,
        )
        .await;
    let good = a
        .authenticate(PEER, Some("bob"), Some("bpw"), None, None)
        .await;
    let events = capture(|| {
        audit(&AuditEvent::from_outcome(client, Some(7), &bad));
        audit(&AuditEvent::from_outcome(client, Some(8), &good));
    });
    assert_eq!(events.len(), 2);
    let e = &events[0];
    assert_eq!(e.target, AUDIT_TARGET);
    assert_eq!(field(e, "client"), "192.0.2.1:40000");
    assert_eq!(field(e, "cid"), "7");
    assert_eq!(field(e, "method"), "user");
    assert_eq!(field(e, "result"), "failed");
    assert_eq!(field(e, "reason"), REASON_UNKNOWN_USER);
    assert_eq!(field(e, "user"), "bob\\n[INF] forged");
    assert!(field(e, "time").ends_with('Z'), "{}", field(e, "time"));
    let g = &events[1];
    assert_eq!(
        (field(g, "result"), field(g, "user"), field(g, "reason")),
        ("ok", "bob", "")
    );
    for ev in &events {
        for (_, v) in &ev.fields {
            assert!(
                !v.contains("hunter2") && !v.contains("bpw"),
                "secret leaked: {v}"
            );
        }
    }
}

#[test]
fn audit_banned_result_and_long_user() {
    let out: Result<AuthOk, AuthFailure> = Err(AuthFailure {
        reason: REASON_BANNED,
        method: AuthMethod::Token,
        user: None,
    });
    let ev = AuditEvent::from_outcome("127.0.0.1:1".parse().expect("addr"), None, &out);
    assert_eq!(ev.result, AuditResult::Banned);
    let long = "x".repeat(500);
    let s = audit::sanitize_user(&long);
    assert_eq!(s.chars().count(), 129);
}
