//! The `tls { ... }` block: option data, its parser, and the cipher suite,
//! curve and version names rnats accepts. Building the rustls
//! configuration from these options is `crate::tls`'s job; the name tables
//! are here so that a configuration test (`-t`) refuses a typo without
//! reaching for the crypto library.

use std::path::PathBuf;
use std::time::Duration;

use super::parser::{ConfigError, Spanned, Value};
use super::value::{self as conf, Context};

/// nats-server's default TLS handshake timeout (`tls_timeout` in /varz).
pub const DEFAULT_TLS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a `handshake_first: auto` server waits for a client's TLS
/// ClientHello before falling back to sending INFO first (nats-server's
/// default for "auto").
pub const DEFAULT_HANDSHAKE_FIRST_FALLBACK: Duration = Duration::from_millis(50);

/// The `tls { ... }` block (or the `--tls*` flags).
#[derive(Clone, Debug, PartialEq)]
pub struct TlsOptions {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CAs that client certificates must chain to (required by `verify`).
    pub ca_file: Option<PathBuf>,
    /// Require and verify a client certificate.
    pub verify: bool,
    /// Like `verify`, and map the certificate to a configured user.
    pub verify_and_map: bool,
    /// Handshake deadline.
    pub timeout: Duration,
    /// Start TLS before sending INFO (clients must use "TLS first").
    pub handshake_first: bool,
    /// With `handshake_first`, fall back to INFO-first if the client has not
    /// started a handshake within this delay (`handshake_first: auto` or a
    /// duration); `None` means TLS first is required.
    pub handshake_first_fallback: Option<Duration>,
    /// "1.2" or "1.3"; `None` means 1.2.
    pub min_version: Option<String>,
    pub cipher_suites: Vec<String>,
    pub curve_preferences: Vec<String>,
    /// Lower-case hex SHA-256 of allowed client certificates'
    /// SubjectPublicKeyInfo (nats-server's `pinned_certs`).
    pub pinned_certs: Vec<String>,
}

