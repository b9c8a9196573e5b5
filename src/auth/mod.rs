//! Password, token and certificate-mapping authentication.
//!
//! * [`AuthConfig`] is the `authorization { ... }` block (or `--user`,
//!   `--pass`, `--auth`); secrets may be plain or bcrypt ([`Secret`]).
//! * [`Authenticator::authenticate`] checks a CONNECT's credentials: plain
//!   secrets are compared in constant time, bcrypt runs in a bounded pool
//!   off the async workers, and an unknown user costs the same bcrypt work
//!   as a wrong password (at a cost one of the real users has).
//! * [`FailureLimiter`] bans (source, user) pairs after repeated failures
//!   (its module documents the policy) and can limit the server-wide rate
//!   of new connections (`auth_limits { ... }`). One limiter lives for the
//!   whole server; a reload keeps its state.
//! * [`audit`] writes one event per decision on target `rnats::audit`.
//!
//! ## `auth_limits` (rnats-specific, top level)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `max_failures` | 10 | failed logins as one user from one source within `window` that ban that pair (0: never ban) |
//! | `window` | 60s | failure counting window |
//! | `ban` | 60s | how long the first ban lasts |
//! | `max_ban` | 1h | each further ban of the same pair doubles, up to this |
//! | `max_conn_rate` | 0 | new connections per second, server-wide (0: unlimited, as nats-server) |
//! | `conn_burst` | 2000 | connections accepted in one burst when `max_conn_rate` is set |
//! | `bcrypt_workers` | 0 | concurrent bcrypt checks (0: half the cores, at least 1) |
//!
//! IPv6 sources are counted per /64. A successful login does not reset a
//! pair's failure count (otherwise a client that knows the password could
//! interleave unlimited guesses).

pub mod audit;
mod limiter;
pub mod operator;
mod pending;
mod perms;
pub mod resolver;
mod secret;
mod tls_map;

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
    Admission, FailureLimiter, LimiterCounters, LimiterStats, MAX_TRACKED_KEYS, source_key,
};
pub use perms::is_subset;
pub use secret::{BcryptPool, Secret, Verdict, bcrypt_cost_of, ct_eq, dummy_bcrypt_hash};

use crate::tls::CertIdentity;
use pending::Pending;

/// How a client authenticated (or tried to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// No authentication is configured.
    None,
    Token,
    UserPassword,
    /// `verify_and_map`: the client certificate names the user.
    TlsMap,
    /// An nkey user signed the server's nonce.
    Nkey,
    /// `no_auth_user`: no credentials, logged in as the configured user.
    NoAuthUser,
    /// Operator mode: a user JWT (and the nonce signed with its key).
    Jwt,
}

impl AuthMethod {
    /// The audit log's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Token => "token",
            AuthMethod::UserPassword => "user",
            AuthMethod::TlsMap => "tls-map",
            AuthMethod::Nkey => "nkey",
            AuthMethod::NoAuthUser => "no-auth-user",
            AuthMethod::Jwt => "jwt",
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
    /// The user's account (None: the global account).
    pub account: Option<String>,
    /// Operator mode: the expiry and limits of the JWT login.
    pub jwt: Option<Arc<operator::JwtGrant>>,
}

/// What a CONNECT presented, and the nonce its INFO carried.
#[derive(Clone, Copy, Debug, Default)]
pub struct Presented<'a> {
    pub user: Option<&'a str>,
    pub pass: Option<&'a str>,
    pub token: Option<&'a str>,
    pub nkey: Option<&'a str>,
    pub sig: Option<&'a str>,
    pub jwt: Option<&'a str>,
    pub nonce: Option<&'a str>,
    /// The client's address (None for re-checks).
    pub peer: Option<IpAddr>,
}

impl Presented<'_> {
    /// No credentials at all (`no_auth_user` applies).
    fn is_empty(&self) -> bool {
        [self.user, self.pass, self.token, self.nkey, self.jwt]
            .iter()
            .all(|f| f.is_none_or(str::is_empty))
    }
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

pub const REASON_BANNED: &str = "banned after repeated failures";
pub const REASON_MISSING: &str = "missing credentials";
pub const REASON_UNKNOWN_USER: &str = "unknown user";
pub const REASON_BAD_PASSWORD: &str = "wrong password";
pub const REASON_BAD_TOKEN: &str = "wrong token";
pub const REASON_NO_PASSWORD: &str = "user has no password (certificate login only)";
pub const REASON_NO_CERT: &str = "no client certificate";
pub const REASON_CERT_UNMAPPED: &str = "certificate maps to no user";
pub const REASON_UNKNOWN_NKEY: &str = "unknown nkey";
pub const REASON_BAD_SIGNATURE: &str = "nkey signature not verified";
pub const REASON_NO_SIGNATURE: &str = "signature missing";

