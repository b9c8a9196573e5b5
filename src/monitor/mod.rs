//! HTTP monitoring: /healthz, /varz, /connz, /accountz, /subsz with nats-server's
//! field names. The JSON documents are built here; [`http`] serves them
//! over HTTP/1.1 (hyper, keep-alive) on the plain and the HTTPS port and
//! checks `monitor_auth`.

mod closed;
mod http;
mod metrics;
mod routez;

pub use http::{HEAD_READ_TIMEOUT, MAX_HEAD, WRITE_STALL_TIMEOUT, serve_connection};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::ConnShared;
use crate::server::ServerContext;

pub use closed::{ClosedConn, InlineStr, MAX_CLOSED};

/// Route a request path and its (still percent-encoded) query string to
/// the JSON document. Query parameters are decoded as HTML forms and Go's
/// `url.ParseQuery` decode them (`%XX` escapes, `+` for a space); the first
/// occurrence of a key counts.
pub fn route(ctx: &ServerContext, path: &str, query: &str) -> (u16, Value) {
    let q = |k: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.into_owned())
    };
    let flag = |k: &str| q(k).is_some_and(|v| v == "1" || v == "true");
    match path.trim_end_matches('/') {
        "" => (
            200,
            json!({"endpoints": ["/varz", "/connz", "/routez", "/accountz", "/subsz", "/healthz", "/metrics"]}),
        ),
        "/healthz" => (200, json!({"status": "ok"})),
        "/varz" => (200, varz(ctx)),
        "/connz" => {
            let o = ConnzOptions {
                subscriptions: flag("subs"),
                auth: flag("auth"),
                state: if q("state").is_some_and(|v| v == "closed") {
                    CONN_CLOSED
                } else {
                    0
                },
                offset: q("offset").and_then(|v| v.parse().ok()).unwrap_or(0),
                limit: q("limit").and_then(|v| v.parse().ok()).unwrap_or(0),
                account: q("acc").filter(|a| !a.is_empty()),
            };
            (200, connz(ctx, &o))
        }
        "/accountz" => match accountz(ctx, q("acc").as_deref().filter(|a| !a.is_empty())) {
            Ok(v) => (200, v),
            // nats-server: 400 and the error's text.
            Err(e) => (400, json!({"error": e})),
        },
        "/subsz" | "/subscriptionsz" => (200, subsz(ctx)),
        "/routez" => (200, routez::routez(ctx, flag("subs"))),
        _ => (404, json!({"error": "not found"})),
    }
}

/// `ConnzOptions.State` of nats-server: 0 open, 1 closed (2, all, is
/// treated as open).
pub const CONN_CLOSED: u8 = 1;

/// What /connz shows: its query parameters, or the JSON body of a
/// `$SYS.REQ.SERVER.*.CONNZ` request (nats-server's `ConnzOptions` keys;
/// keys rnats does not support are ignored, as Go ignores unknown keys).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConnzOptions {
    /// List each connection's subscriptions (`subs=1` over HTTP).
    pub subscriptions: bool,
    /// Show the account (and name tag) of each connection.
    pub auth: bool,
    pub offset: usize,
    /// 0: nats-server's default, 1024.
    pub limit: usize,
    pub state: u8,
    /// Only the connections bound to this account.
    #[serde(rename = "acc")]
    pub account: Option<String>,
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Uptime in nats-server's style: "1d2h3m4s", "5m6s", "7s".
pub fn uptime(d: Duration) -> String {
    let mut s = d.as_secs();
    let days = s / 86400;
    s %= 86400;
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if days > 0 {
        out += &format!("{days}d");
    }
    if days > 0 || h > 0 {
        out += &format!("{h}h");
    }
    if days > 0 || h > 0 || m > 0 {
        out += &format!("{m}m");
    }
    out += &format!("{sec}s");
    out
}

