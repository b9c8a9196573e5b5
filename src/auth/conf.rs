//! Small readers for configuration values, shared by the `authorization`,
//! `auth_limits` and `tls` blocks. They only use the parser's public value
//! API so they keep working whichever parser implementation is behind it.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::parser::{ConfigError, Map, Spanned, Value};

pub(crate) fn err(v: &Spanned, msg: impl Into<String>) -> ConfigError {
    v.error(msg)
}

fn type_name(v: &Spanned) -> &'static str {
    v.value.type_name()
}

pub(crate) fn map<'a>(v: &'a Spanned, what: &str) -> Result<&'a Map, ConfigError> {
    v.as_map()
        .ok_or_else(|| err(v, format!("{what} must be a block, got {}", type_name(v))))
}

/// Strings, and integers written without quotes (`token: 12345`), which
/// nats-server also accepts where it expects a string.
pub(crate) fn string(v: &Spanned, key: &str) -> Result<String, ConfigError> {
    match &v.value {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        _ => Err(err(
            v,
            format!("\"{key}\" expects a string, got {}", type_name(v)),
        )),
    }
}

pub(crate) fn path(v: &Spanned, key: &str) -> Result<PathBuf, ConfigError> {
    let s = string(v, key)?;
    if s.is_empty() {
        return Err(err(v, format!("\"{key}\" must not be empty")));
    }
    Ok(PathBuf::from(s))
}

pub(crate) fn boolean(v: &Spanned, key: &str) -> Result<bool, ConfigError> {
    v.as_bool().ok_or_else(|| {
        err(
            v,
            format!("\"{key}\" expects true or false, got {}", type_name(v)),
        )
    })
}

pub(crate) fn uint(v: &Spanned, key: &str) -> Result<u64, ConfigError> {
    match v.as_i64() {
        Some(i) if i >= 0 => Ok(i as u64),
        _ => Err(err(v, format!("\"{key}\" expects a non-negative integer"))),
    }
}

/// A number of seconds (fractions allowed, as nats-server's `timeout`
/// keys take them) or a Go-style duration string such as "500ms".
pub(crate) fn duration(v: &Spanned, key: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        err(
            v,
            format!("\"{key}\" expects a duration such as 2, 0.5 or \"1m\""),
        )
    };
    match &v.value {
        Value::Int(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
        Value::Float(f) if f.is_finite() && *f >= 0.0 && *f < 1e12 => {
            Ok(Duration::from_secs_f64(*f))
        }
        Value::Str(s) => crate::config::parse_duration(s).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A single string or an array of strings (nats-server allows both for
/// subject lists and cipher lists).
pub(crate) fn string_list(v: &Spanned, key: &str) -> Result<Vec<String>, ConfigError> {
    match &v.value {
        Value::Array(items) => items.iter().map(|i| string(i, key)).collect(),
        _ => Ok(vec![string(v, key)?]),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Hand-built values, so unit tests do not depend on the text parser.
    use std::sync::Arc;

    use crate::config::parser::{Map, Pos, Spanned, Value};

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
