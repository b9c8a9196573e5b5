//! Checking configured secrets (the [`Secret`] type itself is
//! configuration data, in `crate::config`): plain ones are compared in
//! constant time, bcrypt ones verified off the async workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

pub use crate::config::Secret;

impl Secret {
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
