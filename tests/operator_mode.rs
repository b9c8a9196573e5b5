//! Operator (JWT) mode with real clients: creds logins, every refusal a
//! user JWT can earn (each the negative twin of a working login), JWT
//! permissions and limits, and revocation and expiry of connected users.

mod common;

use std::time::Duration;

use common::*;
use nkeys::KeyPair;
use rnats::jwt::{self, AccountClaims, Claims, OperatorClaims, SigningKey, UserClaims, UserScope};
use tokio::time::Instant;

const AUTH_VIOLATION: &str = "-ERR 'Authorization Violation'";

/// An operator, a system account and an application account.
struct Setup {
    operator: KeyPair,
    operator_jwt: String,
    sys: KeyPair,
    sys_jwt: String,
    account: KeyPair,
    account_claims: Claims<AccountClaims>,
    account_jwt: String,
}

impl Setup {
    fn new() -> Setup {
        let operator = KeyPair::new_operator();
        let sys = KeyPair::new_account();
        let account = KeyPair::new_account();
        let mut op: Claims<OperatorClaims> = Claims::new(&operator.public_key(), "OP");
        op.nats.system_account = sys.public_key();
        let operator_jwt = jwt::encode(&mut op, &operator).unwrap();
        let mut sys_claims: Claims<AccountClaims> = Claims::new(&sys.public_key(), "SYS");
        let sys_jwt = jwt::encode(&mut sys_claims, &operator).unwrap();
        let account_claims: Claims<AccountClaims> = Claims::new(&account.public_key(), "APP");
        let mut s = Setup {
            operator,
            operator_jwt,
            sys,
            sys_jwt,
            account,
            account_claims,
            account_jwt: String::new(),
        };
        s.resign();
        s
    }

    /// Sign the (changed) account claims again, one second later than
    /// before so the store takes them as newer.
    fn resign(&mut self) {
        let iat = self.account_claims.iat.max(jwt::now_unix() - 5) + 1;
        self.account_jwt = jwt::encode_at(&mut self.account_claims, &self.operator, iat).unwrap();
    }

    fn config(&self, resolver: &str) -> String {
        format!(
            "operator: {}\nsystem_account: {}\n{resolver}\n",
            self.operator_jwt,
            self.sys.public_key()
        )
    }

    fn memory_config(&self) -> String {
        self.config(&format!(
            "resolver: MEMORY\nresolver_preload: {{\n  {}: {}\n  {}: {}\n}}",
            self.sys.public_key(),
            self.sys_jwt,
            self.account.public_key(),
            self.account_jwt
        ))
    }

    /// A user of the account with `edit` applied to its claims, signed by
    /// `signer` (the account unless given).
    fn user(
        &self,
        edit: impl FnOnce(&mut Claims<UserClaims>),
        signer: Option<&KeyPair>,
    ) -> (KeyPair, String) {
        let kp = KeyPair::new_user();
        let mut c: Claims<UserClaims> = Claims::new(&kp.public_key(), "u");
        if signer.is_some() {
            // As nsc writes users of a signing key.
            c.nats.issuer_account = self.account.public_key();
        }
        edit(&mut c);
        let token = jwt::encode(&mut c, signer.unwrap_or(&self.account)).unwrap();
        (kp, token)
    }

    fn sys_user(&self) -> (KeyPair, String) {
        let kp = KeyPair::new_user();
        let mut c: Claims<UserClaims> = Claims::new(&kp.public_key(), "sys");
        (
            kp.clone(),
            jwt::encode(&mut c, &self.sys).map(|t| (kp, t)).unwrap().1,
        )
    }
}

async fn server_from(text: &str) -> (rnats::Server, TempDir) {
    start_from_config("operator", text).await
}

