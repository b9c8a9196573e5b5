//! Server options: defaults, the nats-server configuration file, and
//! command-line overrides (applied by the binary after loading the file).
//!
//! The configuration fails closed, like nats-server: a key nobody knows is
//! an error (`unknown field "x"`), and so is a key nats-server knows but
//! rnats does not implement, except the short allow-list in [`keys`]
//! whose absence cannot widen access. Values are read by [`value`] alone.
//!
//! This module is plain data and parsing: it depends on neither
//! `crate::auth` nor `crate::tls` (they depend on it).

pub mod accounts;
pub mod auth;
pub mod cluster;
pub mod keys;
pub mod mappings;
mod monitor;
pub mod operator;
pub mod parser;
mod secret;
pub mod tls;
mod validate;
pub mod value;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use accounts::AccountConfig;
pub use auth::{AuthConfig, AuthLimits};
pub use cluster::{ClusterOptions, RouteAuth, RouteUrl};
pub use monitor::MonitorAuth;
pub use parser::ConfigError;
pub use secret::Secret;
pub use tls::TlsOptions;
pub use value::{Context, MAX_DURATION, Positions, parse_duration, parse_size};

use parser::{Map, Parsed, Spanned, Value};
use value as conf;

/// nats-server's defaults (and what a 0 in the file falls back to).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(120);
pub const DEFAULT_PING_MAX: u64 = 2;
pub const DEFAULT_WRITE_DEADLINE: Duration = Duration::from_secs(10);
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;
/// The largest `max_control_line` rnats accepts. A control line carries a
/// subject of up to half as many tokens, and the subscription trie matches
/// and removes recursively, one level per token: this bound keeps that
/// recursion far inside a worker thread's stack (a test in
/// `router::sublist` runs it on half of tokio's 2 MiB). nats-server
/// accepts up to 2 GiB.
pub const MAX_CONTROL_LINE_CAP: usize = 8 * 1024;
pub const DEFAULT_MAX_PENDING: usize = 64 * 1024 * 1024;
pub const DEFAULT_LAME_DUCK_DURATION: Duration = Duration::from_secs(120);
pub const DEFAULT_LAME_DUCK_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// nats-server refuses a shorter `lame_duck_duration` in a file (options
/// built in code, e.g. by tests, may use shorter ones).
pub const MIN_LAME_DUCK_DURATION: Duration = Duration::from_secs(30);
/// `busy_poll`: long enough to cover a client's turn in a request/reply
/// exchange on loopback (p99 was best at 60–200 µs, measured).
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(100);

/// Largest `max_payload` (nats-server warns above it; rnats refuses).
pub const MAX_PAYLOAD_LIMIT: usize = 64 * 1024 * 1024;

