//! One route session: TLS, the INFO/CONNECT handshake, then the reader
//! (this task) and a writer task draining the route's outbound queue.
//!
//! The handshake follows nats-server: with route TLS the handshake comes
//! first (no INFO in clear); the accepting side sends its INFO at once and
//! expects CONNECT (checked against `cluster.authorization`) and then the
//! dialer's INFO; the dialing side sends CONNECT and its INFO and expects
//! the acceptor's INFO. The first INFO registers the route (one per pair
//! of servers: a second connection to a server we already have a route
//! to is closed as a duplicate), after which both sides exchange their
//! whole interest and then changes (RS+/RS-) and messages (RMSG/HMSG).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use rustc_hash::FxHashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::info::{RouteConnect, RouteInfo};
use super::{Cluster, RouteLink, gossip_url};
use crate::account::Account;
use crate::config::Secret;
use crate::config::cluster::RouteUrl;
use crate::deliver::{self, Batch, Origin};
use crate::outbound::{CloseReason, Enqueued, Message, Outlet, OutletKind, write_segments};
use crate::protocol::Limits;
use crate::protocol::route::{RouteOp, RouteParser, RouteSub};
use crate::router::{LookupCache, Subscription};
use crate::supervision::TaskGuard;

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// The largest message a peer may send us (nats-server's own ceiling for
/// `max_payload`): a peer enforces its own clients' limit, which may be
/// larger than ours.
const ROUTE_MAX_PAYLOAD: usize = 64 * 1024 * 1024;
/// Control lines on routes carry queue-group lists; allow more than a client.
const ROUTE_MAX_CONTROL_LINE: usize = 64 * 1024;
/// How long a new route has to finish its handshake (CONNECT and INFO).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a session ended.
#[derive(Debug)]
pub enum End {
    /// The server is shutting down.
    Shutdown,
    /// The peer is this server (a configured route pointing at ourselves).
    SelfRoute,
    /// A route to that server already exists; this one was closed.
    Duplicate(String),
    /// Anything else: handshake, TLS, I/O or protocol failure, peer gone.
    Failed(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Shutdown => f.write_str("Server Shutdown"),
            End::SelfRoute => f.write_str("route to self"),
            End::Duplicate(id) => write!(f, "Duplicate Route (a route to {id} exists)"),
            End::Failed(why) => f.write_str(why),
        }
    }
}

/// Run a session on a connected socket until it ends. `solicit` is the
/// URL we dialed (None: the peer dialed us).
pub async fn run(
    cluster: Arc<Cluster>,
    tcp: TcpStream,
    peer: SocketAddr,
    solicit: Option<RouteUrl>,
) -> End {
    let _ = tcp.set_nodelay(true);
    if solicit.is_some() {
        // (Accepted routes are watched by the accept loop.)
        crate::busy_poll::watch_socket(std::os::fd::AsRawFd::as_raw_fd(&tcp));
    }
    let rid = cluster.next_rid();
    let tls_timeout = cluster
        .opts
        .tls
        .as_ref()
        .map(|t| t.timeout)
        .unwrap_or(Duration::from_secs(2));
    let (rd, wr): (BoxRead, BoxWrite) = match (&solicit, &cluster.acceptor, &cluster.connector) {
        (None, Some(acceptor), _) => match crate::tls::accept(acceptor, tcp, tls_timeout).await {
            Ok(s) => {
                if cluster.opts.tls_check_known_urls && !known_url_cert(&cluster, s.get_ref().1) {
                    tracing::error!(
                        "{peer} - rid:{rid} - route certificate names none of the configured route URLs"
                    );
                    return End::Failed("certificate not for a known route URL".into());
                }
                let (r, w) = tokio::io::split(s);
                (Box::new(r), Box::new(w))
            }
            Err(e) => {
                tracing::error!("{peer} - rid:{rid} - TLS route handshake error: {e}");
                return End::Failed(format!("TLS handshake: {e}"));
            }
        },
        (Some(url), _, Some(connector)) => {
            match crate::tls::route::connect(connector, &url.host, tcp, tls_timeout).await {
                Ok(s) => {
                    let (r, w) = tokio::io::split(s);
                    (Box::new(r), Box::new(w))
                }
                Err(e) => {
                    tracing::error!("{peer} - rid:{rid} - TLS route handshake error: {e}");
                    return End::Failed(format!("TLS handshake: {e}"));
                }
            }
        }
        _ => {
            let (r, w) = tcp.into_split();
            (Box::new(r), Box::new(w))
        }
    };
    let outlet = Arc::new(Outlet::new(
        rid,
        OutletKind::Route,
        peer,
        cluster.max_pending,
    ));
    outlet.headers.store(true, Ordering::Relaxed);
    let pings_out = Arc::new(AtomicU64::new(0));
    let mut writer = TaskGuard::spawn(run_writer(
        outlet.clone(),
        wr,
        cluster.ping_interval,
        cluster.ping_max,
        cluster.write_deadline,
        pings_out.clone(),
    ));
    if let Some(url) = &solicit {
        let connect = RouteConnect {
            echo: true,
            user: url.user.clone().unwrap_or_default(),
            pass: url.password.clone().unwrap_or_default(),
            tls_required: cluster.opts.tls.is_some(),
            headers: true,
            name: cluster.server_id.clone(),
            cluster: cluster.name.clone(),
            dynamic: cluster.dynamic_name,
            ..Default::default()
        };
        outlet.out.push_raw(&connect.to_line());
    }
    outlet.out.push_raw(&cluster.info().to_line());
    outlet.out.signal();

    let mut s = Session {
        cluster: cluster.clone(),
        outlet: outlet.clone(),
        peer,
        rid,
        solicit,
        connected: false,
        link: None,
        subs: FxHashMap::default(),
        accounts: FxHashMap::default(),
        batch: Batch::default(),
        pings_out,
        batch_msgs: 0,
        batch_bytes: 0,
        cleaned: false,
        pending: Vec::new(),
    };
    let end = s.run(rd).await;
    s.cleanup(Some(&end));
    // Let the writer flush what is queued (an -ERR), then stop it.
    outlet.mark_closing();
    writer.join(Duration::from_millis(500)).await;
    end
}

