//! Lame duck mode (SIGUSR2, `--signal ldm`), as nats-server does it: stop
//! accepting clients, tell the connected ones with an INFO carrying
//! `"ldm":true` (clients then prefer another server of their list), wait
//! the grace period, then close the clients spread over the rest of
//! `lame_duck_duration` so they do not all reconnect elsewhere at once.
//! The caller shuts the server down afterwards.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Server;
use super::supervisor::SupervisorMsg;
use crate::client::{ClientSupMsg, CloseReason, ConnCtl};

/// The shortest pause between two batches of closes.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

impl Server {
    /// Run lame duck mode to its end (all clients closed). Returns at once
    /// if it is already running.
    pub async fn lame_duck(&self) {
        let ctx = &self.ctx;
        if ctx.lame_duck.swap(true, Ordering::AcqRel) {
            return;
        }
        let opts = ctx.opts();
        tracing::info!("Entering lame duck mode, stop accepting new clients");
        let _ = self.supervisor.cast(SupervisorMsg::StopAccepting);
        // Peers stop offering our client URL to their clients.
        if let Some(c) = ctx.cluster.get() {
            c.announce_lame_duck();
        }
        if ctx.conns.is_empty() {
            return;
        }
        if let Some(sup) = ctx.client_sup() {
            let _ = sup.cast(ClientSupMsg::BroadcastInfo(ctx.async_info_line()));
        }
        let grace = opts.lame_duck_grace_period;
        tracing::info!("Waiting {grace:?} before closing clients");
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = ctx.shutdown.cancelled() => return,
        }
        let cids: Vec<u64> = ctx.conns.iter().map(|c| *c.key()).collect();
        let spread = opts
            .lame_duck_duration
            .saturating_sub(grace)
            .max(Duration::from_secs(1));
        let (batch, interval) = close_schedule(cids.len(), spread);
        tracing::info!("Closing {} existing clients over {spread:?}", cids.len());
        let chunks = cids.chunks(batch).count();
        for (i, chunk) in cids.chunks(batch).enumerate() {
            for &cid in chunk {
                ctx.control(
                    cid,
                    ConnCtl::Kick {
                        reason: CloseReason::LameDuck,
                        err: None,
                    },
                );
            }
            if i + 1 == chunks {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = ctx.shutdown.cancelled() => return,
            }
        }
    }
}

/// How many clients to close at a time, and how long to wait between
/// batches, to spread `n` closes over `spread`.
fn close_schedule(n: usize, spread: Duration) -> (usize, Duration) {
    let n = n.max(1);
    let interval = spread / n as u32;
    if interval >= MIN_INTERVAL {
        return (1, interval);
    }
    let batches = (spread.as_nanos() / MIN_INTERVAL.as_nanos()).max(1) as usize;
    (n.div_ceil(batches), MIN_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_spread_over_the_duration() {
        assert_eq!(
            close_schedule(10, Duration::from_secs(1)),
            (1, Duration::from_millis(100))
        );
        let (batch, interval) = close_schedule(100_000, Duration::from_secs(10));
        assert_eq!(interval, MIN_INTERVAL);
        assert_eq!(batch, 10);
        assert_eq!(close_schedule(0, Duration::from_secs(1)).0, 1);
    }
}
