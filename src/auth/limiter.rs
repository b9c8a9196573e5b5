//! Brute-force and flood protection: per-source failed-authentication bans
//! and a server-wide new-connection rate limit.
//!
//! Every method has an `_at` twin taking the current instant, so tests (and
//! anything else that needs a controlled clock) can drive time by hand.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use super::AuthLimits;

/// Most sources tracked at once. Past this, expired entries are dropped;
/// if the table is still full, new sources go untracked (and are counted)
/// rather than the table growing without bound under a spoofed flood.
pub const MAX_TRACKED_SOURCES: usize = 100_000;

/// Verdict for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// The source is banned after repeated authentication failures.
    Banned,
    /// The server-wide new-connection rate is exceeded.
    RateLimited,
}

#[derive(Clone, Copy, Debug)]
struct SourceState {
    window_start: Instant,
    failures: u32,
    banned_until: Option<Instant>,
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
    /// Times a source got banned.
    pub bans: AtomicU64,
    /// Connections or logins refused because the source was banned.
    pub banned_refusals: AtomicU64,
    /// Connections refused by the server-wide rate limit.
    pub rate_limited: AtomicU64,
    /// Failures from sources that could not be tracked (table full).
    pub untracked: AtomicU64,
}

/// A copy of the counters, ready to serialize.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LimiterStats {
    pub auth_failures: u64,
    pub bans: u64,
    pub banned_refusals: u64,
    pub rate_limited: u64,
    pub untracked: u64,
    /// Sources banned right now.
    pub banned_sources: u64,
}

/// Per-source failure bans plus a global connection token bucket.
#[derive(Debug)]
pub struct FailureLimiter {
    limits: AuthLimits,
    sources: Mutex<HashMap<IpAddr, SourceState>>,
    bucket: Mutex<Bucket>,
    pub counters: LimiterCounters,
}

/// The key a source is tracked under: IPv4 as is (IPv4-mapped IPv6 counts
/// as IPv4), IPv6 by its /64, since one host usually owns a whole /64.
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

impl FailureLimiter {
    pub fn new(limits: &AuthLimits) -> FailureLimiter {
        Self::new_at(limits, Instant::now())
    }