use super::InterestKey;

/// Why the reader stopped, with the `-ERR` to send first, if any.
enum Stop {
    End(End),
    Error(End, &'static str),
}

struct Session {
    cluster: Arc<Cluster>,
    outlet: Arc<Outlet>,
    peer: SocketAddr,
    rid: u64,
    solicit: Option<RouteUrl>,
    /// The accepting side has seen a valid CONNECT.
    connected: bool,
    link: Option<Arc<RouteLink>>,
    /// The peer's interest: (account, subject, queue) → its subscription.
    subs: FxHashMap<InterestKey, (Arc<Account>, Arc<Subscription>)>,
    /// Accounts the peer named, resolved once (None: unknown here).
    accounts: FxHashMap<Bytes, Option<(Arc<Account>, LookupCache)>>,
    batch: Batch,
    pings_out: Arc<AtomicU64>,
    batch_msgs: u64,
    batch_bytes: u64,
    cleaned: bool,
    /// Acknowledgements of RS+ still on their way into the shards: awaited
    /// before the next RMSG, so a message that follows interest on the
    /// wire also follows it here (a request's reply inbox, say).
    pending: Vec<ractor::concurrency::OneshotReceiver<()>>,
}

/// A session task aborted with its actor still undoes what it added.
impl Drop for Session {
    fn drop(&mut self) {
        self.cleanup(None);
    }
}

impl Session {
    async fn run(&mut self, mut rd: BoxRead) -> End {
        let mut parser = RouteParser::new(Limits {
            max_control_line: ROUTE_MAX_CONTROL_LINE,
            max_payload: ROUTE_MAX_PAYLOAD,
        });
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let deadline = tokio::time::Instant::now() + self.handshake_timeout();
        let closing = self.outlet.closing.clone();
        let shutdown = self.cluster.shutdown.clone();
        loop {
            loop {
                let op = match parser.next_op(&mut buf) {
                    Ok(Some(op)) => op,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(
                            "{} - rid:{} - route protocol error: {e:?}",
                            self.peer,
                            self.rid
                        );
                        self.end_batch().await;
                        return self.stop(Stop::Error(
                            End::Failed(format!("protocol error: {e:?}")),
                            "-ERR 'Protocol Error'\r\n",
                        ));
                    }
                };
                if let Err(stop) = self.handle(op).await {
                    self.end_batch().await;
                    return self.stop(stop);
                }
            }
            self.end_batch().await;
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
            let registered = self.link.is_some();
            let read = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Shutdown,
                _ = closing.cancelled() => {
                    let why = self.outlet.close_reason().map(|r| r.to_string()).unwrap_or_default();
                    return End::Failed(format!("closed: {why}"));
                }
                _ = tokio::time::sleep_until(deadline), if !registered => {
                    tracing::error!("{} - rid:{} - route handshake timeout", self.peer, self.rid);
                    return self.stop(Stop::Error(
                        End::Failed("handshake timeout".into()),
                        "-ERR 'Authentication Timeout'\r\n",
                    ));
                }
                r = rd.read_buf(&mut buf) => r,
            };
            match read {
                Ok(0) => return End::Failed("connection closed by peer".into()),
                Ok(_) => {}
                Err(e) => return End::Failed(format!("read error: {e}")),
            }
        }
    }

    /// The accepting side waits `cluster.authorization.timeout` (nats-server's
    /// default otherwise) for CONNECT and INFO; the dialing side a fixed while.
    fn handshake_timeout(&self) -> Duration {
        if self.solicit.is_some() {
            return HANDSHAKE_TIMEOUT;
        }
        let t = self.cluster.opts.auth_timeout();
        if t.is_zero() { HANDSHAKE_TIMEOUT } else { t }
    }

    /// Queue the `-ERR` (if any) and say how it ended.
    fn stop(&mut self, stop: Stop) -> End {
        match stop {
            Stop::End(e) => e,
            Stop::Error(e, line) => {
                self.outlet.out.push_raw(line.as_bytes());
                self.outlet.out.signal();
                e
            }
        }
    }

    async fn handle(&mut self, op: RouteOp) -> Result<(), Stop> {
        match op {
            RouteOp::Ping => self.send(b"PONG\r\n"),
            RouteOp::Pong => self.pings_out.store(0, Ordering::Relaxed),
            RouteOp::Ok | RouteOp::LeafSub | RouteOp::LeafUnsub => {}
            RouteOp::Err(text) => {
                let text = String::from_utf8_lossy(&text).into_owned();
                tracing::error!(
                    "{} - rid:{} - route error from peer: {text}",
                    self.peer,
                    self.rid
                );
                return Err(Stop::End(End::Failed(format!("-ERR from peer: {text}"))));
            }
            RouteOp::Connect(json) => self.on_connect(&json).await?,
            RouteOp::Info(json) => self.on_info(&json)?,
            RouteOp::Sub(rs) => {
                self.require_registered()?;
                self.remote_sub(rs).await;
            }
            RouteOp::Unsub(rs) => {
                self.require_registered()?;
                self.remote_unsub(rs);
            }
            RouteOp::Msg(m) => {
                self.require_registered()?;
                self.await_interest().await;
                self.batch_msgs += 1;
                self.batch_bytes += m.payload().len() as u64;
                if !self.ensure_account(m.account()).await {
                    return Ok(());
                }
                let Some(Some((account, cache))) = self.accounts.get_mut(m.account()) else {
                    return Ok(());
                };
                let payload = m.payload_bytes();
                let msg = Message {
                    subject: m.subject(),
                    reply: m.reply(),
                    header_len: m.header_len(),
                    payload: &payload,
                };
                let queues = m.queues();
                deliver::publish(
                    account,
                    cache,
                    &msg,
                    Origin::Route { queues },
                    &mut self.batch,
                );
            }
        }
        Ok(())
    }

    fn require_registered(&self) -> Result<(), Stop> {
        if self.link.is_some() {
            return Ok(());
        }
        Err(Stop::Error(
            End::Failed("route operation before the handshake".into()),
            "-ERR 'Protocol Error'\r\n",
        ))
    }

    fn send(&self, line: &[u8]) {
        if self.outlet.out.push_raw(line) == Enqueued::NeedsSignal {
            self.outlet.out.signal();
        }
    }

    /// Resolve the account a peer names (once per session); whether it
    /// exists here.
    async fn ensure_account(&mut self, name: &[u8]) -> bool {
        if !self.accounts.contains_key(name) {
            let resolved = match std::str::from_utf8(name) {
                Ok(n) => self.cluster.resolver.resolve(n).await,
                Err(_) => None,
            };
            if resolved.is_none() {
                tracing::debug!(
                    "{} - rid:{} - unknown account {:?} from route; ignored",
                    self.peer,
                    self.rid,
                    String::from_utf8_lossy(name)
                );
            }
            self.accounts.insert(
                Bytes::copy_from_slice(name),
                resolved.map(|a| (a, LookupCache::default())),
            );
        }
        matches!(self.accounts.get(name), Some(Some(_)))
    }

    fn account(&self, name: &[u8]) -> Option<Arc<Account>> {
        match self.accounts.get(name) {
            Some(Some((a, _))) => Some(a.clone()),
            _ => None,
        }
    }

    /// CONNECT from a dialing peer: its credentials and cluster name.
    async fn on_connect(&mut self, json: &[u8]) -> Result<(), Stop> {
        if self.solicit.is_some() || self.connected {
            return Err(Stop::Error(
                End::Failed("unexpected CONNECT".into()),
                "-ERR 'Protocol Error'\r\n",
            ));
        }
        let c: RouteConnect = serde_json::from_slice(json).map_err(|_| {
            Stop::Error(
                End::Failed("malformed CONNECT".into()),
                "-ERR 'Protocol Error'\r\n",
            )
        })?;
        if let Some(auth) = &self.cluster.opts.auth {
            let ok = c.user == auth.user && verify_password(&auth.password, &c.pass).await;
            if !ok {
                tracing::error!(
                    "{} - rid:{} - authentication error - User {:?}",
                    self.peer,
                    self.rid,
                    c.user
                );
                return Err(Stop::Error(
                    End::Failed("authorization violation".into()),
                    "-ERR 'Authorization Violation'\r\n",
                ));
            }
        }
        if c.name == self.cluster.server_id {
            return Err(Stop::End(End::SelfRoute));
        }
        self.check_cluster_name(&c.cluster, c.dynamic)?;
        self.connected = true;
        Ok(())
    }

    fn check_cluster_name(&self, remote: &str, remote_dynamic: bool) -> Result<(), Stop> {
        if remote.is_empty() || remote == self.cluster.name {
            return Ok(());
        }
        // A made-up name yields to a configured one; two configured names
        // must agree.
        if self.cluster.dynamic_name || remote_dynamic {
            return Ok(());
        }
        tracing::error!(
            "{} - rid:{} - Rejecting connection, cluster name {remote:?} does not match {:?}",
            self.peer,
            self.rid,
            self.cluster.name
        );
        Err(Stop::Error(
            End::Failed(format!("cluster name {remote:?} does not match")),
            "-ERR 'Cluster Name Conflict'\r\n",
        ))
    }

    fn on_info(&mut self, json: &[u8]) -> Result<(), Stop> {
        let info: RouteInfo = serde_json::from_slice(json).map_err(|_| {
            Stop::Error(
                End::Failed("malformed INFO".into()),
                "-ERR 'Protocol Error'\r\n",
            )
        })?;
        match &self.link {
            None => self.register(info),
            Some(link) => {
                if info.server_id != link.remote_id && !info.server_id.is_empty() {
                    self.gossip(&info);
                } else if info.ldm {
                    self.cluster.peer_lame_duck(link);
                }
                // Other updates (permissions) need nothing here.
                Ok(())
            }
        }
    }

    /// A peer told us of another server: dial it unless we know it.
    fn gossip(&self, info: &RouteInfo) {
        let c = &self.cluster;
        if info.server_id == c.server_id || c.is_connected_to(&info.server_id) {
            return;
        }
        if c.is_configured(&info.host, info.port) {
            return;
        }
        let ip = if info.ip.is_empty() {
            format!("nats-route://{}:{}/", info.host, info.port)
        } else {
            info.ip.clone()
        };
        if let Some(url) = gossip_url(&ip, &c.opts) {
            tracing::debug!("rid:{} - gossip: new route to {}", self.rid, url.display);
            c.solicit_implicit(url);
        }
    }

    /// The peer's first INFO: register the route and exchange interest.
    fn register(&mut self, mut info: RouteInfo) -> Result<(), Stop> {
        if self.solicit.is_none() && !self.connected {
            return Err(Stop::Error(
                End::Failed("INFO before CONNECT".into()),
                "-ERR 'Authorization Violation'\r\n",
            ));
        }
        if info.server_id == self.cluster.server_id {
            return Err(Stop::End(End::SelfRoute));
        }
        if info.server_id.is_empty() {
            return Err(Stop::Error(
                End::Failed("INFO without server_id".into()),
                "-ERR 'Protocol Error'\r\n",
            ));
        }
        self.check_cluster_name(&info.cluster, info.dynamic)?;
        if info.ip.is_empty() {
            info.ip = format!("nats-route://{}:{}/", self.peer.ip(), info.port);
        }
        self.outlet.headers.store(info.headers, Ordering::Relaxed);
        let link = Arc::new(RouteLink {
            rid: self.rid,
            remote_id: info.server_id.clone(),
            remote_name: info.server_name.clone(),
            outlet: self.outlet.clone(),
            did_solicit: self.solicit.is_some(),
            url: self.solicit.as_ref().map(|u| u.display.clone()),
            info,
            started: SystemTime::now(),
            in_msgs: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            interest: parking_lot::Mutex::new(Default::default()),
            ldm: std::sync::atomic::AtomicBool::new(false),
        });
        let Some(others) = self.cluster.register(link.clone()) else {
            tracing::debug!(
                "{} - rid:{} - duplicate route to {}; closing this one",
                self.peer,
                self.rid,
                link.remote_id
            );
            return Err(Stop::End(End::Duplicate(link.remote_id.clone())));
        };
        tracing::info!(
            "{} - rid:{} - Route connection created ({} {}, {})",
            self.peer,
            self.rid,
            link.remote_name,
            link.remote_id,
            if link.did_solicit {
                "solicited"
            } else {
                "accepted"
            }
        );
        // From now on the peer hears every change; then each shard writes
        // what it has, in its own order (router/interest.rs).
        self.cluster.bus.add_peer(self.outlet.clone());
        for account in self.cluster.accounts.all() {
            account.router.sync_peer(&self.outlet);
        }
        // Gossip: the servers we already know learn of the new one and
        // dial it, so one seed route joins the whole mesh.
        let mut gossip = link.info.clone();
        gossip.nonce.clear();
        let line = gossip.to_line();
        for o in others {
            crate::router::interest::send_line(&o.outlet, &line);
        }
        if let Some(url) = &self.solicit {
            self.cluster.note_first_outcome(url);
        }
        self.link = Some(link);
        Ok(())
    }

    async fn remote_sub(&mut self, rs: RouteSub) {
        let key = (rs.account.clone(), rs.subject.clone(), rs.queue.clone());
        if let Some((_, sub)) = self.subs.get(&key) {
            // A queue group's new member count.
            sub.set_weight(rs.weight);
            return;
        }
        if !self.ensure_account(&rs.account).await {
            return;
        }
        let Some(account) = self.account(&rs.account) else {
            return;
        };
        if !crate::protocol::subject::valid_sub_subject(&rs.subject) {
            tracing::debug!("rid:{} - ignored RS+ with an invalid subject", self.rid);
            return;
        }
        let sub = Arc::new(Subscription::client(
            rs.subject,
            rs.queue,
            Bytes::new(),
            self.outlet.clone(),
        ));
        sub.set_weight(rs.weight);
        // Acknowledged before the next RMSG (see `pending`), not now: a
        // burst of RS+ goes to the shards in one go.
        if let Ok(ack) = account.router.subscribe(sub.clone()) {
            self.pending.push(ack);
            if self.pending.len() >= 256 {
                self.await_interest().await;
            }
            if let Some(l) = &self.link {
                l.interest.lock().insert(key.clone());
            }
            self.subs.insert(key, (account, sub));
        }
    }

    /// Wait until every RS+ read so far is in the shards' tries.
    async fn await_interest(&mut self) {
        for ack in self.pending.drain(..) {
            let _ = ack.await;
        }
    }

    fn remote_unsub(&mut self, rs: RouteSub) {
        let key = (rs.account, rs.subject, rs.queue);
        if let Some((account, sub)) = self.subs.remove(&key) {
            account.router.unsubscribe([sub]);
            if let Some(l) = &self.link {
                l.interest.lock().remove(&key);
            }
        }
    }

    async fn end_batch(&mut self) {
        let (_out_msgs, _out_bytes, _slow) = self.batch.finish();
        if self.batch_msgs > 0 {
            if let Some(l) = &self.link {
                l.in_msgs.fetch_add(self.batch_msgs, Ordering::Relaxed);
                l.in_bytes.fetch_add(self.batch_bytes, Ordering::Relaxed);
            }
            self.batch_msgs = 0;
            self.batch_bytes = 0;
        }
        // A local subscriber falling behind slows the route a little
        // rather than being cut at once (as for client publishers).
        if let Some(o) = self.batch.take_pacing() {
            o.out.pace().await;
        }
    }

    /// Undo everything the session added: its registration, its place on
    /// the interest bus and the peer's interest in our indexes.
    fn cleanup(&mut self, end: Option<&End>) {
        if std::mem::replace(&mut self.cleaned, true) {
            return;
        }
        if let Some(link) = self.link.take() {
            self.cluster.bus.remove_peer(&self.outlet);
            self.cluster.unregister(&link);
            tracing::info!(
                "{} - rid:{} - Route connection closed ({} {}): {}",
                self.peer,
                self.rid,
                link.remote_name,
                link.remote_id,
                match end {
                    Some(e) => e.to_string(),
                    None => "route actor stopped".into(),
                }
            );
        }
        let mut per_account: FxHashMap<String, (Arc<Account>, Vec<Arc<Subscription>>)> =
            FxHashMap::default();
        for (_, (account, sub)) in self.subs.drain() {
            per_account
                .entry(account.name.clone())
                .or_insert_with(|| (account.clone(), Vec::new()))
                .1
                .push(sub);
        }
        for (_, (account, subs)) in per_account {
            account.router.unsubscribe(subs);
        }
        let reason = match end {
            Some(End::Shutdown) => CloseReason::ServerShutdown,
            Some(End::Failed(_)) => CloseReason::ReadError,
            None => CloseReason::Crashed,
            _ => CloseReason::ClientClosed,
        };
        self.outlet.close(reason);
    }
}

