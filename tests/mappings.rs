//! Subject mappings with a real server and async-nats clients: simple and
//! wildcard mappings, transform functions, weighted destinations, account
//! isolation, stream and service imports, permissions on the mapped
//! subject, configuration refusals with their position, and a
//! differential run against nats-server (skipped when it is absent).

mod common;

use std::net::SocketAddr;

use common::*;

/// A server from configuration text (on a random loopback port).
async fn server_from(text: &str) -> (rnats::Server, TempDir) {
    start_from_config("mappings", text).await
}

/// The error a configuration is refused with, and the file's path.
fn refusal(text: &str) -> (String, String) {
    let dir = TempDir::new("mappings-bad");
    let path = dir.path("bad.conf");
    std::fs::write(&path, text).unwrap();
    match rnats::Options::from_file(&path) {
        Ok(_) => panic!("configuration accepted:\n{text}"),
        Err(e) => (e.to_string(), path.display().to_string()),
    }
}

async fn connect_user(addr: SocketAddr, user: &str, pass: &str) -> async_nats::Client {
    nats_with(
        addr,
        async_nats::ConnectOptions::with_user_and_password(user.into(), pass.into()),
    )
    .await
}

/// Publish each subject from `publisher`, then (after a round trip that
/// proves they were all delivered) `end` from `watcher`, and return the
/// subjects `watcher` (subscribed to `>`) received before `end`. The two
/// may be in different accounts.
async fn delivered(
    publisher: &async_nats::Client,
    watcher: &async_nats::Client,
    subjects: &[&str],
) -> Vec<String> {
    let mut all = watcher.subscribe(">").await.unwrap();
    barrier(watcher).await;
    for s in subjects {
        publisher.publish(s.to_string(), "x".into()).await.unwrap();
    }
    barrier(publisher).await;
    watcher.publish("end", "".into()).await.unwrap();
    watcher.flush().await.unwrap();
    let mut got = Vec::new();
    for _ in 0..subjects.len() * 4 + 8 {
        let m = next_msg(&mut all).await;
        if m.subject.as_str() == "end" {
            return got;
        }
        // The barriers' own round trips.
        if !m.subject.starts_with("_INBOX.") {
            got.push(m.subject.to_string());
        }
    }
    panic!("no end marker; got {got:?}");
}

const MAPPINGS: &str = r#"
mappings = {
  "src": "dest"
  "orders.*.*": "orders.{{wildcard(2)}}.{{wildcard(1)}}"
  "a.>": "b.>"
  "legacy.*": "x.$1"
  "part.*.*": "part.{{partition(5,1,2)}}.$1.$2"
  "whole.*": "whole.{{partition(7)}}.$1"
  "split.*": "sp.{{split(1,-)}}"
  "sfl.*": "sfl.{{splitFromLeft(1,2)}}"
  "sfr.*": "sfr.{{SplitFromRight(1,2)}}"
  "sll.*": "sll.{{sliceFromLeft(1,3)}}"
  "slr.*": "slr.{{sliceFromRight(1,3)}}"
  "lr.*": "lr.{{left(1,2)}}.{{right(1,2)}}"
}
"#;

/// Subjects published through `MAPPINGS` (and one that no mapping takes).
const SUBJECTS: &[&str] = &[
    "src",
    "orders.eu.42",
    "a.one.two",
    "legacy.q",
    "part.k1.k2",
    "part.zz.y",
    "whole.abc",
    "whole.def",
    "split.-ab-cd--e-",
    "sfl.abcde",
    "sfr.abcde",
    "sll.abcdefg",
    "slr.abcdefg",
    "lr.abcdef",
    "untouched.subject",
];

#[tokio::test]
async fn simple_wildcard_and_function_mappings() {
    let (s, _d) = server_from(MAPPINGS).await;
    let p = nats(s.client_addr()).await;
    let w = nats(s.client_addr()).await;
    let got = delivered(&p, &w, SUBJECTS).await;
    let want: Vec<String> = [
        "dest",
        "orders.42.eu",
        "b.one.two",
        "x.q",
        // FNV-1a of "k1k2" and "zzy", modulo 5.
        &format!("part.{}.k1.k2", fnv(b"k1k2") % 5),
        &format!("part.{}.zz.y", fnv(b"zzy") % 5),
        &format!("whole.{}.abc", fnv(b"whole.abc") % 7),
        &format!("whole.{}.def", fnv(b"whole.def") % 7),
        "sp.ab.cd.e",
        "sfl.ab.cde",
        "sfr.abc.de",
        "sll.abc.def.g",
        "slr.a.bcd.efg",
        "lr.ab.ef",
        "untouched.subject",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);

    // A subscriber on the source subject hears nothing; replies are not
    // mapped (the responder answers the requester's own inbox).
    let mut resp = w.subscribe("dest").await.unwrap();
    barrier(&w).await;
    let responder = tokio::spawn({
        let w = w.clone();
        async move {
            let m = next_msg(&mut resp).await;
            let reply = m.reply.expect("request has a reply subject");
            assert!(reply.starts_with("_INBOX."), "{reply}");
            w.publish(reply, "pong".into()).await.unwrap();
            w.flush().await.unwrap();
        }
    });
    let r = tokio::time::timeout(TIMEOUT, p.request("src", "ping".into()))
        .await
        .expect("request timed out")
        .expect("request answered");
    assert_eq!(&r.payload[..], b"pong");
    responder.await.unwrap();
}

