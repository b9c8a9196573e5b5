//! The `cluster` block, route URLs and the cluster flags.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::cluster::{ClusterFlags, ROUTE_MAX_PING_INTERVAL, parse_advertise};
use super::tests::{load, load_err};
use super::*;

const HASH: &str = "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG";

/// Three readable files standing in for a route certificate, key and CA
/// (validation only checks that they can be read), removed on drop.
struct Files(PathBuf);

impl Files {
    fn new() -> Files {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rnats-cluster-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for f in ["cert.pem", "key.pem", "ca.pem"] {
            std::fs::write(dir.join(f), "placeholder").expect("write");
        }
        Files(dir)
    }

    fn path(&self, f: &str) -> String {
        self.0.join(f).display().to_string()
    }

    /// A mutual route TLS block with `extra` lines inside.
    fn tls(&self, extra: &str) -> String {
        format!(
            "tls {{\n    cert_file: \"{}\"\n    key_file: \"{}\"\n    ca_file: \"{}\"\n{extra}  }}",
            self.path("cert.pem"),
            self.path("key.pem"),
            self.path("ca.pem")
        )
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cluster(text: &str) -> ClusterOptions {
    load(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .cluster
        .expect("cluster")
}

/// `text` is refused at `t.conf:LINE:` with a message containing `want`.
fn refused_at(text: &str, line: usize, want: &str) {
    let e = load_err(text);
    assert!(
        e.starts_with(&format!("t.conf:{line}:")) && e.contains(want),
        "{text}\n=> {e}\n(want line {line}, {want:?})"
    );
}

#[test]
fn every_supported_key() {
    let f = Files::new();
    let text = format!(
        "cluster {{\n  name: east\n  listen: \"127.0.0.1:6222\"\n  \
         routes: [\n    nats-route://ru:p%40ss@10.0.0.2:6222\n    \"nats://[::1]:6223\"\n  ]\n  \
         advertise: \"east-1.example.com:7222\"\n  no_advertise: true\n  connect_retries: 5\n  \
         authorization {{ user: ru, password: \"{HASH}\", timeout: \"3s\" }}\n  {}\n  \
         ping_interval: \"10s\"\n  ping_max: 4\n  pool_size: -1\n  compression: off\n}}\n",
        f.tls("    verify: true\n    verify_cert_and_check_known_urls: true\n    timeout: 3\n")
    );
    let o = load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    let c = o.cluster.expect("cluster");
    assert_eq!(
        (c.name.as_str(), c.host.as_str(), c.port),
        ("east", "127.0.0.1", 6222)
    );
    assert_eq!(c.advertise.as_deref(), Some("east-1.example.com:7222"));
    assert!(c.no_advertise);
    assert_eq!(c.connect_retries, 5);
    assert_eq!(c.routes.len(), 2);
    let r = &c.routes[0];
    assert_eq!(r.display, "nats-route://ru:[REDACTED]@10.0.0.2:6222");
    assert_eq!((r.host.as_str(), r.port), ("10.0.0.2", 6222));
    assert_eq!(r.user.as_deref(), Some("ru"));
    assert_eq!(r.password.as_deref(), Some("p@ss"), "percent-decoded");
    assert_eq!((c.routes[1].host.as_str(), c.routes[1].port), ("::1", 6223));
    assert_eq!(c.routes[1].user, None);
    let a = c.auth.as_ref().expect("auth");
    assert_eq!(a.user, "ru");
    assert_eq!(a.password.bcrypt_cost(), Some(11));
    assert_eq!(a.timeout, Duration::from_secs(3));
    let t = c.tls.as_ref().expect("tls");
    assert!(t.verify && t.ca_file.is_some());
    assert_eq!(t.timeout, Duration::from_secs(3));
    assert!(c.tls_check_known_urls);
    assert_eq!(c.ping_interval, Some(Duration::from_secs(10)));
    assert_eq!(c.ping_max, Some(4));
    assert_eq!(
        c.route_ping_interval(o.ping_interval),
        Duration::from_secs(10)
    );
    assert_eq!(c.route_ping_max(o.ping_max), 4);
    // The top-level client TLS is untouched.
    assert!(o.tls.is_none());
}

#[test]
fn listen_host_and_port_forms() {
    let c = cluster("cluster { port: 6222 }");
    assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 6222));
    let c = cluster("cluster { host: 127.0.0.1, port: -1 }");
    assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", -1));
    let c = cluster("cluster { net: \"::1\", port: 7 }");
    assert_eq!(c.host, "::1");
    let c = cluster("cluster { listen: 6333 }");
    assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 6333));
    let c = cluster("cluster { listen: \"[::1]:-1\" }");
    assert_eq!((c.host.as_str(), c.port), ("::1", -1));
    // Defaults of the optional keys.
    assert_eq!(c.name, "");
    assert!(c.routes.is_empty() && c.auth.is_none() && c.tls.is_none());
    assert_eq!((c.ping_interval, c.ping_max), (None, None));
    assert_eq!(c.auth_timeout(), Duration::from_secs(2));
    // Routes never ping less often than every 30s (nats-server's cap).
    assert_eq!(
        c.route_ping_interval(DEFAULT_PING_INTERVAL),
        ROUTE_MAX_PING_INTERVAL
    );
    assert_eq!(c.route_ping_max(3), 3);
}