/// Defaults follow nats-server v2.15.1.
#[derive(Debug, Clone)]
pub struct Options {
    pub config_file: Option<PathBuf>,
    /// Every file the configuration was read from (the file and its
    /// includes, canonical paths).
    pub config_files: Vec<PathBuf>,
    /// rnats's `watch_config`: how often to check the configuration files
    /// (and the TLS files they name) for a change, which reloads as SIGHUP
    /// does. Zero: off (the default).
    pub watch_config: Duration,
    pub server_name: String,
    pub host: String,
    pub port: i32,
    pub http_host: String,
    pub http_port: i32,
    pub https_port: i32,
    pub max_payload: usize,
    pub max_control_line: usize,
    pub max_connections: usize,
    /// 0 means unlimited.
    pub max_subscriptions: usize,
    pub max_pending: usize,
    pub write_deadline: Duration,
    /// Never zero once validated (a zero in the file means the default).
    pub ping_interval: Duration,
    pub ping_max: u64,
    /// How long a new client has to send CONNECT (auth timeout in nats-server).
    pub auth_timeout: Duration,
    /// Lame duck mode: how long to take closing clients (`lame_duck_duration`).
    pub lame_duck_duration: Duration,
    /// Lame duck mode: how long to wait after stopping the listener before
    /// starting to close clients; always less than `lame_duck_duration`.
    pub lame_duck_grace_period: Duration,
    pub debug: bool,
    pub trace: bool,
    pub logtime: bool,
    /// Log JSON lines instead of nats-server's text format.
    pub log_json: bool,
    pub log_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// Literal-token shards per account (plus one wildcard shard).
    pub router_shards: usize,
    /// rnats's `busy_poll`: how long a worker thread that ran out of work
    /// watches the sockets before it sleeps (0: off). See `busy_poll`.
    pub busy_poll: Duration,
    /// Credentials (and, on HTTPS, a client-certificate CA) required by the
    /// monitoring endpoints. nats-server's monitoring has no authentication.
    pub monitor_auth: Option<MonitorAuth>,
    /// Warnings found while loading (ignored keys, odd values), each
    /// starting with `FILE:LINE:COL`.
    pub warnings: Vec<String>,
    /// The `authorization` block (or `--user`/`--pass`/`--auth`).
    pub auth: AuthConfig,
    /// The `accounts` block (their users log in beside `auth`'s).
    pub accounts: Vec<AccountConfig>,
    /// Top-level `mappings`: subject mappings of the global account.
    pub mappings: Option<std::sync::Arc<crate::account::mapping::MappingTable>>,
    /// `no_auth_user`: who a client without credentials logs in as.
    pub no_auth_user: Option<String>,
    /// `system_account` (default `$SYS`; in operator mode the operator
    /// JWT's).
    pub system_account: Option<String>,
    /// `operator`: trusted operators (operator/JWT mode).
    pub trusted_operators: Vec<operator::TrustedOperator>,
    /// `trusted_keys`: operator public keys trusted without a JWT.
    pub trusted_keys: Vec<String>,
    /// `resolver`: where account JWTs come from.
    pub resolver: Option<operator::ResolverConfig>,
    /// `resolver_preload`: account public key → account JWT.
    pub resolver_preload: Vec<(String, String)>,
    /// The `tls` block (or the `--tls*` flags); `None` means plain TCP.
    pub tls: Option<TlsOptions>,
    /// rnats's `auth_limits` block: failed-login bans and connection rate.
    pub auth_limits: AuthLimits,
    /// The `cluster` block (or `--cluster`/`--routes`...): the route
    /// listener and the routes to solicit. `None`: no clustering.
    pub cluster: Option<ClusterOptions>,
    /// Where each option was set in the file, for [`Options::validate`].
    pub positions: Positions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config_file: None,
            config_files: Vec::new(),
            watch_config: Duration::ZERO,
            server_name: String::new(),
            host: "0.0.0.0".into(),
            port: 4222,
            http_host: "0.0.0.0".into(),
            http_port: 0,
            https_port: 0,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_connections: 64 * 1024,
            max_subscriptions: 0,
            max_pending: DEFAULT_MAX_PENDING,
            write_deadline: DEFAULT_WRITE_DEADLINE,
            busy_poll: DEFAULT_BUSY_POLL,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_max: DEFAULT_PING_MAX,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            lame_duck_duration: DEFAULT_LAME_DUCK_DURATION,
            lame_duck_grace_period: DEFAULT_LAME_DUCK_GRACE_PERIOD,
            debug: false,
            trace: false,
            logtime: true,
            log_json: false,
            log_file: None,
            pid_file: None,
            router_shards: 4,
            monitor_auth: None,
            warnings: Vec::new(),
            auth: AuthConfig::default(),
            accounts: Vec::new(),
            mappings: None,
            no_auth_user: None,
            system_account: None,
            trusted_operators: Vec::new(),
            trusted_keys: Vec::new(),
            resolver: None,
            resolver_preload: Vec::new(),
            tls: None,
            auth_limits: AuthLimits::default(),
            cluster: None,
            positions: Positions::default(),
        }
    }
}

impl Options {
    /// Load a configuration file over the defaults and [`validate`] it.
    ///
    /// [`validate`]: Options::validate
    pub fn from_file(path: &Path) -> Result<Options, ConfigError> {
        let opts = Options::read_file(path)?;
        opts.validate()?;
        Ok(opts)
    }

    /// Load a configuration file over the defaults without the
    /// whole-configuration rules, for callers that change the options
    /// further (command-line flags) and must then call
    /// [`Options::validate`] themselves.
    pub fn read_file(path: &Path) -> Result<Options, ConfigError> {
        let parsed = parser::parse_file_full(path)?;
        let mut opts = Options {
            config_file: Some(path.to_path_buf()),
            config_files: parsed.files.clone(),
            ..Options::default()
        };
        opts.apply_parsed(&parsed)?;
        Ok(opts)
    }

