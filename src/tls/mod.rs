//! TLS for client connections: the `tls { ... }` configuration block, the
//! rustls server configuration built from it, and what a finished
//! handshake tells us (negotiated parameters, the client's certificate
//! identity, certificate pinning).
//!
//! # Protocol versions and cipher suites
//!
//! rnats speaks TLS 1.2 and TLS 1.3 only, and offers only ECDHE key
//! exchange with AEAD ciphers. The complete set, in rustls's names (the
//! names `negotiated` reports and the debug log shows):
//!
//! | version | suite |
//! |---|---|
//! | TLS 1.3 | `TLS13_AES_256_GCM_SHA384` |
//! | TLS 1.3 | `TLS13_AES_128_GCM_SHA256` |
//! | TLS 1.3 | `TLS13_CHACHA20_POLY1305_SHA256` |
//! | TLS 1.2 | `TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384` |
//! | TLS 1.2 | `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256` |
//! | TLS 1.2 | `TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256` |
//! | TLS 1.2 | `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384` |
//! | TLS 1.2 | `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` |
//! | TLS 1.2 | `TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256` |
//!
//! `cipher_suites` and `min_version` can only narrow this set. Names are
//! matched case-insensitively and may also be written the IANA way
//! (`TLS_AES_128_GCM_SHA256`) or the Go way nats-server configurations use
//! (`TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305`). CBC, RC4, 3DES, static-RSA and
//! other weak suites are refused by name; anything else unknown is an
//! error naming it. As in Go (and so nats-server), a list that names no
//! TLS 1.3 suite leaves all three TLS 1.3 suites enabled; a non-empty list
//! that names no TLS 1.2 suite turns TLS 1.2 off.
//!
//! Key exchange groups (`curve_preferences`): `X25519`, `CurveP256`
//! (P-256, secp256r1) and `CurveP384` (P-384, secp384r1), in that default
//! order. `CurveP521` is not available with the crypto provider rnats uses
//! (ring, the one async-nats already builds) and is refused.

pub mod dev;
mod identity;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::conf;
use crate::config::parser::{ConfigError, Spanned};