impl TlsOptions {
    /// Options with nats-server's defaults for a certificate and key.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> TlsOptions {
        TlsOptions {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            ca_file: None,
            verify: false,
            verify_and_map: false,
            timeout: DEFAULT_TLS_TIMEOUT,
            handshake_first: false,
            handshake_first_fallback: None,
            min_version: None,
            cipher_suites: Vec::new(),
            curve_preferences: Vec::new(),
            pinned_certs: Vec::new(),
        }
    }

    /// Must clients present a certificate?
    pub fn requires_client_cert(&self) -> bool {
        self.verify || self.verify_and_map
    }

    /// Parse a `tls { ... }` block on its own (no file around it).
    pub fn from_config(v: &Spanned) -> Result<TlsOptions, ConfigError> {
        TlsOptions::parse_block(v, &mut Context::default())
    }

    /// Parse a `tls { ... }` block of a file. File contents are not read
    /// here (that is `crate::tls::server_config`'s job; that the files are
    /// readable is checked by [`super::Options::validate`]) but every value
    /// is checked, so a configuration test (`-t`) catches typos in names
    /// and versions.
    pub fn parse_block(v: &Spanned, cx: &mut Context) -> Result<TlsOptions, ConfigError> {
        let o =
            TlsOptions::parse_block_with(v, cx, "tls", TlsOptions::new("", ""), &mut |_, _| {
                Ok(false)
            })?;
        o.check().map_err(|m| conf::err(v, m))?;
        Ok(o)
    }

    /// [`parse_block`](Self::parse_block) for a block at dotted `path`
    /// (positions are recorded as `{path}.{key}`), starting from `base`
    /// (whose certificate and key are replaced). `own(key, value)` sees
    /// every lower-cased key first and returns `true` when it has taken
    /// it: the route TLS block uses this for its keys and refusals. The
    /// caller runs [`check`](Self::check) (after its own rules).
    pub(crate) fn parse_block_with(
        v: &Spanned,
        cx: &mut Context,
        path: &str,
        base: TlsOptions,
        own: &mut dyn FnMut(&str, &Spanned) -> Result<bool, ConfigError>,
    ) -> Result<TlsOptions, ConfigError> {
        let map = conf::map(v, path)?;
        let mut cert = None;
        let mut key = None;
        let mut o = base;
        for (k, val) in map {
            let key_name = k.to_ascii_lowercase();
            let kn = key_name.as_str();
            cx.record(format!("{path}.{kn}"), val);
            if own(kn, val)? {
                continue;
            }
            match kn {
                "cert_file" => cert = Some(conf::path(val, kn)?),
                "key_file" => key = Some(conf::path(val, kn)?),
                "ca_file" => o.ca_file = Some(conf::path(val, kn)?),
                "verify" => o.verify = conf::boolean(val, kn)?,
                "verify_and_map" => o.verify_and_map = conf::boolean(val, kn)?,
                "timeout" => {
                    let t = conf::duration(val, kn)?;
                    // nats-server's setBaselineOptions: 0 means the default.
                    o.timeout = if t.is_zero() {
                        cx.warn(
                            val,
                            "tls timeout of 0 means the default (2s), as in nats-server",
                        );
                        DEFAULT_TLS_TIMEOUT
                    } else {
                        t
                    };
                }
                "handshake_first" | "first" | "immediate" => {
                    let (on, fallback) = handshake_first(val)?;
                    o.handshake_first = on;
                    o.handshake_first_fallback = fallback;
                }
                "min_version" => {
                    let s = match &val.value {
                        // `min_version: 1.3` without quotes is a float.
                        Value::Float(f) => format!("{f}"),
                        _ => conf::string(val, kn)?,
                    };
                    if !valid_min_version(&s) {
                        return Err(conf::err(
                            val,
                            format!("unsupported TLS min_version \"{s}\" (use \"1.2\" or \"1.3\")"),
                        ));
                    }
                    o.min_version = Some(s);
                }
                "cipher_suites" => {
                    o.cipher_suites = conf::string_list(val, kn)?;
                    check_suites(&o.cipher_suites).map_err(|e| conf::err(val, e))?;
                }
                "curve_preferences" => {
                    o.curve_preferences = conf::string_list(val, kn)?;
                    check_groups(&o.curve_preferences).map_err(|e| conf::err(val, e))?;
                }
                "pinned_certs" => {
                    let list = conf::string_list(val, kn)?;
                    o.pinned_certs = list
                        .iter()
                        .map(|p| normalize_pin(p))
                        .collect::<Option<_>>()
                        .ok_or_else(|| {
                            conf::err(
                                val,
                                "pinned_certs entries must be hex SHA-256 fingerprints \
                                 (64 hex digits) of the certificate's public key",
                            )
                        })?;
                }
                // Keys nats-server knows that rnats does not implement:
                // refusing them is safer than silently running with a
                // weaker setup than the operator asked for.
                "insecure"
                | "cert_store"
                | "cert_match"
                | "cert_match_by"
                | "cert_match_skip_invalid"
                | "ca_certs_match"
                | "certs"
                | "ocsp_peer"
                | "verify_cert_and_check_known_urls"
                | "connection_rate_limit" => {
                    return Err(conf::err(
                        val,
                        format!("TLS option \"{k}\" is not supported by rnats"),
                    ));
                }
                _ => cx.unknown(Some(&format!("{path} block")), k, val)?,
            }
        }
        let missing = |what: &str| conf::err(v, format!("{path} block is missing \"{what}\""));
        o.cert_file = cert.ok_or_else(|| missing("cert_file"))?;
        o.key_file = key.ok_or_else(|| missing("key_file"))?;
        Ok(o)
    }

    /// Rules between the fields, for the file and for options built in
    /// code or from flags alike. Files are not touched here.
    pub fn check(&self) -> Result<(), String> {
        if self.cert_file.as_os_str().is_empty() || self.key_file.as_os_str().is_empty() {
            return Err("TLS needs both a certificate and a key file".into());
        }
        if self.requires_client_cert() && self.ca_file.is_none() {
            return Err(
                "verify and verify_and_map need \"ca_file\" (rnats does not use the system \
                 trust store for client certificates)"
                    .into(),
            );
        }
        if !self.pinned_certs.is_empty() && !self.requires_client_cert() {
            return Err(
                "pinned_certs needs verify or verify_and_map (clients only send a \
                 certificate when one is required)"
                    .into(),
            );
        }
        if self.timeout.is_zero() {
            return Err("tls timeout must be positive".into());
        }
        if let Some(v) = &self.min_version
            && !valid_min_version(v)
        {
            return Err(format!(
                "unsupported TLS min_version \"{v}\" (use \"1.2\" or \"1.3\")"
            ));
        }
        check_suites(&self.cipher_suites)?;
        check_groups(&self.curve_preferences)?;
        Ok(())
    }
}

