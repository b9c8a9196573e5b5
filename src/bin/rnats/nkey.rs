//! `rnats nkey`: NKey tools like nats' `nk`: generate keys, show the
//! public key of a seed, sign and verify data.

use std::io::Read;
use std::path::Path;

use nkeys::{KeyPair, KeyPairType};

use crate::Error;

#[derive(clap::Args, Debug)]
pub struct NkeyArgs {
    #[command(subcommand)]
    cmd: NkeyCmd,
}

#[derive(clap::Subcommand, Debug)]
enum NkeyCmd {
    /// Generate a key: prints its seed (and public key with --pub)
    Gen {
        /// user, account, operator, server, cluster or curve
        kind: String,
        /// Also print the public key
        #[arg(long = "pub")]
        public: bool,
    },
    /// Print the public key of a seed (given, or read from a file)
    Pub {
        /// A seed, or a file holding one (a seed file or a creds file)
        seed: String,
    },
    /// Sign data with a seed: prints the base64url signature
    Sign {
        /// Seed file (or the seed itself)
        #[arg(long)]
        key: String,
        /// Data file, or - for standard input
        data: String,
    },
    /// Verify a signature: exits with an error when it does not verify
    Verify {
        /// Public key or seed (or a file holding one)
        #[arg(long)]
        key: String,
        /// Signature (base64url or standard base64), or a file holding it
        #[arg(long)]
        sig: String,
        /// Data file, or - for standard input
        data: String,
    },
}

pub fn run(args: &NkeyArgs) -> Result<(), Error> {
    match &args.cmd {
        NkeyCmd::Gen { kind, public } => {
            let (seed, pk) = generate(kind)?;
            println!("{seed}");
            if *public {
                println!("{pk}");
            }
            Ok(())
        }
        NkeyCmd::Pub { seed } => {
            let seed = find_seed(&value_or_file(seed)?)
                .ok_or("no NKey seed found (expected a seed or a file holding one)")?;
            println!("{}", public_of_seed(&seed)?);
            Ok(())
        }
        NkeyCmd::Sign { key, data } => {
            let kp = load_seed(key)?;
            let sig = kp.sign(&read_data(data)?)?;
            println!("{}", data_encoding::BASE64URL_NOPAD.encode(&sig));
            Ok(())
        }
        NkeyCmd::Verify { key, sig, data } => {
            let text = value_or_file(key)?;
            let kp = match find_seed(&text) {
                Some(seed) => KeyPair::from_seed(&seed)?,
                None => KeyPair::from_public_key(text.trim())
                    .map_err(|e| format!("not a public key or seed: {e}"))?,
            };
            let sig = decode_sig(value_or_file(sig)?.trim())?;
            kp.verify(&read_data(data)?, &sig)
                .map_err(|_| "signature does not verify")?;
            println!("Verified OK");
            Ok(())
        }
    }
}

/// A fresh key of `kind`: (seed, public key).
pub fn generate(kind: &str) -> Result<(String, String), Error> {
    let ty = match kind.to_ascii_lowercase().as_str() {
        "user" | "u" => KeyPairType::User,
        "account" | "a" => KeyPairType::Account,
        "operator" | "o" => KeyPairType::Operator,
        "server" | "n" => KeyPairType::Server,
        "cluster" | "c" => KeyPairType::Cluster,
        "curve" | "x" => KeyPairType::Curve,
        k => {
            return Err(format!(
                "unknown key kind {k:?} (user, account, operator, server, cluster or curve)"
            )
            .into());
        }
    };
    let seed = KeyPair::new(ty).seed()?;
    let pk = public_of_seed(&seed)?;
    Ok((seed, pk))
}

/// The public key of a seed. Curve (X25519) keys are not ed25519: their
/// public key is the X25519 base point times the seed.
pub fn public_of_seed(seed: &str) -> Result<String, Error> {
    let (prefix, raw) = nkeys::decode_seed(seed.trim())?;
    if prefix == PREFIX_CURVE {
        let point = curve25519_dalek::montgomery::MontgomeryPoint::mul_base_clamped(raw);
        return Ok(encode_public(PREFIX_CURVE, point.as_bytes()));
    }
    Ok(KeyPair::from_seed(seed.trim())?.public_key())
}