    /// Apply a parsed top-level map (no variable information: every key
    /// that is not an option is an error). Does not [`validate`].
    ///
    /// [`validate`]: Options::validate
    pub fn apply(&mut self, map: &Map) -> Result<(), ConfigError> {
        self.apply_with(map, Context::default())
    }

    /// Apply a parsed file; keys that only served as `$variables` are not
    /// reported as unknown (as in nats-server). Does not validate.
    pub fn apply_parsed(&mut self, parsed: &Parsed) -> Result<(), ConfigError> {
        self.apply_with(&parsed.map, Context::new(parsed.used_vars.clone()))
    }

    fn apply_with(&mut self, map: &Map, mut cx: Context) -> Result<(), ConfigError> {
        let result = map
            .iter()
            .try_for_each(|(key, v)| self.apply_key(key, v, &mut cx));
        self.warnings.append(&mut cx.warnings);
        self.positions = cx.positions;
        result
    }

    fn apply_key(&mut self, key: &str, v: &Spanned, cx: &mut Context) -> Result<(), ConfigError> {
        let k = key.to_ascii_lowercase();
        match k.as_str() {
            "listen" => {
                let (h, p) = conf::host_port(v, &k)?;
                if let Some(h) = h {
                    self.host = h;
                }
                self.port = p;
                cx.record("port", v);
            }
            "host" | "net" | "addr" => self.host = conf::string(v, &k)?,
            "port" => {
                self.port = conf::port(v, &k)?;
                cx.record("port", v);
            }
            "server_name" => {
                let name = conf::string(v, &k)?;
                if name.contains(' ') {
                    return Err(conf::err(v, "server name cannot contain spaces"));
                }
                self.server_name = name;
            }
            "http" | "monitor" => {
                let (h, p) = conf::host_port(v, &k)?;
                if let Some(h) = h {
                    self.http_host = h;
                }
                self.http_port = p;
                cx.record("http_port", v);
            }
            "http_port" | "monitor_port" => {
                self.http_port = conf::port(v, &k)?;
                cx.record("http_port", v);
            }
            "https" => {
                let (h, p) = conf::host_port(v, &k)?;
                if let Some(h) = h {
                    self.http_host = h;
                }
                self.https_port = p;
                cx.record("https_port", v);
            }
            "https_port" => {
                self.https_port = conf::port(v, &k)?;
                cx.record("https_port", v);
            }
            "http_host" => self.http_host = conf::string(v, &k)?,
            "max_payload" => {
                self.max_payload = size_or_default(v, &k, DEFAULT_MAX_PAYLOAD, cx)?;
                cx.record("max_payload", v);
            }
            "max_control_line" => {
                let n = size_or_default(v, &k, DEFAULT_MAX_CONTROL_LINE, cx)?;
                // nats-server keeps it in an int32.
                if n > i32::MAX as usize {
                    return Err(conf::err(v, format!("{k} value is too big")));
                }
                self.max_control_line = n;
            }
            "max_pending" => {
                self.max_pending = size_or_default(v, &k, DEFAULT_MAX_PENDING, cx)?;
                cx.record("max_pending", v);
            }
            "max_connections" | "max_conn" => self.max_connections = conf::size(v, &k)?,
            "max_subscriptions" | "max_subs" => self.max_subscriptions = conf::size(v, &k)?,
            "write_deadline" => {
                self.write_deadline = timer(v, &k, DEFAULT_WRITE_DEADLINE, cx)?;
                cx.record("write_deadline", v);
            }
            "watch_config" => {
                self.watch_config = conf::duration(v, &k)?;
                cx.record("watch_config", v);
            }
            "busy_poll" => {
                self.busy_poll = conf::duration(v, &k)?;
                cx.record("busy_poll", v);
            }
            "ping_interval" => {
                self.ping_interval = timer(v, &k, DEFAULT_PING_INTERVAL, cx)?;
                cx.record("ping_interval", v);
            }
            "ping_max" => {
                self.ping_max = conf::uint(v, &k)?;
                if self.ping_max == 0 {
                    // nats-server's meaning of 0 (its setBaselineOptions).
                    cx.warn(v, "ping_max of 0 means the default (2), as in nats-server");
                    self.ping_max = DEFAULT_PING_MAX;
                }
            }
            "lame_duck_duration" => {
                let d = duration_string(v, &k)?;
                if d < MIN_LAME_DUCK_DURATION {
                    return Err(conf::err(
                        v,
                        format!(
                            "invalid lame_duck_duration of {}, minimum is 30 seconds",
                            fmt_duration(d)
                        ),
                    ));
                }
                self.lame_duck_duration = d;
                cx.record("lame_duck_duration", v);
            }
            "lame_duck_grace_period" => {
                let d = duration_string(v, &k)?;
                // As nats-server: 0 means the default.
                self.lame_duck_grace_period = if d.is_zero() {
                    DEFAULT_LAME_DUCK_GRACE_PERIOD
                } else {
                    d
                };
                cx.record("lame_duck_grace_period", v);
            }
            "debug" => self.debug = conf::boolean(v, &k)?,
            "trace" => self.trace = conf::boolean(v, &k)?,
            "logtime" => self.logtime = conf::boolean(v, &k)?,
            "log_json" => self.log_json = conf::boolean(v, &k)?,
            "log_file" | "logfile" => self.log_file = Some(conf::path(v, &k)?),
            "pid_file" | "pidfile" => self.pid_file = Some(conf::path(v, &k)?),
            "authorization" => {
                cx.record("authorization", v);
                let auth = AuthConfig::from_config(v, cx)?;
                // A zero timeout means the default, as in nats-server.
                if let Some(t) = auth.timeout.filter(|t| !t.is_zero()) {
                    self.auth_timeout = t;
                }
                self.auth = auth;
            }
            "accounts" => {
                cx.record("accounts", v);
                self.accounts = accounts::parse_accounts(v, cx)?;
            }
            "mappings" | "maps" => {
                cx.record("mappings", v);
                self.mappings = Some(mappings::parse_mappings(v, cx)?);
            }
            "no_auth_user" => {
                cx.record("no_auth_user", v);
                self.no_auth_user = Some(conf::string(v, &k)?);
            }
            "system_account" | "system" => {
                cx.record("system_account", v);
                self.system_account = Some(conf::string(v, &k)?);
            }
            "operator" | "operators" | "root" | "roots" | "root_operator" | "root_operators" => {
                cx.record("operator", v);
                self.trusted_operators = operator::parse_operators(v)?;
            }
            "trusted" | "trusted_keys" => {
                cx.record("trusted_keys", v);
                self.trusted_keys = operator::parse_trusted_keys(v)?;
            }
            "resolver" | "account_resolver" | "accounts_resolver" => {
                cx.record("resolver", v);
                self.resolver = Some(operator::parse_resolver(v, cx)?);
            }
            "resolver_preload" => {
                cx.record("resolver_preload", v);
                self.resolver_preload = operator::parse_preload(v)?;
            }
            "tls" => {
                cx.record("tls", v);
                self.tls = Some(TlsOptions::parse_block(v, cx)?);
            }
            "auth_limits" => {
                cx.record("auth_limits", v);
                self.auth_limits = AuthLimits::from_config(v, cx)?;
            }
            "cluster" => {
                cx.record("cluster", v);
                self.cluster = Some(ClusterOptions::parse_block(v, cx)?);
            }
            "monitor_auth" => {
                cx.record("monitor_auth", v);
                self.monitor_auth = Some(MonitorAuth::from_config(v, cx)?);
            }
            _ => match keys::unimplemented(&k) {
                Some(keys::Unimplemented::Ignore(why)) => {
                    cx.warn(v, format!("\"{key}\" ignored: {why}"));
                }
                Some(keys::Unimplemented::Refuse(what)) => {
                    return Err(conf::err(
                        v,
                        format!("\"{key}\" is not supported by rnats yet ({what})"),
                    ));
                }
                None => cx.unknown(None, key, v)?,
            },
        }
        Ok(())
    }