fn connect_json(kp: &KeyPair, token: &str, nonce: &str) -> String {
    let sig = data_encoding::BASE64URL_NOPAD.encode(&kp.sign(nonce.as_bytes()).unwrap());
    format!(r#"{{"verbose":false,"pedantic":false,"jwt":"{token}","sig":"{sig}"}}"#)
}

/// Log in on the raw protocol; returns the connection and the first reply
/// to CONNECT+PING ("PONG" or the error).
async fn raw_login(s: &rnats::Server, kp: &KeyPair, token: &str) -> (Raw, String) {
    let mut raw = Raw::connect(s.client_addr()).await;
    let nonce = raw.info_json()["nonce"]
        .as_str()
        .expect("nonce in INFO")
        .to_string();
    raw.send(format!("CONNECT {}\r\nPING\r\n", connect_json(kp, token, &nonce)).as_bytes())
        .await;
    let line = raw.line().await.unwrap_or_default();
    (raw, line)
}

async fn creds_client(s: &rnats::Server, kp: &KeyPair, token: &str) -> async_nats::Client {
    let creds = jwt::format_creds(token, &kp.seed().unwrap()).unwrap();
    let opts = async_nats::ConnectOptions::with_credentials(&creds).unwrap();
    nats_with(s.client_addr(), opts).await
}

#[tokio::test]
async fn creds_login_and_pubsub() {
    let setup = Setup::new();
    let (s, _d) = server_from(&setup.memory_config()).await;
    let (kp, token) = setup.user(|_| {}, None);
    let c = creds_client(&s, &kp, &token).await;
    let mut sub = c.subscribe("jwt.>").await.unwrap();
    barrier(&c).await;
    c.publish("jwt.hello", "hi".into()).await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"hi");
    let (_raw, line) = raw_login(&s, &kp, &token).await;
    assert_eq!(line, "PONG");
}

