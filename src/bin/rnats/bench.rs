//! `rnats bench`: publishers, subscribers, queue groups and request/reply
//! over the raw protocol, reporting msgs/s, MB/s and latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

use crate::raw::{self, Conn, Error, Target};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Subject to use
    #[arg(default_value = "bench")]
    subject: String,
    /// Number of publishers (requesters with --request)
    #[arg(long = "pub", default_value_t = 1)]
    pubs: usize,
    /// Number of subscribers (repliers with --request)
    #[arg(long = "sub", default_value_t = 0)]
    subs: usize,
    /// Total messages to publish (requests to send with --request)
    #[arg(long = "msgs", default_value_t = 100_000)]
    msgs: u64,
    /// Message size, e.g. 16, 1KB
    #[arg(long = "size", default_value = "128")]
    size: String,
    /// Subscribers join this queue group
    #[arg(long)]
    queue: Option<String>,
    /// Request/reply mode: measure round-trip latency
    #[arg(long)]
    request: bool,
    /// Print results as one JSON object
    #[arg(long)]
    json: bool,
    /// No progress bar
    #[arg(long)]
    no_progress: bool,
    /// Subscribers (repliers) connect here instead, e.g. with another
    /// user's credentials to measure across accounts (imports), or to
    /// other nodes of a cluster; several comma-separated URLs spread the
    /// subscribers over them. Publishing waits until their interest has
    /// reached the publishers' server.
    #[arg(long, value_name = "URL[,URL...]")]
    sub_server: Option<String>,
}

/// Payloads of at least 8 bytes carry their send time for latency.
static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_nanos() -> u64 {
    BASE.elapsed().as_nanos() as u64
}

