//! The delivery engine: one `publish` for every message, whoever sent it.
//!
//! Client readers call it for PUB/HPUB today; route readers (RMSG) and
//! internal publishers (`$SYS` events, service imports) use the same
//! entry point. It looks the subject up in the account's index, then
//! hands the message to each matching target:
//!
//! - a client subscription gets `MSG`/`HMSG` with its sid;
//! - a route peer gets one `RMSG` however many of its subscribers match,
//!   naming the queue groups it must serve; a message that came from a
//!   route is never sent to a route again (no loops);
//! - an internal handler is called in place.
//!
//! Each queue group gets the message exactly once: a random local member
//! first, else a route peer chosen by the weight of its members.
//!
//! The `Batch` collects the writers to wake and the counters, so a burst
//! of PUBs read in one go costs one wake-up per subscriber and one update
//! of the server's counters (nats-server's "pcd" idea).

pub mod imports;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::account::Account;
use crate::account::mapping::Mapped;
use crate::outbound::{CloseReason, Enqueued, Message, Outlet};
use crate::router::{Admit, LookupCache, SubResult, SubTarget, Subscription};

/// Who published the message.
pub enum Origin<'a> {
    /// A client's PUB; with `echo: false` its own subscriptions are skipped.
    Client { outlet: &'a Arc<Outlet>, echo: bool },
    /// An RMSG from a route peer: only local subscribers, and only the
    /// queue groups the peer named.
    Route { queues: &'a [Bytes] },
    /// The server itself.
    Internal,
    /// The server itself, for this node's subscribers only: a stream
    /// import republishing into the importer (every node imports for its
    /// own subscribers, so forwarding would deliver twice).
    Local,
    /// A service import forwarding a request into the exporter, or a
    /// response back to the requester: as `Internal`, but the account's
    /// subject mappings apply first (nats-server maps service imports,
    /// not stream imports, which `Internal` serves).
    Import,
}

impl Origin<'_> {
    fn skips(&self, sub: &Subscription) -> bool {
        match self {
            Origin::Client { outlet, echo } => {
                !*echo && sub.target.outlet().is_some_and(|o| Arc::ptr_eq(o, outlet))
            }
            Origin::Route { .. } | Origin::Local => sub.target.is_route(),
            Origin::Internal | Origin::Import => false,
        }
    }
}

/// At most this many connections are flushed in place at the end of a
/// batch (see `Batch::finish`).
const DIRECT_FLUSH_MAX: usize = 2;

/// Writers to wake and counters, accumulated over one read batch.
#[derive(Default)]
pub struct Batch {
    wake: Vec<Arc<Outlet>>,
    /// Route peers chosen for the message being published, with the queue
    /// groups each must serve (reused between messages).
    routes: Vec<(Arc<Outlet>, Vec<Bytes>)>,
    pub out_msgs: u64,
    pub out_bytes: u64,
    pub slow_consumers: u64,
    /// A subscriber whose queue is deep enough that the publisher should
    /// pause after this batch (`Outbound::pace`).
    pace: Option<Arc<Outlet>>,
    /// Reused by in-place flushes (`Outbound::flush_direct`).
    scratch: Vec<Bytes>,
}

impl Batch {
    /// Note the result of queueing for `outlet`; true when it was queued.
    pub fn queued(&mut self, outlet: &Arc<Outlet>, r: Enqueued) -> bool {
        match r {
            Enqueued::NeedsSignal => {
                self.wake.push(outlet.clone());
                self.check_pacing(outlet);
                true
            }
            Enqueued::Queued => {
                self.check_pacing(outlet);
                true
            }
            Enqueued::SlowConsumer => {
                if outlet.close(CloseReason::SlowConsumerPendingBytes) {
                    self.slow_consumers += 1;
                    tracing::warn!(
                        "{} - cid:{} - Slow Consumer Detected: pending bytes over {} limit",
                        outlet.peer,
                        outlet.id,
                        outlet.out.max_pending()
                    );
                }
                false
            }
            Enqueued::Closed => false,
        }
    }

    /// Note a protocol reply (PONG, +OK, -ERR) queued for the publisher's
    /// own connection: it needs a wake-up, and never paces anyone. Replies
    /// count toward `max_pending`: one that does not fit cuts the
    /// connection as a slow consumer.
    pub fn replied(&mut self, outlet: &Arc<Outlet>, r: Enqueued) {
        match r {
            Enqueued::NeedsSignal => self.wake.push(outlet.clone()),
            Enqueued::SlowConsumer => {
                self.queued(outlet, r);
            }
            Enqueued::Queued | Enqueued::Closed => {}
        }
    }

    fn check_pacing(&mut self, outlet: &Arc<Outlet>) {
        if self.pace.is_none() && outlet.out.wants_pacing() {
            self.pace = Some(outlet.clone());
        }
    }

    /// The subscriber the publisher should wait for, if any (taken).
    pub fn take_pacing(&mut self) -> Option<Arc<Outlet>> {
        self.pace.take()
    }