#[tokio::test]
async fn every_refusal_has_a_working_twin() {
    let mut setup = Setup::new();
    let other_account = KeyPair::new_account();
    let signing = KeyPair::new_account();
    let rogue_signing = KeyPair::new_account();
    setup
        .account_claims
        .nats
        .signing_keys
        .push(SigningKey::Plain(signing.public_key()));
    let (revoked_kp, revoked) = setup.user(|_| {}, None);
    let revoked_claims: Claims<UserClaims> = jwt::decode(&revoked).unwrap();
    jwt::revoke(
        &mut setup.account_claims.nats,
        &revoked_kp.public_key(),
        revoked_claims.iat,
    );
    setup.resign();
    // Each refusal counts as a failed login from 127.0.0.1: more than the
    // default ten would ban the source.
    let (s, _d) = server_from(&format!(
        "{}auth_limits {{ max_failures: 100 }}\n",
        setup.memory_config()
    ))
    .await;
    let now = jwt::now_unix();

    let cases: Vec<(&str, KeyPair, String)> = {
        let mut v = Vec::new();
        let (kp, t) = setup.user(|_| {}, None);
        v.push(("plain user", kp, t));
        let (kp, t) = setup.user(|_| {}, Some(&signing));
        v.push(("signed by a signing key", kp, t));
        let (kp, t) = setup.user(|c| c.exp = now + 3600, None);
        v.push(("not yet expired", kp, t));
        let (kp, t) = setup.user(|c| c.nats.limits.src = vec!["127.0.0.0/8".into()], None);
        v.push(("source allowed", kp, t));
        let (kp, t) = setup.user(
            |c| c.nats.limits.allowed_connection_types = vec!["STANDARD".into()],
            None,
        );
        v.push(("connection type allowed", kp, t));
        let (kp, t) = setup.user(
            |c| {
                c.nats.limits.times_location = "Asia/Tokyo".into();
                c.nats.limits.times = vec![jwt::TimeRange {
                    start: "00:00:00".into(),
                    end: "23:59:59".into(),
                }];
            },
            None,
        );
        v.push(("inside connect times (Asia/Tokyo)", kp, t));
        v
    };
    for (what, kp, token) in &cases {
        let (_raw, line) = raw_login(&s, kp, token).await;
        assert_eq!(line, "PONG", "{what}");
    }

    let refused: Vec<(&str, KeyPair, String)> = {
        let mut v = Vec::new();
        let (kp, t) = setup.user(|c| c.nats.issuer_account.clear(), Some(&other_account));
        v.push(("issued by another account", kp, t));
        let (kp, t) = setup.user(|_| {}, Some(&rogue_signing));
        v.push(("signing key not in the account", kp, t));
        let (kp, t) = setup.user(|c| c.exp = now - 10, None);
        v.push(("expired", kp, t));
        let (kp, t) = setup.user(|c| c.nbf = now + 3600, None);
        v.push(("not yet valid", kp, t));
        v.push(("revoked", revoked_kp.clone(), revoked.clone()));
        let (kp, t) = setup.user(|c| c.nats.limits.src = vec!["10.0.0.0/8".into()], None);
        v.push(("source refused", kp, t));
        let (kp, t) = setup.user(
            |c| c.nats.limits.allowed_connection_types = vec!["WEBSOCKET".into()],
            None,
        );
        v.push(("connection type refused", kp, t));
        // A window of one second, twelve hours away from now in Tokyo.
        let tokyo_now = (now + 9 * 3600).rem_euclid(86_400);
        let away = (tokyo_now + 12 * 3600) % 86_400;
        let hms = |x: i64| format!("{:02}:{:02}:{:02}", x / 3600, x / 60 % 60, x % 60);
        let (kp, t) = setup.user(
            |c| {
                c.nats.limits.times_location = "Asia/Tokyo".into();
                c.nats.limits.times = vec![jwt::TimeRange {
                    start: hms(away),
                    end: hms((away + 1) % 86_400),
                }];
            },
            None,
        );
        v.push(("outside connect times (Asia/Tokyo)", kp, t));

        // A valid JWT presented with another user's key signature.
        let (_, t) = setup.user(|_| {}, None);
        v.push(("signed with the wrong key", KeyPair::new_user(), t));
        // Tampered: the payload of one JWT with the signature of another.
        let (kp, t) = setup.user(|_| {}, None);
        let (_, t2) = setup.user(|c| c.name = "admin".into(), None);
        let parts: Vec<&str> = t.split('.').collect();
        let parts2: Vec<&str> = t2.split('.').collect();
        v.push((
            "tampered",
            kp,
            format!("{}.{}.{}", parts[0], parts2[1], parts[2]),
        ));
        v
    };
    for (what, kp, token) in &refused {
        let (mut raw, line) = raw_login(&s, kp, token).await;
        assert_eq!(line, AUTH_VIOLATION, "{what}");
        raw.expect_closed().await;
    }

    // A replayed signature: made for another connection's nonce.
    let (kp, token) = setup.user(|_| {}, None);
    let first = Raw::connect(s.client_addr()).await;
    let old_nonce = first.info_json()["nonce"].as_str().unwrap().to_string();
    let mut replay = Raw::connect(s.client_addr()).await;
    replay
        .send(
            format!(
                "CONNECT {}\r\nPING\r\n",
                connect_json(&kp, &token, &old_nonce)
            )
            .as_bytes(),
        )
        .await;
    replay.expect(AUTH_VIOLATION).await;

    // Bearer tokens: no signature needed only when the JWT says so.
    let (_, plain) = setup.user(|_| {}, None);
    let mut no_sig = Raw::connect(s.client_addr()).await;
    no_sig
        .send(format!("CONNECT {{\"jwt\":\"{plain}\"}}\r\nPING\r\n").as_bytes())
        .await;
    no_sig.expect(AUTH_VIOLATION).await;
    let (_, bearer) = setup.user(|c| c.nats.limits.bearer_token = true, None);
    let mut ok = Raw::connect(s.client_addr()).await;
    ok.send(format!("CONNECT {{\"verbose\":false,\"jwt\":\"{bearer}\"}}\r\nPING\r\n").as_bytes())
        .await;
    ok.expect("PONG").await;
}

