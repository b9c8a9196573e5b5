//! Server options: defaults, the nats-server configuration file, and
//! command-line overrides (applied by the binary after loading the file).

pub mod parser;

use std::path::{Path, PathBuf};
use std::time::Duration;

use parser::{ConfigError, Map, Spanned, Value};

/// Defaults follow nats-server v2.15.1.
#[derive(Debug, Clone)]
pub struct Options {
    pub config_file: Option<PathBuf>,
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
    pub ping_interval: Duration,
    pub ping_max: u64,
    /// How long a new client has to send CONNECT (auth timeout in nats-server).
    pub auth_timeout: Duration,
    pub debug: bool,
    pub trace: bool,
    pub logtime: bool,
    /// Log JSON lines instead of nats-server's text format.
    pub log_json: bool,
    pub log_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// Literal-token shards per account (plus one wildcard shard).
    pub router_shards: usize,
    /// Credentials (and, on HTTPS, a client-certificate CA) required by the
    /// monitoring endpoints. nats-server's monitoring has no authentication.
    pub monitor_auth: Option<MonitorAuth>,
    /// Warnings found while loading (unknown keys, JetStream).
    pub warnings: Vec<String>,
    /// The `authorization` block (or `--user`/`--pass`/`--auth`).
    pub auth: crate::auth::AuthConfig,
    /// The `tls` block (or the `--tls*` flags); `None` means plain TCP.
    pub tls: Option<crate::tls::TlsOptions>,
    /// rnats's `auth_limits` block: failed-login bans and connection rate.
    pub auth_limits: crate::auth::AuthLimits,
    /// Lame duck mode: clients are closed spread over this long...
    pub lame_duck_duration: Duration,
    /// ...after first waiting this long.
    pub lame_duck_grace_period: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config_file: None,
            server_name: String::new(),
            host: "0.0.0.0".into(),
            port: 4222,
            http_host: "0.0.0.0".into(),
            http_port: 0,
            https_port: 0,
            max_payload: 1024 * 1024,
            max_control_line: 4096,
            max_connections: 64 * 1024,
            max_subscriptions: 0,
            max_pending: 64 * 1024 * 1024,
            write_deadline: Duration::from_secs(10),
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            auth_timeout: Duration::from_secs(2),
            debug: false,
            trace: false,
            logtime: true,
            log_json: false,
            log_file: None,
            pid_file: None,
            router_shards: 4,
            monitor_auth: None,
            warnings: Vec::new(),
            auth: crate::auth::AuthConfig::default(),
            tls: None,
            auth_limits: crate::auth::AuthLimits::default(),
            lame_duck_duration: Duration::from_secs(120),
            lame_duck_grace_period: Duration::from_secs(10),
        }
    }
}

impl Options {
    /// Load a configuration file over the defaults.
    pub fn from_file(path: &Path) -> Result<Options, ConfigError> {
        let map = parser::parse_file(path)?;
        let mut opts = Options {
            config_file: Some(path.to_path_buf()),
            ..Options::default()
        };
        opts.apply(&map)?;
        Ok(opts)
    }

    /// Apply a parsed top-level map.
    pub fn apply(&mut self, map: &Map) -> Result<(), ConfigError> {
        for (key, v) in map {
            match key.to_ascii_lowercase().as_str() {
                "listen" => {
                    let (h, p) = host_port(v)?;
                    if let Some(h) = h {
                        self.host = h;
                    }
                    self.port = p;
                }
                "host" | "net" | "addr" => self.host = string(v)?,
                "port" => self.port = int(v)? as i32,
                "server_name" => self.server_name = string(v)?,
                "http" | "monitor" => {
                    let (h, p) = host_port(v)?;
                    if let Some(h) = h {
                        self.http_host = h;
                    }
                    self.http_port = p;
                }
                "http_port" | "monitor_port" => self.http_port = int(v)? as i32,
                "https" => {
                    let (h, p) = host_port(v)?;
                    if let Some(h) = h {
                        self.http_host = h;
                    }
                    self.https_port = p;
                }
                "https_port" => self.https_port = int(v)? as i32,
                "http_host" => self.http_host = string(v)?,
                "max_payload" => self.max_payload = size(v)?,
                "max_control_line" => self.max_control_line = size(v)?,
                "max_connections" | "max_conn" => self.max_connections = size(v)?,
                "max_subscriptions" | "max_subs" => self.max_subscriptions = size(v)?,
                "max_pending" => self.max_pending = size(v)?,
                "write_deadline" => self.write_deadline = duration(v)?,
                "ping_interval" => self.ping_interval = duration(v)?,
                "ping_max" => self.ping_max = int(v)? as u64,
                "debug" => self.debug = boolean(v)?,
                "trace" => self.trace = boolean(v)?,
                "logtime" => self.logtime = boolean(v)?,
                "log_json" => self.log_json = boolean(v)?,
                "log_file" | "logfile" => self.log_file = Some(string(v)?.into()),
                "pid_file" | "pidfile" => self.pid_file = Some(string(v)?.into()),
                "authorization" => self.apply_authorization(v)?,
                "tls" => self.tls = Some(crate::tls::TlsOptions::from_config(v)?),
                "auth_limits" => self.auth_limits = crate::auth::AuthLimits::from_config(v)?,
                "monitor_auth" => self.monitor_auth = Some(MonitorAuth::from_config(v)?),
                "lame_duck_duration" => self.lame_duck_duration = duration(v)?,
                "lame_duck_grace_period" => self.lame_duck_grace_period = duration(v)?,
                "jetstream" => self
                    .warnings
                    .push("JetStream is not part of rnats; the jetstream block is ignored".into()),
                _ => self.warnings.push(format!(
                    "{}:{}:{}: unknown configuration key \"{key}\" ignored",
                    v.pos.file, v.pos.line, v.pos.col
                )),
            }
        }
        if self.max_payload > 64 * 1024 * 1024 {
            return Err(ConfigError {
                file: self.config_name(),
                line: 0,
                col: 0,
                msg: "max_payload cannot exceed 64MB".into(),
            });
        }
        Ok(())
    }

