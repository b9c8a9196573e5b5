use super::*;

/// Parse and apply `text` as file `t.conf` (variables tracked), then
/// validate: the first error, if any.
pub(super) fn load(text: &str) -> Result<Options, ConfigError> {
    let parsed = parser::parse_str_full(text, "t.conf")?;
    let mut o = Options::default();
    o.apply_parsed(&parsed)?;
    o.validate()?;
    Ok(o)
}

pub(super) fn load_err(text: &str) -> String {
    match load(text) {
        Ok(o) => panic!("accepted: {text:?} ({o:?})"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn options_from_config_text() {
    let map = parser::parse_str(
        "port: 4333\nmax_payload: 2MB\nping_interval: \"5s\"\nwrite_deadline: 3\n\
         authorization { timeout: 1.5 }\n",
        "test.conf",
    )
    .unwrap();
    let mut o = Options::default();
    o.apply(&map).unwrap();
    assert_eq!(o.port, 4333);
    assert_eq!(o.max_payload, 2 << 20);
    assert_eq!(o.ping_interval, Duration::from_secs(5));
    assert_eq!(o.write_deadline, Duration::from_secs(3));
    assert_eq!(o.auth_timeout, Duration::from_millis(1500));
    // nats-server's warning for a bare number of seconds.
    assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
    assert!(
        o.warnings[0].starts_with("test.conf:4:")
            && o.warnings[0].contains("write_deadline should be converted to a duration"),
        "{:?}",
        o.warnings
    );
    o.validate().unwrap();
}

#[test]
fn unknown_top_level_key_is_an_error() {
    // Formerly a warning; nats-server refuses it, and so does rnats now.
    let e = load_err("port: 1\nbogus_key: 1\n");
    assert!(
        e.starts_with("t.conf:2:") && e.ends_with("unknown field \"bogus_key\""),
        "{e}"
    );
    let e = load_err("foo_bar = true");
    assert_eq!(e, "t.conf:1:11: unknown field \"foo_bar\"");
}

#[test]
fn operator_keys_fail_closed() {
    for (text, want) in [
        ("operator: \"./op.jwt\"\n", "error parsing operator JWT"),
        ("resolver: MEMORY\n", "resolver needs trusted operators"),
        (
            "resolver: URL(\"http://x\")\n",
            "not supported by rnats yet",
        ),
        ("resolver_preload: { A: b }\n", "invalid account JWT"),
        ("TRUSTED_KEYS: [ABC]\n", "valid public operator nkey"),
        ("resolver_tls: {}\n", "not supported by rnats yet"),
    ] {
        let e = load_err(text);
        assert!(
            e.starts_with("t.conf:1:") && e.contains(want),
            "{text}: {e}"
        );
    }
}

#[test]
fn unimplemented_nats_server_features_are_errors() {
    for (text, key) in [
        ("leafnodes { port: 7422 }\n", "leafnodes"),
        ("gateway { name: a }\n", "gateway"),
        ("websocket { port: 8080 }\n", "websocket"),
        ("mqtt { port: 1883 }\n", "mqtt"),
    ] {
        let e = load_err(text);
        assert!(
            e.starts_with("t.conf:1:")
                && e.contains(&format!("\"{key}\" is not supported by rnats yet")),
            "{text}: {e}"
        );
    }
}

#[test]
fn allow_listed_keys_warn() {
    let o = load("jetstream { store_dir: /tmp/js }\nstore_dir: /tmp/js\nport: 4\n").unwrap();
    assert_eq!(o.warnings.len(), 2, "{:?}", o.warnings);
    assert!(o.warnings[0].starts_with("t.conf:1:") && o.warnings[0].contains("JetStream"));
    assert!(o.warnings[1].starts_with("t.conf:2:"));
}

#[test]
fn unknown_nested_keys_are_errors() {
    let tls = "tls { cert_file: a, key_file: b, bogus: 1 }";
    assert!(load_err(tls).contains("unknown field \"bogus\" in tls block"));
    let e = load_err("authorization {\n  user: a\n  password: b\n  frobnicate: 1\n}\n");
    assert!(
        e.starts_with("t.conf:4:") && e.contains("unknown field \"frobnicate\" in authorization"),
        "{e}"
    );
    let e = load_err("authorization { users: [ {user: a, password: b, colour: red} ] }");
    assert!(e.contains("unknown field \"colour\" in users entry"), "{e}");
    let e = load_err(
        "authorization { users: [ {user: a, password: b, permissions: { publish: x, \
         subscibe: y }} ] }",
    );
    assert!(
        e.contains("unknown field \"subscibe\" in permissions"),
        "{e}"
    );
    let e = load_err("authorization { default_permissions: { publish: { allow: a, deni: b } } }");
    assert!(e.contains("unknown field \"deni\""), "{e}");
    let e = load_err("auth_limits { max_failure: 3 }");
    assert!(
        e.contains("unknown field \"max_failure\" in auth_limits"),
        "{e}"
    );
    let e = load_err("monitor_auth { token: t, tokne: u }");
    assert!(e.contains("unknown field \"tokne\" in monitor_auth"), "{e}");
    let e = load_err("authorization { user: a, password: b, accounts: [] }");
    assert!(e.contains("not supported"), "{e}");
}

#[test]
fn variables_are_not_unknown_keys() {
    // nats-server skips keys that a `$NAME` used: they are definitions.
    let o = load(
        "TIMEOUT: \"5s\"\nwrite_deadline: $TIMEOUT\nauthorization {\n  PW: secret\n  \
                  user: a\n  password: $PW\n}\n",
    )
    .unwrap();
    assert_eq!(o.write_deadline, Duration::from_secs(5));
    assert_eq!(o.auth.user.as_deref(), Some("a"));
    // A definition nobody uses is an unknown key again.
    assert!(load_err("UNUSED: 5s\n").contains("unknown field \"UNUSED\""));
}

#[test]
fn durations_never_panic_and_are_located() {
    for (text, line) in [
        ("write_deadline: \"inf\"", 1),
        ("write_deadline: \"1e30\"", 1),
        ("port: 1\nwrite_deadline: \"-1s\"", 2),
        ("write_deadline: -1", 1),
        ("ping_interval: \"300000000h\"", 1),
        ("ping_interval: 9223372036854775807", 1),
        ("ping_interval: 100000000000000000000000000000000.0", 1),
        (
            "authorization {\n timeout: 100000000000000000000000000000000.0 }",
            2,
        ),
        ("authorization { timeout: -1 }", 1),
        ("authorization { timeout: \"NaN\" }", 1),
        ("tls { cert_file: a, key_file: b, timeout: \"1e300\" }", 1),
        ("auth_limits { ban: \"999999999h\" }", 1),
        ("lame_duck_duration: \"-2m\"", 1),
        ("lame_duck_grace_period: \"1e30\"", 1),
        // nats-server fails on these types too.
        ("ping_interval: 1.5", 1),
        ("lame_duck_duration: 60", 1),
    ] {
        let e = load_err(text);
        assert!(e.starts_with(&format!("t.conf:{line}:")), "{text}: {e}");
    }
    // `1e300` unquoted is a size-suffixed number to the lexer (e = exa);
    // whatever it becomes, it must be refused or accepted without panic.
    for text in [
        "authorization { timeout: 1e300 }",
        "write_deadline: 1e30",
        "ping_interval: 1e3",
    ] {
        let _ = load(text);
    }
}

#[test]
fn zero_timers_mean_the_default_with_a_warning() {
    let o = load("ping_interval: 0\nwrite_deadline: \"0s\"\nping_max: 0\n").unwrap();
    assert_eq!(o.ping_interval, DEFAULT_PING_INTERVAL);
    assert_eq!(o.write_deadline, DEFAULT_WRITE_DEADLINE);
    assert_eq!(o.ping_max, DEFAULT_PING_MAX);
    assert!(
        o.warnings
            .iter()
            .any(|w| w.starts_with("t.conf:1:") && w.contains("ping_interval of 0")),
        "{:?}",
        o.warnings
    );
    assert!(o.warnings.iter().any(|w| w.starts_with("t.conf:2:")));
    // Options built in code must not reach the timers with a zero.
    let o = Options {
        ping_interval: Duration::ZERO,
        ..Options::default()
    };
    assert!(o.validate().unwrap_err().msg.contains("ping_interval"));
    let o = Options {
        write_deadline: Duration::ZERO,
        ..Options::default()
    };
    assert!(o.validate().is_err());
}

#[test]
fn numbers_are_range_checked() {
    for text in [
        "port: 70000",
        "port: -5",
        "http_port: 4294971518",
        "ping_max: -1",
        "max_pending: -1",
        "max_payload: \"99999999999999999999999GB\"",
        "max_control_line: 3000000000",
        "max_payload: 1.5",
        "listen: \"0.0.0.0:99999\"",
        "auth_limits { max_failures: 5000000000 }",
    ] {
        let _ = load_err(text);
    }
    // Sizes past i64 are already refused by the parser, with a position.
    assert!(load_err("max_pending: 99999999999999999999").starts_with("t.conf:1:"));
    assert!(load_err("max_pending: 9999999EB").starts_with("t.conf:1:"));
}

#[test]
fn lame_duck_options() {
    let o = load("").unwrap();
    assert_eq!(o.lame_duck_duration, Duration::from_secs(120));
    assert_eq!(o.lame_duck_grace_period, Duration::from_secs(10));
    let o = load("lame_duck_duration: \"45s\"\nlame_duck_grace_period: \"5s\"").unwrap();
    assert_eq!(o.lame_duck_duration, Duration::from_secs(45));
    assert_eq!(o.lame_duck_grace_period, Duration::from_secs(5));
    let e = load_err("lame_duck_duration: \"10s\"");
    assert_eq!(
        e,
        "t.conf:1:21: invalid lame_duck_duration of 10s, minimum is 30 seconds"
    );
    let e = load_err("lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"30s\"");
    assert!(
        e.starts_with("t.conf:2:")
            && e.contains("lame duck grace period (30s) should be strictly lower than lame duck duration (30s)"),
        "{e}"
    );
    // In code, short durations are allowed (tests), the ordering is not.
    let o = Options {
        lame_duck_duration: Duration::from_millis(200),
        lame_duck_grace_period: Duration::from_millis(50),
        ..Options::default()
    };
    o.validate().unwrap();
    let o = Options {
        lame_duck_grace_period: Duration::from_secs(120),
        ..Options::default()
    };
    let e = o.validate().unwrap_err().to_string();
    assert_eq!(
        e,
        "lame duck grace period (2m0s) should be strictly lower than lame duck duration (2m0s)"
    );
}

#[test]
fn cross_field_rules() {
    let e = load_err("max_pending: 1KB\nmax_payload: 2KB\n");
    assert!(
        e.starts_with("t.conf:2:") && e.contains("cannot be higher than max_pending"),
        "{e}"
    );
    let e = load_err("max_payload: 100MB\nmax_pending: 1GB");
    assert!(e.contains("64MB"), "{e}");
    let e = load_err("https_port: 8443\n");
    assert!(
        e.starts_with("t.conf:1:") && e.contains("needs a tls block"),
        "{e}"
    );
    let e = load_err("server_name: \"a b\"");
    assert!(e.contains("spaces"), "{e}");
}

/// A scratch directory with a self-signed-looking PEM file (content is not
/// parsed by validate, only readability).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "rnats-config-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["cert.pem", "key.pem", "ca.pem"] {
            std::fs::write(dir.join(f), "-----BEGIN CERTIFICATE-----\n").unwrap();
        }
        Scratch(dir)
    }

    fn p(&self, f: &str) -> String {
        self.0.join(f).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn tls_files_are_checked_at_load() {
    let d = Scratch::new("tlsfiles");
    let good = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
        d.p("cert.pem"),
        d.p("key.pem"),
        d.p("ca.pem")
    );
    load(&good).unwrap();
    let missing_ca = good.replace("ca.pem", "nope.pem");
    let e = load_err(&missing_ca);
    assert!(
        e.starts_with("t.conf:4:")
            && e.contains("cannot read tls ca_file")
            && e.contains("nope.pem"),
        "{e}"
    );
    let e = load_err(&good.replace("cert.pem", "gone.pem"));
    assert!(e.starts_with("t.conf:2:") && e.contains("cert_file"), "{e}");
    let e = load_err(&good.replace("key.pem\"", "\"\n  #"));
    assert!(e.contains("key_file"), "{e}");
    // A directory is not a certificate.
    let e = load_err(&good.replace(&d.p("ca.pem"), &d.0.display().to_string()));
    assert!(e.contains("ca_file"), "{e}");

    // verify without a CA, as --tlsverify without --tlscacert would build.
    let mut o = load(&good).unwrap();
    if let Some(t) = o.tls.as_mut() {
        t.ca_file = None;
    }
    o.positions.forget("tls.ca_file");
    let e = o.validate().unwrap_err().to_string();
    assert!(e.contains("ca_file"), "{e}");

    // monitor_auth's CA too.
    let e = load_err(&format!(
        "{good}https_port: -1\nmonitor_auth {{ ca_file: \"{}\" }}\n",
        d.p("missing-ca.pem")
    ));
    assert!(
        e.starts_with("t.conf:8:") && e.contains("monitor_auth ca_file"),
        "{e}"
    );
    load(&format!(
        "{good}https_port: -1\nmonitor_auth {{ ca_file: \"{}\" }}\n",
        d.p("ca.pem")
    ))
    .unwrap();
}

#[test]
fn security_blocks() {
    use crate::config::value::testing::{arr, i, map, s};
    let top = |k: &str, v| vec![(k.to_string(), v)];
    let mut o = Options::default();
    let mut m = top(
        "authorization",
        map(vec![
            ("timeout", i(3)),
            (
                "users",
                arr(vec![map(vec![("user", s("a")), ("password", s("b"))])]),
            ),
        ]),
    );
    m.extend(top(
        "tls",
        map(vec![("cert_file", s("c.pem")), ("key_file", s("k.pem"))]),
    ));
    m.extend(top("auth_limits", map(vec![("max_failures", i(4))])));
    o.apply(&m).unwrap();
    assert_eq!(o.auth_timeout, Duration::from_secs(3));
    assert_eq!(o.auth.users.len(), 1);
    assert!(o.auth.is_enabled());
    assert_eq!(
        o.tls.as_ref().map(|t| t.cert_file.clone()),
        Some("c.pem".into())
    );
    assert_eq!(o.auth_limits.max_failures, 4);
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);

    let bad = top("tls", map(vec![("cert_file", s("c.pem"))]));
    assert!(Options::default().apply(&bad).is_err());
}

