//! NKey logins and accounts with real clients: nonce signing (and its
//! negative twins), isolation, stream and service imports across
//! accounts, `no_auth_user` and per-account limits.

mod common;

use common::*;
use futures::StreamExt;

const AUTH_VIOLATION: &str = "-ERR 'Authorization Violation'";

/// A server from configuration text (on a random loopback port).
async fn server_from(text: &str) -> (rnats::Server, TempDir) {
    start_from_config("accounts", text).await
}

/// The error a configuration is refused with (parse or validate).
fn refusal(text: &str) -> String {
    let dir = TempDir::new("accounts-bad");
    let path = dir.path("bad.conf");
    std::fs::write(&path, text).unwrap();
    match rnats::Options::from_file(&path) {
        Ok(_) => panic!("configuration accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

async fn connect_user(s: &rnats::Server, user: &str, pass: &str) -> async_nats::Client {
    nats_with(
        s.client_addr(),
        async_nats::ConnectOptions::with_user_and_password(user.into(), pass.into()),
    )
    .await
}

/// The nonce of a raw connection's INFO, signed by `kp`, as CONNECT JSON.
fn signed_connect(kp: &nkeys::KeyPair, nonce: &str) -> String {
    let sig = kp.sign(nonce.as_bytes()).unwrap();
    let sig = data_encoding::BASE64URL_NOPAD.encode(&sig);
    format!(
        r#"{{"verbose":false,"pedantic":false,"nkey":"{}","sig":"{sig}"}}"#,
        kp.public_key()
    )
}

#[tokio::test]
async fn nkey_users_sign_the_nonce() {
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let (s, _d) = server_from(&format!(
        "authorization {{ users: [ {{nkey: {}}} ] }}",
        user.public_key()
    ))
    .await;

    // INFO carries a fresh nonce per connection and the server id is a
    // server NKey.
    let a = Raw::connect(s.client_addr()).await;
    let b = Raw::connect(s.client_addr()).await;
    let (ia, ib) = (a.info_json(), b.info_json());
    let nonce = ia["nonce"].as_str().expect("nonce in INFO").to_string();
    assert_ne!(Some(nonce.as_str()), ib["nonce"].as_str());
    let id = ia["server_id"].as_str().unwrap();
    assert!(id.starts_with('N') && nkeys::KeyPair::from_public_key(id).is_ok());

    // A real client logs in with its seed.
    let c = nats_with(
        s.client_addr(),
        async_nats::ConnectOptions::with_nkey(user.seed().unwrap()),
    )
    .await;
    let mut sub = c.subscribe("nk").await.unwrap();
    c.publish("nk", "hi".into()).await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"hi");

    // Signed by the right key: accepted on the raw wire too.
    let mut ok = Raw::connect(s.client_addr()).await;
    let n = ok.info_json()["nonce"].as_str().unwrap().to_string();
    ok.send(format!("CONNECT {}\r\nPING\r\n", signed_connect(&user, &n)).as_bytes())
        .await;
    ok.expect("PONG").await;

    // Replay: a signature made for another connection's nonce.
    let mut replay = Raw::connect(s.client_addr()).await;
    replay
        .send(format!("CONNECT {}\r\nPING\r\n", signed_connect(&user, &nonce)).as_bytes())
        .await;
    replay.expect(AUTH_VIOLATION).await;

    // A key that is not configured, signing correctly.
    let mut wrong = Raw::connect(s.client_addr()).await;
    let n = wrong.info_json()["nonce"].as_str().unwrap().to_string();
    wrong
        .send(format!("CONNECT {}\r\nPING\r\n", signed_connect(&stranger, &n)).as_bytes())
        .await;
    wrong.expect(AUTH_VIOLATION).await;

    // The right key, signed by another one.
    let mut forged = Raw::connect(s.client_addr()).await;
    let n = forged.info_json()["nonce"].as_str().unwrap().to_string();
    let sig = data_encoding::BASE64URL_NOPAD.encode(&stranger.sign(n.as_bytes()).unwrap());
    forged
        .send(
            format!(
                "CONNECT {{\"nkey\":\"{}\",\"sig\":\"{sig}\"}}\r\nPING\r\n",
                user.public_key()
            )
            .as_bytes(),
        )
        .await;
    forged.expect(AUTH_VIOLATION).await;

    // No signature, and a password offered for the nkey user.
    let mut unsigned = Raw::connect(s.client_addr()).await;
    unsigned
        .send(format!("CONNECT {{\"nkey\":\"{}\"}}\r\nPING\r\n", user.public_key()).as_bytes())
        .await;
    unsigned.expect(AUTH_VIOLATION).await;
    let mut pass = Raw::connect(s.client_addr()).await;
    pass.send(
        format!(
            "CONNECT {{\"user\":\"{}\",\"pass\":\"x\"}}\r\nPING\r\n",
            user.public_key()
        )
        .as_bytes(),
    )
    .await;
    pass.expect(AUTH_VIOLATION).await;
}

#[tokio::test]
async fn no_nonce_without_nkey_users() {
    let (s, _d) = server_from("authorization { user: a, password: b }").await;
    let raw = Raw::connect(s.client_addr()).await;
    assert!(raw.info_json().get("nonce").is_none());
}

const TWO_ACCOUNTS: &str = r#"
accounts {
  A: {
    users: [ {user: a, password: a}, {user: svc, password: svc} ]
    exports: [
      {stream: "events.>"}
      {service: "help.>"}
      {service: "private", accounts: [C]}
      {service: "many", response_type: stream, response_threshold: "2s"}
    ]
  }
  B: {
    users: [ {user: b, password: b} ]
    imports: [
      {stream: {account: A, subject: "events.>"}, prefix: "from_a"}
      {service: {account: A, subject: "help.>"}}
      {service: {account: A, subject: "many"}, to: "a.many"}
    ]
  }
  C: {
    users: [ {user: c, password: c} ]
    imports: [ {service: {account: A, subject: "private"}, to: "a.private"} ]
  }
}
"#;

#[tokio::test]
async fn accounts_are_isolated() {
    let (s, _d) = server_from(TWO_ACCOUNTS).await;
    let a = connect_user(&s, "a", "a").await;
    let b = connect_user(&s, "b", "b").await;
    let mut in_b = b.subscribe("same.subject").await.unwrap();
    let mut in_a = a.subscribe("same.subject").await.unwrap();
    barrier(&b).await;
    a.publish("same.subject", "from a".into()).await.unwrap();
    b.publish("same.subject", "from b".into()).await.unwrap();
    assert_eq!(&next_msg(&mut in_a).await.payload[..], b"from a");
    assert_eq!(&next_msg(&mut in_b).await.payload[..], b"from b");
    // Neither saw the other's: a barrier message arrives next.
    a.publish("same.subject", "end".into()).await.unwrap();
    b.publish("same.subject", "end".into()).await.unwrap();
    assert_eq!(&next_msg(&mut in_a).await.payload[..], b"end");
    assert_eq!(&next_msg(&mut in_b).await.payload[..], b"end");
}

#[tokio::test]
async fn stream_import_with_prefix() {
    let (s, _d) = server_from(TWO_ACCOUNTS).await;
    let a = connect_user(&s, "a", "a").await;
    let b = connect_user(&s, "b", "b").await;
    let c = connect_user(&s, "c", "c").await;
    let mut got = b.subscribe("from_a.events.>").await.unwrap();
    let mut unprefixed = b.subscribe("events.>").await.unwrap();
    let mut not_imported = c.subscribe("from_a.>").await.unwrap();
    barrier(&b).await;
    barrier(&c).await;
    a.publish("events.one", "1".into()).await.unwrap();
    a.publish("other.two", "2".into()).await.unwrap();
    let m = next_msg(&mut got).await;
    assert_eq!(m.subject.as_str(), "from_a.events.one");
    assert_eq!(&m.payload[..], b"1");
    // B's own events.> is B's subject space; C imported no stream.
    b.publish("events.local", "b".into()).await.unwrap();
    assert_eq!(
        next_msg(&mut unprefixed).await.subject.as_str(),
        "events.local"
    );
    c.publish("from_a.own", "c".into()).await.unwrap();
    assert_eq!(
        next_msg(&mut not_imported).await.subject.as_str(),
        "from_a.own"
    );
}

#[tokio::test]
async fn service_import_request_reply_crosses_back() {
    let (s, _d) = server_from(TWO_ACCOUNTS).await;
    let svc = connect_user(&s, "svc", "svc").await;
    let b = connect_user(&s, "b", "b").await;
    let mut reqs = svc.subscribe("help.>").await.unwrap();
    barrier(&svc).await;
    let responder = tokio::spawn(async move {
        for _ in 0..2 {
            let m = next_msg(&mut reqs).await;
            let reply = m.reply.clone().expect("request has a reply subject");
            // The requester's own inbox never shows in the exporter.
            assert!(reply.as_str().starts_with("_R_."), "{reply}");
            svc.publish(reply, format!("answer to {}", m.subject).into())
                .await
                .unwrap();
            svc.flush().await.unwrap();
        }
    });
    let r = tokio::time::timeout(TIMEOUT, b.request("help.me", "?".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&r.payload[..], b"answer to help.me");
    let r = tokio::time::timeout(TIMEOUT, b.request("help.again", "?".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&r.payload[..], b"answer to help.again");
    responder.await.unwrap();
}

/// A singleton service response crosses once; the reply token is useless
/// afterwards, and a token nobody issued reaches no one.
#[tokio::test]
async fn singleton_responses_cross_once_and_only_to_the_requester() {
    let (s, _d) = server_from(TWO_ACCOUNTS).await;
    let svc = connect_user(&s, "svc", "svc").await;
    let b = connect_user(&s, "b", "b").await;
    let mut reqs = svc.subscribe("help.>").await.unwrap();
    let mut inbox = b.subscribe("my.inbox").await.unwrap();
    barrier(&svc).await;
    barrier(&b).await;
    b.publish_with_reply("help.x", "my.inbox", "?".into())
        .await
        .unwrap();
    let m = next_msg(&mut reqs).await;
    let reply = m.reply.unwrap();
    svc.publish(reply.clone(), "first".into()).await.unwrap();
    svc.publish(reply.clone(), "second".into()).await.unwrap();
    // A guessed token in the same namespace.
    let forged = format!("{}zzzz", &reply[..reply.len() - 4]);
    svc.publish(forged, "forged".into()).await.unwrap();
    svc.flush().await.unwrap();
    assert_eq!(&next_msg(&mut inbox).await.payload[..], b"first");
    b.publish("my.inbox", "marker".into()).await.unwrap();
    assert_eq!(&next_msg(&mut inbox).await.payload[..], b"marker");
}

#[tokio::test]
async fn stream_response_type_allows_several_responses_and_to_remaps() {
    let (s, _d) = server_from(TWO_ACCOUNTS).await;
    let svc = connect_user(&s, "svc", "svc").await;
    let b = connect_user(&s, "b", "b").await;
    let mut reqs = svc.subscribe("many").await.unwrap();
    let mut inbox = b.subscribe("my.inbox").await.unwrap();
    barrier(&svc).await;
    barrier(&b).await;
    // B asks on its local name for A's "many".
    b.publish_with_reply("a.many", "my.inbox", "?".into())
        .await
        .unwrap();
    let m = next_msg(&mut reqs).await;
    assert_eq!(m.subject.as_str(), "many");
    let reply = m.reply.unwrap();
    for i in 0..3 {
        svc.publish(reply.clone(), format!("{i}").into())
            .await
            .unwrap();
    }
    for i in 0..3 {
        assert_eq!(next_msg(&mut inbox).await.payload, format!("{i}"));
    }
}

#[tokio::test]
async fn private_exports_only_reach_the_named_accounts() {
    let (s, _d) = server_from(TWO_ACCOUNTS).await;
    let svc = connect_user(&s, "svc", "svc").await;
    let c = connect_user(&s, "c", "c").await;
    let b = connect_user(&s, "b", "b").await;
    let mut reqs = svc.subscribe("private").await.unwrap();
    barrier(&svc).await;
    let waiter = tokio::spawn(async move {
        let reply = reqs.next().await.unwrap().reply.unwrap();
        svc.publish(reply, "secret".into()).await.unwrap();
        svc.flush().await.unwrap();
    });
    let r = tokio::time::timeout(TIMEOUT, c.request("a.private", "?".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&r.payload[..], b"secret");
    waiter.await.unwrap();
    // B has no import for it: no responders.
    let e = b.request("a.private", "?".into()).await.unwrap_err();
    assert_eq!(e.kind(), async_nats::RequestErrorKind::NoResponders);
    // And B cannot declare one: the configuration is refused.
    let bad = TWO_ACCOUNTS.replace(
        "{service: {account: A, subject: \"many\"}, to: \"a.many\"}",
        "{service: {account: A, subject: \"private\"}}",
    );
    assert!(
        refusal(&bad).contains("not authorized"),
        "{}",
        refusal(&bad)
    );
}

#[tokio::test]
async fn configuration_refusals_name_the_place() {
    let cycle = r#"
accounts {
  A: { exports: [{service: "q"}], imports: [{service: {account: B, subject: "q"}}] }
  B: { exports: [{service: "q"}], imports: [{service: {account: A, subject: "q"}}] }
}"#;
    let e = refusal(cycle);
    assert!(e.contains("cycle") && e.contains("bad.conf:2:"), "{e}");
    let e = refusal("accounts { A: { imports: [{stream: {account: Z, subject: x}}] } }");
    assert!(
        e.contains("\"Z\" account not defined for stream import"),
        "{e}"
    );
    let e = refusal("no_auth_user: nobody\naccounts { A: { users: [{user: a, password: a}] } }");
    assert!(e.contains("not present as user or nkey"), "{e}");
    let e =
        refusal("authorization { token: t }\naccounts { A: { users: [{user: a, password: a}] } }");
    assert!(e.contains("Can not have a token and accounts"), "{e}");
    let e = refusal(
        "accounts {\n A: { users: [{user: a, password: a}] }\n B: { users: [{user: a, password: b}] }\n}",
    );
    assert!(e.contains("Duplicate user \"a\""), "{e}");
    let e = refusal("accounts { A: { users: [{nkey: UABC}] } }");
    assert!(e.contains("Not a valid public nkey"), "{e}");
}

#[tokio::test]
async fn no_auth_user_logs_in_clients_without_credentials() {
    let (s, _d) = server_from(
        r#"
no_auth_user: guest
accounts {
  A: { users: [ {user: guest, password: unused, permissions: {publish: ["guest.>", "_INBOX.>"]}} ] }
  B: { users: [ {user: b, password: b} ] }
}"#,
    )
    .await;
    let guest = nats(s.client_addr()).await;
    let a_side = connect_user(&s, "guest", "unused").await;
    let b = connect_user(&s, "b", "b").await;
    let mut in_a = a_side.subscribe("guest.>").await.unwrap();
    let mut in_b = b.subscribe("guest.>").await.unwrap();
    barrier(&a_side).await;
    barrier(&b).await;
    guest.publish("guest.hello", "hi".into()).await.unwrap();
    assert_eq!(&next_msg(&mut in_a).await.payload[..], b"hi");
    // Permissions of the no_auth_user apply.
    let mut raw = Raw::handshake(s.client_addr(), r#"{"verbose":false}"#).await;
    raw.send(b"PUB other 1\r\nx\r\nPING\r\n").await;
    raw.expect("-ERR 'Permissions Violation for Publish to \"other\"'")
        .await;
    raw.expect("PONG").await;
    // Wrong credentials are still refused (no fallback to the guest).
    let mut bad = Raw::connect(s.client_addr()).await;
    bad.send(b"CONNECT {\"user\":\"b\",\"pass\":\"nope\"}\r\nPING\r\n")
        .await;
    bad.expect(AUTH_VIOLATION).await;
    b.publish("guest.b", "own".into()).await.unwrap();
    assert_eq!(next_msg(&mut in_b).await.subject.as_str(), "guest.b");
}

#[tokio::test]
async fn account_limits_follow_nats_server() {
    let (s, _d) = server_from(
        r#"
accounts {
  L: {
    users: [ {user: l, password: l} ]
    limits: { max_connections: 2, max_subscriptions: 2, max_payload: 16 }
  }
}"#,
    )
    .await;
    let login = r#"{"verbose":false,"user":"l","pass":"l"}"#;
    let mut one = Raw::handshake(s.client_addr(), login).await;
    let _two = Raw::handshake(s.client_addr(), login).await;
    let mut three = Raw::connect(s.client_addr()).await;
    three
        .send(format!("CONNECT {login}\r\nPING\r\n").as_bytes())
        .await;
    three
        .expect("-ERR 'maximum account active connections exceeded'")
        .await;
    three.expect_closed().await;
    // Subscriptions: two per connection.
    one.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nPING\r\n").await;
    one.expect("-ERR 'maximum subscriptions exceeded'").await;
    one.expect("PONG").await;
    // Payload: over 16 bytes is a violation that closes the connection.
    one.send(b"PUB a 17\r\n01234567890123456\r\n").await;
    one.expect("-ERR 'Maximum Payload Violation'").await;
    // A slot is free again once a connection leaves.
    one.expect_closed().await;
    let c = nats_with(
        s.client_addr(),
        async_nats::ConnectOptions::with_user_and_password("l".into(), "l".into()),
    )
    .await;
    c.flush().await.unwrap();
}

/// What rnats and nats-server v2.15.1 show a client for the same nkey
/// configuration: a nonce in INFO (same length), the same error line for a
/// replayed signature and for a password offered to an nkey user, and no
/// nonce without nkey users. Skipped without nats-server on PATH.
#[tokio::test]
async fn nkey_logins_match_nats_server() {
    let Some(bin) = on_path("nats-server") else {
        eprintln!("SKIPPED: nats-server not on PATH");
        return;
    };
    let user = nkeys::KeyPair::new_user();
    let dir = TempDir::new("nkey-diff");
    let conf = dir.path("nk.conf");
    let text = format!(
        "authorization {{ users: [ {{nkey: {}}} ] }}\n",
        user.public_key()
    );
    std::fs::write(&conf, &text).unwrap();
    let (ours, _d) = server_from(&text).await;
    let mut theirs = Proc::spawn(
        bin.to_str().unwrap(),
        &["-a", "127.0.0.1", "-p", "-1", "-c", conf.to_str().unwrap()],
        &dir.path("nats-server.log"),
    );
    let their_addr: std::net::SocketAddr = format!("127.0.0.1:{}", theirs.client_port().await)
        .parse()
        .unwrap();
    let mut seen = Vec::new();
    for addr in [ours.client_addr(), their_addr] {
        let first = Raw::connect(addr).await;
        let nonce = first.info_json()["nonce"]
            .as_str()
            .expect("nonce in INFO")
            .to_string();
        let mut replay = Raw::connect(addr).await;
        replay
            .send(format!("CONNECT {}\r\nPING\r\n", signed_connect(&user, &nonce)).as_bytes())
            .await;
        let replay_line = replay.line().await;
        let mut pass = Raw::connect(addr).await;
        pass.send(
            format!(
                "CONNECT {{\"user\":\"{}\",\"pass\":\"x\"}}\r\nPING\r\n",
                user.public_key()
            )
            .as_bytes(),
        )
        .await;
        let pass_line = pass.line().await;
        seen.push((nonce.len(), replay_line, pass_line));
    }
    assert_eq!(seen[0], seen[1], "rnats vs nats-server");
    assert_eq!(seen[0].1.as_deref(), Some(AUTH_VIOLATION));

    // Without nkey users neither sends a nonce.
    let plain = dir.path("plain.conf");
    std::fs::write(&plain, "authorization { user: a, password: b }\n").unwrap();
    let mut theirs_plain = Proc::spawn(
        bin.to_str().unwrap(),
        &["-a", "127.0.0.1", "-p", "-1", "-c", plain.to_str().unwrap()],
        &dir.path("nats-server-plain.log"),
    );
    let port = theirs_plain.client_port().await;
    let raw = Raw::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    assert!(raw.info_json().get("nonce").is_none());
}