/// nats-server accepts a cluster without a port and then runs no routes
/// at all; rnats refuses it (and an out-of-range port).
#[test]
fn a_cluster_needs_a_port() {
    refused_at(
        "port: 4222\ncluster {\n  name: a\n}\n",
        2,
        "cluster has no port",
    );
    refused_at(
        "cluster {\n  routes: [nats://h:1]\n}\n",
        1,
        "cluster has no port",
    );
    refused_at("cluster {\n  port: 0\n}\n", 2, "cluster has no port");
    refused_at(
        "cluster {\n  port: 65536\n}\n",
        2,
        "\"port\" value is too big",
    );
    refused_at("cluster {\n  listen: \"h:99999\"\n}\n", 2, "invalid port");
    refused_at("cluster: 6222\n", 1, "cluster must be a block");
}

#[test]
fn unimplemented_keys_are_refused_with_their_position() {
    for (line, want) in [
        (
            "permissions: { import: \">\" }",
            "\"permissions\" in cluster is not supported by rnats yet (route permissions)",
        ),
        ("accounts: [A]", "(pinned-account routes)"),
        ("connect_backoff: true", "(route connect backoff)"),
        ("write_deadline: \"5s\"", "(route write deadlines)"),
        ("write_timeout: close", "(route write timeout policies)"),
        (
            "pool_size: 3",
            "\"pool_size\" in cluster is not supported by rnats yet",
        ),
        ("pool_size: 0", "only -1"),
        (
            "compression: on",
            "\"compression\" in cluster is not supported",
        ),
        ("compression: s2_fast", "only off"),
        ("compression: { mode: off }", "only off"),
        ("bogus: 1", "unknown field \"bogus\" in cluster"),
    ] {
        refused_at(
            &format!("cluster {{\n  port: 6222\n  {line}\n}}\n"),
            3,
            want,
        );
    }
    // The values that mean what rnats does anyway are accepted.
    for ok in [
        "pool_size: -1",
        "compression: false",
        "compression: \"disabled\"",
    ] {
        cluster(&format!("cluster {{ port: 6222, {ok} }}"));
    }
}

#[test]
fn route_authorization_rules() {
    let block = |body: &str| {
        format!("cluster {{\n  port: 6222\n  authorization {{\n    {body}\n  }}\n}}\n")
    };
    for (body, line, want) in [
        ("user: a", 3, "has a user but no password"),
        ("password: b", 3, "needs a user"),
        ("user: \"\", password: b", 4, "empty user name"),
        (
            "users: [{user: a, password: b}]",
            4,
            "does not allow multiple users",
        ),
        ("token: t", 4, "does not support tokens"),
        (
            "user: a, password: b, permissions: {}",
            4,
            "route permissions",
        ),
        ("auth_callout: {}", 4, "does not support callouts"),
        ("user: a, password: \"$2x$11$abc\"", 4, "$2x$"),
        (
            "user: a, password: b, bogus: 1",
            4,
            "unknown field \"bogus\" in cluster authorization",
        ),
    ] {
        refused_at(&block(body), line, want);
    }
    // A zero timeout means the default, 2s without TLS.
    let c = cluster("cluster { port: 6222, authorization { user: a, password: b, timeout: 0 } }");
    let a = c.auth.expect("auth");
    assert_eq!(a.timeout, Duration::from_secs(2));
    assert!(matches!(a.password, Secret::Plain(_)));
    // nats-server's "is high" warning.
    let o = load("cluster { port: 6222, authorization { user: a, password: b, timeout: 120 } }")
        .expect("load");
    assert!(
        o.warnings.iter().any(|w| w.contains("is high")),
        "{:?}",
        o.warnings
    );
}