#[test]
fn security_blocks_from_text() {
    // The seed security document's example, bcrypt hash unquoted.
    let map = parser::parse_str(
        "listen: 127.0.0.1:4443\n\
         tls {\n  cert_file: \"./server-cert.pem\"\n  key_file: \"./server-key.pem\"\n  \
         timeout: 2\n}\n\
         authorization {\n  user: derek\n  \
         password: $2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG\n  \
         timeout: 1\n}\n",
        "sec.conf",
    )
    .unwrap();
    let mut o = Options::default();
    o.apply(&map).unwrap();
    assert_eq!(o.auth.user.as_deref(), Some("derek"));
    assert_eq!(
        o.auth.password.as_ref().and_then(|p| p.bcrypt_cost()),
        Some(11)
    );
    assert_eq!(o.auth_timeout, Duration::from_secs(1));
    let tls = o.tls.expect("tls");
    assert_eq!(tls.timeout, Duration::from_secs(2));
    assert_eq!(tls.key_file, std::path::PathBuf::from("./server-key.pem"));
}

#[test]
fn bad_value_names_position() {
    let map = parser::parse_str("port: 1\nmax_payload: true\n", "x.conf").unwrap();
    let e = Options::default().apply(&map).unwrap_err();
    assert_eq!((e.line, e.file.as_str()), (2, "x.conf"));
}

