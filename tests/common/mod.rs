//! Helpers shared by the integration tests: starting servers (in-process
//! and as the real binary), a raw protocol client over TCP, bounded
//! condition polling, and a tiny HTTP GET for the monitor.
//!
//! Every wait here has a deadline; nothing loops forever.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod cluster;
pub mod probe;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Upper bound for anything a healthy server does "at once".
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Options for an in-process server on a random loopback port.
pub fn opts() -> rnats::Options {
    rnats::Options {
        port: -1,
        host: "127.0.0.1".into(),
        // Only used when http_port is set; keep the monitor on loopback too.
        http_host: "127.0.0.1".into(),
        ..Default::default()
    }
}

/// Start an in-process server. The options must pass the same rules as a
/// configuration file (`Options::validate`), so tests cannot depend on a
/// setup the real server would refuse.
pub async fn start(opts: rnats::Options) -> rnats::Server {
    if let Err(e) = opts.validate() {
        panic!("test options are invalid: {e}");
    }
    rnats::Server::start(opts).await.expect("server starts")
}

/// A server from configuration text written to a scratch file, on a random
/// loopback port (the directory lives as long as the returned guard).
pub async fn start_from_config(tag: &str, text: &str) -> (rnats::Server, TempDir) {
    let dir = TempDir::new(tag);
    let path = dir.path("server.conf");
    std::fs::write(&path, text).unwrap();
    let mut o = rnats::Options::read_file(&path).expect("config parses");
    o.port = -1;
    o.host = "127.0.0.1".into();
    (start(o).await, dir)
}

pub async fn start_default() -> rnats::Server {
    start(opts()).await
}

/// Poll `cond` every few milliseconds until it holds or `timeout` passes.
/// Returns whether it held.
pub async fn wait_until(mut cond: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `wait_until` that panics with `what` when the condition never holds.
pub async fn assert_eventually(cond: impl FnMut() -> bool, timeout: Duration, what: &str) {
    assert!(
        wait_until(cond, timeout).await,
        "timed out waiting for: {what}"
    );
}

/// An async-nats client connected to `addr`.
pub async fn nats(addr: SocketAddr) -> async_nats::Client {
    nats_with(addr, async_nats::ConnectOptions::new()).await
}

pub async fn nats_with(addr: SocketAddr, opts: async_nats::ConnectOptions) -> async_nats::Client {
    tokio::time::timeout(TIMEOUT, opts.connect(format!("nats://{addr}")))
        .await
        .expect("async-nats connect timed out")
        .expect("async-nats connects")
}

/// A round trip through the server on `client`'s connection: publish to a
/// private subject and wait for it to come back. The server handles one
/// connection's operations in order, so afterwards every SUB, UNSUB and PUB
/// this client sent before is in effect (its messages are queued to their
/// subscribers), and every message queued to this client before the echo
/// has been handed to its subscriptions. (async-nats `flush` only flushes
/// the socket; it is no such barrier.)
pub async fn barrier(client: &async_nats::Client) {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    next_msg(&mut sub).await;
    sub.unsubscribe().await.expect("unsubscribe");
}

/// Receive the next message of a subscription, failing after `TIMEOUT`.
pub async fn next_msg(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    use futures::StreamExt;
    tokio::time::timeout(TIMEOUT, sub.next())
        .await
        .expect("timed out waiting for a message")
        .expect("subscription ended")
}

/// The CONNECT most real clients send.
pub const CONNECT: &str = r#"{"verbose":false,"pedantic":false}"#;

/// How a raw connection ended up after we stopped sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The server closed the connection (FIN).
    Closed,
    /// The server reset the connection.
    Reset,
    /// Still open when we stopped waiting.
    Open,
}

impl End {
    pub fn is_closed(&self) -> bool {
        matches!(self, End::Closed | End::Reset)
    }
}

/// A protocol-level client over a plain TCP socket.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    /// The INFO line the server greeted us with (without CRLF), if read.
    pub info: Option<String>,
}

/// One MSG or HMSG delivered to a raw client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMsg {
    pub subject: String,
    pub sid: String,
    pub reply: Option<String>,
    /// Size of the header block for HMSG.
    pub header_len: Option<usize>,
    pub payload: Vec<u8>,
}

