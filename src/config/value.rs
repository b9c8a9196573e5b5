//! The one reader for configuration values: every block (top level,
//! `authorization`, `tls`, `auth_limits`, `monitor_auth`, ...) turns parsed
//! [`Spanned`] values into Rust values through these functions, so a value
//! means the same thing, and is refused with the same kind of
//! `FILE:LINE:COL` message, wherever it appears.
//!
//! Rules (nats-server's, made strict where it would panic, wrap around or
//! accept nonsense):
//!
//! * Durations: a Go duration string (`"2s"`, `"1m30s"`, `"500ms"`,
//!   `"1.5h"`; units ns, us/µs, ms, s, m, h; `"0"` needs no unit), or a
//!   number of seconds (integer or float). Negative values, NaN/inf, and
//!   anything longer than [`MAX_DURATION`] are errors: a timer that long is
//!   a typo, and sums such as `now + d` must not overflow.
//! * Sizes: a non-negative integer (the parser already multiplied `1MB`
//!   out) or a size string (`"64KB"`); overflowing `usize` is an error.
//! * Integers: no floats, no wrap-around; callers give the range.
//! * Booleans: `true/false/yes/no/on/off` unquoted (the parser decides).
//! * Strings: strings, and integers written without quotes (`token: 1234`),
//!   which nats-server also accepts where it expects a string.
//! * String lists: a string or an array of strings.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use super::parser::{ConfigError, Map, Pos, Spanned, Value};

/// Longest duration any option accepts (100 years of 365.25 days). Go's
/// own limit is about 292 years (i64 nanoseconds); this is lower so that
/// deadlines computed as `Instant::now() + d`, or a few multiples of `d`,
/// can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

/// Where each option was set, keyed by its dotted lower-case path
/// (`"ping_interval"`, `"tls.ca_file"`), so that checks made after the
/// whole file is read ([`super::Options::validate`]) can still point at
/// the line responsible.
#[derive(Clone, Debug, Default)]
pub struct Positions(HashMap<String, Pos>);

impl Positions {
    pub fn get(&self, key: &str) -> Option<&Pos> {
        self.0.get(key)
    }

    pub fn insert(&mut self, key: impl Into<String>, pos: &Pos) {
        self.0.insert(key.into(), pos.clone());
    }

    /// The value no longer comes from the file (a command-line flag
    /// replaced it), so errors about it must not point into the file.
    pub fn forget(&mut self, key: &str) {
        self.0.remove(key);
    }

    /// [`forget`](Self::forget) `key` and every key below it (`key.*`).
    pub fn forget_under(&mut self, key: &str) {
        self.0
            .retain(|k, _| k != key && !k.strip_prefix(key).is_some_and(|r| r.starts_with('.')));
    }
}

/// State carried through the parsing of one file: warnings, positions of
/// the keys seen, and which keys were only variable definitions.
#[derive(Debug, Default)]
pub struct Context {
    pub warnings: Vec<String>,
    pub positions: Positions,
    /// Value positions of keys that some `$NAME` reference used. Such keys
    /// are variable definitions, not options, and nats-server does not call
    /// them unknown.
    used_vars: HashSet<Pos>,
}

impl Context {
    pub fn new(used_vars: HashSet<Pos>) -> Context {
        Context {
            used_vars,
            ..Context::default()
        }
    }

    /// A warning located at `v`.
    pub fn warn(&mut self, v: &Spanned, msg: impl std::fmt::Display) {
        self.warnings.push(format!("{}: {msg}", v.pos));
    }

    /// Remember where `key` (a dotted path) was set.
    pub fn record(&mut self, key: impl Into<String>, v: &Spanned) {
        self.positions.insert(key, &v.pos);
    }

    /// A key nobody knows: an error worded like nats-server's (`unknown
    /// field "x"`), unless the key is a variable some `$x` used.
    /// Is `v` a top-level entry that only served as a `$variable`?
    pub fn is_variable(&self, v: &Spanned) -> bool {
        self.used_vars.contains(&v.pos)
    }

    pub fn unknown(&self, block: Option<&str>, key: &str, v: &Spanned) -> Result<(), ConfigError> {
        if self.used_vars.contains(&v.pos) {
            return Ok(());
        }
        Err(match block {
            Some(b) => err(v, format!("unknown field \"{key}\" in {b}")),
            None => err(v, format!("unknown field \"{key}\"")),
        })
    }
}

pub fn err(v: &Spanned, msg: impl Into<String>) -> ConfigError {
    v.error(msg)
}

fn type_name(v: &Spanned) -> &'static str {
    v.value.type_name()
}

