//! One client connection: an actor for its life cycle and control, plus a
//! reader task (parse, route, deliver) and a writer task (drain the
//! outbound queue with coalesced writes, keep the connection alive).
//!
//! The reader and writer are plain tasks rather than actor handlers
//! because a handler that blocks on a socket would starve the mailbox; the
//! actor stays responsive to `Kick` and supervision while they run, and a
//! panic in the reader is turned into an actor failure so the supervisor
//! sees it.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::shared::{CloseReason, ConnShared, Enqueued};
use crate::protocol::info::ConnectOptions;
use crate::protocol::subject;
use crate::protocol::{ClientOp, Limits, Parser, ProtocolError};
use crate::router::{Admit, LookupCache, SubResult, Subscription};
use crate::server::ServerContext;

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

pub struct ConnActor;

pub struct ConnArgs {
    pub shared: Arc<ConnShared>,
    pub ctx: Arc<ServerContext>,
    pub reader: BoxRead,
    pub writer: BoxWrite,
    /// INFO already went out (before a TLS handshake, or queued inside it).
    pub info_sent: bool,
}

pub enum ConnMsg {
    /// The reader finished (peer closed, error, or a close was requested).
    ReaderDone,
    /// The reader panicked: fail the actor so its supervisor cleans up.
    ReaderCrashed(String),
    /// Close this connection (monitoring, reload, shutdown).
    Kick(CloseReason),
    /// Fault injection for the supervision test: panic in the handler.
    #[doc(hidden)]
    InjectPanic,
}

pub struct ConnState {
    shared: Arc<ConnShared>,
}

