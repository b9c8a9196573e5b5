//! Subject routing for one account.
//!
//! The account's subscriptions are split over shard actors by the first
//! token of the subscription subject; subscriptions whose first token is a
//! wildcard live in one extra "wildcard" shard that every publish consults.
//! Each shard actor is the only writer of its trie (control plane: typed
//! `ShardMsg`s), while publishers read the tries directly under a read lock
//! and keep a per-connection cache validated by one generation counter
//! (data plane: no message passing per publish).

pub mod shard;
pub mod sublist;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;
use ractor::ActorRef;
use rustc_hash::FxHashMap;

use crate::client::shared::ConnShared;
pub use shard::{ShardActor, ShardMsg};
use sublist::Sublist;

/// One subscription: a subject pattern, optional queue group, and the
/// connection its messages go to.
pub struct Subscription {
    pub subject: Bytes,
    pub queue: Option<Bytes>,
    pub sid: Bytes,
    pub conn: Arc<ConnShared>,
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
    pub fn new(subject: Bytes, queue: Option<Bytes>, sid: Bytes, conn: Arc<ConnShared>) -> Self {
        Subscription {
            subject,
            queue,
            sid,
            conn,
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Mark closed; returns false if it already was.
    pub fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
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

/// The subscriptions matching one subject.
#[derive(Default)]
pub struct SubResult {
    pub psubs: Vec<Arc<Subscription>>,
    /// One entry per queue group: deliver to exactly one member.
    pub qsubs: Vec<(Bytes, Vec<Arc<Subscription>>)>,
}

impl SubResult {
    pub fn add_queue_members(&mut self, name: &Bytes, members: &[Arc<Subscription>]) {
        match self.qsubs.iter_mut().find(|(n, _)| n == name) {
            Some((_, all)) => all.extend(members.iter().cloned()),
            None => self.qsubs.push((name.clone(), members.to_vec())),
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
    pub(crate) generation: Arc<AtomicU64>,
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
    /// Literal-first-token shards followed by the wildcard shard.
    shards: Box<[Arc<Shard>]>,
    generation: Arc<AtomicU64>,
}

/// Cap on a connection's private lookup cache; cleared wholesale when hit
/// so a publisher spraying random subjects cannot grow it without bound.
const CACHE_MAX: usize = 4096;

/// A publisher's private cache of lookups, valid while the router's
/// generation is unchanged.
#[derive(Default)]
pub struct LookupCache {
    generation: u64,
    map: FxHashMap<Bytes, Arc<SubResult>>,
}

impl Router {
    /// `literal_shards` shards for literal first tokens, plus one wildcard shard.
    pub fn new(literal_shards: usize) -> Self {
        let generation = Arc::new(AtomicU64::new(1));
        let shards = (0..literal_shards.max(1) + 1)
            .map(|_| {
                Arc::new(Shard {
                    index: RwLock::new(Sublist::default()),
                    actor: RwLock::new(None),
                    generation: generation.clone(),
                })
            })
            .collect();
        Router { shards, generation }
    }

    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    fn wildcard_shard(&self) -> &Arc<Shard> {
        &self.shards[self.shards.len() - 1]
    }

    fn literal_shard(&self, first_token: &[u8]) -> &Arc<Shard> {
        let n = self.shards.len() - 1;
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        h.write(first_token);
        &self.shards[(h.finish() as usize) % n]
    }

    fn shard_for_pattern(&self, subject: &[u8]) -> &Arc<Shard> {
        let first = subject.split(|&b| b == b'.').next().unwrap_or_default();
        if first == b"*" || first == b">" {
            self.wildcard_shard()
        } else {
            self.literal_shard(first)
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
        let actor = Self::actor_of(self.shard_for_pattern(&sub.subject))?;
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
            let shard = self.shard_for_pattern(&sub.subject);
            let i = self
                .shards
                .iter()
                .position(|s| Arc::ptr_eq(s, shard))
                .unwrap_or(0);
            per_shard[i].push(sub);
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
        let first = subject.split(|&b| b == b'.').next().unwrap_or_default();
        self.literal_shard(first)
            .index
            .read()
            .matches(subject, &mut out);
        self.wildcard_shard()
            .index
            .read()
            .matches(subject, &mut out);
        out
    }

    /// Cached match: the hot path of every publish.
    pub fn lookup_cached(&self, cache: &mut LookupCache, subject: &Bytes) -> Arc<SubResult> {
        let generation = self.generation.load(Ordering::Acquire);
        if cache.generation != generation {
            cache.map.clear();
            cache.generation = generation;
        } else if let Some(r) = cache.map.get(&subject[..]) {
            return r.clone();
        }
        let r = Arc::new(self.lookup(subject));
        if cache.map.len() >= CACHE_MAX {
            cache.map.clear();
        }
        // Copy the key: a slice would pin the whole read buffer it came from.
        cache.map.insert(Bytes::copy_from_slice(subject), r.clone());
        r
    }

    /// Number of subscriptions in all shards.
    pub fn count(&self) -> usize {
        self.shards.iter().map(|s| s.index.read().count()).sum()
    }
}
