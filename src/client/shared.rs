//! State of one client connection that other tasks touch: its `Outlet`
//! (the outbound queue every publisher writes to, its close signal), its
//! subscriptions, counters and metadata for monitoring.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::account::Account;
use crate::outbound::{CloseReason, Outlet, OutletKind};
use crate::router::Subscription;

/// CONNECT credentials, held in memory only for re-authentication on reload.
#[derive(Clone, Default)]
pub struct Credentials {
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
    /// nkey logins: the key, its signature and the nonce it signed (a
    /// re-check verifies the signature again).
    pub nkey: Option<String>,
    pub sig: Option<String>,
    pub nonce: Option<String>,
    pub jwt: Option<String>,
}

impl Credentials {
    /// As an authenticator takes them.
    pub fn presented(&self) -> crate::auth::Presented<'_> {
        crate::auth::Presented {
            user: self.user.as_deref(),
            pass: self.pass.as_deref(),
            token: self.token.as_deref(),
            nkey: self.nkey.as_deref(),
            sig: self.sig.as_deref(),
            jwt: self.jwt.as_deref(),
            nonce: self.nonce.as_deref(),
            peer: None,
        }
    }
}

impl Credentials {
    /// Overwrite the secrets in place (zeroize cannot be optimised away).
    fn wipe(&mut self) {
        use zeroize::Zeroize;
        self.pass.zeroize();
        self.token.zeroize();
    }
}

/// The password and token are zeroed when the credentials go (the
/// connection closes, a reload's copy is done with): they do not linger
/// in freed memory.
impl Drop for Credentials {
    fn drop(&mut self) {
        self.wipe();
    }
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
    /// What publishers deliver to (and the connection's close signal).
    pub outlet: Arc<Outlet>,
    pub start: SystemTime,
    /// Bound once CONNECT is authenticated (or, with no authentication,
    /// at the first operation that needs it).
    account: OnceLock<Arc<Account>>,
    pub subs: Mutex<FxHashMap<Bytes, Arc<Subscription>>>,
    pub meta: Mutex<ConnMeta>,
    /// The verified client certificate's identity (mutual TLS).
    pub tls_identity: Mutex<Option<crate::tls::CertIdentity>>,
    /// The credentials this client authenticated with, kept so a
    /// configuration reload can check them again and drop the client if
    /// they are no longer valid (as nats-server does).
    pub credentials: Mutex<Option<Credentials>>,
    /// The nonce this connection's INFO carried (nkey and JWT logins sign it).
    pub nonce: OnceLock<String>,
    /// SHA-256 of the client certificate's public key (TLS with a client
    /// certificate), for re-checking `pinned_certs` on reload.
    pub tls_fingerprint: Mutex<Option<String>>,
    /// The configuration generation of the newest authentication verdict
    /// this connection holds (login or reload re-check).
    auth_gen: AtomicU64,
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    /// Unanswered PINGs sent by the server.
    pub pings_out: AtomicU64,
    /// The client sent something since the last keep-alive tick.
    pub client_data: AtomicBool,
    /// The most SUB acknowledgements the reader ever had outstanding (for
    /// the test that checks they stay bounded).
    #[doc(hidden)]
    pub unacked_subs_peak: std::sync::atomic::AtomicUsize,
    /// Fault injection for the supervision tests: the writer panics at its
    /// next wake-up.
    #[doc(hidden)]
    pub inject_writer_panic: AtomicBool,
    cleaned: AtomicBool,
}

/// A connection is its outlet plus the state only the connection has;
/// `shared.close(..)`, `shared.out`, `shared.peer` reach the outlet.
impl std::ops::Deref for ConnShared {
    type Target = Outlet;
    fn deref(&self) -> &Outlet {
        &self.outlet
    }
}

impl ConnShared {
    pub fn new(cid: u64, peer: SocketAddr, max_pending: usize) -> Self {
        ConnShared {
            cid,
            outlet: Arc::new(Outlet::new(cid, OutletKind::Client, peer, max_pending)),
            start: SystemTime::now(),
            account: OnceLock::new(),
            subs: Mutex::new(FxHashMap::default()),
            meta: Mutex::new(ConnMeta::default()),
            tls_identity: Mutex::new(None),
            credentials: Mutex::new(None),
            tls_fingerprint: Mutex::new(None),
            nonce: OnceLock::new(),
            auth_gen: AtomicU64::new(0),
            in_msgs: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            pings_out: AtomicU64::new(0),
            client_data: AtomicBool::new(false),
            unacked_subs_peak: std::sync::atomic::AtomicUsize::new(0),
            inject_writer_panic: AtomicBool::new(false),
            cleaned: AtomicBool::new(false),
        }
    }