/// A block (`key { ... }`).
pub fn map<'a>(v: &'a Spanned, what: &str) -> Result<&'a Map, ConfigError> {
    v.as_map()
        .ok_or_else(|| err(v, format!("{what} must be a block, got {}", type_name(v))))
}

/// A string; integers written without quotes are taken as their digits.
pub fn string(v: &Spanned, key: &str) -> Result<String, ConfigError> {
    match &v.value {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        _ => Err(err(
            v,
            format!("\"{key}\" expects a string, got {}", type_name(v)),
        )),
    }
}

/// A non-empty file path.
pub fn path(v: &Spanned, key: &str) -> Result<PathBuf, ConfigError> {
    let s = string(v, key)?;
    if s.is_empty() {
        return Err(err(v, format!("\"{key}\" must not be empty")));
    }
    Ok(PathBuf::from(s))
}

pub fn boolean(v: &Spanned, key: &str) -> Result<bool, ConfigError> {
    v.as_bool().ok_or_else(|| {
        err(
            v,
            format!("\"{key}\" expects true or false, got {}", type_name(v)),
        )
    })
}

/// An integer in `min..=max`.
pub fn int_in(v: &Spanned, key: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
    let Some(i) = v.as_i64() else {
        return Err(err(
            v,
            format!("\"{key}\" expects an integer, got {}", type_name(v)),
        ));
    };
    if i < min {
        return Err(err(
            v,
            if min == 0 {
                format!("\"{key}\" must not be negative (got {i})")
            } else {
                format!("\"{key}\" must be at least {min} (got {i})")
            },
        ));
    }
    if i > max {
        return Err(err(
            v,
            format!("\"{key}\" value is too big (got {i}, at most {max})"),
        ));
    }
    Ok(i)
}

/// A non-negative integer.
pub fn uint(v: &Spanned, key: &str) -> Result<u64, ConfigError> {
    Ok(int_in(v, key, 0, i64::MAX)?.unsigned_abs())
}

/// A non-negative integer that fits in a `u32`.
pub fn uint32(v: &Spanned, key: &str) -> Result<u32, ConfigError> {
    let i = int_in(v, key, 0, i64::from(u32::MAX))?;
    u32::try_from(i).map_err(|_| err(v, format!("\"{key}\" value is too big")))
}

/// A non-negative integer used as a count (`usize`).
pub fn count(v: &Spanned, key: &str) -> Result<usize, ConfigError> {
    usize::try_from(uint(v, key)?).map_err(|_| err(v, format!("\"{key}\" value is too big")))
}

/// A TCP port: 0 (off, or the default), -1 (pick a free port) or 1..65535.
pub fn port(v: &Spanned, key: &str) -> Result<i32, ConfigError> {
    let p = int_in(v, key, -1, 65535)?;
    i32::try_from(p).map_err(|_| err(v, format!("\"{key}\" is not a port")))
}

/// A size in bytes: an integer (`1MB` was already multiplied out by the
/// parser) or a size string (`"64KB"`).
pub fn size(v: &Spanned, key: &str) -> Result<usize, ConfigError> {
    match &v.value {
        Value::Int(_) => count(v, key),
        Value::Str(s) => parse_size(s).ok_or_else(|| {
            err(
                v,
                format!("\"{key}\": invalid size \"{s}\" (use e.g. 1024, 64KB, 1MB)"),
            )
        }),
        _ => Err(err(
            v,
            format!("\"{key}\" expects a size, got {}", type_name(v)),
        )),
    }
}

/// A duration (see the module docs).
pub fn duration(v: &Spanned, key: &str) -> Result<Duration, ConfigError> {
    let d = match &v.value {
        Value::Int(i) => seconds(*i as f64).map_err(|m| err(v, format!("\"{key}\": {m}")))?,
        Value::Float(f) => seconds(*f).map_err(|m| err(v, format!("\"{key}\": {m}")))?,
        Value::Str(s) => parse_go_duration(s).map_err(|m| err(v, format!("\"{key}\": {m}")))?,
        _ => {
            return Err(err(
                v,
                format!(
                    "\"{key}\" expects a duration such as \"2s\", \"500ms\" or a number of \
                     seconds, got {}",
                    type_name(v)
                ),
            ));
        }
    };
    if d > MAX_DURATION {
        return Err(err(
            v,
            format!("\"{key}\": duration is too long (at most 100 years)"),
        ));
    }
    Ok(d)
}

/// A number of seconds, as the older nats-server keys take them.
fn seconds(f: f64) -> Result<Duration, String> {
    if f.is_nan() {
        return Err("duration is not a number".into());
    }
    if f < 0.0 {
        return Err(format!("duration must not be negative (got {f})"));
    }
    if f > MAX_DURATION.as_secs_f64() {
        return Err("duration is too long (at most 100 years)".into());
    }
    Duration::try_from_secs_f64(f).map_err(|e| e.to_string())
}