impl Actor for ConnActor {
    type Msg = ConnMsg;
    type State = ConnState;
    type Arguments = ConnArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConnMsg>,
        args: ConnArgs,
    ) -> Result<ConnState, ActorProcessingErr> {
        let ConnArgs {
            shared,
            ctx,
            reader,
            writer,
            info_sent,
        } = args;
        // INFO goes first, before anything the client could trigger.
        if !info_sent {
            shared.out.send_now(&ctx.client_info_line(&shared));
        }
        tokio::spawn(run_writer(shared.clone(), ctx.clone(), writer));
        let reader_task = Reader::new(shared.clone(), ctx).run(reader);
        tokio::spawn(async move {
            let msg = match std::panic::AssertUnwindSafe(reader_task)
                .catch_unwind()
                .await
            {
                Ok(()) => ConnMsg::ReaderDone,
                Err(panic) => ConnMsg::ReaderCrashed(panic_message(&panic)),
            };
            // The actor may already be gone (kicked and stopped): fine.
            let _ = myself.cast(msg);
        });
        Ok(ConnState { shared })
    }

    async fn handle(
        &self,
        myself: ActorRef<ConnMsg>,
        msg: ConnMsg,
        state: &mut ConnState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConnMsg::ReaderDone => myself.stop(None),
            ConnMsg::ReaderCrashed(why) => {
                state.shared.close(CloseReason::Crashed);
                return Err(format!("connection reader panicked: {why}").into());
            }
            ConnMsg::Kick(reason) => {
                // The reader notices and reports ReaderDone.
                state.shared.close(reason);
            }
            ConnMsg::InjectPanic => panic!("injected fault in cid {}", state.shared.cid),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConnMsg>,
        state: &mut ConnState,
    ) -> Result<(), ActorProcessingErr> {
        state.shared.cleanup();
        Ok(())
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// `-ERR` lines with nats-server's exact wording.
pub mod errors {
    pub const UNKNOWN_OP: &[u8] = b"-ERR 'Unknown Protocol Operation'\r\n";
    pub const MAX_PAYLOAD: &[u8] = b"-ERR 'Maximum Payload Violation'\r\n";
    pub const MAX_CONTROL_LINE: &[u8] = b"-ERR 'maximum control line exceeded'\r\n";
    pub const INVALID_SUBJECT: &[u8] = b"-ERR 'Invalid Subject'\r\n";
    pub const INVALID_PUB_SUBJECT: &[u8] = b"-ERR 'Invalid Publish Subject'\r\n";
    /// Sent (best effort) to a client cut off as a slow consumer.
    pub const SLOW_CONSUMER: &[u8] = b"-ERR 'Slow Consumer'\r\n";
    pub const STALE_CONNECTION: &[u8] = b"-ERR 'Stale Connection'\r\n";
    pub const MAX_CONNECTIONS: &[u8] = b"-ERR 'maximum connections exceeded'\r\n";
    pub const MAX_SUBSCRIPTIONS: &[u8] = b"-ERR 'maximum subscriptions exceeded'\r\n";
    pub const AUTH_VIOLATION: &[u8] = b"-ERR 'Authorization Violation'\r\n";
    pub const AUTH_TIMEOUT: &[u8] = b"-ERR 'Authentication Timeout'\r\n";
}

const MIN_READ: usize = 512;
const MAX_READ: usize = 64 * 1024;

/// Per-connection reader: owns the parser and the publish-side state.
struct Reader {
    shared: Arc<ConnShared>,
    ctx: Arc<ServerContext>,
    parser: Parser,
    connected: bool,
    /// Authentication is configured: nothing but CONNECT before CONNECT.
    auth_required: bool,
    /// The authenticated user's permissions (None: everything allowed).
    perms: Option<Arc<crate::auth::Permissions>>,
    /// Publish-permission decisions by subject, so the check costs one
    /// hash lookup per publish.
    pub_allowed: rustc_hash::FxHashMap<Bytes, bool>,
    /// The `perms_generation` our `perms` came from.
    perms_generation: u64,
    verbose: bool,
    pedantic: bool,
    echo: bool,
    headers: bool,
    no_responders: bool,
    trace: bool,
    max_subs: usize,
    cache: LookupCache,
    /// Connections we queued messages to whose writers still need a wake-up
    /// (one per connection per read batch, not one per message).
    pcd: Vec<Arc<ConnShared>>,
    /// SUBs sent to shard actors whose acknowledgements we have not awaited.
    pending_subs: Vec<ractor::concurrency::OneshotReceiver<()>>,
    batch_msgs: u64,
    batch_bytes: u64,
    batch_out_msgs: u64,
    batch_out_bytes: u64,
}

/// Why the op loop stopped.
enum Stop {
    Close(CloseReason),
}

impl Reader {
    fn new(shared: Arc<ConnShared>, ctx: Arc<ServerContext>) -> Self {
        let opts = ctx.opts();
        Reader {
            parser: Parser::new(Limits {
                max_control_line: opts.max_control_line,
                max_payload: opts.max_payload,
            }),
            connected: false,
            // nats-server treats a client that has not said otherwise as
            // verbose and pedantic.
            verbose: true,
            pedantic: true,
            echo: true,
            headers: false,
            no_responders: false,
            trace: opts.trace,
            max_subs: opts.max_subscriptions,
            auth_required: ctx.auth().auth_required(),
            perms: None,
            pub_allowed: Default::default(),
            perms_generation: 0,
            cache: LookupCache::default(),
            pcd: Vec::new(),
            pending_subs: Vec::new(),
            batch_msgs: 0,
            batch_bytes: 0,
            batch_out_msgs: 0,
            batch_out_bytes: 0,
            shared,
            ctx,
        }
    }

    async fn run(mut self, mut rd: BoxRead) {
        let auth_deadline = Instant::now() + self.ctx.opts().auth_timeout;
        let mut buf = BytesMut::with_capacity(MIN_READ);
        let mut read_size = MIN_READ;
        let closing = self.shared.closing.clone();
        loop {
            buf.reserve(read_size.max(self.parser.needed(&buf)));
            let read = async {
                if self.connected {
                    rd.read_buf(&mut buf).await.map(Some)
                } else {
                    match tokio::time::timeout_at(auth_deadline, rd.read_buf(&mut buf)).await {
                        Ok(r) => r.map(Some),
                        Err(_) => Ok(None),
                    }
                }
            };
            let n = tokio::select! {
                biased;
                _ = closing.cancelled() => break,
                r = read => r,
            };
            let n = match n {
                Ok(Some(0)) => {
                    self.shared.close(CloseReason::ClientClosed);
                    break;
                }
                Ok(Some(n)) => {
                    self.shared
                        .client_data
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    n
                }
                Ok(None) => {
                    self.fail(errors::AUTH_TIMEOUT, CloseReason::AuthenticationTimeout);
                    break;
                }
                Err(_) => {
                    self.shared.close(CloseReason::ReadError);
                    break;
                }
            };
            // Adapt the read size like nats-server: grow while reads fill
            // the buffer, shrink when they do not, so idle connections stay small.
            if n >= read_size && read_size < MAX_READ {
                read_size *= 2;
            } else if n < read_size / 2 && read_size > MIN_READ {
                read_size /= 2;
            }
            let stop = self.process(&mut buf).await;
            self.end_batch();
            if let Err(Stop::Close(reason)) = stop {
                self.shared.close(reason);
                break;
            }
        }
        self.end_batch();
    }

    /// Queue an error for the client and close the connection.
    fn fail(&mut self, err: &[u8], reason: CloseReason) {
        self.shared.out.send_now(err);
        self.shared.close(reason);
    }

    async fn process(&mut self, buf: &mut BytesMut) -> Result<(), Stop> {
        loop {
            let op = match self.parser.next_op(buf) {
                Ok(Some(op)) => op,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.protocol_error(e)),
            };
            if self.trace {
                trace_op(&self.shared, &op);
            }
            if self.auth_required && !self.connected && !matches!(op, ClientOp::Connect(_)) {
                self.shared.out.push_raw(errors::AUTH_VIOLATION);
                return Err(Stop::Close(CloseReason::AuthenticationViolation));
            }
            match op {
                ClientOp::Pub {
                    subject,
                    reply,
                    headers,
                    header_len,
                    payload,
                } => {
                    if headers && !self.headers {
                        // HPUB from a client that did not negotiate headers.
                        return Err(Stop::Close(CloseReason::ProtocolViolation("HPUB")));
                    }
                    self.await_subs().await?;
                    // publish() sends the verbose +OK itself: nats-server
                    // sends it after a subject -ERR but before the message
                    // reaches any subscriber (the sender included).
                    self.publish(subject, reply, headers, header_len, payload);
                    continue;
                }
                ClientOp::Sub {
                    subject,
                    queue,
                    sid,
                } => {
                    // A rejected SUB gets its -ERR and no +OK, as in nats-server.
                    if !self.subscribe(subject, queue, sid)? {
                        continue;
                    }
                }
                ClientOp::Unsub { sid, max } => self.unsubscribe(&sid, max),
                ClientOp::Ping => {
                    self.await_subs().await?;
                    self.reply(b"PONG\r\n");
                    continue;
                }
                ClientOp::Pong => {
                    self.shared
                        .pings_out
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                ClientOp::Connect(json) => self.connect(&json).await?,
                ClientOp::Ignored => continue,
            }
            if self.verbose {
                self.reply(b"+OK\r\n");
            }
        }
    }

    /// Queue a reply to this client; its writer is woken at the batch end.
    fn reply(&mut self, data: &[u8]) {
        if self.shared.out.push_raw(data) == Enqueued::NeedsSignal {
            self.pcd.push(self.shared.clone());
        }
    }

    fn protocol_error(&mut self, e: ProtocolError) -> Stop {
        let (err, reason): (&[u8], _) = match e {
            ProtocolError::UnknownOp => (
                errors::UNKNOWN_OP,
                CloseReason::ProtocolViolation("unknown op"),
            ),
            ProtocolError::MaxControlLine => (
                errors::MAX_CONTROL_LINE,
                CloseReason::ProtocolViolation("max control line"),
            ),
            ProtocolError::MaxPayload { .. } => {
                (errors::MAX_PAYLOAD, CloseReason::MaxPayloadExceeded)
            }
            ProtocolError::BadArgs(op) => {
                // nats-server closes here without a word (it only logs
                // `processPub Parse Error`); rnats says why, with the
                // protocol's generic parse error, so a client can tell.
                tracing::error!(
                    "{} - cid:{} - {op} arguments malformed",
                    self.shared.peer,
                    self.shared.cid
                );
                (
                    errors::UNKNOWN_OP,
                    CloseReason::ProtocolViolation("bad arguments"),
                )
            }
            ProtocolError::BadPayload => (
                errors::UNKNOWN_OP,
                CloseReason::ProtocolViolation("payload size mismatch"),
            ),
        };
        self.shared.out.push_raw(err);
        self.close_after_error(reason)
    }

    fn close_after_error(&mut self, reason: CloseReason) -> Stop {
        if self.ctx.debug() {
            tracing::debug!(
                "{} - cid:{} - Client parser error: {reason}",
                self.shared.peer,
                self.shared.cid
            );
        }
        Stop::Close(reason)
    }

    async fn connect(&mut self, json: &[u8]) -> Result<(), Stop> {
        // A CONNECT that is not a valid JSON object closes the connection;
        // nats-server does so silently, rnats says why. (serde would take
        // `[]` for a struct, hence the check for `{`.)
        let parsed: Result<ConnectOptions, String> = if json.first() == Some(&b'{') {
            serde_json::from_slice(json).map_err(|e| e.to_string())
        } else {
            Err("not a JSON object".into())
        };
        let opts = match parsed {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(
                    "{} - cid:{} - invalid CONNECT: {e}",
                    self.shared.peer,
                    self.shared.cid
                );
                self.shared.out.push_raw(errors::UNKNOWN_OP);
                return Err(Stop::Close(CloseReason::ProtocolViolation("bad CONNECT")));
            }
        };
        if !(0..=1).contains(&opts.protocol) {
            self.shared
                .out
                .push_raw(b"-ERR 'invalid client protocol'\r\n");
            return Err(Stop::Close(CloseReason::ProtocolViolation(
                "client protocol",
            )));
        }
        if opts.no_responders && !opts.headers {
            self.shared
                .out
                .push_raw(b"-ERR 'no responders requires headers support'\r\n");
            return Err(Stop::Close(CloseReason::ProtocolViolation("no responders")));
        }
        if self.auth_required && !self.connected {
            self.authenticate(&opts).await?;
        }
        self.verbose = opts.verbose;
        self.pedantic = opts.pedantic;
        self.echo = opts.echo;
        self.headers = opts.headers;
        self.no_responders = opts.no_responders && opts.headers;
        self.shared
            .headers
            .store(opts.headers, std::sync::atomic::Ordering::Relaxed);
        {
            let mut meta = self.shared.meta.lock();
            meta.name = opts.name.unwrap_or_default();
            meta.lang = opts.lang.unwrap_or_default();
            meta.version = opts.version.unwrap_or_default();
        }
        self.connected = true;
        Ok(())
    }

    /// Check CONNECT's credentials (bcrypt runs in the authenticator's
    /// bounded pool, not on this task). Every decision is audited; a
    /// failure closes the connection with 'Authorization Violation'.
    async fn authenticate(&mut self, opts: &ConnectOptions) -> Result<(), Stop> {
        let auth = self.ctx.auth();
        let identity = self.shared.tls_identity.lock().clone();
        let peer = self.shared.peer;
        let result = auth
            .authenticate(
                peer.ip(),
                opts.user.as_deref(),
                opts.pass.as_deref(),
                opts.auth_token.as_deref(),
                identity.as_ref(),
            )
            .await;
        crate::auth::audit(&crate::auth::AuditEvent::from_outcome(
            peer,
            Some(self.shared.cid),
            &result,
        ));
        match result {
            Ok(ok) => {
                if let Some(p) = &ok.permissions {
                    let denies = p.delivery_denies();
                    self.shared.set_delivery_denies(denies);
                }
                self.perms = ok.permissions;
                self.shared.meta.lock().user = ok.user;
                *self.shared.credentials.lock() = Some(super::shared::Credentials {
                    user: opts.user.clone(),
                    pass: opts.pass.clone(),
                    token: opts.auth_token.clone(),
                });
                Ok(())
            }
            Err(f) => {
                tracing::error!(
                    "{peer} - cid:{} - authentication error: {}",
                    self.shared.cid,
                    f.reason
                );
                self.shared.out.push_raw(errors::AUTH_VIOLATION);
                Err(Stop::Close(CloseReason::AuthenticationViolation))
            }
        }
    }

    /// Switch to permissions a configuration reload installed, if any.
    fn refresh_permissions(&mut self) {
        let g = self
            .shared
            .perms_generation
            .load(std::sync::atomic::Ordering::Acquire);
        if g != self.perms_generation {
            self.perms_generation = g;
            self.perms = self.shared.reloaded_perms.lock().clone();
            self.pub_allowed.clear();
        }
    }

    /// May this client publish to `subj`? Cached per subject.
    fn may_publish(&mut self, subj: &Bytes) -> bool {
        self.refresh_permissions();
        let Some(perms) = &self.perms else {
            return true;
        };
        if let Some(&ok) = self.pub_allowed.get(&subj[..]) {
            return ok;
        }
        let ok = perms.can_publish(subj);
        if self.pub_allowed.len() >= 4096 {
            self.pub_allowed.clear();
        }
        self.pub_allowed.insert(Bytes::copy_from_slice(subj), ok);
        ok
    }

    /// Returns Ok(false) when the SUB was refused with an -ERR.
    fn subscribe(&mut self, subj: Bytes, queue: Option<Bytes>, sid: Bytes) -> Result<bool, Stop> {
        if !subject::valid_sub_subject(&subj)
            || queue
                .as_ref()
                .is_some_and(|q| q.contains(&b'.') && self.pedantic)
        {
            self.reply(errors::INVALID_SUBJECT);
            return Ok(false);
        }
        self.refresh_permissions();
        if let Some(p) = &self.perms
            && !p.can_subscribe(&subj, queue.as_deref())
        {
            let err = match &queue {
                Some(q) => format!(
                    "-ERR 'Permissions Violation for Subscription to \"{}\" using queue \"{}\"'\r\n",
                    String::from_utf8_lossy(&subj),
                    String::from_utf8_lossy(q)
                ),
                None => format!(
                    "-ERR 'Permissions Violation for Subscription to \"{}\"'\r\n",
                    String::from_utf8_lossy(&subj)
                ),
            };
            tracing::error!(
                "{} - cid:{} - Subscription Violation - User \"{}\", Subject \"{}\"",
                self.shared.peer,
                self.shared.cid,
                self.shared.meta.lock().user.clone().unwrap_or_default(),
                String::from_utf8_lossy(&subj)
            );
            self.reply(err.as_bytes());
            return Ok(false);
        }
        if self.max_subs > 0 && self.shared.num_subs() >= self.max_subs {
            self.reply(errors::MAX_SUBSCRIPTIONS);
            return Ok(false);
        }
        // Copy out of the read buffer: a subscription lives long and must
        // not pin the buffer its SUB line arrived in.
        let sub = Arc::new(Subscription::new(
            Bytes::copy_from_slice(&subj),
            queue.map(|q| Bytes::copy_from_slice(&q)),
            Bytes::copy_from_slice(&sid),
            self.shared.clone(),
        ));
        {
            let mut subs = self.shared.subs.lock();
            // The supervisor may already have cleaned this connection up
            // (its actor failed) while this reader is still working through
            // a burst of SUBs. Cleanup marks the connection closing before
            // it drains `subs` under this lock, so checking here, under the
            // lock, means a SUB is either drained by cleanup or refused;
            // otherwise it would stay in the router for good.
            if self.shared.is_closing() {
                return Err(Stop::Close(CloseReason::ClientClosed));
            }
            if subs.contains_key(&sid[..]) {
                // nats-server ignores a SUB that reuses a live sid.
                return Ok(true);
            }
            subs.insert(sub.sid.clone(), sub.clone());
        }
        match self.shared.account.router.subscribe(sub) {
            Ok(rx) => self.pending_subs.push(rx),
            Err(e) => {
                tracing::error!("cid:{} - subscribe failed: {e}", self.shared.cid);
                return Err(Stop::Close(CloseReason::Crashed));
            }
        }
        Ok(true)
    }

    /// Wait until every SUB sent so far is in the trie, so a later publish
    /// or PONG observes it (clients rely on PING/PONG as a barrier).
    async fn await_subs(&mut self) -> Result<(), Stop> {
        for rx in self.pending_subs.drain(..) {
            if rx.await.is_err() {
                return Err(Stop::Close(CloseReason::Crashed));
            }
        }
        Ok(())
    }

    fn unsubscribe(&mut self, sid: &[u8], max: Option<u64>) {
        let mut subs = self.shared.subs.lock();
        let Some(sub) = subs.get(sid).cloned() else {
            return;
        };
        if let Some(max) = max
            && !sub.set_max(max)
        {
            return;
        }
        subs.remove(sid);
        drop(subs);
        self.shared.account.router.unsubscribe([sub]);
    }

    fn publish(
        &mut self,
        subj: Bytes,
        reply: Option<Bytes>,
        has_headers: bool,
        header_len: usize,
        payload: Bytes,
    ) {
        self.batch_msgs += 1;
        self.batch_bytes += payload.len() as u64;
        if !self.may_publish(&subj) {
            let err = format!(
                "-ERR 'Permissions Violation for Publish to \"{}\"'\r\n",
                String::from_utf8_lossy(&subj)
            );
            tracing::error!(
                "{} - cid:{} - Publish Violation - User \"{}\", Subject \"{}\"",
                self.shared.peer,
                self.shared.cid,
                self.shared.meta.lock().user.clone().unwrap_or_default(),
                String::from_utf8_lossy(&subj)
            );
            self.reply(err.as_bytes());
            return;
        }
        if !subject::valid_pub_subject(&subj, self.pedantic) {
            // Only a warning in nats-server: the message is still routed.
            self.reply(errors::INVALID_PUB_SUBJECT);
        }
        if self.verbose {
            self.reply(b"+OK\r\n");
        }
        // A subject with an empty token (`a..b`, `.a`, `a.`) matches no
        // subscription in nats-server, not even `>`.
        if subj.first() == Some(&b'.')
            || subj.last() == Some(&b'.')
            || memchr::memmem::find(&subj, b"..").is_some()
        {
            return;
        }
        let result = self
            .shared
            .account
            .router
            .lookup_cached(&mut self.cache, &subj);
        let msg = Msg {
            subject: &subj,
            reply: reply.as_deref(),
            header_len: has_headers.then_some(header_len),
            payload: &payload,
        };
        let delivered = self.deliver_all(&result, &msg);
        if delivered == 0
            && self.no_responders
            && let Some(reply) = &reply
        {
            self.no_responders_reply(&subj, reply);
        }
    }

    fn deliver_all(&mut self, result: &SubResult, msg: &Msg<'_>) -> usize {
        let mut delivered = 0;
        for sub in &result.psubs {
            if !self.echo && Arc::ptr_eq(&sub.conn, &self.shared) {
                continue;
            }
            if self.deliver(sub, msg) {
                delivered += 1;
            }
        }
        for (_, members) in &result.qsubs {
            // Start at a random member and take the first that accepts, so
            // each message reaches exactly one member of the group.
            let start = fastrand::usize(..members.len());
            for i in 0..members.len() {
                let sub = &members[(start + i) % members.len()];
                if !self.echo && Arc::ptr_eq(&sub.conn, &self.shared) {
                    continue;
                }
                if self.deliver(sub, msg) {
                    delivered += 1;
                    break;
                }
            }
        }
        delivered
    }

    /// Queue one message for one subscription. Returns whether it was queued.
    fn deliver(&mut self, sub: &Arc<Subscription>, msg: &Msg<'_>) -> bool {
        if sub.conn.denies_delivery(msg.subject) {
            return false;
        }
        let admit = sub.admit();
        if admit == Admit::Skip {
            return false;
        }
        let conn = &sub.conn;
        let with_headers =
            msg.header_len.is_some() && conn.headers.load(std::sync::atomic::Ordering::Relaxed);
        let (payload, hdr_len) = match msg.header_len {
            // A subscriber that cannot take headers gets the body alone.
            Some(h) if !with_headers => (msg.payload.slice(h..), None),
            h => (msg.payload.clone(), h),
        };
        // Re-check the subscription under the subscriber's queue lock: an
        // UNSUB processed meanwhile may already have queued the PONG that
        // acknowledges it, and nothing for this sid may follow that PONG
        // (nats-server makes the same promise; drains rely on it).
        let res = conn.out.push_msg(
            || !sub.is_closed(),
            |b| encode_msg_line(b, msg.subject, &sub.sid, msg.reply, hdr_len, payload.len()),
            &payload,
        );
        let queued = match res {
            Enqueued::NeedsSignal => {
                self.pcd.push(conn.clone());
                true
            }
            Enqueued::Queued => true,
            Enqueued::SlowConsumer => {
                self.slow_consumer(conn);
                false
            }
            Enqueued::Closed => false,
        };
        if queued {
            self.batch_out_msgs += 1;
            self.batch_out_bytes += payload.len() as u64;
        }
        if admit == Admit::DeliverLast {
            // Auto-unsubscribe reached its count.
            let mut subs = conn.subs.lock();
            if subs.get(&sub.sid[..]).is_some_and(|s| Arc::ptr_eq(s, sub)) {
                subs.remove(&sub.sid[..]);
            }
            drop(subs);
            conn.account.router.remove_expired(sub.clone());
        }
        queued
    }

    fn slow_consumer(&self, conn: &Arc<ConnShared>) {
        if conn.close(CloseReason::SlowConsumerPendingBytes) {
            self.ctx
                .stats
                .slow_consumers
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                "{} - cid:{} - Slow Consumer Detected: pending bytes over {} limit",
                conn.peer,
                conn.cid,
                self.ctx.opts().max_pending
            );
        }
    }

    /// The requester asked to hear when nobody is listening: send it a
    /// `503` status on its own plain subscription to the reply subject,
    /// naming the subject nobody listens on, as nats-server does.
    fn no_responders_reply(&mut self, subj: &[u8], reply: &Bytes) {
        let result = self.shared.account.router.lookup(reply);
        let own = result
            .psubs
            .iter()
            .find(|s| Arc::ptr_eq(&s.conn, &self.shared))
            .cloned();
        if let Some(sub) = own {
            let mut status = BytesMut::with_capacity(48 + subj.len());
            status.extend_from_slice(b"NATS/1.0 503\r\nNats-Subject: ");
            status.extend_from_slice(subj);
            status.extend_from_slice(b"\r\n\r\n");
            let payload = status.freeze();
            let msg = Msg {
                subject: reply,
                reply: None,
                header_len: Some(payload.len()),
                payload: &payload,
            };
            self.deliver(&sub, &msg);
        }
    }

    /// Wake writers and publish counters once per read batch.
    fn end_batch(&mut self) {
        for conn in self.pcd.drain(..) {
            conn.out.signal();
        }
        use std::sync::atomic::Ordering::Relaxed;
        if self.batch_msgs > 0 {
            self.shared.in_msgs.fetch_add(self.batch_msgs, Relaxed);
            self.shared.in_bytes.fetch_add(self.batch_bytes, Relaxed);
            self.ctx.stats.in_msgs.fetch_add(self.batch_msgs, Relaxed);
            self.ctx.stats.in_bytes.fetch_add(self.batch_bytes, Relaxed);
            self.batch_msgs = 0;
            self.batch_bytes = 0;
        }
        if self.batch_out_msgs > 0 {
            self.ctx
                .stats
                .out_msgs
                .fetch_add(self.batch_out_msgs, Relaxed);
            self.ctx
                .stats
                .out_bytes
                .fetch_add(self.batch_out_bytes, Relaxed);
            self.batch_out_msgs = 0;
            self.batch_out_bytes = 0;
        }
    }
}

