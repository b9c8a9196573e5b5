//! Configured secrets (passwords and tokens), compared in constant time
//! when plain and verified off the async workers when bcrypt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

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

    pub fn is_bcrypt(&self) -> bool {
        matches!(self, Secret::Bcrypt { .. })
    }

    pub fn bcrypt_cost(&self) -> Option<u32> {
        match self {
            Secret::Bcrypt { cost, .. } => Some(*cost),
            Secret::Plain(_) => None,
        }
    }

    /// Does `given` match? bcrypt work goes through `pool`.
    pub(crate) async fn verify(&self, given: &str, pool: &BcryptPool) -> bool {
        match self {
            Secret::Plain(p) => ct_eq(p.as_bytes(), given.as_bytes()),
            Secret::Bcrypt { hash, .. } => pool.verify(given, hash.clone()).await,
        }
    }
}

/// Constant-time equality that does not leak the length either: both
/// sides are hashed to 32 bytes first, then compared with `subtle`.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a);
    let db = ring::digest::digest(&ring::digest::SHA256, b);
    da.as_ref().ct_eq(db.as_ref()).into()
}

/// A well-formed bcrypt hash of the given cost that no password matches
/// (its digest is all zero bits). Verifying against it costs exactly what a
/// real verification of that cost does, which is the point: unknown users
/// must not answer faster than wrong passwords.
pub fn dummy_bcrypt_hash(cost: u32) -> String {
    format!("$2a${:02}${}", cost.clamp(4, 31), ".".repeat(53))
}

/// Runs bcrypt verifications on the blocking thread pool, at most
/// `workers` at a time, so a burst of logins queues instead of taking every
/// core away from message delivery.
#[derive(Debug)]
pub struct BcryptPool {
    sem: Arc<Semaphore>,
    workers: usize,
    verifications: AtomicU64,
}

impl BcryptPool {
    /// `workers == 0` picks [`BcryptPool::default_workers`].
    pub fn new(workers: usize) -> BcryptPool {
        let workers = if workers == 0 {
            Self::default_workers()
        } else {
            workers
        };
        BcryptPool {
            sem: Arc::new(Semaphore::new(workers)),
            workers,
            verifications: AtomicU64::new(0),
        }
    }

    /// Half the cores, at least one: logins may use at most half the CPU.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get() / 2)
            .unwrap_or(1)
            .max(1)
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Number of bcrypt verifications run so far.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Verify `password` against `hash`. If the caller gives up (its future
    /// is dropped, e.g. on auth timeout) a verification already running
    /// keeps its permit until it ends, so the bound holds.
    pub async fn verify(&self, password: &str, hash: Arc<str>) -> bool {
        let Ok(permit) = self.sem.clone().acquire_owned().await else {
            return false;
        };
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let pw = Zeroizing::new(password.as_bytes().to_vec());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // A hash the library cannot parse matches nothing.
            bcrypt::verify(&*pw, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
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

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(ct_eq(b"", b""));
    }

    #[tokio::test]
    async fn bcrypt_verify_and_dummy() {
        let pool = BcryptPool::new(1);
        let hash: Arc<str> = Arc::from(bcrypt::hash("pw", 4).expect("hash").as_str());
        assert!(pool.verify("pw", hash.clone()).await);
        assert!(!pool.verify("nope", hash).await);
        let dummy = dummy_bcrypt_hash(4);
        assert!(Secret::parse(&dummy).expect("dummy parses").is_bcrypt());
        assert!(!pool.verify("", Arc::from(dummy.as_str())).await);
        assert!(!pool.verify("pw", Arc::from("$2a$04$garbage")).await);
        assert_eq!(pool.verifications(), 4);
    }

    #[tokio::test]
    async fn pool_bounds_concurrency() {
        let pool = Arc::new(BcryptPool::new(1));
        assert_eq!(pool.workers(), 1);
        let hash: Arc<str> = Arc::from(bcrypt::hash("pw", 4).expect("hash").as_str());
        // Hold the only permit: a verification must wait for it.
        let held = pool.sem.clone().acquire_owned().await.expect("permit");
        let p2 = pool.clone();
        let h2 = hash.clone();
        let task = tokio::spawn(async move { p2.verify("pw", h2).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!task.is_finished());
        drop(held);
        assert!(task.await.expect("join"));
    }
}