/// `verify_cert_and_check_known_urls`: the dialer's certificate must name
/// (as a DNS SAN) the host of one of our configured route URLs.
fn known_url_cert(cluster: &Cluster, conn: &rustls::ServerConnection) -> bool {
    let Some(id) = crate::tls::peer_identity(conn) else {
        return false;
    };
    cluster
        .opts
        .routes
        .iter()
        .any(|r| id.dns_names.iter().any(|d| d.eq_ignore_ascii_case(&r.host)))
}

/// Check a route password: plain in constant time, bcrypt on a blocking
/// thread (routes log in rarely, so no pool is needed).
async fn verify_password(secret: &Secret, given: &str) -> bool {
    match secret {
        Secret::Plain(p) => crate::auth::ct_eq(p.as_bytes(), given.as_bytes()),
        Secret::Bcrypt { hash, .. } => {
            let (hash, given) = (hash.clone(), given.to_string());
            tokio::task::spawn_blocking(move || bcrypt::verify(given, &hash).unwrap_or(false))
                .await
                .unwrap_or(false)
        }
    }
}

/// Drain the route's queue with vectored writes and keep it alive with
/// PINGs; a peer that answers none of `ping_max` PINGs is stale.
async fn run_writer(
    outlet: Arc<Outlet>,
    mut w: BoxWrite,
    ping_interval: Duration,
    ping_max: u64,
    write_deadline: Duration,
    pings_out: Arc<AtomicU64>,
) {
    let mut segs: Vec<Bytes> = Vec::new();
    let interval = ping_interval.max(Duration::from_millis(10));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let closing = outlet.closing.clone();
    'outer: loop {
        tokio::select! {
            biased;
            _ = closing.cancelled() => break,
            _ = outlet.out.wait() => {}
            _ = ping.tick() => {
                if pings_out.fetch_add(1, Ordering::Relaxed) + 1 > ping_max {
                    outlet.close(CloseReason::StaleConnection);
                    break;
                }
                outlet.out.push_raw(b"PING\r\n");
            }
        }
        loop {
            let n = outlet.out.take(&mut segs);
            if n == 0 {
                break;
            }
            match tokio::time::timeout(write_deadline, write_segments(&mut w, &mut segs)).await {
                Ok(Ok(())) => outlet.out.written(n),
                Ok(Err(_)) => {
                    outlet.close(CloseReason::WriteError);
                    break 'outer;
                }
                Err(_) => {
                    outlet.close(CloseReason::SlowConsumerWriteDeadline);
                    break 'outer;
                }
            }
        }
    }
    // Flush what is queued (a last -ERR) briefly, then close.
    let flush = async {
        outlet.out.seal();
        segs.clear();
        outlet.out.take(&mut segs);
        outlet.out.close();
        let _ = write_segments(&mut w, &mut segs).await;
        let _ = w.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_millis(300), flush).await;
}