fn fnv(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &c| {
        (h ^ u32::from(c)).wrapping_mul(0x0100_0193)
    })
}

#[tokio::test]
async fn weighted_destinations_split_the_traffic() {
    let (s, _d) = server_from(
        r#"mappings = {
             "w": [{destination: "w.a", weight: 20%}, {destination: "w.b", weight: "80%"}]
             "k": {destination: "k.some", weight: 30}
           }"#,
    )
    .await;
    let p = nats(s.client_addr()).await;
    let w = nats(s.client_addr()).await;
    let n = 2000;
    let subjects: Vec<&str> = std::iter::repeat_n("w", n)
        .chain(std::iter::repeat_n("k", n))
        .collect();
    let got = delivered(&p, &w, &subjects).await;
    assert_eq!(got.len(), 2 * n, "every message is delivered once");
    let count = |s: &str| got.iter().filter(|g| g.as_str() == s).count();
    // Binomial: mean 400 (600), standard deviation about 18 (20).
    let (a, b) = (count("w.a"), count("w.b"));
    assert!((300..=500).contains(&a) && a + b == n, "w.a {a}, w.b {b}");
    // 30% to k.some, the other 70% keep the subject.
    let (some, kept) = (count("k.some"), count("k"));
    assert!(
        (500..=700).contains(&some) && some + kept == n,
        "k.some {some}, k {kept}"
    );
}

const ACCOUNTS: &str = r#"
accounts {
  A {
    users: [ {user: a, password: a} ]
    mappings = { "orders.in": "orders.out", "help": "help.v2" }
    exports: [ {stream: "orders.out"}, {service: "help.>"}, {service: "help"} ]
  }
  B {
    users: [ {user: b, password: b} ]
    imports: [
      {stream: {account: A, subject: "orders.out"}},
      {service: {account: A, subject: "help"}}
    ]
    # Not applied to messages a stream import brings in (nats-server).
    mappings = { "orders.out": "b.elsewhere" }
  }
  C { users: [ {user: c, password: c} ] }
}
"#;

#[tokio::test]
async fn mappings_are_per_account() {
    let (s, _d) = server_from(ACCOUNTS).await;
    let a = connect_user(s.client_addr(), "a", "a").await;
    let c = connect_user(s.client_addr(), "c", "c").await;
    // In A, orders.in becomes orders.out.
    assert_eq!(delivered(&a, &a, &["orders.in"]).await, ["orders.out"]);
    // C has no mappings: orders.in stays orders.in.
    assert_eq!(delivered(&c, &c, &["orders.in"]).await, ["orders.in"]);
    // B maps its own publishes.
    let b = connect_user(s.client_addr(), "b", "b").await;
    assert_eq!(delivered(&b, &b, &["orders.out"]).await, ["b.elsewhere"]);
}

#[tokio::test]
async fn mapped_subjects_cross_imports() {
    let (s, _d) = server_from(ACCOUNTS).await;
    let a = connect_user(s.client_addr(), "a", "a").await;
    let b = connect_user(s.client_addr(), "b", "b").await;
    // Stream import: A publishes orders.in, mapped in A to orders.out,
    // which B imports; B's own mapping does not touch it.
    let got = delivered(&a, &b, &["orders.in"]).await;
    assert_eq!(got, ["orders.out"]);

    // Service import: B requests "help"; in A the request is mapped to
    // help.v2, where the responder listens.
    let mut svc = a.subscribe("help.v2").await.unwrap();
    barrier(&a).await;
    let responder = tokio::spawn({
        let a = a.clone();
        async move {
            let m = next_msg(&mut svc).await;
            let reply = m.reply.expect("reply subject");
            a.publish(reply, "v2 here".into()).await.unwrap();
            a.flush().await.unwrap();
        }
    });
    let r = tokio::time::timeout(TIMEOUT, b.request("help", "?".into()))
        .await
        .expect("request timed out")
        .expect("request answered");
    assert_eq!(&r.payload[..], b"v2 here");
    responder.await.unwrap();
}

