//! The plain monitoring port as an HTTP server: keep-alive, the bounds on
//! the request head (size and read time, so a slowloris is dropped while
//! others are served), a client that never reads its responses dropped
//! after the write-stall bound, percent-decoded query strings, `monitor_auth`
//! failures counted by the failure limiter shared with client logins, and
//! a reload that would open the port refused.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use rnats::auth::Secret;
use rnats::config::MonitorAuth;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

async fn start_http(monitor_auth: Option<MonitorAuth>) -> rnats::Server {
    start(rnats::Options {
        http_port: -1,
        monitor_auth,
        ..opts()
    })
    .await
}

/// One HTTP/1.1 response read off a kept-alive connection.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: String,
}

/// An HTTP/1.1 client on one TCP connection that stays open between
/// requests (responses are delimited by their Content-Length).
struct Http {
    stream: TcpStream,
    buf: BytesMut,
}

impl Http {
    async fn connect(addr: SocketAddr) -> Http {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Http {
            stream,
            buf: BytesMut::new(),
        }
    }

    async fn get(&mut self, path: &str, extra: &str) -> Option<Resp> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n");
        self.stream.write_all(req.as_bytes()).await.ok()?;
        self.response().await
    }

    /// Read one response; None if the server closed first.
    async fn response(&mut self) -> Option<Resp> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let msg = self.buf.split_to(end + 4 + len);
                    let body = String::from_utf8_lossy(&msg[end + 4..]).into_owned();
                    let status = head.split_whitespace().nth(1)?.parse().ok()?;
                    return Some(Resp { status, head, body });
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("HTTP response timed out")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Wait (bounded) for the server to close the connection.
    async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        data_encoding::BASE64.encode(format!("{user}:{pass}").as_bytes())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let server = start_http(None).await;
    let mut c = Http::connect(server.http_addr.unwrap()).await;
    let first = c.get("/healthz", "").await.expect("first response");
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.body.contains("\"ok\""), "{first:?}");
    assert!(
        !first
            .head
            .to_ascii_lowercase()
            .contains("connection: close"),
        "the server asked to close: {first:?}"
    );
    let second = c
        .get("/varz", "")
        .await
        .expect("second response on the same connection");
    assert_eq!(second.status, 200);
    let v: serde_json::Value = serde_json::from_str(&second.body).unwrap();
    assert_eq!(v["server_id"], serde_json::json!(server.ctx.server_id));
    // HEAD: the headers, no body; the connection still serves after it.
    c.stream
        .write_all(b"HEAD /varz HTTP/1.1\r\nHost: x\r\n\r\nGET /subsz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head_line = c.response_head_only().await;
    assert!(head_line.starts_with("HTTP/1.1 200"), "{head_line}");
    let third = c.response().await.expect("response after HEAD");
    assert_eq!(third.status, 200);
    assert!(third.body.contains("num_subscriptions"), "{third:?}");
    // POST is refused, with Allow.
    c.stream
        .write_all(b"POST /varz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let post = c.response().await.expect("response to POST");
    assert_eq!(post.status, 405);
    assert!(
        post.head.to_ascii_lowercase().contains("allow: get, head"),
        "{post:?}"
    );
    server.shutdown().await;
}

impl Http {
    /// The head of a response that has no body (HEAD): everything up to
    /// the blank line, whatever Content-Length says.
    async fn response_head_only(&mut self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let msg = self.buf.split_to(end + 4);
                return String::from_utf8_lossy(&msg).into_owned();
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("HTTP response timed out")
                .expect("read");
            assert!(n > 0, "closed before the HEAD response");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A client that sends its head a byte every 100 ms never finishes it;
/// it is dropped once the head-read bound passes, and meanwhile another
/// client is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_dropped_while_others_are_served() {
    let server = start_http(None).await;
    let addr = server.http_addr.unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let head = b"GET /varz HTTP/1.1\r\nHost: localhost\r\nX-Padding: ";
    let bound = rnats::monitor::HEAD_READ_TIMEOUT + Duration::from_secs(3);
    let dribble = async {
        let mut sent = 0usize;
        // A byte every 100 ms, bounded in count: well past the bound.
        for i in 0..(bound.as_millis() / 100) as usize {
            let byte = head.get(i).copied().unwrap_or(b'a');
            if slow.write_all(&[byte]).await.is_err() {
                return (true, sent);
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Once the server has closed its side, a read says so.
            let mut probe = [0u8; 64];
            if let Ok(r) =
                tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
            {
                match r {
                    Ok(0) | Err(_) => return (true, sent),
                    Ok(_) => {}
                }
            }
        }
        (false, sent)
    };
    let served = async {
        // While the slow client dribbles, a normal one is served.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let (status, body) = http_get(addr, "/varz").await;
        (status, body, t.elapsed())
    };
    let ((dropped, sent), (status, body, took)) = tokio::join!(dribble, served);
    assert_eq!(status, 200, "{body}");
    assert!(
        took < Duration::from_secs(2),
        "normal client waited {took:?}"
    );
    assert!(dropped, "slow client still connected after {sent} bytes");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= rnats::monitor::HEAD_READ_TIMEOUT - Duration::from_millis(500),
        "dropped too early ({elapsed:?}): the head was still arriving"
    );
    assert!(elapsed < bound, "dropped only after {elapsed:?}");
    server.shutdown().await;
}

/// An idle keep-alive connection is closed by the same bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    let server = start_http(None).await;
    let mut c = Http::connect(server.http_addr.unwrap()).await;
    assert_eq!(c.get("/healthz", "").await.unwrap().status, 200);
    assert!(
        c.closed_within(rnats::monitor::HEAD_READ_TIMEOUT + Duration::from_secs(3))
            .await,
        "idle connection kept open"
    );
    server.shutdown().await;
}

/// A head over the limit gets 431 (or a close), never a 200, and the
/// server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_head_is_refused() {
    let server = start_http(None).await;
    let addr = server.http_addr.unwrap();
    let mut c = Http::connect(addr).await;
    let big = "a".repeat(2 * rnats::monitor::MAX_HEAD);
    let req = format!("GET /varz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // The server may stop reading (and close) before all of it is sent.
    let _ = c.stream.write_all(req.as_bytes()).await;
    match c.response().await {
        None => {}
        Some(r) => assert_eq!(r.status, 431, "{r:?}"),
    }
    assert!(c.closed_within(TIMEOUT).await, "connection kept open");
    // Many headers adding up past the limit: the same.
    let mut c = Http::connect(addr).await;
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /varz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let _ = c.stream.write_all(req.as_bytes()).await;
    if let Some(r) = c.response().await {
        assert_ne!(r.status, 200, "{r:?}");
    }
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_strings_are_percent_decoded() {
    let server = start_http(None).await;
    let addr = server.http_addr.unwrap();
    let client = nats(server.client_addr()).await;
    let _sub = client.subscribe("some.subject").await.unwrap();
    barrier(&client).await;
    // subs=%74rue is subs=true; limit=%32 is 2; offset=%30 is 0.
    let v = http_json(addr, "/connz?subs=%74rue&limit=%32&offset=%30").await;
    assert_eq!(v["limit"], 2, "{v}");
    assert_eq!(v["offset"], 0, "{v}");
    // (The client may also hold its request-inbox subscription.)
    let list = v["connections"][0]["subscriptions_list"]
        .as_array()
        .unwrap_or_else(|| panic!("no subscriptions_list: {v}"));
    assert!(list.contains(&serde_json::json!("some.subject")), "{v}");
    // state=%63losed is state=closed (an empty list, not the open one);
    // `+` is a space, so "closed+" is not "closed".
    let v = http_json(addr, "/connz?state=%63losed").await;
    assert_eq!(v["total"], 0, "{v}");
    let v = http_json(addr, "/connz?state=closed+").await;
    assert_eq!(v["total"], 1, "{v}");
    server.shutdown().await;
}

/// Wrong monitor credentials count as failed logins with the limiter
/// shared with clients: after `max_failures` the source is refused by the
/// monitor, even with the right password, and bcrypt runs in the server's
/// bounded pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_auth_failures_ban_the_source() {
    let hash = bcrypt::hash("right", 4).unwrap();
    let mut o = opts();
    o.http_port = -1;
    o.auth_limits.max_failures = 3;
    o.monitor_auth = Some(MonitorAuth {
        user: Some("admin".into()),
        password: Some(Secret::parse(&hash).unwrap()),
        token: None,
        ca_file: None,
        healthz_open: true,
    });
    let server = start(o).await;
    let addr = server.http_addr.unwrap();
    let mut c = Http::connect(addr).await;
    // No credentials: a challenge, not a failure.
    let r = c.get("/varz", "").await.unwrap();
    assert_eq!(r.status, 401);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{r:?}"
    );
    let ok = c.get("/varz", &basic("admin", "right")).await.unwrap();
    assert_eq!(ok.status, 200, "{ok:?}");
    for _ in 0..3 {
        let r = c.get("/varz", &basic("admin", "wrong")).await.unwrap();
        assert_eq!(r.status, 401, "{r:?}");
    }
    let limiter = server.ctx.auth().limiter().clone();
    assert_eq!(limiter.stats().auth_failures, 3);
    assert_eq!(limiter.stats().bans, 1);
    let verified = server.ctx.auth().bcrypt_pool().verifications();
    assert_eq!(verified, 4, "bcrypt did not go through the server's pool");
    // Banned now: the right password no longer helps, and no bcrypt runs.
    let r = c.get("/varz", &basic("admin", "right")).await.unwrap();
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(server.ctx.auth().bcrypt_pool().verifications(), verified);
    assert!(limiter.stats().banned_refusals >= 1);
    // Probes still get /healthz.
    assert_eq!(c.get("/healthz", "").await.unwrap().status, 200);
    // The ban keys (source, monitor): NATS clients from the same source
    // are not the target and still connect.
    let mut raw = Raw::handshake(server.client_addr(), r#"{"verbose":false}"#).await;
    let (lines, _) = raw.ping_collect().await;
    assert!(lines.is_empty(), "{lines:?}");
    server.shutdown().await;
}

/// `monitor_auth { ca_file }` alone beside the plain port is refused at
/// start, and a reload to it keeps the running (protected) configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_only_beside_the_plain_port_is_refused() {
    let dir = TempDir::new("mon-ca");
    let ca = dir.path("ca.pem");
    std::fs::write(&ca, "placeholder").unwrap();
    let ca_only = MonitorAuth {
        user: None,
        password: None,
        token: None,
        ca_file: Some(ca.clone()),
        healthz_open: true,
    };
    let mut o = opts();
    o.http_port = -1;
    o.monitor_auth = Some(ca_only.clone());
    let err = match rnats::Server::start(o).await {
        Ok(_) => panic!("started with ca_file alone beside http_port"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("ca_file alone cannot protect the plain http_port"),
        "{err}"
    );

    let protected = MonitorAuth {
        user: None,
        password: None,
        token: Some(Secret::parse("tok").unwrap()),
        ca_file: None,
        healthz_open: true,
    };
    let server = start_http(Some(protected)).await;
    let addr = server.http_addr.unwrap();
    assert_eq!(http_get(addr, "/connz").await.0, 401);
    let mut reload = opts();
    reload.http_port = server.ctx.opts().http_port;
    reload.monitor_auth = Some(ca_only);
    let err = server.reload(reload).expect_err("reload accepted");
    assert!(err.contains("ca_file alone"), "{err}");
    assert_eq!(
        http_get(addr, "/connz").await.0,
        401,
        "reload opened the port"
    );
    // Dropping the token and adding a port: refused as nats-server does.
    let mut reload = opts();
    reload.http_port = 18222;
    let err = server.reload(reload).expect_err("reload accepted");
    assert!(
        err.contains("config reload not supported for HTTPPort"),
        "{err}"
    );
    assert_eq!(
        http_get(addr, "/connz").await.0,
        401,
        "reload opened the port"
    );
    server.shutdown().await;
}

/// A client that pipelines requests but never reads the responses fills
/// the socket buffers; the server's write then stalls and, after the
/// write-stall bound, the connection is closed (our writes start failing)
/// rather than held forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_is_dropped() {
    let server = start_http(None).await;
    let addr = server.http_addr.unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let batch = "GET /varz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100);
    let bound = rnats::monitor::WRITE_STALL_TIMEOUT + Duration::from_secs(15);
    let deadline = Instant::now() + bound;
    let mut sent = 0usize;
    let failed = loop {
        match tokio::time::timeout_at(deadline, c.write_all(batch.as_bytes())).await {
            Err(_) => break false,
            Ok(Err(_)) => break true,
            Ok(Ok(())) => sent += 100,
        }
        // Bounded in count too: kernel buffers hold a few MB at most.
        if sent >= 2_000_000 {
            break false;
        }
    };
    assert!(failed, "still connected after {sent} unread requests");
    // Others are served all along.
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    server.shutdown().await;
}

