//! The lookup cache, invalidated per subject as nats-server's sublist
//! cache is: a SUB or UNSUB on `orders.new` invalidates the cached result
//! of `orders.new` (or, for a wildcard pattern, of the cached subjects it
//! matches) and nothing else, so SUB/UNSUB churn on unrelated subjects
//! leaves every publisher's hot entries warm.
//!
//! Two levels. The account's `SharedCache` maps subject → `CacheEntry`
//! and is the one the shard actors invalidate. Each publisher keeps a
//! private `LookupCache` of the same `Arc<CacheEntry>`s; a hit there is one
//! hash lookup and one atomic load (`valid`), with no lock shared with any
//! other publisher. Invalidating marks the entry invalid, which every
//! private copy sees at its next use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use super::SubResult;

/// Subjects the shared cache holds per account before evicting (an evicted
/// entry is marked invalid, so no private copy can outlive its
/// invalidation).
const SHARED_MAX: usize = 8192;
/// Entries a publisher's private cache holds before it is cleared, so a
/// publisher spraying random subjects cannot grow it without bound.
const PRIVATE_MAX: usize = 4096;

/// The subscriptions matching one subject, and whether that is still true.
pub struct CacheEntry {
    pub result: SubResult,
    valid: AtomicBool,
}

impl CacheEntry {
    pub fn is_valid(&self) -> bool {
        self.valid.load(Ordering::Acquire)
    }

    fn invalidate(&self) {
        self.valid.store(false, Ordering::Release);
    }
}

#[derive(Default)]
pub(crate) struct SharedCache {
    map: Mutex<FxHashMap<Bytes, Arc<CacheEntry>>>,
    /// Bumped by every index change, before its invalidation runs; a
    /// lookup that raced with a change sees it moved and does not trust
    /// the result it computed.
    changes: AtomicU64,
}

impl SharedCache {
    /// The valid entry for `subject`, computing it with `lookup` on a miss.
    pub(crate) fn get_or_insert(
        &self,
        subject: &[u8],
        lookup: impl FnOnce() -> SubResult,
    ) -> Arc<CacheEntry> {
        if let Some(e) = self.map.lock().get(subject)
            && e.is_valid()
        {
            return e.clone();
        }
        let before = self.changes.load(Ordering::SeqCst);
        let entry = Arc::new(CacheEntry {
            result: lookup(),
            valid: AtomicBool::new(true),
        });
        {
            let mut map = self.map.lock();
            if map.len() >= SHARED_MAX {
                evict(&mut map);
            }
            // Copy the key: a slice would pin the read buffer it came from.
            if let Some(old) = map.insert(Bytes::copy_from_slice(subject), entry.clone()) {
                old.invalidate();
            }
        }
        // A change that landed while we matched may or may not be in our
        // result; its invalidation may have run before our insert. Either
        // way the entry cannot be trusted past this one use.
        if self.changes.load(Ordering::SeqCst) != before {
            entry.invalidate();
        }
        entry
    }

    /// The index changed for subscriptions on `pattern`: drop the cached
    /// results it affects. Called by the shard actor after the trie write.
    pub(crate) fn invalidate(&self, pattern: &[u8]) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        let mut map = self.map.lock();
        if !crate::protocol::subject::has_wildcard(pattern) {
            if let Some(e) = map.remove(pattern) {
                e.invalidate();
            }
        } else {
            map.retain(|subject, e| {
                let hit = crate::protocol::subject::matches(pattern, subject);
                if hit {
                    e.invalidate();
                }
                !hit
            });
        }
    }
}

/// Drop an eighth of the entries (marking them invalid).
fn evict(map: &mut FxHashMap<Bytes, Arc<CacheEntry>>) {
    let n = (map.len() / 8).max(1);
    let victims: Vec<Bytes> = map.keys().take(n).cloned().collect();
    for k in victims {
        if let Some(e) = map.remove(&k) {
            e.invalidate();
        }
    }
}

static EMPTY: CacheEntry = CacheEntry {
    result: SubResult {
        psubs: Vec::new(),
        qsubs: Vec::new(),
    },
    valid: AtomicBool::new(false),
};

/// A publisher's private cache of lookups.
#[derive(Default)]
pub struct LookupCache {
    map: FxHashMap<Bytes, Arc<CacheEntry>>,
}

impl LookupCache {
    pub(crate) fn has_valid(&self, subject: &[u8]) -> bool {
        self.map.get(subject).is_some_and(|e| e.is_valid())
    }

    /// The entry for `subject`, which the caller has just made sure of.
    pub(crate) fn get_ref(&self, subject: &[u8]) -> &CacheEntry {
        match self.map.get(subject) {
            Some(e) => e,
            // Unreachable after `insert`; an empty, invalid result is the
            // safe answer should it ever happen.
            None => &EMPTY,
        }
    }

    pub(crate) fn insert(&mut self, subject: &[u8], e: Arc<CacheEntry>) {
        if self.map.len() >= PRIVATE_MAX {
            self.map.clear();
        }
        match self.map.get_mut(subject) {
            Some(slot) => *slot = e,
            None => {
                self.map.insert(Bytes::copy_from_slice(subject), e);
            }
        }
    }
}
