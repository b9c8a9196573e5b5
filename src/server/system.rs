//! The system account's monitoring services, as nats-server answers them
//! over NATS: internal subscriptions in the system account on
//!
//! - `$SYS.REQ.SERVER.PING.<Z>`: every server answers (one here),
//! - `$SYS.REQ.SERVER.<server_id>.<Z>`: this server answers,
//! - `$SYS.REQ.SERVER.PING`: the legacy STATSZ ping,
//!
//! for `<Z>` in VARZ, CONNZ, SUBSZ, ACCOUNTZ, STATSZ and HEALTHZ. The reply
//! is nats-server's envelope, `{"server": {name, host, id, ver, jetstream,
//! flags, seq, time}, "data": {...}}` (`"statsz"` instead of `"data"` for
//! STATSZ), or `{"server", "error": {code, description}}` for a request
//! body that is not a JSON object of the right shape. An empty body means
//! the defaults.
//!
//! Request bodies carry nats-server's option keys: the event filter
//! (`server_name`, `host`, `cluster`, `tags`, `domain`, `exact_match`) on
//! every request: a server that does not match stays silent, like
//! nats-server; CONNZ's `acc`, `auth`, `subscriptions`, `offset`,
//! `limit`, `state`; ACCOUNTZ's `account`. Keys rnats has no use for are
//! ignored (as Go's decoder does).
//!
//! Only clients of the system account reach these subscriptions (accounts
//! are separate subject spaces), so a client of another account gets no
//! responders. nats-server differs in one place: it imports CONNZ into
//! every account as an account-scoped service; rnats does not.
//!
//! The handlers run on the publisher's task: they build the JSON and
//! publish the reply into the system account with `Origin::Internal`, and
//! never wait on anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ServerContext;
use crate::account::Account;
use crate::monitor::{self, ConnzOptions};
use crate::outbound::Message;
use crate::protocol::info::NATS_COMPAT_VERSION;
use crate::router::{InternalHandler, SubTarget, Subscription};

/// The legacy STATSZ ping subject.
pub const STATSZ_PING: &str = "$SYS.REQ.SERVER.PING";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Varz,
    Connz,
    Subsz,
    Accountz,
    Statsz,
    Healthz,
}

impl Endpoint {
    const ALL: [Endpoint; 6] = [
        Endpoint::Varz,
        Endpoint::Connz,
        Endpoint::Subsz,
        Endpoint::Accountz,
        Endpoint::Statsz,
        Endpoint::Healthz,
    ];

    fn token(self) -> &'static str {
        match self {
            Endpoint::Varz => "VARZ",
            Endpoint::Connz => "CONNZ",
            Endpoint::Subsz => "SUBSZ",
            Endpoint::Accountz => "ACCOUNTZ",
            Endpoint::Statsz => "STATSZ",
            Endpoint::Healthz => "HEALTHZ",
        }
    }
}

/// nats-server's `EventFilterOptions`: which servers should answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FilterOptions {
    server_name: String,
    cluster: String,
    host: String,
    tags: Vec<String>,
    domain: String,
    exact_match: bool,
}

impl FilterOptions {
    /// Does this server stay silent? rnats has no cluster name, tags or
    /// JetStream domain, so a filter on any of them leaves it out.
    fn excludes(&self, name: &str, host: &str) -> bool {
        let differs = |want: &str, have: &str| {
            !want.is_empty()
                && if self.exact_match {
                    want != have
                } else {
                    !have.contains(want)
                }
        };
        differs(&self.server_name, name)
            || differs(&self.host, host)
            || !self.cluster.is_empty()
            || !self.tags.is_empty()
            || !self.domain.is_empty()
    }
}

/// ACCOUNTZ's options.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AccountzOptions {
    account: String,
}

/// One responder: the endpoint it serves. Holds the server weakly (the
/// server holds the accounts, which hold this handler).
struct Responder {
    ctx: Weak<ServerContext>,
    system: Weak<Account>,
    endpoint: Endpoint,
    /// The envelope's `seq`, shared by every responder of the server.
    seq: Arc<AtomicU64>,
}

impl InternalHandler for Responder {
    fn deliver(&self, msg: &Message<'_>, _cx: &mut dyn std::any::Any) {
        // A request without a reply subject cannot be answered.
        let Some(reply) = msg.reply else {
            return;
        };
        let (Some(ctx), Some(system)) = (self.ctx.upgrade(), self.system.upgrade()) else {
            return;
        };
        let body = match msg.header_len {
            Some(h) => msg.payload.get(h..).unwrap_or_default(),
            None => &msg.payload[..],
        };
        let Some(doc) = respond(&ctx, self.endpoint, body, &self.seq) else {
            return;
        };
        let payload = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
        super::claims::reply_in(&system, reply, payload);
    }
}