const PREFIX_CURVE: u8 = 23 << 3;

/// CRC-16/XMODEM, the NKey checksum.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A public NKey: base32(prefix, key, little-endian CRC16).
fn encode_public(prefix: u8, key: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(35);
    raw.push(prefix);
    raw.extend_from_slice(key);
    let crc = crc16(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    data_encoding::BASE32_NOPAD.encode(&raw)
}

/// `arg` itself when it looks like a key or signature rather than a path
/// that exists, else the file's text.
pub fn value_or_file(arg: &str) -> Result<String, Error> {
    let p = Path::new(arg);
    if p.is_file() {
        return std::fs::read_to_string(p).map_err(|e| format!("{arg}: {e}").into());
    }
    Ok(arg.to_string())
}

/// The first NKey seed in `text`: a decorated block (as in creds files),
/// or a line that is a seed.
pub fn find_seed(text: &str) -> Option<String> {
    text.lines()
        .map(|l| l.trim())
        .find(|l| l.starts_with('S') && nkeys::decode_seed(l).is_ok())
        .map(str::to_string)
}

/// A signing key pair from a seed file or a seed.
pub fn load_seed(arg: &str) -> Result<KeyPair, Error> {
    let text = value_or_file(arg)?;
    let seed = find_seed(&text).ok_or_else(|| format!("{arg}: no NKey seed found"))?;
    Ok(KeyPair::from_seed(&seed)?)
}

fn read_data(arg: &str) -> Result<Vec<u8>, Error> {
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        return Ok(buf);
    }
    std::fs::read(arg).map_err(|e| format!("{arg}: {e}").into())
}

/// base64url (as written by `sign` and nk) or standard base64, padded or not.
fn decode_sig(s: &str) -> Result<Vec<u8>, Error> {
    let s = s.trim_end_matches('=');
    data_encoding::BASE64URL_NOPAD
        .decode(s.as_bytes())
        .or_else(|_| data_encoding::BASE64_NOPAD.decode(s.as_bytes()))
        .map_err(|_| "the signature is not base64".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_keys_match_nats_server_fixture() {
        // nats-server's auth callout tests: an xkey seed and its public key.
        let pk = public_of_seed("SXAAXMRAEP6JWWHNB6IKFL554IE6LZVT6EY5MBRICPILTLOPHAG73I3YX4")
            .expect("curve seed");
        assert_eq!(
            pk,
            "XAB3NANV3M6N7AHSQP2U5FRWKKUT7EG2ZXXABV4XVXYQRJGM4S2CZGHT"
        );
        let (seed, pk) = generate("curve").expect("generate");
        assert!(seed.starts_with("SX") && pk.starts_with('X'));
        assert!(nkeys::from_public_key(&pk).is_ok(), "checksum of {pk}");
    }

    #[test]
    fn generated_kinds_and_signatures() {
        for (kind, p) in [
            ("user", 'U'),
            ("account", 'A'),
            ("operator", 'O'),
            ("server", 'N'),
            ("cluster", 'C'),
        ] {
            let (seed, pk) = generate(kind).expect("generate");
            assert_eq!(seed.chars().nth(1), Some(p));
            assert!(pk.starts_with(p));
            assert_eq!(find_seed(&format!("# c\n{seed}\n")), Some(seed.clone()));
            let kp = KeyPair::from_seed(&seed).expect("seed");
            let sig = kp.sign(b"data").expect("sign");
            let enc = data_encoding::BASE64URL_NOPAD.encode(&sig);
            assert_eq!(decode_sig(&enc).expect("decode"), sig);
            let std = data_encoding::BASE64.encode(&sig);
            assert_eq!(decode_sig(&std).expect("decode std"), sig);
        }
        assert!(generate("bogus").is_err());
    }
}
