//! The `authorization { ... }` block (nats-server's keys), the equivalent
//! command-line flags, and rnats's own `auth_limits { ... }` block: the
//! option data and their parsers. Checking logins against them is
//! `crate::auth`'s job.

use std::time::Duration;

use serde::Serialize;

use super::parser::{ConfigError, Spanned};
use super::secret::Secret;
use super::value::{self as conf, Context};
use crate::protocol::subject;

/// Allow and deny lists for one direction. `allow: None` means "everything
/// not denied"; `Some(vec![])` means "nothing" (nats-server's meaning of an
/// empty allow list).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SubjectPermission {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// `allow_responses`: may publish to reply subjects of requests received.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResponsePermission {
    /// Responses allowed per request (0: no limit; a negative `max` in the
    /// file means that, as in nats-server).
    pub max: u64,
    /// How long a reply subject stays publishable (zero: no limit; a
    /// negative `expires` in the file means that). Nanoseconds in JSON, as
    /// nats-server's monitoring shows durations.
    #[serde(serialize_with = "as_nanos")]
    pub expires: Duration,
}

fn as_nanos<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// nats-server's defaults for `allow_responses: true`.
pub const DEFAULT_RESPONSE_MAX: u64 = 1;
pub const DEFAULT_RESPONSE_EXPIRES: Duration = Duration::from_secs(120);

/// A user's (or the default) subject permissions.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Permissions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<SubjectPermission>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubjectPermission>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_responses: Option<ResponsePermission>,
}

/// One entry of `users: [...]`.
#[derive(Clone, Debug)]
pub struct UserEntry {
    pub user: String,
    /// `None` for users that only log in through `verify_and_map`.
    pub password: Option<Secret>,
    pub permissions: Option<Permissions>,
    /// The account the user belongs to (`None`: the global account).
    pub account: Option<String>,
}

/// One nkey user: `{nkey: U..., permissions: ...}`. The client proves it
/// holds the key by signing the nonce of the server's INFO.
#[derive(Clone, Debug)]
pub struct NkeyEntry {
    /// The user's public key (`U...`).
    pub nkey: String,
    pub permissions: Option<Permissions>,
    pub account: Option<String>,
}

/// A `users` entry: a named user or an nkey user.
pub enum UserOrNkey {
    User(UserEntry),
    Nkey(NkeyEntry),
}

/// Is `key` a valid public user nkey (`U...`, right length and checksum)?
pub fn is_user_nkey(key: &str) -> bool {
    key.starts_with('U') && nkeys::KeyPair::from_public_key(key).is_ok()
}

/// Static authentication settings.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Single user (`user`/`username`), with `password`.
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    /// `timeout` from the block (also applied to `Options::auth_timeout`).
    pub timeout: Option<Duration>,
    pub users: Vec<UserEntry>,
    /// Users that log in with an nkey.
    pub nkeys: Vec<NkeyEntry>,
    /// Permissions for users that have none of their own.
    pub default_permissions: Option<Permissions>,
    /// `no_auth_user` (top level): the user a client that presents no
    /// credentials at all logs in as.
    pub no_auth_user: Option<String>,
}

impl AuthConfig {
    /// Is any authentication configured?
    pub fn is_enabled(&self) -> bool {
        self.user.is_some()
            || self.token.is_some()
            || !self.users.is_empty()
            || !self.nkeys.is_empty()
    }