#[test]
fn zero_tls_timeout_means_the_default() {
    use crate::config::value::testing::{i, map, s};
    let mut cx = Context::default();
    let block = map(vec![
        ("cert_file", s("c")),
        ("key_file", s("k")),
        ("timeout", i(0)),
    ]);
    let t = TlsOptions::parse_block(&block, &mut cx).unwrap();
    assert_eq!(t.timeout, tls::DEFAULT_TLS_TIMEOUT);
    assert_eq!(cx.warnings.len(), 1, "{:?}", cx.warnings);
}

#[test]
fn high_auth_timeout_warns_like_nats_server() {
    let o = load("authorization { timeout: 120 }").unwrap();
    assert!(
        o.warnings.iter().any(|w| w.contains("is high")),
        "{:?}",
        o.warnings
    );
}

#[test]
fn go_style_duration_printing() {
    assert_eq!(fmt_duration(Duration::from_secs(120)), "2m0s");
    assert_eq!(fmt_duration(Duration::from_secs(10)), "10s");
    assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
    assert_eq!(fmt_duration(Duration::from_millis(500)), "500ms");
    assert_eq!(fmt_duration(Duration::from_secs(3723)), "1h2m3s");
    assert_eq!(fmt_duration(Duration::ZERO), "0s");
}

