//! `rnats nkey` and `rnats jwt` as a user runs them, and the JWTs they
//! make checked by the reference: nats-server in operator mode (memory and
//! full resolvers) with async-nats clients logging in with the creds files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use rnats::jwt::{self, AccountClaims, Claims, OperatorClaims, UserClaims};

const RNATS_TOOL: &str = env!("CARGO_BIN_EXE_rnats");

/// `rnats ARGS` run to completion (bounded): (success, stdout, stderr).
fn rnats(args: &[&str]) -> (bool, String, String) {
    let child = Command::new(RNATS_TOOL)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rnats");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(TIMEOUT) else {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        panic!("rnats {args:?} did not exit");
    };
    let out = out.expect("rnats output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `rnats ARGS` that must succeed: its stdout.
fn ok(args: &[&str]) -> String {
    let (success, out, err) = rnats(args);
    assert!(success, "rnats {args:?} failed: {err}{out}");
    out
}

/// `rnats jwt --store STORE ARGS` that must succeed.
fn jwt_ok(store: &Path, args: &[&str]) -> String {
    let mut all = vec!["jwt", "--store", store.to_str().unwrap()];
    all.extend_from_slice(args);
    ok(&all)
}

fn read_creds(path: &Path) -> Claims<UserClaims> {
    let text = std::fs::read_to_string(path).expect("creds");
    let (token, _) = jwt::parse_creds(&text).expect("parse creds");
    jwt::decode(&token).expect("user JWT")
}

fn read_account(store: &Path, name: &str) -> Claims<AccountClaims> {
    let p = store.join("accounts").join(name).join("account.jwt");
    jwt::decode(std::fs::read_to_string(p).expect("account.jwt").trim()).expect("account JWT")
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn nkey_tool_generates_signs_and_verifies() {
    let dir = TempDir::new("nkey-tool");
    for (kind, p) in [
        ("user", "SU"),
        ("account", "SA"),
        ("operator", "SO"),
        ("curve", "SX"),
    ] {
        let out = ok(&["nkey", "gen", kind, "--pub"]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with(p), "{out}");
        // `pub` gives the same public key, from the seed or a file.
        assert_eq!(ok(&["nkey", "pub", lines[0]]).trim(), lines[1]);
        let f = dir.path(&format!("{kind}.nk"));
        std::fs::write(&f, format!("{}\n", lines[0])).unwrap();
        assert_eq!(ok(&["nkey", "pub", f.to_str().unwrap()]).trim(), lines[1]);
    }
    let seed_file = dir.path("user.nk");
    let public = ok(&["nkey", "pub", seed_file.to_str().unwrap()]);
    let data = dir.path("data");
    std::fs::write(&data, b"some bytes to sign").unwrap();
    let sig = ok(&[
        "nkey",
        "sign",
        "--key",
        seed_file.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    let sig = sig.trim();
    let verify = |key: &str, sig: &str| {
        rnats(&[
            "nkey",
            "verify",
            "--key",
            key,
            "--sig",
            sig,
            data.to_str().unwrap(),
        ])
        .0
    };
    assert!(verify(public.trim(), sig));
    assert!(verify(seed_file.to_str().unwrap(), sig));
    // Another key, or other data, does not verify.
    let other = ok(&["nkey", "gen", "user", "--pub"]);
    assert!(!verify(other.lines().nth(1).unwrap(), sig));
    std::fs::write(&data, b"other bytes").unwrap();
    assert!(!verify(public.trim(), sig));
    assert!(!rnats(&["nkey", "gen", "bogus"]).0);
}

#[test]
fn jwt_tool_builds_a_consistent_store() {
    let dir = TempDir::new("jwt-store");
    let store = dir.path("store");
    let out = jwt_ok(&store, &["init", "--operator", "ACME", "--signing-key"]);
    assert!(out.contains("operator ACME O"), "{out}");
    assert!(
        !rnats(&[
            "jwt",
            "--store",
            store.to_str().unwrap(),
            "init",
            "--operator",
            "X"
        ])
        .0
    );

    let op: Claims<OperatorClaims> = jwt::decode(
        std::fs::read_to_string(store.join("operator.jwt"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(op.name, "ACME");
    assert!(op.is_self_signed());
    assert_eq!(op.nats.signing_keys.len(), 1);
    let sys = read_account(&store, "SYS");
    assert_eq!(op.nats.system_account, sys.sub);
    // Accounts are signed by the operator's signing key.
    assert_eq!(sys.iss, op.nats.signing_keys[0]);
    assert!(op.nats.did_sign(&op.sub, &sys.iss));
    let sys_user = read_creds(&store.join("accounts/SYS/users/sys.creds"));
    assert_eq!(sys_user.iss, sys.sub);
    for secret in [
        "operator.nk",
        "operator-sk.nk",
        "accounts/SYS/account.nk",
        "accounts/SYS/users/sys.creds",
    ] {
        assert_eq!(mode(&store.join(secret)), 0o600, "{secret}");
    }

    jwt_ok(
        &store,
        &[
            "add-account",
            "SRC",
            "--export-stream",
            "ev.>",
            "--export-service",
            "svc.time",
        ],
    );
    jwt_ok(
        &store,
        &[
            "add-account",
            "APP",
            "--signing-key",
            "--max-conn",
            "3",
            "--max-subs",
            "100",
            "--max-payload",
            "64KB",
            "--import-stream",
            "SRC:ev.>:src",
            "--import-service",
            "SRC:svc.time",
        ],
    );
    let src = read_account(&store, "SRC");
    assert_eq!(src.nats.exports.len(), 2);
    assert_eq!(src.nats.exports[0].subject, "ev.>");
    assert_eq!(src.nats.exports[0].kind, "stream");
    let app = read_account(&store, "APP");
    assert_eq!(app.nats.limits.conn, 3);
    assert_eq!(app.nats.limits.subs, 100);
    assert_eq!(app.nats.limits.payload, 64 * 1024);
    assert_eq!(app.nats.limits.data, jwt::NO_LIMIT);
    assert_eq!(app.nats.imports.len(), 2);
    let stream = app
        .nats
        .imports
        .iter()
        .find(|i| i.kind == "stream")
        .unwrap();
    assert_eq!(
        (stream.account.as_str(), stream.local_subject.as_str()),
        (src.sub.as_str(), "src.ev.>")
    );
    assert_eq!(app.nats.signing_keys.len(), 1);

    let creds = jwt_ok(
        &store,
        &[
            "add-user",
            "APP",
            "worker",
            "--allow-pub",
            "jobs.>",
            "--deny-pub",
            "jobs.secret",
            "--allow-sub",
            "_INBOX.>",
            "--deny-sub",
            "admin.>",
            "--allow-resp",
            "2:5s",
            "--expiry",
            "1h",
            "--src",
            "127.0.0.0/8",
            "--conn-type",
            "standard",
            "--conn-type",
            "WEBSOCKET",
            "--bearer",
            "--signing-key",
        ],
    );
    let creds = PathBuf::from(creds.trim());
    assert_eq!(creds, store.join("accounts/APP/users/worker.creds"));
    assert_eq!(mode(&creds), 0o600);
    let u = read_creds(&creds);
    let l = &u.nats.limits;
    assert_eq!(l.publish.allow, ["jobs.>"]);
    assert_eq!(l.publish.deny, ["jobs.secret"]);
    assert_eq!(l.subscribe.allow, ["_INBOX.>"]);
    assert_eq!(l.subscribe.deny, ["admin.>"]);
    assert_eq!(
        l.resp,
        Some(jwt::ResponsePermission {
            max: 2,
            ttl: 5_000_000_000
        })
    );
    assert_eq!(l.src, ["127.0.0.0/8"]);
    assert_eq!(l.allowed_connection_types, ["STANDARD", "WEBSOCKET"]);
    assert!(l.bearer_token);
    assert!((u.exp - jwt::now_unix() - 3600).abs() <= 2, "exp {}", u.exp);
    // Signed by the account's signing key on behalf of the account.
    assert_eq!(u.nats.issuer_account, app.sub);
    assert!(jwt::is_signing_key(&app.nats, &u.iss).is_some());
    // Bad input is refused.
    for bad in [
        vec!["add-user", "APP", "x", "--src", "10.0.0.1"],
        vec!["add-user", "APP", "y", "--conn-type", "CARRIER_PIGEON"],
        vec!["add-user", "SRC", "z", "--signing-key"],
        vec!["add-user", "NOPE", "z"],
        vec!["add-user", "APP", "../evil"],
        vec!["add-user", "APP", "worker"],
    ] {
        let mut args = vec!["jwt", "--store", store.to_str().unwrap()];
        args.extend(bad.iter());
        assert!(!rnats(&args).0, "{bad:?} should fail");
    }

    // describe prints the verified claims.
    let described: serde_json::Value =
        serde_json::from_str(&ok(&["jwt", "describe", creds.to_str().unwrap()])).unwrap();
    assert_eq!(described["sub"], u.sub.as_str());
    assert_eq!(described["nats"]["type"], "user");

    // Revocation re-signs the account with the user's key in it.
    let out = jwt_ok(&store, &["revoke-user", "APP", "worker"]);
    assert!(out.contains(&u.sub), "{out}");
    let app2 = read_account(&store, "APP");
    assert!(jwt::is_revoked(&app2.nats, &u.sub, u.iat));
    assert_eq!(app2.nats.imports, app.nats.imports);
    assert_eq!(app2.nats.limits, app.nats.limits);

    // Memory resolver: every account preloaded.
    let conf = jwt_ok(&store, &["resolver-config", "--type", "memory"]);
    assert!(
        conf.contains(&format!("system_account: {}", sys.sub)),
        "{conf}"
    );
    assert!(conf.contains("resolver: MEMORY"), "{conf}");
    for name in ["SYS", "SRC", "APP"] {
        assert!(
            conf.contains(&read_account(&store, name).sub),
            "{name}: {conf}"
        );
    }
    // Full resolver: accounts written as nats-server's directory store
    // names them, only the system account preloaded.
    let jwt_dir = dir.path("jwt");
    let conf = jwt_ok(
        &store,
        &[
            "resolver-config",
            "--type",
            "full",
            "--dir",
            jwt_dir.to_str().unwrap(),
        ],
    );
    assert!(conf.contains("type: full"), "{conf}");
    for name in ["SYS", "SRC", "APP"] {
        let a = read_account(&store, name);
        let stored = std::fs::read_to_string(jwt_dir.join(format!("{}.jwt", a.sub))).unwrap();
        assert_eq!(jwt::decode::<AccountClaims>(&stored).unwrap(), a);
    }
    assert!(!conf.contains(&app.sub), "{conf}");
}

/// nats-server started in operator mode with `config` (a resolver-config
/// snippet), on a random loopback port: (process, port). None (after
/// saying so) when nats-server is not installed.
async fn nats_server(dir: &TempDir, config: &str) -> Option<(Proc, u16)> {
    let Some(bin) = on_path("nats-server") else {
        eprintln!("nats-server not on PATH: skipping the operator mode test against it");
        return None;
    };
    let conf = dir.path("server.conf");
    std::fs::write(&conf, config).expect("write config");
    let mut p = Proc::spawn(
        bin.to_str().unwrap(),
        &["-a", "127.0.0.1", "-p", "-1", "-c", conf.to_str().unwrap()],
        &dir.path("nats-server.log"),
    );
    let port = p.client_port().await;
    Some((p, port))
}

type Events = tokio::sync::mpsc::UnboundedReceiver<async_nats::Event>;

/// Log in with a creds file: the client and its events, or the error.
async fn login(port: u16, creds: &Path) -> Result<(async_nats::Client, Events), String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = async_nats::ConnectOptions::with_credentials_file(creds)
        .await
        .map_err(|e| format!("creds: {e}"))?
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e);
            }
        });
    match tokio::time::timeout(TIMEOUT, opts.connect(format!("nats://127.0.0.1:{port}"))).await {
        Ok(Ok(c)) => Ok((c, rx)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out".into()),
    }
}

/// The next server error event (permissions violations arrive this way).
async fn server_error(events: &mut Events) -> String {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(async_nats::Event::ServerError(e))) => return e.to_string(),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => panic!("no server error event"),
        }
    }
}