impl Raw {
    /// Connect and read the INFO line.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect");
        let mut raw = Raw::from_stream(stream);
        let info = raw.line().await.expect("INFO line");
        assert!(info.starts_with("INFO {"), "expected INFO, got {info:?}");
        raw.info = Some(info);
        raw
    }

    pub fn from_stream(stream: TcpStream) -> Raw {
        let _ = stream.set_nodelay(true);
        Raw {
            stream,
            buf: BytesMut::with_capacity(4096),
            info: None,
        }
    }

    /// Connect, read INFO, send CONNECT `json` and wait for the PONG of a
    /// PING: the server has then processed the CONNECT.
    pub async fn handshake(addr: SocketAddr, json: &str) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.send(format!("CONNECT {json}\r\nPING\r\n").as_bytes())
            .await;
        let mut line = raw.line().await.expect("reply to CONNECT");
        if line == "+OK" {
            line = raw.line().await.expect("PONG");
        }
        assert_eq!(line, "PONG", "handshake");
        raw
    }

    /// The INFO document as JSON.
    pub fn info_json(&self) -> serde_json::Value {
        let info = self.info.as_deref().expect("INFO was read");
        serde_json::from_str(info.trim_start_matches("INFO ").trim()).expect("INFO is JSON")
    }

    pub async fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).await.expect("write to server");
    }

    /// Read more bytes into the buffer. Ok(0) on EOF.
    async fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        self.buf.reserve(64 * 1024);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
        }
    }

    /// The next line (without its CRLF), `Ok(None)` at EOF.
    pub async fn try_line(&mut self, timeout: Duration) -> io::Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(i + 1);
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                return Ok(Some(line));
            }
            if self.fill(deadline).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next line; panics on EOF, error or timeout.
    pub async fn line(&mut self) -> Option<String> {
        match self.try_line(TIMEOUT).await {
            Ok(Some(l)) => Some(l),
            Ok(None) => None,
            Err(e) => panic!("reading a line: {e}"),
        }
    }

    /// Assert the next line is exactly `want`.
    pub async fn expect(&mut self, want: &str) {
        let got = self.line().await;
        assert_eq!(got.as_deref(), Some(want), "unexpected line from server");
    }

    /// Read exactly `n` bytes.
    pub async fn bytes(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        while self.buf.len() < n {
            let r = self.fill(deadline).await.expect("reading payload");
            assert!(r > 0, "EOF inside a payload");
        }
        self.buf.split_to(n).to_vec()
    }

    /// Parse a MSG/HMSG line (already read) and read its payload.
    pub async fn msg_from_line(&mut self, line: &str) -> RawMsg {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (subject, sid, reply, header_len, size) = match (parts[0], parts.len()) {
            ("MSG", 4) => (parts[1], parts[2], None, None, parts[3]),
            ("MSG", 5) => (parts[1], parts[2], Some(parts[3]), None, parts[4]),
            ("HMSG", 5) => (parts[1], parts[2], None, Some(parts[3]), parts[4]),
            ("HMSG", 6) => (parts[1], parts[2], Some(parts[3]), Some(parts[4]), parts[5]),
            _ => panic!("not a MSG line: {line:?}"),
        };
        let size: usize = size.parse().expect("size");
        let mut payload = self.bytes(size + 2).await;
        assert_eq!(&payload[size..], b"\r\n", "payload not followed by CRLF");
        payload.truncate(size);
        RawMsg {
            subject: subject.into(),
            sid: sid.into(),
            reply: reply.map(Into::into),
            header_len: header_len.map(|h| h.parse().expect("header size")),
            payload,
        }
    }

    /// Read the next message; panics if the next line is not MSG/HMSG.
    pub async fn msg(&mut self) -> RawMsg {
        let line = self.line().await.expect("a MSG line, got EOF");
        self.msg_from_line(&line).await
    }

    /// Send PING and collect everything that arrives before the PONG:
    /// protocol lines as they are, messages parsed.
    pub async fn ping_collect(&mut self) -> (Vec<String>, Vec<RawMsg>) {
        self.send(b"PING\r\n").await;
        let mut lines = Vec::new();
        let mut msgs = Vec::new();
        // Bounded: every iteration consumes a line, and `line` times out.
        for _ in 0..1_000_000 {
            let line = self.line().await.expect("EOF before PONG");
            if line == "PONG" {
                return (lines, msgs);
            }
            if line.starts_with("MSG ") || line.starts_with("HMSG ") {
                msgs.push(self.msg_from_line(&line).await);
            } else {
                lines.push(line);
            }
        }
        panic!("no PONG after a million lines");
    }

    /// Read until the server closes the connection (or `timeout` passes)
    /// and return everything that arrived.
    pub async fn read_to_end(&mut self, timeout: Duration) -> (Vec<u8>, End) {
        let deadline = Instant::now() + timeout;
        let end = loop {
            match self.fill(deadline).await {
                Ok(0) => break End::Closed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break End::Open,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break End::Reset,
                Err(e) => panic!("read error: {e}"),
            }
        };
        (self.buf.split().to_vec(), end)
    }

    /// Read until EOF, panicking if the connection is still open after `TIMEOUT`.
    pub async fn expect_closed(&mut self) -> Vec<u8> {
        let (bytes, end) = self.read_to_end(TIMEOUT).await;
        assert!(
            end.is_closed(),
            "connection still open; got {:?}",
            String::from_utf8_lossy(&bytes)
        );
        bytes
    }

    /// Discard buffered input.
    pub fn clear(&mut self) {
        self.buf.advance(self.buf.len());
    }
}