/// A string or an array of strings.
pub fn string_list(v: &Spanned, key: &str) -> Result<Vec<String>, ConfigError> {
    match &v.value {
        Value::Array(items) => items.iter().map(|i| string(i, key)).collect(),
        _ => Ok(vec![string(v, key)?]),
    }
}

/// `port` or `"host:port"` (IPv6 hosts in brackets). The port must be a
/// valid [`port`].
pub fn host_port(v: &Spanned, key: &str) -> Result<(Option<String>, i32), ConfigError> {
    match &v.value {
        Value::Int(_) => Ok((None, port(v, key)?)),
        Value::Str(s) => {
            let (h, p) = s
                .rsplit_once(':')
                .ok_or_else(|| err(v, format!("\"{key}\" expects host:port, got \"{s}\"")))?;
            let port = p
                .parse::<i32>()
                .ok()
                .filter(|p| (-1..=65535).contains(p))
                .ok_or_else(|| err(v, format!("\"{key}\": invalid port in \"{s}\"")))?;
            let host = h.trim_start_matches('[').trim_end_matches(']');
            Ok(((!host.is_empty()).then(|| host.to_string()), port))
        }
        _ => Err(err(
            v,
            format!("\"{key}\" expects host:port, got {}", type_name(v)),
        )),
    }
}

/// Go's `time.ParseDuration`, with Go's error messages, refusing negative
/// values (which no rnats option can use). Never panics: digits that would
/// overflow give Go's "invalid duration".
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    const MAX_NANOS: u128 = i64::MAX as u128;
    let invalid = || format!("time: invalid duration \"{text}\"");
    let (neg, mut s) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let digits_end = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut total: u128 = 0;
    while !s.is_empty() {
        let (int_part, rest) = s.split_at(digits_end(s));
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(r) => r.split_at(digits_end(r)),
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        let per: u128 = match unit {
            "" => return Err(format!("time: missing unit in duration \"{text}\"")),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit \"{unit}\" in duration \"{text}\""
                ));
            }
        };
        let mut whole: u128 = 0;
        for d in int_part.bytes() {
            whole = whole
                .checked_mul(10)
                .and_then(|w| w.checked_add(u128::from(d - b'0')))
                .filter(|w| *w <= MAX_NANOS)
                .ok_or_else(invalid)?;
        }
        // Fractions beyond nanosecond precision cannot change the result
        // by more than a nanosecond; stop early so the scale cannot overflow.
        let (mut frac, mut scale) = (0u128, 1u128);
        for d in frac_part.bytes().take(24) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        let nanos = whole
            .checked_mul(per)
            .and_then(|n| n.checked_add(frac * per / scale))
            .ok_or_else(invalid)?;
        total = total
            .checked_add(nanos)
            .filter(|t| *t <= MAX_NANOS)
            .ok_or_else(invalid)?;
        s = rest;
    }
    if neg && total > 0 {
        return Err(format!("negative duration \"{text}\" is not allowed"));
    }
    // MAX_NANOS fits in u64, so this conversion cannot fail.
    Ok(Duration::from_nanos(
        u64::try_from(total).unwrap_or(u64::MAX),
    ))
}

/// Lenient duration parsing for command-line tools: a Go duration, or a
/// bare number of seconds (`"3"`, `"0.5"`). `None` for anything invalid,
/// negative or longer than [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) => seconds(secs).ok()?,
        Err(_) => parse_go_duration(s).ok()?,
    };
    (d <= MAX_DURATION).then_some(d)
}