#[test]
fn route_tls_is_always_mutual() {
    let f = Files::new();
    let with = |tls: String| format!("cluster {{\n  port: 6222\n  {tls}\n}}\n");
    // Without TLS options of its own, the block verifies peers, and the
    // auth timeout follows the TLS timeout as in nats-server.
    let c = cluster(&with(f.tls("")));
    let t = c.tls.as_ref().expect("tls");
    assert!(t.verify && !c.tls_check_known_urls);
    assert_eq!(c.auth_timeout(), Duration::from_secs(3));
    // A missing ca_file: nats-server would fall back to the system roots.
    let no_ca = format!(
        "tls {{\n    cert_file: \"{}\"\n    key_file: \"{}\"\n  }}",
        f.path("cert.pem"),
        f.path("key.pem")
    );
    refused_at(&with(no_ca), 3, "cluster tls needs \"ca_file\"");
    for (extra, want) in [
        ("verify: false", "\"verify: false\" is refused"),
        ("insecure: true", "\"insecure\" is not supported"),
        (
            "verify_and_map: true",
            "\"verify_and_map\" is not supported by rnats yet",
        ),
        ("handshake_first: true", "nats-server ignores it for routes"),
        ("bogus: 1", "unknown field \"bogus\" in cluster.tls block"),
        ("cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]", "not allowed"),
        (
            "verify_cert_and_check_known_urls: 1",
            "expects true or false",
        ),
    ] {
        refused_at(&with(f.tls(&format!("    {extra}\n"))), 7, want);
    }
    // Harmless spellings of what rnats does anyway.
    cluster(&with(
        f.tls("    insecure: false\n    verify_and_map: false\n"),
    ));
    // pinned_certs needs no separate `verify` here: routes always verify.
    let pin = "a".repeat(64);
    let c = cluster(&with(f.tls(&format!("    pinned_certs: [\"{pin}\"]\n"))));
    assert_eq!(c.tls.expect("tls").pinned_certs, vec![pin]);
    // Files that cannot be read, named with their line.
    let missing = f.path("nope.pem");
    let text = with(f.tls("")).replace(&f.path("ca.pem"), &missing);
    refused_at(&text, 6, "cannot read cluster tls ca_file");
    // The route block's positions do not clash with the client block's.
    let both = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n{}",
        f.path("cert.pem"),
        f.path("key.pem"),
        with(f.tls("").replace(&f.path("key.pem"), &missing))
    );
    refused_at(&both, 9, "cannot read cluster tls key_file");
}

#[test]
fn route_urls_refused_with_their_position() {
    for (url, want) in [
        ("nats://:6222", "no host"),
        ("nats://h", "no port"),
        ("nats://h:0", "invalid port"),
        ("nats://h:70000", "invalid port"),
        ("nats://h:x", "invalid port"),
        ("nats://h:+5", "invalid port"),
        ("nats://h: 5", "invalid port"),
        ("http://h:6222", "unsupported scheme"),
        ("h:6222", "is not a URL"),
        ("nats://h:1/path", "unexpected path"),
        ("nats://h:1?x=1", "unexpected path"),
        ("nats://::1:6222", "IPv6 addresses need brackets"),
        ("nats://[::1:6222", "missing ']'"),
        ("nats://u@h:1", "a user but no password"),
        ("nats://:pw@h:1", "empty user"),
        ("nats://u:p%zz@h:1", "invalid %-escape"),
        ("nats://u:p%+5@h:1", "invalid %-escape"),
        ("nats://u:p%4@h:1", "invalid %-escape"),
    ] {
        let text = format!(
            "cluster {{\n  port: 6222\n  routes: [\n    nats://ok:1\n    \"{url}\"\n  ]\n}}\n"
        );
        refused_at(&text, 5, want);
        refused_at(&text, 5, "error parsing route url");
    }
    refused_at(
        "cluster {\n  port: 6222\n  routes: \"nats://h:1\"\n}\n",
        3,
        "expects an array",
    );
    // The scheme does not turn TLS on: tls:// without a tls block would
    // be plain TCP, so it is refused (at the entry).
    refused_at(
        "cluster {\n  port: 6222\n  routes: [\n    nats://a:1\n    tls://b:2\n  ]\n}\n",
        5,
        "says tls:// but the cluster has no tls block",
    );
}

