//! Password, token and certificate-mapping authentication.
//!
//! * [`AuthConfig`] is the `authorization { ... }` block (or `--user`,
//!   `--pass`, `--auth`); secrets may be plain or bcrypt ([`Secret`]).
//! * [`Authenticator::authenticate`] checks a CONNECT's credentials: plain
//!   secrets are compared in constant time, bcrypt runs in a bounded pool
//!   off the async workers, and an unknown user costs the same bcrypt work
//!   as a wrong password.
//! * [`FailureLimiter`] bans sources after repeated failures and limits the
//!   server-wide rate of new connections (`auth_limits { ... }`).
//! * [`audit`] writes one event per decision on target `rnats::audit`.
//!
//! ## `auth_limits` (rnats-specific, top level)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `max_failures` | 10 | failed logins within `window` that ban the source (0: never ban) |
//! | `window` | 60s | failure counting window |
//! | `ban` | 60s | how long a banned source is refused |
//! | `max_conn_rate` | 1000 | new connections per second, server-wide (0: unlimited) |
//! | `conn_burst` | 2000 | connections accepted in one burst |
//! | `bcrypt_workers` | 0 | concurrent bcrypt checks (0: half the cores, at least 1) |
//!
//! IPv6 sources are counted per /64. A successful login does not reset a
//! source's failure count (otherwise one valid account would let an
//! attacker interleave unlimited guesses at others).

pub mod audit;
mod limiter;
mod perms;
mod secret;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

pub use audit::{AUDIT_TARGET, AuditEvent, AuditResult, audit};
// The option types and their parser live in `crate::config::auth`; these
// paths are kept so the rest of the code (and users of the library) need
// not care where they are defined.
pub use crate::config::auth::{
    AuthConfig, AuthLimits, DEFAULT_RESPONSE_EXPIRES, DEFAULT_RESPONSE_MAX, Permissions,
    ResponsePermission, SubjectPermission, UserEntry, parse_permissions, plaintext_warnings,
};
pub use limiter::{
    Admission, FailureLimiter, LimiterCounters, LimiterStats, MAX_TRACKED_SOURCES, source_key,
};
pub use perms::is_subset;
pub use secret::{BcryptPool, Secret, ct_eq, dummy_bcrypt_hash};

use crate::tls::{CertIdentity, dn_matches};

/// How a client authenticated (or tried to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// No authentication is configured.
    None,
    Token,
    UserPassword,
    /// `verify_and_map`: the client certificate names the user.
    TlsMap,
}

impl AuthMethod {
    /// The audit log's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Token => "token",
            AuthMethod::UserPassword => "user",
            AuthMethod::TlsMap => "tls-map",
        }
    }
}

/// A successful authentication.
#[derive(Clone, Debug)]
pub struct AuthOk {
    pub user: Option<String>,
    pub method: AuthMethod,
    /// The user's permissions, else the default permissions, else none
    /// (everything allowed).
    pub permissions: Option<Arc<Permissions>>,
}

/// A refused authentication. `reason` is for the server log and audit
/// trail only; the client always just gets 'Authorization Violation'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthFailure {
    pub reason: &'static str,
    pub method: AuthMethod,
    /// The user name the client sent, if any.
    pub user: Option<String>,
}

pub const REASON_BANNED: &str = "source banned after repeated failures";
pub const REASON_MISSING: &str = "missing credentials";
pub const REASON_UNKNOWN_USER: &str = "unknown user";
pub const REASON_BAD_PASSWORD: &str = "wrong password";
pub const REASON_BAD_TOKEN: &str = "wrong token";
pub const REASON_NO_PASSWORD: &str = "user has no password (certificate login only)";
pub const REASON_NO_CERT: &str = "no client certificate";
pub const REASON_CERT_UNMAPPED: &str = "certificate maps to no user";

#[derive(Debug)]
struct User {
    name: String,
    password: Option<Secret>,
    permissions: Option<Arc<Permissions>>,
}

#[derive(Debug)]
enum Mode {
    Open,
    Token(Secret),
    Single(User),
    Users(HashMap<String, User>),
}

/// Checks CONNECT credentials against the configuration.
#[derive(Debug)]
pub struct Authenticator {
    mode: Mode,
    tls_map: bool,
    pool: BcryptPool,
    /// When any user password is a bcrypt hash: a hash no password matches,
    /// at the highest configured cost, verified on every user/password
    /// failure that did not already run bcrypt, so failures all cost alike.
    dummy: Option<Arc<str>>,
    limiter: Arc<FailureLimiter>,
}