#[tokio::test]
async fn jwt_permissions_scoped_keys_and_account_limits() {
    let mut setup = Setup::new();
    let scoped = KeyPair::new_account();
    let mut template = jwt::UserPermissionLimits::unlimited();
    template.publish.allow = vec!["scoped.>".into()];
    setup
        .account_claims
        .nats
        .signing_keys
        .push(SigningKey::Scoped(Box::new(UserScope {
            kind: "user_scope".into(),
            key: scoped.public_key(),
            role: "limited".into(),
            template,
            description: String::new(),
        })));
    setup.account_claims.nats.limits.conn = 3;
    setup.account_claims.nats.limits.payload = 1024;
    setup.resign();
    let (s, _d) = server_from(&setup.memory_config()).await;

    let (kp, token) = setup.user(
        |c| c.nats.limits.publish.deny = vec!["secret.>".into()],
        None,
    );
    let (mut raw, line) = raw_login(&s, &kp, &token).await;
    assert_eq!(line, "PONG");
    raw.send(b"PUB secret.x 1\r\nx\r\nPING\r\n").await;
    raw.expect("-ERR 'Permissions Violation for Publish to \"secret.x\"'")
        .await;
    raw.expect("PONG").await;

    // The scoped key's template applies.
    let (kp, token) = setup.user(|_| {}, Some(&scoped));
    let (mut scoped_raw, line) = raw_login(&s, &kp, &token).await;
    assert_eq!(line, "PONG");
    scoped_raw.send(b"PUB other 1\r\nx\r\nPING\r\n").await;
    scoped_raw
        .expect("-ERR 'Permissions Violation for Publish to \"other\"'")
        .await;
    // A user of a scoped key carrying permissions of its own is refused.
    let (kp, token) = setup.user(
        |c| c.nats.limits.publish.allow = vec![">".into()],
        Some(&scoped),
    );
    let (_r, line) = raw_login(&s, &kp, &token).await;
    assert_eq!(line, AUTH_VIOLATION);

    // A user payload limit below the account's holds (the account's must
    // not widen it when the connection binds).
    let (kp, token) = setup.user(|c| c.nats.limits.payload = 8, None);
    let (mut small, line) = raw_login(&s, &kp, &token).await;
    assert_eq!(line, "PONG");
    small.send(b"PUB p 9\r\n012345678\r\n").await;
    small.expect("-ERR 'Maximum Payload Violation'").await;
    small.expect_closed().await;

    // The account's conn limit (3): two are connected.
    let (kp, token) = setup.user(|_| {}, None);
    let (_third, line) = raw_login(&s, &kp, &token).await;
    assert_eq!(line, "PONG");
    let (mut fourth, line) = raw_login(&s, &kp, &token).await;
    assert_eq!(line, "-ERR 'maximum account active connections exceeded'");
    fourth.expect_closed().await;
}

