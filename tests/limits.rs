//! Server limits and protocol errors: what the offending client sees, that
//! only that connection is affected, and the server's own bookkeeping.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::StreamExt;

/// A healthy client still gets its own messages through the server.
async fn assert_server_works(client: &async_nats::Client) {
    let subject = client.new_inbox();
    let mut sub = client.subscribe(subject.clone()).await.unwrap();
    client
        .publish(subject, Bytes::from_static(b"still here"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_payload_is_enforced() {
    let server = start(rnats::Options {
        max_payload: 1024,
        ..opts()
    })
    .await;
    let addr = server.client_addr();

    // The client learns max_payload from INFO and refuses to send more.
    let c = nats(addr).await;
    assert_eq!(c.server_info().max_payload, 1024);
    let err = c
        .publish("big", vec![0u8; 2048].into())
        .await
        .expect_err("too large for the server");
    assert_eq!(
        err.kind(),
        async_nats::client::PublishErrorKind::MaxPayloadExceeded
    );

    // Exactly max_payload is fine.
    let mut sub = c.subscribe("big").await.unwrap();
    barrier(&c).await;
    let mut raw = Raw::handshake(addr, CONNECT).await;
    let mut data = b"PUB big 1024\r\n".to_vec();
    data.extend(std::iter::repeat_n(b'x', 1024));
    data.extend_from_slice(b"\r\n");
    raw.send(&data).await;
    raw.ping_collect().await;
    assert_eq!(next_msg(&mut sub).await.payload.len(), 1024);

    // A raw client that declares more is refused before it sends the
    // payload, and disconnected.
    let local = raw.stream.local_addr().unwrap();
    let cid = cid_of(&server, local).expect("raw client is connected");
    raw.send(b"PUB big 1025\r\n").await;
    let got = raw.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR 'Maximum Payload Violation'\r\n"
    );
    assert_eventually(
        || !server.ctx.conns.contains_key(&cid),
        TIMEOUT,
        "violator removed",
    )
    .await;
    assert_server_works(&c).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_the_extra_client() {
    let server = start(rnats::Options {
        max_connections: 2,
        ..opts()
    })
    .await;
    let addr = server.client_addr();
    let first = Raw::handshake(addr, CONNECT).await;
    let mut second = Raw::handshake(addr, CONNECT).await;
    assert_eq!(server.ctx.conns.len(), 2);

    // The third gets INFO, then the error, then EOF.
    let mut third = Raw::connect(addr).await;
    let got = third.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR 'maximum connections exceeded'\r\n"
    );
    assert_eq!(server.ctx.conns.len(), 2);
    // The admitted ones are unaffected.
    let (lines, _) = second.ping_collect().await;
    assert!(lines.is_empty());

    // Once one leaves there is room again.
    drop(first);
    assert_eventually(|| server.ctx.conns.len() == 1, TIMEOUT, "first gone").await;
    let mut again = Raw::handshake(addr, CONNECT).await;
    again.ping_collect().await;
    assert_eq!(server.ctx.conns.len(), 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_subscriptions_refuses_extra_subs_but_keeps_the_connection() {
    let server = start(rnats::Options {
        max_subscriptions: 3,
        ..opts()
    })
    .await;
    let mut c = Raw::handshake(server.client_addr(), CONNECT).await;
    c.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nSUB d 4\r\n")
        .await;
    let (lines, _) = c.ping_collect().await;
    assert_eq!(lines, ["-ERR 'maximum subscriptions exceeded'"]);
    assert_eventually(|| sub_count(&server) == 3, TIMEOUT, "subscription count").await;

    // Still connected: the three subscriptions work, the fourth does not exist.
    c.send(b"PUB c 1\r\nx\r\nPUB d 1\r\ny\r\n").await;
    let (lines, msgs) = c.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(msgs.len(), 1);
    assert_eq!((msgs[0].subject.as_str(), msgs[0].sid.as_str()), ("c", "3"));

    // Room again after an UNSUB.
    c.send(b"UNSUB 1\r\nSUB d 4\r\n").await;
    let (lines, _) = c.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eventually(|| sub_count(&server) == 3, TIMEOUT, "3 subs").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_while_healthy_subscriber_gets_everything() {
    const MSG_SIZE: usize = 1024;
    const TOTAL: usize = 20 * 1024 * 1024;
    const COUNT: usize = TOTAL / MSG_SIZE;
    // How far the publisher may run ahead of the healthy subscriber: well
    // under max_pending, so only the stuck client can exceed it.
    const WINDOW: usize = 64;

    let server = start(rnats::Options {
        max_pending: 256 * 1024,
        // nats-server (and Options::validate) refuse max_payload above
        // max_pending; the messages here are 1 KiB anyway.
        max_payload: 64 * 1024,
        ..opts()
    })
    .await;
    let addr = server.client_addr();

    // The stuck subscriber: a small receive buffer and it never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut stuck = Raw::from_stream(stream);
    let info = stuck.line().await.unwrap();
    assert!(info.starts_with("INFO "));
    stuck
        .send(format!("CONNECT {CONNECT}\r\nSUB firehose 1\r\n").as_bytes())
        .await;
    let (lines, _) = stuck.ping_collect().await;
    assert!(lines.is_empty());
    let stuck_cid = cid_of(&server, stuck.stream.local_addr().unwrap()).unwrap();

    // The healthy subscriber counts what it receives and checks the order.
    let healthy = nats(addr).await;
    let mut sub = healthy.subscribe("firehose").await.unwrap();
    barrier(&healthy).await;
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let reader = tokio::spawn(async move {
        for i in 0..COUNT {
            let m = tokio::time::timeout(TIMEOUT, sub.next())
                .await
                .expect("healthy subscriber stalled")
                .expect("healthy subscription ended");
            assert_eq!(m.payload.len(), MSG_SIZE);
            assert_eq!(
                u64::from_be_bytes(m.payload[..8].try_into().unwrap()),
                i as u64,
                "healthy subscriber lost or reordered a message"
            );
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    let publisher = nats(addr).await;
    for i in 0..COUNT {
        if i % WINDOW == 0 {
            assert_eventually(
                || received.load(Ordering::Relaxed) + WINDOW >= i,
                TIMEOUT,
                "healthy subscriber keeps up",
            )
            .await;
        }
        let mut payload = vec![0u8; MSG_SIZE];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        publisher.publish("firehose", payload.into()).await.unwrap();
    }
    publisher.flush().await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("healthy subscriber did not get every message")
        .unwrap();

    assert_eventually(
        || !server.ctx.conns.contains_key(&stuck_cid),
        TIMEOUT,
        "slow consumer disconnected",
    )
    .await;
    assert!(
        server.ctx.stats.slow_consumers.load(Ordering::Relaxed) >= 1,
        "slow consumer counted"
    );
    // The healthy subscriber and the publisher are still connected.
    assert_eq!(server.ctx.conns.len(), 2);
    assert_server_works(&healthy).await;
    // And the stuck client finds its socket closed once it reads.
    let (_, end) = stuck.read_to_end(TIMEOUT).await;
    assert!(end.is_closed(), "stuck client's socket still open");
    server.shutdown().await;
}

/// Send `input` on a fresh connection after a completed handshake and
/// return what came back before the server closed the connection.
async fn protocol_error(server: &rnats::Server, input: &[u8]) -> String {
    let mut c = Raw::handshake(server.client_addr(), CONNECT).await;
    let cid = cid_of(server, c.stream.local_addr().unwrap()).unwrap();
    c.send(input).await;
    let got = c.expect_closed().await;
    assert_eventually(
        || !server.ctx.conns.contains_key(&cid),
        TIMEOUT,
        "closed connection removed",
    )
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_only_the_offender() {
    let server = start_default().await;
    let bystander = nats(server.client_addr()).await;
    let mut bystander_sub = bystander.subscribe("watch").await.unwrap();
    barrier(&bystander).await;

    // Every malformed frame gets 'Unknown Protocol Operation' and a close.
    // (nats-server closes on malformed PUB arguments without any -ERR;
    // rnats deliberately says why: see tests/differential.rs.)
    let cases: &[(&[u8], &str)] = &[
        (b"FOO\r\n", "-ERR 'Unknown Protocol Operation'\r\n"),
        (b"SUB\r\n", "-ERR 'Unknown Protocol Operation'\r\n"),
        (
            b"PUB watch 2\r\nabc\r\n",
            "-ERR 'Unknown Protocol Operation'\r\n",
        ),
        (b"PUB foo\r\n", "-ERR 'Unknown Protocol Operation'\r\n"),
        (b"PUB foo x\r\n", "-ERR 'Unknown Protocol Operation'\r\n"),
    ];
    for (input, want) in cases {
        let got = protocol_error(&server, input).await;
        assert_eq!(got, *want, "for input {:?}", String::from_utf8_lossy(input));
        // Nothing of the malformed publish was delivered, and the
        // bystander's connection works.
        assert_server_works(&bystander).await;
    }
    assert_eq!(server.ctx.conns.len(), 1, "only the bystander is left");
    use futures::FutureExt;
    assert!(
        tokio::task::unconstrained(bystander_sub.next())
            .now_or_never()
            .is_none(),
        "a malformed publish was delivered"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_pings_close_a_stale_connection() {
    let server = start(rnats::Options {
        ping_interval: Duration::from_millis(200),
        ping_max: 2,
        ..opts()
    })
    .await;
    let mut stale = Raw::handshake(server.client_addr(), CONNECT).await;
    let cid = cid_of(&server, stale.stream.local_addr().unwrap()).unwrap();
    // A client that answers keeps its connection.
    let mut lively = Raw::handshake(server.client_addr(), CONNECT).await;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let lively_task = tokio::spawn(async move {
        let mut answered = 0;
        // Bounded: 100 PINGs at 200 ms is far more than the test needs.
        for _ in 0..100 {
            tokio::select! {
                _ = &mut stop_rx => break,
                l = lively.try_line(TIMEOUT) => match l {
                    Ok(Some(l)) if l == "PING" => {
                        lively.send(b"PONG\r\n").await;
                        answered += 1;
                    }
                    other => panic!("lively connection got {other:?}"),
                },
            }
        }
        (lively, answered)
    });

    let started = std::time::Instant::now();
    stale.expect("PING").await;
    stale.expect("PING").await;
    let rest = stale.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "-ERR 'Stale Connection'\r\n"
    );
    // Three intervals: two PINGs, then the check that finds both unanswered.
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eventually(
        || !server.ctx.conns.contains_key(&cid),
        TIMEOUT,
        "stale connection removed",
    )
    .await;
    assert!(server.ctx.stats.stale_connections.load(Ordering::Relaxed) >= 1);

    stop_tx.send(()).unwrap();
    let (mut lively, answered) = lively_task.await.unwrap();
    // Its PONGs count as traffic, so it is pinged every other interval.
    assert!(answered >= 1, "lively client saw {answered} PINGs");
    let (lines, _) = lively.ping_collect().await;
    assert!(lines.iter().all(|l| l == "PING"), "{lines:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_sends_connect_is_closed_after_auth_timeout() {
    let timeout = Duration::from_millis(300);
    let server = start(rnats::Options {
        auth_timeout: timeout,
        ..opts()
    })
    .await;
    let started = std::time::Instant::now();
    let mut silent = Raw::connect(server.client_addr()).await;
    let mut polite = Raw::handshake(server.client_addr(), CONNECT).await;
    let got = silent.expect_closed().await;
    let elapsed = started.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR 'Authentication Timeout'\r\n"
    );
    assert!(elapsed >= timeout, "closed too early: {elapsed:?}");
    // The client that did send CONNECT, connected at the same time, is fine.
    let (lines, _) = polite.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eventually(|| server.ctx.conns.len() == 1, TIMEOUT, "one left").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_deadline_cuts_off_a_stuck_subscriber() {
    let server = start(rnats::Options {
        write_deadline: Duration::from_millis(200),
        ..opts()
    })
    .await;
    let addr = server.client_addr();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = Raw::from_stream(socket.connect(addr).await.unwrap());
    stuck.line().await.unwrap();
    stuck
        .send(format!("CONNECT {CONNECT}\r\nSUB flood 1\r\n").as_bytes())
        .await;
    stuck.ping_collect().await;
    let cid = cid_of(&server, stuck.stream.local_addr().unwrap()).unwrap();

    // Well under max_pending (64 MiB) but far more than the socket buffers
    // hold, so the server's write blocks until the deadline.
    let p = nats(addr).await;
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    for _ in 0..256 {
        p.publish("flood", chunk.clone()).await.unwrap();
    }
    barrier(&p).await;
    assert_eventually(
        || !server.ctx.conns.contains_key(&cid),
        TIMEOUT,
        "stuck subscriber disconnected by the write deadline",
    )
    .await;
    assert!(server.ctx.stats.slow_consumers.load(Ordering::Relaxed) >= 1);
    assert_server_works(&p).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_before_a_close_always_arrives() {
    // The -ERR is queued just before the connection is torn down; it must
    // survive the cleanup racing with the writer's final flush.
    let server = start_default().await;
    for round in 0..100 {
        let mut c = Raw::handshake(server.client_addr(), CONNECT).await;
        c.send(b"FOO\r\n").await;
        let got = c.expect_closed().await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            "-ERR 'Unknown Protocol Operation'\r\n",
            "round {round}"
        );
    }
    assert_eventually(|| server.ctx.conns.is_empty(), TIMEOUT, "all closed").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_control_line_is_enforced() {
    let server = start(rnats::Options {
        max_control_line: 64,
        ..opts()
    })
    .await;
    // 64 bytes of arguments are fine...
    let mut c = Raw::handshake(server.client_addr(), CONNECT).await;
    let subject = "s".repeat(62);
    c.send(format!("SUB {subject} 1\r\n").as_bytes()).await;
    let (lines, _) = c.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    // ...65 are not.
    c.send(format!("SUB {subject}x 2\r\n").as_bytes()).await;
    let got = c.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR 'maximum control line exceeded'\r\n"
    );
    server.shutdown().await;
}

/// rnats tells a slow consumer why it is cut off (nats-server closes it
/// silently). A message larger than max_pending overflows at once, while
/// the subscriber's socket is still empty, so the line can be delivered.
/// max_payload may not exceed max_pending, but the MSG line that goes with
/// a max_payload-sized payload takes it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_told_why() {
    let server = start(rnats::Options {
        max_pending: 1024,
        max_payload: 1024,
        ..opts()
    })
    .await;
    let mut sub = Raw::handshake(server.client_addr(), CONNECT).await;
    sub.send(b"SUB big 1\r\n").await;
    let (lines, _) = sub.ping_collect().await;
    assert!(lines.is_empty());
    let publisher = nats(server.client_addr()).await;
    publisher
        .publish("big", vec![b'x'; 1024].into())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let got = sub.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR 'Slow Consumer'\r\n",
        "the slow consumer is told why, and gets nothing else"
    );
    assert!(server.ctx.stats.slow_consumers.load(Ordering::Relaxed) >= 1);
    assert_server_works(&publisher).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_sending_is_not_stale() {
    let server = start(rnats::Options {
        ping_interval: Duration::from_millis(100),
        ping_max: 2,
        ..opts()
    })
    .await;
    let mut busy = Raw::handshake(server.client_addr(), CONNECT).await;
    let cid = cid_of(&server, busy.stream.local_addr().unwrap()).unwrap();
    // Ten intervals of steady publishing, never answering a PING.
    let until = std::time::Instant::now() + Duration::from_millis(1000);
    while std::time::Instant::now() < until {
        busy.send(b"PUB busy 1\r\nx\r\n").await;
        // Pacing, not waiting for a condition: the point is the time passing.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.ctx.conns.contains_key(&cid),
        "busy client closed as stale"
    );
    // Once it goes quiet, the usual PING/stale cycle applies.
    let rest = busy.expect_closed().await;
    assert!(
        String::from_utf8_lossy(&rest).ends_with("-ERR 'Stale Connection'\r\n"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    server.shutdown().await;
}

/// A subscriber that reads, only more slowly than its publisher writes, is
/// not cut as a slow consumer: the publisher is paced by it (briefly
/// paused while the subscriber's queue is over three quarters of
/// max_pending), and every message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_subscriber_paces_its_publisher_instead_of_being_cut() {
    let server = start(rnats::Options {
        max_pending: 128 * 1024,
        max_payload: 64 * 1024,
        ..opts()
    })
    .await;
    let addr = server.client_addr();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = Raw::from_stream(socket.connect(addr).await.unwrap());
    slow.line().await.expect("INFO");
    slow.send(format!("CONNECT {CONNECT}\r\nSUB pace 1\r\n").as_bytes())
        .await;
    slow.ping_collect().await;
    // 2,000 x 1 KiB: 16 times max_pending, published in one burst.
    let mut publisher = Raw::handshake(addr, CONNECT).await;
    let mut msg = b"PUB pace 1024\r\n".to_vec();
    msg.extend(std::iter::repeat_n(b'p', 1024));
    msg.extend_from_slice(b"\r\n");
    let burst = msg.repeat(2000);
    let send = tokio::spawn(async move {
        publisher.send(&burst).await;
        publisher.ping_collect().await;
    });
    // Read 8 KiB at a time with a pause: slower than the burst arrives.
    use tokio::io::AsyncReadExt;
    let mut got = 0usize;
    let mut chunk = vec![0u8; 8192];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let want = 2000 * (1024 + "MSG pace 1 1024\r\n\r\n".len());
    while got < want && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(TIMEOUT, slow.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                assert!(
                    !String::from_utf8_lossy(&chunk[..n]).contains("-ERR"),
                    "cut off: {}",
                    String::from_utf8_lossy(&chunk[..n])
                );
                got += n;
            }
        }
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
    assert_eq!(got, want, "every message arrives");
    send.await.unwrap();
    assert_eq!(server.ctx.stats.slow_consumers.load(Ordering::Relaxed), 0);
    server.shutdown().await;
}