impl Authenticator {
    /// `tls_map` is the TLS `verify_and_map` setting. `bcrypt_workers == 0`
    /// means half the cores.
    pub fn new(
        cfg: &AuthConfig,
        tls_map: bool,
        limiter: Arc<FailureLimiter>,
        bcrypt_workers: usize,
    ) -> Result<Authenticator, String> {
        let default_perms = cfg.default_permissions.clone().map(Arc::new);
        let perms =
            |p: &Option<Permissions>| p.clone().map(Arc::new).or_else(|| default_perms.clone());
        let mode = if let Some(t) = &cfg.token {
            if tls_map {
                return Err("verify_and_map cannot be combined with an authorization token".into());
            }
            Mode::Token(t.clone())
        } else if let Some(u) = &cfg.user {
            Mode::Single(User {
                name: u.clone(),
                password: cfg.password.clone(),
                permissions: default_perms.clone(),
            })
        } else if !cfg.users.is_empty() {
            let mut map = HashMap::new();
            for u in &cfg.users {
                let user = User {
                    name: u.user.clone(),
                    password: u.password.clone(),
                    permissions: perms(&u.permissions),
                };
                if map.insert(u.user.clone(), user).is_some() {
                    return Err(format!("duplicate user \"{}\"", u.user));
                }
            }
            Mode::Users(map)
        } else {
            if tls_map {
                return Err("verify_and_map needs users in the authorization block".into());
            }
            Mode::Open
        };
        let max_cost = match &mode {
            Mode::Single(u) => u.password.as_ref().and_then(Secret::bcrypt_cost),
            Mode::Users(m) => m
                .values()
                .filter_map(|u| u.password.as_ref().and_then(Secret::bcrypt_cost))
                .max(),
            Mode::Open | Mode::Token(_) => None,
        };
        Ok(Authenticator {
            mode,
            tls_map,
            pool: BcryptPool::new(bcrypt_workers),
            dummy: max_cost.map(|c| Arc::from(dummy_bcrypt_hash(c).as_str())),
            limiter,
        })
    }

    /// Build from server options: `authorization`, TLS `verify_and_map`
    /// and `auth_limits`.
    pub fn from_options(opts: &crate::config::Options) -> Result<Authenticator, String> {
        let tls_map = opts.tls.as_ref().is_some_and(|t| t.verify_and_map);
        let limiter = Arc::new(FailureLimiter::new(&opts.auth_limits));
        Self::new(
            &opts.auth,
            tls_map,
            limiter,
            opts.auth_limits.bcrypt_workers,
        )
    }

    /// Must clients authenticate (INFO `auth_required`)?
    pub fn auth_required(&self) -> bool {
        !matches!(self.mode, Mode::Open)
    }

    pub fn limiter(&self) -> &Arc<FailureLimiter> {
        &self.limiter
    }

    pub fn bcrypt_pool(&self) -> &BcryptPool {
        &self.pool
    }

    fn method(&self) -> AuthMethod {
        match self.mode {
            Mode::Open => AuthMethod::None,
            Mode::Token(_) => AuthMethod::Token,
            _ if self.tls_map => AuthMethod::TlsMap,
            Mode::Single(_) | Mode::Users(_) => AuthMethod::UserPassword,
        }
    }