    /// Flush every queue that has something new, in place where its
    /// writer is idle and its socket takes the bytes now, else by waking
    /// its writer; returns the counters (out_msgs, out_bytes,
    /// slow_consumers) and resets them.
    pub fn finish(&mut self) -> (u64, u64, u64) {
        // A batch that reached many connections leaves the writing to their
        // writer tasks, which run beside this one on other workers; a
        // publisher writing to all of them itself would serialise it.
        let direct = self.wake.len() <= DIRECT_FLUSH_MAX;
        for o in self.wake.drain(..) {
            if !(direct && o.out.flush_direct(&mut self.scratch)) {
                o.out.signal();
            }
        }
        let c = (self.out_msgs, self.out_bytes, self.slow_consumers);
        self.out_msgs = 0;
        self.out_bytes = 0;
        self.slow_consumers = 0;
        c
    }
}

/// Publish `msg` in `account`: look it up (through the publisher's
/// `cache`) and deliver it. Returns how many subscriptions, queue groups
/// and route peers received it.
///
/// A client's PUB arrives already mapped (its reader applies the
/// account's subject mappings before the publish permission check, as
/// nats-server does); an `Origin::Import` message is mapped here. Client
/// publishes pay one compare of `origin` here; an import into an account
/// without mappings, one relaxed load besides.
pub fn publish(
    account: &Account,
    cache: &mut LookupCache,
    msg: &Message<'_>,
    origin: Origin<'_>,
    batch: &mut Batch,
) -> usize {
    if matches!(origin, Origin::Import) && account.has_mappings() {
        return publish_mapped(account, cache, msg, origin, batch);
    }
    let entry = account.router.lookup_cached(cache, msg.subject);
    deliver_result(account, &entry.result, msg, &origin, batch)
}

/// `publish` through the account's subject mappings.
#[cold]
fn publish_mapped(
    account: &Account,
    cache: &mut LookupCache,
    msg: &Message<'_>,
    origin: Origin<'_>,
    batch: &mut Batch,
) -> usize {
    let subject = match account.map_subject(msg.subject) {
        Mapped::Unmapped => {
            let entry = account.router.lookup_cached(cache, msg.subject);
            return deliver_result(account, &entry.result, msg, &origin, batch);
        }
        Mapped::To(s) => s,
        Mapped::Dropped => return 0,
    };
    let m = Message {
        subject: &subject,
        ..*msg
    };
    let entry = account.router.lookup_cached(cache, m.subject);
    deliver_result(account, &entry.result, &m, &origin, batch)
}

/// Deliver to an already looked-up result.
pub fn deliver_result(
    account: &Account,
    result: &SubResult,
    msg: &Message<'_>,
    origin: &Origin<'_>,
    batch: &mut Batch,
) -> usize {
    let mut delivered = 0;
    batch.routes.clear();
    for sub in &result.psubs {
        if origin.skips(sub) {
            continue;
        }
        if let SubTarget::Route(o) = &sub.target {
            if !sub.is_closed() && !batch.routes.iter().any(|(r, _)| Arc::ptr_eq(r, o)) {
                batch.routes.push((o.clone(), Vec::new()));
            }
            continue;
        }
        if deliver_local(account, sub, msg, batch) {
            delivered += 1;
        }
    }
    for group in &result.qsubs {
        if let Origin::Route { queues } = origin
            && !queues.contains(&group.name)
        {
            continue;
        }
        if !group.local.is_empty() {
            let n = group.local.len();
            let start = fastrand::usize(..n);
            let taken = (0..n).any(|i| {
                let sub = &group.local[(start + i) % n];
                !origin.skips(sub) && deliver_local(account, sub, msg, batch)
            });
            if taken {
                delivered += 1;
                continue;
            }
        }
        if matches!(origin, Origin::Route { .. } | Origin::Local) {
            continue;
        }
        if let Some(o) = pick_weighted(&group.remote) {
            match batch.routes.iter_mut().find(|(r, _)| Arc::ptr_eq(r, &o)) {
                Some((_, qs)) => qs.push(group.name.clone()),
                None => batch.routes.push((o, vec![group.name.clone()])),
            }
        }
    }
    let routes = std::mem::take(&mut batch.routes);
    for (outlet, queues) in &routes {
        let r = outlet.out.push_msg(
            || true,
            |b| encode_route_line(b, &account.name, msg, queues),
            msg.payload,
        );
        if batch.queued(outlet, r) {
            delivered += 1;
            batch.out_msgs += 1;
            batch.out_bytes += msg.payload.len() as u64;
        }
    }
    batch.routes = routes;
    delivered
}