    /// Every user the server knows: the `authorization` block's (in the
    /// global account) and each account's, with `no_auth_user`. Users with
    /// no permissions of their own get their account's default
    /// permissions (applied when parsed), else the `authorization`
    /// block's.
    pub fn effective_auth(&self) -> AuthConfig {
        let mut cfg = self.auth.clone();
        let default = cfg.default_permissions.clone();
        for a in &self.accounts {
            for u in &a.users {
                let mut u = u.clone();
                if u.permissions.is_none() {
                    u.permissions = default.clone();
                }
                cfg.users.push(u);
            }
            for n in &a.nkeys {
                let mut n = n.clone();
                if n.permissions.is_none() {
                    n.permissions = default.clone();
                }
                cfg.nkeys.push(n);
            }
        }
        cfg.no_auth_user = self.no_auth_user.clone();
        cfg
    }

    /// The system account's name: `system_account`, else in operator mode
    /// the first operator JWT's, else `$SYS`.
    pub fn system_account(&self) -> &str {
        if let Some(s) = self.system_account.as_deref() {
            return s;
        }
        self.trusted_operators
            .first()
            .map(|o| o.claims.nats.system_account.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(accounts::DEFAULT_SYSTEM_ACCOUNT)
    }

    /// Operator (JWT) mode: users come from JWTs signed by accounts the
    /// trusted operators signed.
    pub fn operator_mode(&self) -> bool {
        !self.trusted_operators.is_empty() || !self.trusted_keys.is_empty()
    }

    /// The files a change of which `watch_config` reloads for: the
    /// configuration files, then every certificate, key and CA file they
    /// name (a rotated certificate reaches new connections).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        // The file as named too: with a symlink (a Kubernetes ConfigMap)
        // the canonical path is the old target.
        let mut files: Vec<PathBuf> = self.config_file.iter().cloned().collect();
        files.extend(self.config_files.iter().cloned());
        let tls = [
            self.tls.as_ref(),
            self.cluster.as_ref().and_then(|c| c.tls.as_ref()),
        ];
        for t in tls.into_iter().flatten() {
            files.push(t.cert_file.clone());
            files.push(t.key_file.clone());
            files.extend(t.ca_file.clone());
        }
        files.extend(self.monitor_auth.as_ref().and_then(|m| m.ca_file.clone()));
        files.retain(|f| !f.as_os_str().is_empty());
        files.dedup();
        files
    }

