//! Rules that involve more than one value, or the file system, checked
//! after the whole file is read and again after command-line flags are
//! applied. Options built in code (tests, embedders) go through the same
//! rules when the server starts, so nothing here may assume a file.

use std::path::Path;
use std::time::Duration;

use super::parser::ConfigError;
use super::{ClusterOptions, MAX_DURATION, MAX_PAYLOAD_LIMIT, Options, fmt_duration};

/// A worker spinning longer than this per park is burning a core, not
/// saving a wake-up.
const MAX_BUSY_POLL: Duration = Duration::from_millis(10);

/// Checking the configuration files more often than this only burns CPU.
const MIN_WATCH_CONFIG: Duration = Duration::from_millis(100);

impl Options {
    /// Check the options as a whole. Errors point at the option's place in
    /// the configuration file when it came from there.
    ///
    /// Refused: a `cluster` breaking [`ClusterOptions::check`] (or whose
    /// TLS files cannot be read), zero or over-long timers (a zero period
    /// panics tokio's interval, a zero deadline expires every write), lame
    /// duck grace not below the duration, `max_payload` above 64MB or above
    /// `max_pending`, a server name with spaces, ports outside -1..65535,
    /// `https_port` without `tls`, inconsistent `tls`/`authorization`/
    /// `auth_limits`/`monitor_auth` settings (among them a `ca_file`-only
    /// `monitor_auth` beside a plain `http_port`, which a client
    /// certificate cannot protect), and TLS or monitor CA files that cannot
    /// be read (reported now, not at the first connection that needs them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let timers: [(&str, Duration); 5] = [
            ("ping_interval", self.ping_interval),
            ("write_deadline", self.write_deadline),
            ("authorization.timeout", self.auth_timeout),
            ("lame_duck_duration", self.lame_duck_duration),
            ("lame_duck_grace_period", self.lame_duck_grace_period),
        ];
        for (key, d) in timers {
            // A zero grace period is meaningful (close clients at once).
            if d.is_zero() && key != "lame_duck_grace_period" {
                return Err(self.error_at(key, format!("{key} must be positive")));
            }
            if d > MAX_DURATION {
                return Err(self.error_at(key, format!("{key} is too long (at most 100 years)")));
            }
        }
        if !self.watch_config.is_zero() && self.watch_config < MIN_WATCH_CONFIG {
            return Err(self.error_at(
                "watch_config",
                format!(
                    "watch_config must be 0 (off) or at least {}",
                    fmt_duration(MIN_WATCH_CONFIG)
                ),
            ));
        }
        if self.busy_poll > MAX_BUSY_POLL {
            return Err(self.error_at(
                "busy_poll",
                format!(
                    "busy_poll is too long (at most {})",
                    fmt_duration(MAX_BUSY_POLL)
                ),
            ));
        }
        if self.lame_duck_grace_period >= self.lame_duck_duration {
            return Err(self.error_at(
                "lame_duck_grace_period",
                format!(
                    "lame duck grace period ({}) should be strictly lower than lame duck \
                     duration ({})",
                    fmt_duration(self.lame_duck_grace_period),
                    fmt_duration(self.lame_duck_duration)
                ),
            ));
        }
        if self.max_payload > MAX_PAYLOAD_LIMIT {
            return Err(self.error_at("max_payload", "max_payload cannot exceed 64MB".into()));
        }
        if self.max_payload > self.max_pending {
            return Err(self.error_at(
                "max_payload",
                format!(
                    "max_payload ({}) cannot be higher than max_pending ({})",
                    self.max_payload, self.max_pending
                ),
            ));
        }
        if self.max_control_line == 0 {
            return Err(self.error_at(
                "max_control_line",
                "max_control_line must be positive".into(),
            ));
        }
        if self.max_control_line > super::MAX_CONTROL_LINE_CAP {
            return Err(self.error_at(
                "max_control_line",
                format!(
                    "max_control_line ({}) cannot be higher than {} in rnats",
                    self.max_control_line,
                    super::MAX_CONTROL_LINE_CAP
                ),
            ));
        }
        if self.server_name.contains(' ') {
            return Err(self.error_at("server_name", "server name cannot contain spaces".into()));
        }
        for (key, p) in [
            ("port", self.port),
            ("http_port", self.http_port),
            ("https_port", self.https_port),
        ] {
            if !(-1..=65535).contains(&p) {
                return Err(self.error_at(key, format!("{key} {p} is not a valid port")));
            }
        }
        if self.https_port != 0 && self.tls.is_none() {
            return Err(self.error_at(
                "https_port",
                "https_port needs a tls block (the monitor uses the server certificate)".into(),
            ));
        }
        if let Some(tls) = &self.tls {
            tls.check().map_err(|m| self.error_at("tls", m))?;
            self.readable("tls.cert_file", "tls cert_file", &tls.cert_file)?;
            self.readable("tls.key_file", "tls key_file", &tls.key_file)?;
            if let Some(ca) = &tls.ca_file {
                self.readable("tls.ca_file", "tls ca_file", ca)?;
            }
        }
        if let Some(c) = &self.cluster {
            c.check().map_err(|(key, m)| self.error_at(&key, m))?;
            if let Some(t) = &c.tls {
                self.readable(
                    "cluster.tls.cert_file",
                    "cluster tls cert_file",
                    &t.cert_file,
                )?;
                self.readable("cluster.tls.key_file", "cluster tls key_file", &t.key_file)?;
                if let Some(ca) = &t.ca_file {
                    self.readable("cluster.tls.ca_file", "cluster tls ca_file", ca)?;
                }
            }
        }
        self.auth
            .check()
            .map_err(|m| self.error_at("authorization", format!("authorization: {m}")))?;
        let account_users = self
            .accounts
            .iter()
            .any(|a| !a.users.is_empty() || !a.nkeys.is_empty());
        if account_users && self.auth.user.is_some() {
            return Err(self.error_at(
                "accounts",
                "Can not have a single user/pass and accounts".into(),
            ));
        }
        if account_users && self.auth.token.is_some() {
            return Err(self.error_at("accounts", "Can not have a token and accounts".into()));
        }
        let static_system = if self.operator_mode() {
            None
        } else {
            self.system_account.as_deref()
        };
        super::accounts::check_accounts(&self.accounts, static_system)
            .map_err(|m| self.error_at("accounts", m))?;
        self.check_operator_mode()?;
        let key = if self.no_auth_user.is_some() {
            "no_auth_user"
        } else {
            "accounts"
        };
        self.effective_auth()
            .check()
            .map_err(|m| self.error_at(key, m))?;
        self.auth_limits
            .check()
            .map_err(|m| self.error_at("auth_limits", m))?;
        if let Some(m) = &self.monitor_auth {
            m.check().map_err(|e| self.error_at("monitor_auth", e))?;
            if let Some(ca) = &m.ca_file {
                self.readable("monitor_auth.ca_file", "monitor_auth ca_file", ca)?;
            }
            // A client certificate can only be asked for on the HTTPS
            // port: with ca_file alone the plain port would be wide open.
            if m.user.is_none() && m.token.is_none() && self.http_port != 0 {
                return Err(self.error_at(
                    "monitor_auth",
                    "monitor_auth: ca_file alone cannot protect the plain http_port (client \
                     certificates exist only on https_port); add user/password or token, or \
                     serve monitoring on https_port only"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Can the running server (started with `self`) take `new` on a
    /// reload? As in nats-server, the monitoring listeners cannot move
    /// (`config reload not supported for HTTPPort: old=8222, new=8223`);
    /// and the HTTPS port's client-certificate CA is fixed when its TLS
    /// acceptor is built, so `monitor_auth { ca_file }` cannot change
    /// either (a reload must never leave a port more open than the
    /// configuration says). Any change to `cluster` is refused
    /// ([`ClusterOptions::check_reload`]). `new` must already have passed
    /// [`validate`].
    ///
    /// [`validate`]: Self::validate
    pub fn check_reload(&self, new: &Options) -> Result<(), String> {
        let unsupported =
            |field: &str, old: &dyn std::fmt::Display, new: &dyn std::fmt::Display| {
                Err(format!(
                    "config reload not supported for {field}: old={old}, new={new}"
                ))
            };
        if self.http_host != new.http_host {
            return unsupported("HTTPHost", &self.http_host, &new.http_host);
        }
        if self.http_port != new.http_port {
            return unsupported("HTTPPort", &self.http_port, &new.http_port);
        }
        if self.https_port != new.https_port {
            return unsupported("HTTPSPort", &self.https_port, &new.https_port);
        }
        let ca = |o: &Options| {
            o.monitor_auth
                .as_ref()
                .and_then(|m| m.ca_file.as_ref())
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let (old_ca, new_ca) = (ca(self), ca(new));
        if old_ca != new_ca {
            return unsupported("monitor_auth.ca_file", &old_ca, &new_ca);
        }
        // Users and permissions reload; the accounts, their exports,
        // imports, limits and mappings are fixed at start.
        let shape = |o: &Options| {
            let mut v: Vec<_> = o
                .accounts
                .iter()
                .map(|a| {
                    (
                        a.name.clone(),
                        format!(
                            "{:?} {:?} {:?} {:?}",
                            a.exports, a.imports, a.limits, a.mappings
                        ),
                    )
                })
                .collect();
            v.sort();
            v
        };
        if shape(self) != shape(new) {
            return Err(
                "config reload not supported for accounts: their exports, imports, \
                 limits and mappings are fixed at start (users and permissions may change)"
                    .into(),
            );
        }
        if self.mappings != new.mappings {
            return Err("config reload not supported for mappings: they are fixed at start".into());
        }
        if self.operator_mode() != new.operator_mode() || self.resolver != new.resolver {
            return Err(
                "config reload not supported for operator mode or the account resolver".into(),
            );
        }
        // Routes come and go with the route actors' own configuration,
        // fixed at start for now.
        ClusterOptions::check_reload(self.cluster.as_ref(), new.cluster.as_ref())?;
        if self.system_account() != new.system_account() {
            return unsupported(
                "SystemAccount",
                &self.system_account(),
                &new.system_account(),
            );
        }
        Ok(())
    }

    /// nats-server's rules for operator mode (its validateTrustedOperators),
    /// and every preloaded account JWT signed by a trusted operator.
    fn check_operator_mode(&self) -> Result<(), ConfigError> {
        if !self.operator_mode() {
            if self.resolver.is_some() || !self.resolver_preload.is_empty() {
                return Err(self.error_at(
                    "resolver",
                    "resolver needs trusted operators (operator or trusted_keys)".into(),
                ));
            }
            return Ok(());
        }
        let at = |m: &str| self.error_at("operator", m.to_string());
        if self.resolver.is_none() {
            return Err(at("operators require an account resolver to be configured"));
        }
        if !self.accounts.is_empty() {
            return Err(at(
                "operators do not allow Accounts to be configured directly",
            ));
        }
        let a = &self.auth;
        if !a.users.is_empty() || !a.nkeys.is_empty() || a.user.is_some() || a.token.is_some() {
            return Err(at("operators do not allow users to be configured directly"));
        }
        if self.no_auth_user.is_some() {
            return Err(at("no_auth_user not compatible with Trusted Operator"));
        }
        if !self.trusted_operators.is_empty() && !self.trusted_keys.is_empty() {
            return Err(at(
                "conflicting options for 'TrustedKeys' and 'TrustedOperators'",
            ));
        }
        if let Some(sys) = &self.system_account {
            let named: Vec<&str> = self
                .trusted_operators
                .iter()
                .map(|o| o.claims.nats.system_account.as_str())
                .filter(|s| !s.is_empty())
                .collect();
            if !named.is_empty() && !named.contains(&sys.as_str()) {
                return Err(at(
                    "system_account in config and operator JWT must be identical",
                ));
            }
        }
        if matches!(
            self.resolver,
            Some(super::operator::ResolverConfig::Full { .. })
        ) && self.system_account().starts_with('$')
        {
            return Err(self.error_at(
                "resolver",
                "using nats based account resolver - the system account needs to be specified \
                 in configuration or the operator jwt"
                    .into(),
            ));
        }
        for (key, token) in &self.resolver_preload {
            let claims = crate::jwt::decode::<crate::jwt::AccountClaims>(token)
                .map_err(|e| self.error_at("resolver_preload", format!("{key}: {e}")))?;
            if !self.trusts_account_issuer(&claims.iss) {
                return Err(self.error_at(
                    "resolver_preload",
                    format!("account {key} is not signed by a trusted operator"),
                ));
            }
        }
        Ok(())
    }

    /// May `issuer` sign account JWTs: a trusted operator key (unless the
    /// operator demands signing keys) or one of an operator's signing keys.
    pub fn trusts_account_issuer(&self, issuer: &str) -> bool {
        self.trusted_keys.iter().any(|k| k == issuer)
            || self
                .trusted_operators
                .iter()
                .any(|o| o.claims.nats.did_sign(&o.claims.sub, issuer))
    }

    /// An error at `key`'s place in the file, or without a place when the
    /// value did not come from the file.
    fn error_at(&self, key: &str, msg: String) -> ConfigError {
        match self.positions.get(key) {
            Some(pos) => ConfigError::at(pos, msg),
            None => ConfigError {
                file: self.config_name(),
                line: 0,
                col: 0,
                msg,
            },
        }
    }

    /// The file must exist, be a regular file and be readable by us now.
    fn readable(&self, key: &str, what: &str, path: &Path) -> Result<(), ConfigError> {
        let result = std::fs::File::open(path).and_then(|f| {
            if f.metadata()?.is_file() {
                Ok(())
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        });
        result.map_err(|e| {
            self.error_at(
                key,
                format!("cannot read {what} \"{}\": {e}", path.display()),
            )
        })
    }
}