    pub fn new_at(limits: &AuthLimits, now: Instant) -> FailureLimiter {
        FailureLimiter {
            limits: limits.clone(),
            sources: Mutex::new(HashMap::new()),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(Self::burst_of(limits)),
                last: now,
            }),
            counters: LimiterCounters::default(),
        }
    }

    pub fn limits(&self) -> &AuthLimits {
        &self.limits
    }

    fn burst_of(l: &AuthLimits) -> u32 {
        // A bucket smaller than one token would refuse everything.
        if l.conn_burst == 0 {
            l.max_conn_rate.max(1)
        } else {
            l.conn_burst
        }
    }

    /// Decide on a new connection from `ip` (call at accept, before TLS, so
    /// refused sources cost no handshake).
    pub fn admit(&self, ip: IpAddr) -> Admission {
        self.admit_at(ip, Instant::now())
    }

    pub fn admit_at(&self, ip: IpAddr, now: Instant) -> Admission {
        if self.is_banned_at(ip, now) {
            self.counters
                .banned_refusals
                .fetch_add(1, Ordering::Relaxed);
            return Admission::Banned;
        }
        if !self.take_token_at(now) {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Admission::RateLimited;
        }
        Admission::Allowed
    }

    fn take_token_at(&self, now: Instant) -> bool {
        let rate = self.limits.max_conn_rate;
        if rate == 0 {
            return true;
        }
        let burst = f64::from(Self::burst_of(&self.limits));
        let mut b = self.bucket.lock();
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * f64::from(rate)).min(burst);
        b.last = b.last.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.is_banned_at(ip, Instant::now())
    }

    pub fn is_banned_at(&self, ip: IpAddr, now: Instant) -> bool {
        if self.limits.max_failures == 0 {
            return false;
        }
        self.sources
            .lock()
            .get(&source_key(ip))
            .and_then(|s| s.banned_until)
            .is_some_and(|t| t > now)
    }

    /// Count a failed authentication from `ip`. Returns true when this
    /// failure got the source banned.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        self.record_failure_at(ip, Instant::now())
    }

    pub fn record_failure_at(&self, ip: IpAddr, now: Instant) -> bool {
        self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
        let l = &self.limits;
        if l.max_failures == 0 {
            return false;
        }
        let key = source_key(ip);
        let mut sources = self.sources.lock();
        if !sources.contains_key(&key) && sources.len() >= MAX_TRACKED_SOURCES {
            Self::prune(&mut sources, l.window, now);
            if sources.len() >= MAX_TRACKED_SOURCES {
                self.counters.untracked.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        let st = sources.entry(key).or_insert(SourceState {
            window_start: now,
            failures: 0,
            banned_until: None,
        });
        match st.banned_until {
            // Already banned: nothing more to decide.
            Some(t) if t > now => return false,
            // A ban that ran out starts the source afresh.
            Some(_) => {
                *st = SourceState {
                    window_start: now,
                    failures: 0,
                    banned_until: None,
                }
            }
            None => {}
        }
        if now.saturating_duration_since(st.window_start) >= l.window {
            st.window_start = now;
            st.failures = 0;
        }
        st.failures += 1;
        if st.failures >= l.max_failures {
            st.banned_until = Some(now + l.ban);
            self.counters.bans.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Drop sources whose window and ban are both over.
    fn prune(sources: &mut HashMap<IpAddr, SourceState>, window: Duration, now: Instant) {
        sources.retain(|_, s| match s.banned_until {
            Some(t) => t > now,
            None => now.saturating_duration_since(s.window_start) < window,
        });
    }

    /// Forget expired sources (call now and then, e.g. from a timer).
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    pub fn sweep_at(&self, now: Instant) {
        Self::prune(&mut self.sources.lock(), self.limits.window, now);
    }

    pub fn stats(&self) -> LimiterStats {
        self.stats_at(Instant::now())
    }

    pub fn stats_at(&self, now: Instant) -> LimiterStats {
        let c = &self.counters;
        let banned = self
            .sources
            .lock()
            .values()
            .filter(|s| s.banned_until.is_some_and(|t| t > now))
            .count();
        LimiterStats {
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
            bans: c.bans.load(Ordering::Relaxed),
            banned_refusals: c.banned_refusals.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            untracked: c.untracked.load(Ordering::Relaxed),
            banned_sources: banned as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_failures: u32, rate: u32, burst: u32) -> AuthLimits {
        AuthLimits {
            max_failures,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(60),
            max_conn_rate: rate,
            conn_burst: burst,
            bcrypt_workers: 1,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ban_engages_and_lifts() {
        let t0 = Instant::now();
        let l = FailureLimiter::new_at(&limits(3, 0, 0), t0);
        let a = ip("10.0.0.1");
        let other = ip("10.0.0.2");
        assert!(!l.record_failure_at(a, t0));
        assert!(!l.record_failure_at(a, t0 + Duration::from_secs(1)));
        assert_eq!(
            l.admit_at(a, t0 + Duration::from_secs(2)),
            Admission::Allowed
        );
        assert!(l.record_failure_at(a, t0 + Duration::from_secs(2)));
        assert!(l.is_banned_at(a, t0 + Duration::from_secs(3)));
        assert_eq!(
            l.admit_at(a, t0 + Duration::from_secs(3)),
            Admission::Banned
        );
        // Other sources are unaffected.
        assert_eq!(
            l.admit_at(other, t0 + Duration::from_secs(3)),
            Admission::Allowed
        );
        // Failures while banned do not extend the ban.
        assert!(!l.record_failure_at(a, t0 + Duration::from_secs(30)));
        assert!(l.is_banned_at(a, t0 + Duration::from_secs(61)));
        assert!(!l.is_banned_at(a, t0 + Duration::from_secs(62)));
        // After the ban, the count starts from zero.
        assert!(!l.record_failure_at(a, t0 + Duration::from_secs(63)));
        assert!(!l.is_banned_at(a, t0 + Duration::from_secs(63)));
        let s = l.stats_at(t0 + Duration::from_secs(63));
        assert_eq!(
            (s.auth_failures, s.bans, s.banned_refusals, s.banned_sources),
            (5, 1, 1, 0)
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t0 = Instant::now();
        let l = FailureLimiter::new_at(&limits(2, 0, 0), t0);
        let a = ip("192.0.2.7");
        assert!(!l.record_failure_at(a, t0));
        assert!(!l.record_failure_at(a, t0 + Duration::from_secs(61)));
        assert!(l.record_failure_at(a, t0 + Duration::from_secs(62)));
    }

    #[test]
    fn ipv6_grouped_by_64_and_mapped_v4_is_v4() {
        let t0 = Instant::now();
        let l = FailureLimiter::new_at(&limits(2, 0, 0), t0);
        assert!(!l.record_failure_at(ip("2001:db8:1:2::1"), t0));
        assert!(l.record_failure_at(ip("2001:db8:1:2:ffff::9"), t0));
        assert!(l.is_banned_at(ip("2001:db8:1:2::abcd"), t0));
        assert!(!l.is_banned_at(ip("2001:db8:1:3::1"), t0));
        assert!(!l.record_failure_at(ip("::ffff:10.1.1.1"), t0));
        assert!(l.record_failure_at(ip("10.1.1.1"), t0));
    }

    #[test]
    fn zero_disables_bans() {
        let t0 = Instant::now();
        let l = FailureLimiter::new_at(&limits(0, 0, 0), t0);
        for _ in 0..100 {
            assert!(!l.record_failure_at(ip("10.0.0.1"), t0));
        }
        assert_eq!(l.admit_at(ip("10.0.0.1"), t0), Admission::Allowed);
        assert_eq!(l.stats_at(t0).auth_failures, 100);
    }

    #[test]
    fn connection_rate_token_bucket() {
        let t0 = Instant::now();
        let l = FailureLimiter::new_at(&limits(0, 10, 5), t0);
        let a = ip("10.0.0.1");
        for _ in 0..5 {
            assert_eq!(l.admit_at(a, t0), Admission::Allowed);
        }
        assert_eq!(l.admit_at(a, t0), Admission::RateLimited);
        // 10/s refills one token per 100 ms.
        assert_eq!(
            l.admit_at(a, t0 + Duration::from_millis(100)),
            Admission::Allowed
        );
        assert_eq!(
            l.admit_at(a, t0 + Duration::from_millis(150)),
            Admission::RateLimited
        );
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(l.admit_at(a, later), Admission::Allowed);
        }
        assert_eq!(l.admit_at(a, later), Admission::RateLimited);
        assert_eq!(l.stats_at(later).rate_limited, 3);
        // An instant earlier than the last one (clock skew) is harmless.
        assert_eq!(l.admit_at(a, t0), Admission::RateLimited);
    }

    #[test]
    fn table_is_bounded() {
        let t0 = Instant::now();
        let l = FailureLimiter::new_at(&limits(5, 0, 0), t0);
        for n in 0..MAX_TRACKED_SOURCES as u32 {
            l.record_failure_at(IpAddr::V4(n.into()), t0);
        }
        let extra = IpAddr::V4(u32::MAX.into());
        l.record_failure_at(extra, t0);
        assert_eq!(l.stats_at(t0).untracked, 1);
        // Once the old entries expire there is room again.
        l.record_failure_at(extra, t0 + Duration::from_secs(61));
        assert_eq!(l.stats_at(t0).untracked, 1);
        assert_eq!(l.sources.lock().len(), 1);
    }
}