/// A route member of a queue group, chosen with probability proportional
/// to the number of members it stands for.
fn pick_weighted(remote: &[Arc<Subscription>]) -> Option<Arc<Outlet>> {
    let live = || remote.iter().filter(|s| !s.is_closed());
    let total: u64 = live().map(|s| u64::from(s.weight())).sum();
    if total == 0 {
        return None;
    }
    let mut r = fastrand::u64(..total);
    for s in live() {
        let w = u64::from(s.weight());
        if r < w {
            return s.target.outlet().cloned();
        }
        r -= w;
    }
    None
}

/// Deliver to one client subscription or internal handler. Returns
/// whether it took the message.
pub fn deliver_local(
    account: &Account,
    sub: &Arc<Subscription>,
    msg: &Message<'_>,
    batch: &mut Batch,
) -> bool {
    let outlet = match &sub.target {
        SubTarget::Client(o) => o,
        SubTarget::Internal(h) => {
            let admit = sub.admit();
            if admit == Admit::Skip {
                return false;
            }
            h.deliver(msg, batch);
            if admit == Admit::DeliverLast {
                account.router.remove_expired(sub.clone());
            }
            return true;
        }
        // Routes are collected per peer by the caller.
        SubTarget::Route(_) => return false,
    };
    if outlet.denies_delivery(msg.subject, sub.queue.as_deref()) {
        return false;
    }
    let admit = sub.admit();
    if admit == Admit::Skip {
        return false;
    }
    let with_headers =
        msg.header_len.is_some() && outlet.headers.load(std::sync::atomic::Ordering::Relaxed);
    let stripped;
    let (payload, hdr_len) = match msg.header_len {
        // A subscriber that cannot take headers gets the body alone.
        Some(h) if !with_headers => {
            stripped = msg.payload.slice(h..);
            (&stripped, None)
        }
        h => (msg.payload, h),
    };
    // Re-check the subscription under the subscriber's queue lock: an
    // UNSUB processed meanwhile may already have queued the PONG that
    // acknowledges it, and nothing for this sid may follow that PONG
    // (nats-server makes the same promise; drains rely on it).
    let r = outlet.out.push_msg(
        || !sub.is_closed(),
        |b| encode_msg_line(b, msg.subject, &sub.sid, msg.reply, hdr_len, payload.len()),
        payload,
    );
    let queued = batch.queued(outlet, r);
    if queued {
        batch.out_msgs += 1;
        batch.out_bytes += payload.len() as u64;
        // Response permissions: the subscriber may now answer. One relaxed
        // load for connections without them.
        if let Some(reply) = msg.reply {
            outlet.note_reply(reply);
        }
    }
    if admit == Admit::DeliverLast {
        // Auto-unsubscribe reached its count.
        outlet.note_expired(sub.sid.clone());
        account.router.remove_expired(sub.clone());
    }
    queued
}

/// `MSG subject sid [reply] size\r\n` or
/// `HMSG subject sid [reply] hdr_size total_size\r\n`.
pub fn encode_msg_line(
    b: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    header_len: Option<usize>,
    total: usize,
) {
    b.extend_from_slice(if header_len.is_some() {
        b"HMSG "
    } else {
        b"MSG "
    });
    b.extend_from_slice(subject);
    b.extend_from_slice(b" ");
    b.extend_from_slice(sid);
    b.extend_from_slice(b" ");
    if let Some(r) = reply {
        b.extend_from_slice(r);
        b.extend_from_slice(b" ");
    }
    encode_sizes(b, header_len, total);
}

/// nats-server's route message line:
/// `RMSG account subject [reply] size`, or with queue groups
/// `RMSG account subject + reply q1 q2 size` / `... | q1 q2 size`;
/// `HMSG` (same arguments plus the header size) when there are headers.
pub fn encode_route_line(b: &mut BytesMut, account: &str, msg: &Message<'_>, queues: &[Bytes]) {
    b.extend_from_slice(if msg.header_len.is_some() {
        b"HMSG "
    } else {
        b"RMSG "
    });
    b.extend_from_slice(account.as_bytes());
    b.extend_from_slice(b" ");
    b.extend_from_slice(msg.subject);
    b.extend_from_slice(b" ");
    match (msg.reply, queues.is_empty()) {
        (Some(r), true) => {
            b.extend_from_slice(r);
            b.extend_from_slice(b" ");
        }
        (None, true) => {}
        (Some(r), false) => {
            b.extend_from_slice(b"+ ");
            b.extend_from_slice(r);
            b.extend_from_slice(b" ");
        }
        (None, false) => b.extend_from_slice(b"| "),
    }
    for q in queues {
        b.extend_from_slice(q);
        b.extend_from_slice(b" ");
    }
    encode_sizes(b, msg.header_len, msg.payload.len());
}

fn encode_sizes(b: &mut BytesMut, header_len: Option<usize>, total: usize) {
    let mut num = itoa::Buffer::new();
    if let Some(h) = header_len {
        b.extend_from_slice(num.format(h).as_bytes());
        b.extend_from_slice(b" ");
    }
    b.extend_from_slice(num.format(total).as_bytes());
    b.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
