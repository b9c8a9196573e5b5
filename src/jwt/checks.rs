//! What a server checks with decoded claims: account signing keys,
//! revocations, a user's source addresses, connect times and connection
//! types. Semantics follow nats-server (auth.go) and nats-io/jwt.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{NaiveDateTime, NaiveTime};

use super::{AccountClaims, Claims, JwtError, REVOKE_ALL, SigningKey, UserClaims};

/// The connection types a user JWT may allow (`allowed_connection_types`).
pub mod conn_type {
    pub const STANDARD: &str = "STANDARD";
    pub const WEBSOCKET: &str = "WEBSOCKET";
    pub const LEAFNODE: &str = "LEAFNODE";
    pub const LEAFNODE_WS: &str = "LEAFNODE_WS";
    pub const MQTT: &str = "MQTT";
    pub const MQTT_WS: &str = "MQTT_WS";
    pub const IN_PROCESS: &str = "IN_PROCESS";
    /// Every type nats-io/jwt knows.
    pub const ALL: [&str; 7] = [
        STANDARD,
        WEBSOCKET,
        LEAFNODE,
        LEAFNODE_WS,
        MQTT,
        MQTT_WS,
        IN_PROCESS,
    ];

    /// Whether `t` is one of [`ALL`].
    pub fn is_known(t: &str) -> bool {
        ALL.contains(&t)
    }
}

/// The account's signing key `key`, if it is one (plain or scoped). The
/// account's own key is not a signing key.
pub fn is_signing_key<'a>(account: &'a AccountClaims, key: &str) -> Option<&'a SigningKey> {
    account.signing_keys.iter().find(|k| k.key() == key)
}

/// Whether a JWT about `subject` issued at `iat` is revoked by the
/// account: revoked when its `iat` is at or before the time recorded for
/// `subject` or for "*" (nats-io/jwt's IsClaimRevoked; a JWT without `iat`
/// or subject counts as revoked).
pub fn is_revoked(account: &AccountClaims, subject: &str, iat: i64) -> bool {
    if iat == 0 || subject.is_empty() {
        return true;
    }
    let at = |k: &str| account.revocations.get(k).is_some_and(|&t| t >= iat);
    at(REVOKE_ALL) || at(subject)
}

/// Revoke `subject` (or [`REVOKE_ALL`]) as of `at` unix seconds; an
/// existing later revocation is kept (nats-io/jwt's Revoke).
pub fn revoke(account: &mut AccountClaims, subject: &str, at: i64) {
    let e = account.revocations.entry(subject.to_string()).or_insert(at);
    if *e < at {
        *e = at;
    }
}

/// Whether `ip` is inside one of `cidrs` (`a.b.c.d/n` or IPv6 `x::/n`).
/// An empty list allows everyone; an entry that is not a CIDR allows
/// no one, as nats-server's validateSrc.
pub fn cidr_allows(cidrs: &[String], ip: IpAddr) -> bool {
    if cidrs.is_empty() {
        return true;
    }
    // A v4-mapped v6 address is its v4 address (as Go compares them).
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    for c in cidrs {
        let Some((addr, bits)) = c.trim().split_once('/') else {
            return false;
        };
        let (Ok(net), Ok(bits)) = (addr.parse::<IpAddr>(), bits.parse::<u32>()) else {
            return false;
        };
        let inside = match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(n) & mask == u128::from(i) & mask
            }
            (IpAddr::V4(_), _) if bits > 32 => return false,
            (IpAddr::V6(_), _) if bits > 128 => return false,
            _ => false,
        };
        if inside {
            return true;
        }
    }
    false
}

/// [`cidr_allows`] with a user's `src`.
pub fn user_src_allows(user: &Claims<UserClaims>, ip: IpAddr) -> bool {
    cidr_allows(&user.nats.limits.src, ip)
}

/// Result of checking a user's connect `times`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeCheck {
    /// No time restriction.
    Unrestricted,
    /// Inside a window that ends after `remaining` (nats-server closes the
    /// connection then).
    Allowed { remaining: Duration },
    /// Outside every window.
    Denied,
}

/// A user's `times` at `now` (unix seconds), as nats-server's
/// validateTimes: each window is taken on the current day (a window whose
/// end is before its start ends on the next day), and the user may connect
/// when now is strictly between start and end. `times_location` may be
/// empty (the local zone, like nats-server), UTC or any IANA zone (the tz
/// database is compiled in); an unknown zone is
/// [`JwtError::UnsupportedTimeZone`], and a window that is not `HH:MM:SS`
/// is [`JwtError::Invalid`].
pub fn user_times_allow(user: &Claims<UserClaims>, now: i64) -> Result<TimeCheck, JwtError> {
    let l = &user.nats.limits;
    if l.times.is_empty() {
        return Ok(TimeCheck::Unrestricted);
    }
    let utc = chrono::DateTime::from_timestamp(now, 0)
        .ok_or_else(|| JwtError::Invalid(format!("time {now} out of range")))?;
    let local: NaiveDateTime = match l.times_location.as_str() {
        "" | "Local" => utc.with_timezone(&chrono::Local).naive_local(),
        "UTC" | "Etc/UTC" | "Etc/UCT" | "UCT" | "Zulu" | "Etc/Zulu" | "Etc/GMT" | "GMT" => {
            utc.naive_utc()
        }
        z => match z.parse::<chrono_tz::Tz>() {
            Ok(tz) => utc.with_timezone(&tz).naive_local(),
            Err(_) => return Err(JwtError::UnsupportedTimeZone(z.to_string())),
        },
    };
    let parse = |s: &str| {
        NaiveTime::parse_from_str(s, "%H:%M:%S")
            .map_err(|_| JwtError::Invalid(format!("time {s:?} is not HH:MM:SS")))
    };
    for r in &l.times {
        let (start, end) = (parse(&r.start)?, parse(&r.end)?);
        let day = local.date();
        let start_at = day.and_time(start);
        let end_at = if start > end {
            day.succ_opt().unwrap_or(day).and_time(end)
        } else {
            day.and_time(end)
        };
        if start_at < local && end_at > local {
            let remaining = (end_at - local).to_std().unwrap_or(Duration::ZERO);
            return Ok(TimeCheck::Allowed { remaining });
        }
    }
    Ok(TimeCheck::Denied)
}