struct Msg<'a> {
    subject: &'a [u8],
    reply: Option<&'a [u8]>,
    /// Some(header block size) for HPUB.
    header_len: Option<usize>,
    payload: &'a Bytes,
}

/// `MSG subject sid [reply] size\r\n` or
/// `HMSG subject sid [reply] hdr_size total_size\r\n`.
pub fn encode_msg_line(
    b: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    header_len: Option<usize>,
    total: usize,
) {
    let mut num = itoa::Buffer::new();
    b.extend_from_slice(if header_len.is_some() {
        b"HMSG "
    } else {
        b"MSG "
    });
    b.extend_from_slice(subject);
    b.extend_from_slice(b" ");
    b.extend_from_slice(sid);
    b.extend_from_slice(b" ");
    if let Some(r) = reply {
        b.extend_from_slice(r);
        b.extend_from_slice(b" ");
    }
    if let Some(h) = header_len {
        b.extend_from_slice(num.format(h).as_bytes());
        b.extend_from_slice(b" ");
    }
    b.extend_from_slice(num.format(total).as_bytes());
    b.extend_from_slice(b"\r\n");
}

fn trace_op(shared: &ConnShared, op: &ClientOp) {
    let line = match op {
        ClientOp::Pub {
            subject,
            reply,
            headers,
            header_len,
            payload,
        } => {
            let s = String::from_utf8_lossy(subject);
            let r = reply
                .as_ref()
                .map(|r| format!(" {}", String::from_utf8_lossy(r)))
                .unwrap_or_default();
            if *headers {
                format!("HPUB {s}{r} {header_len} {}", payload.len())
            } else {
                format!("PUB {s}{r} {}", payload.len())
            }
        }
        ClientOp::Sub {
            subject,
            queue,
            sid,
        } => {
            let q = queue
                .as_ref()
                .map(|q| format!(" {}", String::from_utf8_lossy(q)))
                .unwrap_or_default();
            format!(
                "SUB {}{q} {}",
                String::from_utf8_lossy(subject),
                String::from_utf8_lossy(sid)
            )
        }
        ClientOp::Unsub { sid, max } => match max {
            Some(m) => format!("UNSUB {} {m}", String::from_utf8_lossy(sid)),
            None => format!("UNSUB {}", String::from_utf8_lossy(sid)),
        },
        ClientOp::Ping => "PING".into(),
        ClientOp::Pong => "PONG".into(),
        // CONNECT may carry credentials: never trace its body.
        ClientOp::Connect(_) => "CONNECT [REDACTED]".into(),
        ClientOp::Ignored => return,
    };
    tracing::trace!("{} - cid:{} - \"<<- [{line}]\"", shared.peer, shared.cid);
}