    /// From `--user`, `--pass` and `--auth` (each may be a bcrypt hash).
    pub fn from_flags(
        user: Option<String>,
        pass: Option<String>,
        token: Option<String>,
    ) -> Result<AuthConfig, String> {
        let cfg = AuthConfig {
            user,
            password: pass.as_deref().map(Secret::parse).transpose()?,
            token: token.as_deref().map(Secret::parse).transpose()?,
            ..AuthConfig::default()
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// The combinations nats-server refuses (also checked by
    /// `Options::validate`, for options built from flags or in code).
    pub fn check(&self) -> Result<(), String> {
        if self.user.as_deref() == Some("") {
            return Err("empty user name".into());
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(if self.user.is_some() {
                "a user needs a password".into()
            } else {
                "a password needs a user".into()
            });
        }
        if self.token.is_some() && self.user.is_some() {
            return Err("cannot have a token together with a user and password".into());
        }
        if !self.users.is_empty() || !self.nkeys.is_empty() {
            if self.token.is_some() {
                return Err("cannot have a token and a users array".into());
            }
            if self.user.is_some() {
                return Err("cannot have a single user/pass and a users array".into());
            }
        }
        let mut seen = std::collections::HashSet::new();
        for u in &self.users {
            if u.user.is_empty() {
                return Err("user with an empty name in users".into());
            }
            if !seen.insert(u.user.as_str()) {
                return Err(format!("Duplicate user \"{}\" detected", u.user));
            }
        }
        for n in &self.nkeys {
            if !is_user_nkey(&n.nkey) {
                return Err("Not a valid public nkey for a user".into());
            }
            if !seen.insert(n.nkey.as_str()) {
                return Err(format!("Duplicate nkey \"{}\" detected", n.nkey));
            }
        }
        if let Some(name) = &self.no_auth_user {
            if self.users.is_empty() && self.nkeys.is_empty() {
                return Err(format!(
                    "no_auth_user: \"{name}\" present, but users/nkeys are not defined"
                ));
            }
            if !seen.contains(name.as_str()) {
                return Err(format!(
                    "no_auth_user: \"{name}\" not present as user or nkey in authorization \
                     block or account configuration"
                ));
            }
        }
        Ok(())
    }

    /// Parse an `authorization { ... }` block. Keys rnats does not know are
    /// errors, as in nats-server; `cx` gets warnings about ignored ones.
    pub fn from_config(v: &Spanned, cx: &mut Context) -> Result<AuthConfig, ConfigError> {
        let map = conf::map(v, "authorization")?;
        let mut cfg = AuthConfig::default();
        for (k, val) in map {
            let lk = k.to_ascii_lowercase();
            match lk.as_str() {
                "user" | "username" => {
                    let u = conf::string(val, &lk)?;
                    if u.is_empty() {
                        return Err(conf::err(val, "empty user name"));
                    }
                    cfg.user = Some(u);
                }
                "password" | "pass" => cfg.password = Some(secret(val, &lk)?),
                "token" => cfg.token = Some(secret(val, &lk)?),
                "timeout" => {
                    cx.record("authorization.timeout", val);
                    cfg.timeout = Some(timeout(val, &lk, cx)?);
                }
                "users" => {
                    let items = val
                        .as_array()
                        .ok_or_else(|| conf::err(val, "\"users\" expects an array"))?;
                    for item in items {
                        match parse_user(item, cx)? {
                            UserOrNkey::User(u) => cfg.users.push(u),
                            UserOrNkey::Nkey(n) => cfg.nkeys.push(n),
                        }
                    }
                }
                "default_permissions" | "default_permission" | "permissions" => {
                    cfg.default_permissions = Some(permissions_in(val, cx)?);
                }
                "auth_callout" | "nkeys" | "accounts" => {
                    return Err(conf::err(
                        val,
                        format!("\"{k}\" in authorization is not supported by rnats"),
                    ));
                }
                _ => cx.unknown(Some("authorization"), k, val)?,
            }
        }
        cfg.check()
            .map_err(|m| conf::err(v, format!("authorization: {m}")))?;
        Ok(cfg)
    }
}

/// An authorization block's `timeout`, with nats-server's warning: an
/// unquoted `timeout: 2m` is two million seconds (a size), not two minutes.
pub(crate) fn timeout(v: &Spanned, key: &str, cx: &mut Context) -> Result<Duration, ConfigError> {
    let t = conf::duration(v, key)?;
    if t > Duration::from_secs(60) {
        cx.warn(
            v,
            format!(
                "timeout of {t:?} is high, consider keeping it under 60 seconds. possibly \
                 caused by unquoted duration; use '1m' instead of 1m, for example"
            ),
        );
    }
    Ok(t)
}

pub(crate) fn secret(v: &Spanned, key: &str) -> Result<Secret, ConfigError> {
    Secret::parse(&conf::string(v, key)?).map_err(|m| conf::err(v, format!("\"{key}\": {m}")))
}

/// One entry of a `users` list (in `authorization` or in an account).
pub(crate) fn parse_user(v: &Spanned, cx: &mut Context) -> Result<UserOrNkey, ConfigError> {
    let map = conf::map(v, "a users entry")?;
    let mut nkey = None;
    let mut user = None;
    let mut password = None;
    let mut permissions = None;
    for (k, val) in map {
        let lk = k.to_ascii_lowercase();
        match lk.as_str() {
            "user" | "username" => user = Some(conf::string(val, &lk)?),
            "password" | "pass" => password = Some(secret(val, &lk)?),
            "permissions" | "permission" => permissions = Some(permissions_in(val, cx)?),
            "allowed_connection_types" | "allowed_connection_type" => {
                // rnats only has standard client connections. A list without
                // STANDARD would lock the user out in nats-server; ignoring
                // it would let them in here, so refuse the configuration.
                let types = conf::string_list(val, &lk)?;
                if !types.iter().any(|t| t.eq_ignore_ascii_case("STANDARD")) {
                    return Err(conf::err(
                        val,
                        "allowed_connection_types without STANDARD: rnats only has standard \
                         client connections",
                    ));
                }
                cx.warn(
                    val,
                    "allowed_connection_types ignored (rnats only has standard connections)",
                );
            }
            "nkey" => nkey = Some((conf::string(val, &lk)?, val)),
            _ => cx.unknown(Some("users entry"), k, val)?,
        }
    }
    if let Some((nkey, at)) = nkey {
        if user.is_some() || password.is_some() {
            return Err(conf::err(
                v,
                "Nkey users do not take usernames or passwords",
            ));
        }
        if !is_user_nkey(&nkey) {
            return Err(conf::err(at, "Not a valid public nkey for a user"));
        }
        return Ok(UserOrNkey::Nkey(NkeyEntry {
            nkey,
            permissions,
            account: None,
        }));
    }
    let user = user
        .filter(|u| !u.is_empty())
        .ok_or_else(|| conf::err(v, "users entry needs a \"user\""))?;
    Ok(UserOrNkey::User(UserEntry {
        user,
        password,
        permissions,
        account: None,
    }))
}

/// `permissions: { publish: ..., subscribe: ..., allow_responses: ... }`,
/// outside any file (no variables to exempt from the unknown-key check).
pub fn parse_permissions(v: &Spanned) -> Result<Permissions, ConfigError> {
    permissions_in(v, &mut Context::default())
}

pub(crate) fn permissions_in(v: &Spanned, cx: &mut Context) -> Result<Permissions, ConfigError> {
    let map = conf::map(v, "permissions")?;
    let mut p = Permissions::default();
    for (k, val) in map {
        match k.to_ascii_lowercase().as_str() {
            "publish" | "pub" | "import" => p.publish = Some(subject_permission(val, false, cx)?),
            "subscribe" | "sub" | "export" => {
                p.subscribe = Some(subject_permission(val, true, cx)?)
            }
            "allow_responses" | "allow_response" | "publish_allow_responses" => {
                p.allow_responses = response_permission(val, cx)?
            }
            _ => cx.unknown(Some("permissions"), k, val)?,
        }
    }
    // nats-server: a user allowed to answer requests and given no publish
    // allow list may publish nothing else ("we turn off the blanket allow
    // statement"); a publish deny list is kept.
    if p.allow_responses.is_some() {
        let publish = p.publish.get_or_insert_with(SubjectPermission::default);
        if publish.allow.is_none() {
            publish.allow = Some(Vec::new());
        }
    }
    Ok(p)
}

/// A string or array is an allow list; a map has `allow` and/or `deny`.
fn subject_permission(
    v: &Spanned,
    subscribe: bool,
    cx: &Context,
) -> Result<SubjectPermission, ConfigError> {
    if let Some(map) = v.as_map() {
        let mut sp = SubjectPermission::default();
        for (k, val) in map {
            match k.to_ascii_lowercase().as_str() {
                "allow" => sp.allow = Some(subjects(val, subscribe)?),
                "deny" => sp.deny = subjects(val, subscribe)?,
                _ => cx.unknown(Some("permission (use allow or deny)"), k, val)?,
            }
        }
        return Ok(sp);
    }
    Ok(SubjectPermission {
        allow: Some(subjects(v, subscribe)?),
        deny: Vec::new(),
    })
}

/// Subjects may use wildcards. Subscribe entries may name a queue group
/// after a space ("foo.* workers"), as in nats-server.
fn subjects(v: &Spanned, subscribe: bool) -> Result<Vec<String>, ConfigError> {
    let list = conf::string_list(v, "permission")?;
    for s in &list {
        let (subj, queue) = match s.split_once(char::is_whitespace) {
            Some((a, b)) if subscribe => (a, Some(b.trim())),
            _ => (s.as_str(), None),
        };
        let ok = subject::valid_sub_subject(subj.as_bytes())
            && queue.is_none_or(|q| !q.is_empty() && !q.contains(char::is_whitespace));
        if !ok {
            return Err(conf::err(
                v,
                format!("invalid subject \"{s}\" in permissions"),
            ));
        }
    }
    Ok(list)
}

fn response_permission(
    v: &Spanned,
    cx: &Context,
) -> Result<Option<ResponsePermission>, ConfigError> {
    if let Some(b) = v.as_bool() {
        return Ok(b.then_some(ResponsePermission {
            max: DEFAULT_RESPONSE_MAX,
            expires: DEFAULT_RESPONSE_EXPIRES,
        }));
    }
    let map = conf::map(v, "allow_responses")?;
    let mut rp = ResponsePermission {
        max: DEFAULT_RESPONSE_MAX,
        expires: DEFAULT_RESPONSE_EXPIRES,
    };
    // As in nats-server: 0 keeps the default, a negative value means no limit.
    for (k, val) in map {
        match k.to_ascii_lowercase().as_str() {
            "max" | "max_msgs" | "max_messages" | "max_responses" => {
                match conf::int_in(val, "max", i64::MIN, i64::MAX)? {
                    0 => {}
                    n if n < 0 => rp.max = 0,
                    n => rp.max = n.unsigned_abs(),
                }
            }
            "expires" | "expiration" | "ttl" => {
                let negative = val.as_str().and_then(|s| s.trim().strip_prefix('-'));
                if let Some(rest) = negative {
                    // Checked like any duration, then taken as "no limit".
                    let d = conf::parse_go_duration(rest)
                        .map_err(|m| conf::err(val, format!("\"expires\": {m}")))?;
                    if !d.is_zero() {
                        rp.expires = Duration::ZERO;
                    }
                } else {
                    let d = conf::duration(val, "expires")?;
                    if !d.is_zero() {
                        rp.expires = d;
                    }
                }
            }
            _ => cx.unknown(Some("allow_responses"), k, val)?,
        }
    }
    Ok(Some(rp))
}

/// Startup warnings for secrets kept in plain text.
pub fn plaintext_warnings(cfg: &AuthConfig) -> Vec<String> {
    let hint = "store a bcrypt hash instead (`rnats passwd` makes one)";
    let mut w = Vec::new();
    if let (Some(u), Some(Secret::Plain(_))) = (&cfg.user, &cfg.password) {
        w.push(format!("plaintext password for user \"{u}\"; {hint}"));
    }
    if let Some(Secret::Plain(_)) = &cfg.token {
        w.push(format!("plaintext authorization token; {hint}"));
    }
    for u in &cfg.users {
        if let Some(Secret::Plain(_)) = &u.password {
            w.push(format!(
                "plaintext password for user \"{}\"; {hint}",
                u.user
            ));
        }
    }
    w
}

/// rnats's brute-force and connection-flood limits (`auth_limits { ... }`).
/// A zero disables the corresponding limit.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthLimits {
    /// Failed logins as one user from one source (or naming no existing
    /// user, from one source) within `window` that ban that pair. IPv6
    /// sources are grouped by /64.
    pub max_failures: u32,
    pub window: Duration,
    /// How long the first ban lasts; each further ban of the same pair
    /// doubles it, up to `max_ban` (taken as `ban` when shorter).
    pub ban: Duration,
    pub max_ban: Duration,
    /// New connections accepted per second, server-wide (token bucket
    /// rate). 0 (the default) means unlimited, as in nats-server, which has
    /// no such limit.
    pub max_conn_rate: u32,
    /// Token bucket size: connections accepted in one burst.
    pub conn_burst: u32,
    /// Concurrent bcrypt verifications; 0 means half the cores (at least 1).
    pub bcrypt_workers: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            max_failures: 10,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(60),
            max_ban: Duration::from_secs(3600),
            max_conn_rate: 0,
            conn_burst: 2000,
            bcrypt_workers: 0,
        }
    }
}

