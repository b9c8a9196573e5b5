//! `/routez`: the routes of a clustered server, in nats-server's shape,
//! plus rnats's supervision figures: per solicited URL, how many times its
//! route actor was restarted and the last error.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::{rfc3339, uptime};
use crate::server::ServerContext;

pub fn routez(ctx: &ServerContext, subs: bool) -> Value {
    let now = SystemTime::now();
    let Some(cluster) = ctx.cluster.get() else {
        return json!({
            "server_id": ctx.server_id,
            "server_name": ctx.server_name,
            "now": rfc3339(now),
            "num_routes": 0,
            "routes": [],
        });
    };
    let solicited = cluster.solicit_stats();
    let routes: Vec<Value> = cluster
        .routes()
        .iter()
        .map(|r| {
            let (out_msgs, out_bytes) = r.outlet.out.out_counts();
            let restarts = r
                .url
                .as_ref()
                .and_then(|u| solicited.iter().find(|(k, _)| k == u))
                .map(|(_, s)| s.restarts)
                .unwrap_or(0);
            let mut v = json!({
                "rid": r.rid,
                "remote_id": r.remote_id,
                "remote_name": r.remote_name,
                "did_solicit": r.did_solicit,
                "is_configured": r
                    .url
                    .as_ref()
                    .is_some_and(|u| cluster.opts.routes.iter().any(|c| &c.display == u)),
                "ip": r.outlet.peer.ip().to_string(),
                "port": r.outlet.peer.port(),
                "start": rfc3339(r.started),
                "uptime": uptime(now.duration_since(r.started).unwrap_or_default()),
                "pending_size": r.outlet.out.pending(),
                "in_msgs": r.in_msgs.load(Ordering::Relaxed),
                "out_msgs": out_msgs,
                "in_bytes": r.in_bytes.load(Ordering::Relaxed),
                "out_bytes": out_bytes,
                "subscriptions": r.interest.lock().len(),
                "restarts": restarts,
            });
            if let Some(u) = &r.url {
                v["url"] = json!(u);
            }
            if subs {
                // nats-server's form: "subject" or "subject queue".
                let mut list: Vec<String> = r
                    .interest
                    .lock()
                    .iter()
                    .map(|(_, subject, queue)| match queue {
                        Some(q) => format!(
                            "{} {}",
                            String::from_utf8_lossy(subject),
                            String::from_utf8_lossy(q)
                        ),
                        None => String::from_utf8_lossy(subject).into_owned(),
                    })
                    .collect();
                list.sort();
                v["subscriptions_list"] = json!(list);
            }
            v
        })
        .collect();
    let solicited: Vec<Value> = solicited
        .iter()
        .map(|(url, s)| {
            json!({
                "url": url,
                "restarts": s.restarts,
                "connected": s.connected,
                "last_error": s.last_error,
            })
        })
        .collect();
    json!({
        "server_id": ctx.server_id,
        "server_name": ctx.server_name,
        "now": rfc3339(now),
        "num_routes": routes.len(),
        "routes": routes,
        "cluster": cluster.name,
        "solicited": solicited,
    })
}
