//! Brute-force and flood protection: failed-login bans keyed by
//! (source, user name), and an optional server-wide new-connection rate
//! limit.
//!
//! ## Policy
//!
//! * A failure against a user that exists counts on the key (source,
//!   user). `max_failures` of them within `window` ban that key: logins as
//!   that user from that source are refused, without checking the
//!   password, for `ban`. Every other user of the same source (a NAT, a
//!   shared egress) is untouched: valid credentials of a user that was not
//!   the target are never refused.
//! * A failure that names no existing user (unknown or missing user name,
//!   wrong token, unmapped certificate) counts on the source's own key
//!   (source, -), one budget for the whole spray. With user names
//!   (user/password, nkey-less users) its ban refuses only logins that name
//!   no existing user, which can never succeed anyway. In token and
//!   `tls_map` modes there is no user name to key on, so that ban refuses
//!   every token or certificate login from the source: it fails closed (a
//!   misbehaving client behind a NAT can lock out its neighbours there).
//! * Each new ban of a key that is still remembered doubles the previous
//!   one, up to `max_ban`. A key is forgotten once it has been quiet (no
//!   failure, no ban) for `window`.
//! * The table is bounded: when it is full the oldest clean entries (not
//!   banned) are evicted, then if need be the bans that end soonest; new
//!   failures are always tracked. An attacker with more addresses than the
//!   table holds (100k keys; IPv6 /64s are one source each) can push out
//!   a ban that way; no per-user budget across sources exists yet.
//!
//! Every method has an `_at` twin taking the current instant, so tests (and
//! anything else that needs a controlled clock) can drive time by hand.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use super::AuthLimits;

/// Most keys tracked at once. Past this, expired entries are dropped and
/// then the oldest clean ones evicted (in batches of a sixteenth, so a
/// spoofed flood costs one scan per batch, not per failure).
pub const MAX_TRACKED_KEYS: usize = 100_000;

/// Verdict for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// The server-wide new-connection rate (`max_conn_rate`) is exceeded.
    RateLimited,
}

/// What a failure is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    source: IpAddr,
    /// An existing user's name; None for the source's spray budget.
    user: Option<Box<str>>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    window_start: Instant,
    failures: u32,
    banned_until: Option<Instant>,
    /// Bans so far; the next one lasts `ban * 2^strikes`.
    strikes: u32,
    /// Last failure or end of the last ban, whichever is later: the entry
    /// is clean (forgettable) once `window` has passed since.
    quiet_since: Instant,
}

impl Entry {
    fn fresh(now: Instant) -> Entry {
        Entry {
            window_start: now,
            failures: 0,
            banned_until: None,
            strikes: 0,
            quiet_since: now,
        }
    }

    fn banned_at(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|t| t > now)
    }

    fn expired_at(&self, now: Instant, window: Duration) -> bool {
        !self.banned_at(now) && now.saturating_duration_since(self.quiet_since) >= window
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Counters for /varz.
#[derive(Debug, Default)]
pub struct LimiterCounters {
    /// Failed authentications recorded.
    pub auth_failures: AtomicU64,
    /// Times a key got banned.
    pub bans: AtomicU64,
    /// Logins refused because their key was banned.
    pub banned_refusals: AtomicU64,
    /// Connections refused by the server-wide rate limit.
    pub rate_limited: AtomicU64,
    /// Entries evicted from a full table.
    pub evicted: AtomicU64,
    /// Credential checks in progress (queued for or running bcrypt). A
    /// gauge: back to 0 when the server is idle.
    pub pending_checks: AtomicU64,
    /// Checks dropped before they were decided: the client hung up or the
    /// auth timeout passed while they waited.
    pub abandoned_checks: AtomicU64,
}

/// A copy of the counters, ready to serialize.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LimiterStats {
    pub auth_failures: u64,
    pub bans: u64,
    pub banned_refusals: u64,
    pub rate_limited: u64,
    pub evicted: u64,
    pub pending_checks: u64,
    pub abandoned_checks: u64,
    /// (source, user) keys banned right now.
    pub banned_keys: u64,
    /// Keys tracked right now.
    pub tracked_keys: u64,
}

