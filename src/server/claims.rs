//! Operator mode over NATS: account JWT pushes and lookups on the system
//! account, as nats-server's resolvers answer them, so `nsc push` and
//! `rnats jwt push` work against rnats:
//!
//! - `$SYS.REQ.CLAIMS.UPDATE` (body: an account JWT) and
//!   `$SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE` / `$SYS.ACCOUNT.<key>.CLAIMS.UPDATE`
//!   store a verified JWT and apply it to connected users at once;
//! - `$SYS.REQ.ACCOUNT.<key>.CLAIMS.LOOKUP` answers with the stored JWT
//!   (an empty message when there is none).
//!
//! Only clients of the system account can publish on these subjects (the
//! handlers live in its subject space). A directory resolver's files are
//! also scanned every `interval`, so a JWT dropped into the directory is
//! picked up.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use serde_json::json;

use super::ServerContext;
use crate::account::Account;
use crate::auth::resolver::AccountStore;
use crate::deliver::{Batch, Origin, publish};
use crate::outbound::Message;
use crate::router::{InternalHandler, LookupCache, SubTarget, Subscription};

/// Publish a reply into `account` from a handler (the system account's
/// services), counting it in the account's statistics.
pub(super) fn reply_in(account: &Account, subject: &[u8], payload: Bytes) {
    let msg = Message {
        subject,
        reply: None,
        header_len: None,
        payload: &payload,
    };
    let mut cache = LookupCache::default();
    let mut batch = Batch::default();
    publish(account, &mut cache, &msg, Origin::Internal, &mut batch);
    let (msgs, bytes, _) = batch.finish();
    account.stats.note_out(msgs, bytes);
}

enum Kind {
    /// `$SYS.REQ.CLAIMS.UPDATE`: the key comes from the JWT.
    Update,
    /// `...ACCOUNT.<key>.CLAIMS.UPDATE`: the key is the subject's token
    /// at this index and must match the JWT.
    UpdateFor(usize),
    Lookup,
}

struct ClaimsHandler {
    ctx: Weak<ServerContext>,
    store: Arc<AccountStore>,
    system: Weak<Account>,
    kind: Kind,
}

impl ClaimsHandler {
    fn respond(&self, reply: Option<&[u8]>, body: serde_json::Value) {
        let (Some(reply), Some(sys), Some(ctx)) =
            (reply, self.system.upgrade(), self.ctx.upgrade())
        else {
            return;
        };
        let mut doc = json!({
            "server": {
                "name": ctx.server_name,
                "host": ctx.opts().host,
                "id": ctx.server_id,
                "ver": crate::protocol::info::NATS_COMPAT_VERSION,
                "time": chrono::Utc::now().to_rfc3339(),
            }
        });
        if let (Some(d), Some(b)) = (doc.as_object_mut(), body.as_object()) {
            d.extend(b.clone());
        }
        reply_in(&sys, reply, Bytes::from(doc.to_string()));
    }

    fn update(&self, msg: &Message<'_>, expected: Option<&str>) {
        let body = match msg.header_len {
            Some(h) if h <= msg.payload.len() => &msg.payload[h..],
            _ => &msg.payload[..],
        };
        let token = String::from_utf8_lossy(body).trim().to_string();
        let claimed = crate::jwt::decode::<crate::jwt::AccountClaims>(&token)
            .map(|c| c.sub)
            .ok();
        let name = expected.map(str::to_string).or(claimed.clone());
        let error = |acc: &str, message: &str, err: &str| {
            tracing::error!("{message} - {acc} - {err}");
            json!({"error": {"account": acc, "code": 500, "description": format!("{message} - {err}")}})
        };
        let result = match (&claimed, expected) {
            (None, _) => Err(error(
                name.as_deref().unwrap_or("n/a"),
                "jwt update resulted in error",
                "invalid account JWT",
            )),
            (Some(c), Some(e)) if c != e => Err(error(
                e,
                "jwt update resulted in error",
                "subject does not match jwt content",
            )),
            (Some(c), _) => match self.store.update(&token) {
                Ok((key, changed)) => {
                    if changed && let Some(ctx) = self.ctx.upgrade() {
                        tracing::info!("account {key} updated by a claims push");
                        super::account_updated(&ctx, &key);
                    }
                    Ok(json!({"data": {"account": key, "code": 200, "message": "jwt updated"}}))
                }
                Err(e) => Err(error(c, "jwt update resulted in error", &e)),
            },
        };
        self.respond(msg.reply, result.unwrap_or_else(|e| e));
    }
}

impl InternalHandler for ClaimsHandler {
    fn deliver(&self, msg: &Message<'_>, _cx: &mut dyn std::any::Any) {
        let tokens: Vec<&[u8]> = msg.subject.split(|&b| b == b'.').collect();
        match self.kind {
            Kind::Update => self.update(msg, None),
            Kind::UpdateFor(i) => {
                let key = tokens
                    .get(i)
                    .map(|k| String::from_utf8_lossy(k).into_owned());
                self.update(msg, key.as_deref());
            }
            Kind::Lookup => {
                let (Some(reply), Some(sys)) = (msg.reply, self.system.upgrade()) else {
                    return;
                };
                let key = tokens
                    .get(3)
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                let jwt = self.store.get(&key).map(|a| a.jwt).unwrap_or_default();
                reply_in(&sys, reply, Bytes::from(jwt));
            }
        }
    }
}

/// Install the claims handlers in the system account (operator mode).
pub(super) async fn install(
    ctx: &Arc<ServerContext>,
    store: &Arc<AccountStore>,
) -> Result<(), String> {
    let name = ctx.opts().system_account().to_string();
    let system = ctx.accounts.bind(Some(&name)).await.map_err(|e| e.0)?;
    let subjects: [(&str, Kind); 4] = [
        ("$SYS.REQ.CLAIMS.UPDATE", Kind::Update),
        ("$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE", Kind::UpdateFor(3)),
        ("$SYS.ACCOUNT.*.CLAIMS.UPDATE", Kind::UpdateFor(2)),
        ("$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP", Kind::Lookup),
    ];
    for (subject, kind) in subjects {
        let handler = ClaimsHandler {
            ctx: Arc::downgrade(ctx),
            store: store.clone(),
            system: Arc::downgrade(&system),
            kind,
        };
        let sub = Arc::new(Subscription::new(
            Bytes::from_static(subject.as_bytes()),
            None,
            Bytes::from(format!("claims-{}", fastrand::u64(..))),
            SubTarget::Internal(Arc::new(handler)),
        ));
        let done = system
            .router
            .subscribe(sub)
            .map_err(|e| format!("cannot subscribe {subject}: {e:?}"))?;
        done.await
            .map_err(|_| format!("cannot subscribe {subject}"))?;
    }
    Ok(())
}

/// Scan a directory resolver's files every `interval`.
pub(super) async fn watch_dir(ctx: Arc<ServerContext>, store: Arc<AccountStore>) {
    let mut tick = tokio::time::interval(store.interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {
                for key in store.scan_dir() {
                    tracing::info!("account {key} updated from the resolver directory");
                    super::account_updated(&ctx, &key);
                }
            }
        }
    }
}