/// Resident set size in bytes (Linux), 0 where unknown.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// The `cluster` section of /varz.
fn cluster_json(ctx: &ServerContext) -> Value {
    match ctx.cluster.get() {
        None => json!({}),
        Some(c) => json!({
            "name": c.name,
            "addr": c.listen_addr.ip().to_string(),
            "cluster_port": c.listen_addr.port(),
            "auth_timeout": c.opts.auth.as_ref().map(|a| a.timeout.as_secs_f64()).unwrap_or(0.0),
            "urls": c.opts.routes.iter().map(|r| r.display.clone()).collect::<Vec<_>>(),
            "tls_timeout": c.opts.tls.as_ref().map(|t| t.timeout.as_secs_f64()).unwrap_or(0.0),
            "tls_required": c.opts.tls.is_some(),
            "tls_verify": c.opts.tls.is_some(),
        }),
    }
}

pub(crate) fn varz(ctx: &ServerContext) -> Value {
    let o = ctx.opts();
    let now = SystemTime::now();
    let up = now.duration_since(ctx.start_time).unwrap_or_default();
    let s = &ctx.stats;
    let mut v = json!({
        "server_id": ctx.server_id,
        "server_name": ctx.server_name,
        "version": crate::protocol::info::NATS_COMPAT_VERSION,
        "rnats_version": crate::server::VERSION,
        "proto": 1,
        "go": crate::RUST_TOOLCHAIN,
        "host": o.host,
        "port": ctx.client_addr.port(),
        "max_connections": o.max_connections,
        "max_subscriptions": o.max_subscriptions,
        "ping_interval": o.ping_interval.as_nanos() as u64,
        "ping_max": o.ping_max,
        "http_host": o.http_host,
        "http_port": o.http_port,
        "https_port": o.https_port,
        "auth_timeout": o.auth_timeout.as_secs_f64(),
        "max_control_line": o.max_control_line,
        "max_payload": o.max_payload,
        "max_pending": o.max_pending,
        "write_deadline": o.write_deadline.as_nanos() as u64,
        "start": rfc3339(ctx.start_time),
        "now": rfc3339(now),
        "uptime": uptime(up),
        "mem": rss_bytes(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "connections": ctx.conns.len(),
        "total_connections": s.total_connections.load(Ordering::Relaxed),
        "routes": ctx.cluster.get().map(|c| c.num_routes()).unwrap_or(0),
        "remotes": ctx.cluster.get().map(|c| c.num_routes()).unwrap_or(0),
        "cluster": cluster_json(ctx),
        "leafnodes": 0,
        "in_msgs": s.in_msgs.load(Ordering::Relaxed),
        "out_msgs": s.out_msgs.load(Ordering::Relaxed),
        "in_bytes": s.in_bytes.load(Ordering::Relaxed),
        "out_bytes": s.out_bytes.load(Ordering::Relaxed),
        "slow_consumers": s.slow_consumers.load(Ordering::Relaxed),
        "restarts": s.restarts.load(Ordering::Relaxed),
        "stale_connections": s.stale_connections.load(Ordering::Relaxed),
        "subscriptions": ctx.accounts.total_subscriptions(),
        "auth_limits": ctx.auth().limiter().stats(),
        "bcrypt_verifications": ctx.auth().bcrypt_pool().verifications(),
        "tls_required": ctx.tls().is_some(),
        "auth_required": ctx.auth().auth_required(),
        "config_load_time": rfc3339(ctx.start_time),
        "system_account": o.system_account(),
    });
    // As nats-server: only when there are other nodes' URLs to give.
    let urls = ctx.connect_urls();
    if !urls.is_empty() {
        v["connect_urls"] = json!(urls);
    }
    v
}

fn conn_json(c: &ConnShared, subs: bool, auth: bool, now: SystemTime) -> Value {
    let meta = c.meta.lock().clone();
    let (out_msgs, out_bytes) = c.out.out_counts();
    let mut v = json!({
        "cid": c.cid,
        "kind": "Client",
        "type": "nats",
        "ip": c.peer.ip().to_string(),
        "port": c.peer.port(),
        "start": rfc3339(c.start),
        "uptime": uptime(now.duration_since(c.start).unwrap_or_default()),
        "pending_bytes": c.out.pending(),
        "in_msgs": c.in_msgs.load(Ordering::Relaxed),
        "out_msgs": out_msgs,
        "in_bytes": c.in_bytes.load(Ordering::Relaxed),
        "out_bytes": out_bytes,
        "subscriptions": c.num_subs(),
    });
    set_client_strings(&mut v, &meta.name, &meta.lang, &meta.version);
    if let Some(u) = meta.user {
        v["authorized_user"] = json!(u);
    }
    // nats-server shows the account with `auth=1` only.
    if auth && let Some(a) = c.account() {
        v["account"] = json!(a.name);
        v["name_tag"] = json!(a.name);
    }
    if let Some(t) = meta.tls_version {
        v["tls_version"] = json!(t);
    }
    if let Some(t) = meta.tls_cipher {
        v["tls_cipher_suite"] = json!(t);
    }
    // nats-server lists subscriptions only for connections that have some.
    if subs && c.num_subs() > 0 {
        let list: Vec<String> = c
            .subs
            .lock()
            .values()
            .map(|s| String::from_utf8_lossy(&s.subject).into_owned())
            .collect();
        v["subscriptions_list"] = json!(list);
    }
    v
}

/// `name`, `lang` and `version` as nats-server shows them: omitted when
/// the client did not send them.
fn set_client_strings(v: &mut Value, name: &str, lang: &str, version: &str) {
    for (key, value) in [("name", name), ("lang", lang), ("version", version)] {
        if !value.is_empty() {
            v[key] = json!(value);
        }
    }
}

pub(crate) fn connz(ctx: &ServerContext, o: &ConnzOptions) -> Value {
    let now = SystemTime::now();
    let (offset, limit) = (o.offset, if o.limit == 0 { 1024 } else { o.limit });
    let wanted = |acc: Option<&str>| match &o.account {
        None => true,
        Some(want) => acc == Some(want.as_str()),
    };
    let (total, conns): (usize, Vec<Value>) = if o.state == CONN_CLOSED {
        let closed = ctx.closed.lock();
        let matching: Vec<&ClosedConn> = closed
            .iter()
            .filter(|c| wanted(c.account.as_ref().map(|a| a.name())))
            .collect();
        let list = matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|c| {
                let mut v = json!({
                    "cid": c.cid, "kind": "Client", "type": "nats", "ip": c.ip.to_string(),
                    "port": c.port, "start": rfc3339(c.start), "stop": rfc3339(c.stop),
                    "reason": c.reason.to_string(),
                    "uptime": uptime(c.stop.duration_since(c.start).unwrap_or_default()),
                    "in_msgs": c.in_msgs, "in_bytes": c.in_bytes, "out_msgs": c.out_msgs,
                    "out_bytes": c.out_bytes, "subscriptions": 0, "pending_bytes": 0,
                });
                set_client_strings(&mut v, c.name.as_str(), c.lang.as_str(), c.version.as_str());
                if o.auth
                    && let Some(a) = &c.account
                {
                    v["account"] = json!(a.name());
                    v["name_tag"] = json!(a.name());
                }
                v
            })
            .collect();
        (matching.len(), list)
    } else {
        let mut all: Vec<Arc<ConnShared>> = ctx
            .conns
            .iter()
            .filter(|e| wanted(e.value().account().map(|a| a.name.as_str())))
            .map(|e| e.value().clone())
            .collect();
        all.sort_by_key(|c| c.cid);
        let list = all
            .iter()
            .skip(offset)
            .take(limit)
            .map(|c| conn_json(c, o.subscriptions, o.auth, now))
            .collect();
        (all.len(), list)
    };
    json!({
        "server_id": ctx.server_id,
        "now": rfc3339(now),
        "num_connections": conns.len(),
        "total": total,
        "offset": offset,
        "limit": limit,
        "connections": conns,
    })
}

