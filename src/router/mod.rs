//! Subject routing for one account: the subscription index.
//!
//! The account's subscriptions are split over shard actors by their first
//! two literal tokens (so `_INBOX.<id>` reply subscriptions spread over
//! every shard instead of landing in one); patterns with a wildcard in
//! either of the first two tokens live in one extra "wildcard" shard that
//! every lookup consults. Each shard actor is the only writer of its trie
//! (control plane: typed `ShardMsg`s), while publishers read the tries
//! directly under a read lock through a two-level cache (`cache.rs`)
//! invalidated per subject (data plane: no message passing per publish).

pub mod cache;
pub mod interest;
pub mod shard;
pub mod sublist;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;
use ractor::ActorRef;

use crate::outbound::{Message, Outlet, OutletKind};
use cache::SharedCache;
pub use cache::{CacheEntry, LookupCache};
pub use shard::{ShardActor, ShardMsg};
use sublist::Sublist;

/// A server-side subscriber: `$SYS` services, service imports and other
/// internal consumers. Called on the publisher's task, so it must be
/// quick (typically: copy what it needs and `cast` to an actor). `cx` is
/// the publisher's delivery batch (`deliver::Batch`, erased because the
/// router sits below the engine), so a handler that republishes (an
/// import) joins the publisher's batch instead of flushing per message.
pub trait InternalHandler: Send + Sync {
    fn deliver(&self, msg: &Message<'_>, cx: &mut dyn std::any::Any);

    /// Whether route peers should send this handler their messages (its
    /// interest is propagated with `RS+`). False for a handler that serves
    /// only this server's clients, such as a service import, which every
    /// node has for itself.
    fn propagates(&self) -> bool {
        true
    }
}

/// Where a subscription's messages go.
#[derive(Clone)]
pub enum SubTarget {
    /// A client connection: `MSG`/`HMSG` with the subscription's sid.
    Client(Arc<Outlet>),
    /// Interest of a route peer: at most one `RMSG` per peer per message,
    /// naming the queue groups it should deliver to.
    Route(Arc<Outlet>),
    /// A handler inside the server.
    Internal(Arc<dyn InternalHandler>),
}

impl SubTarget {
    pub fn outlet(&self) -> Option<&Arc<Outlet>> {
        match self {
            SubTarget::Client(o) | SubTarget::Route(o) => Some(o),
            SubTarget::Internal(_) => None,
        }
    }

    pub fn is_route(&self) -> bool {
        matches!(self, SubTarget::Route(_))
    }
}

/// One subscription: a subject pattern, optional queue group, and where
/// its messages go.
pub struct Subscription {
    pub subject: Bytes,
    pub queue: Option<Bytes>,
    pub sid: Bytes,
    pub target: SubTarget,
    /// Queue members this entry stands for (a route's RS+ carries the
    /// number of members behind it; local subscriptions weigh 1).
    weight: AtomicU32,
    /// Auto-unsubscribe after this many messages (0 = never).
    max: AtomicU64,
    delivered: AtomicU64,
    /// Set the moment the subscription is removed, so deliveries racing
    /// with the shard actor's removal are dropped.
    closed: AtomicBool,
}

/// What a delivery attempt decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Deliver,
    /// Deliver, and this was the last message before auto-unsubscribe.
    DeliverLast,
    Skip,
}