/// `handshake_first`: a boolean, "auto" (fallback after the default delay)
/// or a duration (fallback after that delay).
fn handshake_first(v: &Spanned) -> Result<(bool, Option<Duration>), ConfigError> {
    if let Some(b) = v.as_bool() {
        return Ok((b, None));
    }
    match v.as_str() {
        Some(s) if s.eq_ignore_ascii_case("auto") || s.eq_ignore_ascii_case("auto_fallback") => {
            Ok((true, Some(DEFAULT_HANDSHAKE_FIRST_FALLBACK)))
        }
        Some(s) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("on") => {
            Ok((true, None))
        }
        Some(s) if s.eq_ignore_ascii_case("false") || s.eq_ignore_ascii_case("off") => {
            Ok((false, None))
        }
        _ => {
            let d = conf::duration(v, "handshake_first")?;
            Ok((true, Some(d)))
        }
    }
}

fn normalize_pin(p: &str) -> Option<String> {
    let p: String = p.trim().chars().filter(|c| *c != ':').collect();
    (p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit())).then(|| p.to_ascii_lowercase())
}

/// `min_version`: "1.2" or "1.3".
pub fn valid_min_version(s: &str) -> bool {
    matches!(s.trim(), "1.2" | "1.3")
}

/// The suites rnats offers, in rustls's names and default order. The TLS
/// module builds its list from the crypto provider, and a test there checks
/// that the two agree.
pub const SUITES: &[&str] = &[
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// The canonical (rustls) spelling of a configured suite name.
pub fn canonical_suite_name(name: &str) -> String {
    let n = name.trim().to_ascii_uppercase().replace('-', "_");
    match n.as_str() {
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            n.replacen("TLS_", "TLS13_", 1)
        }
        // Go omits the hash from its ChaCha20 suite names.
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            format!("{n}_SHA256")
        }
        _ => n,
    }
}

fn is_weak_suite_name(n: &str) -> bool {
    n.starts_with("TLS_")
        && (n.contains("_CBC_")
            || n.contains("RC4")
            || n.contains("3DES")
            || n.contains("_NULL_")
            || n.contains("_EXPORT_")
            || n.starts_with("TLS_RSA_")
            || n.starts_with("TLS_DHE_")
            || n.starts_with("TLS_ECDH_")
            || n.starts_with("TLS_PSK_"))
}

/// Every name must be one of [`SUITES`] (in any accepted spelling).
pub fn check_suites(names: &[String]) -> Result<(), String> {
    let mut unknown = Vec::new();
    let mut weak = Vec::new();
    for name in names {
        let canon = canonical_suite_name(name);
        if SUITES.contains(&canon.as_str()) {
            continue;
        }
        if is_weak_suite_name(&canon) {
            weak.push(name.as_str());
        } else {
            unknown.push(name.as_str());
        }
    }
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        parts.push(format!("unknown cipher suite(s): {}", unknown.join(", ")));
    }
    if !weak.is_empty() {
        parts.push(format!(
            "cipher suite(s) not allowed (rnats offers only ECDHE with AES-GCM or \
             ChaCha20-Poly1305, and the TLS 1.3 suites): {}",
            weak.join(", ")
        ));
    }
    if parts.is_empty() {
        Ok(())
    } else {
        Err(parts.join("; "))
    }
}

/// The rustls name of a configured key exchange group, if rnats has it.
pub fn canonical_group_name(name: &str) -> Option<&'static str> {
    match name
        .trim()
        .to_ascii_uppercase()
        .replace(['-', '_'], "")
        .as_str()
    {
        "X25519" => Some("X25519"),
        "CURVEP256" | "P256" | "SECP256R1" | "PRIME256V1" => Some("secp256r1"),
        "CURVEP384" | "P384" | "SECP384R1" => Some("secp384r1"),
        _ => None,
    }
}

/// Every name must be a group rnats has.
pub fn check_groups(names: &[String]) -> Result<(), String> {
    let bad: Vec<&str> = names
        .iter()
        .filter(|n| canonical_group_name(n).is_none())
        .map(String::as_str)
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(format!(
        "unsupported curve preference(s): {} (rnats supports X25519, CurveP256, CurveP384)",
        bad.join(", ")
    ))
}