    /// The account this connection is bound to, if any yet.
    pub fn account(&self) -> Option<&Arc<Account>> {
        self.account.get()
    }

    /// Bind the connection to its account (once) and count it there.
    pub fn bind_account(&self, account: Arc<Account>) -> Arc<Account> {
        let bound = self.account.get_or_init(|| {
            account.connections.fetch_add(1, Ordering::Relaxed);
            account
        });
        bound.clone()
    }

    /// Bind to `account` if its `max_connections` leaves room (None when
    /// it does not). A connection already bound keeps its account.
    pub fn try_bind_account(&self, account: Arc<Account>) -> Option<Arc<Account>> {
        if let Some(a) = self.account.get() {
            return Some(a.clone());
        }
        if !account.try_add_connection() {
            return None;
        }
        let mut fresh = false;
        let bound = self.account.get_or_init(|| {
            fresh = true;
            account.clone()
        });
        if !fresh {
            account.connections.fetch_sub(1, Ordering::Relaxed);
        }
        Some(bound.clone())
    }

    /// The account's connection count goes down (once, at final bookkeeping).
    pub fn unbind_account(&self) {
        if let Some(a) = self.account.get() {
            a.connections.fetch_sub(1, Ordering::Relaxed);
        }
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
        self.mark_closing();
        let subs: Vec<_> = self.subs.lock().drain().map(|(_, s)| s).collect();
        if let Some(acc) = self.account() {
            acc.router.unsubscribe(subs);
        }
        // Seal rather than close: cleanup can run (from post_stop or the
        // supervisor) before the writer's final flush, and dropping the
        // queue here lost the `-ERR` line a protocol error had just queued.
        // The writer always ends with `out.close()`, which frees the queue.
        self.out.seal();
        true
    }

    /// Drop the sids the engine auto-unsubscribed from the sid table.
    pub fn reap_expired(&self) {
        let gone = self.outlet.take_expired();
        if gone.is_empty() {
            return;
        }
        let mut subs = self.subs.lock();
        for sid in gone {
            // Only if the sid still names the expired subscription (a new
            // SUB may have reused it).
            if subs
                .get(&sid)
                .is_some_and(|s| s.is_closed() || s.is_exhausted())
            {
                subs.remove(&sid);
            }
        }
    }

    /// Record an admitting verdict of configuration `generation`; false
    /// (and nothing recorded) when a newer verdict is already held.
    pub fn admitted_by(&self, generation: u64) -> bool {
        self.auth_gen.fetch_max(generation, Ordering::AcqRel) <= generation
    }

    /// Close with `reason`, `err` (if any) being the last thing queued:
    /// the queue is sealed right after it, so publishers neither queue nor
    /// flush in place anything more.
    pub fn kick(&self, reason: CloseReason, err: Option<&'static [u8]>) {
        if let Some(err) = err {
            self.out.push_raw(err);
        }
        self.out.seal();
        self.close(reason);
    }

    /// A re-check of configuration `generation` refused the credentials:
    /// close with 'Authorization Violation', unless a newer verdict
    /// already admitted the connection.
    pub fn revoke(&self, generation: u64) {
        if self.auth_gen.load(Ordering::Acquire) <= generation {
            self.kick(
                CloseReason::AuthenticationViolation,
                Some(super::conn::errors::AUTH_VIOLATION),
            );
        }
    }

    pub fn num_subs(&self) -> usize {
        self.reap_expired();
        self.subs.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::Credentials;

    #[test]
    fn credentials_wipe_their_secrets() {
        let mut c = Credentials::default();
        c.user = Some("u".into());
        c.pass = Some("hunter2".into());
        c.token = Some("s3cr3t".into());
        let copy = c.clone();
        c.wipe();
        assert_eq!(c.pass, None);
        assert_eq!(c.token, None);
        // A clone is independent and wiped on its own drop.
        assert_eq!(copy.pass.as_deref(), Some("hunter2"));
        assert!(!format!("{copy:?}").contains("hunter2"));
    }
}