/// Revocation pushed over the system account and user expiry both end a
/// connected client within a second; a lookup returns the stored JWT.
#[tokio::test]
async fn revocation_push_and_expiry_disconnect_within_a_second() {
    let mut setup = Setup::new();
    let dir = TempDir::new("resolver-dir");
    let jwt_dir = dir.path("jwt");
    std::fs::create_dir_all(&jwt_dir).unwrap();
    // The full resolver reads what is in its directory at start.
    std::fs::write(
        jwt_dir.join(format!("{}.jwt", setup.sys.public_key())),
        &setup.sys_jwt,
    )
    .unwrap();
    std::fs::write(
        jwt_dir.join(format!("{}.jwt", setup.account.public_key())),
        &setup.account_jwt,
    )
    .unwrap();
    let (s, _d) = server_from(&setup.config(&format!(
        "resolver: {{ type: full, dir: \"{}\", allow_delete: false, interval: \"1s\" }}",
        jwt_dir.display()
    )))
    .await;
    let (victim_kp, victim) = setup.user(|_| {}, None);
    let (other_kp, other) = setup.user(|_| {}, None);
    let (mut victim_raw, line) = raw_login(&s, &victim_kp, &victim).await;
    assert_eq!(line, "PONG");
    let (mut other_raw, line) = raw_login(&s, &other_kp, &other).await;
    assert_eq!(line, "PONG");

    let (sys_kp, sys_token) = setup.sys_user();
    let sys = creds_client(&s, &sys_kp, &sys_token).await;
    let lookup = sys
        .request(
            format!(
                "$SYS.REQ.ACCOUNT.{}.CLAIMS.LOOKUP",
                setup.account.public_key()
            ),
            "".into(),
        )
        .await
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&lookup.payload).unwrap(),
        setup.account_jwt
    );

    let victim_claims: Claims<UserClaims> = jwt::decode(&victim).unwrap();
    jwt::revoke(
        &mut setup.account_claims.nats,
        &victim_kp.public_key(),
        victim_claims.iat,
    );
    setup.resign();
    let pushed = Instant::now();
    let reply = sys
        .request("$SYS.REQ.CLAIMS.UPDATE", setup.account_jwt.clone().into())
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(doc["data"]["code"], 200, "{doc}");
    assert_eq!(doc["data"]["message"], "jwt updated");
    victim_raw.expect(AUTH_VIOLATION).await;
    victim_raw.expect_closed().await;
    assert!(
        pushed.elapsed() < Duration::from_secs(1),
        "{:?}",
        pushed.elapsed()
    );
    // The other user of the account stays.
    other_raw.send(b"PING\r\n").await;
    other_raw.expect("PONG").await;
    // The store kept it: the file holds the new JWT.
    let stored =
        std::fs::read_to_string(jwt_dir.join(format!("{}.jwt", setup.account.public_key())))
            .unwrap();
    assert_eq!(stored, setup.account_jwt);
    // An older JWT cannot undo the revocation.
    let mut stale = setup.account_claims.clone();
    stale.nats.revocations.clear();
    let old = jwt::encode_at(&mut stale, &setup.operator, 1_000).unwrap();
    let reply = sys
        .request("$SYS.REQ.CLAIMS.UPDATE", old.into())
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(doc["error"]["code"], 500, "{doc}");
    // A JWT not signed by the operator is refused.
    let mut forged = setup.account_claims.clone();
    forged.nats.revocations.clear();
    let forged = jwt::encode(&mut forged, &KeyPair::new_operator()).unwrap();
    let reply = sys
        .request("$SYS.REQ.CLAIMS.UPDATE", forged.into())
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(doc["error"]["code"], 500, "{doc}");

    // Expiry: a user whose JWT expires in two seconds is cut at exp.
    let exp = jwt::now_unix() + 2;
    let (kp, token) = setup.user(|c| c.exp = exp, None);
    let (mut short, line) = raw_login(&s, &kp, &token).await;
    assert_eq!(line, "PONG");
    short.expect("-ERR 'User Authentication Expired'").await;
    let late = jwt::now_unix() - exp;
    assert!(late <= 1, "disconnected {late}s after exp");
    short.expect_closed().await;
}

#[tokio::test]
async fn operator_mode_configuration_rules() {
    let setup = Setup::new();
    let refused = |text: String, want: &str| {
        let dir = TempDir::new("op-bad");
        let path = dir.path("bad.conf");
        std::fs::write(&path, &text).unwrap();
        let e = rnats::Options::from_file(&path).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    };
    refused(
        format!("operator: {}\n", setup.operator_jwt),
        "operators require an account resolver",
    );
    refused(
        format!(
            "{}authorization {{ users: [{{user: a, password: b}}] }}\n",
            setup.memory_config()
        ),
        "operators do not allow users",
    );
    refused(
        format!("{}accounts {{ A: {{}} }}\n", setup.memory_config()),
        "operators do not allow Accounts",
    );
    let mut rogue: Claims<AccountClaims> = Claims::new(&setup.account.public_key(), "X");
    let rogue = jwt::encode(&mut rogue, &KeyPair::new_operator()).unwrap();
    refused(
        setup.config(&format!(
            "resolver: MEMORY\nresolver_preload: {{ {}: {rogue} }}",
            setup.account.public_key()
        )),
        "not signed by a trusted operator",
    );
    refused(
        "operator: eyJhbGciOiJlZDI1NTE5LW5rZXkiLCJ0eXAiOiJKV1QifQ.e30.AAAA\nresolver: MEMORY\n"
            .into(),
        "error parsing operator JWT",
    );
}