#[derive(Debug)]
struct User {
    name: String,
    password: Option<Secret>,
    permissions: Option<Arc<Permissions>>,
    account: Option<String>,
}

#[derive(Debug)]
enum Mode {
    Open,
    Token(Secret),
    Single(User),
    Users(HashMap<String, User>),
    /// Operator mode: users are JWTs of accounts in the store.
    Operator(Arc<resolver::AccountStore>),
}

/// Checks CONNECT credentials against the configuration.
#[derive(Debug)]
pub struct Authenticator {
    mode: Mode,
    tls_map: bool,
    /// nkey users by public key (beside `Mode::Users`).
    nkeys: HashMap<String, User>,
    /// `no_auth_user`: a name in `Mode::Users` or a key in `nkeys`.
    no_auth_user: Option<String>,
    /// Shared with the authenticators of later reloads while the number of
    /// workers stays, so a reload never doubles the bound.
    pool: Arc<BcryptPool>,
    /// The bcrypt cost of each user's password hash (one entry per user).
    /// A failure that ran no bcrypt (unknown user, plain password) then
    /// verifies a dummy hash at one of these costs, picked by the name
    /// tried: unknown names cost what real ones do, in the same proportions.
    costs: Vec<u32>,
    picker: std::collections::hash_map::RandomState,
    limiter: Arc<FailureLimiter>,
}

/// A refused check: why, whether bcrypt already ran for it, and whether
/// the failure was already recorded (while its bcrypt worker was held).
struct Refusal {
    reason: &'static str,
    ran_bcrypt: bool,
    recorded: bool,
}

