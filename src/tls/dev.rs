//! A throw-away certificate authority with server, client and route
//! certificates, for development and tests (`rnats certs dev DIR`). Keys are
//! ECDSA P-256; nothing here is meant for production.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::TlsError;

/// Host names and addresses every development server/route certificate
/// covers: loopback, and the names the cluster scripts and containers use.
pub const DEV_HOSTS: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "rnats-0",
    "rnats-1",
    "rnats-2",
    "n1",
    "n2",
    "n3",
];

/// What to put in the generated certificates.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Client certificate subject CN (a `verify_and_map` user can be
    /// "CN=<this>,O=rnats dev").
    pub client_cn: String,
    /// Client certificate SAN e-mail (tried first by `verify_and_map`).
    pub client_email: String,
    /// Extra host names or IP addresses for the server and route certificates.
    pub extra_hosts: Vec<String>,
    /// Lifetime of the leaf certificates; the CA lives ten times as long.
    pub valid_days: i64,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            client_cn: "alice".into(),
            client_email: "alice@example.com".into(),
            extra_hosts: Vec::new(),
            valid_days: 365,
        }
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of debug output even for development material.
        f.debug_struct("CertPair")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A generated development PKI.
#[derive(Clone, Debug)]
pub struct DevPki {
    pub ca: CertPair,
    pub server: CertPair,
    pub client: CertPair,
    pub route: CertPair,
}

/// Organisation in every generated subject.
pub const DEV_ORG: &str = "rnats dev";

fn gen_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn validity(params: &mut CertificateParams, days: i64) {
    // Start yesterday so a clock slightly behind ours still accepts them.
    let from = Utc::now() - chrono::Duration::days(1);
    let to = Utc::now() + chrono::Duration::days(days.max(1));
    params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    params.not_after = rcgen::date_time_ymd(to.year(), to.month() as u8, to.day() as u8);
}

fn subject(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, DEV_ORG);
    dn.push(DnType::CommonName, cn);
    dn
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    hosts: &[String],
    email: Option<&str>,
    usages: &[ExtendedKeyUsagePurpose],
    days: i64,
) -> Result<CertPair, TlsError> {
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(gen_err)?;
    if let Some(e) = email {
        let ia5 = e.to_string().try_into().map_err(gen_err)?;
        params.subject_alt_names.push(SanType::Rfc822Name(ia5));
    }
    params.distinguished_name = subject(cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let cert = params.signed_by(&key, issuer).map_err(gen_err)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl DevPki {
    /// Generate a CA and server, client and route certificates signed by it.
    pub fn generate(opts: &DevOptions) -> Result<DevPki, TlsError> {
        let ca_key = KeyPair::generate().map_err(gen_err)?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = subject("rnats dev CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut ca_params, opts.valid_days.saturating_mul(10));
        let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err)?;
        let ca = CertPair {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };
        let issuer = Issuer::new(ca_params, ca_key);

        let hosts: Vec<String> = DEV_HOSTS
            .iter()
            .map(|h| h.to_string())
            .chain(opts.extra_hosts.iter().cloned())
            .collect();
        let server = leaf(
            &issuer,
            "rnats server",
            &hosts,
            None,
            &[ExtendedKeyUsagePurpose::ServerAuth],
            opts.valid_days,
        )?;
        let client = leaf(
            &issuer,
            &opts.client_cn,
            &[],
            Some(&opts.client_email),
            &[ExtendedKeyUsagePurpose::ClientAuth],
            opts.valid_days,
        )?;
        // Route connections are dialled and accepted by servers, so the
        // route certificate is valid for both ends.
        let route = leaf(
            &issuer,
            "rnats route",
            &hosts,
            None,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            opts.valid_days,
        )?;
        Ok(DevPki {
            ca,
            server,
            client,
            route,
        })
    }

    /// The files `write_to` creates, as (name, contents, is a private key).
    fn files(&self) -> Vec<(&'static str, &str, bool)> {
        vec![
            ("ca.pem", &self.ca.cert_pem, false),
            ("ca-key.pem", &self.ca.key_pem, true),
            ("server-cert.pem", &self.server.cert_pem, false),
            ("server-key.pem", &self.server.key_pem, true),
            ("client-cert.pem", &self.client.cert_pem, false),
            ("client-key.pem", &self.client.key_pem, true),
            ("route-cert.pem", &self.route.cert_pem, false),
            ("route-key.pem", &self.route.key_pem, true),
        ]
    }

    /// Write ca.pem, ca-key.pem, server-cert.pem, server-key.pem,
    /// client-cert.pem, client-key.pem, route-cert.pem and route-key.pem
    /// into `dir` (created if needed). Private keys are mode 0600. Existing
    /// files are only replaced with `overwrite`.
    pub fn write_to(&self, dir: &Path, overwrite: bool) -> Result<Vec<PathBuf>, TlsError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| TlsError::Generate(format!("cannot create \"{}\": {e}", dir.display())))?;
        let files = self.files();
        if !overwrite {
            let existing: Vec<String> = files
                .iter()
                .map(|(n, _, _)| dir.join(n))
                .filter(|p| p.exists())
                .map(|p| p.display().to_string())
                .collect();
            if !existing.is_empty() {
                return Err(TlsError::Generate(format!(
                    "refusing to overwrite {} (use --force)",
                    existing.join(", ")
                )));
            }
        }
        let mut written = Vec::new();
        for (name, contents, private) in files {
            let path = dir.join(name);
            write_file(&path, contents.as_bytes(), private).map_err(|e| {
                TlsError::Generate(format!("cannot write \"{}\": {e}", path.display()))
            })?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Write a certificate or key file (keys private: 0600, also when the file
/// already existed).
pub fn write_file(path: &Path, data: &[u8], private: bool) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = o.open(path)?;
    // `mode` only applies to newly created files; tighten an existing key.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(data)?;
    f.sync_all()
}