/// Imports and exports declared in account JWTs: a stream and a service
/// cross from the exporter; an import pushed later applies at once; an
/// export that needs an activation token is not usable without one.
#[tokio::test]
async fn jwt_imports_and_exports() {
    let mut setup = Setup::new();
    let exporter = KeyPair::new_account();
    let mut exp_claims: Claims<AccountClaims> = Claims::new(&exporter.public_key(), "EXP");
    for (subject, kind, token_req) in [
        ("ev.>", "stream", false),
        ("svc", "service", false),
        ("private.>", "stream", true),
    ] {
        exp_claims.nats.exports.push(jwt::Export {
            subject: subject.into(),
            kind: kind.into(),
            token_req,
            ..Default::default()
        });
    }
    let exp_jwt = jwt::encode(&mut exp_claims, &setup.operator).unwrap();
    let import = |subject: &str, kind: &str, local: &str| jwt::Import {
        subject: subject.into(),
        account: exporter.public_key(),
        kind: kind.into(),
        local_subject: local.into(),
        ..Default::default()
    };
    setup
        .account_claims
        .nats
        .imports
        .push(import("ev.>", "stream", ""));
    setup
        .account_claims
        .nats
        .imports
        .push(import("private.>", "stream", ""));
    setup.resign();
    let dir = TempDir::new("resolver-imports");
    let jwt_dir = dir.path("jwt");
    std::fs::create_dir_all(&jwt_dir).unwrap();
    for (k, t) in [
        (setup.sys.public_key(), &setup.sys_jwt),
        (setup.account.public_key(), &setup.account_jwt),
        (exporter.public_key(), &exp_jwt),
    ] {
        std::fs::write(jwt_dir.join(format!("{k}.jwt")), t).unwrap();
    }
    let (s, _d) = server_from(&setup.config(&format!(
        "resolver: {{ type: full, dir: \"{}\" }}",
        jwt_dir.display()
    )))
    .await;
    let exp_user = {
        let kp = KeyPair::new_user();
        let mut c: Claims<UserClaims> = Claims::new(&kp.public_key(), "e");
        let t = jwt::encode(&mut c, &exporter).unwrap();
        creds_client(&s, &kp, &t).await
    };
    let (kp, t) = setup.user(|_| {}, None);
    let imp_user = creds_client(&s, &kp, &t).await;
    let mut events = imp_user.subscribe("ev.>").await.unwrap();
    let mut private = imp_user.subscribe("private.>").await.unwrap();
    barrier(&imp_user).await;
    exp_user
        .publish("private.x", "secret".into())
        .await
        .unwrap();
    exp_user.publish("ev.1", "one".into()).await.unwrap();
    let m = next_msg(&mut events).await;
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("ev.1", &b"one"[..]));
    // The token-required export did not cross: a marker published in the
    // importer arrives first.
    imp_user
        .publish("private.marker", "m".into())
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut private).await.subject.as_str(),
        "private.marker"
    );

    // The service import is not there yet...
    let e = imp_user.request("svc", "?".into()).await.unwrap_err();
    assert_eq!(e.kind(), async_nats::RequestErrorKind::NoResponders);
    // ...and is once the account JWT with it is pushed.
    setup
        .account_claims
        .nats
        .imports
        .push(import("svc", "service", ""));
    setup.resign();
    let (sys_kp, sys_token) = setup.sys_user();
    let sys = creds_client(&s, &sys_kp, &sys_token).await;
    let reply = sys
        .request("$SYS.REQ.CLAIMS.UPDATE", setup.account_jwt.clone().into())
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(doc["data"]["code"], 200, "{doc}");
    let mut reqs = exp_user.subscribe("svc").await.unwrap();
    barrier(&exp_user).await;
    let responder = tokio::spawn(async move {
        let m = next_msg(&mut reqs).await;
        exp_user
            .publish(m.reply.unwrap(), "served".into())
            .await
            .unwrap();
        exp_user.flush().await.unwrap();
    });
    let deadline = Instant::now() + TIMEOUT;
    let answer = loop {
        match imp_user.request("svc", "?".into()).await {
            Ok(m) => break m,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("service import never applied: {e}"),
        }
    };
    assert_eq!(&answer.payload[..], b"served");
    responder.await.unwrap();
}