fn new_hist() -> Histogram<u64> {
    // 1 µs .. 100 s with 3 significant figures; the bounds are constants.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

struct Results {
    pub_rate: f64,
    sub_rate: f64,
    size: usize,
    hist: Histogram<u64>,
    elapsed: Duration,
    received: u64,
}

pub async fn run(
    server: &str,
    tlscacert: Option<&std::path::Path>,
    args: BenchArgs,
) -> Result<(), Error> {
    let size = rnats::config::parse_size(&args.size)
        .ok_or_else(|| format!("invalid --size \"{}\"", args.size))?;
    if args.pubs == 0 {
        return Err("--pub must be at least 1".into());
    }
    LazyLock::force(&BASE);
    let make_target = |url: &str| -> Result<Arc<Target>, Error> {
        let mut target = raw::parse_url(url)?;
        if let Some(ca) = tlscacert {
            let host = target
                .addr
                .rsplit_once(':')
                .map_or(target.addr.as_str(), |(h, _)| h)
                .trim_matches(|c| c == '[' || c == ']')
                .to_string();
            let name = rustls_pki_types::ServerName::try_from(host)?;
            target.tls = Some((raw::tls_connector(ca)?, name));
        }
        Ok(Arc::new(target))
    };
    let target = make_target(server)?;
    // Several URLs (comma-separated): subscribers spread over them, e.g.
    // over the other nodes of a cluster.
    let sub_targets: Vec<Arc<Target>> = match &args.sub_server {
        Some(urls) => urls
            .split(',')
            .filter(|u| !u.trim().is_empty())
            .map(|u| make_target(u.trim()))
            .collect::<Result<_, _>>()?,
        None => vec![target.clone()],
    };
    if sub_targets.is_empty() {
        return Err("--sub-server needs a URL".into());
    }
    let progress = if args.no_progress || args.json || args.msgs < 200_000 {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new(args.msgs);
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} msgs {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    };
    let r = if args.request {
        run_request(&target, &sub_targets, &args, size, &progress).await?
    } else {
        run_pubsub(&target, &sub_targets, &args, size, &progress).await?
    };
    progress.finish_and_clear();
    report(&args, &r);
    Ok(())
}

fn report(args: &BenchArgs, r: &Results) {
    let mb = |rate: f64| rate * r.size as f64 / (1024.0 * 1024.0);
    let pct = |q: f64| r.hist.value_at_quantile(q);
    if args.json {
        let v = serde_json::json!({
            "mode": if args.request { "request" } else { "pubsub" },
            "pubs": args.pubs, "subs": args.subs, "msgs": args.msgs, "size": r.size,
            "queue": args.queue.is_some(),
            "pub_msgs_per_sec": r.pub_rate, "sub_msgs_per_sec": r.sub_rate,
            "received": r.received, "elapsed_s": r.elapsed.as_secs_f64(),
            "latency_samples": r.hist.len(),
            "p50_us": pct(0.5), "p90_us": pct(0.9), "p99_us": pct(0.99),
            "p999_us": pct(0.999), "max_us": r.hist.max(),
        });
        println!("{v}");
        return;
    }
    println!(
        "rnats bench \"{}\": {} pub, {} sub{}, {} msgs x {} B in {:.3}s",
        args.subject,
        args.pubs,
        args.subs,
        args.queue
            .as_ref()
            .map(|q| format!(" (queue {q})"))
            .unwrap_or_default(),
        args.msgs,
        r.size,
        r.elapsed.as_secs_f64()
    );
    if args.request {
        println!("Request/reply: {:.0} round trips/sec", r.pub_rate);
    } else {
        println!(
            "Pub stats: {:.0} msgs/sec ~ {:.2} MB/sec",
            r.pub_rate,
            mb(r.pub_rate)
        );
        if args.subs > 0 {
            println!(
                "Sub stats: {:.0} msgs/sec ~ {:.2} MB/sec ({} received)",
                r.sub_rate,
                mb(r.sub_rate),
                r.received
            );
        }
    }
    if !r.hist.is_empty() {
        println!(
            "Latency (µs): p50 {} p90 {} p99 {} p99.9 {} max {} ({} samples)",
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(0.999),
            r.hist.max(),
            r.hist.len()
        );
    }
}

/// Split `total` over `n` workers.
fn share(total: u64, n: usize, i: usize) -> u64 {
    total / n as u64 + u64::from((i as u64) < total % n as u64)
}

async fn run_pubsub(
    target: &Arc<Target>,
    sub_targets: &[Arc<Target>],
    args: &BenchArgs,
    size: usize,
    progress: &ProgressBar,
) -> Result<Results, Error> {
    let expected_per_sub = if args.queue.is_some() {
        // The group as a whole receives each message once.
        args.msgs
    } else {
        args.msgs
    };
    let group_received = Arc::new(AtomicU64::new(0));
    let done = CancellationToken::new();
    let hist = Arc::new(Mutex::new(new_hist()));
    let ready = Arc::new(Barrier::new(args.subs + 1));
    let mut sub_tasks = Vec::new();
    for i in 0..args.subs {
        let sub_target = &sub_targets[i % sub_targets.len()];
        let mut conn = Conn::connect(sub_target, &format!("rnats-bench-sub-{i}")).await?;
        let sub_line = match &args.queue {
            Some(q) => format!("SUB {} {q} 1\r\n", args.subject),
            None => format!("SUB {} 1\r\n", args.subject),
        };
        conn.wr.write_all(sub_line.as_bytes()).await?;
        conn.flush().await?;
        if args.sub_server.is_some() && size > 0 {
            // Subscribers on another server of a cluster: wait until their
            // interest has reached the publishers' server (an empty probe
            // message arrives), or the first messages would be dropped.
            await_probe(target, &args.subject, &mut conn).await?;
        }
        let ready = ready.clone();
        let group_received = group_received.clone();
        let done = done.clone();
        let hist = hist.clone();
        let queue = args.queue.is_some();
        let total = args.msgs;
        sub_tasks.push(tokio::spawn(async move {
            ready.wait().await;
            let r = subscriber(
                conn,
                size,
                queue,
                expected_per_sub,
                total,
                &group_received,
                &done,
            )
            .await;
            if let Ok((_, h, _)) = &r {
                hist.lock().unwrap_or_else(|e| e.into_inner()).add(h).ok();
            }
            r.map(|(n, _, last)| (n, last))
        }));
    }
    ready.wait().await;
    let start = Instant::now();
    let mut pub_tasks = Vec::new();
    for i in 0..args.pubs {
        let count = share(args.msgs, args.pubs, i);
        let conn = Conn::connect(target, &format!("rnats-bench-pub-{i}")).await?;
        let subject = args.subject.clone();
        let progress = progress.clone();
        pub_tasks.push(tokio::spawn(async move {
            publisher(conn, &subject, size, count, &progress).await
        }));
    }
    for t in pub_tasks {
        t.await??;
    }
    let pub_elapsed = start.elapsed();
    let mut received = 0;
    let mut last = start;
    for t in sub_tasks {
        let (n, l) = t.await??;
        received += n;
        last = last.max(l);
    }
    let sub_elapsed = last.duration_since(start);
    let hist = std::mem::replace(
        &mut *hist.lock().unwrap_or_else(|e| e.into_inner()),
        new_hist(),
    );
    Ok(Results {
        pub_rate: args.msgs as f64 / pub_elapsed.as_secs_f64(),
        sub_rate: if args.subs > 0 {
            received as f64 / sub_elapsed.as_secs_f64().max(1e-9)
        } else {
            0.0
        },
        size,
        hist,
        elapsed: pub_elapsed.max(sub_elapsed),
        received,
    })
}

/// Send `count` messages in pre-encoded batches, then PING/PONG so the
/// server has processed them all before the clock stops.
async fn publisher(
    mut conn: Conn,
    subject: &str,
    size: usize,
    count: u64,
    progress: &ProgressBar,
) -> Result<(), Error> {
    let head = format!("PUB {subject} {size}\r\n");
    let frame_len = head.len() + size + 2;
    let per_batch = (64 * 1024 / frame_len).clamp(1, 1024) as u64;
    let mut batch = Vec::with_capacity(frame_len * per_batch as usize);
    for _ in 0..per_batch.min(count.max(1)) {
        batch.extend_from_slice(head.as_bytes());
        batch.extend(std::iter::repeat_n(b'x', size));
        batch.extend_from_slice(b"\r\n");
    }
    let frames = batch.len() / frame_len;
    let mut sent = 0u64;
    while sent < count {
        let n = (count - sent).min(frames as u64) as usize;
        if size >= 8 {
            let ts = now_nanos().to_le_bytes();
            for f in 0..n {
                let off = f * frame_len + head.len();
                batch[off..off + 8].copy_from_slice(&ts);
            }
        }
        conn.wr.write_all(&batch[..n * frame_len]).await?;
        sent += n as u64;
        progress.inc(n as u64);
    }
    conn.flush().await
}

async fn subscriber(
    mut conn: Conn,
    size: usize,
    queue: bool,
    expected: u64,
    total: u64,
    group_received: &AtomicU64,
    done: &CancellationToken,
) -> Result<(u64, Histogram<u64>, Instant), Error> {
    let mut hist = new_hist();
    let mut n = 0u64;
    let mut last = Instant::now();
    let mut buf = std::mem::take(&mut conn.buf);
    loop {
        let mut pong = false;
        let mut got = 0u64;
        raw::parse_deliveries(&mut buf, &mut pong, |d| {
            // A late interest probe (see `await_probe`) is not a message.
            if size > 0 && d.payload.is_empty() {
                return;
            }
            got += 1;
            if size >= 8 && d.payload.len() >= 8 {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&d.payload[..8]);
                let lat = now_nanos().saturating_sub(u64::from_le_bytes(ts)) / 1000;
                hist.saturating_record(lat.max(1));
            }
        })?;
        if pong {
            conn.wr.write_all(b"PONG\r\n").await?;
        }
        if got > 0 {
            n += got;
            last = Instant::now();
            if queue {
                let all = group_received.fetch_add(got, Ordering::AcqRel) + got;
                if all >= total {
                    done.cancel();
                    return Ok((n, hist, last));
                }
            } else if n >= expected {
                return Ok((n, hist, last));
            }
        }
        buf.reserve(128 * 1024);
        let read = tokio::select! {
            _ = done.cancelled() => return Ok((n, hist, last)),
            r = tokio::time::timeout(Duration::from_secs(10), conn.rd.read_buf(&mut buf)) => r,
        };
        match read {
            Ok(Ok(0)) => return Err(format!("server closed the subscriber after {n} msgs").into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(format!("no message for 10s: received {n} of {expected}").into());
            }
        }
    }
}