    fn apply_authorization(&mut self, v: &Spanned) -> Result<(), ConfigError> {
        let auth = crate::auth::AuthConfig::from_config(v, &mut self.warnings)?;
        if let Some(t) = auth.timeout {
            self.auth_timeout = t;
        }
        self.auth = auth;
        Ok(())
    }

    fn config_name(&self) -> String {
        self.config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

/// `monitor_auth { user, password, token, ca_file, healthz_open }`:
/// rnats-specific protection for the monitoring endpoints. `password` and
/// `token` may be bcrypt hashes. `ca_file` makes the HTTPS port demand a
/// client certificate from that CA. `/healthz` stays open for probes
/// unless `healthz_open: false`.
#[derive(Debug, Clone)]
pub struct MonitorAuth {
    pub user: Option<String>,
    pub password: Option<crate::auth::Secret>,
    pub token: Option<crate::auth::Secret>,
    pub ca_file: Option<PathBuf>,
    pub healthz_open: bool,
}

impl MonitorAuth {
    fn from_config(v: &Spanned) -> Result<MonitorAuth, ConfigError> {
        let map = v
            .as_map()
            .ok_or_else(|| err(v, "monitor_auth must be a block"))?;
        let mut m = MonitorAuth {
            user: None,
            password: None,
            token: None,
            ca_file: None,
            healthz_open: true,
        };
        for (key, val) in map {
            match key.to_ascii_lowercase().as_str() {
                "user" | "username" => m.user = Some(string(val)?),
                "password" | "pass" => {
                    m.password =
                        Some(crate::auth::Secret::parse(&string(val)?).map_err(|e| err(val, e))?)
                }
                "token" => {
                    m.token =
                        Some(crate::auth::Secret::parse(&string(val)?).map_err(|e| err(val, e))?)
                }
                "ca_file" => m.ca_file = Some(string(val)?.into()),
                "healthz_open" => m.healthz_open = boolean(val)?,
                _ => return Err(err(val, format!("unknown monitor_auth key \"{key}\""))),
            }
        }
        if m.user.is_some() != m.password.is_some() {
            return Err(err(v, "monitor_auth needs both user and password"));
        }
        if m.user.is_none() && m.token.is_none() && m.ca_file.is_none() {
            return Err(err(v, "monitor_auth needs user/password, token or ca_file"));
        }
        Ok(m)
    }
}

fn err(v: &Spanned, msg: impl Into<String>) -> ConfigError {
    v.error(msg)
}

fn string(v: &Spanned) -> Result<String, ConfigError> {
    match &v.value {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        _ => Err(err(v, "expected a string")),
    }
}

fn int(v: &Spanned) -> Result<i64, ConfigError> {
    v.as_i64().ok_or_else(|| err(v, "expected an integer"))
}

fn size(v: &Spanned) -> Result<usize, ConfigError> {
    match &v.value {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        Value::Str(s) => parse_size(s).ok_or_else(|| err(v, format!("invalid size \"{s}\""))),
        _ => Err(err(v, "expected a non-negative size")),
    }
}

fn boolean(v: &Spanned) -> Result<bool, ConfigError> {
    v.as_bool().ok_or_else(|| err(v, "expected true or false"))
}

/// Durations are strings like "2s", "1m30s", "500ms" or a number of seconds.
fn duration(v: &Spanned) -> Result<Duration, ConfigError> {
    match &v.value {
        Value::Int(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
        Value::Float(f) if *f >= 0.0 => Ok(Duration::from_secs_f64(*f)),
        Value::Str(s) => {
            parse_duration(s).ok_or_else(|| err(v, format!("invalid duration \"{s}\"")))
        }
        _ => Err(err(v, "expected a duration")),
    }
}

fn host_port(v: &Spanned) -> Result<(Option<String>, i32), ConfigError> {
    match &v.value {
        Value::Int(p) => Ok((None, *p as i32)),
        Value::Str(s) => {
            let (h, p) = s
                .rsplit_once(':')
                .ok_or_else(|| err(v, format!("expected host:port, got \"{s}\"")))?;
            let port = p
                .parse()
                .map_err(|_| err(v, format!("invalid port in \"{s}\"")))?;
            let host = h.trim_start_matches('[').trim_end_matches(']');
            Ok(((!host.is_empty()).then(|| host.to_string()), port))
        }
        _ => Err(err(v, "expected host:port")),
    }
}

/// Go-style duration: a sequence of number+unit (h, m, s, ms, us, ns).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "h" => num * 3600.0,
            "m" => num * 60.0,
            "s" => num,
            "ms" => num / 1e3,
            "us" | "µs" => num / 1e6,
            "ns" => num / 1e9,
            _ => return None,
        };
        total += Duration::from_secs_f64(secs);
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// Sizes like "1MB", "64KB", "1024", as accepted on the command line.
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
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("2x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MB"), Some(1 << 20));
        assert_eq!(parse_size("64KB"), Some(64 << 10));
        assert_eq!(parse_size("1k"), Some(1000));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1XB"), None);
    }

    #[test]
    fn options_from_config_text() {
        let map = parser::parse_str(
            "port: 4333\nmax_payload: 2MB\nping_interval: \"5s\"\nwrite_deadline: 3\n\
             authorization { timeout: 1.5 }\nbogus_key: 1\n",
            "test.conf",
        )
        .unwrap();
        let mut o = Options::default();
        o.apply(&map).unwrap();
        assert_eq!(o.port, 4333);
        assert_eq!(o.max_payload, 2 << 20);
        assert_eq!(o.ping_interval, Duration::from_secs(5));
        assert_eq!(o.write_deadline, Duration::from_secs(3));
        assert_eq!(o.auth_timeout, Duration::from_millis(1500));
        assert_eq!(o.warnings.len(), 1);
        assert!(o.warnings[0].contains("bogus_key"), "{:?}", o.warnings);
        assert!(
            o.warnings[0].starts_with("test.conf:6:"),
            "{:?}",
            o.warnings
        );
    }

    #[test]
    fn security_blocks() {
        use crate::auth::conf::testing::{arr, i, map, s};
        let top = |k: &str, v| vec![(k.to_string(), v)];
        let mut o = Options::default();
        let mut m = top(
            "authorization",
            map(vec![
                ("timeout", i(3)),
                (
                    "users",
                    arr(vec![map(vec![("user", s("a")), ("password", s("b"))])]),
                ),
            ]),
        );
        m.extend(top(
            "tls",
            map(vec![("cert_file", s("c.pem")), ("key_file", s("k.pem"))]),
        ));
        m.extend(top("auth_limits", map(vec![("max_failures", i(4))])));
        o.apply(&m).unwrap();
        assert_eq!(o.auth_timeout, Duration::from_secs(3));
        assert_eq!(o.auth.users.len(), 1);
        assert!(o.auth.is_enabled());
        assert_eq!(
            o.tls.as_ref().map(|t| t.cert_file.clone()),
            Some("c.pem".into())
        );
        assert_eq!(o.auth_limits.max_failures, 4);
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);

        let bad = top("tls", map(vec![("cert_file", s("c.pem"))]));
        assert!(Options::default().apply(&bad).is_err());
    }

    #[test]
    fn security_blocks_from_text() {
        // The seed security document's example, bcrypt hash unquoted.
        let map = parser::parse_str(
            "listen: 127.0.0.1:4443\n\
             tls {\n  cert_file: \"./server-cert.pem\"\n  key_file: \"./server-key.pem\"\n  \
             timeout: 2\n}\n\
             authorization {\n  user: derek\n  \
             password: $2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG\n  \
             timeout: 1\n}\n",
            "sec.conf",
        )
        .unwrap();
        let mut o = Options::default();
        o.apply(&map).unwrap();
        assert_eq!(o.auth.user.as_deref(), Some("derek"));
        assert_eq!(
            o.auth.password.as_ref().and_then(|p| p.bcrypt_cost()),
            Some(11)
        );
        assert_eq!(o.auth_timeout, Duration::from_secs(1));
        let tls = o.tls.expect("tls");
        assert_eq!(tls.timeout, Duration::from_secs(2));
        assert_eq!(tls.key_file, std::path::PathBuf::from("./server-key.pem"));
    }

    #[test]
    fn bad_value_names_position() {
        let map = parser::parse_str("port: 1\nmax_payload: true\n", "x.conf").unwrap();
        let e = Options::default().apply(&map).unwrap_err();
        assert_eq!((e.line, e.file.as_str()), (2, "x.conf"));
    }
}