#[test]
fn passwords_never_appear_in_messages_or_debug() {
    for bad in [
        "nats://user:s3cret@h",
        "nats://user:s3cret@h:99999",
        "user:s3cret@h:1",
        "http://user:s3cret@h:1",
        "nats://user:s3cret%zz@h:1",
    ] {
        let e = RouteUrl::parse(bad).unwrap_err();
        assert!(!e.contains("s3cret"), "{bad}: {e}");
        let text = format!("cluster {{ port: 1, routes: [\"{bad}\"] }}");
        assert!(!load_err(&text).contains("s3cret"), "{bad}");
    }
    let r = RouteUrl::parse(" nats-route://user:s3cret@h:1/ ").expect("parse");
    assert_eq!(r.display, "nats-route://user:[REDACTED]@h:1/");
    let c = cluster(
        "cluster { port: 1, routes: [\"nats://user:s3cret@h:1\"], authorization { user: u, password: s3cret } }",
    );
    let dump = format!("{c:?}");
    assert!(
        !dump.contains("s3cret") && dump.contains("[REDACTED]"),
        "{dump}"
    );
}

#[test]
fn route_url_forms() {
    let r = RouteUrl::parse("NATS-ROUTE://h.example.com:6222").expect("parse");
    assert_eq!(
        (r.scheme.as_str(), r.host.as_str(), r.port),
        ("nats-route", "h.example.com", 6222)
    );
    assert_eq!(r.display, "NATS-ROUTE://h.example.com:6222");
    let r = RouteUrl::parse("tls://[fe80::1]:7").expect("parse");
    assert_eq!(
        (r.host.as_str(), r.port, r.scheme.as_str()),
        ("fe80::1", 7, "tls")
    );
    // Go's reading: the user part runs to the last '@'; ':' splits user
    // and password at the first one.
    let r = RouteUrl::parse("nats://a%3Ab:c:d@e@h:1").expect("parse");
    assert_eq!(r.user.as_deref(), Some("a:b"));
    assert_eq!(r.password.as_deref(), Some("c:d@e"));
    assert_eq!(r.display, "nats://a%3Ab:[REDACTED]@h:1");
    let r = RouteUrl::parse("nats://u:@h:1").expect("empty password");
    assert_eq!(r.password.as_deref(), Some(""));
}

#[test]
fn duplicate_routes_and_ping_values_warn() {
    let o = load(
        "cluster {\n  port: 6222\n  routes: [nats://a:1, nats://a:1, nats://b:1]\n  \
         ping_interval: \"2m\"\n  ping_max: 0\n}\n",
    )
    .expect("load");
    let c = o.cluster.as_ref().expect("cluster");
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.ping_interval, Some(ROUTE_MAX_PING_INTERVAL));
    assert_eq!(c.ping_max, None);
    let w = o.warnings.join("\n");
    for want in [
        "t.conf:3:",
        "Duplicate route entry detected",
        "t.conf:4:",
        "Cluster 'ping_interval' will reset to 30s which is the max for routes",
        "t.conf:5:",
        "cluster ping_max of 0 means the top-level ping_max",
    ] {
        assert!(w.contains(want), "{want}: {w}");
    }
    let o = load("cluster { port: 1, ping_interval: 0 }").expect("load");
    assert_eq!(o.cluster.expect("cluster").ping_interval, None);
    let o = load("cluster { port: 1, ping_interval: 5 }").expect("load");
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("should be converted to a duration"))
    );
    refused_at(
        "cluster {\n  port: 1\n  ping_interval: 1.5\n}\n",
        3,
        "expects a duration string",
    );
    refused_at(
        "cluster {\n  port: 1\n  ping_max: -1\n}\n",
        3,
        "must not be negative",
    );
    refused_at(
        "cluster {\n  port: 1\n  connect_retries: -1\n}\n",
        3,
        "must not be negative",
    );
}

#[test]
fn name_and_advertise() {
    refused_at(
        "cluster {\n  port: 1\n  name: \"a b\"\n}\n",
        3,
        "cluster name cannot contain spaces",
    );
    for bad in [
        "a b", "h:0", "h:x", "h:+1", "h:70000", "::1", "[::1", "", "u@h:1",
    ] {
        refused_at(
            &format!("cluster {{\n  port: 1\n  advertise: \"{bad}\"\n}}\n"),
            3,
            "invalid cluster advertise",
        );
    }
    assert_eq!(parse_advertise("h"), Ok(("h".into(), None)));
    assert_eq!(parse_advertise("h:7222"), Ok(("h".into(), Some(7222))));
    assert_eq!(parse_advertise("[::1]:7"), Ok(("::1".into(), Some(7))));
    assert_eq!(parse_advertise("[::1]"), Ok(("::1".into(), None)));
    let c = cluster("cluster { port: 1, cluster_advertise: \"10.1.1.1\" }");
    assert_eq!(c.advertise.as_deref(), Some("10.1.1.1"));
}

