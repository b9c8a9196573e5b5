//! TLS for client connections: the rustls server configuration built from
//! the `tls { ... }` options (parsed and name-checked in
//! `crate::config::tls`, re-exported here), and what a finished handshake
//! tells us (negotiated parameters, the client's certificate identity,
//! certificate pinning).
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
pub mod route;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::tls::{canonical_group_name, canonical_suite_name, check_groups, check_suites};

// The option type and its parser live in `crate::config::tls`; these paths
// are kept for the rest of the code.
pub use crate::config::tls::{DEFAULT_HANDSHAKE_FIRST_FALLBACK, DEFAULT_TLS_TIMEOUT, TlsOptions};
pub use identity::{CertIdentity, DnAttr, dn_matches, identity_from_der, spki_sha256_hex};

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

/// The suites to offer, in configured order; an empty list means all.
/// Names were checked against `crate::config::tls::SUITES`, which a test
/// keeps equal to [`allowed_suites`].
fn select_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let allowed = allowed_suites();
    if names.is_empty() {
        return Ok(allowed);
    }
    check_suites(names).map_err(TlsError::Option)?;
    let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
    for name in names {
        let canon = canonical_suite_name(name);
        if let Some(s) = allowed.iter().find(|s| suite_name(s) == canon)
            && !chosen.iter().any(|c| c.suite() == s.suite())
        {
            chosen.push(*s);
        }
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
    check_groups(names).map_err(TlsError::Option)?;
    let mut chosen: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    for name in names {
        let want = canonical_group_name(name);
        if let Some(g) = all.iter().find(|g| Some(group_name(g).as_str()) == want)
            && !chosen.iter().any(|c| c.name() == g.name())
        {
            chosen.push(*g);
        }
    }
    if chosen.is_empty() {
        // Fail closed should the provider ever lose a group we accept.
        return Err(TlsError::Option(
            "none of the configured curve preferences is available".into(),
        ));
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
    let min = match opts.min_version.as_deref().map(str::trim) {
        None | Some("1.2") => &rustls::version::TLS12,
        Some("1.3") => &rustls::version::TLS13,
        Some(s) => {
            return Err(TlsError::Option(format!(
                "unsupported TLS min_version \"{s}\" (use \"1.2\" or \"1.3\")"
            )));
        }
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
