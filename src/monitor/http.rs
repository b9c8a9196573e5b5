//! The monitoring HTTP server: hyper's HTTP/1.1 connection (keep-alive,
//! pipelining, a bounded request head and a deadline for reading it) over
//! a plain TCP stream or a TLS session, the same for both ports, and the
//! `monitor_auth` check in front of the endpoints.
//!
//! Credentials go through the same machinery as client logins: bcrypt in
//! the server's bounded pool, and the per-source failure limiter (a wrong
//! Basic password or Bearer token counts as a failed login; a banned
//! source is refused before any bcrypt work).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::auth::{AuditEvent, AuditResult, AuthMethod, audit, ct_eq};
use crate::config::MonitorAuth;
use crate::server::ServerContext;

/// Largest request head (request line and headers) accepted; a larger one
/// gets `431 Request Header Fields Too Large` and the connection closes.
pub const MAX_HEAD: usize = 16 * 1024;

/// Time a client has to send a whole request head, counted from when the
/// server starts waiting for it (so it also closes an idle keep-alive
/// connection). A client that dribbles its head is dropped after this.
pub const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A response write that makes no progress for this long (the client does
/// not read) closes the connection.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve HTTP/1.1 on one monitoring connection until the client closes it,
/// a bound is hit, or the server shuts down. `client_cert` says whether
/// the TLS layer verified a client certificate (the HTTPS port with
/// `monitor_auth { ca_file }`); it is false on the plain port.
pub async fn serve_connection<S>(
    ctx: Arc<ServerContext>,
    stream: S,
    peer: SocketAddr,
    client_cert: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(WriteStall::new(stream, WRITE_STALL_TIMEOUT));
    let shutdown = ctx.shutdown.clone();
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, req, peer, client_cert).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_header_size(MAX_HEAD)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!("{peer} - monitor connection: {e}");
            }
        }
        _ = shutdown.cancelled() => {}
    }
}

/// Answer one request: `monitor_auth` first, then the method, then the
/// endpoint.
async fn handle(
    ctx: &ServerContext,
    req: Request<Incoming>,
    peer: SocketAddr,
    client_cert: bool,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let opts = ctx.opts();
    let access = authorize(
        ctx,
        opts.monitor_auth.as_ref(),
        path,
        req.headers().get(header::AUTHORIZATION),
        peer,
        client_cert,
    )
    .await;
    match access {
        Access::Granted => {}
        Access::Denied => {
            let mut r = json_response(StatusCode::UNAUTHORIZED, &json!({"error": "unauthorized"}));
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"rnats monitoring\""),
            );
            return r;
        }
        Access::Banned => {
            return json_response(StatusCode::FORBIDDEN, &json!({"error": "forbidden"}));
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method not allowed"}),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path.trim_end_matches('/') == "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from(super::metrics::metrics(ctx))));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(super::metrics::CONTENT_TYPE),
        );
        return r;
    }
    let (status, body) = super::route(ctx, path, req.uri().query().unwrap_or(""));
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // hyper sends no body for HEAD, but keeps the Content-Length.
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[derive(Debug, PartialEq, Eq)]
enum Access {
    Granted,
    /// No or wrong credentials: 401 with a Basic challenge.
    Denied,
    /// The source is banned by the failure limiter: 403, nothing checked.
    Banned,
}