#[test]
fn options_built_in_code_are_checked_too() {
    let o = Options {
        cluster: Some(ClusterOptions::default()),
        ..Options::default()
    };
    assert!(
        o.validate()
            .unwrap_err()
            .msg
            .contains("cluster has no port")
    );
    let base = ClusterOptions {
        port: -1,
        ..ClusterOptions::default()
    };
    let mut bad_route = RouteUrl::parse("nats://h:1").expect("parse");
    bad_route.port = 0;
    let mut no_ca = TlsOptions::new("c", "k");
    no_ca.verify = true;
    let cases: Vec<(ClusterOptions, &str)> = vec![
        (
            ClusterOptions {
                host: String::new(),
                ..base.clone()
            },
            "host must not be empty",
        ),
        (
            ClusterOptions {
                routes: vec![bad_route],
                ..base.clone()
            },
            "needs a host and a port",
        ),
        (
            ClusterOptions {
                tls: Some(no_ca),
                ..base.clone()
            },
            "needs \"ca_file\"",
        ),
        (
            ClusterOptions {
                ping_max: Some(0),
                ..base.clone()
            },
            "must be positive",
        ),
        (
            ClusterOptions {
                connect_retries: -2,
                ..base.clone()
            },
            "must not be negative",
        ),
        (
            ClusterOptions {
                auth: Some(RouteAuth {
                    user: String::new(),
                    password: Secret::parse("p").expect("secret"),
                    timeout: Duration::from_secs(1),
                }),
                ..base.clone()
            },
            "needs a user",
        ),
    ];
    for (c, want) in cases {
        let o = Options {
            cluster: Some(c),
            ..Options::default()
        };
        let e = o.validate().unwrap_err();
        assert!(e.msg.contains(want) && e.line == 0, "{want}: {e}");
    }
    let o = Options {
        cluster: Some(base),
        ..Options::default()
    };
    o.validate().expect("a cluster with a random port is fine");
}

#[test]
fn reload_refuses_any_cluster_change() {
    let old = load("cluster { port: 6222, routes: [nats://a:1] }").expect("old");
    let same = load("cluster {\n port: 6222\n routes: [\"nats://a:1\"]\n}").expect("same");
    old.check_reload(&same).expect("unchanged cluster reloads");
    for (text, want) in [
        (
            "cluster { port: 6222, routes: [nats://a:1, nats://b:1] }",
            "config reload not supported for Cluster",
        ),
        (
            "cluster { port: 6222, routes: [nats://a:1], name: x }",
            "config reload not supported for Cluster",
        ),
        (
            "cluster { port: 6223, routes: [nats://a:1] }",
            "config reload not supported for cluster port: old=6222, new=6223",
        ),
        (
            "cluster { host: 127.0.0.1, port: 6222 }",
            "config reload not supported for cluster host: old=0.0.0.0, new=127.0.0.1",
        ),
        (
            "port: 4222",
            "config reload not supported for cluster host: old=0.0.0.0, new=",
        ),
    ] {
        let new = load(text).expect(text);
        let e = old.check_reload(&new).unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
    }
    // -1 on reload means the port the server already has (it may have
    // written the bound port into its running options).
    let mut running = load("cluster { port: -1 }").expect("running");
    if let Some(c) = running.cluster.as_mut() {
        c.port = 41234;
    }
    running
        .check_reload(&load("cluster { port: -1 }").expect("new"))
        .expect("a random port stays what it became");
    let e = running
        .check_reload(&load("cluster { port: 41235 }").expect("new"))
        .unwrap_err();
    assert!(e.contains("old=41234, new=41235"), "{e}");
    let none = load("port: 4222").expect("none");
    let e = none.check_reload(&old).unwrap_err();
    assert!(e.contains("cluster host: old=, new=0.0.0.0"), "{e}");
    // A changed route password is a change too.
    let a = load("cluster { port: 1, authorization { user: u, password: one } }").expect("a");
    let b = load("cluster { port: 1, authorization { user: u, password: two } }").expect("b");
    assert!(a.check_reload(&b).is_err());
}

