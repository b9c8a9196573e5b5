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

use std::any::Any;
use std::cell::Cell;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use super::{Batch, Origin, publish};
use crate::account::{Account, Accounts};
use crate::auth::resolver::AccountStore;
use crate::config::AccountConfig;
use crate::config::accounts::{ExportConfig, ImportConfig, ResponseType, ServiceExport};
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
/// Joins the publisher's batch (`cx`) when there is one, so a burst
/// crossing an import costs one wake-up per subscriber like any other;
/// looks the subject up through the handler's own cache. `mapped`: through
/// the account's subject mappings (service imports, as nats-server).
fn republish(
    account: &Account,
    cache: &Mutex<LookupCache>,
    msg: &Message<'_>,
    cx: &mut dyn Any,
    mapped: bool,
) {
    // A stream import serves this node's subscribers only: the importer
    // on every other node imports for its own (routes carry the exporter's
    // messages there, since the import's subscription is propagated).
    let origin = if mapped {
        Origin::Import
    } else {
        Origin::Local
    };
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
    let mut own_cache;
    let mut guard = cache.try_lock();
    let cache = match guard.as_deref_mut() {
        Some(c) => c,
        None => {
            own_cache = LookupCache::default();
            &mut own_cache
        }
    };
    match cx.downcast_mut::<Batch>() {
        Some(batch) => {
            // The outer delivery is still collecting its route peers in
            // this batch: keep them apart from this message's.
            let routes = std::mem::take(&mut batch.routes);
            let (m0, b0) = (batch.out_msgs, batch.out_bytes);
            publish(account, cache, msg, origin, batch);
            account
                .stats
                .note_out(batch.out_msgs - m0, batch.out_bytes - b0);
            batch.routes = routes;
        }
        None => {
            let mut batch = Batch::default();
            publish(account, cache, msg, origin, &mut batch);
            let (msgs, bytes, _) = batch.finish();
            account.stats.note_out(msgs, bytes);
        }
    }
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
    cache: Mutex<LookupCache>,
}

impl InternalHandler for StreamImport {
    fn deliver(&self, msg: &Message<'_>, cx: &mut dyn Any) {
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
        republish(&to, &self.cache, &m, cx, false);
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
    cache: Mutex<LookupCache>,
}

impl InternalHandler for ServiceImport {
    /// Each node forwards its own clients' requests; peers' requesters
    /// are served by their own node's import.
    fn propagates(&self) -> bool {
        false
    }

