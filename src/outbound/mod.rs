//! Where messages leave the server: the byte-counted outbound queue of a
//! connection (client or route) and its `Outlet`, the part of a
//! connection that the delivery engine touches.
//!
//! ractor mailboxes are unbounded, so messages never travel to a
//! subscriber as actor messages: publishers append encoded frames to the
//! outlet's queue under a short lock, and the slow-consumer limit
//! (`max_pending`) is enforced here, in bytes.
//!
//! This module sits below `router` and `deliver`: a subscription points at
//! an `Outlet`, never at a client or route type, so the index and the
//! engine do not depend on the modules that own sockets.

mod replies;

pub use replies::{MAX_TRACKED_REPLIES, ReplyTracker, ResponseLimits};

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Payloads at least this large are queued as their own `Bytes` (shared by
/// every subscriber); smaller ones are copied next to the MSG line so the
/// socket write stays one contiguous buffer.
const COPY_THRESHOLD: usize = 2048;

/// A publisher that has just queued to a subscriber with more than this
/// pending (or three quarters of its `max_pending`, if less) pauses
/// briefly until that subscriber's writer drains below half of it: a fast
/// producer is paced by its consumers instead of filling their queues,
/// which keeps latency under a flood close to what the network allows and
/// keeps a subscriber that is merely slower than its publisher from being
/// cut as a slow consumer (nats-server stalls fast producers too).
pub const STALL_AT: usize = 1024 * 1024;
/// The longest one pause lasts.
pub const STALL_MAX: Duration = Duration::from_millis(5);
/// Pauses without any progress after which a queue counts as stuck.
const STUCK_AFTER: usize = 4;
/// Why a connection closed, as /connz and the logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    ClientClosed,
    SlowConsumerPendingBytes,
    SlowConsumerWriteDeadline,
    StaleConnection,
    ProtocolViolation(&'static str),
    AuthenticationTimeout,
    AuthenticationViolation,
    AuthenticationExpired,
    MaxPayloadExceeded,
    MaxSubscriptionsExceeded,
    MaxConnectionsExceeded,
    MaxAccountConnectionsExceeded,
    ReadError,
    WriteError,
    ServerShutdown,
    LameDuck,
    Crashed,
    Kicked,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            CloseReason::ClientClosed => "Client Closed",
            CloseReason::SlowConsumerPendingBytes => "Slow Consumer (Pending Bytes)",
            CloseReason::SlowConsumerWriteDeadline => "Slow Consumer (Write Deadline)",
            CloseReason::StaleConnection => "Stale Connection",
            CloseReason::ProtocolViolation(_) => "Protocol Violation",
            CloseReason::AuthenticationTimeout => "Authentication Timeout",
            CloseReason::AuthenticationViolation => "Authentication Failure",
            CloseReason::AuthenticationExpired => "Authentication Expired",
            CloseReason::MaxPayloadExceeded => "Maximum Message Payload Exceeded",
            CloseReason::MaxSubscriptionsExceeded => "Maximum Subscriptions Exceeded",
            CloseReason::MaxConnectionsExceeded => "Maximum Connections Exceeded",
            CloseReason::MaxAccountConnectionsExceeded => "Maximum Account Connections Exceeded",
            CloseReason::ReadError => "Read Error",
            CloseReason::WriteError => "Write Error",
            CloseReason::ServerShutdown => "Server Shutdown",
            CloseReason::LameDuck => "Server Shutdown",
            CloseReason::Crashed => "Internal Error",
            CloseReason::Kicked => "Kicked",
        };
        f.write_str(s)
    }
}

/// A socket that can take bytes without waiting and without registering
/// for readiness: a publisher flushes a subscriber's queue through it in
/// place when that subscriber's writer task is idle (see
/// `Outbound::flush_direct`). Plain TCP sockets have it; TLS streams,
/// whose writes need the session state the writer task owns, do not.
pub trait DirectWrite: Send + Sync {
    /// Write what the socket takes now; `WouldBlock` when it takes nothing.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize>;
}