impl AuthLimits {
    /// Parse an `auth_limits { ... }` block over the defaults.
    pub fn from_config(v: &Spanned, cx: &Context) -> Result<AuthLimits, ConfigError> {
        let map = conf::map(v, "auth_limits")?;
        let mut l = AuthLimits::default();
        for (k, val) in map {
            let lk = k.to_ascii_lowercase();
            match lk.as_str() {
                "max_failures" => l.max_failures = conf::uint32(val, &lk)?,
                "window" => l.window = conf::duration(val, &lk)?,
                "ban" => l.ban = conf::duration(val, &lk)?,
                "max_ban" => l.max_ban = conf::duration(val, &lk)?,
                "max_conn_rate" => l.max_conn_rate = conf::uint32(val, &lk)?,
                "conn_burst" => l.conn_burst = conf::uint32(val, &lk)?,
                "bcrypt_workers" => l.bcrypt_workers = conf::count(val, &lk)?,
                _ => cx.unknown(
                    Some(
                        "auth_limits (known: max_failures, window, ban, max_ban, \
                         max_conn_rate, conn_burst, bcrypt_workers)",
                    ),
                    k,
                    val,
                )?,
            }
        }
        l.check().map_err(|m| conf::err(v, m))?;
        Ok(l)
    }

    /// Rules between the fields (also checked for options built in code).
    pub fn check(&self) -> Result<(), String> {
        if self.max_failures > 0 && (self.window.is_zero() || self.ban.is_zero()) {
            return Err(
                "auth_limits: window and ban must be positive when max_failures is set".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::value::testing::{arr, b, i, map, s, strs};

    const HASH: &str = "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG";

    #[test]
    fn single_user_block() {
        let mut w = Context::default();
        let c = AuthConfig::from_config(
            &map(vec![
                ("user", s("derek")),
                ("password", s(HASH)),
                ("timeout", i(1)),
            ]),
            &mut w,
        )
        .expect("parse");
        assert_eq!(c.user.as_deref(), Some("derek"));
        assert!(c.password.as_ref().is_some_and(Secret::is_bcrypt));
        assert_eq!(c.timeout, Some(Duration::from_secs(1)));
        assert!(c.is_enabled());
        assert!(plaintext_warnings(&c).is_empty());
        assert!(w.warnings.is_empty());
    }

    #[test]
    fn users_with_permissions() {
        let mut w = Context::default();
        let c = AuthConfig::from_config(
            &map(vec![
                (
                    "default_permissions",
                    map(vec![
                        ("publish", s("app.services.*")),
                        ("subscribe", map(vec![("deny", s("_INBOX.>"))])),
                    ]),
                ),
                (
                    "users",
                    arr(vec![
                        map(vec![
                            ("username", s("pam")),
                            ("password", s("pam")),
                            (
                                "permissions",
                                map(vec![
                                    ("subscribe", strs(&["_pam.>", "jobs.* workers"])),
                                    ("allow_responses", b(true)),
                                ]),
                            ),
                        ]),
                        map(vec![("user", s("CN=alice,O=Acme"))]),
                        map(vec![
                            ("user", s("joe")),
                            ("pass", s(HASH)),
                            ("allowed_connection_types", strs(&["STANDARD", "WEBSOCKET"])),
                        ]),
                    ]),
                ),
            ]),
            &mut w,
        )
        .expect("parse");
        assert_eq!(c.users.len(), 3);
        let d = c.default_permissions.as_ref().expect("defaults");
        assert_eq!(
            d.publish,
            Some(SubjectPermission {
                allow: Some(vec!["app.services.*".into()]),
                deny: vec![]
            })
        );
        assert_eq!(
            d.subscribe,
            Some(SubjectPermission {
                allow: None,
                deny: vec!["_INBOX.>".into()]
            })
        );
        let pam = c.users[0].permissions.as_ref().expect("pam perms");
        assert_eq!(
            pam.allow_responses,
            Some(ResponsePermission {
                max: 1,
                expires: Duration::from_secs(120)
            })
        );
        // allow_responses without publish: publish nothing else.
        assert_eq!(
            pam.publish.as_ref().and_then(|p| p.allow.clone()),
            Some(vec![])
        );
        assert!(c.users[1].password.is_none());
        assert_eq!(w.warnings.len(), 1, "{w:?}");
        let pw = plaintext_warnings(&c);
        assert_eq!(pw.len(), 1);
        assert!(pw[0].contains("\"pam\""), "{pw:?}");
        let json = serde_json::to_string(pam).expect("json");
        assert_eq!(
            json,
            r#"{"publish":{"allow":[]},"subscribe":{"allow":["_pam.>","jobs.* workers"]},"allow_responses":{"max":1,"expires":120000000000}}"#
        );
    }

    #[test]
    fn refused_combinations() {
        let bad = |entries: Vec<(&str, Spanned)>| {
            AuthConfig::from_config(&map(entries), &mut Context::default())
                .unwrap_err()
                .msg
        };
        assert!(bad(vec![("user", s("a"))]).contains("needs a password"));
        assert!(bad(vec![("password", s("a"))]).contains("needs a user"));
        assert!(
            bad(vec![
                ("token", s("t")),
                ("user", s("a")),
                ("password", s("b"))
            ])
            .contains("token")
        );
        let users = || arr(vec![map(vec![("user", s("a")), ("password", s("b"))])]);
        assert!(bad(vec![("token", s("t")), ("users", users())]).contains("users array"));
        assert!(
            bad(vec![
                ("user", s("x")),
                ("password", s("y")),
                ("users", users())
            ])
            .contains("users array")
        );
        let dup = arr(vec![
            map(vec![("user", s("a")), ("password", s("b"))]),
            map(vec![("user", s("a")), ("password", s("c"))]),
        ]);
        assert!(bad(vec![("users", dup)]).contains("Duplicate user \"a\""));
        assert!(bad(vec![("bogus", i(1))]).contains("unknown field \"bogus\""));
        assert!(bad(vec![("auth_callout", map(vec![]))]).contains("not supported"));
        assert!(bad(vec![("token", s("$2a$11$short"))]).contains("malformed bcrypt"));
        assert!(bad(vec![("token", s(""))]).contains("empty"));
        let nkey = arr(vec![map(vec![("nkey", s("UABC"))])]);
        assert!(bad(vec![("users", nkey)]).contains("Not a valid public nkey"));
        let bad_subject = arr(vec![map(vec![
            ("user", s("a")),
            ("password", s("b")),
            ("permissions", map(vec![("publish", s("foo..bar"))])),
        ])]);
        assert!(bad(vec![("users", bad_subject)]).contains("invalid subject"));
        let no_std = arr(vec![map(vec![
            ("user", s("a")),
            ("password", s("b")),
            ("allowed_connection_types", s("WEBSOCKET")),
        ])]);
        assert!(bad(vec![("users", no_std)]).contains("STANDARD"));
    }

    #[test]
    fn flags() {
        let c = AuthConfig::from_flags(Some("u".into()), Some("p".into()), None).expect("ok");
        assert_eq!(c.user.as_deref(), Some("u"));
        assert_eq!(plaintext_warnings(&c).len(), 1);
        let c = AuthConfig::from_flags(None, None, Some(HASH.into())).expect("ok");
        assert!(c.token.as_ref().is_some_and(Secret::is_bcrypt));
        assert!(plaintext_warnings(&c).is_empty());
        assert!(AuthConfig::from_flags(Some("u".into()), None, None).is_err());
        assert!(AuthConfig::from_flags(None, None, None).is_ok_and(|c| !c.is_enabled()));
    }

    fn limits(v: Spanned) -> Result<AuthLimits, ConfigError> {
        AuthLimits::from_config(&v, &Context::default())
    }

    #[test]
    fn limits_block() {
        let l = limits(map(vec![
            ("max_failures", i(3)),
            ("window", s("10s")),
            ("ban", i(30)),
            ("max_ban", s("10m")),
            ("max_conn_rate", i(0)),
            ("conn_burst", i(5)),
            ("bcrypt_workers", i(2)),
        ]))
        .expect("parse");
        assert_eq!(
            l,
            AuthLimits {
                max_failures: 3,
                window: Duration::from_secs(10),
                ban: Duration::from_secs(30),
                max_ban: Duration::from_secs(600),
                max_conn_rate: 0,
                conn_burst: 5,
                bcrypt_workers: 2,
            }
        );
        assert!(
            limits(map(vec![("typo", i(1))]))
                .unwrap_err()
                .msg
                .contains("typo")
        );
        assert!(limits(map(vec![("window", i(0))])).is_err());
        assert!(limits(map(vec![("max_failures", i(-1))])).is_err());
        assert_eq!(limits(map(vec![])).expect("empty"), AuthLimits::default());
    }

    #[test]
    fn allow_responses_values_follow_nats_server() {
        let rp = |v: Spanned| {
            parse_permissions(&map(vec![("allow_responses", v)])).map(|p| p.allow_responses)
        };
        let want = |max: u64, secs: u64| {
            Some(ResponsePermission {
                max,
                expires: Duration::from_secs(secs),
            })
        };
        assert_eq!(rp(b(true)).expect("true"), want(1, 120));
        assert_eq!(rp(b(false)).expect("false"), None);
        assert_eq!(
            rp(map(vec![("max", i(3)), ("expires", s("1m"))])).expect("map"),
            want(3, 60)
        );
        // 0 keeps the default; negative means no limit (0 at run time).
        assert_eq!(
            rp(map(vec![("max", i(0)), ("expires", s("0s"))])).expect("zeros"),
            want(1, 120)
        );
        assert_eq!(
            rp(map(vec![("max", i(-1)), ("expires", s("-1s"))])).expect("negative"),
            want(0, 0)
        );
        assert!(rp(map(vec![("expires", s("-x"))])).is_err());
        assert!(rp(map(vec![("typo", i(1))])).is_err());
        // A publish deny list is kept, but the blanket allow is turned off.
        let p = parse_permissions(&map(vec![
            ("publish", map(vec![("deny", strs(&["x"]))])),
            ("publish_allow_responses", b(true)),
        ]))
        .expect("perms");
        assert_eq!(
            p.publish,
            Some(SubjectPermission {
                allow: Some(vec![]),
                deny: vec!["x".into()]
            })
        );
    }
}
