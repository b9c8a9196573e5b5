//! Memory comes back after an attack is over: the real binary's resident
//! size returns to within 2x of its idle size within 10 s after 2,000 idle
//! connections (with and without authentication) or 200,000 subscriptions
//! are gone. Linux only (reads /proc); skips elsewhere.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    r.rlim_cur
}

struct Server {
    proc: Proc,
    addr: std::net::SocketAddr,
    _dir: TempDir,
}

async fn server(tag: &str, conf: &str) -> Server {
    let dir = TempDir::new(tag);
    let path = dir.path("mem.conf");
    std::fs::write(
        &path,
        format!("listen: 127.0.0.1:-1\nmax_connections: 10000\n{conf}"),
    )
    .unwrap();
    let mut proc = Proc::spawn(
        env!("CARGO_BIN_EXE_rnats-server"),
        &["-c", path.to_str().unwrap()],
        &dir.path("mem.log"),
    );
    let port = proc.client_port().await;
    Server {
        proc,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        _dir: dir,
    }
}

/// Open a connection, send `ops` after CONNECT, and wait for the PONG.
async fn client(addr: std::net::SocketAddr, connect: &str, ops: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut msg = format!("CONNECT {connect}\r\n").into_bytes();
    msg.extend_from_slice(ops);
    msg.extend_from_slice(b"PING\r\n");
    stream.write_all(&msg).await.unwrap();
    let mut raw = Raw::from_stream(stream);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let line = raw.line().await.expect("connection open");
        if line == "PONG" {
            return raw;
        }
        assert!(!line.starts_with("-ERR"), "{line}");
        assert!(Instant::now() < deadline, "no PONG");
    }
}

/// The idle size: after start and one client's visit (so the code a
/// client runs is paged in once), when the server has trimmed its heap.
async fn idle_rss(s: &Server, connect: &str) -> u64 {
    drop(client(s.addr, connect, b"").await);
    // Settled: the trim that follows a close has run when the size holds
    // still across a trim period (1 s); bounded.
    let pid = s.proc.pid();
    let mut last = rss_kib(pid).expect("rss");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let now = rss_kib(pid).expect("rss");
        if now == last || Instant::now() > deadline {
            return now.min(last);
        }
        last = now;
    }
}

async fn assert_returns(s: &Server, idle: u64, peak: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = peak;
    while Instant::now() < deadline {
        now = rss_kib(s.proc.pid()).expect("rss");
        if now <= 2 * idle {
            eprintln!("{what}: idle {idle} KiB, peak {peak} KiB, back to {now} KiB");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: idle {idle} KiB, peak {peak} KiB, still {now} KiB after 10 s");
}

fn skip() -> bool {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("SKIPPED: no /proc (not Linux)");
        return true;
    }
    if fd_limit() < 4500 {
        eprintln!("SKIPPED: the open-file limit is under 4,500 (ulimit -n)");
        return true;
    }
    false
}

async fn idle_connections(conf: &str, connect: &str, what: &str) {
    let s = server("mem-conns", conf).await;
    let idle = idle_rss(&s, connect).await;
    let mut conns = Vec::new();
    for _ in 0..20 {
        let batch = (0..100).map(|_| client(s.addr, connect, b""));
        conns.extend(futures::future::join_all(batch).await);
    }
    let peak = rss_kib(s.proc.pid()).expect("rss");
    drop(conns);
    assert_returns(&s, idle, peak, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_after_2000_idle_connections() {
    if skip() {
        return;
    }
    idle_connections("", "{}", "2000 connections, no auth").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_after_2000_idle_connections_with_auth() {
    if skip() {
        return;
    }
    idle_connections(
        "authorization { user: a, password: pw }\n",
        r#"{"user":"a","pass":"pw"}"#,
        "2000 connections, with auth",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_after_200000_subscriptions() {
    if skip() {
        return;
    }
    let s = server("mem-subs", "").await;
    let idle = idle_rss(&s, "{}").await;
    let mut conns = Vec::new();
    let big: Vec<u8> = (0..100_000)
        .flat_map(|i| format!("SUB big.{i}.x {i}\r\n").into_bytes())
        .collect();
    conns.push(client(s.addr, r#"{"verbose":false}"#, &big).await);
    for c in 0..200 {
        let ops: Vec<u8> = (0..500)
            .flat_map(|i| format!("SUB c{c}.{i} {i}\r\n").into_bytes())
            .collect();
        conns.push(client(s.addr, r#"{"verbose":false}"#, &ops).await);
    }
    let peak = rss_kib(s.proc.pid()).expect("rss");
    drop(conns);
    assert_returns(&s, idle, peak, "100,000 + 200 x 500 subscriptions").await;
}
