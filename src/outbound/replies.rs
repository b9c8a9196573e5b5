//! Response permissions (`allow_responses`): a client whose publish
//! permissions do not allow a subject may still publish to it when it is
//! the reply subject of a message delivered to that client, at most `max`
//! times and within `expires` of the delivery, as in nats-server.
//!
//! The delivery engine records reply subjects as it queues messages for
//! the client (only connections with the permission pay for it); the
//! client's reader asks before refusing a publish.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::FxHashMap;

/// Prune spent and expired entries after this many new ones (or after
/// `PRUNE_EVERY`), as nats-server does.
const PRUNE_AFTER_INSERTS: usize = 4096;
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// At most this many reply subjects are tracked per connection: past it
/// the oldest half is dropped (a flood of requests that the client never
/// answers must not grow memory without bound; nats-server has no cap).
pub const MAX_TRACKED_REPLIES: usize = 64 * 1024;

/// The limits of a response permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Responses allowed per delivered reply subject (0: no limit).
    pub max: u64,
    /// How long a reply subject stays publishable (None: no limit).
    pub expires: Option<Duration>,
}

struct Resp {
    at: Instant,
    used: u64,
}

/// Reply subjects delivered to one client, with how often each was used.
pub struct ReplyTracker {
    limits: ResponseLimits,
    map: FxHashMap<Bytes, Resp>,
    since_prune: usize,
    last_prune: Instant,
}

impl ReplyTracker {
    pub fn new(limits: ResponseLimits) -> Self {
        ReplyTracker {
            limits,
            map: FxHashMap::default(),
            since_prune: 0,
            last_prune: Instant::now(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A message with reply subject `reply` was delivered: it may be
    /// answered again (a redelivery re-arms the entry, as in nats-server).
    pub fn record(&mut self, reply: &[u8]) {
        let now = Instant::now();
        match self.map.get_mut(reply) {
            Some(r) => *r = Resp { at: now, used: 0 },
            None => {
                self.map
                    .insert(Bytes::copy_from_slice(reply), Resp { at: now, used: 0 });
            }
        }
        self.since_prune += 1;
        if self.since_prune > PRUNE_AFTER_INSERTS
            || now.duration_since(self.last_prune) > PRUNE_EVERY
        {
            self.prune(now);
        }
    }

    /// May the client publish to `subject` as a response? Counts the use.
    pub fn allow(&mut self, subject: &[u8]) -> bool {
        let ResponseLimits { max, expires } = self.limits;
        let Some(r) = self.map.get_mut(subject) else {
            return false;
        };
        if expires.is_some_and(|e| r.at.elapsed() > e) {
            self.map.remove(subject);
            return false;
        }
        r.used += 1;
        if max > 0 && r.used >= max {
            // Spent: the next attempt would be refused anyway.
            self.map.remove(subject);
        }
        true
    }

    fn prune(&mut self, now: Instant) {
        if let Some(e) = self.limits.expires {
            self.map.retain(|_, r| now.duration_since(r.at) <= e);
        }
        if self.map.len() > MAX_TRACKED_REPLIES {
            // Keep the newest half.
            let mut ages: Vec<Instant> = self.map.values().map(|r| r.at).collect();
            let mid = ages.len() / 2;
            let (_, &mut cutoff, _) = ages.select_nth_unstable(mid);
            self.map.retain(|_, r| r.at > cutoff);
        }
        self.since_prune = 0;
        self.last_prune = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_and_unknown_subjects() {
        let mut t = ReplyTracker::new(ResponseLimits {
            max: 2,
            expires: None,
        });
        assert!(!t.allow(b"_INBOX.1"), "never delivered");
        t.record(b"_INBOX.1");
        assert!(t.allow(b"_INBOX.1"));
        assert!(t.allow(b"_INBOX.1"));
        assert!(!t.allow(b"_INBOX.1"), "max reached");
        assert!(t.is_empty(), "spent entries are dropped");
        // Redelivery re-arms.
        t.record(b"_INBOX.1");
        assert!(t.allow(b"_INBOX.1"));
    }

    #[test]
    fn unlimited_max() {
        let mut t = ReplyTracker::new(ResponseLimits {
            max: 0,
            expires: None,
        });
        t.record(b"r");
        for _ in 0..100 {
            assert!(t.allow(b"r"));
        }
    }

    #[test]
    fn expiry() {
        let mut t = ReplyTracker::new(ResponseLimits {
            max: 0,
            expires: Some(Duration::ZERO),
        });
        t.record(b"r");
        std::thread::sleep(Duration::from_millis(2));
        assert!(!t.allow(b"r"));
    }

    #[test]
    fn bounded() {
        let mut t = ReplyTracker::new(ResponseLimits {
            max: 1,
            expires: None,
        });
        for i in 0..(MAX_TRACKED_REPLIES * 2 + 10) {
            t.record(format!("_INBOX.{i}").as_bytes());
        }
        assert!(t.len() <= MAX_TRACKED_REPLIES + PRUNE_AFTER_INSERTS + 1);
        // The newest is still answerable.
        assert!(t.allow(format!("_INBOX.{}", MAX_TRACKED_REPLIES * 2 + 9).as_bytes()));
    }
}