    /// The configuration file's name, for errors that have no position.
    pub(crate) fn config_name(&self) -> String {
        self.config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

/// `write_deadline` and `ping_interval`: a duration where 0 means the
/// default (nats-server's setBaselineOptions; a zero period would also
/// panic tokio's interval timer), with nats-server's warning for a bare
/// number of seconds.
fn timer(
    v: &Spanned,
    key: &str,
    default: Duration,
    cx: &mut Context,
) -> Result<Duration, ConfigError> {
    let d = timer_value(v, key, cx)?;
    if d.is_zero() {
        cx.warn(
            v,
            format!(
                "{key} of 0 means the default ({}), as in nats-server",
                fmt_duration(default)
            ),
        );
        return Ok(default);
    }
    Ok(d)
}

/// A timer as nats-server's parseDuration reads it: a duration string, or
/// integer seconds with its warning; a float fails there, and here too,
/// pointing at the string form.
fn timer_value(v: &Spanned, key: &str, cx: &mut Context) -> Result<Duration, ConfigError> {
    if let Value::Float(f) = v.value {
        return Err(conf::err(
            v,
            format!("\"{key}\" expects a duration string such as \"{f}s\", got float"),
        ));
    }
    let d = conf::duration(v, key)?;
    if matches!(v.value, Value::Int(_)) {
        cx.warn(v, format!("{key} should be converted to a duration"));
    }
    Ok(d)
}

/// Keys nats-server only takes as duration strings (`"2m"`); a bare
/// number is refused there too.
fn duration_string(v: &Spanned, key: &str) -> Result<Duration, ConfigError> {
    if v.as_str().is_none() {
        return Err(conf::err(
            v,
            format!(
                "\"{key}\" expects a duration string such as \"2m\", got {}",
                v.value.type_name()
            ),
        ));
    }
    conf::duration(v, key)
}

/// A size where 0 means the default, as nats-server's setBaselineOptions
/// has it for max_payload, max_control_line and max_pending.
fn size_or_default(
    v: &Spanned,
    key: &str,
    default: usize,
    cx: &mut Context,
) -> Result<usize, ConfigError> {
    let n = conf::size(v, key)?;
    if n == 0 {
        cx.warn(
            v,
            format!("{key} of 0 means the default ({default}), as in nats-server"),
        );
        return Ok(default);
    }
    Ok(n)
}

/// Go's way of printing a duration (`2m0s`, `10s`, `500ms`), for messages
/// that mirror nats-server's.
pub fn fmt_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        let n = d.as_nanos();
        return if n.is_multiple_of(1_000_000) {
            format!("{}ms", n / 1_000_000)
        } else if n.is_multiple_of(1_000) {
            format!("{}µs", n / 1_000)
        } else {
            format!("{n}ns")
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = d.subsec_nanos();
    let s = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:09}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