#[test]
fn flags_override_the_file() {
    let mut o = load("cluster {\n  port: 6222\n  routes: [nats://a:1]\n  authorization { user: f, password: fp, timeout: 5 }\n}\n")
        .expect("load");
    ClusterFlags {
        listen: Some("nats://fu:f%2Fp@127.0.0.1:-1".into()),
        routes: Some("nats://b:2, ,nats://c:3,nats://b:2".into()),
        name: Some("west".into()),
        advertise: Some("w.example.com".into()),
        no_advertise: true,
        connect_retries: Some(3),
    }
    .apply(&mut o)
    .expect("flags");
    o.validate().expect("valid");
    let c = o.cluster.as_ref().expect("cluster");
    assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", -1));
    let a = c.auth.as_ref().expect("auth from the URL");
    assert_eq!(a.user, "fu");
    assert!(
        a.password
            .same_config(&Secret::parse("f/p").expect("secret"))
    );
    assert_eq!(
        a.timeout,
        Duration::from_secs(5),
        "the file's timeout stays"
    );
    let hosts: Vec<&str> = c.routes.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(hosts, ["b", "c"]);
    assert_eq!(c.name, "west");
    assert_eq!(c.advertise.as_deref(), Some("w.example.com"));
    assert!(c.no_advertise);
    assert_eq!(c.connect_retries, 3);

    // --cluster without credentials drops the file's route user, as
    // nats-server does; host defaults when the URL has none.
    let mut o =
        load("cluster { port: 6222, authorization { user: f, password: fp } }").expect("load");
    ClusterFlags {
        listen: Some("nats://:7000".into()),
        ..ClusterFlags::default()
    }
    .apply(&mut o)
    .expect("flags");
    let c = o.cluster.as_ref().expect("cluster");
    assert_eq!(
        (c.host.as_str(), c.port, c.auth.is_none()),
        ("0.0.0.0", 7000, true)
    );

    // --cluster "" turns clustering off; routes then need a cluster.
    let mut o = load("cluster { port: 6222 }").expect("load");
    ClusterFlags {
        listen: Some(String::new()),
        ..ClusterFlags::default()
    }
    .apply(&mut o)
    .expect("flags");
    assert!(o.cluster.is_none());
    let e = ClusterFlags {
        routes: Some("nats://a:1".into()),
        ..ClusterFlags::default()
    }
    .apply(&mut Options::default())
    .unwrap_err();
    assert_eq!(
        e,
        "solicited routes require cluster capabilities, e.g. --cluster"
    );
    let e = ClusterFlags {
        name: Some("x".into()),
        ..ClusterFlags::default()
    }
    .apply(&mut Options::default())
    .unwrap_err();
    assert!(e.contains("--cluster_name needs a cluster"), "{e}");

    // A cluster from flags alone.
    let mut o = Options::default();
    ClusterFlags {
        listen: Some("nats://127.0.0.1:6333".into()),
        ..ClusterFlags::default()
    }
    .apply(&mut o)
    .expect("flags");
    o.validate().expect("valid");
    assert_eq!(o.cluster.as_ref().map(|c| c.port), Some(6333));

    for (listen, want) in [
        ("127.0.0.1:6222", "is not a URL"),
        ("nats://h", "missing port"),
        ("nats://h:0", "invalid port"),
        ("nats://u@h:1", "expected cluster password to be set"),
    ] {
        let e = ClusterFlags {
            listen: Some(listen.into()),
            ..ClusterFlags::default()
        }
        .apply(&mut Options::default())
        .unwrap_err();
        assert!(e.contains(want), "{listen}: {e}");
    }
    let e = ClusterFlags {
        routes: Some("nats://u:pw@h".into()),
        ..ClusterFlags::default()
    }
    .apply(&mut load("cluster { port: 1 }").expect("load"))
    .unwrap_err();
    assert!(e.contains("invalid --routes") && !e.contains("pw"), "{e}");
}

/// A bad value from a flag is not blamed on the file's line.
#[test]
fn flag_values_forget_file_positions() {
    let mut o = load("\ncluster {\n  port: 6222\n  name: east\n}\n").expect("load");
    ClusterFlags {
        advertise: Some("a b".into()),
        ..ClusterFlags::default()
    }
    .apply(&mut o)
    .expect("flags");
    let e = o.validate().unwrap_err();
    assert_eq!(e.line, 0, "{e}");
    assert!(e.msg.contains("invalid cluster advertise"), "{e}");
}
