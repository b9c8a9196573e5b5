//! `rnats passwd`: make a bcrypt hash for the `authorization` block, like
//! nats-server's mkpasswd. Without `-p` it invents a random password too.

use ring::rand::{SecureRandom, SystemRandom};

use crate::Error;

#[derive(clap::Args, Debug)]
pub struct PasswdArgs {
    /// Prompt for the password (twice, without echo) instead of generating one
    #[arg(short = 'p', long = "prompt")]
    prompt: bool,
    /// bcrypt cost factor (each step doubles the work)
    #[arg(long, default_value_t = 11, value_parser = clap::value_parser!(u32).range(4..=31))]
    cost: u32,
}

/// Letters and digits only, so a generated password can go into a
/// nats://user:pass@host URL or a shell command without quoting.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// 22 characters of a 62-letter alphabet: about 131 bits.
const GENERATED_LEN: usize = 22;
/// bcrypt ignores everything past this many bytes.
const BCRYPT_MAX: usize = 72;

pub fn run(args: &PasswdArgs) -> Result<(), Error> {
    let password = if args.prompt {
        let no_tty =
            |e: std::io::Error| format!("cannot prompt for a password ({e}); run in a terminal");
        let first = rpassword::prompt_password("Enter Password: ").map_err(no_tty)?;
        let second = rpassword::prompt_password("Reenter Password: ").map_err(no_tty)?;
        if first != second {
            return Err("passwords do not match".into());
        }
        if first.is_empty() {
            return Err("empty password".into());
        }
        first
    } else {
        let p = generate()?;
        println!("pass: {p}");
        p
    };
    if password.len() > BCRYPT_MAX {
        return Err(format!(
            "bcrypt only uses the first {BCRYPT_MAX} bytes of a password; choose a shorter one"
        )
        .into());
    }
    println!("bcrypt hash: {}", hash(&password, args.cost)?);
    Ok(())
}

/// `$2a$` like nats-server's mkpasswd, so the hash reads the same in
/// configurations shared with nats-server.
fn hash(password: &str, cost: u32) -> Result<String, Error> {
    Ok(bcrypt::hash_with_result(password, cost)?.format_for_version(bcrypt::Version::TwoA))
}

fn generate() -> Result<String, Error> {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(GENERATED_LEN);
    // Rejection sampling: bytes at or above the largest multiple of the
    // alphabet size are thrown away so every letter is equally likely.
    let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut buf = [0u8; 64];
    while out.len() < GENERATED_LEN {
        rng.fill(&mut buf)
            .map_err(|_| "the system random number generator failed")?;
        for &b in &buf {
            if b < limit && out.len() < GENERATED_LEN {
                out.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_hash_and_verify() {
        let p = generate().expect("generate");
        assert_eq!(p.len(), GENERATED_LEN);
        assert!(p.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(p, generate().expect("generate"));
        let h = hash(&p, 4).expect("hash");
        assert!(h.starts_with("$2a$04$"), "{h}");
        assert!(bcrypt::verify(&p, &h).expect("verify"));
        assert!(rnats::auth::Secret::parse(&h).expect("parse").is_bcrypt());
    }
}