#[tokio::test]
async fn publish_permissions_apply_to_the_mapped_subject() {
    // As nats-server: the permission check sees the subject after mapping.
    let (s, _d) = server_from(
        r#"
        mappings = { "src": "dest", "open": "closed" }
        authorization { users: [
          {user: u, password: u, permissions: {publish: ["dest", "end", "_INBOX.>"], subscribe: ">"}}
        ] }
        "#,
    )
    .await;
    let u = connect_user(s.client_addr(), "u", "u").await;
    let w = connect_user(s.client_addr(), "u", "u").await;
    // "src" is not in the allow list, but it maps to "dest", which is.
    assert_eq!(delivered(&u, &w, &["src"]).await, ["dest"]);
    // "open" maps to "closed", which is refused.
    let mut raw = Raw::handshake(
        s.client_addr(),
        r#"{"user":"u","pass":"u","verbose":false}"#,
    )
    .await;
    raw.send(b"PUB open 0\r\n\r\n").await;
    let line = raw.line().await.expect("a reply");
    assert_eq!(
        line,
        "-ERR 'Permissions Violation for Publish to \"closed\"'"
    );
}

#[test]
fn bad_mappings_are_refused_with_their_position() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "port: 4222\nmappings = { \"a.*\": \"b.{{foo(1)}}\" }\n",
            2,
            "Error adding mapping for \"a.*\" to \"b.{{foo(1)}}\" : invalid mapping \
             destination: unknown function in {{foo(1)}}",
        ),
        (
            "mappings = {\n  \"a.*\": \"b.$2\"\n}\n",
            2,
            "invalid mapping destination: wildcard index out of range in $2: [2]",
        ),
        (
            "mappings = {\n  a: [{destination: b, weight: 60}, {destination: c, weight: 50}]\n}\n",
            2,
            "Error adding mapping for \"a\" : total weight needs to be <= 100",
        ),
        (
            "mappings = {\n  a: [{destination: b, weight: 60, cluster: east}]\n}\n",
            2,
            "\"cluster\" in a mapping destination is not supported by rnats yet",
        ),
        (
            "mappings = {\n  a: [{destination: b, weight: 160}]\n}\n",
            2,
            "Invalid weight 160 for mapping destination",
        ),
        (
            "mappings = {\n  a: [{destination: b}]\n}\n",
            2,
            "Missing weight for mapping destination \"b\"",
        ),
        (
            "mappings = {\n  a: [{destination: b, weight: 5, bogus: 1}]\n}\n",
            2,
            "Unknown field \"bogus\" for mapping destination",
        ),
        (
            "mappings = {\n  a: 5\n}\n",
            2,
            "Expected an entry for the mapping destination",
        ),
        (
            "mappings = {\n  \"a..b\": c\n}\n",
            2,
            "Subject \"a..b\" is not a valid subject",
        ),
        (
            "mappings = {\n  \"a.>\": \"b.*\"\n}\n",
            2,
            "Error adding mapping for \"a.>\" to \"b.*\" : invalid subject",
        ),
        (
            "accounts {\n  A {\n    mappings = { \"a.*\": \"{{partition(3,2)}}\" }\n  }\n}\n",
            3,
            "wildcard index out of range in {{partition(3,2)}}: [2]",
        ),
    ];
    for (text, line, want) in cases {
        let (e, path) = refusal(text);
        assert!(
            e.starts_with(&format!("{path}:{line}:")) && e.contains(want),
            "config:\n{text}\nerror: {e}\nwanted {path}:{line}: ... {want}"
        );
    }
}

// ---------------------------------------------------------------------
// Differential: the same configuration on nats-server and rnats.

struct Pair {
    nats: SocketAddr,
    rnats: SocketAddr,
    _procs: (Proc, Proc),
    _dir: TempDir,
}

async fn start_pair(tag: &str, config: &str) -> Option<Pair> {
    let Some(nats_bin) = on_path("nats-server") else {
        eprintln!("nats-server not on PATH: skipping the mappings differential test");
        return None;
    };
    let dir = TempDir::new(tag);
    let conf = dir.path("mappings.conf");
    std::fs::write(&conf, config).expect("write config");
    let args = ["-a", "127.0.0.1", "-p", "-1", "-c", conf.to_str().unwrap()];
    let mut reference = Proc::spawn(nats_bin.to_str().unwrap(), &args, &dir.path("nats.log"));
    let mut ours = Proc::spawn(RNATS_BIN, &args, &dir.path("rnats.log"));
    let nats_port = reference.client_port().await;
    let rnats_port = ours.client_port().await;
    Some(Pair {
        nats: SocketAddr::from(([127, 0, 0, 1], nats_port)),
        rnats: SocketAddr::from(([127, 0, 0, 1], rnats_port)),
        _procs: (reference, ours),
        _dir: dir,
    })
}

