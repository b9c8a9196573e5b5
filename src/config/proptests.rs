//! Property tests: no configuration text makes the parser,
//! `Options::apply` or `Options::validate` panic.

use proptest::prelude::*;

use super::*;

fn run(text: &str) {
    if let Ok(parsed) = parser::parse_str_full(text, "p.conf") {
        let mut o = Options::default();
        if o.apply_parsed(&parsed).is_ok() {
            let _ = o.validate();
        }
    }
}

/// Keys rnats knows (and some it refuses), so generated files get past
/// the unknown-key check often enough to exercise the value readers.
const KEYS: &[&str] = &[
    "port",
    "listen",
    "http",
    "https_port",
    "server_name",
    "max_payload",
    "max_pending",
    "max_control_line",
    "max_connections",
    "write_deadline",
    "ping_interval",
    "ping_max",
    "lame_duck_duration",
    "lame_duck_grace_period",
    "authorization",
    "tls",
    "auth_limits",
    "monitor_auth",
    "timeout",
    "user",
    "password",
    "users",
    "permissions",
    "publish",
    "subscribe",
    "allow",
    "deny",
    "allow_responses",
    "cert_file",
    "key_file",
    "ca_file",
    "verify",
    "window",
    "ban",
    "jetstream",
    "cluster",
    "routes",
    "name",
    "host",
    "advertise",
    "no_advertise",
    "connect_retries",
    "pool_size",
    "compression",
    "verify_cert_and_check_known_urls",
];

const VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "65536",
    "9223372036854775807",
    "-9223372036854775808",
    "1e300",
    "1.5",
    "-0.5",
    "100000000000000000000000000000000.0",
    "\"inf\"",
    "\"NaN\"",
    "\"1e30\"",
    "\"-1s\"",
    "\"0s\"",
    "\"2s\"",
    "\"300000000h\"",
    "\"876000h\"",
    "1MB",
    "\"99999999999GB\"",
    "true",
    "\"a b\"",
    "\"127.0.0.1:-1\"",
    "\"h:99999\"",
    "\"nats://u:p%41@h:1\"",
    "\"nats-route://[::1\"",
    "\"tls://h:1/x\"",
    "\"u:p@h\"",
    "\"%\"",
    "[]",
    "[a, \"b c\", 1]",
    "{}",
    "$X",
];

fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        proptest::sample::select(VALUES).prop_map(str::to_string),
        "[a-z0-9.:$\"-]{0,8}",
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec((proptest::sample::select(KEYS), inner.clone()), 0..4)
                .prop_map(|kv| {
                    let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    format!("{{ {} }}", body.join("\n"))
                }),
            proptest::collection::vec(inner, 0..3)
                .prop_map(|items| format!("[{}]", items.join(", "))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        run(&text);
    }

    #[test]
    fn structured_configs_never_panic(
        entries in proptest::collection::vec(
            (proptest::sample::select(KEYS), value()), 0..6)
    ) {
        let text: String = entries
            .iter()
            .map(|(k, v)| format!("X: 1\n{k}: {v}\n"))
            .collect();
        run(&text);
    }

    /// Route URLs, advertise values and the `--cluster`/`--routes` flags
    /// never panic, whatever the text (byte offsets inside multi-byte
    /// characters, lone `%`, brackets).
    #[test]
    fn cluster_strings_never_panic(text in "\\PC{0,60}") {
        let _ = cluster::RouteUrl::parse(&text);
        let _ = cluster::parse_advertise(&text);
        let mut o = Options::default();
        let flags = cluster::ClusterFlags {
            listen: Some(text.clone()),
            routes: Some(text.clone()),
            ..Default::default()
        };
        if flags.apply(&mut o).is_ok() {
            let _ = o.validate();
        }
    }

    /// Credentials survive percent-encoding, and the display form shows
    /// everything but the password.
    #[test]
    fn route_url_credentials_round_trip(
        user in "[a-z]{1,8}",
        pass in "[A-Z@:/%?# é]{0,12}",
        host in "[a-z][a-z0-9.-]{0,10}",
        port in 1u16..,
    ) {
        let enc: String = pass
            .bytes()
            .map(|b| if b.is_ascii_uppercase() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let r = cluster::RouteUrl::parse(&format!("nats-route://{user}:{enc}@{host}:{port}"))
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(r.user.as_deref(), Some(user.as_str()));
        prop_assert_eq!(r.password.as_deref(), Some(pass.as_str()));
        prop_assert_eq!((r.host.as_str(), r.port), (host.as_str(), port));
        prop_assert_eq!(r.display, format!("nats-route://{user}:[REDACTED]@{host}:{port}"));
    }
}
