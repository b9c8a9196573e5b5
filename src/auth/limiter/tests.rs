use super::*;

fn limits(max_failures: u32, rate: u32, burst: u32) -> AuthLimits {
    AuthLimits {
        max_failures,
        window: Duration::from_secs(60),
        ban: Duration::from_secs(60),
        max_ban: Duration::from_secs(3600),
        max_conn_rate: rate,
        conn_burst: burst,
        bcrypt_workers: 1,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn ban_engages_and_lifts() {
    let t0 = Instant::now();
    let l = FailureLimiter::new_at(&limits(3, 0, 0), t0);
    let a = ip("10.0.0.1");
    let other = ip("10.0.0.2");
    assert!(!l.record_failure_at(a, t0));
    assert!(!l.record_failure_at(a, t0 + secs(1)));
    assert!(!l.is_banned_at(a, t0 + secs(2)));
    assert!(l.record_failure_at(a, t0 + secs(2)));
    assert!(l.is_banned_at(a, t0 + secs(3)));
    // Other sources are unaffected.
    assert!(!l.is_banned_at(other, t0 + secs(3)));
    // Failures while banned neither count nor extend the ban.
    assert!(!l.record_failure_at(a, t0 + secs(30)));
    assert!(l.is_banned_at(a, t0 + secs(61)));
    assert!(!l.is_banned_at(a, t0 + secs(62)));
    // After the ban, the count starts from zero.
    assert!(!l.record_failure_at(a, t0 + secs(63)));
    assert!(!l.is_banned_at(a, t0 + secs(63)));
    let s = l.stats_at(t0 + secs(63));
    assert_eq!((s.auth_failures, s.bans, s.banned_keys), (5, 1, 0));
}

#[test]
fn admission_never_refuses_a_banned_source() {
    // Bans are per (source, user) and decided at CONNECT; at accept only
    // the rate limit applies, so nobody behind the same address is locked
    // out before even saying who they are.
    let t0 = Instant::now();
    let l = FailureLimiter::new_at(&limits(1, 0, 0), t0);
    let a = ip("10.0.0.1");
    assert!(l.record_failure_at(a, t0));
    assert!(l.record_failure_for_at(a, Some("app"), t0));
    assert_eq!(l.admit_at(a, t0), Admission::Allowed);
}

#[test]
fn keys_are_per_source_and_user() {
    let t0 = Instant::now();
    let l = FailureLimiter::new_at(&limits(2, 0, 0), t0);
    let nat = ip("198.51.100.7");
    assert!(!l.record_failure_for_at(nat, Some("app"), t0));
    assert!(l.record_failure_for_at(nat, Some("app"), t0));
    assert!(l.is_banned_for_at(nat, Some("app"), t0));
    // Another user behind the same address, the source's spray budget and
    // the same user from elsewhere are all untouched.
    assert!(!l.is_banned_for_at(nat, Some("ops"), t0));
    assert!(!l.is_banned_for_at(nat, None, t0));
    assert!(!l.is_banned_for_at(ip("198.51.100.8"), Some("app"), t0));
    // Sprays of unknown names share one budget per source.
    assert!(!l.record_failure_at(nat, t0));
    assert!(l.record_failure_at(nat, t0));
    assert!(l.is_banned_at(nat, t0));
    assert!(!l.is_banned_for_at(nat, Some("ops"), t0));
}

#[test]
fn repeated_bans_back_off_exponentially_up_to_max_ban() {
    let t0 = Instant::now();
    let mut lim = limits(2, 0, 0);
    lim.max_ban = secs(300);
    let l = FailureLimiter::new_at(&lim, t0);
    let a = ip("10.0.0.1");
    let mut now = t0;
    // A client in a reconnect loop, failing every 2 s.
    let mut lengths = Vec::new();
    for _ in 0..5 {
        loop {
            now += secs(2);
            if l.is_banned_for_at(a, Some("app"), now) {
                continue;
            }
            if l.record_failure_for_at(a, Some("app"), now) {
                break;
            }
        }
        let start = now;
        while l.is_banned_for_at(a, Some("app"), now) {
            now += secs(1);
        }
        lengths.push((now - start).as_secs());
    }
    assert_eq!(lengths, [60, 120, 240, 300, 300]);
    // Quiet for a window after the last ban: forgotten, back to `ban`.
    now += secs(61);
    l.sweep_at(now);
    assert_eq!(l.tracked(), 0);
    assert!(!l.record_failure_for_at(a, Some("app"), now));
    assert!(l.record_failure_for_at(a, Some("app"), now));
    assert!(l.is_banned_for_at(a, Some("app"), now + secs(59)));
    assert!(!l.is_banned_for_at(a, Some("app"), now + secs(60)));
}

#[test]
fn failures_outside_the_window_do_not_add_up() {
    let t0 = Instant::now();
    let l = FailureLimiter::new_at(&limits(2, 0, 0), t0);
    let a = ip("192.0.2.7");
    assert!(!l.record_failure_at(a, t0));
    assert!(!l.record_failure_at(a, t0 + secs(61)));
    assert!(l.record_failure_at(a, t0 + secs(62)));
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
    assert!(!l.is_banned_at(ip("10.0.0.1"), t0));
    assert_eq!(l.admit_at(ip("10.0.0.1"), t0), Admission::Allowed);
    assert_eq!(l.stats_at(t0).auth_failures, 100);
}

#[test]
fn connection_rate_is_off_by_default() {
    let t0 = Instant::now();
    let l = FailureLimiter::new_at(&AuthLimits::default(), t0);
    for _ in 0..100_000 {
        assert_eq!(l.admit_at(ip("10.0.0.1"), t0), Admission::Allowed);
    }
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
    let later = t0 + secs(3600);
    for _ in 0..5 {
        assert_eq!(l.admit_at(a, later), Admission::Allowed);
    }
    assert_eq!(l.admit_at(a, later), Admission::RateLimited);
    assert_eq!(l.stats_at(later).rate_limited, 3);
    // An instant earlier than the last one (clock skew) is harmless.
    assert_eq!(l.admit_at(a, t0), Admission::RateLimited);
}

#[test]
fn new_limits_keep_bans_counts_and_tokens() {
    let t0 = Instant::now();
    let l = FailureLimiter::new_at(&limits(3, 10, 5), t0);
    let a = ip("10.0.0.1");
    let b = ip("10.0.0.2");
    l.record_failure_for_at(a, Some("u"), t0);
    l.record_failure_for_at(a, Some("u"), t0);
    l.record_failure_at(b, t0);
    l.record_failure_at(b, t0);
    assert!(l.record_failure_at(b, t0));
    for _ in 0..5 {
        l.admit_at(a, t0);
    }
    l.set_limits(&limits(3, 10, 5));
    assert!(l.is_banned_at(b, t0), "ban kept");
    assert!(l.record_failure_for_at(a, Some("u"), t0), "count kept");
    assert_eq!(l.admit_at(a, t0), Admission::RateLimited, "bucket kept");
    // A smaller burst caps the tokens kept.
    l.set_limits(&limits(3, 10, 1));
    let later = t0 + secs(10);
    assert_eq!(l.admit_at(a, later), Admission::Allowed);
    assert_eq!(l.admit_at(a, later), Admission::RateLimited);
}

#[test]
fn sweep_forgets_quiet_keys_only() {
    let t0 = Instant::now();
    let mut lim = limits(2, 0, 0);
    lim.ban = secs(120);
    let l = FailureLimiter::new_at(&lim, t0);
    l.record_failure_at(ip("10.0.0.1"), t0);
    l.record_failure_at(ip("10.0.0.2"), t0);
    assert!(l.record_failure_at(ip("10.0.0.2"), t0));
    l.sweep_at(t0 + secs(30));
    assert_eq!(l.tracked(), 2);
    // The failure's window is over; the ban is not.
    l.sweep_at(t0 + secs(61));
    assert_eq!(l.tracked(), 1);
    assert!(l.is_banned_at(ip("10.0.0.2"), t0 + secs(61)));
    // A window after the ban ended.
    l.sweep_at(t0 + secs(179));
    assert_eq!(l.tracked(), 1);
    l.sweep_at(t0 + secs(180));
    assert_eq!(l.tracked(), 0);
}

#[test]
fn full_table_evicts_oldest_clean_entries_instead_of_failing_open() {
    let t0 = Instant::now();
    let cap = 64;
    let l = FailureLimiter::with_capacity_at(&limits(2, 0, 0), cap, t0);
    // One banned source, then a flood of distinct sources (spoofed or a
    // botnet), each failing once, filling the table.
    let attacker = ip("203.0.113.9");
    l.record_failure_at(attacker, t0);
    assert!(l.record_failure_at(attacker, t0));
    for n in 1..cap as u32 {
        l.record_failure_at(IpAddr::V4(n.into()), t0 + Duration::from_millis(n.into()));
    }
    assert_eq!(l.tracked(), cap);
    let now = t0 + secs(1);
    // A new source is still tracked: two failures ban it.
    let newcomer = ip("198.51.100.1");
    assert!(!l.record_failure_at(newcomer, now));
    assert!(l.record_failure_at(newcomer, now));
    assert!(l.is_banned_at(newcomer, now));
    // The ban survived; the oldest clean entries made room.
    assert!(l.is_banned_at(attacker, now));
    assert!(l.tracked() <= cap);
    let s = l.stats_at(now);
    assert!(s.evicted >= 1, "{s:?}");
    let oldest = IpAddr::V4(1u32.into());
    assert!(
        !l.entries.lock().contains_key(&key(oldest, None)),
        "the oldest clean entry goes first"
    );
    assert!(
        l.entries
            .lock()
            .contains_key(&key(IpAddr::V4((cap as u32 - 1).into()), None)),
        "the newest clean entry stays"
    );
}

#[test]
fn full_table_of_bans_evicts_the_ban_ending_soonest() {
    let t0 = Instant::now();
    let cap = 16;
    let l = FailureLimiter::with_capacity_at(&limits(1, 0, 0), cap, t0);
    for n in 0..cap as u32 {
        assert!(l.record_failure_at(IpAddr::V4(n.into()), t0 + secs(n.into())));
    }
    let now = t0 + secs(20);
    assert!(l.record_failure_at(ip("198.51.100.1"), now));
    assert!(!l.is_banned_at(IpAddr::V4(0u32.into()), now));
    assert!(l.is_banned_at(IpAddr::V4(15u32.into()), now));
    assert!(l.is_banned_at(ip("198.51.100.1"), now));
}

#[test]
fn table_at_full_size_stays_bounded() {
    let t0 = Instant::now();
    let l = FailureLimiter::new_at(&limits(5, 0, 0), t0);
    for n in 0..(MAX_TRACKED_KEYS as u32 + 10) {
        l.record_failure_at(IpAddr::V4(n.into()), t0);
    }
    assert!(l.tracked() <= MAX_TRACKED_KEYS);
    assert!(l.stats_at(t0).evicted >= 10);
}