#[tokio::test]
async fn mapped_subjects_match_nats_server() {
    let Some(pair) = start_pair("mappings-diff", MAPPINGS).await else {
        return;
    };
    // More keys for the partitions, so a different hash would show.
    let mut subjects: Vec<String> = SUBJECTS.iter().map(|s| s.to_string()).collect();
    for i in 0..40 {
        subjects.push(format!("part.k{i}.v{}", i * 7));
        subjects.push(format!("whole.w{i}"));
        subjects.push(format!("slr.{}", "abcdefghij".repeat(1 + i % 3)));
        subjects.push(format!("split.{}", "-x".repeat(i % 4)));
    }
    let subjects: Vec<&str> = subjects.iter().map(String::as_str).collect();
    let mut results = Vec::new();
    for addr in [pair.nats, pair.rnats] {
        let p = nats(addr).await;
        let w = nats(addr).await;
        results.push(delivered(&p, &w, &subjects).await);
    }
    assert_eq!(
        results[0], results[1],
        "nats-server (left) and rnats (right) differ"
    );
}

#[tokio::test]
async fn account_mappings_and_imports_match_nats_server() {
    let Some(pair) = start_pair("mappings-diff-acc", ACCOUNTS).await else {
        return;
    };
    let mut results = Vec::new();
    for addr in [pair.nats, pair.rnats] {
        let a = connect_user(addr, "a", "a").await;
        let b = connect_user(addr, "b", "b").await;
        let c = connect_user(addr, "c", "c").await;
        results.push((
            delivered(&a, &b, &["orders.in", "orders.out"]).await,
            delivered(&b, &b, &["orders.out", "orders.in"]).await,
            delivered(&c, &c, &["orders.in"]).await,
        ));
    }
    assert_eq!(
        results[0], results[1],
        "nats-server (left) and rnats (right) differ"
    );
}

#[tokio::test]
async fn permissions_and_service_imports_match_nats_server() {
    let config = format!(
        "{ACCOUNTS}\nauthorization {{ users: [ {{user: u, password: u, permissions: \
         {{publish: [\"dest\", \"end\", \"_INBOX.>\"], subscribe: \">\"}}}} ] }}\n\
         mappings = {{ \"src\": \"dest\", \"open\": \"closed\" }}\n"
    );
    let Some(pair) = start_pair("mappings-diff-perm", &config).await else {
        return;
    };
    let mut results = Vec::new();
    for addr in [pair.nats, pair.rnats] {
        let u = connect_user(addr, "u", "u").await;
        let allowed = delivered(&u, &u, &["src"]).await;
        let mut raw = Raw::handshake(addr, r#"{"user":"u","pass":"u","verbose":false}"#).await;
        raw.send(b"PUB open 0\r\n\r\n").await;
        let refused = raw.line().await;
        // A service request crossing into A is mapped there (help → help.v2).
        let a = connect_user(addr, "a", "a").await;
        let b = connect_user(addr, "b", "b").await;
        let mut svc = a.subscribe("help.>").await.unwrap();
        barrier(&a).await;
        b.publish_with_reply("help", "reply.here", "?".into())
            .await
            .unwrap();
        b.flush().await.unwrap();
        let m = next_msg(&mut svc).await;
        results.push((allowed, refused, m.subject.to_string()));
    }
    assert_eq!(
        results[0], results[1],
        "nats-server (left) and rnats (right) differ"
    );
}

#[test]
fn a_reload_may_not_change_mappings() {
    let dir = TempDir::new("mappings-reload");
    let read = |name: &str, text: &str| {
        let path = dir.path(name);
        std::fs::write(&path, text).unwrap();
        rnats::Options::from_file(&path).expect("config loads")
    };
    let old = read(
        "old.conf",
        "mappings = { a: b }\naccounts { A { mappings = { c: d } } }\n",
    );
    let same = read(
        "same.conf",
        "mappings = { a: b }\naccounts { A { mappings = { c: d } } }\n",
    );
    assert_eq!(old.check_reload(&same), Ok(()));
    let top = read(
        "top.conf",
        "mappings = { a: x }\naccounts { A { mappings = { c: d } } }\n",
    );
    assert!(old.check_reload(&top).unwrap_err().contains("mappings"));
    let acc = read(
        "acc.conf",
        "mappings = { a: b }\naccounts { A { mappings = { c: x } } }\n",
    );
    assert!(old.check_reload(&acc).unwrap_err().contains("mappings"));
}
