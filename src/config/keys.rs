//! Top-level keys that nats-server v2.15.1 knows and rnats does not
//! implement. Every such key is an error ("not supported by rnats yet"),
//! except for a short allow-list of keys whose absence cannot widen who
//! may connect or what they may do; those are ignored with a warning.
//!
//! Why fail closed: a configuration written for nats-server that says
//! `operator`, `accounts { ... }` or `no_auth_user` relies on those keys
//! for its authentication. Ignoring them would start a server without it.

/// What to do with a nats-server key rnats does not implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unimplemented {
    /// Refuse the configuration; the text names the feature.
    Refuse(&'static str),
    /// Warn and go on; the text says why ignoring it is safe.
    Ignore(&'static str),
}

/// The allow-list: keys rnats ignores with a warning, and why that is
/// safe. Kept in one table so README.md can list exactly these.
pub const IGNORED: &[(&[&str], &str)] = &[
    (
        &["jetstream", "store_dir", "storedir", "default_js_domain"],
        "JetStream is not part of rnats; its API subjects get no responders",
    ),
    (
        &["no_system_account", "no_system", "no_sys_acc"],
        "the system account only answers its own users' monitoring requests; with no users it serves no one",
    ),
    (
        &[
            "logtime_utc",
            "trace_verbose",
            "trace_headers",
            "max_traced_msg_len",
        ],
        "only changes the format or detail of log lines",
    ),
    (
        &["prof_port", "prof_block_rate"],
        "rnats has no profiling endpoint, so no port is opened",
    ),
    (
        &[
            "disable_sublist_cache",
            "no_sublist_cache",
            "no_fast_producer_stall",
        ],
        "a performance tuning knob of nats-server's internals",
    ),
    (
        &["max_closed_clients"],
        "only sizes the closed-connections list of the monitor",
    ),
    (
        &["server_tags", "server_metadata"],
        "descriptive metadata only",
    ),
    (
        &["connect_error_reports", "reconnect_error_reports"],
        "only affects how often route/leafnode connect errors are logged",
    ),
];

/// Keys refused with the feature they belong to. Everything nats-server's
/// top level accepts that is neither implemented nor in [`IGNORED`].
const REFUSED: &[(&[&str], &str)] = &[
    (
        &["resolver_tls", "resolver_pinned_accounts"],
        "URL account resolvers",
    ),
    (&["default_sentinel"], "the default sentinel JWT"),
    (&["gateway"], "gateways"),
    (&["leaf", "leafnodes"], "leaf nodes"),
    (&["websocket", "ws"], "WebSocket"),
    (&["mqtt"], "MQTT"),
    (&["ocsp", "ocsp_cache"], "OCSP"),
    (
        &["proxies", "proxy_protocol"],
        "proxy protocol / trusted proxies",
    ),
    (&["allow_non_tls"], "mixed TLS and plain connections"),
    (&["client_advertise"], "advertised client URLs"),
    (&["http_base_path"], "a monitoring base path"),
    (&["syslog", "remote_syslog"], "syslog"),
    (
        &[
            "logfile_size_limit",
            "log_size_limit",
            "logfile_max_num",
            "log_max_num",
        ],
        "log file rotation",
    ),
    (&["ports_file_dir"], "the ports file"),
    (
        &["max_sub_tokens", "max_subscription_tokens"],
        "the subject token limit",
    ),
    (&["no_header_support"], "turning message headers off"),
    (&["write_timeout"], "write timeout policies"),
    (&["feature_flags"], "feature flags"),
];

/// Classify a lower-cased top-level key rnats does not implement; `None`
/// means nats-server does not know it either.
pub fn unimplemented(key: &str) -> Option<Unimplemented> {
    let find = |table: &[(&[&str], &'static str)]| {
        table
            .iter()
            .find(|(keys, _)| keys.contains(&key))
            .map(|(_, why)| *why)
    };
    if let Some(why) = find(IGNORED) {
        return Some(Unimplemented::Ignore(why));
    }
    find(REFUSED).map(Unimplemented::Refuse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_relevant_keys_are_refused() {
        for k in [
            "resolver_tls",
            "leafnodes",
            "gateway",
            "websocket",
            "mqtt",
            "ocsp",
            "default_sentinel",
        ] {
            assert!(
                matches!(unimplemented(k), Some(Unimplemented::Refuse(_))),
                "{k}"
            );
        }
        assert!(matches!(
            unimplemented("jetstream"),
            Some(Unimplemented::Ignore(_))
        ));
        assert_eq!(unimplemented("foo_bar"), None);
    }

    #[test]
    fn tables_do_not_overlap() {
        for (keys, _) in IGNORED {
            for k in *keys {
                assert!(
                    !REFUSED.iter().any(|(r, _)| r.contains(k)),
                    "{k} is in both tables"
                );
            }
        }
    }
}