/// Segments handed to one vectored write, at most.
pub const MAX_IOVECS: usize = 64;

/// A queue longer than this is left to its writer task rather than
/// flushed in place. An in-place write saves the writer's wake-up, which
/// is what a few small messages need; for a long queue the kernel's TCP
/// work (on loopback, the receiver's side too) would run on the
/// publisher's thread instead of beside it: pubsub 1:1 1KiB +4 % with
/// this bound, request/reply unchanged.
const DIRECT_MAX: usize = 16 * 1024;

/// Point `slices` at the first segments of `segs`; returns how many.
pub fn fill_iovecs<'a>(slices: &mut [IoSlice<'a>; MAX_IOVECS], segs: &'a [Bytes]) -> usize {
    let count = segs.len().min(MAX_IOVECS);
    for (slot, seg) in slices.iter_mut().zip(&segs[..count]) {
        *slot = IoSlice::new(seg);
    }
    count
}

/// After a write of `n` bytes starting at `segs[*idx]`: move `idx` past
/// the segments written whole and trim the one written in part.
pub fn consume_written(segs: &mut [Bytes], idx: &mut usize, mut n: usize) {
    while n > 0 && *idx < segs.len() {
        let len = segs[*idx].len();
        if len <= n {
            n -= len;
            *idx += 1;
        } else {
            bytes::Buf::advance(&mut segs[*idx], n);
            n = 0;
        }
    }
}

/// Result of queueing bytes for a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued; the writer must be woken by the caller (now or at the end of
    /// its batch) because nobody else has done so yet.
    NeedsSignal,
    /// Queued; a wake-up is already on its way.
    Queued,
    /// Over max_pending: nothing was queued; the caller closes the outlet.
    SlowConsumer,
    Closed,
}

struct OutBuf {
    /// Small frames, appended contiguously.
    cur: BytesMut,
    /// Completed chunks ready to write, in order (large payloads are kept
    /// as their shared `Bytes`).
    segs: Vec<Bytes>,
    /// Bytes queued or being written.
    pending: usize,
    signaled: bool,
    closed: bool,
    /// The writer task holds taken bytes it has not finished writing.
    writer_busy: bool,
    /// A publisher is writing this queue's bytes in place.
    direct_busy: bool,
    /// The socket, for in-place flushes; dropped at `close` so a
    /// subscription still referenced from a cache does not keep the socket
    /// open.
    direct: Option<Arc<dyn DirectWrite>>,
    out_msgs: u64,
    out_bytes: u64,
}

// `repr(C)` keeps `pending_hint` next to the lock word: both are written
// by whoever holds the lock, so they share one cache line instead of
// bouncing two between the publisher's and the writer's cores.
#[repr(C)]
pub struct Outbound {
    /// `pending`, readable without the lock (for pacing decisions).
    pending_hint: AtomicUsize,
    inner: Mutex<OutBuf>,
    notify: Notify,
    max_pending: usize,
    /// Pending bytes past which publishers pause (see `STALL_AT`).
    stall_at: usize,
    /// Publishers waiting for this queue to drain.
    drained: Notify,
    drain_wanted: AtomicBool,
    /// Pauses in a row for this queue that saw no progress at all. Past
    /// `STUCK_AFTER` its reader is taken to be stuck and nobody waits for
    /// it again until its writer writes.
    idle_pauses: AtomicUsize,
}

impl Outbound {
    pub fn new(max_pending: usize) -> Self {
        Outbound {
            pending_hint: AtomicUsize::new(0),
            inner: Mutex::new(OutBuf {
                cur: BytesMut::new(),
                segs: Vec::new(),
                pending: 0,
                signaled: false,
                closed: false,
                writer_busy: false,
                direct_busy: false,
                direct: None,
                out_msgs: 0,
                out_bytes: 0,
            }),
            notify: Notify::new(),
            max_pending,
            stall_at: STALL_AT.min(max_pending / 4 * 3),
            drained: Notify::new(),
            drain_wanted: AtomicBool::new(false),
            idle_pauses: AtomicUsize::new(0),
        }
    }

