//! Checking configured secrets (the [`Secret`] type itself is
//! configuration data, in `crate::config`): plain ones are compared in
//! constant time, bcrypt ones verified off the async workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

pub use crate::config::Secret;

impl Secret {
    /// Does `given` match? bcrypt work goes through `pool`, and runs only
    /// if `wanted()` still holds once a worker is free (None: skipped).
    pub(crate) async fn verify_if(
        &self,
        given: &str,
        pool: &BcryptPool,
        wanted: &(dyn Fn() -> bool + Sync),
    ) -> Option<Verdict> {
        match self {
            Secret::Plain(p) => Some(Verdict {
                ok: ct_eq(p.as_bytes(), given.as_bytes()),
                _worker: None,
            }),
            Secret::Bcrypt { hash, .. } => pool.verify_if(given, hash.clone(), wanted).await,
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

/// The cost field of a bcrypt hash (`$2b$12$...` is 12), if well formed.
pub fn bcrypt_cost_of(hash: &str) -> Option<u32> {
    let c = hash.get(4..6)?.parse::<u32>().ok()?;
    (hash.starts_with("$2") && hash.get(6..7) == Some("$") && (4..=31).contains(&c)).then_some(c)
}

/// The outcome of a verification. It keeps the bcrypt worker it ran on
/// until dropped, so the caller can record the outcome before the next
/// queued check (of the same guesser, maybe) asks whether it is still
/// wanted.
#[derive(Debug)]
pub struct Verdict {
    pub ok: bool,
    _worker: Option<OwnedSemaphorePermit>,
}

/// Runs bcrypt verifications on the blocking thread pool, at most
/// `workers` at a time, so a burst of logins queues instead of taking every
/// core away from message delivery.
#[derive(Debug)]
pub struct BcryptPool {
    sem: Arc<Semaphore>,
    workers: usize,
    verifications: AtomicU64,
    /// Verifications run, by cost.
    by_cost: [AtomicU64; 32],
    /// A running average of how long one verification takes, by cost, in
    /// nanoseconds (0: none measured yet).
    nanos: Arc<[AtomicU64; 32]>,
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
            by_cost: std::array::from_fn(|_| AtomicU64::new(0)),
            nanos: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
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

    /// Number of bcrypt verifications of the given cost run so far.
    pub fn verifications_at(&self, cost: u32) -> u64 {
        self.by_cost
            .get(cost as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// How long one verification of this cost takes here, once one has run.
    pub fn estimate(&self, cost: u32) -> Option<std::time::Duration> {
        let n = self.nanos.get(cost as usize)?.load(Ordering::Relaxed);
        (n > 0).then(|| std::time::Duration::from_nanos(n))
    }

    /// Verify `password` against `hash`. If the caller gives up (its future
    /// is dropped, e.g. on auth timeout) a verification already running
    /// keeps its permit until it ends, so the bound holds.
    pub async fn verify(&self, password: &str, hash: Arc<str>) -> bool {
        self.verify_if(password, hash, &|| true)
            .await
            .is_some_and(|v| v.ok)
    }

    /// Like [`verify`](Self::verify), but once a worker is free, run only
    /// if `wanted()` still says so (None: skipped). A check that queued
    /// behind others may have become pointless meanwhile (its source got
    /// banned); it then costs no bcrypt work.
    pub async fn verify_if(
        &self,
        password: &str,
        hash: Arc<str>,
        wanted: &(dyn Fn() -> bool + Sync),
    ) -> Option<Verdict> {
        let Ok(permit) = self.sem.clone().acquire_owned().await else {
            return Some(Verdict {
                ok: false,
                _worker: None,
            });
        };
        if !wanted() {
            return None;
        }
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let cost = bcrypt_cost_of(&hash);
        if let Some(c) = cost.and_then(|c| self.by_cost.get(c as usize)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = self.nanos.clone();
        let pw = Zeroizing::new(password.as_bytes().to_vec());
        // The permit travels with the work: if this future is dropped the
        // blocking task still holds it until bcrypt ends, so the bound
        // holds; otherwise it comes back inside the verdict.
        let done = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            // A hash the library cannot parse matches nothing.
            let ok = bcrypt::verify(&*pw, &hash).unwrap_or(false);
            if let Some(slot) = cost.and_then(|c| nanos.get(c as usize)) {
                let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let old = slot.load(Ordering::Relaxed);
                // New samples weigh a quarter: follows load, ignores spikes.
                let avg = if old == 0 {
                    took
                } else {
                    old - old / 4 + took / 4
                };
                slot.store(avg.max(1), Ordering::Relaxed);
            }
            (ok, permit)
        })
        .await;
        Some(match done {
            Ok((ok, permit)) => Verdict {
                ok,
                _worker: Some(permit),
            },
            Err(_) => Verdict {
                ok: false,
                _worker: None,
            },
        })
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
        assert_eq!(pool.verifications_at(4), 4);
        assert!(pool.estimate(4).is_some());
        assert_eq!(pool.estimate(5), None);
        // A check no longer wanted once a worker is free costs nothing.
        assert!(pool.verify_if("pw", hash4(), &|| false).await.is_none());
        assert_eq!(pool.verifications(), 4);
    }

    fn hash4() -> Arc<str> {
        Arc::from(bcrypt::hash("pw", 4).expect("hash").as_str())
    }

    #[test]
    fn cost_of_a_hash() {
        assert_eq!(bcrypt_cost_of(&dummy_bcrypt_hash(12)), Some(12));
        assert_eq!(bcrypt_cost_of("$2b$04$abc"), Some(4));
        assert_eq!(bcrypt_cost_of("$2b$99$abc"), None);
        assert_eq!(bcrypt_cost_of("$2b$4$"), None);
        assert_eq!(bcrypt_cost_of("plain"), None);
        assert_eq!(bcrypt_cost_of("é"), None);
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