impl From<&'static str> for Refusal {
    fn from(reason: &'static str) -> Refusal {
        Refusal {
            reason,
            ran_bcrypt: false,
            recorded: false,
        }
    }
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
        Self::with_pool(
            cfg,
            tls_map,
            limiter,
            Arc::new(BcryptPool::new(bcrypt_workers)),
        )
    }

    fn with_pool(
        cfg: &AuthConfig,
        tls_map: bool,
        limiter: Arc<FailureLimiter>,
        pool: Arc<BcryptPool>,
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
                account: None,
            })
        } else if !cfg.users.is_empty() || !cfg.nkeys.is_empty() {
            let mut map = HashMap::new();
            for u in &cfg.users {
                let user = User {
                    name: u.user.clone(),
                    password: u.password.clone(),
                    permissions: perms(&u.permissions),
                    account: u.account.clone(),
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
        let mut costs: Vec<u32> = match &mode {
            Mode::Single(u) => u.password.iter().filter_map(Secret::bcrypt_cost).collect(),
            Mode::Users(m) => m
                .values()
                .filter_map(|u| u.password.as_ref().and_then(Secret::bcrypt_cost))
                .collect(),
            Mode::Open | Mode::Token(_) | Mode::Operator(_) => Vec::new(),
        };
        costs.sort_unstable();
        let mut nkeys = HashMap::new();
        for n in &cfg.nkeys {
            let user = User {
                name: n.nkey.clone(),
                password: None,
                permissions: perms(&n.permissions),
                account: n.account.clone(),
            };
            if nkeys.insert(n.nkey.clone(), user).is_some() {
                return Err(format!("Duplicate nkey \"{}\" detected", n.nkey));
            }
        }
        Ok(Authenticator {
            mode,
            tls_map,
            nkeys,
            no_auth_user: cfg.no_auth_user.clone(),
            pool,
            costs,
            picker: Default::default(),
            limiter,
        })
    }

    /// Build from server options: `authorization`, TLS `verify_and_map`
    /// and `auth_limits`.
    pub fn from_options(opts: &crate::config::Options) -> Result<Authenticator, String> {
        let limiter = Arc::new(FailureLimiter::new(&opts.auth_limits));
        Self::new(
            &opts.effective_auth(),
            Self::tls_map_of(opts),
            limiter,
            opts.auth_limits.bcrypt_workers,
        )
    }

    /// Build for a reload: the limiter of `previous` carries on (bans,
    /// failure counts and the connection-rate bucket survive, under the new
    /// limits), and so does its bcrypt pool unless the number of workers
    /// changed.
    pub fn reloaded(
        opts: &crate::config::Options,
        previous: &Authenticator,
    ) -> Result<Authenticator, String> {
        let workers = match opts.auth_limits.bcrypt_workers {
            0 => BcryptPool::default_workers(),
            n => n,
        };
        let pool = if workers == previous.pool.workers() {
            previous.pool.clone()
        } else {
            Arc::new(BcryptPool::new(workers))
        };
        let a = Self::with_pool(
            &opts.effective_auth(),
            Self::tls_map_of(opts),
            previous.limiter.clone(),
            pool,
        )?;
        // Only once the new configuration is known to be good.
        a.limiter.set_limits(&opts.auth_limits);
        Ok(a)
    }

    fn tls_map_of(opts: &crate::config::Options) -> bool {
        opts.tls.as_ref().is_some_and(|t| t.verify_and_map)
    }

    /// Must clients authenticate (INFO `auth_required`)?
    pub fn auth_required(&self) -> bool {
        !matches!(self.mode, Mode::Open)
    }

    /// Does INFO carry a nonce for clients to sign (nkey users exist, or
    /// operator mode)?
    pub fn needs_nonce(&self) -> bool {
        !self.nkeys.is_empty() || matches!(self.mode, Mode::Operator(_))
    }

    /// Switch to operator mode: users are JWTs checked against `store`.
    pub fn with_operator(mut self, store: Arc<resolver::AccountStore>) -> Self {
        self.mode = Mode::Operator(store);
        self
    }

    /// The account store of operator mode.
    pub fn account_store(&self) -> Option<&Arc<resolver::AccountStore>> {
        match &self.mode {
            Mode::Operator(s) => Some(s),
            _ => None,
        }
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
            Mode::Operator(_) => AuthMethod::Jwt,
        }
    }

    /// The existing user a login names, which is what its failures count
    /// against (None: the source's own budget).
    fn target(&self, user: Option<&str>) -> Option<&str> {
        let given = user?;
        match &self.mode {
            _ if self.tls_map => None,
            Mode::Single(u) if ct_eq(u.name.as_bytes(), given.as_bytes()) => Some(&u.name),
            Mode::Users(m) => m.get(given).map(|u| u.name.as_str()),
            _ => None,
        }
    }

    /// The bcrypt cost a login naming `user` is answered at: that user's
    /// own hash, or for a name without one (unknown, or a plain password)
    /// a configured cost picked by the name, the same one every time.
    /// None when no bcrypt is configured.
    pub fn timing_cost(&self, user: Option<&str>) -> Option<u32> {
        let own = match &self.mode {
            Mode::Token(t) => return t.bcrypt_cost(),
            Mode::Open | Mode::Operator(_) => return None,
            _ if self.tls_map => return None,
            Mode::Single(u) => u.password.as_ref(),
            Mode::Users(m) => user
                .and_then(|n| m.get(n))
                .and_then(|u| u.password.as_ref()),
        };
        if let Some(c) = own.and_then(Secret::bcrypt_cost) {
            return Some(c);
        }
        if self.costs.is_empty() {
            return None;
        }
        use std::hash::BuildHasher;
        let h = self.picker.hash_one(user.unwrap_or(""));
        self.costs
            .get((h % self.costs.len() as u64) as usize)
            .copied()
    }

    /// Check one client's credentials. A login whose (source, user) is
    /// banned is refused without looking at the password; the ban is
    /// checked again when a bcrypt worker is free and after verification,
    /// so parallel attempts cannot outrun it. A failure is recorded with
    /// the limiter as soon as it is decided.
    pub async fn authenticate(
        &self,
        peer: IpAddr,
        user: Option<&str>,
        pass: Option<&str>,
        token: Option<&str>,
        tls_identity: Option<&CertIdentity>,
    ) -> Result<AuthOk, AuthFailure> {
        let p = Presented {
            user,
            pass,
            token,
            ..Presented::default()
        };
        self.login(peer, &p, tls_identity).await
    }

    /// [`authenticate`](Self::authenticate) with everything a CONNECT can
    /// present (nkey and signature included).
    pub async fn login(
        &self,
        peer: IpAddr,
        p: &Presented<'_>,
        tls_identity: Option<&CertIdentity>,
    ) -> Result<AuthOk, AuthFailure> {
        let user = p.user;
        if !self.auth_required() {
            return Ok(AuthOk {
                user: None,
                method: AuthMethod::None,
                permissions: None,
                account: None,
                jwt: None,
            });
        }
        let method = self.method_for(p);
        let fail = |reason: &'static str| AuthFailure {
            reason,
            method,
            user: user.map(str::to_string),
        };
        let user = user.filter(|u| !u.is_empty());
        let target = self.target(user);
        let cost = self.timing_cost(user);
        let limiter = &self.limiter;
        if limiter.is_banned_for(peer, target) {
            self.refuse_banned(cost).await;
            return Err(fail(REASON_BANNED));
        }
        let mut pending = Pending::new(&limiter.counters);
        let gate = || !limiter.is_banned_for(peer, target);
        let record = || {
            limiter.record_failure_for(peer, target);
        };
        let result = self.check(p, tls_identity, &gate, &record).await;
        pending.decided = true;
        match result {
            // A source banned while this check queued or ran: its guess
            // must not count, right or wrong.
            Ok(_) if !gate() => {
                self.count_banned_refusal();
                Err(fail(REASON_BANNED))
            }
            Ok(ok) => Ok(ok),
            Err(r) if r.reason == REASON_BANNED => {
                self.count_banned_refusal();
                Err(fail(REASON_BANNED))
            }
            Err(r) => {
                if !r.recorded {
                    record();
                }
                if !r.ran_bcrypt {
                    self.equalize(cost).await;
                }
                Err(fail(r.reason))
            }
        }
    }

    fn count_banned_refusal(&self) {
        self.limiter
            .counters
            .banned_refusals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Answer a banned login no sooner than a checked one would be, so the
    /// answer's timing does not tell which names exist, but without the
    /// bcrypt work once its duration is known.
    async fn refuse_banned(&self, cost: Option<u32>) {
        self.count_banned_refusal();
        match cost.map(|c| (c, self.pool.estimate(c))) {
            Some((_, Some(d))) => tokio::time::sleep(d).await,
            Some((c, None)) => self.equalize(Some(c)).await,
            None => {}
        }
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
        p: &Presented<'_>,
        tls_identity: Option<&CertIdentity>,
    ) -> Result<AuthOk, AuthFailure> {
        let method = self.method_for(p);
        let failure_user = p.user.map(str::to_string);
        self.check(p, tls_identity, &|| true, &|| {})
            .await
            .map_err(|r| AuthFailure {
                reason: r.reason,
                method,
                user: failure_user,
            })
    }

    /// The decision itself. `gate` is asked once a bcrypt worker is free;
    /// false skips the verification and refuses with [`REASON_BANNED`]. A
    /// wrong secret calls `record` before its worker is released, so the
    /// next queued check's `gate` already sees it.
    async fn check(
        &self,
        p: &Presented<'_>,
        tls_identity: Option<&CertIdentity>,
        gate: &(dyn Fn() -> bool + Sync),
        record: &(dyn Fn() + Sync),
    ) -> Result<AuthOk, Refusal> {
        let user = p.user.filter(|u| !u.is_empty());
        let (pass, token) = (p.pass, p.token);
        if let Some(name) = &self.no_auth_user
            && p.is_empty()
            && !self.tls_map
        {
            let u = self
                .nkeys
                .get(name)
                .or_else(|| match &self.mode {
                    Mode::Users(m) => m.get(name),
                    _ => None,
                })
                .ok_or(REASON_MISSING)?;
            return Ok(self.ok_user(u, AuthMethod::NoAuthUser));
        }
        if let Some(key) = p.nkey.filter(|k| !k.is_empty())
            && !self.nkeys.is_empty()
        {
            return self.check_nkey(key, p).map_err(Refusal::from);
        }
        match &self.mode {
            Mode::Open => Ok(AuthOk {
                user: None,
                method: AuthMethod::None,
                permissions: None,
                account: None,
                jwt: None,
            }),
            Mode::Operator(store) => operator::check_jwt(store, p, p.peer)
                .map(|(mut ok, grant)| {
                    ok.jwt = Some(Arc::new(grant));
                    ok
                })
                .map_err(Refusal::from),
            Mode::Token(secret) => {
                let given = token.filter(|t| !t.is_empty()).ok_or(REASON_MISSING)?;
                let verdict = secret
                    .verify_if(given, &self.pool, gate)
                    .await
                    .ok_or(REASON_BANNED)?;
                if verdict.ok {
                    return Ok(AuthOk {
                        user: None,
                        method: AuthMethod::Token,
                        permissions: None,
                        account: None,
                        jwt: None,
                    });
                }
                record();
                Err(Refusal {
                    reason: REASON_BAD_TOKEN,
                    ran_bcrypt: secret.is_bcrypt(),
                    recorded: true,
                })
            }
            _ if self.tls_map => self.map_certificate(tls_identity).map_err(Refusal::from),
            Mode::Single(u) => {
                let given_user = user.ok_or(REASON_MISSING)?;
                let given_pass = pass.unwrap_or("");
                // Check the password whatever the user name, so a wrong
                // name answers no faster than a wrong password.
                let name_ok = ct_eq(u.name.as_bytes(), given_user.as_bytes());
                let (pass_ok, ran_bcrypt, _worker) =
                    self.check_password(u, given_pass, gate).await?;
                if name_ok && pass_ok {
                    return Ok(self.ok_user(u, AuthMethod::UserPassword));
                }
                record();
                Err(Refusal {
                    recorded: true,
                    reason: if name_ok {
                        REASON_BAD_PASSWORD
                    } else {
                        REASON_UNKNOWN_USER
                    },
                    ran_bcrypt,
                })
            }
            Mode::Users(map) => {
                let given_user = user.ok_or(REASON_MISSING)?;
                let given_pass = pass.unwrap_or("");
                let u = map.get(given_user).ok_or(REASON_UNKNOWN_USER)?;
                if u.password.is_none() {
                    return Err(REASON_NO_PASSWORD.into());
                }
                let (ok, ran_bcrypt, _worker) = self.check_password(u, given_pass, gate).await?;
                if ok {
                    return Ok(self.ok_user(u, AuthMethod::UserPassword));
                }
                record();
                Err(Refusal {
                    recorded: true,
                    reason: REASON_BAD_PASSWORD,
                    ran_bcrypt,
                })
            }
        }
    }

    /// (matches, bcrypt was run, the verdict holding its worker); a
    /// refusal when the gate said no.
    async fn check_password(
        &self,
        u: &User,
        given: &str,
        gate: &(dyn Fn() -> bool + Sync),
    ) -> Result<(bool, bool, Option<Verdict>), Refusal> {
        match &u.password {
            Some(s) => match s.verify_if(given, &self.pool, gate).await {
                Some(v) => Ok((v.ok, s.is_bcrypt(), Some(v))),
                None => Err(REASON_BANNED.into()),
            },
            None => Ok((false, false, None)),
        }
    }

    /// Spend a dummy bcrypt verification at `cost` (a failure that did not
    /// run one answers no faster than one that did).
    async fn equalize(&self, cost: Option<u32>) {
        if let Some(c) = cost {
            let dummy: Arc<str> = Arc::from(dummy_bcrypt_hash(c).as_str());
            let _ = self.pool.verify("", dummy).await;
        }
    }

    fn ok_user(&self, u: &User, method: AuthMethod) -> AuthOk {
        AuthOk {
            user: Some(u.name.clone()),
            method,
            permissions: u.permissions.clone(),
            account: u.account.clone(),
            jwt: None,
        }
    }

    /// An nkey login: the key must be a configured user and `sig` its
    /// Ed25519 signature of this connection's nonce (base64url, standard
    /// base64 accepted, as nats-server does).
    fn check_nkey(&self, key: &str, p: &Presented<'_>) -> Result<AuthOk, &'static str> {
        let u = self.nkeys.get(key).ok_or(REASON_UNKNOWN_NKEY)?;
        let nonce = p.nonce.ok_or(REASON_BAD_SIGNATURE)?;
        let sig = p.sig.filter(|s| !s.is_empty()).ok_or(REASON_NO_SIGNATURE)?;
        if !verify_nonce_signature(key, nonce.as_bytes(), sig) {
            return Err(REASON_BAD_SIGNATURE);
        }
        Ok(self.ok_user(u, AuthMethod::Nkey))
    }

    fn method_for(&self, p: &Presented<'_>) -> AuthMethod {
        if p.nkey.is_some_and(|k| !k.is_empty()) && !self.nkeys.is_empty() {
            AuthMethod::Nkey
        } else if self.no_auth_user.is_some() && p.is_empty() && !self.tls_map {
            AuthMethod::NoAuthUser
        } else {
            self.method()
        }
    }
}

/// Does `sig` (base64url or standard base64) verify as `key`'s Ed25519
/// signature of `data`?
pub fn verify_nonce_signature(key: &str, data: &[u8], sig: &str) -> bool {
    let decoded = data_encoding::BASE64URL_NOPAD
        .decode(sig.as_bytes())
        .or_else(|_| data_encoding::BASE64.decode(sig.as_bytes()))
        .or_else(|_| data_encoding::BASE64URL.decode(sig.as_bytes()));
    let Ok(sig) = decoded else {
        return false;
    };
    match nkeys::KeyPair::from_public_key(key) {
        Ok(kp) => kp.verify(data, &sig).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
