//! The reader task of a client connection: read, parse, act. Publishing
//! goes through the delivery engine (`crate::deliver`); control messages
//! from the connection actor (kicks, new permissions, expiry, async INFO)
//! arrive on a bounded channel that the read loop selects on.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::conn::{ConnCtl, ReadSide, errors};
use super::shared::{ConnShared, Credentials};
use crate::account::Account;
use crate::account::mapping::Mapped;
use crate::deliver::{self, Batch, Origin};
use crate::outbound::{CloseReason, Message, ResponseLimits};
use crate::protocol::info::ConnectOptions;
use crate::protocol::subject;
use crate::protocol::{ClientOp, Limits, Parser, ProtocolError, PubFrame};
use crate::router::{LookupCache, Subscription};
use crate::server::ServerContext;

const MIN_READ: usize = 512;
/// Reads grow up to this while they fill the buffer, as in nats-server.
/// Idle connections shrink back to `MIN_READ`.
const MAX_READ: usize = 64 * 1024;
/// ...and up to this while what is read is delivered to nobody: a pure
/// ingest connection then costs a quarter of the syscalls and wake-ups
/// (measured: 1 KiB PUBs with no subscriber at about 1.5x nats-server's
/// rate). A connection whose messages are delivered stays at `MAX_READ`:
/// bigger reads there only let the publisher outrun its subscribers' writers
/// (measured: 1:1 16 B pub/sub with 256 KiB reads had 7x the latency).
const MAX_INGEST_READ: usize = 256 * 1024;
/// A large read is cut into batches of at most this many messages or
/// payload bytes: subscribers' writers are woken (and counters published)
/// at each cut, so a big read does not delay their first byte.
const BATCH_MSGS: u64 = 2048;
const BATCH_BYTES: u64 = 64 * 1024;
/// Payload bytes a reader publishes between two units of tokio's
/// cooperative budget: a connection pushing large messages spends its
/// budget by the bytes it moves, not only by its reads, and yields its
/// worker when the budget runs out, so it cannot hold a worker through a
/// whole read buffer while other connections' requests wait. (An
/// unconditional `yield_now` every 512 KiB, or even every 2 MiB, cost pub
/// 1 KiB 10-20 %, measured; the budget only yields when it must.)
const YIELD_BYTES: u64 = 256 * 1024;
/// SUBs whose acknowledgement from the shard actor the reader has not
/// awaited, at most: past this it awaits them before reading on. Without a
/// bound, `SUB a 1` / `UNSUB 1` in a loop with no PING or PUB kept one
/// pending acknowledgement per SUB (and the shard's mailbox grew with it)
/// while `max_subscriptions` never tripped.
pub const MAX_UNACKED_SUBS: usize = 256;

/// Per-connection reader: owns the parser and the publish-side state.
pub(super) struct Reader {
    shared: Arc<ConnShared>,
    ctx: Arc<ServerContext>,
    parser: Parser,
    connected: bool,
    /// Authentication is configured: nothing but CONNECT before CONNECT.
    auth_required: bool,
    /// The configuration generation the connection's authentication
    /// verdict belongs to (see `recheck_after_reload`).
    auth_gen: u64,
    account: Option<Arc<Account>>,
    /// The authenticated user's permissions (None: everything allowed).
    perms: Option<Arc<crate::auth::Permissions>>,
    /// Publish-permission decisions by subject, so the check costs one
    /// hash lookup per publish.
    pub_allowed: rustc_hash::FxHashMap<Bytes, bool>,
    /// When the credentials stop being valid (a control message sets it).
    expires: Option<Instant>,
    /// Logged in with a JWT: binding applies the account's JWT first.
    jwt_login: bool,
    /// CONNECT, and its credential check, must be done by then.
    auth_deadline: Instant,
    verbose: bool,
    pedantic: bool,
    echo: bool,
    headers: bool,
    no_responders: bool,
    trace: bool,
    max_subs: usize,
    cache: LookupCache,
    batch: Batch,
    /// SUBs sent to shard actors whose acknowledgements we have not awaited.
    pending_subs: Vec<ractor::concurrency::OneshotReceiver<()>>,
    batch_msgs: u64,
    batch_bytes: u64,
    /// Payload bytes published since this reader last yielded.
    since_yield: u64,
    /// Messages this reader has queued for subscribers, ever.
    delivered: u64,
}