/// Failure bans plus a global connection token bucket. One lives for the
/// whole server: a reload changes its limits ([`set_limits`]) but keeps
/// its bans, failure counts and bucket.
///
/// [`set_limits`]: FailureLimiter::set_limits
#[derive(Debug)]
pub struct FailureLimiter {
    limits: RwLock<AuthLimits>,
    entries: Mutex<HashMap<Key, Entry>>,
    bucket: Mutex<Bucket>,
    capacity: usize,
    pub counters: LimiterCounters,
}

/// The address a source is tracked under: IPv4 as is (IPv4-mapped IPv6
/// counts as IPv4), IPv6 by its /64, since one host usually owns a whole /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn key(ip: IpAddr, user: Option<&str>) -> Key {
    Key {
        source: source_key(ip),
        user: user.map(Box::from),
    }
}

impl FailureLimiter {
    pub fn new(limits: &AuthLimits) -> FailureLimiter {
        Self::new_at(limits, Instant::now())
    }

    pub fn new_at(limits: &AuthLimits, now: Instant) -> FailureLimiter {
        Self::with_capacity_at(limits, MAX_TRACKED_KEYS, now)
    }

    /// A limiter tracking at most `capacity` keys (tests use small ones).
    pub fn with_capacity_at(limits: &AuthLimits, capacity: usize, now: Instant) -> FailureLimiter {
        FailureLimiter {
            limits: RwLock::new(limits.clone()),
            entries: Mutex::new(HashMap::new()),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(Self::burst_of(limits)),
                last: now,
            }),
            capacity: capacity.max(1),
            counters: LimiterCounters::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> AuthLimits {
        self.limits.read().clone()
    }

    /// Apply reloaded limits. Bans, failure counts and the bucket's tokens
    /// stay (the tokens capped at the new burst).
    pub fn set_limits(&self, limits: &AuthLimits) {
        *self.limits.write() = limits.clone();
        let burst = f64::from(Self::burst_of(limits));
        let mut b = self.bucket.lock();
        b.tokens = b.tokens.min(burst);
    }

    fn burst_of(l: &AuthLimits) -> u32 {
        // A bucket smaller than one token would refuse everything.
        if l.conn_burst == 0 {
            l.max_conn_rate.max(1)
        } else {
            l.conn_burst
        }
    }

    /// Decide on a new connection (call at accept, before TLS). Only the
    /// rate limit applies here: bans are per user and checked at CONNECT.
    pub fn admit(&self, ip: IpAddr) -> Admission {
        self.admit_at(ip, Instant::now())
    }

    pub fn admit_at(&self, _ip: IpAddr, now: Instant) -> Admission {
        if !self.take_token_at(now) {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Admission::RateLimited;
        }
        Admission::Allowed
    }

    fn take_token_at(&self, now: Instant) -> bool {
        let (rate, burst) = {
            let l = self.limits.read();
            (l.max_conn_rate, Self::burst_of(&l))
        };
        if rate == 0 {
            return true;
        }
        let mut b = self.bucket.lock();
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        b.last = b.last.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Is the source's own key (failures naming no user) banned?
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.is_banned_for_at(ip, None, Instant::now())
    }

    /// Is (source, user) banned? `user` must name an existing user (None:
    /// the source's spray budget).
    pub fn is_banned_for(&self, ip: IpAddr, user: Option<&str>) -> bool {
        self.is_banned_for_at(ip, user, Instant::now())
    }

    pub fn is_banned_at(&self, ip: IpAddr, now: Instant) -> bool {
        self.is_banned_for_at(ip, None, now)
    }

    pub fn is_banned_for_at(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> bool {
        if self.limits.read().max_failures == 0 {
            return false;
        }
        self.entries
            .lock()
            .get(&key(ip, user))
            .is_some_and(|e| e.banned_at(now))
    }

    /// Count a failure that names no existing user against the source.
    /// Returns true when this failure got the key banned.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        self.record_failure_for_at(ip, None, Instant::now())
    }