pub use identity::{CertIdentity, DnAttr, dn_matches, identity_from_der, spki_sha256_hex};

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

    /// Parse a `tls { ... }` block. File contents are not read here (that
    /// is [`server_config`]'s job) but every value is checked, so a
    /// configuration test (`-t`) catches typos in names and versions.
    pub fn from_config(v: &Spanned) -> Result<TlsOptions, ConfigError> {
        let map = conf::map(v, "tls")?;
        let mut cert = None;
        let mut key = None;
        let mut o = TlsOptions::new("", "");
        for (k, val) in map {
            let key_name = k.to_ascii_lowercase();
            let kn = key_name.as_str();
            match kn {
                "cert_file" => cert = Some(conf::path(val, kn)?),
                "key_file" => key = Some(conf::path(val, kn)?),
                "ca_file" => o.ca_file = Some(conf::path(val, kn)?),
                "verify" => o.verify = conf::boolean(val, kn)?,
                "verify_and_map" => o.verify_and_map = conf::boolean(val, kn)?,
                "timeout" => o.timeout = conf::duration(val, kn)?,
                "handshake_first" | "first" | "immediate" => {
                    let (on, fallback) = handshake_first(val)?;
                    o.handshake_first = on;
                    o.handshake_first_fallback = fallback;
                }
                "min_version" => {
                    let s = match &val.value {
                        // `min_version: 1.3` without quotes is a float.
                        crate::config::parser::Value::Float(f) => format!("{f}"),
                        _ => conf::string(val, kn)?,
                    };
                    if parse_min_version(&s).is_none() {
                        return Err(conf::err(
                            val,
                            format!("unsupported TLS min_version \"{s}\" (use \"1.2\" or \"1.3\")"),
                        ));
                    }
                    o.min_version = Some(s);
                }
                "cipher_suites" => {
                    o.cipher_suites = conf::string_list(val, kn)?;
                    select_suites(&o.cipher_suites).map_err(|e| conf::err(val, e.to_string()))?;
                }
                "curve_preferences" => {
                    o.curve_preferences = conf::string_list(val, kn)?;
                    select_groups(&o.curve_preferences)
                        .map_err(|e| conf::err(val, e.to_string()))?;
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
                _ => {
                    return Err(conf::err(
                        val,
                        format!("unknown field \"{k}\" in tls block"),
                    ));
                }
            }
        }
        o.cert_file = cert.ok_or_else(|| conf::err(v, "tls block is missing \"cert_file\""))?;
        o.key_file = key.ok_or_else(|| conf::err(v, "tls block is missing \"key_file\""))?;
        if o.requires_client_cert() && o.ca_file.is_none() {
            return Err(conf::err(
                v,
                "verify and verify_and_map need \"ca_file\" (rnats does not use the system \
                 trust store for client certificates)",
            ));
        }
        if !o.pinned_certs.is_empty() && !o.requires_client_cert() {
            return Err(conf::err(
                v,
                "pinned_certs needs verify or verify_and_map (clients only send a \
                 certificate when one is required)",
            ));
        }
        Ok(o)
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

fn parse_min_version(s: &str) -> Option<&'static SupportedProtocolVersion> {
    match s.trim() {
        "1.2" => Some(&rustls::version::TLS12),
        "1.3" => Some(&rustls::version::TLS13),
        _ => None,
    }
}

/// Why TLS could not be set up or a handshake failed.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// A file was read but holds nothing usable of the expected kind.
    Content {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The private key is not the certificate's.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// A bad option value (unknown cipher name, version, curve...).
    Option(String),
    /// Any other rustls refusal while building the configuration.
    Config(String),
    /// The handshake did not finish within the TLS timeout.
    HandshakeTimeout,
    /// The handshake failed.
    Handshake(String),
    /// Generating development certificates failed.
    Generate(String),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Read { what, path, reason } => {
                write!(f, "cannot read {what} \"{}\": {reason}", path.display())
            }
            TlsError::Content { what, path, reason } => {
                write!(f, "{what} \"{}\": {reason}", path.display())
            }
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "private key \"{}\" does not match certificate \"{}\"",
                key.display(),
                cert.display()
            ),
            TlsError::Option(m) | TlsError::Config(m) => f.write_str(m),
            TlsError::HandshakeTimeout => f.write_str("TLS handshake timeout"),
            TlsError::Handshake(m) => write!(f, "TLS handshake error: {m}"),
            TlsError::Generate(m) => write!(f, "certificate generation failed: {m}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// The suites `server_config` may ever offer (see the module docs).
fn allowed_suites() -> Vec<SupportedCipherSuite> {
    rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .copied()
        .filter(|s| {
            let name = suite_name(s);
            // Belt and braces: keep only ECDHE/AEAD (TLS 1.2) and the
            // TLS 1.3 AEAD suites even if the provider grows others.
            let aead = name.contains("_GCM_") || name.contains("CHACHA20_POLY1305");
            let kx = name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_");
            aead && kx
        })
        .collect()
}

fn suite_name(s: &SupportedCipherSuite) -> String {
    s.suite()
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:?}", s.suite()))
}

/// The canonical (rustls) spelling of a configured suite name.
fn canonical_suite_name(name: &str) -> String {
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

/// The suites to offer, in configured order; an empty list means all.
fn select_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let allowed = allowed_suites();
    if names.is_empty() {
        return Ok(allowed);
    }
    let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
    let mut unknown = Vec::new();
    let mut weak = Vec::new();
    for name in names {
        let canon = canonical_suite_name(name);
        match allowed.iter().find(|s| suite_name(s) == canon) {
            Some(s) => {
                if !chosen.iter().any(|c| c.suite() == s.suite()) {
                    chosen.push(*s);
                }
            }
            None if is_weak_suite_name(&canon) => weak.push(name.as_str()),
            None => unknown.push(name.as_str()),
        }
    }
    if !unknown.is_empty() || !weak.is_empty() {
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
        return Err(TlsError::Option(parts.join("; ")));
    }
    // Go (and so nats-server) cannot restrict TLS 1.3 suites: a list of
    // TLS 1.2 names leaves TLS 1.3 fully on. Keep that meaning.
    if !chosen.iter().any(|s| s.tls13().is_some()) {
        chosen.extend(allowed.iter().filter(|s| s.tls13().is_some()).copied());
    }
    Ok(chosen)
}

fn group_name(g: &&'static dyn SupportedKxGroup) -> String {
    let n = g.name();
    n.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{n:?}"))
}

/// The key exchange groups to offer, in configured order.
fn select_groups(names: &[String]) -> Result<Vec<&'static dyn SupportedKxGroup>, TlsError> {
    let all = rustls::crypto::ring::ALL_KX_GROUPS;
    if names.is_empty() {
        return Ok(all.to_vec());
    }
    let mut chosen: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    let mut bad = Vec::new();
    for name in names {
        let want = match name
            .trim()
            .to_ascii_uppercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "X25519" => "X25519",
            "CURVEP256" | "P256" | "SECP256R1" | "PRIME256V1" => "secp256r1",
            "CURVEP384" | "P384" | "SECP384R1" => "secp384r1",
            _ => {
                bad.push(name.as_str());
                continue;
            }
        };
        if let Some(g) = all.iter().find(|g| group_name(g) == want)
            && !chosen.iter().any(|c| c.name() == g.name())
        {
            chosen.push(*g);
        }
    }
    if !bad.is_empty() {
        return Err(TlsError::Option(format!(
            "unsupported curve preference(s): {} (rnats supports X25519, CurveP256, CurveP384)",
            bad.join(", ")
        )));
    }
    Ok(chosen)
}