/// Drain the outbound queue, send keep-alive PINGs, and close the socket.
async fn run_writer(shared: Arc<ConnShared>, ctx: Arc<ServerContext>, mut w: BoxWrite) {
    let opts = ctx.opts();
    let mut segs: Vec<Bytes> = Vec::new();
    let start = Instant::now() + opts.ping_interval;
    let mut ping = tokio::time::interval_at(start, opts.ping_interval);
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
                if !shared.client_data.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    let out =
                        shared.pings_out.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if out > opts.ping_max {
                        shared.close(CloseReason::StaleConnection);
                        ctx.stats
                            .stale_connections
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                    shared.out.push_raw(b"PING\r\n");
                }
            }
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
                        ctx.stats
                            .slow_consumers
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

/// Write all segments with vectored writes, resuming after partial writes.
async fn write_segments<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    segs: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut idx = 0;
    while idx < segs.len() {
        if segs.len() - idx == 1 {
            w.write_all(&segs[idx]).await?;
            break;
        }
        let mut slices = [IoSlice::new(&[]); 64];
        let count = (segs.len() - idx).min(64);
        for (slot, seg) in slices.iter_mut().zip(&segs[idx..idx + count]) {
            *slot = IoSlice::new(seg);
        }
        let mut n = w.write_vectored(&slices[..count]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let len = segs[idx].len();
            if len <= n {
                n -= len;
                idx += 1;
            } else {
                segs[idx].advance(n);
                n = 0;
            }
        }
    }
    segs.clear();
    w.flush().await
}
