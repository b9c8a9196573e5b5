//! Exports and imports between accounts, as internal subscribers.
//!
//! - **Stream import** (B imports `events.>` from A, maybe with a prefix):
//!   an internal subscription in A on `events.>` republishes every message
//!   into B under the local subject (`prefix.events.x`, or `to`).
//! - **Service import** (B imports service `help` from A, maybe as
//!   `a.help`): an internal subscription in B on the local subject
//!   forwards each request into A on `help`, with its reply subject
//!   replaced by a fresh `_R_.<account tag>.<token>` in A. A's response
//!   router (one internal subscription on `_R_.<tag>.>` per exporting
//!   account) maps a response back to the requester's own reply subject
//!   in B, once (singleton) or until the export's threshold passes
//!   (stream, chunked). Nothing else can reach the requester: a response
//!   only crosses for a token the router issued.
//!
//! Import cycles are refused when the configuration is read; a hop limit
//! guards against any path the check could miss.

use std::cell::Cell;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use super::{Batch, Origin, publish};
use crate::account::{Account, Accounts};
use crate::config::AccountConfig;
use crate::config::accounts::ResponseType;
use crate::outbound::Message;
use crate::router::{InternalHandler, LookupCache, SubTarget, Subscription};

/// How many imports one message may cross (a chain A→B→C is two).
const MAX_HOPS: u32 = 8;
/// Open service requests per exporting account; past this the oldest
/// expired ones are swept, and a request that still finds no room is
/// forwarded without a reply subject (its responder cannot answer).
const MAX_OPEN_REQUESTS: usize = 1 << 20;

thread_local! {
    static HOPS: Cell<u32> = const { Cell::new(0) };
}

/// Publish `msg` into `account` from inside a handler, counting the hop.
fn republish(account: &Account, msg: &Message<'_>) {
    let depth = HOPS.with(|h| h.get());
    if depth >= MAX_HOPS {
        tracing::warn!(
            "dropped a message on \"{}\" in account {}: more than {MAX_HOPS} import hops",
            String::from_utf8_lossy(msg.subject),
            account.name
        );
        return;
    }
    HOPS.with(|h| h.set(depth + 1));
    let mut cache = LookupCache::default();
    let mut batch = Batch::default();
    publish(account, &mut cache, msg, Origin::Internal, &mut batch);
    let (msgs, bytes, _) = batch.finish();
    account.stats.note_out(msgs, bytes);
    HOPS.with(|h| h.set(depth));
}

/// How an imported subject becomes the local one.
#[derive(Clone)]
enum Rewrite {
    /// The same subject.
    Same,
    /// `prefix.` + subject.
    Prefix(Bytes),
    /// A fixed subject (a literal import mapped with `to`).
    To(Bytes),
}

impl Rewrite {
    fn apply<'a>(&'a self, subject: &'a [u8], buf: &'a mut BytesMut) -> &'a [u8] {
        match self {
            Rewrite::Same => subject,
            Rewrite::To(t) => t,
            Rewrite::Prefix(p) => {
                buf.clear();
                buf.extend_from_slice(p);
                buf.extend_from_slice(b".");
                buf.extend_from_slice(subject);
                &buf[..]
            }
        }
    }
}

/// Lives in the exporter: republishes into the importer.
struct StreamImport {
    importer: Weak<Account>,
    rewrite: Rewrite,
}

impl InternalHandler for StreamImport {
    fn deliver(&self, msg: &Message<'_>) {
        let Some(to) = self.importer.upgrade() else {
            return;
        };
        let mut buf = BytesMut::new();
        let subject = self.rewrite.apply(msg.subject, &mut buf);
        let m = Message {
            subject,
            reply: msg.reply,
            header_len: msg.header_len,
            payload: msg.payload,
        };
        republish(&to, &m);
    }
}

/// Lives in the importer: forwards requests into the exporter.
struct ServiceImport {
    exporter: Weak<Account>,
    importer: Weak<Account>,
    rewrite: Rewrite,
    response: ResponseType,
    threshold: Duration,
    responses: Arc<ResponseRouter>,
}

impl InternalHandler for ServiceImport {
    fn deliver(&self, msg: &Message<'_>) {
        let (Some(exporter), Some(importer)) = (self.exporter.upgrade(), self.importer.upgrade())
        else {
            return;
        };
        let mut buf = BytesMut::new();
        let subject = self.rewrite.apply(msg.subject, &mut buf);
        let reply = msg.reply.and_then(|r| {
            self.responses.open(
                Arc::downgrade(&importer),
                Bytes::copy_from_slice(r),
                self.response,
                self.threshold,
            )
        });
        let m = Message {
            subject,
            reply: reply.as_deref(),
            header_len: msg.header_len,
            payload: msg.payload,
        };
        republish(&exporter, &m);
    }
}

/// One open request: where its responses go and until when.
struct Pending {
    importer: Weak<Account>,
    reply: Bytes,
    singleton: bool,
    expires: Instant,
}

/// Lives in the exporter on `_R_.<tag>.>`: maps responses back to the
/// requesters.
pub struct ResponseRouter {
    prefix: Bytes,
    open: Mutex<FxHashMap<Bytes, Pending>>,
}