/// Why the op loop stopped.
pub(super) enum Stop {
    Close(CloseReason),
}

impl Reader {
    pub(super) fn new(shared: Arc<ConnShared>, ctx: Arc<ServerContext>) -> Self {
        let opts = ctx.opts();
        let (auth, auth_gen) = ctx.auth_with_gen();
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
            auth_required: auth.auth_required(),
            auth_gen,
            account: None,
            perms: None,
            pub_allowed: Default::default(),
            expires: None,
            jwt_login: false,
            auth_deadline: Instant::now() + opts.auth_timeout,
            cache: LookupCache::default(),
            batch: Batch::default(),
            pending_subs: Vec::new(),
            batch_msgs: 0,
            batch_bytes: 0,
            since_yield: 0,
            delivered: 0,
            shared,
            ctx,
        }
    }

    pub(super) async fn run(mut self, mut rd: ReadSide, mut ctl: mpsc::Receiver<ConnCtl>) {
        let auth_deadline = self.auth_deadline;
        let mut buf = BytesMut::with_capacity(MIN_READ);
        let mut read_size = MIN_READ;
        let closing = self.shared.closing.clone();
        loop {
            buf.reserve(read_size.max(self.parser.needed(&buf)));
            // Before CONNECT the auth timeout bounds the wait; after it,
            // credential expiry (if any) does.
            let deadline = if self.connected {
                self.expires
            } else {
                Some(auth_deadline)
            };
            let n = tokio::select! {
                biased;
                _ = closing.cancelled() => break,
                Some(c) = ctl.recv() => {
                    self.control(c);
                    self.end_batch();
                    continue;
                }
                _ = sleep_until_opt(deadline) => {
                    if self.connected {
                        self.fail(errors::AUTH_EXPIRED, CloseReason::AuthenticationExpired);
                    } else {
                        self.fail(errors::AUTH_TIMEOUT, CloseReason::AuthenticationTimeout);
                    }
                    break;
                }
                r = rd.read_buf(&mut buf) => r,
            };
            let n = match n {
                Ok(0) => {
                    self.shared.close(CloseReason::ClientClosed);
                    break;
                }
                Ok(n) => {
                    self.shared.client_data.store(true, Ordering::Relaxed);
                    n
                }
                Err(_) => {
                    self.shared.close(CloseReason::ReadError);
                    break;
                }
            };
            // Adapt the read size like nats-server: grow while reads fill
            // the buffer, shrink when they do not, so idle connections stay small.
            let out_before = self.delivered;
            let stop = self.process(&mut buf, &mut rd).await;
            self.end_batch();
            let max = if self.delivered == out_before {
                MAX_INGEST_READ
            } else {
                MAX_READ
            };
            if n >= read_size && read_size < max {
                read_size *= 2;
            } else if (n < read_size / 2 && read_size > MIN_READ) || read_size > max {
                read_size /= 2;
            }
            if let Err(Stop::Close(reason)) = stop {
                self.shared.close(reason);
                break;
            }
        }
        self.end_batch();
    }

    /// A message from the connection actor (the control path).
    fn control(&mut self, c: ConnCtl) {
        match c {
            // The connection actor applies closes itself and never
            // forwards them; these arms only keep the match whole.
            ConnCtl::Kick { reason, err } => self.shared.kick(reason, err),
            ConnCtl::Revoke { generation } => self.shared.revoke(generation),
            ConnCtl::Permissions { perms, generation } => {
                if self.shared.admitted_by(generation) {
                    self.auth_gen = self.auth_gen.max(generation);
                    self.set_permissions(perms);
                }
            }
            ConnCtl::ExpireAt(at) => self.expires = Some(at),
            ConnCtl::Info(line) => self.reply(&line),
            ConnCtl::InjectReaderPanic => {
                panic!("injected fault in reader of cid {}", self.shared.cid)
            }
        }
    }

    /// Queue an error for the client and close the connection.
    fn fail(&mut self, err: &[u8], reason: CloseReason) {
        self.shared.out.send_now(err);
        self.shared.close(reason);
    }

    /// The connection's account, binding the default one when no
    /// authentication is configured and the client has not sent CONNECT.
    fn account(&mut self) -> Arc<Account> {
        if let Some(a) = &self.account {
            return a.clone();
        }
        let a = self
            .shared
            .bind_account(self.ctx.accounts.default_account());
        self.account = Some(a.clone());
        a
    }

    async fn process(&mut self, buf: &mut BytesMut, rd: &mut ReadSide) -> Result<(), Stop> {
        loop {
            // A kicked or cut-off connection stops here, not after the
            // rest of its read buffer.
            if self.shared.is_closing() {
                return Err(Stop::Close(CloseReason::ClientClosed));
            }
            // Before CONNECT, follow reloads: one that turned
            // authentication on applies to this client's next operation.
            if !self.connected && self.ctx.config_gen() != self.auth_gen {
                let (auth, generation) = self.ctx.auth_with_gen();
                self.auth_required = auth.auth_required();
                self.auth_gen = generation;
            }
            // With authentication, nothing but CONNECT before CONNECT, and
            // refused at its first byte as nats-server does: waiting for the
            // whole op would let `PUB x <max_payload>` make us buffer a
            // payload for a client that has not logged in.
            if self.auth_required
                && !self.connected
                && buf.first().is_some_and(|&b| b != b'C' && b != b'c')
            {
                self.shared.out.push_raw(errors::AUTH_VIOLATION);
                return Err(Stop::Close(CloseReason::AuthenticationViolation));
            }
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
                ClientOp::Pub(frame) => {
                    if frame.headers() && !self.headers {
                        // HPUB from a client that did not negotiate headers.
                        return Err(Stop::Close(CloseReason::ProtocolViolation("HPUB")));
                    }
                    self.await_subs().await?;
                    // publish() sends the verbose +OK itself: nats-server
                    // sends it after a subject -ERR but before the message
                    // reaches any subscriber (the sender included).
                    self.publish(&frame);
                    self.since_yield += frame.payload().len() as u64;
                    if self.batch_msgs >= BATCH_MSGS || self.batch_bytes >= BATCH_BYTES {
                        self.end_batch();
                    }
                    if self.since_yield >= YIELD_BYTES {
                        self.since_yield = 0;
                        // The batch ends first: if the budget is spent and
                        // this yields, subscribers already have their bytes.
                        self.end_batch();
                        tokio::task::consume_budget().await;
                    }
                    // Paced by a subscriber that falls behind: wake its
                    // writer and give it a moment (never for this
                    // connection itself: a client that does not read what
                    // it sends itself is its own problem).
                    if let Some(o) = self.batch.take_pacing()
                        && !Arc::ptr_eq(&o, &self.shared.outlet)
                    {
                        self.end_batch();
                        o.out.pace().await;
                    }
                    continue;
                }
                ClientOp::Sub {
                    subject,
                    queue,
                    sid,
                } => {
                    // With route peers, each SUB reaches its shard (which
                    // tells the peers) after the previous one did: the
                    // shards are independent, and peers must learn one
                    // connection's interest in the order it was sent, as
                    // from nats-server (a client that subscribes, then
                    // probes another subject, relies on it).
                    if !self.pending_subs.is_empty()
                        && self.ctx.cluster.get().is_some_and(|c| c.bus.has_peers())
                    {
                        self.await_subs().await?;
                    }
                    // A rejected SUB gets its -ERR and no +OK, as in nats-server.
                    if !self.subscribe(subject, queue, sid)? {
                        continue;
                    }
                    if self.pending_subs.len() >= MAX_UNACKED_SUBS {
                        self.await_subs().await?;
                    }
                }
                ClientOp::Unsub { sid, max } => self.unsubscribe(&sid, max),
                ClientOp::Ping => {
                    self.await_subs().await?;
                    self.reply(b"PONG\r\n");
                    continue;
                }
                ClientOp::Pong => {
                    self.shared.pings_out.store(0, Ordering::Relaxed);
                    continue;
                }
                ClientOp::Connect(json) => self.connect(&json, buf, rd).await?,
                ClientOp::Ignored => continue,
            }
            if self.verbose {
                self.reply(b"+OK\r\n");
            }
        }
    }

    /// Queue a reply to this client; its writer is woken at the batch end.
    fn reply(&mut self, data: &[u8]) {
        let r = self.shared.out.push_raw(data);
        self.batch.replied(&self.shared.outlet, r);
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
                if let Some(a) = &self.account {
                    a.stats.refused_payloads.fetch_add(1, Ordering::Relaxed);
                }
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
        if self.ctx.debug() {
            tracing::debug!(
                "{} - cid:{} - Client parser error: {reason}",
                self.shared.peer,
                self.shared.cid
            );
        }
        Stop::Close(reason)
    }

    /// `buf` and `rd` are the connection's input: the credential check
    /// watches it for the client hanging up.
    async fn connect(
        &mut self,
        json: &[u8],
        buf: &mut BytesMut,
        rd: &mut ReadSide,
    ) -> Result<(), Stop> {
        // A CONNECT that is not a valid JSON object closes the connection;
        // nats-server does so silently, rnats says why. (serde would take
        // `[]` for a struct, hence the check for `{`.)
        let parsed: Result<ConnectOptions, String> = if json.first() == Some(&b'{') {
            serde_json::from_slice(json).map_err(redacted_json_error)
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
        if !self.connected {
            let account_name = if self.auth_required {
                self.authenticate(&opts, buf, rd).await?
            } else {
                None
            };
            // Kept for re-checks on reload, whatever the current mode: a
            // reload that turns authentication on checks what was sent.
            // Stored before binding: a re-check takes bound connections
            // and must never see one without what it logged in with.
            *self.shared.credentials.lock() = Some(Credentials {
                user: opts.user.clone(),
                pass: opts.pass.clone(),
                token: opts.auth_token.clone(),
                nkey: opts.nkey.clone(),
                sig: opts.sig.clone(),
                nonce: self.shared.nonce.get().cloned(),
                jwt: opts.jwt.clone(),
            });
            self.bind(account_name.as_deref()).await?;
            self.shared.admitted_by(self.auth_gen);
            self.recheck_after_reload().await?;
        }
        self.verbose = opts.verbose;
        self.pedantic = opts.pedantic;
        self.echo = opts.echo;
        self.headers = opts.headers;
        self.no_responders = opts.no_responders && opts.headers;
        self.shared.headers.store(opts.headers, Ordering::Relaxed);
        {
            let mut meta = self.shared.meta.lock();
            meta.name = opts.name.unwrap_or_default();
            meta.lang = opts.lang.unwrap_or_default();
            meta.version = opts.version.unwrap_or_default();
        }
        self.connected = true;
        Ok(())
    }

    /// Bind the connection to the account its credentials name.
    async fn bind(&mut self, name: Option<&str>) -> Result<(), Stop> {
        if self.account.is_some() {
            return Ok(());
        }
        match self.ctx.accounts.bind(name).await {
            Ok(a) => {
                // Operator mode: the account's JWT limits, mappings and
                // imports (once per JWT).
                if self.jwt_login
                    && let Some(store) = &self.ctx.account_store
                    && let Err(e) =
                        crate::deliver::imports::apply_jwt(&self.ctx.accounts, store, &a.name).await
                {
                    tracing::error!(
                        "{} - cid:{} - account {} cannot be used: {e}",
                        self.shared.peer,
                        self.shared.cid,
                        a.name
                    );
                    self.shared.out.push_raw(errors::AUTH_VIOLATION);
                    return Err(Stop::Close(CloseReason::AuthenticationViolation));
                }
                let Some(a) = self.shared.try_bind_account(a.clone()) else {
                    tracing::error!(
                        "{} - cid:{} - maximum account active connections exceeded (account {})",
                        self.shared.peer,
                        self.shared.cid,
                        a.name
                    );
                    self.shared.out.push_raw(errors::MAX_ACCOUNT_CONNECTIONS);
                    return Err(Stop::Close(CloseReason::MaxAccountConnectionsExceeded));
                };
                // The account's limits narrow the server's, per connection,
                // as in nats-server.
                let limits = a.limits();
                self.narrow_limits(limits.max_subscriptions, limits.max_payload);
                self.account = Some(a);
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    "{} - cid:{} - cannot bind account: {e}",
                    self.shared.peer,
                    self.shared.cid
                );
                self.shared.out.push_raw(errors::AUTH_VIOLATION);
                Err(Stop::Close(CloseReason::AuthenticationViolation))
            }
        }
    }

    /// Check CONNECT's credentials (bcrypt runs in the authenticator's
    /// bounded pool, not on this task). Every decision is audited; a
    /// failure closes the connection with 'Authorization Violation'.
    /// Returns the name of the user's account (None: the default).
    ///
    /// The check is bounded by the auth timeout, like the wait for CONNECT
    /// (nats-server's auth timer also runs until CONNECT is processed), and
    /// dropped as soon as the client hangs up: a login flood cannot queue
    /// bcrypt work for clients that are gone. Input the client pipelines
    /// behind CONNECT is kept in `buf` for after the decision.
    async fn authenticate(
        &mut self,
        opts: &ConnectOptions,
        buf: &mut BytesMut,
        rd: &mut ReadSide,
    ) -> Result<Option<String>, Stop> {
        let (auth, auth_gen) = self.ctx.auth_with_gen();
        self.auth_gen = auth_gen;
        let identity = self.shared.tls_identity.lock().clone();
        let peer = self.shared.peer;
        let nonce = self.shared.nonce.get().cloned();
        let presented = crate::auth::Presented {
            user: opts.user.as_deref(),
            pass: opts.pass.as_deref(),
            token: opts.auth_token.as_deref(),
            nkey: opts.nkey.as_deref(),
            sig: opts.sig.as_deref(),
            jwt: opts.jwt.as_deref(),
            nonce: nonce.as_deref(),
            peer: Some(peer.ip()),
        };
        let check = auth.login(peer.ip(), &presented, identity.as_ref());
        tokio::pin!(check);
        let closing = self.shared.closing.clone();
        let result = loop {
            tokio::select! {
                biased;
                r = &mut check => break r,
                _ = closing.cancelled() => return Err(Stop::Close(CloseReason::ClientClosed)),
                _ = tokio::time::sleep_until(self.auth_deadline) => {
                    tracing::error!(
                        "{peer} - cid:{} - authentication timeout: credential check not done in time",
                        self.shared.cid
                    );
                    self.shared.out.send_now(errors::AUTH_TIMEOUT);
                    return Err(Stop::Close(CloseReason::AuthenticationTimeout));
                }
                r = rd.read_buf(buf), if buf.len() < MAX_READ => match r {
                    Ok(0) => return Err(Stop::Close(CloseReason::ClientClosed)),
                    Ok(_) => continue,
                    Err(_) => return Err(Stop::Close(CloseReason::ReadError)),
                },
            }
        };
        crate::auth::audit(&crate::auth::AuditEvent::from_outcome(
            peer,
            Some(self.shared.cid),
            &result,
        ));
        match result {
            Ok(ok) => {
                self.set_permissions(ok.permissions);
                self.shared.meta.lock().user = ok.user;
                if let Some(g) = &ok.jwt {
                    self.apply_grant(g);
                }
                Ok(ok.account)
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

    /// A JWT login's expiry and the user's own limits (narrowing the
    /// server's; the account's are applied when binding). The account JWT's
    /// limits are installed on the account first.
    fn apply_grant(&mut self, g: &crate::auth::operator::JwtGrant) {
        if let Some(at) = g.expires {
            self.expires = Some(crate::server::instant_of_unix(at));
        }
        self.narrow_limits(g.max_subscriptions, g.max_payload);
        self.jwt_login = true;
    }

    /// Narrow the connection's subscription and payload limits (a user
    /// JWT's, an account's): each only ever goes down. A subscription
    /// limit of 0 means none, as `max_subscriptions` does.
    fn narrow_limits(&mut self, max_subs: Option<u64>, max_payload: Option<u64>) {
        if let Some(m) = max_subs.filter(|&m| m > 0) {
            let m = usize::try_from(m).unwrap_or(usize::MAX);
            self.max_subs = if self.max_subs == 0 {
                m
            } else {
                self.max_subs.min(m)
            };
        }
        if let Some(m) = max_payload {
            let mut l = self.parser.limits();
            l.max_payload = l.max_payload.min(usize::try_from(m).unwrap_or(usize::MAX));
            self.parser.set_limits(l);
        }
    }

    /// A reload that landed while this client was logging in may have
    /// skipped it (its re-check only takes connected clients): check the
    /// credentials again against the newest configuration until the
    /// verdict is current. A re-check, not a login: no limiter.
    async fn recheck_after_reload(&mut self) -> Result<(), Stop> {
        // Bounded: reloads arriving faster than this are left to the
        // re-check of the newest one, which now sees this client.
        // The TLS handshake checked the pins of the configuration current
        // then; a reload may have changed them since, before this client
        // was bound and so visible to the reload's scan. Checked after
        // binding, so a later reload's scan covers the rest.
        if !crate::server::pins_still_hold(&self.ctx, &self.shared) {
            tracing::info!(
                "{} - cid:{} - disconnected after reload: certificate not pinned",
                self.shared.peer,
                self.shared.cid
            );
            self.shared.out.push_raw(errors::AUTH_VIOLATION);
            return Err(Stop::Close(CloseReason::AuthenticationViolation));
        }
        for _ in 0..3 {
            let (auth, generation) = self.ctx.auth_with_gen();
            if generation == self.auth_gen {
                return Ok(());
            }
            let creds = self.shared.credentials.lock().clone().unwrap_or_default();
            let identity = self.shared.tls_identity.lock().clone();
            match crate::server::check_presented(&auth, &creds, identity.as_ref()).await {
                Ok(ok) if crate::server::moved_account(&self.shared, &ok) => {
                    tracing::info!(
                        "{} - cid:{} - disconnected after reload: user moved to another account",
                        self.shared.peer,
                        self.shared.cid
                    );
                    self.shared.out.push_raw(errors::AUTH_VIOLATION);
                    return Err(Stop::Close(CloseReason::AuthenticationViolation));
                }
                Ok(ok) => {
                    self.auth_gen = generation;
                    if self.shared.admitted_by(generation) {
                        self.set_permissions(ok.permissions);
                    }
                }
                Err(f) => {
                    tracing::info!(
                        "{} - cid:{} - disconnected after reload: {}",
                        self.shared.peer,
                        self.shared.cid,
                        f.reason
                    );
                    self.shared.out.push_raw(errors::AUTH_VIOLATION);
                    return Err(Stop::Close(CloseReason::AuthenticationViolation));
                }
            }
        }
        Ok(())
    }

    /// Install permissions (at login, or from a reload through the control
    /// path): deliveries are filtered at once and subscriptions the new
    /// permissions forbid are removed.
    fn set_permissions(&mut self, perms: Option<Arc<crate::auth::Permissions>>) {
        let denies = perms
            .as_ref()
            .map(|p| p.delivery_denies())
            .unwrap_or_default();
        self.shared.set_delivery_denies(denies);
        self.shared.set_response_limits(
            perms
                .as_ref()
                .and_then(|p| p.allow_responses.as_ref())
                .map(|r| ResponseLimits {
                    max: r.max,
                    expires: (!r.expires.is_zero()).then_some(r.expires),
                }),
        );
        if let Some(p) = &perms {
            let forbidden: Vec<Arc<Subscription>> = {
                let mut subs = self.shared.subs.lock();
                let gone: Vec<Bytes> = subs
                    .iter()
                    .filter(|(_, s)| !p.can_subscribe(&s.subject, s.queue.as_deref()))
                    .map(|(sid, _)| sid.clone())
                    .collect();
                gone.iter().filter_map(|sid| subs.remove(sid)).collect()
            };
            if !forbidden.is_empty()
                && let Some(acc) = self.shared.account()
            {
                acc.router.unsubscribe(forbidden);
            }
        }
        self.perms = perms;
        self.pub_allowed.clear();
    }

    /// Log a permissions violation as nats-server does and answer it.
    fn violation(&mut self, what: &str, subj: &[u8], err: &str) {
        tracing::error!(
            "{} - cid:{} - {what} Violation - User \"{}\", Subject {}",
            self.shared.peer,
            self.shared.cid,
            subject::escape(
                self.shared
                    .meta
                    .lock()
                    .user
                    .as_deref()
                    .unwrap_or_default()
                    .as_bytes()
            ),
            subject::quote(subj)
        );
        self.reply(err.as_bytes());
    }

    /// May this client publish to `subj`? Cached per subject.
    fn may_publish(&mut self, subj: &[u8]) -> bool {
        let Some(perms) = &self.perms else {
            return true;
        };
        if let Some(&ok) = self.pub_allowed.get(subj) {
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
        if let Some(p) = &self.perms
            && !p.can_subscribe(&subj, queue.as_deref())
        {
            let err = match &queue {
                Some(q) => format!(
                    "-ERR 'Permissions Violation for Subscription to {} using queue {}'\r\n",
                    subject::quote(&subj),
                    subject::quote(q)
                ),
                None => format!(
                    "-ERR 'Permissions Violation for Subscription to {}'\r\n",
                    subject::quote(&subj)
                ),
            };
            self.violation("Subscription", &subj, &err);
            return Ok(false);
        }
        if self.max_subs > 0 && self.shared.num_subs() >= self.max_subs {
            self.reply(errors::MAX_SUBSCRIPTIONS);
            if let Some(a) = &self.account {
                a.stats
                    .refused_subscriptions
                    .fetch_add(1, Ordering::Relaxed);
            }
            return Ok(false);
        }
        let account = self.account();
        // Copy out of the read buffer: a subscription lives long and must
        // not pin the buffer its SUB line arrived in.
        let sub = Arc::new(Subscription::client(
            Bytes::copy_from_slice(&subj),
            queue.map(|q| Bytes::copy_from_slice(&q)),
            Bytes::copy_from_slice(&sid),
            self.shared.outlet.clone(),
        ));
        {
            self.shared.reap_expired();
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
        match account.router.subscribe(sub) {
            Ok(rx) => {
                self.pending_subs.push(rx);
                self.shared
                    .unacked_subs_peak
                    .fetch_max(self.pending_subs.len(), Ordering::Relaxed);
            }
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
        self.shared.reap_expired();
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
        if let Some(acc) = self.shared.account() {
            acc.router.unsubscribe([sub]);
        }
    }

    fn publish(&mut self, frame: &PubFrame) {
        let mut subj = frame.subject();
        self.batch_msgs += 1;
        self.batch_bytes += frame.payload().len() as u64;
        if self.account.is_none() {
            self.account();
        }
        // Subject mappings apply first: permissions, delivery and the
        // no-responders status all see the mapped subject, as in
        // nats-server. One relaxed load in an account without mappings.
        let mapped;
        if let Some(account) = self.account.as_deref()
            && account.has_mappings()
        {
            match account.map_subject(subj) {
                Mapped::Unmapped => {}
                Mapped::To(s) => {
                    mapped = s;
                    subj = &mapped;
                }
                Mapped::Dropped => return,
            }
        }
        // A subject the permissions refuse may still be the reply subject
        // of a request this client received (`allow_responses`).
        if !self.may_publish(subj) && !self.shared.outlet.response_allowed(subj) {
            let err = format!(
                "-ERR 'Permissions Violation for Publish to {}'\r\n",
                subject::quote(subj)
            );
            self.violation("Publish", subj, &err);
            return;
        }
        if !subject::valid_pub_subject(subj, self.pedantic) {
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
            || memchr::memmem::find(subj, b"..").is_some()
        {
            return;
        }
        let Some(account) = self.account.as_deref() else {
            return;
        };
        let payload = frame.payload_bytes();
        let msg = Message {
            subject: subj,
            reply: frame.reply(),
            header_len: frame.headers().then_some(frame.header_len()),
            payload: &payload,
        };
        let origin = Origin::Client {
            outlet: &self.shared.outlet,
            echo: self.echo,
        };
        let delivered = deliver::publish(account, &mut self.cache, &msg, origin, &mut self.batch);
        if delivered == 0
            && self.no_responders
            && let Some(reply) = frame.reply()
        {
            no_responders_reply(account, &self.shared, &mut self.batch, subj, reply);
        }
    }
}

/// The requester asked to hear when nobody is listening: send it a `503`
/// status on its own plain subscription to the reply subject, naming the
/// subject nobody listens on, as nats-server does.
fn no_responders_reply(
    account: &Account,
    shared: &ConnShared,
    batch: &mut Batch,
    subj: &[u8],
    reply: &[u8],
) {
    let result = account.router.lookup(reply);
    let own = result.psubs.iter().find(|s| {
        s.target
            .outlet()
            .is_some_and(|o| Arc::ptr_eq(o, &shared.outlet))
    });
    if let Some(sub) = own {
        let mut status = BytesMut::with_capacity(48 + subj.len());
        status.extend_from_slice(b"NATS/1.0 503\r\nNats-Subject: ");
        status.extend_from_slice(subj);
        status.extend_from_slice(b"\r\n\r\n");
        let payload = status.freeze();
        let msg = Message {
            subject: reply,
            reply: None,
            header_len: Some(payload.len()),
            payload: &payload,
        };
        deliver::deliver_local(account, sub, &msg, batch);
    }
}

impl Reader {
    /// Wake writers and publish counters once per read batch.
    fn end_batch(&mut self) {
        let (out_msgs, out_bytes, slow) = self.batch.finish();
        let stats = &self.ctx.stats;
        if self.batch_msgs > 0 {
            self.shared
                .in_msgs
                .fetch_add(self.batch_msgs, Ordering::Relaxed);
            self.shared
                .in_bytes
                .fetch_add(self.batch_bytes, Ordering::Relaxed);
            stats.in_msgs.fetch_add(self.batch_msgs, Ordering::Relaxed);
            stats
                .in_bytes
                .fetch_add(self.batch_bytes, Ordering::Relaxed);
            if let Some(a) = &self.account {
                a.stats
                    .in_msgs
                    .fetch_add(self.batch_msgs, Ordering::Relaxed);
                a.stats
                    .in_bytes
                    .fetch_add(self.batch_bytes, Ordering::Relaxed);
            }
            self.batch_msgs = 0;
            self.batch_bytes = 0;
        }
        self.delivered += out_msgs;
        if out_msgs > 0 {
            stats.out_msgs.fetch_add(out_msgs, Ordering::Relaxed);
            stats.out_bytes.fetch_add(out_bytes, Ordering::Relaxed);
            if let Some(a) = &self.account {
                a.stats.note_out(out_msgs, out_bytes);
            }
        }
        if slow > 0 {
            stats.slow_consumers.fetch_add(slow, Ordering::Relaxed);
        }
    }
}

/// A CONNECT decode error without the offending value: serde's message
/// quotes it (`invalid type: integer \`123456\``), and that may be a
/// password or token. Only the kind of error and its position are logged.
fn redacted_json_error(e: serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "malformed JSON",
        Category::Eof => "truncated JSON",
        Category::Data => "a field has the wrong type or value",
        Category::Io => "read error",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn trace_op(shared: &ConnShared, op: &ClientOp) {
    let line = match op {
        ClientOp::Pub(p) => {
            let s = subject::escape(p.subject());
            let r = p
                .reply()
                .map(|r| format!(" {}", subject::escape(r)))
                .unwrap_or_default();
            if p.headers() {
                format!("HPUB {s}{r} {} {}", p.header_len(), p.payload().len())
            } else {
                format!("PUB {s}{r} {}", p.payload().len())
            }
        }
        ClientOp::Sub {
            subject,
            queue,
            sid,
        } => {
            let q = queue
                .as_ref()
                .map(|q| format!(" {}", subject::escape(q)))
                .unwrap_or_default();
            format!(
                "SUB {}{q} {}",
                subject::escape(subject),
                subject::escape(sid)
            )
        }
        ClientOp::Unsub { sid, max } => match max {
            Some(m) => format!("UNSUB {} {m}", subject::escape(sid)),
            None => format!("UNSUB {}", subject::escape(sid)),
        },
        ClientOp::Ping => "PING".into(),
        ClientOp::Pong => "PONG".into(),
        // CONNECT may carry credentials: never trace its body.
        ClientOp::Connect(_) => "CONNECT [REDACTED]".into(),
        ClientOp::Ignored => return,
    };
    tracing::trace!("{} - cid:{} - \"<<- [{line}]\"", shared.peer, shared.cid);
}
