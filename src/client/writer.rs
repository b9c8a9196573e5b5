//! The writer task of a connection: drain the outbound queue with
//! coalesced vectored writes, send keep-alive PINGs, and close the socket
//! with a last word when the connection ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::conn::{BoxWrite, errors};
use super::shared::ConnShared;
use crate::outbound::{CloseReason, Enqueued, write_segments};
use crate::server::ServerContext;

/// Drain the outbound queue, send keep-alive PINGs, and close the socket.
pub(super) async fn run_writer(shared: Arc<ConnShared>, ctx: Arc<ServerContext>, mut w: BoxWrite) {
    let opts = ctx.opts();
    let mut segs: Vec<Bytes> = Vec::new();
    // A zero interval would make tokio's interval panic; the configuration
    // refuses it, and this floor keeps a bad value from ever reaching here.
    let ping_interval = opts.ping_interval.max(Duration::from_millis(10));
    let start = Instant::now() + ping_interval;
    let mut ping = tokio::time::interval_at(start, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let closing = shared.closing.clone();
    'outer: loop {
        tokio::select! {
            biased;
            _ = closing.cancelled() => break,
            _ = shared.out.wait() => {}
            _ = ping.tick() => {
                // Like nats-server, skip the PING when the client sent data
                // during the last interval: it is evidently alive, and a busy
                // publisher that is slow to answer PINGs is not stale.
                if !shared.client_data.swap(false, Ordering::Relaxed) {
                    let out = shared.pings_out.fetch_add(1, Ordering::Relaxed) + 1;
                    if out > opts.ping_max {
                        shared.close(CloseReason::StaleConnection);
                        ctx.stats.stale_connections.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    // Counted toward max_pending like everything queued.
                    if shared.out.push_raw(b"PING\r\n") == Enqueued::SlowConsumer {
                        if shared.close(CloseReason::SlowConsumerPendingBytes) {
                            ctx.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                        }
                        break;
                    }
                }
            }
        }
        if shared.inject_writer_panic.load(Ordering::Relaxed) {
            panic!("injected fault in writer of cid {}", shared.cid);
        }
        loop {
            let n = shared.out.take(&mut segs);
            if n == 0 {
                break;
            }
            // A write stuck on a peer that stopped reading must not keep the
            // socket open until the write deadline once the connection has
            // been cut as a slow consumer; any other close lets the write
            // finish so a queued -ERR still arrives.
            let write =
                tokio::time::timeout(opts.write_deadline, write_segments(&mut w, &mut segs));
            tokio::pin!(write);
            let mut watch_close = true;
            let result = loop {
                tokio::select! {
                    r = &mut write => break Some(r),
                    _ = closing.cancelled(), if watch_close => {
                        if matches!(
                            shared.close_reason(),
                            Some(CloseReason::SlowConsumerPendingBytes)
                        ) {
                            break None;
                        }
                        watch_close = false;
                    }
                }
            };
            let Some(result) = result else {
                break 'outer;
            };
            match result {
                Ok(Ok(())) => shared.out.written(n),
                Ok(Err(_)) => {
                    shared.close(CloseReason::WriteError);
                    break 'outer;
                }
                Err(_) => {
                    if shared.close(CloseReason::SlowConsumerWriteDeadline) {
                        ctx.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            "{} - cid:{} - Slow Consumer Detected: WriteDeadline of {:?} exceeded",
                            shared.peer,
                            shared.cid,
                            opts.write_deadline
                        );
                    }
                    break 'outer;
                }
            }
        }
    }
    // Say why, briefly, then close. A slow consumer's backlog is dropped.
    let final_flush = async {
        // A publisher may be in the middle of an in-place flush: let it
        // finish its frame (it stops at the next one, the queue is sealed)
        // and put back what it did not write.
        shared.out.seal();
        shared.out.direct_idle().await;
        match shared.close_reason() {
            Some(CloseReason::SlowConsumerPendingBytes)
            | Some(CloseReason::SlowConsumerWriteDeadline) => {
                // Unlike nats-server (which closes silently) the client is
                // told why, when its socket still has room for the line.
                segs.clear();
                shared.out.close();
                w.write_all(errors::SLOW_CONSUMER).await
            }
            Some(CloseReason::StaleConnection) => {
                shared.out.close();
                w.write_all(errors::STALE_CONNECTION).await
            }
            _ => {
                segs.clear();
                shared.out.take(&mut segs);
                shared.out.close();
                write_segments(&mut w, &mut segs).await
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), final_flush).await;
    let _ = tokio::time::timeout(Duration::from_millis(100), w.shutdown()).await;
}