/// Publish empty probes on `subject` at the publishers' server until one
/// reaches `conn` (bounded: 10 s).
async fn await_probe(target: &Arc<Target>, subject: &str, conn: &mut Conn) -> Result<(), Error> {
    let mut prober = Conn::connect(target, "rnats-bench-probe").await?;
    let probe = format!("PUB {subject} 0\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        prober.wr.write_all(probe.as_bytes()).await?;
        prober.wr.flush().await?;
        let until = Instant::now() + Duration::from_millis(20);
        loop {
            let mut pong = false;
            let mut seen = false;
            raw::parse_deliveries(&mut conn.buf, &mut pong, |d| {
                seen |= d.payload.is_empty();
            })?;
            if pong {
                conn.wr.write_all(b"PONG\r\n").await?;
            }
            if seen {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(
                    "subscriber interest did not reach the publishers' server in 10s".into(),
                );
            }
            conn.buf.reserve(4096);
            match tokio::time::timeout_at(
                tokio::time::Instant::from_std(until),
                conn.rd.read_buf(&mut conn.buf),
            )
            .await
            {
                Ok(Ok(0)) => return Err("server closed the subscriber".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => break,
            }
        }
    }
}

async fn run_request(
    target: &Arc<Target>,
    sub_targets: &[Arc<Target>],
    args: &BenchArgs,
    size: usize,
    progress: &ProgressBar,
) -> Result<Results, Error> {
    if args.subs == 0 {
        return Err("--request needs at least one replier (--sub N)".into());
    }
    let stop = CancellationToken::new();
    let mut repliers = Vec::new();
    for i in 0..args.subs {
        let sub_target = &sub_targets[i % sub_targets.len()];
        let mut conn = Conn::connect(sub_target, &format!("rnats-bench-replier-{i}")).await?;
        conn.wr
            .write_all(format!("SUB {} rnats-bench-repliers 1\r\n", args.subject).as_bytes())
            .await?;
        conn.flush().await?;
        if args.sub_server.is_some() {
            // Repliers on another server of a cluster (a probe has no
            // reply subject, so repliers ignore it).
            await_probe(target, &args.subject, &mut conn).await?;
        }
        let stop = stop.clone();
        repliers.push(tokio::spawn(replier(conn, stop)));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.pubs {
        let count = share(args.msgs, args.pubs, i);
        let mut conn = Conn::connect(target, &format!("rnats-bench-requester-{i}")).await?;
        let inbox = format!("_INBOX.rnatsbench{i}x{}", fastrand::u64(..));
        conn.wr
            .write_all(format!("SUB {inbox}.* 1\r\n").as_bytes())
            .await?;
        conn.flush().await?;
        let subject = args.subject.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            requester(conn, &subject, &inbox, size, count, &progress).await
        }));
    }
    let mut hist = new_hist();
    for t in tasks {
        let h = t.await??;
        hist.add(&h).ok();
    }
    let elapsed = start.elapsed();
    stop.cancel();
    for r in repliers {
        let _ = r.await;
    }
    Ok(Results {
        pub_rate: args.msgs as f64 / elapsed.as_secs_f64(),
        sub_rate: 0.0,
        size,
        hist,
        elapsed,
        received: args.msgs,
    })
}