    fn deliver(&self, msg: &Message<'_>, cx: &mut dyn Any) {
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
        republish(&exporter, &self.cache, &m, cx, true);
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
    cache: Mutex<LookupCache>,
}

impl ResponseRouter {
    fn new() -> Arc<Self> {
        let tag: String = (0..8)
            .map(|_| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[fastrand::usize(..36)]))
            .collect();
        Arc::new(ResponseRouter {
            prefix: Bytes::from(format!("_R_.{tag}.")),
            open: Mutex::new(FxHashMap::default()),
            cache: Mutex::new(LookupCache::default()),
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
    fn deliver(&self, msg: &Message<'_>, cx: &mut dyn Any) {
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
        republish(&to, &self.cache, &m, cx, true);
    }
}

/// Install every configured import as internal subscriptions (at start).
pub async fn install(accounts: &Accounts, configs: &[AccountConfig]) -> Result<(), String> {
    for cfg in configs {
        let acc = accounts.bind(Some(&cfg.name)).await.map_err(|e| e.0)?;
        acc.set_limits(cfg.limits.clone());
        acc.set_mappings(cfg.mappings.clone());
    }
    for cfg in configs {
        let importer = accounts.bind(Some(&cfg.name)).await.map_err(|e| e.0)?;
        for imp in &cfg.imports {
            let export = configs
                .iter()
                .find(|c| c.name == imp.account)
                .and_then(|c| matching_export(&c.exports, imp, &cfg.name))
                .ok_or_else(|| format!("import of \"{}\" not authorized", imp.subject))?;
            install_one(accounts, &importer, imp, export).await?;
        }
    }
    Ok(())
}

/// The export of `exports` that `imp` (by account `importer`) may use.
pub fn matching_export<'a>(
    exports: &'a [ExportConfig],
    imp: &ImportConfig,
    importer: &str,
) -> Option<&'a ExportConfig> {
    exports.iter().find(|e| {
        e.service.is_some() == imp.service
            && crate::auth::is_subset(imp.subject.as_bytes(), e.subject.as_bytes())
            && e.allows(importer)
    })
}

/// Install one import of `importer`; the internal subscription is
/// remembered on the importer so a later update can remove it.
pub async fn install_one(
    accounts: &Accounts,
    importer: &Arc<Account>,
    imp: &ImportConfig,
    export: &ExportConfig,
) -> Result<(), String> {
    let exporter = accounts.bind(Some(&imp.account)).await.map_err(|e| e.0)?;
    let local = imp.local_subject();
    let (host, subject, target) = if let Some(service) = &export.service {
        let router = response_router(&exporter).await?;
        // Requests arrive on the local subject and go to the exported one.
        let rewrite = if local != imp.subject {
            Rewrite::To(Bytes::from(imp.subject.clone()))
        } else {
            Rewrite::Same
        };
        let handler = ServiceImport {
            exporter: Arc::downgrade(&exporter),
            importer: Arc::downgrade(importer),
            rewrite,
            response: service.response,
            threshold: service.threshold,
            responses: router,
            cache: Mutex::new(LookupCache::default()),
        };
        (
            importer.clone(),
            local,
            SubTarget::Internal(Arc::new(handler)),
        )
    } else {
        let rewrite = match (&imp.prefix, &imp.to) {
            (Some(p), _) => Rewrite::Prefix(Bytes::from(p.clone())),
            (None, Some(t)) if *t != imp.subject => Rewrite::To(Bytes::from(t.clone())),
            _ => Rewrite::Same,
        };
        let handler = StreamImport {
            importer: Arc::downgrade(importer),
            rewrite,
            cache: Mutex::new(LookupCache::default()),
        };
        (
            exporter.clone(),
            imp.subject.clone(),
            SubTarget::Internal(Arc::new(handler)),
        )
    };
    let sub = subscribe(&host, Bytes::from(subject), target).await?;
    importer.note_import(host, sub);
    Ok(())
}

/// The exporter's response router, made and subscribed on first use.
async fn response_router(exporter: &Arc<Account>) -> Result<Arc<ResponseRouter>, String> {
    let _guard = INSTALL.lock().await;
    if let Some(r) = exporter
        .response_router()
        .and_then(|r| r.downcast::<ResponseRouter>().ok())
    {
        return Ok(r);
    }
    let r = ResponseRouter::new();
    subscribe(exporter, r.pattern(), SubTarget::Internal(r.clone())).await?;
    exporter.set_response_router(r.clone());
    Ok(r)
}

/// Serialises installs (rare: at start, at an account's first login and
/// when its JWT changes).
static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static APPLY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Operator mode: make `key`'s account match its JWT in `store`: limits,
/// and its imports (the old ones removed first). Each import must match a
/// public export of the exporter's JWT (activation tokens are refused at
/// login); one that does not is skipped with a warning, which can only
/// narrow what the account sees. Its subject mappings must all be ones
/// rnats implements: otherwise the JWT is not applied and the error says
/// why (the login that asked is refused). Runs once per JWT (`iat`).
pub async fn apply_jwt(accounts: &Accounts, store: &AccountStore, key: &str) -> Result<(), String> {
    let _guard = APPLY.lock().await;
    let Some(stored) = store.get(key) else {
        return Err("account not found".into());
    };
    let importer = accounts.bind(Some(key)).await.map_err(|e| e.0)?;
    let claims = &stored.claims;
    if importer.jwt_applied() == claims.iat && claims.iat != 0 {
        return Ok(());
    }
    let mappings = crate::account::mapping::MappingTable::from_jwt(&claims.nats.mappings)
        .map_err(|e| format!("account JWT mappings: {e}"))?;
    importer.set_mappings(Some(Arc::new(mappings)));
    importer.set_limits(crate::auth::operator::account_limits(&claims.nats));
    for (host, sub) in importer.take_imports() {
        host.router.unsubscribe([sub]);
    }
    for ji in &claims.nats.imports {
        let Some(imp) = import_of_jwt(ji) else {
            tracing::warn!(
                "account {key}: import of \"{}\" skipped (unknown form)",
                ji.subject
            );
            continue;
        };
        let export = store
            .get(&imp.account)
            .and_then(|e| jwt_export_for(&e.claims, ji, &imp, key));
        let Some(export) = export else {
            tracing::warn!(
                "account {key}: import of \"{}\" from {} skipped: no matching export it may use \
                 (public, or with a valid activation token)",
                imp.subject,
                imp.account
            );
            continue;
        };
        if let Err(e) = install_one(accounts, &importer, &imp, &export).await {
            tracing::warn!("account {key}: import of \"{}\" failed: {e}", imp.subject);
        }
    }
    importer.set_jwt_applied(claims.iat);
    Ok(())
}

fn import_of_jwt(ji: &crate::jwt::Import) -> Option<ImportConfig> {
    let service = match ji.kind.as_str() {
        "service" => true,
        "stream" => false,
        _ => return None,
    };
    let local = (!ji.local_subject.is_empty()).then(|| ji.local_subject.clone());
    let legacy_to = (!ji.to.is_empty()).then(|| ji.to.clone());
    Some(ImportConfig {
        account: ji.account.clone(),
        subject: ji.subject.clone(),
        service,
        // nats-io/jwt's deprecated `to` is a prefix for streams.
        prefix: if service {
            None
        } else {
            legacy_to.clone().filter(|_| local.is_none())
        },
        to: if service { local.or(legacy_to) } else { local },
    })
}

/// The exporter's export that import `ji` (of account `importer`) may use:
/// same kind, a subject inside it, and for an export that requires a
/// token a valid activation token (see [`activation_allows`]).
fn jwt_export_for(
    exporter: &crate::jwt::Claims<crate::jwt::AccountClaims>,
    ji: &crate::jwt::Import,
    imp: &ImportConfig,
    importer: &str,
) -> Option<ExportConfig> {
    exporter.nats.exports.iter().find_map(|je| {
        let e = export_of_jwt(je)?;
        if e.service.is_some() != imp.service
            || !crate::auth::is_subset(imp.subject.as_bytes(), e.subject.as_bytes())
        {
            return None;
        }
        if je.token_req && !activation_allows(exporter, je, &ji.token, imp, importer) {
            return None;
        }
        Some(e)
    })
}

/// An activation token (nats-io/jwt's activation claims) lets `importer`
/// use a token-required export: issued by the exporter (or one of its
/// signing keys, naming it as `issuer_account`), about the importer, for
/// a subject that covers the import, not expired, and not revoked by the
/// export's `revocations` (by importer key or "*", for tokens issued at or
/// before the recorded time).
fn activation_allows(
    exporter: &crate::jwt::Claims<crate::jwt::AccountClaims>,
    export: &crate::jwt::Export,
    token: &str,
    imp: &ImportConfig,
    importer: &str,
) -> bool {
    if token.is_empty() {
        return false;
    }
    let Ok(act) = crate::jwt::decode::<crate::jwt::ActivationClaims>(token) else {
        return false;
    };
    let issued_by_exporter = act.iss == exporter.sub
        || (act.nats.issuer_account == exporter.sub
            && crate::jwt::is_signing_key(&exporter.nats, &act.iss).is_some());
    let revoked = [importer, crate::jwt::REVOKE_ALL]
        .iter()
        .any(|k| export.revocations.get(*k).is_some_and(|&t| t >= act.iat));
    issued_by_exporter
        && act.sub == importer
        && act.check_times(crate::jwt::now_unix()).is_ok()
        && crate::auth::is_subset(imp.subject.as_bytes(), act.nats.subject.as_bytes())
        && !revoked
}

fn export_of_jwt(je: &crate::jwt::Export) -> Option<ExportConfig> {
    let service = match je.kind.as_str() {
        "service" => Some(ServiceExport {
            response: match je.response_type.as_str() {
                "Stream" => ResponseType::Stream,
                "Chunked" => ResponseType::Chunked,
                _ => ResponseType::Singleton,
            },
            threshold: if je.response_threshold > 0 {
                Duration::from_nanos(je.response_threshold as u64)
            } else {
                crate::config::accounts::DEFAULT_RESPONSE_THRESHOLD
            },
        }),
        "stream" => None,
        _ => return None,
    };
    Some(ExportConfig {
        subject: je.subject.clone(),
        service,
        accounts: None,
    })
}

async fn subscribe(
    account: &Account,
    subject: Bytes,
    target: SubTarget,
) -> Result<Arc<Subscription>, String> {
    let sid = Bytes::from(format!("import-{}", fastrand::u64(..)));
    let sub = Arc::new(Subscription::new(subject, None, sid, target));
    let done = account
        .router
        .subscribe(sub.clone())
        .map_err(|e| format!("cannot install import in {}: {e:?}", account.name))?;
    done.await
        .map_err(|_| format!("cannot install import in {}", account.name))?;
    Ok(sub)
}