    pub fn record_failure_at(&self, ip: IpAddr, now: Instant) -> bool {
        self.record_failure_for_at(ip, None, now)
    }

    /// Count a failed login as `user` (an existing user; None: the source's
    /// spray budget). Returns true when this failure got the key banned.
    pub fn record_failure_for(&self, ip: IpAddr, user: Option<&str>) -> bool {
        self.record_failure_for_at(ip, user, Instant::now())
    }

    pub fn record_failure_for_at(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> bool {
        self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
        let l = self.limits.read().clone();
        if l.max_failures == 0 {
            return false;
        }
        let k = key(ip, user);
        let mut entries = self.entries.lock();
        if !entries.contains_key(&k) && entries.len() >= self.capacity {
            self.make_room(&mut entries, l.window, now);
        }
        let e = entries.entry(k).or_insert_with(|| Entry::fresh(now));
        match e.banned_until {
            // Already banned: refused logins are not counted again.
            Some(t) if t > now => return false,
            // A ban that ran out: count afresh, but remember the strikes.
            Some(_) => {
                e.banned_until = None;
                e.window_start = now;
                e.failures = 0;
            }
            None => {}
        }
        if now.saturating_duration_since(e.window_start) >= l.window {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        e.quiet_since = now;
        if e.failures < l.max_failures {
            return false;
        }
        let factor = 1u32.checked_shl(e.strikes.min(31)).unwrap_or(u32::MAX);
        let length = l.ban.saturating_mul(factor).min(l.max_ban.max(l.ban));
        let until = now
            .checked_add(length)
            .or_else(|| now.checked_add(l.ban))
            .unwrap_or(now);
        e.banned_until = Some(until);
        e.quiet_since = until;
        e.strikes = e.strikes.saturating_add(1);
        e.failures = 0;
        self.counters.bans.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// When the table is full: drop what has expired, and if that is not
    /// enough evict a batch, oldest clean entries first, then the bans that
    /// end soonest. Tracking a new failure beats remembering an old one.
    fn make_room(&self, entries: &mut HashMap<Key, Entry>, window: Duration, now: Instant) {
        entries.retain(|_, e| !e.expired_at(now, window));
        if entries.len() < self.capacity {
            return;
        }
        let batch = (self.capacity / 16).max(1).min(entries.len());
        let mut order: Vec<(bool, Instant, Key)> = entries
            .iter()
            .map(|(k, e)| {
                let banned = e.banned_at(now);
                let when = if banned {
                    e.banned_until.unwrap_or(now)
                } else {
                    e.quiet_since
                };
                (banned, when, k.clone())
            })
            .collect();
        order.select_nth_unstable_by(batch - 1, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (_, _, k) in order.into_iter().take(batch) {
            entries.remove(&k);
        }
        self.counters
            .evicted
            .fetch_add(batch as u64, Ordering::Relaxed);
    }

    /// Forget keys that have been quiet for a window. The server calls this
    /// from a timer.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    pub fn sweep_at(&self, now: Instant) {
        let window = self.limits.read().window;
        self.entries
            .lock()
            .retain(|_, e| !e.expired_at(now, window));
    }

    /// Keys tracked right now.
    pub fn tracked(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn stats(&self) -> LimiterStats {
        self.stats_at(Instant::now())
    }

    pub fn stats_at(&self, now: Instant) -> LimiterStats {
        let c = &self.counters;
        let (banned, tracked) = {
            let entries = self.entries.lock();
            let banned = entries.values().filter(|e| e.banned_at(now)).count();
            (banned, entries.len())
        };
        LimiterStats {
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
            bans: c.bans.load(Ordering::Relaxed),
            banned_refusals: c.banned_refusals.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            pending_checks: c.pending_checks.load(Ordering::Relaxed),
            abandoned_checks: c.abandoned_checks.load(Ordering::Relaxed),
            banned_keys: banned as u64,
            tracked_keys: tracked as u64,
        }
    }
}

#[cfg(test)]
mod tests;