/// nats-py logs in with a creds file (`user_credentials`), as it would to
/// nats-server; skipped without nats-py and its `nkeys` package.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_logs_in_with_a_creds_file() {
    let available = std::process::Command::new("python3")
        .args(["-c", "import nats, nkeys"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("SKIPPED: nats-py or nkeys is not installed (pip install nats-py nkeys)");
        return;
    }
    let setup = Setup::new();
    let (s, dir) = server_from(&setup.memory_config()).await;
    let (kp, token) = setup.user(|_| {}, None);
    let creds = dir.path("user.creds");
    std::fs::write(
        &creds,
        jwt::format_creds(&token, &kp.seed().unwrap()).unwrap(),
    )
    .unwrap();
    let script = r#"
import asyncio, sys
import nats

async def main(url, creds):
    nc = await nats.connect(url, user_credentials=creds, max_reconnect_attempts=0)
    sub = await nc.subscribe("py.creds")
    await nc.publish("py.creds", b"from python")
    msg = await sub.next_msg(timeout=10)
    print(msg.data.decode(), flush=True)
    await nc.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;
    let out = tokio::time::timeout(
        TIMEOUT,
        tokio::process::Command::new("python3")
            .args([
                "-c",
                script,
                &format!("nats://{}", s.client_addr()),
                creds.to_str().unwrap(),
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("nats-py script finishes")
    .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from python");
}

/// A full resolver picks up an account JWT dropped into its directory
/// (within its `interval`): the account's users can log in from then on.
#[tokio::test]
async fn a_jwt_dropped_into_the_resolver_dir_is_picked_up() {
    let setup = Setup::new();
    let dir = TempDir::new("resolver-drop");
    let jwt_dir = dir.path("jwt");
    std::fs::create_dir_all(&jwt_dir).unwrap();
    std::fs::write(
        jwt_dir.join(format!("{}.jwt", setup.sys.public_key())),
        &setup.sys_jwt,
    )
    .unwrap();
    // Polling logins fail until the file is read: never ban the source.
    let (s, _d) = server_from(&format!(
        "{}auth_limits {{ max_failures: 0 }}\n",
        setup.config(&format!(
            "resolver: {{ type: full, dir: \"{}\", interval: \"1s\" }}",
            jwt_dir.display()
        ))
    ))
    .await;
    let (kp, token) = setup.user(|_| {}, None);
    let (_r, line) = raw_login(&s, &kp, &token).await;
    assert_eq!(line, AUTH_VIOLATION, "account not known yet");
    std::fs::write(
        jwt_dir.join(format!("{}.jwt", setup.account.public_key())),
        &setup.account_jwt,
    )
    .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_r, line) = raw_login(&s, &kp, &token).await;
        if line == "PONG" {
            break;
        }
        assert!(Instant::now() < deadline, "dropped JWT never picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Subject mappings in an account JWT apply to its users; a mapping form
/// rnats lacks (a cluster-scoped destination) refuses the account's logins.
#[tokio::test]
async fn jwt_account_mappings() {
    let mut setup = Setup::new();
    setup.account_claims.nats.mappings.insert(
        "in.*".into(),
        vec![jwt::WeightedMapping {
            subject: "out.$1".into(),
            weight: 100,
            cluster: String::new(),
        }],
    );
    setup.resign();
    let (s, _d) = server_from(&setup.memory_config()).await;
    let (kp, token) = setup.user(|_| {}, None);
    let c = creds_client(&s, &kp, &token).await;
    let mut out = c.subscribe("out.>").await.unwrap();
    barrier(&c).await;
    c.publish("in.x", "mapped".into()).await.unwrap();
    let m = next_msg(&mut out).await;
    assert_eq!(m.subject.as_str(), "out.x");

    let mut other = Setup::new();
    other.account_claims.nats.mappings.insert(
        "a".into(),
        vec![jwt::WeightedMapping {
            subject: "b".into(),
            weight: 100,
            cluster: "east".into(),
        }],
    );
    other.resign();
    let (s2, _d2) = server_from(&other.memory_config()).await;
    let (kp, token) = other.user(|_| {}, None);
    let (_r, line) = raw_login(&s2, &kp, &token).await;
    assert_eq!(line, AUTH_VIOLATION);
}

/// Activation tokens: a token-required export crosses only with a valid
/// token for the importing account, and stops once the exporter revokes
/// it (the importer is re-applied when the exporter's JWT is pushed).
#[tokio::test]
async fn activation_tokens_and_their_revocation() {
    let mut setup = Setup::new();
    let exporter = KeyPair::new_account();
    let mut exp_claims: Claims<AccountClaims> = Claims::new(&exporter.public_key(), "EXP");
    exp_claims.nats.exports.push(jwt::Export {
        subject: "private.>".into(),
        kind: "stream".into(),
        token_req: true,
        ..Default::default()
    });
    let exp_jwt = jwt::encode(&mut exp_claims, &setup.operator).unwrap();
    let activation = |for_account: &str| {
        let mut a: Claims<jwt::ActivationClaims> = Claims::new(for_account, "act");
        a.nats.subject = "private.>".into();
        a.nats.kind = "stream".into();
        jwt::encode(&mut a, &exporter).unwrap()
    };
    // The importer's import carries a token made for another account.
    setup.account_claims.nats.imports.push(jwt::Import {
        subject: "private.>".into(),
        account: exporter.public_key(),
        kind: "stream".into(),
        token: activation(&KeyPair::new_account().public_key()),
        ..Default::default()
    });
    setup.resign();
    let (s, _d) = server_from(&format!(
        "{}\n",
        setup.config(&format!(
            "resolver: MEMORY\nresolver_preload: {{\n  {}: {}\n  {}: {}\n  {}: {}\n}}",
            setup.sys.public_key(),
            setup.sys_jwt,
            setup.account.public_key(),
            setup.account_jwt,
            exporter.public_key(),
            exp_jwt
        ))
    ))
    .await;
    let exp_user = {
        let kp = KeyPair::new_user();
        let mut c: Claims<UserClaims> = Claims::new(&kp.public_key(), "e");
        let t = jwt::encode(&mut c, &exporter).unwrap();
        creds_client(&s, &kp, &t).await
    };
    let (kp, t) = setup.user(|_| {}, None);
    let imp_user = creds_client(&s, &kp, &t).await;
    let mut private = imp_user.subscribe("private.>").await.unwrap();
    barrier(&imp_user).await;
    exp_user.publish("private.a", "no".into()).await.unwrap();
    barrier(&exp_user).await;
    imp_user
        .publish("private.marker", "m".into())
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut private).await.subject.as_str(),
        "private.marker",
        "a token for another account opens nothing"
    );

    // The right token, pushed: the stream crosses.
    setup.account_claims.nats.imports[0].token = activation(&setup.account.public_key());
    setup.resign();
    let (sys_kp, sys_token) = setup.sys_user();
    let sys = creds_client(&s, &sys_kp, &sys_token).await;
    let push = |token: String| {
        let sys = sys.clone();
        async move {
            let r = sys
                .request("$SYS.REQ.CLAIMS.UPDATE", token.into())
                .await
                .unwrap();
            let doc: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            assert_eq!(doc["data"]["code"], 200, "{doc}");
        }
    };
    push(setup.account_jwt.clone()).await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        exp_user.publish("private.b", "yes".into()).await.unwrap();
        barrier(&exp_user).await;
        imp_user
            .publish("private.marker", "m".into())
            .await
            .unwrap();
        let m = next_msg(&mut private).await;
        if m.subject.as_str() == "private.b" {
            break;
        }
        assert!(Instant::now() < deadline, "valid activation never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The exporter revokes the importer's activation: the stream stops.
    exp_claims.nats.exports[0]
        .revocations
        .insert(setup.account.public_key(), jwt::now_unix() + 1);
    let iat = exp_claims.iat + 1;
    let exp_jwt = jwt::encode_at(&mut exp_claims, &setup.operator, iat).unwrap();
    push(exp_jwt).await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        // Drain, then check one round: the marker must come first.
        while let Ok(Some(_)) = tokio::time::timeout(
            Duration::from_millis(50),
            futures::StreamExt::next(&mut private),
        )
        .await
        {}
        exp_user
            .publish("private.c", "revoked?".into())
            .await
            .unwrap();
        barrier(&exp_user).await;
        imp_user
            .publish("private.marker", "m".into())
            .await
            .unwrap();
        if next_msg(&mut private).await.subject.as_str() == "private.marker" {
            break;
        }
        assert!(Instant::now() < deadline, "revoked activation still used");
    }
}
