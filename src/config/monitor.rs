//! rnats's `monitor_auth { ... }` block.

use std::path::PathBuf;

use super::parser::{ConfigError, Spanned};
use super::secret::Secret;
use super::value::{self as conf, Context};

/// `monitor_auth { user, password, token, ca_file, healthz_open }`:
/// rnats-specific protection for the monitoring endpoints. `password` and
/// `token` may be bcrypt hashes. `ca_file` makes the HTTPS port demand a
/// client certificate from that CA (the plain port cannot, so `ca_file`
/// alone is refused beside a plain `http_port`, in `Options::validate`).
/// `/healthz` stays open for probes unless `healthz_open: false`.
#[derive(Debug, Clone)]
pub struct MonitorAuth {
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub healthz_open: bool,
}

impl MonitorAuth {
    pub fn from_config(v: &Spanned, cx: &mut Context) -> Result<MonitorAuth, ConfigError> {
        let map = conf::map(v, "monitor_auth")?;
        let mut m = MonitorAuth {
            user: None,
            password: None,
            token: None,
            ca_file: None,
            healthz_open: true,
        };
        let secret = |val: &Spanned, key: &str| {
            Secret::parse(&conf::string(val, key)?)
                .map_err(|e| conf::err(val, format!("\"{key}\": {e}")))
        };
        for (key, val) in map {
            let lk = key.to_ascii_lowercase();
            cx.record(format!("monitor_auth.{lk}"), val);
            match lk.as_str() {
                "user" | "username" => m.user = Some(conf::string(val, &lk)?),
                "password" | "pass" => m.password = Some(secret(val, &lk)?),
                "token" => m.token = Some(secret(val, &lk)?),
                "ca_file" => m.ca_file = Some(conf::path(val, &lk)?),
                "healthz_open" => m.healthz_open = conf::boolean(val, &lk)?,
                _ => cx.unknown(Some("monitor_auth"), key, val)?,
            }
        }
        m.check().map_err(|e| conf::err(v, e))?;
        Ok(m)
    }

    /// Rules between the fields (also for options built in code).
    pub fn check(&self) -> Result<(), String> {
        if self.user.as_deref() == Some("") {
            return Err("monitor_auth: empty user name".into());
        }
        if self.user.is_some() != self.password.is_some() {
            return Err("monitor_auth needs both user and password".into());
        }
        if self.user.is_none() && self.token.is_none() && self.ca_file.is_none() {
            return Err("monitor_auth needs user/password, token or ca_file".into());
        }
        Ok(())
    }
}