async fn pub_sub_works(client: &async_nats::Client, subject: &str) {
    let mut sub = client
        .subscribe(subject.to_string())
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    client
        .publish(subject.to_string(), "hello".into())
        .await
        .expect("publish");
    let msg = tokio::time::timeout(TIMEOUT, sub.next())
        .await
        .expect("message in time")
        .expect("subscription open");
    assert_eq!(&msg.payload[..], b"hello");
}

/// Keep trying to log in until refused (the server applies some changes
/// asynchronously); the refusal message.
async fn refused(port: u16, creds: &Path) -> String {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match login(port, creds).await {
            Err(e) => return e,
            Ok((c, _)) => {
                drop(c);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} still logs in",
                    creds.display()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn nats_server_accepts_our_jwts_with_a_memory_resolver() {
    if on_path("nats-server").is_none() {
        eprintln!("nats-server not on PATH: skipping the operator mode test against it");
        return;
    }
    let dir = TempDir::new("jwt-mem");
    let store = dir.path("store");
    jwt_ok(&store, &["init", "--operator", "OP"]);
    jwt_ok(&store, &["add-account", "OPEN"]);
    jwt_ok(
        &store,
        &["add-account", "ONE", "--max-conn", "1", "--signing-key"],
    );
    let alice = PathBuf::from(jwt_ok(&store, &["add-user", "OPEN", "alice"]).trim());
    let bob = PathBuf::from(
        jwt_ok(
            &store,
            &["add-user", "OPEN", "bob", "--deny-pub", "secret.>"],
        )
        .trim(),
    );
    let first =
        PathBuf::from(jwt_ok(&store, &["add-user", "ONE", "first", "--signing-key"]).trim());
    let second = PathBuf::from(jwt_ok(&store, &["add-user", "ONE", "second"]).trim());
    let config = jwt_ok(&store, &["resolver-config", "--type", "memory"]);
    let Some((_server, port)) = nats_server(&dir, &config).await else {
        return;
    };

    // A user logs in and pub/sub works.
    let (a, _) = login(port, &alice).await.expect("alice logs in");
    pub_sub_works(&a, "greet.alice").await;

    // Denied publish: a permissions violation, and nothing delivered.
    let (b, mut events) = login(port, &bob).await.expect("bob logs in");
    let mut sub = a.subscribe("secret.plans").await.expect("subscribe");
    a.flush().await.expect("flush");
    b.publish("secret.plans", "leak".into())
        .await
        .expect("publish");
    b.flush().await.expect("flush");
    let err = server_error(&mut events).await;
    assert!(
        err.to_lowercase().contains("permissions violation"),
        "{err}"
    );
    pub_sub_works(&b, "public.bob").await;
    barrier(&a).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), sub.next())
            .await
            .is_err(),
        "the denied message was delivered"
    );

    // Account max-conn 1 (user signed by the account signing key, user
    // signed by the account key): the second connection is refused.
    let (f, _) = login(port, &first).await.expect("first connection");
    pub_sub_works(&f, "one.x").await;
    let Err(err) = login(port, &second).await else {
        panic!("a second connection to a max-conn 1 account was accepted");
    };
    assert!(
        err.to_lowercase()
            .contains("maximum account active connections"),
        "{err}"
    );
    drop(f);

    // A user that expires: logs in while valid, refused once expired.
    let late =
        PathBuf::from(jwt_ok(&store, &["add-user", "OPEN", "late", "--expiry", "2s"]).trim());
    let exp = read_creds(&late).exp;
    let (l, _) = login(port, &late).await.expect("not yet expired");
    drop(l);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while jwt::now_unix() <= exp {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = refused(port, &late).await;
    assert!(err.to_lowercase().contains("authorization"), "{err}");
}

