//! `rnats certs dev DIR`: a development CA with server, client and route
//! certificates, ready for the `tls` block.

use std::path::PathBuf;

use clap::Subcommand;
use rnats::tls::dev::{DEV_HOSTS, DEV_ORG, DevOptions, DevPki};

use crate::Error;

#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    cmd: CertsCmd,
}

#[derive(Subcommand, Debug)]
enum CertsCmd {
    /// Write ca.pem, ca-key.pem and server-, client- and route- cert/key
    /// pairs (development only: keys are unencrypted)
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
            days,
        } => {
            let opts = DevOptions {
                client_cn: client_cn.clone(),
                client_email: client_email.clone(),
                extra_hosts: hosts.clone(),
                valid_days: *days,
            };
            let pki = DevPki::generate(&opts)?;
            for path in pki.write_to(dir, *force)? {
                println!("wrote {}", path.display());
            }
            let d = dir.display();
            let mut names: Vec<&str> = DEV_HOSTS.to_vec();
            names.extend(hosts.iter().map(String::as_str));
            println!();
            println!("server certificate names: {}", names.join(", "));
            println!("server configuration:");
            println!("  tls {{");
            println!("    cert_file: \"{d}/server-cert.pem\"");
            println!("    key_file:  \"{d}/server-key.pem\"");
            println!("    ca_file:   \"{d}/ca.pem\"");
            println!("    verify:    true   # or verify_and_map: true");
            println!("  }}");
            println!(
                "verify_and_map users: \"{client_email}\" (SAN e-mail) or \
                 \"CN={client_cn},O={DEV_ORG}\" (subject)"
            );
            Ok(())
        }
    }
}