/// One request at a time; latency is the full round trip.
async fn requester(
    mut conn: Conn,
    subject: &str,
    inbox: &str,
    size: usize,
    count: u64,
    progress: &ProgressBar,
) -> Result<Histogram<u64>, Error> {
    let mut hist = new_hist();
    let payload = vec![b'x'; size];
    let mut buf = std::mem::take(&mut conn.buf);
    let mut frame = Vec::with_capacity(size + 128);
    for i in 0..count {
        frame.clear();
        frame.extend_from_slice(format!("PUB {subject} {inbox}.{i} {size}\r\n").as_bytes());
        frame.extend_from_slice(&payload);
        frame.extend_from_slice(b"\r\n");
        let t0 = Instant::now();
        conn.wr.write_all(&frame).await?;
        let mut answered = false;
        while !answered {
            let mut pong = false;
            raw::parse_deliveries(&mut buf, &mut pong, |_| answered = true)?;
            if pong {
                conn.wr.write_all(b"PONG\r\n").await?;
            }
            if answered {
                break;
            }
            buf.reserve(64 * 1024);
            let n = tokio::time::timeout(Duration::from_secs(10), conn.rd.read_buf(&mut buf))
                .await
                .map_err(|_| format!("request {i} got no reply within 10s"))??;
            if n == 0 {
                return Err("server closed the requester".into());
            }
        }
        hist.saturating_record((t0.elapsed().as_micros() as u64).max(1));
        if i % 1024 == 0 {
            progress.inc(1024.min(count - i));
        }
    }
    Ok(hist)
}

/// Echo each request's payload to its reply subject, one write per batch.
async fn replier(mut conn: Conn, stop: CancellationToken) -> Result<(), Error> {
    let mut buf = std::mem::take(&mut conn.buf);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        let mut pong = false;
        raw::parse_deliveries(&mut buf, &mut pong, |d| {
            if let Some(reply) = d.reply {
                out.extend_from_slice(b"PUB ");
                out.extend_from_slice(reply);
                out.extend_from_slice(format!(" {}\r\n", d.payload.len()).as_bytes());
                out.extend_from_slice(d.payload);
                out.extend_from_slice(b"\r\n");
            }
        })?;
        if pong {
            out.extend_from_slice(b"PONG\r\n");
        }
        if !out.is_empty() {
            conn.wr.write_all(&out).await?;
            out.clear();
        }
        buf.reserve(64 * 1024);
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = conn.rd.read_buf(&mut buf) => {
                if r? == 0 {
                    return Ok(());
                }
            }
        }
    }
}