/// The reply document, or `None` when the request's filter leaves this
/// server out.
fn respond(ctx: &ServerContext, ep: Endpoint, body: &[u8], seq: &AtomicU64) -> Option<Value> {
    let opts = ctx.opts();
    let server = |seq: &AtomicU64| {
        json!({
            "name": ctx.server_name,
            "host": opts.host,
            "id": ctx.server_id,
            "ver": NATS_COMPAT_VERSION,
            "jetstream": false,
            "flags": 0,
            "seq": seq.fetch_add(1, Ordering::Relaxed) + 1,
            "time": monitor::rfc3339(SystemTime::now()),
        })
    };
    let error = |code: u16, description: String| {
        json!({
            "server": server(seq),
            "error": {"code": code, "description": description},
        })
    };
    // nats-server: an empty body is the defaults; anything else must be
    // a JSON object (even whitespace alone is refused).
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return Some(error(400, "request options must be a JSON object".into())),
            Err(e) => return Some(error(400, e.to_string())),
        }
    };
    let filter: FilterOptions = match serde_json::from_value(request.clone()) {
        Ok(f) => f,
        Err(e) => return Some(error(400, e.to_string())),
    };
    if filter.excludes(&ctx.server_name, &opts.host) {
        return None;
    }
    let data = match ep {
        Endpoint::Varz => monitor::varz(ctx),
        Endpoint::Subsz => monitor::subsz(ctx),
        Endpoint::Healthz => json!({"status": "ok", "status_code": 200}),
        Endpoint::Connz => match serde_json::from_value::<ConnzOptions>(request) {
            Ok(o) => monitor::connz(ctx, &o),
            Err(e) => return Some(error(400, e.to_string())),
        },
        Endpoint::Accountz => {
            let o = match serde_json::from_value::<AccountzOptions>(request) {
                Ok(o) => o,
                Err(e) => return Some(error(400, e.to_string())),
            };
            let acc = Some(o.account.as_str()).filter(|a| !a.is_empty());
            match monitor::accountz(ctx, acc) {
                Ok(v) => v,
                // nats-server answers an unknown account with a null
                // `data` and a 500.
                Err(e) => {
                    return Some(json!({
                        "server": server(seq),
                        "data": null,
                        "error": {"code": 500, "description": e},
                    }));
                }
            }
        }
        Endpoint::Statsz => return Some(json!({"server": server(seq), "statsz": statsz(ctx)})),
    };
    Some(json!({"server": server(seq), "data": data}))
}

/// nats-server's `ServerStats`, with what rnats counts. Left out: `cpu`
/// and `gomaxprocs`, `sent_to_clients`/`received_from_clients` (rnats
/// does not count client traffic apart from route traffic), and the
/// route, gateway and JetStream sections.
fn statsz(ctx: &ServerContext) -> Value {
    let s = &ctx.stats;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let active = ctx
        .accounts
        .all()
        .iter()
        .filter(|a| a.num_connections() > 0)
        .count();
    json!({
        "start": monitor::rfc3339(ctx.start_time),
        "mem": monitor::rss_bytes(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "connections": ctx.conns.len(),
        "total_connections": load(&s.total_connections),
        "active_accounts": active,
        "subscriptions": ctx.accounts.total_subscriptions(),
        "sent": {"msgs": load(&s.out_msgs), "bytes": load(&s.out_bytes)},
        "received": {"msgs": load(&s.in_msgs), "bytes": load(&s.in_bytes)},
        "slow_consumers": load(&s.slow_consumers),
        "active_servers": 1,
    })
}

/// Subscribe the responders in the system account (at start, after the
/// configured accounts exist).
pub async fn install(ctx: &Arc<ServerContext>) -> Result<(), String> {
    let name = ctx.opts().system_account().to_string();
    let system = ctx.accounts.bind(Some(&name)).await.map_err(|e| e.0)?;
    let seq = Arc::new(AtomicU64::new(0));
    let mut subjects = vec![(STATSZ_PING.to_string(), Endpoint::Statsz)];
    for ep in Endpoint::ALL {
        subjects.push((format!("{STATSZ_PING}.{}", ep.token()), ep));
        subjects.push((
            format!("$SYS.REQ.SERVER.{}.{}", ctx.server_id, ep.token()),
            ep,
        ));
    }
    for (i, (subject, endpoint)) in subjects.into_iter().enumerate() {
        let handler = Responder {
            ctx: Arc::downgrade(ctx),
            system: Arc::downgrade(&system),
            endpoint,
            seq: seq.clone(),
        };
        let sub = Arc::new(Subscription::new(
            Bytes::from(subject),
            None,
            Bytes::from(format!("sys-{i}")),
            SubTarget::Internal(Arc::new(handler)),
        ));
        // Counted first, so the server-wide totals never show it.
        system.service_subs.fetch_add(1, Ordering::Relaxed);
        let done = system
            .router
            .subscribe(sub)
            .map_err(|e| format!("cannot install system services in {name}: {e:?}"))?;
        done.await
            .map_err(|_| format!("cannot install system services in {name}"))?;
    }
    Ok(())
}