    /// Check one client's credentials. A banned source is refused without
    /// looking at them; every failure is recorded with the limiter.
    pub async fn authenticate(
        &self,
        peer: IpAddr,
        user: Option<&str>,
        pass: Option<&str>,
        token: Option<&str>,
        tls_identity: Option<&CertIdentity>,
    ) -> Result<AuthOk, AuthFailure> {
        if !self.auth_required() {
            return Ok(AuthOk {
                user: None,
                method: AuthMethod::None,
                permissions: None,
            });
        }
        let method = self.method();
        let fail = |reason: &'static str| AuthFailure {
            reason,
            method,
            user: user.map(str::to_string),
        };
        if self.limiter.is_banned(peer) {
            self.limiter
                .counters
                .banned_refusals
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(fail(REASON_BANNED));
        }
        let user = user.filter(|u| !u.is_empty());
        let result = self.check(user, pass, token, tls_identity).await;
        result.map_err(|reason| {
            self.limiter.record_failure(peer);
            fail(reason)
        })
    }

    /// Check the credentials an already-connected client logged in with
    /// against this (reloaded) configuration. Unlike [`authenticate`]
    /// this neither consults nor feeds the failure limiter: the client is
    /// not attempting a login, the server is re-evaluating an old one, so
    /// a password rotation that drops several clients of one host must not
    /// get that host banned, and a source banned meanwhile (by someone
    /// else's guesses behind the same NAT) keeps its valid connections.
    ///
    /// [`authenticate`]: Self::authenticate
    pub async fn recheck(
        &self,
        user: Option<&str>,
        pass: Option<&str>,
        token: Option<&str>,
        tls_identity: Option<&CertIdentity>,
    ) -> Result<AuthOk, AuthFailure> {
        let method = self.method();
        let failure_user = user.map(str::to_string);
        let user = user.filter(|u| !u.is_empty());
        self.check(user, pass, token, tls_identity)
            .await
            .map_err(|reason| AuthFailure {
                reason,
                method,
                user: failure_user,
            })
    }

    async fn check(
        &self,
        user: Option<&str>,
        pass: Option<&str>,
        token: Option<&str>,
        tls_identity: Option<&CertIdentity>,
    ) -> Result<AuthOk, &'static str> {
        match &self.mode {
            Mode::Open => Ok(AuthOk {
                user: None,
                method: AuthMethod::None,
                permissions: None,
            }),
            Mode::Token(secret) => {
                let given = token.filter(|t| !t.is_empty()).ok_or(REASON_MISSING)?;
                if secret.verify(given, &self.pool).await {
                    Ok(AuthOk {
                        user: None,
                        method: AuthMethod::Token,
                        permissions: None,
                    })
                } else {
                    Err(REASON_BAD_TOKEN)
                }
            }
            _ if self.tls_map => self.map_certificate(tls_identity),
            Mode::Single(u) => {
                let given_user = user.ok_or(REASON_MISSING)?;
                let given_pass = pass.unwrap_or("");
                // Check the password whatever the user name, so a wrong
                // name answers no faster than a wrong password.
                let name_ok = ct_eq(u.name.as_bytes(), given_user.as_bytes());
                let (pass_ok, ran_bcrypt) = self.check_password(u, given_pass).await;
                if name_ok && pass_ok {
                    return Ok(self.ok_user(u, AuthMethod::UserPassword));
                }
                self.equalize(ran_bcrypt).await;
                Err(if name_ok {
                    REASON_BAD_PASSWORD
                } else {
                    REASON_UNKNOWN_USER
                })
            }
            Mode::Users(map) => {
                let given_user = user.ok_or(REASON_MISSING)?;
                let given_pass = pass.unwrap_or("");
                let Some(u) = map.get(given_user) else {
                    self.equalize(false).await;
                    return Err(REASON_UNKNOWN_USER);
                };
                if u.password.is_none() {
                    self.equalize(false).await;
                    return Err(REASON_NO_PASSWORD);
                }
                let (ok, ran_bcrypt) = self.check_password(u, given_pass).await;
                if ok {
                    return Ok(self.ok_user(u, AuthMethod::UserPassword));
                }
                self.equalize(ran_bcrypt).await;
                Err(REASON_BAD_PASSWORD)
            }
        }
    }

    /// (matches, bcrypt was run).
    async fn check_password(&self, u: &User, given: &str) -> (bool, bool) {
        match &u.password {
            Some(s) => (s.verify(given, &self.pool).await, s.is_bcrypt()),
            None => (false, false),
        }
    }

    /// Spend the dummy bcrypt verification when a failure has not run one.
    async fn equalize(&self, ran_bcrypt: bool) {
        if let (false, Some(d)) = (ran_bcrypt, &self.dummy) {
            let _ = self.pool.verify("", d.clone()).await;
        }
    }

    fn ok_user(&self, u: &User, method: AuthMethod) -> AuthOk {
        AuthOk {
            user: Some(u.name.clone()),
            method,
            permissions: u.permissions.clone(),
        }
    }

    /// `verify_and_map`: SAN e-mails first, then SAN DNS names, then the
    /// subject DN, as nats-server documents.
    fn map_certificate(&self, id: Option<&CertIdentity>) -> Result<AuthOk, &'static str> {
        let id = id.ok_or(REASON_NO_CERT)?;
        let by_name = |name: &str| -> Option<&User> {
            match &self.mode {
                Mode::Users(m) => m.get(name),
                Mode::Single(u) if u.name == name => Some(u),
                _ => None,
            }
        };
        let found = id
            .emails
            .iter()
            .chain(&id.dns_names)
            .chain(std::iter::once(&id.subject))
            .find_map(|n| by_name(n))
            .or_else(|| {
                // Same DN written differently (attribute order, case of the
                // attribute types, escapes).
                let all: Vec<&User> = match &self.mode {
                    Mode::Users(m) => m.values().collect(),
                    Mode::Single(u) => vec![u],
                    _ => Vec::new(),
                };
                let mut hits = all.into_iter().filter(|u| dn_matches(&u.name, id));
                // Several spellings of one DN would make the pick depend on
                // hash order: refuse rather than guess.
                match (hits.next(), hits.next()) {
                    (Some(u), None) => Some(u),
                    _ => None,
                }
            })
            .ok_or(REASON_CERT_UNMAPPED)?;
        Ok(self.ok_user(found, AuthMethod::TlsMap))
    }
}

#[cfg(test)]
mod tests;
