//! `rnats certs dev DIR`: development certificates for the `tls` blocks.
//!
//! Clients and the client port use one CA (ca.pem); routes use a second,
//! separate CA (route-ca.pem). A route port whose `ca_file` is the route CA
//! then refuses a client certificate by plain chain verification, without
//! relying on names or pinning.

use std::path::{Path, PathBuf};

use chrono::{Datelike, Utc};
use clap::Subcommand;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rnats::tls::dev::{CertPair, DEV_HOSTS, DEV_ORG, DevOptions, DevPki, write_file};

use crate::Error;

#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    cmd: CertsCmd,
}

#[derive(Subcommand, Debug)]
enum CertsCmd {
    /// Write a client/server CA (ca.pem, ca-key.pem) with server- and
    /// client- cert/key pairs, and a separate route CA (route-ca.pem,
    /// route-ca-key.pem) with a route- cert/key pair (development only:
    /// keys are unencrypted)
    Dev {
        /// Directory to write into (created if missing)
        dir: PathBuf,
        /// Replace existing files
        #[arg(long)]
        force: bool,
        /// Client certificate common name
        #[arg(long, default_value = "alice")]
        client_cn: String,
        /// Client certificate SAN e-mail
        #[arg(long, default_value = "alice@example.com")]
        client_email: String,
        /// Extra server/route host name or IP (repeatable)
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Also write one route certificate per node, route-NAME-cert.pem
        /// and route-NAME-key.pem, signed by the route CA (comma separated)
        #[arg(long = "route-names", value_delimiter = ',', value_name = "NAMES")]
        route_names: Vec<String>,
        /// Leaf certificate lifetime in days
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(i64).range(1..=3650))]
        days: i64,
    },
}

pub fn run(args: &CertsArgs) -> Result<(), Error> {
    match &args.cmd {
        CertsCmd::Dev {
            dir,
            force,
            client_cn,
            client_email,
            hosts,
            route_names,
            days,
        } => {
            check_route_names(route_names)?;
            let opts = DevOptions {
                client_cn: client_cn.clone(),
                client_email: client_email.clone(),
                extra_hosts: hosts.clone(),
                valid_days: *days,
            };
            let mut names: Vec<String> = DEV_HOSTS.iter().map(|h| h.to_string()).collect();
            names.extend(hosts.iter().cloned());

            let mut pki = DevPki::generate(&opts)?;
            let routes = RoutePki::generate(&names, route_names, *days)?;
            // The library's route certificate is signed by the client CA;
            // replace it with one from the route CA before anything is written.
            pki.route = routes.shared.clone();

            let extra = routes.extra_files();
            if !force {
                refuse_existing(dir, extra.iter().map(|(n, _, _)| n.as_str()))?;
            }
            for path in pki.write_to(dir, *force)? {
                println!("wrote {}", path.display());
            }
            for (name, contents, private) in &extra {
                let path = dir.join(name);
                write_file(&path, contents.as_bytes(), *private)
                    .map_err(|e| format!("cannot write \"{}\": {e}", path.display()))?;
                println!("wrote {}", path.display());
            }
            print_usage(dir, &names, client_cn, client_email);
            Ok(())
        }
    }
}

fn print_usage(dir: &Path, names: &[String], client_cn: &str, client_email: &str) {
    let d = dir.display();
    println!();
    println!("server and route certificate names: {}", names.join(", "));
    println!("server configuration:");
    println!("  tls {{");
    println!("    cert_file: \"{d}/server-cert.pem\"");
    println!("    key_file:  \"{d}/server-key.pem\"");
    println!("    ca_file:   \"{d}/ca.pem\"");
    println!("    verify:    true   # or verify_and_map: true");
    println!("  }}");
    println!("  cluster {{");
    println!("    tls {{");
    println!("      cert_file: \"{d}/route-cert.pem\"");
    println!("      key_file:  \"{d}/route-key.pem\"");
    println!("      ca_file:   \"{d}/route-ca.pem\"   # routes only trust the route CA");
    println!("    }}");
    println!("  }}");
    println!(
        "verify_and_map users: \"{client_email}\" (SAN e-mail) or \
         \"CN={client_cn},O={DEV_ORG}\" (subject)"
    );
}

/// Node names become file names and a DNS SAN, so keep them to characters
/// that are safe in both.
fn check_route_names(names: &[String]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        let ok = !n.is_empty()
            && n.len() <= 63
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !n.starts_with('-');
        if !ok {
            return Err(
                format!("route name \"{n}\": use 1-63 letters, digits or '-' (not first)").into(),
            );
        }
        if !seen.insert(n.as_str()) {
            return Err(format!("route name \"{n}\" given twice").into());
        }
    }
    Ok(())
}

fn refuse_existing<'a>(dir: &Path, names: impl Iterator<Item = &'a str>) -> Result<(), Error> {
    let existing: Vec<String> = names
        .map(|n| dir.join(n))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if existing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "refusing to overwrite {} (use --force)",
            existing.join(", ")
        )
        .into())
    }
}

/// The route CA, the shared route certificate and any per-node ones.
struct RoutePki {
    ca: CertPair,
    shared: CertPair,
    nodes: Vec<(String, CertPair)>,
}

impl RoutePki {
    fn generate(hosts: &[String], node_names: &[String], days: i64) -> Result<RoutePki, Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        // A subject distinct from the client CA's, so a chain error names
        // the CA that was actually expected.
        ca_params.distinguished_name = subject("rnats dev route CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut ca_params, days.saturating_mul(10));
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = CertPair {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };
        let issuer = Issuer::new(ca_params, ca_key);
        let shared = route_leaf(&issuer, "rnats route", hosts, days)?;
        let mut nodes = Vec::new();
        for n in node_names {
            let mut node_hosts = hosts.to_vec();
            node_hosts.push(n.clone());
            let pair = route_leaf(&issuer, &format!("rnats route {n}"), &node_hosts, days)?;
            nodes.push((n.clone(), pair));
        }
        Ok(RoutePki { ca, shared, nodes })
    }

    /// Files beyond the ones `DevPki::write_to` writes: (name, contents,
    /// is a private key).
    fn extra_files(&self) -> Vec<(String, String, bool)> {
        let mut v = vec![
            ("route-ca.pem".to_string(), self.ca.cert_pem.clone(), false),
            (
                "route-ca-key.pem".to_string(),
                self.ca.key_pem.clone(),
                true,
            ),
        ];
        for (n, pair) in &self.nodes {
            v.push((format!("route-{n}-cert.pem"), pair.cert_pem.clone(), false));
            v.push((format!("route-{n}-key.pem"), pair.key_pem.clone(), true));
        }
        v
    }
}

fn subject(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, DEV_ORG);
    dn.push(DnType::CommonName, cn);
    dn
}

fn validity(params: &mut CertificateParams, days: i64) {
    // Valid from yesterday, so a peer whose clock lags a little accepts it.
    let from = Utc::now() - chrono::Duration::days(1);
    let to = Utc::now() + chrono::Duration::days(days.max(1));
    params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    params.not_after = rcgen::date_time_ymd(to.year(), to.month() as u8, to.day() as u8);
}

/// A route certificate: both ends of a route are servers that dial and
/// accept, so it carries serverAuth and clientAuth.
fn route_leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    hosts: &[String],
    days: i64,
) -> Result<CertPair, Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name = subject(cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let cert = params.signed_by(&key, issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