/// /accountz: the account names, or (`acc`) one account's detail in
/// nats-server's `account_detail` shape. Left out of the detail: nats-server's
/// `sublist_stats` (rnats's tries keep no match/cache statistics), `jwt`,
/// `issuer_key` and `decoded_jwt` (operator mode), `mappings` and
/// `jetstream` details, and the `$SYS.REQ.ACCOUNT...` service imports
/// nats-server adds to every account (rnats has no per-account system
/// services). rnats adds `rnats_stats` (the account's counters) and
/// `rnats_limits` (its `limits {}`).
pub(crate) fn accountz(ctx: &ServerContext, acc: Option<&str>) -> Result<Value, String> {
    let opts = ctx.opts();
    let system = opts.system_account();
    let mut v = json!({
        "server_id": ctx.server_id,
        "now": rfc3339(SystemTime::now()),
        "system_account": system,
    });
    let Some(name) = acc else {
        let mut names: Vec<String> = ctx.accounts.all().iter().map(|a| a.name.clone()).collect();
        names.sort();
        v["accounts"] = json!(names);
        return Ok(v);
    };
    let account = ctx
        .accounts
        .get(name)
        .ok_or_else(|| format!("Account {name} does not exist"))?;
    let cfg = opts.accounts.iter().find(|c| c.name == name);
    let mut d = json!({
        "account_name": account.name,
        "update_time": rfc3339(account.created),
    });
    if name == system {
        d["is_system"] = json!(true);
    }
    let st = &account.stats;
    let limits = account.limits();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let rest = json!({
        "expired": false,
        "complete": true,
        "jetstream_enabled": false,
        "leafnode_connections": 0,
        "client_connections": account.num_connections(),
        "subscriptions": account.router.count(),
    });
    if let (Some(d), Some(rest)) = (d.as_object_mut(), rest.as_object()) {
        d.extend(rest.clone());
    }
    if let Some(cfg) = cfg {
        let exports: Vec<Value> = cfg
            .exports
            .iter()
            .map(|e| {
                let mut x = json!({
                    "subject": e.subject,
                    "type": if e.service.is_some() { "service" } else { "stream" },
                });
                if let Some(s) = &e.service {
                    x["response_type"] = json!(s.response.as_str());
                }
                if let Some(a) = &e.accounts {
                    x["approved_accounts"] = json!(a);
                }
                x
            })
            .collect();
        if !exports.is_empty() {
            d["exports"] = json!(exports);
        }
        let imports: Vec<Value> = cfg
            .imports
            .iter()
            .map(|i| {
                let mut x = json!({"subject": i.subject, "account": i.account});
                if let Some(t) = &i.to {
                    x["to"] = json!(t);
                }
                x["local_subject"] = json!(i.local_subject());
                x["type"] = json!(if i.service { "service" } else { "stream" });
                x["invalid"] = json!(false);
                x["share"] = json!(false);
                x["tracking"] = json!(false);
                x
            })
            .collect();
        if !imports.is_empty() {
            d["imports"] = json!(imports);
        }
    }
    d["name_tag"] = json!(account.name);
    d["rnats_stats"] = json!({
        "in_msgs": load(&st.in_msgs),
        "in_bytes": load(&st.in_bytes),
        "out_msgs": load(&st.out_msgs),
        "out_bytes": load(&st.out_bytes),
        "refused_connections": load(&st.refused_connections),
        "refused_subscriptions": load(&st.refused_subscriptions),
        "refused_payloads": load(&st.refused_payloads),
    });
    d["rnats_limits"] = json!({
        "max_connections": limits.max_connections,
        "max_subscriptions": limits.max_subscriptions,
        "max_payload": limits.max_payload,
    });
    v["account_detail"] = d;
    Ok(v)
}

pub(crate) fn subsz(ctx: &ServerContext) -> Value {
    json!({
        "server_id": ctx.server_id,
        "now": rfc3339(SystemTime::now()),
        "num_subscriptions": ctx.accounts.total_subscriptions(),
        "num_cache": 0,
        "num_inserts": 0,
        "num_removes": 0,
        "num_matches": ctx.stats.in_msgs.load(Ordering::Relaxed),
    })
}