    /// Is this queue deep enough that its publisher should pause?
    pub fn wants_pacing(&self) -> bool {
        self.pending_hint.load(Ordering::Relaxed) > self.stall_at
            && self.idle_pauses.load(Ordering::Relaxed) < STUCK_AFTER
    }

    /// Pause (at most `STALL_MAX`) until the queue drains below half of
    /// its pacing threshold. A queue that does not move through
    /// `STUCK_AFTER` pauses in a row is taken to be stuck, so a subscriber
    /// that stopped reading slows its publishers by at most
    /// `STUCK_AFTER * STALL_MAX` (20 ms) and is then cut at `max_pending`.
    pub async fn pace(&self) {
        let start = self.pending_hint.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + STALL_MAX;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            self.drain_wanted.store(true, Ordering::Release);
            if self.pending_hint.load(Ordering::Relaxed) <= self.stall_at / 2 {
                return;
            }
            tokio::select! {
                _ = &mut drained => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if self.pending_hint.load(Ordering::Relaxed) >= start {
            self.idle_pauses.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Queue one message: `line` writes the MSG/HMSG/RMSG control line, then
    /// the payload and CRLF follow. `wanted` is asked under the queue's lock
    /// (an UNSUB racing with this delivery); when it says no, nothing is
    /// queued and the result is `Closed`.
    pub fn push_msg(
        &self,
        wanted: impl FnOnce() -> bool,
        line: impl FnOnce(&mut BytesMut),
        payload: &Bytes,
    ) -> Enqueued {
        let mut o = self.inner.lock();
        if o.closed || !wanted() {
            return Enqueued::Closed;
        }
        let before = o.cur.len();
        line(&mut o.cur);
        let line_len = o.cur.len() - before;
        let total = line_len + payload.len() + 2;
        if o.pending + total > self.max_pending {
            o.cur.truncate(before);
            return Enqueued::SlowConsumer;
        }
        if payload.len() >= COPY_THRESHOLD {
            let chunk = o.cur.split().freeze();
            o.segs.push(chunk);
            o.segs.push(payload.clone());
        } else {
            o.cur.extend_from_slice(payload);
        }
        o.cur.extend_from_slice(b"\r\n");
        o.pending += total;
        self.pending_hint.store(o.pending, Ordering::Relaxed);
        o.out_msgs += 1;
        o.out_bytes += payload.len() as u64;
        Self::mark(&mut o)
    }

    /// Queue raw protocol bytes (INFO, PONG, +OK, -ERR, PING). They count
    /// toward `max_pending` like messages (as in nats-server): a client that
    /// sends PINGs, or verbose ops, and never reads the answers is a slow
    /// consumer too. An empty queue always takes one line (the INFO of a
    /// server whose `max_pending` is tiny).
    pub fn push_raw(&self, data: &[u8]) -> Enqueued {
        let mut o = self.inner.lock();
        if o.closed {
            return Enqueued::Closed;
        }
        if o.pending > 0 && o.pending + data.len() > self.max_pending {
            return Enqueued::SlowConsumer;
        }
        o.cur.extend_from_slice(data);
        o.pending += data.len();
        self.pending_hint.store(o.pending, Ordering::Relaxed);
        Self::mark(&mut o)
    }

    fn mark(o: &mut OutBuf) -> Enqueued {
        if o.signaled {
            Enqueued::Queued
        } else {
            o.signaled = true;
            Enqueued::NeedsSignal
        }
    }

    /// Wake the writer.
    pub fn signal(&self) {
        self.notify.notify_one();
    }

    /// Queue raw bytes and wake the writer at once.
    pub fn send_now(&self, data: &[u8]) {
        if self.push_raw(data) == Enqueued::NeedsSignal {
            self.signal();
        }
    }

    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Let publishers write this queue's bytes straight to `sink` when the
    /// writer task is idle.
    pub fn set_direct(&self, sink: Arc<dyn DirectWrite>) {
        let mut o = self.inner.lock();
        if !o.closed {
            o.direct = Some(sink);
        }
    }

    /// Take everything queued (the writer task); the caller writes it then
    /// calls `written`. Returns 0, taking nothing, while a publisher is
    /// flushing in place: that publisher wakes the writer if it leaves
    /// anything behind.
    pub fn take(&self, into: &mut Vec<Bytes>) -> usize {
        let mut o = self.inner.lock();
        if o.direct_busy {
            // (An in-place flush only starts while the writer is idle.)
            return 0;
        }
        let n = Self::take_locked(&mut o, into);
        o.writer_busy = n > 0;
        n
    }

    fn take_locked(o: &mut OutBuf, into: &mut Vec<Bytes>) -> usize {
        o.signaled = false;
        into.append(&mut o.segs);
        if !o.cur.is_empty() {
            let chunk = o.cur.split().freeze();
            into.push(chunk);
        }
        // Return the buffer's memory when a burst is over instead of
        // keeping the peak allocation for the life of the connection.
        if o.cur.capacity() > 1 << 20 {
            o.cur = BytesMut::new();
        }
        into.iter().map(|b| b.len()).sum()
    }

    /// Flush in place, from a publisher's task, without waiting: when the
    /// writer task is idle and the socket takes bytes now, write what is
    /// queued straight to it, saving the writer's wake-up (the cost that
    /// dominates request/reply latency; nats-server flushes in place too).
    /// Returns true when nothing is left for the writer; false when the
    /// caller must `signal` it (no direct socket, writer busy, more than
    /// `DIRECT_MAX` queued, or the socket did not take everything).
    /// `scratch` is the caller's.
    pub fn flush_direct(&self, scratch: &mut Vec<Bytes>) -> bool {
        let sink = {
            let mut o = self.inner.lock();
            if o.closed || o.writer_busy || o.direct_busy || o.pending > DIRECT_MAX {
                return false;
            }
            let Some(sink) = o.direct.clone() else {
                return false;
            };
            if Self::take_locked(&mut o, scratch) == 0 {
                // Already written by someone else; nothing to wake for.
                return true;
            }
            o.direct_busy = true;
            sink
        };
        let mut written = 0;
        let mut idx = 0;
        let mut first = true;
        while idx < scratch.len() {
            // A close sealed the queue meanwhile: the rest goes back for
            // the writer's final flush to decide on.
            if !std::mem::take(&mut first) && self.inner.lock().closed {
                break;
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = fill_iovecs(&mut slices, &scratch[idx..]);
            // WouldBlock or an error both leave the rest to the writer
            // task, which waits for the socket and reports errors.
            let Ok(n) = sink.try_write_vectored(&slices[..count]) else {
                break;
            };
            if n == 0 {
                break;
            }
            written += n;
            consume_written(scratch, &mut idx, n);
        }
        let done = {
            let mut o = self.inner.lock();
            o.direct_busy = false;
            if idx < scratch.len() {
                // Unwritten bytes go back in front of anything queued since.
                let rest: Vec<Bytes> = scratch.drain(idx..).collect();
                o.segs.splice(0..0, rest);
            }
            let done = o.segs.is_empty() && o.cur.is_empty();
            if !done {
                o.signaled = true;
            }
            done
        };
        scratch.clear();
        self.written(written);
        done
    }

    pub fn written(&self, n: usize) {
        let pending = {
            let mut o = self.inner.lock();
            o.pending = o.pending.saturating_sub(n);
            self.pending_hint.store(o.pending, Ordering::Relaxed);
            o.pending
        };
        // Read before writing: these lines are shared with publishers, and
        // a write each time would move them for nothing.
        if n > 0 && self.idle_pauses.load(Ordering::Relaxed) != 0 {
            self.idle_pauses.store(0, Ordering::Relaxed);
        }
        if pending <= self.stall_at / 2
            && self.drain_wanted.load(Ordering::Acquire)
            && self.drain_wanted.swap(false, Ordering::AcqRel)
        {
            self.drained.notify_waiters();
        }
    }

    /// Stop accepting messages but keep what is queued, so the writer's
    /// final flush still sends it (e.g. the `-ERR` that explains a close).
    /// The writer calls `close` once it is done, which frees the queue.
    pub fn seal(&self) {
        let mut o = self.inner.lock();
        o.closed = true;
        // No more in-place flushes; the writer's final flush uses its own
        // handle, and the socket must not outlive the connection's tasks
        // because a cache still references this outlet.
        o.direct = None;
    }

    /// Wait (bounded) until no publisher is flushing in place, so the
    /// writer's last words cannot land inside a frame being written. Once
    /// sealed, an in-place flush stops before its next write, so this is
    /// short.
    pub async fn direct_idle(&self) {
        for _ in 0..1000 {
            if !self.inner.lock().direct_busy {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Stop accepting messages and drop what is queued.
    pub fn close(&self) {
        let mut o = self.inner.lock();
        o.closed = true;
        o.direct = None;
        o.segs = Vec::new();
        o.cur = BytesMut::new();
        o.pending = 0;
        self.pending_hint.store(0, Ordering::Relaxed);
        self.drained.notify_waiters();
    }

    pub fn pending(&self) -> usize {
        self.inner.lock().pending
    }

    /// (messages, bytes) delivered to this connection so far.
    pub fn out_counts(&self) -> (u64, u64) {
        let o = self.inner.lock();
        (o.out_msgs, o.out_bytes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutletKind {
    Client,
    Route,
}

/// One message on its way to subscribers. Every field borrows from the
/// publisher's read buffer; `payload` (headers included, for HPUB) is the
/// one `Bytes` every subscriber's queue shares or copies from.
pub struct Message<'a> {
    pub subject: &'a [u8],
    pub reply: Option<&'a [u8]>,
    /// Some(header block size) when the payload starts with headers.
    pub header_len: Option<usize>,
    pub payload: &'a Bytes,
}

/// The delivery end of one connection: what the engine needs to queue a
/// message for it and to cut it off, and nothing about its socket, its
/// account or its protocol state.
pub struct Outlet {
    /// The connection id (cid) shown in logs and /connz.
    pub id: u64,
    pub kind: OutletKind,
    pub peer: SocketAddr,
    pub out: Outbound,
    /// The peer understands HMSG (it said `headers: true`).
    pub headers: AtomicBool,
    /// Subscribe-deny entries (subject, queue) of this client's
    /// permissions, applied to every delivery: a wildcard subscription may
    /// overlap a denied subject, and a queue subscription a queue-scoped
    /// deny (`foo.> q1`).
    deny_delivery: RwLock<Vec<(Bytes, Option<Bytes>)>>,
    /// Fast check so connections without deny rules pay one relaxed load.
    has_deny_delivery: AtomicBool,
    /// Reply subjects delivered to a client with response permissions
    /// (`allow_responses`); None for every other connection.
    replies: Mutex<Option<ReplyTracker>>,
    /// Fast check so connections without response permissions pay one
    /// relaxed load per delivery with a reply subject.
    tracks_replies: AtomicBool,
    /// Sids the engine removed after their auto-unsubscribe count; the
    /// owner drops them from its sid table (`take_expired`).
    expired: Mutex<Vec<Bytes>>,
    has_expired: AtomicBool,
    /// Cancelled when the connection must end; its reader and writer
    /// select on it, so a close decided anywhere (a publisher detecting a
    /// slow consumer, a kick from the control path) reaches both at once.
    pub closing: CancellationToken,
    /// Mirrors `closing` for the per-operation check on the hot path
    /// (`CancellationToken::is_cancelled` takes a mutex).
    closed: AtomicBool,
    close_reason: Mutex<Option<CloseReason>>,
}

impl Outlet {
    pub fn new(id: u64, kind: OutletKind, peer: SocketAddr, max_pending: usize) -> Self {
        Outlet {
            id,
            kind,
            peer,
            out: Outbound::new(max_pending),
            headers: AtomicBool::new(false),
            deny_delivery: RwLock::new(Vec::new()),
            has_deny_delivery: AtomicBool::new(false),
            replies: Mutex::new(None),
            tracks_replies: AtomicBool::new(false),
            expired: Mutex::new(Vec::new()),
            has_expired: AtomicBool::new(false),
            closing: CancellationToken::new(),
            closed: AtomicBool::new(false),
            close_reason: Mutex::new(None),
        }
    }

    /// Begin closing with a reason; the first reason given wins. Returns
    /// true for the call that actually started the close.
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut r = self.close_reason.lock();
        if r.is_some() {
            return false;
        }
        *r = Some(reason);
        drop(r);
        self.mark_closing();
        true
    }

    /// Signal the close (idempotent; `close` is the way to give a reason).
    pub fn mark_closing(&self) {
        self.closed.store(true, Ordering::Release);
        self.closing.cancel();
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason.lock().clone()
    }

    pub fn is_closing(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn set_delivery_denies(&self, denies: Vec<(Bytes, Option<Bytes>)>) {
        self.has_deny_delivery
            .store(!denies.is_empty(), Ordering::Release);
        *self.deny_delivery.write() = denies;
    }

    /// Must a message on `subject` be withheld from this connection's
    /// subscription in `queue` (None: a plain subscription)? A deny entry
    /// with a queue applies only to members of a matching queue group.
    pub fn denies_delivery(&self, subject: &[u8], queue: Option<&[u8]>) -> bool {
        use crate::protocol::subject::matches;
        self.has_deny_delivery.load(Ordering::Relaxed)
            && self.deny_delivery.read().iter().any(|(d, dq)| {
                matches(d, subject)
                    && dq
                        .as_deref()
                        .is_none_or(|dq| queue.is_some_and(|q| dq == q || matches(dq, q)))
            })
    }

    /// Install (or remove) response permissions. Reply subjects recorded
    /// under earlier permissions are forgotten.
    pub fn set_response_limits(&self, limits: Option<ResponseLimits>) {
        let mut r = self.replies.lock();
        self.tracks_replies
            .store(limits.is_some(), Ordering::Release);
        *r = limits.map(ReplyTracker::new);
    }

    /// A message with reply subject `reply` was queued for this connection.
    #[inline]
    pub fn note_reply(&self, reply: &[u8]) {
        if self.tracks_replies.load(Ordering::Relaxed) {
            self.record_reply(reply);
        }
    }

    #[cold]
    fn record_reply(&self, reply: &[u8]) {
        if let Some(t) = self.replies.lock().as_mut() {
            t.record(reply);
        }
    }

    /// May this connection publish to `subject` as a response to a
    /// message it received? Counts the use.
    pub fn response_allowed(&self, subject: &[u8]) -> bool {
        self.tracks_replies.load(Ordering::Relaxed)
            && self
                .replies
                .lock()
                .as_mut()
                .is_some_and(|t| t.allow(subject))
    }

    /// Reply subjects currently tracked (for tests and monitoring).
    pub fn tracked_replies(&self) -> usize {
        self.replies.lock().as_ref().map_or(0, ReplyTracker::len)
    }

    /// Record that the subscription `sid` reached its auto-unsubscribe
    /// count and left the index.
    pub fn note_expired(&self, sid: Bytes) {
        self.expired.lock().push(sid);
        self.has_expired.store(true, Ordering::Release);
    }

    /// The sids expired since the last call (cheap when there are none).
    pub fn take_expired(&self) -> Vec<Bytes> {
        if !self.has_expired.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.expired.lock())
    }
}

/// Write all segments with vectored writes, resuming after partial writes.
pub async fn write_segments<W: tokio::io::AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    segs: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut idx = 0;
    while idx < segs.len() {
        if segs.len() - idx == 1 {
            tokio::io::AsyncWriteExt::write_all(w, &segs[idx]).await?;
            break;
        }
        let mut slices = [std::io::IoSlice::new(&[]); MAX_IOVECS];
        let count = fill_iovecs(&mut slices, &segs[idx..]);
        let n = tokio::io::AsyncWriteExt::write_vectored(w, &slices[..count]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        consume_written(segs, &mut idx, n);
    }
    segs.clear();
    tokio::io::AsyncWriteExt::flush(w).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket stand-in that takes at most `room` bytes, then reports
    /// `WouldBlock`, as a full kernel buffer does.
    struct Socket {
        room: Mutex<usize>,
        got: Mutex<Vec<u8>>,
    }

    impl DirectWrite for Socket {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
            let mut room = self.room.lock();
            if *room == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            let mut got = self.got.lock();
            for b in bufs {
                let take = b.len().min(*room - n);
                got.extend_from_slice(&b[..take]);
                n += take;
                if n == *room {
                    break;
                }
            }
            *room -= n;
            Ok(n)
        }
    }

    fn push(out: &Outbound, payload: &[u8]) {
        let p = Bytes::copy_from_slice(payload);
        out.push_msg(|| true, |b| b.extend_from_slice(b"M "), &p);
    }

    #[test]
    fn direct_flush_keeps_order_and_leaves_the_rest_to_the_writer() {
        let out = Outbound::new(1 << 20);
        let sock = Arc::new(Socket {
            room: Mutex::new(10),
            got: Mutex::new(Vec::new()),
        });
        out.set_direct(sock.clone());
        push(&out, b"first");
        push(&out, &[b'x'; 3000]); // a shared segment, not a copy
        let mut scratch = Vec::new();
        // The socket takes 10 bytes: the rest stays queued, in order.
        assert!(!out.flush_direct(&mut scratch));
        assert_eq!(&sock.got.lock()[..], b"M first\r\nM");
        assert_eq!(out.pending(), 9 + 2 + 3000 + 2 - 10);
        push(&out, b"last");
        let mut taken = Vec::new();
        let n = out.take(&mut taken);
        let mut rest = Vec::new();
        for b in &taken {
            rest.extend_from_slice(b);
        }
        assert_eq!(n, rest.len());
        let mut want = b" ".to_vec();
        want.extend_from_slice(&[b'x'; 3000]);
        want.extend_from_slice(b"\r\nM last\r\n");
        assert_eq!(rest, want);
        // While the writer holds taken bytes, publishers leave it alone.
        push(&out, b"more");
        *sock.room.lock() = 1000;
        assert!(!out.flush_direct(&mut scratch));
        assert_eq!(sock.got.lock().len(), 10);
        out.written(n);
        assert_eq!(out.take(&mut Vec::new()), b"M more\r\n".len());
    }

    #[test]
    fn direct_flush_writes_everything_when_the_socket_takes_it() {
        let out = Outbound::new(1 << 20);
        let sock = Arc::new(Socket {
            room: Mutex::new(1 << 20),
            got: Mutex::new(Vec::new()),
        });
        out.set_direct(sock.clone());
        push(&out, b"a");
        push(&out, b"b");
        let mut scratch = Vec::new();
        assert!(out.flush_direct(&mut scratch));
        assert_eq!(&sock.got.lock()[..], b"M a\r\nM b\r\n");
        assert_eq!(out.pending(), 0);
        // Nothing queued: the writer finds nothing, and a sealed queue
        // drops its socket so nothing more is written in place (nor is the
        // socket kept open by an outlet a cache still references).
        assert_eq!(out.take(&mut Vec::new()), 0);
        out.seal();
        assert_eq!(Arc::strong_count(&sock), 1);
        push(&out, b"c");
        assert!(!out.flush_direct(&mut scratch));
        assert_eq!(sock.got.lock().len(), 10);
    }

    #[test]
    fn a_long_queue_is_left_to_the_writer() {
        let out = Outbound::new(1 << 20);
        let sock = Arc::new(Socket {
            room: Mutex::new(1 << 20),
            got: Mutex::new(Vec::new()),
        });
        out.set_direct(sock.clone());
        push(&out, &[b'x'; DIRECT_MAX]);
        let mut scratch = Vec::new();
        assert!(!out.flush_direct(&mut scratch));
        assert!(sock.got.lock().is_empty());
        assert_eq!(out.take(&mut Vec::new()), DIRECT_MAX + 4);
    }
}
