//! Local interest, told to route peers.
//!
//! A route peer only receives messages it has interest in, so every node
//! tells its peers which subjects (and queue groups, with how many members)
//! its own clients and internal subscribers want: `RS+`/`RS-` lines, as
//! nats-server does. Each shard actor counts the local subscriptions of its
//! trie per (subject, queue) in an [`Interest`] and, when a count crosses
//! zero (or a queue group's member count changes), writes the line into
//! every registered peer's outbound queue through the server-wide
//! [`InterestBus`].
//!
//! Why in the shard: it is the only writer of its trie and handles SUBs
//! and UNSUBs for a subject in order, so its counts are exact without a
//! lock shared with other shards. A new peer is registered on the bus
//! first and then every shard is asked (`ShardMsg::Sync`) to write its
//! whole interest to that peer, in the shard's own order: a change made
//! before the sync is in the snapshot, a change after it follows it, so
//! the peer never sees an `RS-` overtaken by a stale `RS+`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use super::{SubTarget, Subscription};
use crate::outbound::{CloseReason, Enqueued, Outlet};

/// Counts of local subscriptions per (subject, queue) in one shard.
#[derive(Default)]
pub struct Interest {
    counts: FxHashMap<(Bytes, Option<Bytes>), u32>,
}

/// Whether peers should hear of `sub`: client subscriptions and internal
/// handlers that want remote traffic (not a route's own interest, which
/// is never re-forwarded in a full mesh, and not a service import's
/// subscription, which serves only the local account's requesters).
pub fn propagates(sub: &Subscription) -> bool {
    match &sub.target {
        SubTarget::Client(_) => true,
        SubTarget::Route(_) => false,
        SubTarget::Internal(h) => h.propagates(),
    }
}

impl Interest {
    /// Count one more local subscription; returns the new count when
    /// peers must be told (first plain subscription, or any change of a
    /// queue group's size).
    pub fn add(&mut self, sub: &Subscription) -> Option<u32> {
        if !propagates(sub) {
            return None;
        }
        let n = self
            .counts
            .entry((sub.subject.clone(), sub.queue.clone()))
            .or_insert(0);
        *n += 1;
        (sub.queue.is_some() || *n == 1).then_some(*n)
    }

    /// Count one fewer; returns the new count when peers must be told
    /// (0: the interest is gone).
    pub fn remove(&mut self, sub: &Subscription) -> Option<u32> {
        if !propagates(sub) {
            return None;
        }
        let key = (sub.subject.clone(), sub.queue.clone());
        let n = self.counts.get_mut(&key)?;
        *n = n.saturating_sub(1);
        let n = *n;
        if n == 0 {
            self.counts.remove(&key);
        }
        (sub.queue.is_some() || n == 0).then_some(n)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, Option<&Bytes>, u32)> {
        self.counts.iter().map(|((s, q), n)| (s, q.as_ref(), *n))
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The route peers that hear of interest changes (one bus per server).
#[derive(Default)]
pub struct InterestBus {
    peers: RwLock<Vec<Arc<Outlet>>>,
}

impl InterestBus {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Register a peer: from now on it hears every change. The caller then
    /// asks each shard to sync it (see the module comment).
    pub fn add_peer(&self, peer: Arc<Outlet>) {
        self.peers.write().push(peer);
    }

    pub fn remove_peer(&self, peer: &Arc<Outlet>) {
        self.peers.write().retain(|p| !Arc::ptr_eq(p, peer));
    }

    pub fn has_peers(&self) -> bool {
        !self.peers.read().is_empty()
    }

    /// Tell every peer that local interest in `subject`/`queue` of
    /// `account` is now `n` members.
    pub fn changed(&self, account: &str, subject: &[u8], queue: Option<&[u8]>, n: u32) {
        let peers = self.peers.read();
        if peers.is_empty() {
            return;
        }
        let mut line = BytesMut::with_capacity(subject.len() + account.len() + 24);
        encode_interest(&mut line, account.as_bytes(), subject, queue, n);
        for p in peers.iter() {
            send_line(p, &line);
        }
    }
}

/// `RS+ account subject [queue weight]` when `n > 0`, else
/// `RS- account subject [queue]`.
pub fn encode_interest(
    b: &mut BytesMut,
    account: &[u8],
    subject: &[u8],
    queue: Option<&[u8]>,
    n: u32,
) {
    if n > 0 {
        crate::protocol::route::encode_sub(b, account, subject, queue.map(|q| (q, n)));
    } else {
        crate::protocol::route::encode_unsub(b, account, subject, queue);
    }
}

/// Queue a protocol line for a peer and wake its writer. A peer whose
/// queue is over its limit is cut (it reconnects and resyncs).
pub fn send_line(peer: &Outlet, line: &[u8]) {
    match peer.out.push_raw(line) {
        Enqueued::NeedsSignal => peer.out.signal(),
        Enqueued::SlowConsumer => {
            peer.close(CloseReason::SlowConsumerPendingBytes);
        }
        Enqueued::Queued | Enqueued::Closed => {}
    }
}