#[tokio::test]
async fn nats_server_full_resolver_takes_pushed_accounts_and_revocations() {
    if on_path("nats-server").is_none() {
        eprintln!("nats-server not on PATH: skipping the operator mode test against it");
        return;
    }
    let dir = TempDir::new("jwt-full");
    let store = dir.path("store");
    jwt_ok(&store, &["init", "--operator", "OP", "--signing-key"]);
    jwt_ok(&store, &["add-account", "APP"]);
    let carol = PathBuf::from(jwt_ok(&store, &["add-user", "APP", "carol"]).trim());
    let dave = PathBuf::from(jwt_ok(&store, &["add-user", "APP", "dave"]).trim());
    let jwt_dir = dir.path("jwt");
    let config = jwt_ok(
        &store,
        &[
            "resolver-config",
            "--type",
            "full",
            "--dir",
            jwt_dir.to_str().unwrap(),
        ],
    );
    let Some((_server, port)) = nats_server(&dir, &config).await else {
        return;
    };
    let url = format!("nats://127.0.0.1:{port}");
    let (c, _) = login(port, &carol).await.expect("carol logs in");
    pub_sub_works(&c, "app.carol").await;
    drop(c);

    // Revoke carol and push the re-signed account: carol is refused, dave
    // (same account) still logs in.
    jwt_ok(&store, &["revoke-user", "APP", "carol"]);
    let reply = ok(&[
        "-s",
        &url,
        "jwt",
        "--store",
        store.to_str().unwrap(),
        "push",
        "APP",
    ]);
    let v: serde_json::Value = serde_json::from_str(reply.trim()).expect("JSON reply");
    assert_eq!(v["data"]["code"], 200, "{reply}");
    let err = refused(port, &carol).await;
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    let (d, _) = login(port, &dave).await.expect("dave still logs in");
    pub_sub_works(&d, "app.dave").await;
    // The resolver stored the new account JWT under its file name.
    let app = read_account(&store, "APP");
    let stored = std::fs::read_to_string(jwt_dir.join(format!("{}.jwt", app.sub))).unwrap();
    assert_eq!(
        stored.trim(),
        std::fs::read_to_string(store.join("accounts/APP/account.jwt"))
            .unwrap()
            .trim()
    );

    // An account created after the server started, pushed, is usable.
    jwt_ok(&store, &["add-account", "LATE"]);
    let erin = PathBuf::from(jwt_ok(&store, &["add-user", "LATE", "erin"]).trim());
    ok(&[
        "-s",
        &url,
        "jwt",
        "--store",
        store.to_str().unwrap(),
        "push",
        "LATE",
    ]);
    let (e, _) = login(port, &erin)
        .await
        .expect("erin logs in to the pushed account");
    pub_sub_works(&e, "late.erin").await;
}
