//! Busy polling before a runtime worker sleeps (`busy_poll` in the config).
//!
//! Why: when a worker has nothing left to run it blocks in `epoll_wait`,
//! and the next message has to wake it. On a virtual machine whose idle
//! vCPUs halt (no guest halt-polling, as on this project's 2-vCPU
//! Firecracker machines), waking a thread on a halted vCPU costs ~35 µs:
//! a request/reply round trip is four such wake-ups and spends >90 % of
//! its time in them. For a bounded time after it runs out of work, one
//! worker keeps its CPU awake instead, watching every client and route
//! socket for a new arrival; the moment one comes (or the time is up) it
//! goes on to park, and tokio's `epoll_wait` then returns at once. Go's
//! scheduler spins similarly before it sleeps. See docs/BENCHMARKS.md.
//!
//! The watch is a second epoll set (edge-triggered, `EPOLLIN`) holding
//! the accepted and dialed sockets; the kernel drops a socket from it when
//! the socket closes. It is only a hint: tokio's own epoll set still
//! delivers every event, so a socket missing here costs latency, never a
//! message.
//!
//! Bounds: one thread spins at a time, for at most the budget (capped at
//! 10 ms by the config) per park, yielding its CPU to any runnable thread
//! on each turn. A busy server rarely parks, so it rarely spins; an idle
//! one parks once and sleeps. `busy_poll: 0` turns it off.

use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a spin ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A watched socket received data.
    Arrival,
    /// The budget ran out with nothing arriving.
    Budget,
    /// Not spun: off, or another thread is spinning.
    Skipped,
}

struct Watch {
    epfd: RawFd,
    budget_ns: AtomicU64,
    spinning: AtomicBool,
}

static WATCH: OnceLock<Option<Watch>> = OnceLock::new();

impl Watch {
    fn new() -> Option<Watch> {
        // SAFETY: a plain syscall; the descriptor lives for the process.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            tracing::warn!(
                "busy polling off: epoll_create1 failed: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(Watch {
            epfd,
            budget_ns: AtomicU64::new(0),
            spinning: AtomicBool::new(false),
        })
    }

    fn add(&self, fd: RawFd) {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        // SAFETY: `fd` is an open socket held by the caller, `ev` is valid
        // for the call. A failure only loses the hint for this socket.
        unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    }

    fn spin(&self, started: impl FnOnce()) -> Outcome {
        let budget = Duration::from_nanos(self.budget_ns.load(Ordering::Relaxed));
        if budget.is_zero() || self.spinning.swap(true, Ordering::Acquire) {
            return Outcome::Skipped;
        }
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // Edge-triggered events queued while nobody spun are old news.
        while poll(self.epfd, &mut evs) == evs.len() {}
        started();
        let t0 = Instant::now();
        let outcome = loop {
            if poll(self.epfd, &mut evs[..1]) > 0 {
                break Outcome::Arrival;
            }
            if t0.elapsed() >= budget {
                break Outcome::Budget;
            }
            // Let any runnable thread on this CPU (a client of ours on the
            // same machine, say) go first.
            std::thread::yield_now();
        };
        self.spinning.store(false, Ordering::Release);
        outcome
    }

    fn set_budget(&self, budget: Duration) {
        let ns = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX);
        self.budget_ns.store(ns, Ordering::Relaxed);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once. (The process-wide watch
        // is never dropped.)
        unsafe { libc::close(self.epfd) };
    }
}

fn watch() -> Option<&'static Watch> {
    WATCH.get_or_init(Watch::new).as_ref()
}

/// Set the budget (at start and on reload); zero turns spinning off.
pub fn set_budget(budget: Duration) {
    if let Some(w) = watch() {
        w.set_budget(budget);
    }
}

/// Watch a socket for arrivals. Called for every accepted or dialed
/// connection while its descriptor is open; closing it unwatches it.
pub fn watch_socket(fd: RawFd) {
    if let Some(w) = WATCH.get().and_then(Option::as_ref) {
        w.add(fd);
    }
}

/// The runtime's `on_thread_park` hook: spin until an arrival or the
/// budget, unless off or another worker already is spinning.
pub fn before_park() {
    if let Some(w) = WATCH.get().and_then(Option::as_ref) {
        let _ = w.spin(|| {});
    }
}

/// Non-blocking `epoll_wait`: the number of events taken (0 on error).
fn poll(epfd: RawFd, evs: &mut [libc::epoll_event]) -> usize {
    // SAFETY: `evs` is a valid, writable buffer of `evs.len()` events.
    let n = unsafe { libc::epoll_wait(epfd, evs.as_mut_ptr(), evs.len() as i32, 0) };
    usize::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn spins_until_an_arrival_or_the_budget() {
        // A watch set of its own: the process-wide one is shared by tests.
        let w = Watch::new().expect("epoll");
        let (mut tx, rx) = UnixStream::pair().expect("socketpair");
        w.add(rx.as_raw_fd());
        w.set_budget(Duration::from_millis(2));

        // Nothing arrives: the budget ends the spin.
        assert_eq!(w.spin(|| {}), Outcome::Budget);

        // Data sent before the spin is old news; data sent once it has
        // started ends it, long before the budget would.
        tx.write_all(b"old").expect("write");
        w.set_budget(Duration::from_secs(30));
        assert_eq!(
            w.spin(|| tx.write_all(b"new").expect("write")),
            Outcome::Arrival
        );

        // One spinner at a time.
        w.spinning.store(true, Ordering::Relaxed);
        assert_eq!(w.spin(|| panic!("must not start")), Outcome::Skipped);
        w.spinning.store(false, Ordering::Relaxed);

        // Off: no spin at all.
        w.set_budget(Duration::ZERO);
        assert_eq!(w.spin(|| panic!("must not start")), Outcome::Skipped);
    }
}