/// `/metrics`: the /varz numbers in Prometheus' text format under the
/// prometheus-nats-exporter's names, counting real traffic, and behind
/// `monitor_auth` like every other endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_counting_real_traffic() {
    let server = start_http(None).await;
    let c = async_nats::connect(format!("nats://{}", server.client_addr()))
        .await
        .expect("connect");
    let mut sub = c.subscribe("metrics.test").await.expect("sub");
    for _ in 0..3 {
        c.publish("metrics.test", "x".into()).await.expect("pub");
    }
    c.flush().await.expect("flush");
    for _ in 0..3 {
        tokio::time::timeout(TIMEOUT, futures::StreamExt::next(&mut sub))
            .await
            .expect("message within the timeout")
            .expect("subscription open");
    }
    let mut h = Http::connect(server.http_addr.unwrap()).await;
    let r = h.get("/metrics", "").await.expect("metrics response");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{r:?}"
    );
    let id = &server.ctx.server_id;
    let sample = |name: &str| -> f64 {
        let prefix = format!("{name}{{server_id=\"{id}\"}} ");
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in\n{}", r.body))
            .parse()
            .expect("a number")
    };
    // The publisher's 3 messages in, their 3 deliveries out (the client's
    // own PING/SUB are not messages).
    assert_eq!(sample("gnatsd_varz_in_msgs"), 3.0);
    assert_eq!(sample("gnatsd_varz_out_msgs"), 3.0);
    assert_eq!(sample("gnatsd_varz_connections"), 1.0);
    assert_eq!(sample("gnatsd_varz_subscriptions"), 1.0);
    assert!(r.body.contains("# TYPE gnatsd_varz_in_msgs counter\n"));
    assert!(r.body.contains("# TYPE gnatsd_varz_connections gauge\n"));
    // Every line is a comment or `name{labels} number`.
    for line in r.body.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').expect("name and value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = name.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
    }
    server.shutdown().await;

    // Behind monitor_auth: no credentials, no metrics.
    let server = start_http(Some(MonitorAuth {
        user: Some("admin".into()),
        password: Some(Secret::parse("s3cret-pw").unwrap()),
        token: None,
        ca_file: None,
        healthz_open: true,
    }))
    .await;
    let mut h = Http::connect(server.http_addr.unwrap()).await;
    let r = h.get("/metrics", "").await.expect("metrics response");
    assert_eq!(r.status, 401, "{r:?}");
    let r = h
        .get("/metrics", &basic("admin", "s3cret-pw"))
        .await
        .expect("metrics response");
    assert_eq!(r.status, 200, "{r:?}");
    server.shutdown().await;
}
