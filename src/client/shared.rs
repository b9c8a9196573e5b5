//! State of one connection that other tasks touch: its byte-counted
//! outbound queue (written by every publisher that delivers to it), its
//! subscriptions, counters and metadata for monitoring.
//!
//! ractor mailboxes are unbounded, so messages never travel to a
//! subscriber as actor messages: publishers append encoded frames to this
//! queue under a short lock, and the slow-consumer limit is enforced here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::account::Account;
use crate::router::Subscription;

/// Payloads at least this large are queued as their own `Bytes` (shared by
/// every subscriber); smaller ones are copied next to the MSG line so the
/// socket write stays one contiguous buffer.
const COPY_THRESHOLD: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    Client,
    Route,
}

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
    MaxPayloadExceeded,
    MaxSubscriptionsExceeded,
    MaxConnectionsExceeded,
    ReadError,
    WriteError,
    ServerShutdown,
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
            CloseReason::MaxPayloadExceeded => "Maximum Message Payload Exceeded",
            CloseReason::MaxSubscriptionsExceeded => "Maximum Subscriptions Exceeded",
            CloseReason::MaxConnectionsExceeded => "Maximum Connections Exceeded",
            CloseReason::ReadError => "Read Error",
            CloseReason::WriteError => "Write Error",
            CloseReason::ServerShutdown => "Server Shutdown",
            CloseReason::Crashed => "Internal Error",
            CloseReason::Kicked => "Kicked",
        };
        f.write_str(s)
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
    /// Over max_pending: the connection has been closed as a slow consumer.
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
    out_msgs: u64,
    out_bytes: u64,
}

pub struct Outbound {
    inner: Mutex<OutBuf>,
    notify: Notify,
    max_pending: usize,
}

impl Outbound {
    pub fn new(max_pending: usize) -> Self {
        Outbound {
            inner: Mutex::new(OutBuf {
                cur: BytesMut::new(),
                segs: Vec::new(),
                pending: 0,
                signaled: false,
                closed: false,
                out_msgs: 0,
                out_bytes: 0,
            }),
            notify: Notify::new(),
            max_pending,
        }
    }