/// The crypto provider narrowed to the configured suites and groups.
fn provider_for(opts: &TlsOptions) -> Result<CryptoProvider, TlsError> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = select_suites(&opts.cipher_suites)?;
    p.kx_groups = select_groups(&opts.curve_preferences)?;
    Ok(p)
}

fn versions_for(
    opts: &TlsOptions,
    provider: &CryptoProvider,
) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    let min = match &opts.min_version {
        None => &rustls::version::TLS12,
        Some(s) => parse_min_version(s).ok_or_else(|| {
            TlsError::Option(format!(
                "unsupported TLS min_version \"{s}\" (use \"1.2\" or \"1.3\")"
            ))
        })?,
    };
    let has12 = provider.cipher_suites.iter().any(|s| s.tls13().is_none());
    let mut v = vec![&rustls::version::TLS13];
    if min.version == rustls::ProtocolVersion::TLSv1_2 && has12 {
        v.push(&rustls::version::TLS12);
    }
    Ok(v)
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Content {
            what,
            path: path.to_path_buf(),
            reason: format!("invalid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Content {
            what,
            path: path.to_path_buf(),
            reason: "no PEM certificate found".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Content {
        what: "key_file",
        path: path.to_path_buf(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PEM private key (PKCS#8, PKCS#1 or SEC1) found".into()
            }
            e => format!("invalid PEM: {e}"),
        },
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = load_certs("ca_file", path)?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::Content {
            what: "ca_file",
            path: path.to_path_buf(),
            reason: format!("none of the {ignored} certificate(s) could be used as a CA"),
        });
    }
    Ok(roots)
}

/// Build the rustls server configuration for client connections.
///
/// Errors name the file or option at fault: a missing or unreadable file,
/// a file without a certificate or key, a key that is not the
/// certificate's, an unusable CA file, unknown or weak suite names.
pub fn server_config(opts: &TlsOptions) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(provider_for(opts)?);
    let versions = versions_for(opts, &provider)?;
    let certs = load_certs("cert_file", &opts.cert_file)?;
    let key = load_key(&opts.key_file)?;
    // Read the CA file even when it is not used for client verification,
    // so a typo in its path is reported at startup rather than never.
    let roots = opts.ca_file.as_deref().map(load_roots).transpose()?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Config(format!("TLS configuration: {e}")))?;
    let builder = if opts.requires_client_cert() {
        let roots = roots
            .ok_or_else(|| TlsError::Option("verify and verify_and_map need ca_file".into()))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                cert: opts.cert_file.clone(),
                key: opts.key_file.clone(),
            }
        }
        e => TlsError::Config(format!(
            "certificate \"{}\" / key \"{}\": {e}",
            opts.cert_file.display(),
            opts.key_file.display()
        )),
    })?;
    Ok(Arc::new(config))
}

/// Is this client certificate allowed by `pinned_certs`? With no pins
/// configured every certificate (and no certificate) is allowed; with pins,
/// the certificate's SubjectPublicKeyInfo SHA-256 must be listed.
pub fn check_pinned(opts: &TlsOptions, peer_cert_der: Option<&[u8]>) -> bool {
    if opts.pinned_certs.is_empty() {
        return true;
    }
    let Some(fp) = peer_cert_der.and_then(spki_sha256_hex) else {
        return false;
    };
    opts.pinned_certs.contains(&fp)
}

/// The identity in the client's certificate, if it sent one.
pub fn peer_identity(conn: &rustls::ServerConnection) -> Option<CertIdentity> {
    conn.peer_certificates()?
        .first()
        .and_then(|c| identity_from_der(c.as_ref()))
}

/// The client's leaf certificate, DER (for [`check_pinned`]).
pub fn peer_leaf_der(conn: &rustls::ServerConnection) -> Option<&[u8]> {
    conn.peer_certificates()?.first().map(|c| c.as_ref())
}

/// Negotiated protocol version ("1.2", "1.3") and cipher suite name as
/// rustls reports it; empty strings before the handshake completes.
pub fn negotiated(conn: &rustls::ServerConnection) -> (String, String) {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3".to_string(),
        Some(v) => format!("{v:?}"),
        None => String::new(),
    };
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| suite_name(&s))
        .unwrap_or_default();
    (version, suite)
}

/// Run the server side of a handshake with a deadline.
pub async fn accept<IO>(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: IO,
    timeout: Duration,
) -> Result<tokio_rustls::server::TlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Err(_) => Err(TlsError::HandshakeTimeout),
        Ok(Err(e)) => Err(TlsError::Handshake(e.to_string())),
        Ok(Ok(s)) => Ok(s),
    }
}

#[cfg(test)]
mod tests;
