//! Rules that involve more than one value, or the file system, checked
//! after the whole file is read and again after command-line flags are
//! applied. Options built in code (tests, embedders) go through the same
//! rules when the server starts, so nothing here may assume a file.

use std::path::Path;
use std::time::Duration;

use super::parser::ConfigError;
use super::{MAX_DURATION, MAX_PAYLOAD_LIMIT, Options, fmt_duration};

impl Options {
    /// Check the options as a whole. Errors point at the option's place in
    /// the configuration file when it came from there.
    ///
    /// Refused: zero or over-long timers (a zero period panics tokio's
    /// interval, a zero deadline expires every write), lame duck grace not
    /// below the duration, `max_payload` above 64MB or above `max_pending`,
    /// a server name with spaces, ports outside -1..65535, `https_port`
    /// without `tls`, inconsistent `tls`/`authorization`/`auth_limits`/
    /// `monitor_auth` settings, and TLS or monitor CA files that cannot be
    /// read (reported now, not at the first connection that needs them).
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
        self.auth
            .check()
            .map_err(|m| self.error_at("authorization", format!("authorization: {m}")))?;
        self.auth_limits
            .check()
            .map_err(|m| self.error_at("auth_limits", m))?;
        if let Some(m) = &self.monitor_auth {
            m.check().map_err(|e| self.error_at("monitor_auth", e))?;
            if let Some(ca) = &m.ca_file {
                self.readable("monitor_auth.ca_file", "monitor_auth ca_file", ca)?;
            }
        }
        Ok(())
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