/// Decide whether a request may see `path`.
///
/// A request without an `Authorization` header is refused but not counted
/// as a failure (it is how a browser learns that credentials are needed);
/// one whose credentials do not match is counted with the failure limiter
/// shared with client logins. A configuration with only `ca_file` relies
/// on the TLS layer's client certificate, which exists only on the HTTPS
/// port: anywhere else it refuses (`Options::validate` already refuses
/// such a configuration beside a plain `http_port`).
async fn authorize(
    ctx: &ServerContext,
    m: Option<&MonitorAuth>,
    path: &str,
    given: Option<&HeaderValue>,
    peer: SocketAddr,
    client_cert: bool,
) -> Access {
    let Some(m) = m else {
        return Access::Granted;
    };
    if m.healthz_open && path.trim_end_matches('/') == "/healthz" {
        return Access::Granted;
    }
    if m.user.is_none() && m.token.is_none() {
        return if client_cert {
            Access::Granted
        } else {
            Access::Denied
        };
    }
    let auth = ctx.auth();
    let limiter = auth.limiter();
    let method = if m.user.is_some() {
        AuthMethod::UserPassword
    } else {
        AuthMethod::Token
    };
    // Monitor failures have a key of their own in the shared limiter: a
    // source guessing the monitor's credentials is refused there, and its
    // NATS clients are not (the limiter's per-(source, user) policy).
    let refuse_banned = |user: Option<&str>| {
        limiter
            .counters
            .banned_refusals
            .fetch_add(1, Ordering::Relaxed);
        audit(&AuditEvent {
            client: peer,
            cid: None,
            method,
            user,
            result: AuditResult::Banned,
            reason: "monitor: source banned after repeated failures",
        });
        Access::Banned
    };
    let banned = || limiter.is_banned_for(peer.ip(), Some(MONITOR_LIMITER_KEY));
    if banned() {
        return refuse_banned(None);
    }
    let Some(given) = given else {
        return Access::Denied;
    };
    // The same gate as client logins: the ban is asked again when a bcrypt
    // worker is free (a guess queued behind the one that got the source
    // banned runs no bcrypt), a failure is counted while the worker is
    // still held, and a match decided after a ban is refused.
    let (outcome, user) = credentials_match(m, given.as_bytes(), auth.bcrypt_pool(), &banned).await;
    match outcome {
        Outcome::Match if !banned() => Access::Granted,
        Outcome::Match | Outcome::Skipped => refuse_banned(user.as_deref()),
        Outcome::Mismatch(worker) => {
            limiter.record_failure_for(peer.ip(), Some(MONITOR_LIMITER_KEY));
            drop(worker);
            audit(&AuditEvent {
                client: peer,
                cid: None,
                method,
                user: user.as_deref(),
                result: AuditResult::Failed,
                reason: "monitor: wrong credentials",
            });
            Access::Denied
        }
    }
}

/// How a monitor credential check ended.
enum Outcome {
    Match,
    /// Wrong credentials; holds the bcrypt worker (if one ran) until the
    /// failure is counted.
    Mismatch(Option<crate::auth::Verdict>),
    /// Not checked: the source was banned while the check waited.
    Skipped,
}

/// Do the `Authorization` header's Basic user/password or Bearer token
/// match? Also returns the Basic user name given, for the audit log.
/// bcrypt runs in the shared pool, and only while `banned()` is false.
async fn credentials_match(
    m: &MonitorAuth,
    value: &[u8],
    pool: &crate::auth::BcryptPool,
    banned: &(dyn Fn() -> bool + Sync),
) -> (Outcome, Option<String>) {
    let wrong = (Outcome::Mismatch(None), None);
    let Ok(value) = std::str::from_utf8(value) else {
        return wrong;
    };
    let value = value.trim();
    let (scheme, cred) = value.split_once(' ').unwrap_or((value, ""));
    let cred = cred.trim();
    let check = async |secret: &crate::auth::Secret, given: &str, also: bool| match secret
        .verify_if(given, pool, &|| !banned())
        .await
    {
        None => Outcome::Skipped,
        Some(v) if v.ok && also => Outcome::Match,
        Some(v) => Outcome::Mismatch(Some(v)),
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        return match &m.token {
            Some(t) if !cred.is_empty() => (check(t, cred, true).await, None),
            _ => wrong,
        };
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return wrong;
    }
    let Ok(decoded) = data_encoding::BASE64.decode(cred.as_bytes()) else {
        return wrong;
    };
    let decoded = String::from_utf8_lossy(&decoded);
    let Some((user, pass)) = decoded.split_once(':') else {
        return wrong;
    };
    let outcome = match (&m.user, &m.password) {
        (Some(u), Some(p)) => {
            // Always check the password, so a wrong user costs the same.
            let user_ok = ct_eq(u.as_bytes(), user.as_bytes());
            check(p, pass, user_ok).await
        }
        _ => Outcome::Mismatch(None),
    };
    (outcome, Some(user.to_string()))
}

/// The limiter key monitor logins count under (no NATS user name can
/// collide with it: it is not a valid subject token character set).
const MONITOR_LIMITER_KEY: &str = "$monitor\u{0}";

/// A stream whose writes fail with `TimedOut` when they make no progress
/// for `limit` (hyper has no write timeout of its own), so a client that
/// stops reading a large response cannot hold the connection forever.
struct WriteStall<S> {
    inner: S,
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteStall<S> {
    fn new(inner: S, limit: Duration) -> Self {
        WriteStall {
            inner,
            limit,
            timer: None,
        }
    }

    /// The inner write is pending: start (or keep) the stall timer.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "monitor client does not read its response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.timer = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(cx, r)
    }
}
