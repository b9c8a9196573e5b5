//! Small pieces every supervisor in the tree uses: a restart budget (how
//! many restarts in what window before a supervisor gives up and fails
//! itself, escalating to its own parent), a task handle that aborts its
//! task when dropped (so no task outlives the actor that owns it, even
//! when ractor skips `post_stop` after a failure), and panic messages.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An accept loop: hands each accepted socket to `accepted` (which returns
/// false to end the loop) until `shutdown`. Transient accept errors (out
/// of file descriptors, say) back off up to a second and retry rather than
/// spin, as nats-server does; an error that retrying cannot cure ends the
/// loop with its text, for the owning actor to fail on.
pub async fn accept_loop(
    what: &str,
    listener: &tokio::net::TcpListener,
    shutdown: &tokio_util::sync::CancellationToken,
    mut accepted: impl FnMut(tokio::net::TcpStream, std::net::SocketAddr) -> bool,
) -> Result<(), String> {
    let mut backoff = Duration::from_millis(5);
    loop {
        let r = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => r,
        };
        match r {
            Ok((stream, peer)) => {
                crate::busy_poll::watch_socket(std::os::fd::AsRawFd::as_raw_fd(&stream));
                backoff = Duration::from_millis(5);
                if !accepted(stream, peer) {
                    return Ok(());
                }
            }
            Err(e) => {
                tracing::error!("Temporary {what} accept error: {e}, sleeping {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                if e.kind() == std::io::ErrorKind::InvalidInput {
                    return Err(e.to_string());
                }
            }
        }
    }
}

/// At most `max` restarts within `window`, as OTP's restart intensity.
#[derive(Debug, Clone)]
pub struct RestartBudget {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    pub fn new(max: usize, window: Duration) -> Self {
        RestartBudget {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// The tree's default: 10 restarts of one supervisor's children within
    /// 10 seconds means something is broken for good; escalate.
    pub fn default_tree() -> Self {
        Self::new(10, Duration::from_secs(10))
    }

    /// Record a restart; false when the budget is spent (escalate instead).
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.max {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// A spawned task that is aborted when this handle is dropped.
pub struct TaskGuard(Option<tokio::task::JoinHandle<()>>);

impl TaskGuard {
    pub fn spawn<F>(fut: F) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        TaskGuard(Some(tokio::spawn(fut)))
    }

    /// Wait (up to `limit`) for the task to end by itself.
    pub async fn join(&mut self, limit: Duration) {
        if let Some(h) = self.0.as_mut() {
            let _ = tokio::time::timeout(limit, h).await;
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// The child a supervision event says has ended, with why; None for
/// events that are not an end (started, process-group changes).
pub fn ended(evt: &ractor::SupervisionEvent) -> Option<(ractor::ActorCell, String, bool)> {
    match evt {
        ractor::SupervisionEvent::ActorFailed(cell, err) => {
            Some((cell.clone(), err.to_string(), true))
        }
        ractor::SupervisionEvent::ActorTerminated(cell, _, reason) => Some((
            cell.clone(),
            reason.clone().unwrap_or_else(|| "stopped".into()),
            false,
        )),
        _ => None,
    }
}

pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_spends_and_refills() {
        let mut b = RestartBudget::new(3, Duration::from_millis(50));
        assert!(b.allow() && b.allow() && b.allow());
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow());
    }

    #[tokio::test]
    async fn guard_aborts_on_drop() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let g = TaskGuard::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(g);
        // The sender is dropped when the aborted task is torn down.
        assert!(rx.await.is_err());
    }
}