/// The cid of the server-side connection whose peer is `local` (our end).
pub fn cid_of(server: &rnats::Server, local: SocketAddr) -> Option<u64> {
    server
        .ctx
        .conns
        .iter()
        .find(|c| c.value().peer == local)
        .map(|c| *c.key())
}

/// Subscriptions currently in the server's router.
pub fn sub_count(server: &rnats::Server) -> usize {
    server.ctx.accounts.total_subscriptions()
}

// ---------------------------------------------------------------------------
// The real binaries.

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "rnats-test-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const RNATS_BIN: &str = env!("CARGO_BIN_EXE_rnats-server");

/// A server process we started; killed on drop if still running.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Start `bin` with `args` plus `-l <log>`; stdout and stderr are
    /// discarded (everything of interest goes to the log).
    pub fn spawn(bin: &str, args: &[&str], log: &Path) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .arg("-l")
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the log to contain `needle`; returns the whole log. Panics
    /// (with the log) if the process exits or the deadline passes first.
    pub async fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(needle) {
                return log;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited ({status}) before logging {needle:?}; log:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?} in the log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait until the server logged that it is ready and return the client port.
    pub async fn client_port(&mut self) -> u16 {
        let log = self.wait_log("Server is ready").await;
        log_port(&log, "Listening for client connections on ")
            .unwrap_or_else(|| panic!("no listening line in the log:\n{log}"))
    }

    /// Send a signal to the process (only ever our own child).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed: {}", io::Error::last_os_error());
    }

    /// Wait for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The port at the end of the first log line containing `prefix`
/// (e.g. "Listening for client connections on 0.0.0.0:4222").
pub fn log_port(log: &str, prefix: &str) -> Option<u16> {
    let line = log.lines().find(|l| l.contains(prefix))?;
    let addr = line.split(prefix).nth(1)?.trim();
    addr.rsplit(':').next()?.parse().ok()
}

/// Is `name` an executable on PATH?
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Minimal HTTP/1.1 GET: (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await?;
        Ok::<_, io::Error>(resp)
    };
    let resp = tokio::time::timeout(TIMEOUT, fut)
        .await
        .expect("HTTP request timed out")
        .expect("HTTP request");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

pub async fn http_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: bad JSON ({e}): {body}"))
}

/// GET a JSON document; `None` if the monitor does not answer (yet) or
/// answers with something else than 200 and JSON. Asks with HTTP/1.0 so
/// the body comes whole rather than chunked (nats-server chunks large
/// HTTP/1.1 answers), but decodes chunks anyway.
pub async fn try_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let get = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.ok()?;
        let text = String::from_utf8_lossy(&resp).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        if head.split_whitespace().nth(1) != Some("200") {
            return None;
        }
        let chunked = head
            .lines()
            .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
        let body = if chunked {
            dechunk(body)?
        } else {
            body.to_string()
        };
        serde_json::from_str(&body).ok()
    };
    tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .ok()
        .flatten()
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut rest: &str) -> Option<String> {
    let mut out = String::new();
    // Bounded: every round consumes at least the size line.
    while !rest.is_empty() {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
    Some(out)
}