#[test]
fn file_errors_and_display() {
    let e = Options::from_file(std::path::Path::new("/nonexistent/rnats.conf")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/rnats.conf: cannot read config file"),
        "{e}"
    );
}

#[test]
fn max_control_line_is_capped_to_keep_the_trie_recursion_bounded() {
    let e = load_err("max_control_line: 8193");
    assert!(e.contains("cannot be higher than 8192"), "{e}");
    assert_eq!(
        load("max_control_line: 8192")
            .expect("at the cap")
            .max_control_line,
        8192
    );
}

#[test]
fn busy_poll_is_a_bounded_duration() {
    assert_eq!(load("").unwrap().busy_poll, DEFAULT_BUSY_POLL);
    assert_eq!(
        load("busy_poll: \"250us\"").unwrap().busy_poll,
        Duration::from_micros(250)
    );
    assert_eq!(load("busy_poll: 0").unwrap().busy_poll, Duration::ZERO);
    assert_eq!(
        load_err("port: 1\nbusy_poll: \"20ms\""),
        "t.conf:2:12: busy_poll is too long (at most 10ms)"
    );
    let e = load_err("busy_poll: \"-1us\"");
    assert!(e.starts_with("t.conf:1:"), "{e}");
    let e = load_err("busy_poll: true");
    assert!(e.starts_with("t.conf:1:") && e.contains("busy_poll"), "{e}");
}