/// Sizes like "1MB", "64KB", "1024", as accepted on the command line and
/// in quoted config values. `None` when invalid or when it overflows.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: usize = s[..split].parse().ok()?;
    let mult = match s[split..].to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" | "ki" | "kib" => 1024,
        "m" => 1000 * 1000,
        "mb" | "mi" | "mib" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" | "gi" | "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Hand-built values, so unit tests do not depend on the text parser.
    use std::sync::Arc;

    use super::super::parser::{Map, Pos, Spanned, Value};

    pub fn at(value: Value) -> Spanned {
        Spanned {
            value,
            pos: Pos {
                file: Arc::from("test.conf"),
                line: 1,
                col: 1,
            },
        }
    }

    pub fn s(v: &str) -> Spanned {
        at(Value::Str(v.to_string()))
    }

    pub fn i(v: i64) -> Spanned {
        at(Value::Int(v))
    }

    pub fn f(v: f64) -> Spanned {
        at(Value::Float(v))
    }

    pub fn b(v: bool) -> Spanned {
        at(Value::Bool(v))
    }

    pub fn arr(items: Vec<Spanned>) -> Spanned {
        at(Value::Array(items))
    }

    pub fn strs(items: &[&str]) -> Spanned {
        arr(items.iter().map(|x| s(x)).collect())
    }

    pub fn map(entries: Vec<(&str, Spanned)>) -> Spanned {
        let m: Map = entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        at(Value::Map(m))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn go_durations() {
        let ok = |s: &str| parse_go_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("2s"), Duration::from_secs(2));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1µs"), Duration::from_micros(1));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0s"), Duration::ZERO);
        assert_eq!(ok("2562047h"), Duration::from_secs(2562047 * 3600));
        // Go's messages, word for word.
        let bad = |s: &str| parse_go_duration(s).unwrap_err();
        assert_eq!(bad("inf"), "time: invalid duration \"inf\"");
        assert_eq!(bad("1e30"), "time: unknown unit \"e\" in duration \"1e30\"");
        assert_eq!(bad("3"), "time: missing unit in duration \"3\"");
        assert_eq!(bad(""), "time: invalid duration \"\"");
        assert_eq!(bad("3000000h"), "time: invalid duration \"3000000h\"");
        assert_eq!(
            bad("99999999999999999999999999999999999999999s"),
            "time: invalid duration \"99999999999999999999999999999999999999999s\""
        );
        assert!(bad("-1s").contains("negative"));
        assert!(bad("NaN").contains("invalid"));
        assert!(bad("1.5.5s").contains("invalid") || bad("1.5.5s").contains("unit"));
    }

    #[test]
    fn lenient_durations() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("0.5"), Some(Duration::from_millis(500)));
        for bad in ["2x", "", "1e30", "inf", "-1", "NaN", "-inf", "1e300"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MB"), Some(1 << 20));
        assert_eq!(parse_size("64KB"), Some(64 << 10));
        assert_eq!(parse_size("1k"), Some(1000));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1XB"), None);
        assert_eq!(parse_size("99999999999999999999GB"), None);
        assert_eq!(parse_size("18446744073709551615GB"), None);
    }

    #[test]
    fn duration_values() {
        let d = |v| duration(&v, "k");
        assert_eq!(d(i(3)).unwrap(), Duration::from_secs(3));
        assert_eq!(d(f(1.5)).unwrap(), Duration::from_millis(1500));
        assert_eq!(d(s("2m")).unwrap(), Duration::from_secs(120));
        for bad in [
            f(1e300),
            f(-0.5),
            f(f64::NAN),
            f(f64::INFINITY),
            i(-1),
            i(i64::MAX),
            s("inf"),
            s("1e30"),
            s("-5s"),
            s("2000000h"),
            b(true),
            strs(&["1s"]),
        ] {
            let e = d(bad.clone()).unwrap_err();
            assert!(
                e.to_string().starts_with("test.conf:1:1: \"k\""),
                "{bad:?}: {e}"
            );
        }
        // Just below the cap is fine; `now + d` must not overflow either.
        let max = d(s("876000h")).unwrap();
        assert!(max <= MAX_DURATION);
        let _ = std::time::Instant::now() + max;
    }

    #[test]
    fn integers_and_ports() {
        assert_eq!(port(&i(-1), "port").unwrap(), -1);
        assert_eq!(port(&i(4222), "port").unwrap(), 4222);
        assert!(port(&i(65536), "port").is_err());
        assert!(port(&i(-2), "port").is_err());
        assert!(port(&i(4_294_971_518), "port").is_err());
        assert!(uint(&i(-1), "n").unwrap_err().msg.contains("negative"));
        assert!(uint(&f(1.0), "n").is_err());
        assert!(
            uint32(&i(1 << 40), "n")
                .unwrap_err()
                .msg
                .contains("too big")
        );
        assert!(size(&i(-5), "max_pending").is_err());
        assert_eq!(size(&s("2KB"), "x").unwrap(), 2048);
        assert!(size(&s("lots"), "x").is_err());
        assert_eq!(host_port(&s("[::1]:4222"), "listen").unwrap().1, 4222);
        assert!(host_port(&s("h:99999"), "listen").is_err());
        assert!(host_port(&s("h:-1"), "listen").is_ok());
    }

    #[test]
    fn unknown_keys_and_used_variables() {
        let v = i(1);
        let cx = Context::default();
        let e = cx.unknown(None, "foo_bar", &v).unwrap_err();
        assert_eq!(e.to_string(), "test.conf:1:1: unknown field \"foo_bar\"");
        let cx = Context::new([v.pos.clone()].into_iter().collect());
        assert!(cx.unknown(None, "foo_bar", &v).is_ok());
    }
}