impl ResponseRouter {
    fn new() -> Arc<Self> {
        let tag: String = (0..8)
            .map(|_| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[fastrand::usize(..36)]))
            .collect();
        Arc::new(ResponseRouter {
            prefix: Bytes::from(format!("_R_.{tag}.")),
            open: Mutex::new(FxHashMap::default()),
        })
    }

    fn pattern(&self) -> Bytes {
        let mut p = BytesMut::from(&self.prefix[..]);
        p.extend_from_slice(b">");
        p.freeze()
    }

    /// A fresh reply subject in the exporter standing for `reply` in the
    /// importer.
    fn open(
        &self,
        importer: Weak<Account>,
        reply: Bytes,
        response: ResponseType,
        threshold: Duration,
    ) -> Option<Bytes> {
        let mut token = [0u8; 12];
        token.iter_mut().for_each(|b| {
            *b = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                [fastrand::usize(..62)]
        });
        let mut subject = BytesMut::from(&self.prefix[..]);
        subject.extend_from_slice(&token);
        let subject = subject.freeze();
        let now = Instant::now();
        let mut open = self.open.lock();
        if open.len() >= MAX_OPEN_REQUESTS {
            open.retain(|_, p| p.expires > now);
            if open.len() >= MAX_OPEN_REQUESTS {
                return None;
            }
        } else if open.len() % 4096 == 4095 {
            open.retain(|_, p| p.expires > now);
        }
        open.insert(
            subject.clone(),
            Pending {
                importer,
                reply,
                singleton: response == ResponseType::Singleton,
                expires: now + threshold,
            },
        );
        Some(subject)
    }

    /// Requests still waiting for a response (for /accountz).
    pub fn open_requests(&self) -> usize {
        self.open.lock().len()
    }
}

impl InternalHandler for ResponseRouter {
    fn deliver(&self, msg: &Message<'_>) {
        let target = {
            let mut open = self.open.lock();
            let now = Instant::now();
            match open.get(msg.subject) {
                None => None,
                Some(p) if p.expires <= now => {
                    open.remove(msg.subject);
                    None
                }
                Some(p) if p.singleton => open.remove(msg.subject).map(|p| (p.importer, p.reply)),
                Some(p) => Some((p.importer.clone(), p.reply.clone())),
            }
        };
        let Some((importer, reply)) = target else {
            return;
        };
        let Some(to) = importer.upgrade() else {
            return;
        };
        let m = Message {
            subject: &reply,
            reply: None,
            header_len: msg.header_len,
            payload: msg.payload,
        };
        republish(&to, &m);
    }
}

/// Install every configured import as internal subscriptions (at start).
pub async fn install(accounts: &Accounts, configs: &[AccountConfig]) -> Result<(), String> {
    let mut routers: FxHashMap<String, Arc<ResponseRouter>> = FxHashMap::default();
    for cfg in configs {
        let acc = accounts.bind(Some(&cfg.name)).await.map_err(|e| e.0)?;
        acc.set_limits(cfg.limits.clone());
    }
    for cfg in configs {
        let importer = accounts.bind(Some(&cfg.name)).await.map_err(|e| e.0)?;
        for imp in &cfg.imports {
            let exporter = accounts.bind(Some(&imp.account)).await.map_err(|e| e.0)?;
            let export = configs
                .iter()
                .find(|c| c.name == imp.account)
                .and_then(|c| {
                    c.exports.iter().find(|e| {
                        e.service.is_some() == imp.service
                            && crate::auth::is_subset(imp.subject.as_bytes(), e.subject.as_bytes())
                            && e.allows(&cfg.name)
                    })
                })
                .ok_or_else(|| format!("import of \"{}\" not authorized", imp.subject))?;
            let local = imp.local_subject();
            let rewrite_into_importer = match (&imp.prefix, &imp.to) {
                (Some(p), _) => Rewrite::Prefix(Bytes::from(p.clone())),
                (None, Some(t)) if *t != imp.subject => Rewrite::To(Bytes::from(t.clone())),
                _ => Rewrite::Same,
            };
            if let Some(service) = &export.service {
                let router = match routers.get(&imp.account) {
                    Some(r) => r.clone(),
                    None => {
                        let r = ResponseRouter::new();
                        subscribe(&exporter, r.pattern(), SubTarget::Internal(r.clone())).await?;
                        exporter.set_response_router(r.clone());
                        routers.insert(imp.account.clone(), r.clone());
                        r
                    }
                };
                // Requests arrive on the local subject and go to the
                // exported one.
                let rewrite = if local != imp.subject {
                    Rewrite::To(Bytes::from(imp.subject.clone()))
                } else {
                    Rewrite::Same
                };
                let handler = ServiceImport {
                    exporter: Arc::downgrade(&exporter),
                    importer: Arc::downgrade(&importer),
                    rewrite,
                    response: service.response,
                    threshold: service.threshold,
                    responses: router,
                };
                subscribe(
                    &importer,
                    Bytes::from(local),
                    SubTarget::Internal(Arc::new(handler)),
                )
                .await?;
            } else {
                let handler = StreamImport {
                    importer: Arc::downgrade(&importer),
                    rewrite: rewrite_into_importer,
                };
                subscribe(
                    &exporter,
                    Bytes::from(imp.subject.clone()),
                    SubTarget::Internal(Arc::new(handler)),
                )
                .await?;
            }
        }
    }
    Ok(())
}

async fn subscribe(account: &Account, subject: Bytes, target: SubTarget) -> Result<(), String> {
    let sid = Bytes::from(format!("import-{}", fastrand::u64(..)));
    let sub = Arc::new(Subscription::new(subject, None, sid, target));
    let done = account
        .router
        .subscribe(sub)
        .map_err(|e| format!("cannot install import in {}: {e:?}", account.name))?;
    done.await
        .map_err(|_| format!("cannot install import in {}", account.name))
}
