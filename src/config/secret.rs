//! Configured secrets (passwords and tokens): plain text or bcrypt hash.
//! Checking a login against one is the auth module's job.

use std::sync::Arc;

/// A password or token from the configuration or the command line.
#[derive(Clone)]
pub enum Secret {
    Plain(Arc<str>),
    /// A `$2a$`, `$2b$` or `$2y$` bcrypt hash.
    Bcrypt {
        hash: Arc<str>,
        cost: u32,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, not even in debug dumps of the options.
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain([REDACTED])"),
            Secret::Bcrypt { cost, .. } => write!(f, "Secret::Bcrypt(cost {cost})"),
        }
    }
}

/// bcrypt's base-64 alphabet.
fn bcrypt_b64(b: u8) -> bool {
    b == b'.' || b == b'/' || b.is_ascii_alphanumeric()
}

impl Secret {
    /// Classify a configured value. Like nats-server, a value that starts
    /// like a bcrypt hash (`$2?$NN$`) is a hash; unlike it, a malformed one
    /// is an error here rather than a password nobody can ever match.
    pub fn parse(s: &str) -> Result<Secret, String> {
        if s.is_empty() {
            return Err("empty password or token".into());
        }
        let b = s.as_bytes();
        let looks_bcrypt = b.len() >= 7
            && b[0] == b'$'
            && b[1] == b'2'
            && b[3] == b'$'
            && b[4].is_ascii_digit()
            && b[5].is_ascii_digit()
            && b[6] == b'$';
        if !looks_bcrypt {
            return Ok(Secret::Plain(Arc::from(s)));
        }
        match b[2] {
            b'a' | b'b' | b'y' => {}
            b'x' => {
                return Err(
                    "$2x$ bcrypt hashes (crypt_blowfish's buggy variant) are not supported; \
                     re-hash with `rnats passwd`"
                        .into(),
                );
            }
            _ => return Err(format!("unknown bcrypt variant \"{}\"", &s[..4])),
        }
        let cost = u32::from(b[4] - b'0') * 10 + u32::from(b[5] - b'0');
        if !(4..=31).contains(&cost) {
            return Err(format!("bcrypt cost {cost} is outside 4..31"));
        }
        if b.len() != 60 || !b[7..].iter().all(|&c| bcrypt_b64(c)) {
            return Err("malformed bcrypt hash (expected 60 characters)".into());
        }
        Ok(Secret::Bcrypt {
            hash: Arc::from(s),
            cost,
        })
    }

    /// Is `other` the same configured value? For noticing that a reloaded
    /// configuration changed it; logins are checked by the auth module.
    pub(crate) fn same_config(&self, other: &Secret) -> bool {
        match (self, other) {
            (Secret::Plain(a), Secret::Plain(b)) => a == b,
            (Secret::Bcrypt { hash: a, .. }, Secret::Bcrypt { hash: b, .. }) => a == b,
            _ => false,
        }
    }

    pub fn is_bcrypt(&self) -> bool {
        matches!(self, Secret::Bcrypt { .. })
    }

    pub fn bcrypt_cost(&self) -> Option<u32> {
        match self {
            Secret::Bcrypt { cost, .. } => Some(*cost),
            Secret::Plain(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_classifies() {
        assert!(matches!(Secret::parse("s3cret"), Ok(Secret::Plain(_))));
        assert!(matches!(Secret::parse("$notbcrypt"), Ok(Secret::Plain(_))));
        let h = "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG";
        assert_eq!(Secret::parse(h).expect("bcrypt").bcrypt_cost(), Some(11));
        for v in ["b", "y"] {
            let hv = h.replacen("2a", &format!("2{v}"), 1);
            assert!(Secret::parse(&hv).expect("variant").is_bcrypt());
        }
        assert!(Secret::parse(&h.replacen("2a", "2x", 1)).is_err());
        assert!(Secret::parse(&h.replacen("2a", "2q", 1)).is_err());
        assert!(Secret::parse(&h[..59]).is_err());
        assert!(Secret::parse(&h.replacen("$11$", "$32$", 1)).is_err());
        assert!(Secret::parse(&h.replacen('W', "#", 1)).is_err());
        assert!(Secret::parse("").is_err());
        assert_eq!(
            format!("{:?}", Secret::parse("hunter2").expect("plain")),
            "Secret::Plain([REDACTED])"
        );
    }
}