#[test]
fn watch_config_is_off_or_at_least_100ms() {
    assert_eq!(load("").unwrap().watch_config, Duration::ZERO);
    assert_eq!(
        load("watch_config: \"5s\"").unwrap().watch_config,
        Duration::from_secs(5)
    );
    assert_eq!(
        load_err("watch_config: \"50ms\""),
        "t.conf:1:15: watch_config must be 0 (off) or at least 100ms"
    );
}

#[test]
fn watched_files_are_the_config_files_and_the_tls_files() {
    let o = Options {
        config_file: Some("/etc/rnats/rnats.conf".into()),
        config_files: vec![
            "/etc/rnats/..v1/rnats.conf".into(),
            "/etc/rnats/..v1/inc.conf".into(),
        ],
        tls: Some(TlsOptions {
            ca_file: Some("/tls/ca.pem".into()),
            ..TlsOptions::new("/tls/cert.pem", "/tls/key.pem")
        }),
        ..Options::default()
    };
    let want: Vec<std::path::PathBuf> = [
        "/etc/rnats/rnats.conf",
        "/etc/rnats/..v1/rnats.conf",
        "/etc/rnats/..v1/inc.conf",
        "/tls/cert.pem",
        "/tls/key.pem",
        "/tls/ca.pem",
    ]
    .iter()
    .map(Into::into)
    .collect();
    assert_eq!(o.watched_files(), want);
}