impl Subscription {
    pub fn new(subject: Bytes, queue: Option<Bytes>, sid: Bytes, target: SubTarget) -> Self {
        Subscription {
            subject,
            queue,
            sid,
            target,
            weight: AtomicU32::new(1),
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// A client subscription.
    pub fn client(subject: Bytes, queue: Option<Bytes>, sid: Bytes, outlet: Arc<Outlet>) -> Self {
        let target = match outlet.kind {
            OutletKind::Client => SubTarget::Client(outlet),
            OutletKind::Route => SubTarget::Route(outlet),
        };
        Self::new(subject, queue, sid, target)
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, w: u32) {
        self.weight.store(w.max(1), Ordering::Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Mark closed; returns false if it already was.
    pub fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// The auto-unsubscribe count has been reached.
    pub fn is_exhausted(&self) -> bool {
        let max = self.max.load(Ordering::Acquire);
        max > 0 && self.delivered.load(Ordering::Acquire) >= max
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Set the auto-unsubscribe limit. Returns true when the limit is
    /// already reached and the subscription should go now.
    pub fn set_max(&self, max: u64) -> bool {
        self.max.store(max, Ordering::Release);
        max > 0 && self.delivered.load(Ordering::Acquire) >= max
    }

    /// Count one delivery, honouring the auto-unsubscribe limit exactly even
    /// when several publishers race on the same subscription.
    pub fn admit(&self) -> Admit {
        if self.is_closed() {
            return Admit::Skip;
        }
        let max = self.max.load(Ordering::Acquire);
        let n = self.delivered.fetch_add(1, Ordering::AcqRel) + 1;
        if max == 0 || n < max {
            Admit::Deliver
        } else if n == max {
            Admit::DeliverLast
        } else {
            Admit::Skip
        }
    }
}

/// The members of one queue group that match a subject, split so local
/// members can be preferred without scanning for them per message.
#[derive(Default)]
pub struct QueueGroup {
    pub name: Bytes,
    /// Client connections and internal handlers on this server.
    pub local: Vec<Arc<Subscription>>,
    /// Route peers with members of this group (each with its weight).
    pub remote: Vec<Arc<Subscription>>,
}

/// The subscriptions matching one subject.
#[derive(Default)]
pub struct SubResult {
    pub psubs: Vec<Arc<Subscription>>,
    /// One entry per queue group: deliver to exactly one member.
    pub qsubs: Vec<QueueGroup>,
}

impl SubResult {
    pub fn add_queue_members(&mut self, name: &Bytes, members: &[Arc<Subscription>]) {
        let i = match self.qsubs.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                self.qsubs.push(QueueGroup {
                    name: name.clone(),
                    ..Default::default()
                });
                self.qsubs.len() - 1
            }
        };
        let group = &mut self.qsubs[i];
        for m in members {
            if m.target.is_route() {
                group.remote.push(m.clone());
            } else {
                group.local.push(m.clone());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.psubs.is_empty() && self.qsubs.is_empty()
    }
}

/// A shard: its trie (read by anyone, written by its actor) and the actor.
pub struct Shard {
    pub(crate) index: RwLock<Sublist>,
    pub(crate) actor: RwLock<Option<ActorRef<ShardMsg>>>,
    /// The account's lookup cache, which the shard invalidates per subject.
    pub(crate) cache: Arc<SharedCache>,
    /// Local interest in this shard, counted for route peers (written by
    /// the shard actor, or by the direct-removal fallback).
    pub(crate) interest: parking_lot::Mutex<interest::Interest>,
    /// Where interest changes go: the account's name and the server's bus.
    pub(crate) notify: Option<(Arc<str>, Arc<interest::InterestBus>)>,
}

impl Shard {
    /// Count `sub` in and tell peers if that changed what they know.
    pub(crate) fn note_added(&self, sub: &Subscription) {
        if let Some((account, bus)) = &self.notify
            && let Some(n) = self.interest.lock().add(sub)
        {
            bus.changed(account, &sub.subject, sub.queue.as_deref(), n);
        }
    }

    /// Count `sub` out and tell peers if that changed what they know.
    pub(crate) fn note_removed(&self, sub: &Subscription) {
        if let Some((account, bus)) = &self.notify
            && let Some(n) = self.interest.lock().remove(sub)
        {
            bus.changed(account, &sub.subject, sub.queue.as_deref(), n);
        }
    }

    /// Write this shard's whole interest to one (new) peer.
    pub(crate) fn sync_peer(&self, peer: &Outlet) {
        let Some((account, _)) = &self.notify else {
            return;
        };
        let interest = self.interest.lock();
        if interest.is_empty() {
            return;
        }
        let mut b = bytes::BytesMut::new();
        for (subject, queue, n) in interest.iter() {
            interest::encode_interest(
                &mut b,
                account.as_bytes(),
                subject,
                queue.map(|q| &q[..]),
                n,
            );
        }
        interest::send_line(peer, &b);
    }
}

#[derive(Debug)]
pub enum RouterError {
    /// The shard actor is gone (being restarted by its supervisor).
    ShardUnavailable,
}

impl std::fmt::Display for RouterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("subscription shard unavailable")
    }
}

pub struct Router {
    /// Literal-prefix shards followed by the wildcard shard.
    shards: Box<[Arc<Shard>]>,
    cache: Arc<SharedCache>,
}

/// The shard key of a subject: its first two tokens (or its only one).
/// `None` when either of them is a wildcard.
fn literal_prefix(subject: &[u8]) -> Option<&[u8]> {
    let mut dots = memchr::memchr_iter(b'.', subject);
    let end = match (dots.next(), dots.next()) {
        (Some(_), Some(second)) => second,
        _ => subject.len(),
    };
    let prefix = &subject[..end];
    let wild = prefix.split(|&b| b == b'.').any(|t| t == b"*" || t == b">");
    (!wild).then_some(prefix)
}

impl Router {
    /// `literal_shards` shards for literal prefixes, plus one wildcard shard.
    pub fn new(literal_shards: usize) -> Self {
        Self::with_interest(literal_shards, None)
    }

    /// As `new`, telling route peers on `bus` of local interest in the
    /// account `notify.0`.
    pub fn with_interest(
        literal_shards: usize,
        notify: Option<(Arc<str>, Arc<interest::InterestBus>)>,
    ) -> Self {
        let cache = Arc::new(SharedCache::default());
        let shards = (0..literal_shards.max(1) + 1)
            .map(|_| {
                Arc::new(Shard {
                    index: RwLock::new(Sublist::default()),
                    actor: RwLock::new(None),
                    cache: cache.clone(),
                    interest: parking_lot::Mutex::new(interest::Interest::default()),
                    notify: notify.clone(),
                })
            })
            .collect();
        Router { shards, cache }
    }

    /// Ask every shard to write its local interest to a new route peer
    /// (already registered on the bus). Shards without an actor (being
    /// restarted) are synced in place.
    pub fn sync_peer(&self, peer: &Arc<Outlet>) {
        for shard in self.shards.iter() {
            match Self::actor_of(shard) {
                Ok(actor) if actor.cast(ShardMsg::Sync(peer.clone())).is_ok() => {}
                _ => shard.sync_peer(peer),
            }
        }
    }

    /// Distinct (subject, queue) entries of local interest (for /routez).
    pub fn interest_len(&self) -> usize {
        self.shards.iter().map(|s| s.interest.lock().len()).sum()
    }

    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    fn wildcard_index(&self) -> usize {
        self.shards.len() - 1
    }

    fn literal_index(&self, prefix: &[u8]) -> usize {
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        h.write(prefix);
        (h.finish() as usize) % (self.shards.len() - 1)
    }

    /// The shard that holds subscriptions on `pattern`.
    fn shard_index_for_pattern(&self, pattern: &[u8]) -> usize {
        match literal_prefix(pattern) {
            Some(p) => self.literal_index(p),
            None => self.wildcard_index(),
        }
    }

    fn actor_of(shard: &Shard) -> Result<ActorRef<ShardMsg>, RouterError> {
        shard
            .actor
            .read()
            .clone()
            .ok_or(RouterError::ShardUnavailable)
    }

    /// Ask the owning shard to add the subscription. The returned receiver
    /// resolves once the trie holds it, so a caller can pipeline several
    /// SUBs and wait once before the next publish or PONG.
    pub fn subscribe(
        &self,
        sub: Arc<Subscription>,
    ) -> Result<ractor::concurrency::OneshotReceiver<()>, RouterError> {
        let shard = &self.shards[self.shard_index_for_pattern(&sub.subject)];
        let actor = Self::actor_of(shard)?;
        let (tx, rx) = ractor::concurrency::oneshot();
        actor
            .cast(ShardMsg::Insert(sub, tx.into()))
            .map_err(|_| RouterError::ShardUnavailable)?;
        Ok(rx)
    }

    /// Remove subscriptions (already marked closed by the caller, so no
    /// delivery happens after this returns even though removal is async).
    pub fn unsubscribe(&self, subs: impl IntoIterator<Item = Arc<Subscription>>) {
        self.remove(subs, true);
    }

    /// Remove a subscription that reached its auto-unsubscribe count. It is
    /// not marked closed: `Subscription::admit` already refuses anything
    /// past the count, and deliveries it admitted within the count, still
    /// in flight on other publishers, must go through.
    pub fn remove_expired(&self, sub: Arc<Subscription>) {
        self.remove([sub], false);
    }

    fn remove(&self, subs: impl IntoIterator<Item = Arc<Subscription>>, close: bool) {
        let mut per_shard: Vec<Vec<Arc<Subscription>>> = vec![Vec::new(); self.shards.len()];
        for sub in subs {
            if close {
                sub.close();
            }
            per_shard[self.shard_index_for_pattern(&sub.subject)].push(sub);
        }
        for (shard, subs) in self.shards.iter().zip(per_shard) {
            if subs.is_empty() {
                continue;
            }
            match Self::actor_of(shard) {
                Ok(actor) if actor.cast(ShardMsg::Remove(subs.clone())).is_ok() => {}
                // No actor to ask (restarting or shutting down): remove
                // directly so a dead connection never leaves subscriptions.
                _ => shard::remove_now(shard, &subs),
            }
        }
    }

    /// Uncached match of a literal subject.
    pub fn lookup(&self, subject: &[u8]) -> SubResult {
        let mut out = SubResult::default();
        if let Some(p) = literal_prefix(subject) {
            self.shards[self.literal_index(p)]
                .index
                .read()
                .matches(subject, &mut out);
        }
        self.shards[self.wildcard_index()]
            .index
            .read()
            .matches(subject, &mut out);
        out
    }

    /// Cached match: the hot path of every publish. A hit costs one hash
    /// lookup in the publisher's private cache and one atomic load, and
    /// touches no reference count shared with other publishers.
    pub fn lookup_cached<'c>(&self, cache: &'c mut LookupCache, subject: &[u8]) -> &'c CacheEntry {
        if !cache.has_valid(subject) {
            let e = self.cache.get_or_insert(subject, || self.lookup(subject));
            cache.insert(subject, e);
        }
        cache.get_ref(subject)
    }

    /// The shared cache's entry for `subject` (unit tests; publishers hold
    /// these same entries in their private caches).
    #[cfg(test)]
    pub(crate) fn lookup_shared(&self, subject: &[u8]) -> Arc<CacheEntry> {
        self.cache.get_or_insert(subject, || self.lookup(subject))
    }

    /// Insert without the shard actor (unit tests of the index users).
    #[cfg(test)]
    pub(crate) fn insert_now(&self, sub: Arc<Subscription>) {
        let shard = &self.shards[self.shard_index_for_pattern(&sub.subject)];
        let subject = sub.subject.clone();
        shard.index.write().insert(sub);
        shard.cache.invalidate(&subject);
    }

    /// Remove without the shard actor (unit tests of the index users).
    #[cfg(test)]
    pub(crate) fn remove_now(&self, sub: &Arc<Subscription>) {
        let shard = &self.shards[self.shard_index_for_pattern(&sub.subject)];
        shard::remove_now(shard, std::slice::from_ref(sub));
    }

    /// Number of subscriptions in all shards.
    pub fn count(&self) -> usize {
        self.shards.iter().map(|s| s.index.read().count()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_keys() {
        assert_eq!(literal_prefix(b"a"), Some(&b"a"[..]));
        assert_eq!(literal_prefix(b"a.b"), Some(&b"a.b"[..]));
        assert_eq!(literal_prefix(b"_INBOX.x1.y"), Some(&b"_INBOX.x1"[..]));
        assert_eq!(literal_prefix(b"a.*.c"), None);
        assert_eq!(literal_prefix(b"a.>"), None);
        assert_eq!(literal_prefix(b">"), None);
        assert_eq!(literal_prefix(b"*.b.c"), None);
        assert_eq!(literal_prefix(b"a.b.*"), Some(&b"a.b"[..]));
    }

    #[test]
    fn inbox_subjects_spread_over_shards() {
        let r = Router::new(4);
        let used: std::collections::HashSet<usize> = (0..64)
            .map(|i| r.shard_index_for_pattern(format!("_INBOX.id{i}").as_bytes()))
            .collect();
        assert!(used.len() >= 3, "{used:?}");
        assert!(!used.contains(&r.wildcard_index()));
    }
}
