//! Operator (JWT) mode keys, as nats-server reads them: `operator` (a JWT
//! or a file holding one, or a list), `trusted_keys`, `resolver`
//! (`MEMORY`, or `{type: full, dir, allow_delete, interval}`) and
//! `resolver_preload` (account public key → account JWT).
//!
//! Operator JWTs are decoded and verified here, so a bad one is a startup
//! error at its place in the file.

use std::path::PathBuf;
use std::time::Duration;

use super::parser::{ConfigError, Spanned, Value};
use super::value::{self as conf, Context};
use crate::jwt::{self, Claims, KeyKind, OperatorClaims};

/// Where account JWTs come from.
#[derive(Clone, Debug, PartialEq)]
pub enum ResolverConfig {
    /// `resolver: MEMORY`: only `resolver_preload` (and pushes over the
    /// system account, kept in memory).
    Memory,
    /// `resolver: {type: full, dir: ...}`: JWTs stored as files in `dir`,
    /// updated by pushes over the system account and by files dropped in.
    Full {
        dir: PathBuf,
        allow_delete: bool,
        /// How often `dir` is scanned for new or changed files.
        interval: Duration,
    },
}

/// A trusted operator: its JWT and decoded claims.
#[derive(Clone, Debug)]
pub struct TrustedOperator {
    pub jwt: String,
    pub claims: Claims<OperatorClaims>,
}

/// One `operator` entry: an inline JWT or a file with one (nsc writes
/// `.jwt` files that may carry a `-----BEGIN ...` armour).
fn read_operator(v: &Spanned, text: &str) -> Result<TrustedOperator, ConfigError> {
    let token = if text.starts_with("eyJ") {
        text.to_string()
    } else {
        let content = std::fs::read_to_string(text).map_err(|e| {
            conf::err(
                v,
                format!("error parsing operator JWT: cannot read \"{text}\": {e}"),
            )
        })?;
        extract_jwt(&content).ok_or_else(|| {
            conf::err(
                v,
                format!("error parsing operator JWT: no JWT in \"{text}\""),
            )
        })?
    };
    let claims = jwt::decode::<OperatorClaims>(&token)
        .map_err(|e| conf::err(v, format!("error parsing operator JWT: {e}")))?;
    Ok(TrustedOperator { jwt: token, claims })
}

/// The first line of `text` that looks like a JWT (files may wrap it in
/// `-----BEGIN ...-----` lines).
pub fn extract_jwt(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("eyJ") && l.matches('.').count() == 2)
        .map(str::to_string)
}

pub fn parse_operators(v: &Spanned) -> Result<Vec<TrustedOperator>, ConfigError> {
    let mut out = Vec::new();
    match &v.value {
        Value::Str(s) => out.push(read_operator(v, s)?),
        Value::Array(items) => {
            for item in items {
                let s = item.as_str().ok_or_else(|| {
                    conf::err(
                        item,
                        "error parsing operators: unsupported type where string is expected",
                    )
                })?;
                out.push(read_operator(item, s)?);
            }
        }
        _ => return Err(conf::err(v, "error parsing operators: unsupported type")),
    }
    Ok(out)
}

pub fn parse_trusted_keys(v: &Spanned) -> Result<Vec<String>, ConfigError> {
    let keys = match &v.value {
        Value::Str(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => conf::string_list(v, "trusted_keys")?,
    };
    for k in &keys {
        if KeyKind::of_public(k) != Some(KeyKind::Operator) {
            return Err(conf::err(
                v,
                format!("trust key {k:?} required to be a valid public operator nkey"),
            ));
        }
    }
    Ok(keys)
}

pub fn parse_resolver(v: &Spanned, cx: &mut Context) -> Result<ResolverConfig, ConfigError> {
    if let Some(s) = v.as_str() {
        let u = s.trim().to_ascii_uppercase();
        if u == "MEM" || u == "MEMORY" {
            return Ok(ResolverConfig::Memory);
        }
        return Err(conf::err(
            v,
            format!(
                "resolver {s:?} is not supported by rnats yet (use MEMORY or a full dir resolver)"
            ),
        ));
    }
    let map = conf::map(v, "resolver")?;
    let mut dir = None;
    let mut kind = None;
    let mut allow_delete = false;
    let mut interval = Duration::from_secs(120);
    for (k, val) in map {
        let lk = k.to_ascii_lowercase();
        match lk.as_str() {
            "dir" => dir = Some(conf::path(val, &lk)?),
            "type" => kind = Some(conf::string(val, &lk)?.to_ascii_uppercase()),
            "allow_delete" => allow_delete = conf::boolean(val, &lk)?,
            "interval" => {
                interval = conf::duration(val, &lk)?;
                if interval.is_zero() {
                    return Err(conf::err(val, "resolver interval must be positive"));
                }
            }
            "limit" | "timeout" => {
                // Bounds nats-server uses for its own store and fetches;
                // rnats keeps every account and fetches nothing remotely.
                cx.warn(val, format!("resolver \"{k}\" ignored by rnats"));
            }
            "ttl" | "hard_delete" => {
                return Err(conf::err(
                    val,
                    format!("resolver \"{k}\" is not supported by rnats yet"),
                ));
            }
            _ => cx.unknown(Some("resolver"), k, val)?,
        }
    }
    match kind.as_deref() {
        Some("FULL") => {}
        Some("MEM") | Some("MEMORY") => return Ok(ResolverConfig::Memory),
        Some("CACHE") => {
            return Err(conf::err(
                v,
                "resolver type CACHE is not supported by rnats yet (use full)",
            ));
        }
        _ => {
            return Err(conf::err(
                v,
                "error parsing account resolver, should be MEM or a map containing dir and type state=[FULL|CACHE])",
            ));
        }
    }
    let dir =
        dir.ok_or_else(|| conf::err(v, "dir has no value and needs to point to a directory"))?;
    if let Ok(md) = std::fs::metadata(&dir)
        && !md.is_dir()
    {
        return Err(conf::err(
            v,
            "dir needs to point to an accessible directory",
        ));
    }
    Ok(ResolverConfig::Full {
        dir,
        allow_delete,
        interval,
    })
}

/// `resolver_preload`: account public key → account JWT, each verified as
/// an account JWT about that key (whether its issuer is trusted is checked
/// against the operators by `Options::validate`).
pub fn parse_preload(v: &Spanned) -> Result<Vec<(String, String)>, ConfigError> {
    let map = v.as_map().ok_or_else(|| {
        conf::err(
            v,
            "preload should be a map of account_public_key:account_jwt",
        )
    })?;
    let mut out = Vec::new();
    for (key, val) in map {
        let token = conf::string(val, key)?;
        let claims = jwt::decode::<jwt::AccountClaims>(&token)
            .map_err(|e| conf::err(val, format!("invalid account JWT for {key}: {e}")))?;
        if claims.sub != *key {
            return Err(conf::err(
                val,
                format!(
                    "preload key {key} does not match the account JWT's subject {}",
                    claims.sub
                ),
            ));
        }
        out.push((key.clone(), token));
    }
    Ok(out)
}