    /// Queue one message: `line` writes the MSG/HMSG control line, then the
    /// payload and CRLF follow. `wanted` is asked under the queue's lock
    /// (see `Reader::deliver`); when it says no, nothing is queued and the
    /// result is `Closed`.
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
        o.out_msgs += 1;
        o.out_bytes += payload.len() as u64;
        Self::mark(&mut o)
    }

    /// Queue raw protocol bytes (INFO, PONG, +OK, -ERR, PING). These are
    /// never refused for size: they are tiny and the server's own.
    pub fn push_raw(&self, data: &[u8]) -> Enqueued {
        let mut o = self.inner.lock();
        if o.closed {
            return Enqueued::Closed;
        }
        o.cur.extend_from_slice(data);
        o.pending += data.len();
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

    /// Take everything queued; the caller writes it then calls `written`.
    pub fn take(&self, into: &mut Vec<Bytes>) -> usize {
        let mut o = self.inner.lock();
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

    pub fn written(&self, n: usize) {
        let mut o = self.inner.lock();
        o.pending = o.pending.saturating_sub(n);
    }

    /// Stop accepting messages but keep what is queued, so the writer's
    /// final flush still sends it (e.g. the `-ERR` that explains a close).
    /// The writer calls `close` once it is done, which frees the queue.
    pub fn seal(&self) {
        self.inner.lock().closed = true;
    }

    /// Stop accepting messages and drop what is queued.
    pub fn close(&self) {
        let mut o = self.inner.lock();
        o.closed = true;
        o.segs = Vec::new();
        o.cur = BytesMut::new();
        o.pending = 0;
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

/// CONNECT credentials, held in memory only for re-authentication on reload.
#[derive(Clone, Default)]
pub struct Credentials {
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    // Never print the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Descriptive data for /connz and logs.
#[derive(Debug, Clone, Default)]
pub struct ConnMeta {
    pub name: String,
    pub lang: String,
    pub version: String,
    pub user: Option<String>,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
}

pub struct ConnShared {
    pub cid: u64,
    pub kind: ConnKind,
    pub peer: SocketAddr,
    pub start: SystemTime,
    pub out: Outbound,
    /// The peer understands HMSG (it said `headers: true`).
    pub headers: AtomicBool,
    pub account: Arc<Account>,
    pub subs: Mutex<FxHashMap<Bytes, Arc<Subscription>>>,
    pub meta: Mutex<ConnMeta>,
    /// The verified client certificate's identity (mutual TLS).
    pub tls_identity: Mutex<Option<crate::tls::CertIdentity>>,
    /// The credentials this client authenticated with, kept so a
    /// configuration reload can check them again and drop the client if
    /// they are no longer valid (as nats-server does).
    pub credentials: Mutex<Option<Credentials>>,
    /// Subscribe-deny patterns of this client's permissions, applied to
    /// every delivery (a wildcard subscription may overlap a denied subject).
    deny_delivery: parking_lot::RwLock<Vec<Bytes>>,
    /// Permissions replaced by a configuration reload, for the reader to
    /// pick up (it checks `perms_generation` once per publish or SUB).
    pub reloaded_perms: Mutex<Option<Arc<crate::auth::Permissions>>>,
    pub perms_generation: AtomicU64,
    /// Fast check so connections without deny rules pay one relaxed load.
    has_deny_delivery: AtomicBool,
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    /// Unanswered PINGs sent by the server.
    pub pings_out: AtomicU64,
    /// The client sent something since the last keep-alive tick.
    pub client_data: AtomicBool,
    /// Cancelled when the connection must end; reader and writer watch it.
    pub closing: CancellationToken,
    close_reason: Mutex<Option<CloseReason>>,
    cleaned: AtomicBool,
}

impl ConnShared {
    pub fn new(
        cid: u64,
        kind: ConnKind,
        peer: SocketAddr,
        account: Arc<Account>,
        max_pending: usize,
    ) -> Self {
        ConnShared {
            cid,
            kind,
            peer,
            start: SystemTime::now(),
            out: Outbound::new(max_pending),
            headers: AtomicBool::new(false),
            account,
            subs: Mutex::new(FxHashMap::default()),
            meta: Mutex::new(ConnMeta::default()),
            tls_identity: Mutex::new(None),
            credentials: Mutex::new(None),
            deny_delivery: parking_lot::RwLock::new(Vec::new()),
            has_deny_delivery: AtomicBool::new(false),
            reloaded_perms: Mutex::new(None),
            perms_generation: AtomicU64::new(0),
            in_msgs: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            pings_out: AtomicU64::new(0),
            client_data: AtomicBool::new(false),
            closing: CancellationToken::new(),
            close_reason: Mutex::new(None),
            cleaned: AtomicBool::new(false),
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
        self.closing.cancel();
        true
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason.lock().clone()
    }

    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Remove every subscription of this connection from its account's
    /// router. Idempotent: runs from the actor's post_stop and again from
    /// the supervisor when the actor failed (post_stop is skipped then).
    pub fn cleanup(&self) -> bool {
        if self.cleaned.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.close(CloseReason::ClientClosed);
        // Closing must be visible before `subs` is drained (the reader
        // refuses new SUBs once it is); `close` may have returned early
        // while another thread's close is still about to cancel.
        self.closing.cancel();
        let subs: Vec<_> = self.subs.lock().drain().map(|(_, s)| s).collect();
        self.account.router.unsubscribe(subs);
        // Seal rather than close: cleanup can run (from post_stop or the
        // supervisor) before the writer's final flush, and dropping the
        // queue here lost the `-ERR` line a protocol error had just queued.
        // The writer always ends with `out.close()`, which frees the queue.
        self.out.seal();
        true
    }

    /// Apply permissions from a reloaded configuration: deliveries are
    /// filtered at once, the reader switches before its next publish or
    /// SUB, and subscriptions the new permissions forbid are removed.
    pub fn replace_permissions(&self, perms: Option<Arc<crate::auth::Permissions>>) {
        let denies = perms
            .as_ref()
            .map(|p| p.delivery_denies())
            .unwrap_or_default();
        self.set_delivery_denies(denies);
        let forbidden: Vec<Arc<Subscription>> = match &perms {
            Some(p) => {
                let mut subs = self.subs.lock();
                let gone: Vec<Bytes> = subs
                    .iter()
                    .filter(|(_, s)| !p.can_subscribe(&s.subject, s.queue.as_deref()))
                    .map(|(sid, _)| sid.clone())
                    .collect();
                gone.iter().filter_map(|sid| subs.remove(sid)).collect()
            }
            None => Vec::new(),
        };
        if !forbidden.is_empty() {
            self.account.router.unsubscribe(forbidden);
        }
        *self.reloaded_perms.lock() = perms;
        self.perms_generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn set_delivery_denies(&self, denies: Vec<Bytes>) {
        self.has_deny_delivery
            .store(!denies.is_empty(), Ordering::Release);
        *self.deny_delivery.write() = denies;
    }

    /// Must a message on `subject` be withheld from this connection?
    pub fn denies_delivery(&self, subject: &[u8]) -> bool {
        self.has_deny_delivery.load(Ordering::Relaxed)
            && self
                .deny_delivery
                .read()
                .iter()
                .any(|d| crate::protocol::subject::matches(d, subject))
    }

    pub fn num_subs(&self) -> usize {
        self.subs.lock().len()
    }
}
