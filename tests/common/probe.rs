//! Delivery probes for multi-server tests: waits that hold on any server
//! implementing the NATS protocol, without sleeps or server internals.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;

use super::TIMEOUT;

/// Wait until `publisher`'s server knows every subscription `subscriber`
/// made so far. Subscribe a fresh subject on `subscriber` and publish to it
/// from `publisher` until one arrives. This relies on a server forwarding
/// one connection's subscriptions to a peer in order (nats-server sends an
/// account's interest changes down one route connection as they happen):
/// once the probe's interest has reached the publisher's server, every
/// earlier subscription or unsubscription of the same account has too.
pub async fn wait_interest(publisher: &async_nats::Client, subscriber: &async_nats::Client) {
    let subject = subscriber.new_inbox();
    let mut sub = subscriber
        .subscribe(subject.clone())
        .await
        .expect("subscribe");
    probe_until_delivered(publisher, &subject, &mut sub, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("interest never propagated: {e}"));
    let _ = sub.unsubscribe().await;
}

/// Publish `subject` on `publisher` every 25 ms, each time with the same
/// payload unique to this call, until `sub` receives that payload (the
/// message is returned) or `timeout` passes. Other messages `sub` receives
/// meanwhile (earlier probes still in flight, say) are skipped.
pub async fn probe_until_delivered(
    publisher: &async_nats::Client,
    subject: &str,
    sub: &mut async_nats::Subscriber,
    timeout: Duration,
) -> Result<async_nats::Message, String> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let token = Bytes::from(format!(
        "probe-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let deadline = Instant::now() + timeout;
    let mut sent = 0u32;
    let mut skipped = 0u32;
    loop {
        // A publish on a disconnected client is buffered, not refused, so
        // errors here only mean the client is closed.
        publisher
            .publish(subject.to_string(), token.clone())
            .await
            .map_err(|e| format!("publish: {e}"))?;
        let _ = publisher.flush().await;
        sent += 1;
        let round = Instant::now() + Duration::from_millis(25);
        loop {
            match tokio::time::timeout_at(round, sub.next()).await {
                Ok(Some(m)) if m.payload == token => return Ok(m),
                Ok(Some(_)) => skipped += 1,
                Ok(None) => return Err("subscription ended".into()),
                Err(_) => break,
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nothing on {subject} after {sent} probes in {timeout:?} \
                 ({skipped} other messages skipped)"
            ));
        }
    }
}

/// Everything already queued to `sub`, without waiting.
pub fn drain_now(sub: &mut async_nats::Subscriber) -> Vec<async_nats::Message> {
    use futures::FutureExt;
    let mut out = Vec::new();
    // Bounded: a subscription's buffer is finite and nothing is awaited.
    // `unconstrained`: tokio's cooperative budget would otherwise make the
    // channel report "not ready" after 128 messages in one task turn.
    for _ in 0..10_000_000 {
        match tokio::task::unconstrained(sub.next()).now_or_never() {
            Some(Some(m)) => out.push(m),
            _ => break,
        }
    }
    out
}
