//! The `pending_checks` gauge of credential checks in progress.

use super::LimiterCounters;

/// A credential check in progress, for the `pending_checks` gauge. Dropped
/// before it was decided (the client hung up, the auth timeout passed), it
/// counts as abandoned.
pub(super) struct Pending<'a> {
    counters: &'a LimiterCounters,
    pub(super) decided: bool,
}

impl<'a> Pending<'a> {
    pub(super) fn new(counters: &'a LimiterCounters) -> Self {
        counters
            .pending_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Pending {
            counters,
            decided: false,
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.counters.pending_checks.fetch_sub(1, Relaxed);
        if !self.decided {
            self.counters.abandoned_checks.fetch_add(1, Relaxed);
        }
    }
}
