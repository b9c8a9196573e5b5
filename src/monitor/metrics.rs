//! `/metrics`: the /varz numbers in Prometheus' text format, named as the
//! prometheus-nats-exporter names them (`gnatsd_varz_<field>`, label
//! `server_id`), so dashboards and alerts written for nats-server behind
//! that exporter read rnats without one.

use std::fmt::Write;

use serde_json::Value;

use crate::server::ServerContext;

/// Monotonic /varz fields (Prometheus counters); every other number is a
/// gauge.
const COUNTERS: &[&str] = &[
    "total_connections",
    "in_msgs",
    "out_msgs",
    "in_bytes",
    "out_bytes",
    "slow_consumers",
    "restarts",
    "stale_connections",
    "bcrypt_verifications",
];

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn metrics(ctx: &ServerContext) -> String {
    render(&super::varz(ctx))
}

/// Every number of a /varz document (one level of nested objects too,
/// e.g. `auth_limits`), booleans as 0/1.
fn render(varz: &Value) -> String {
    let mut out = String::new();
    let Some(fields) = varz.as_object() else {
        return out;
    };
    let id = fields
        .get("server_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let label = format!("{{server_id=\"{}\"}}", escape(id));
    let mut emit = |name: &str, kind: &str, v: &Value| {
        let n = match v {
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => u8::from(*b).to_string(),
            _ => return,
        };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{label} {n}");
    };
    for (k, v) in fields {
        match v {
            Value::Object(inner) => {
                for (ik, iv) in inner {
                    emit(&metric_name(&format!("{k}_{ik}")), "gauge", iv);
                }
            }
            _ => {
                let kind = if COUNTERS.contains(&k.as_str()) {
                    "counter"
                } else {
                    "gauge"
                };
                emit(&metric_name(k), kind, v);
            }
        }
    }
    out
}

/// `gnatsd_varz_` + the field, with anything outside `[a-zA-Z0-9_]` made
/// an underscore (Prometheus' metric name rule).
fn metric_name(field: &str) -> String {
    let clean: String = field
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("gnatsd_varz_{clean}")
}

/// A label value: backslash, double quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_become_samples_and_the_rest_is_left_out() {
        let text = render(&json!({
            "server_id": "NABC",
            "in_msgs": 3,
            "connections": 2,
            "auth_required": true,
            "auth_timeout": 2.5,
            "uptime": "1m",
            "connect_urls": ["a:4222"],
            "auth_limits": {"banned": 1, "mode": "x"},
        }));
        for line in [
            "# TYPE gnatsd_varz_in_msgs counter",
            "gnatsd_varz_in_msgs{server_id=\"NABC\"} 3",
            "# TYPE gnatsd_varz_connections gauge",
            "gnatsd_varz_connections{server_id=\"NABC\"} 2",
            "gnatsd_varz_auth_required{server_id=\"NABC\"} 1",
            "gnatsd_varz_auth_timeout{server_id=\"NABC\"} 2.5",
            "gnatsd_varz_auth_limits_banned{server_id=\"NABC\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        for absent in ["uptime", "connect_urls", "auth_limits_mode", "server_id{"] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
    }

    #[test]
    fn names_and_labels_are_sanitised() {
        assert_eq!(metric_name("a-b.c"), "gnatsd_varz_a_b_c");
        assert_eq!(escape("x\"y\\z\n"), "x\\\"y\\\\z\\n");
    }
}
