//! The cluster: route connections to the other servers of a full mesh.
//!
//! - `Cluster` (this file) is the shared state: the registered routes by
//!   remote server id (one per pair of servers), what we tell peers about
//!   ourselves (INFO), the client URLs learned from them (`connect_urls`),
//!   and restart counts per solicited URL.
//! - `link.rs` runs one route session: TLS, the INFO/CONNECT handshake,
//!   then a reader (RS+/RS- into the account's index as `SubTarget::Route`
//!   subscriptions, RMSG/HMSG into `deliver::publish` with `Origin::Route`)
//!   and a writer draining the route's byte-counted outbound queue.
//! - `supervisor.rs` is the supervision: a `ClusterSupervisor` owning one
//!   `RouteActor` per peer, restarting solicited ones with capped
//!   exponential backoff and jitter, and the route listener.
//!
//! Local interest reaches peers through the router's `InterestBus`
//! (`router/interest.rs`): the shard actors write RS+/RS- lines straight
//! into every registered route's queue.

pub mod info;
pub mod link;
pub mod supervisor;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use ractor::ActorRef;
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;

use crate::account::{Account, Accounts};
use crate::config::cluster::{ClusterOptions, RouteUrl};
use crate::outbound::Outlet;
use crate::router::interest::InterestBus;
use info::RouteInfo;
pub use supervisor::{ClusterMsg, ClusterSupervisor};

/// Finds the account a peer names in RS+/RMSG. The server decides which
/// names are real (configured accounts, `$G`, the system account, or in
/// operator mode an account the resolver knows); others are ignored, as
/// nats-server ignores interest for accounts it cannot look up.
pub trait AccountResolver: Send + Sync {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Arc<Account>>> + Send + 'a>>;
}

/// What the server gives the cluster besides its options.
pub struct ClusterDeps {
    pub server_id: String,
    pub server_name: String,
    pub accounts: Arc<Accounts>,
    pub resolver: Arc<dyn AccountResolver>,
    /// This server's client URLs (`host:port`), told to peers.
    pub client_urls: Vec<String>,
    /// Called with every peer's client URLs when they change (for the
    /// clients' `connect_urls` and their async INFO).
    pub on_urls_changed: Box<dyn Fn() + Send + Sync>,
    pub max_payload: usize,
    pub max_pending: usize,
    pub write_deadline: Duration,
    pub ping_interval: Duration,
    pub ping_max: u64,
    pub shutdown: CancellationToken,
}

/// One registered route (its handshake is complete).
pub struct RouteLink {
    pub rid: u64,
    pub remote_id: String,
    pub remote_name: String,
    pub outlet: Arc<Outlet>,
    pub did_solicit: bool,
    /// The configured or gossiped URL we dialed (credentials redacted).
    pub url: Option<String>,
    /// The remote's INFO as it sent it (forwarded to other peers so they
    /// connect to it: gossip).
    pub info: RouteInfo,
    pub started: SystemTime,
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    /// The peer's interest entries (RS+ minus RS-), for /routez.
    pub interest: Mutex<rustc_hash::FxHashSet<InterestKey>>,
    /// The peer said it is in lame duck mode: its client URLs are no
    /// longer offered to our clients.
    pub ldm: std::sync::atomic::AtomicBool,
}

/// A peer's interest entry: (account, subject, queue).
pub type InterestKey = (bytes::Bytes, bytes::Bytes, Option<bytes::Bytes>);

/// Restart counts and state per solicited URL (for /routez and logs).
#[derive(Default, Clone)]
pub struct SolicitStats {
    pub restarts: u64,
    pub connected: bool,
    pub last_error: Option<String>,
}

pub struct Cluster {
    pub opts: ClusterOptions,
    /// The effective cluster name (configured, or made up at start).
    pub name: String,
    pub dynamic_name: bool,
    pub server_id: String,
    pub server_name: String,
    pub accounts: Arc<Accounts>,
    pub bus: Arc<InterestBus>,
    pub(crate) resolver: Arc<dyn AccountResolver>,
    routes: Mutex<FxHashMap<String, Arc<RouteLink>>>,
    /// The route listener's address (the real port with `port: -1`).
    pub listen_addr: SocketAddr,
    client_urls: Vec<String>,
    on_urls_changed: Box<dyn Fn() + Send + Sync>,
    pub(crate) acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) connector: Option<tokio_rustls::TlsConnector>,
    pub(crate) solicit: Mutex<FxHashMap<String, SolicitStats>>,
    /// Solicited URLs whose first attempt has an outcome (startup gate).
    outcomes: Mutex<rustc_hash::FxHashSet<String>>,
    pub(crate) next_rid: AtomicU64,
    pub max_payload: usize,
    pub max_pending: usize,
    pub write_deadline: Duration,
    pub ping_interval: Duration,
    pub ping_max: u64,
    pub shutdown: CancellationToken,
    pub(crate) supervisor: RwLock<Option<ActorRef<ClusterMsg>>>,
    /// Registrations and removals, so waiters (startup, tests) can await a
    /// route count without polling.
    changed: tokio::sync::Notify,
}

impl Cluster {
    pub fn new(
        opts: ClusterOptions,
        deps: ClusterDeps,
        bus: Arc<InterestBus>,
        listen_addr: SocketAddr,
    ) -> Result<Arc<Cluster>, String> {
        let (acceptor, connector) = match &opts.tls {
            Some(t) => (
                Some(
                    crate::tls::route::route_acceptor(t)
                        .map_err(|e| format!("cluster tls: {e}"))?,
                ),
                Some(
                    crate::tls::route::route_connector(t)
                        .map_err(|e| format!("cluster tls: {e}"))?,
                ),
            ),
            None => (None, None),
        };
        let dynamic_name = opts.name.is_empty();
        let name = if dynamic_name {
            // nats-server makes up a name when none is set; peers with a
            // configured name then win (see `link.rs`).
            let mut b = [0u8; 11];
            for x in b.iter_mut() {
                *x = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[fastrand::usize(..36)];
            }
            String::from_utf8_lossy(&b).into_owned()
        } else {
            opts.name.clone()
        };
        Ok(Arc::new(Cluster {
            opts,
            name,
            dynamic_name,
            server_id: deps.server_id,
            server_name: deps.server_name,
            accounts: deps.accounts,
            bus,
            resolver: deps.resolver,
            routes: Mutex::new(FxHashMap::default()),
            listen_addr,
            client_urls: deps.client_urls,
            on_urls_changed: deps.on_urls_changed,
            acceptor,
            connector,
            solicit: Mutex::new(FxHashMap::default()),
            outcomes: Mutex::new(Default::default()),
            next_rid: AtomicU64::new(1),
            max_payload: deps.max_payload,
            max_pending: deps.max_pending,
            write_deadline: deps.write_deadline,
            ping_interval: deps.ping_interval,
            ping_max: deps.ping_max,
            shutdown: deps.shutdown,
            supervisor: RwLock::new(None),
            changed: tokio::sync::Notify::new(),
        }))
    }

    /// The route URL peers should dial to reach us.
    pub fn advertised_url(&self) -> String {
        let hp = match &self.opts.advertise {
            Some(a) if a.contains(':') => a.clone(),
            Some(a) => format!("{a}:{}", self.listen_addr.port()),
            None => return String::new(),
        };
        format!("nats-route://{hp}/")
    }

    /// Our INFO for a new route connection.
    pub fn info(&self) -> RouteInfo {
        let (host, port) = match &self.opts.advertise {
            Some(a) => match a.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().unwrap_or(self.listen_addr.port())),
                None => (a.clone(), self.listen_addr.port()),
            },
            None => (self.opts.host.clone(), self.listen_addr.port()),
        };
        RouteInfo {
            server_id: self.server_id.clone(),
            server_name: self.server_name.clone(),
            version: crate::protocol::info::NATS_COMPAT_VERSION.into(),
            proto: 1,
            go: crate::RUST_TOOLCHAIN.into(),
            host,
            port,
            headers: true,
            auth_required: self.opts.auth.is_some(),
            tls_required: self.opts.tls.is_some(),
            tls_verify: self.opts.tls.is_some(),
            max_payload: self.max_payload as i64,
            ip: self.advertised_url(),
            cluster: self.name.clone(),
            dynamic: self.dynamic_name,
            connect_urls: if self.opts.no_advertise {
                Vec::new()
            } else {
                self.client_urls.clone()
            },
            ..Default::default()
        }
    }

    /// Register a route whose handshake is complete. `None` when a route
    /// to that server already exists (the new one is the duplicate and
    /// closes; as in nats-server, the first registered wins).
    pub(crate) fn register(&self, link: Arc<RouteLink>) -> Option<Vec<Arc<RouteLink>>> {
        let others = {
            let mut routes = self.routes.lock();
            if routes.contains_key(&link.remote_id) {
                return None;
            }
            let others: Vec<_> = routes.values().cloned().collect();
            routes.insert(link.remote_id.clone(), link.clone());
            others
        };
        self.changed.notify_waiters();
        if !link.info.connect_urls.is_empty() {
            (self.on_urls_changed)();
        }
        Some(others)
    }

    /// Remove a route (only if `link` is the registered one for its peer).
    pub(crate) fn unregister(&self, link: &Arc<RouteLink>) {
        let removed = {
            let mut routes = self.routes.lock();
            match routes.get(&link.remote_id) {
                Some(r) if Arc::ptr_eq(r, link) => routes.remove(&link.remote_id).is_some(),
                _ => false,
            }
        };
        if removed {
            self.changed.notify_waiters();
            if !link.info.connect_urls.is_empty() {
                (self.on_urls_changed)();
            }
        }
    }

    /// Tell every peer we are in lame duck mode (an INFO with `ldm`).
    pub fn announce_lame_duck(&self) {
        let mut info = self.info();
        info.ldm = true;
        let line = info.to_line();
        for r in self.routes() {
            crate::router::interest::send_line(&r.outlet, &line);
        }
    }

    /// A peer entered lame duck mode.
    pub(crate) fn peer_lame_duck(&self, link: &RouteLink) {
        if !link.ldm.swap(true, Ordering::Relaxed) && !link.info.connect_urls.is_empty() {
            (self.on_urls_changed)();
        }
    }

    pub fn is_connected_to(&self, server_id: &str) -> bool {
        self.routes.lock().contains_key(server_id)
    }

    pub fn routes(&self) -> Vec<Arc<RouteLink>> {
        let mut v: Vec<_> = self.routes.lock().values().cloned().collect();
        v.sort_by_key(|r| r.rid);
        v
    }

    pub fn num_routes(&self) -> usize {
        self.routes.lock().len()
    }

    /// Wait until at least `n` routes are registered, or `timeout`.
    pub async fn wait_for_routes(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.num_routes() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.num_routes() >= n;
            }
        }
    }

    /// Every peer's client URLs, for our clients' `connect_urls` (empty
    /// with `no_advertise`).
    pub fn peer_client_urls(&self) -> Vec<String> {
        if self.opts.no_advertise {
            return Vec::new();
        }
        let mut urls: Vec<String> = self
            .routes
            .lock()
            .values()
            .filter(|r| !r.ldm.load(Ordering::Relaxed))
            .flat_map(|r| r.info.connect_urls.iter().cloned())
            .collect();
        urls.sort();
        urls.dedup();
        urls
    }

    pub fn own_client_urls(&self) -> &[String] {
        &self.client_urls
    }

    /// Is `url` one of the configured routes (by host and port)?
    pub fn is_configured(&self, host: &str, port: u16) -> bool {
        self.opts
            .routes
            .iter()
            .any(|r| r.port == port && r.host.eq_ignore_ascii_case(host))
    }

    pub(crate) fn note_solicit(&self, url: &RouteUrl, f: impl FnOnce(&mut SolicitStats)) {
        f(self.solicit.lock().entry(url.display.clone()).or_default());
    }

    /// Restarts of the route actor for each solicited URL.
    pub fn solicit_stats(&self) -> Vec<(String, SolicitStats)> {
        let mut v: Vec<_> = self
            .solicit
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Ask the supervisor to dial a server we heard of through gossip.
    pub(crate) fn solicit_implicit(&self, url: RouteUrl) {
        if let Some(s) = self.supervisor.read().clone() {
            let _ = s.cast(ClusterMsg::Implicit(url));
        }
    }

    /// Resolves on the next registration or removal of a route (or after
    /// a short while, so a waiter that missed one looks again).
    pub(crate) async fn route_change(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(250), self.changed.notified()).await;
    }

    /// A configured route's first dial has an outcome (registered, or the
    /// peer could not be reached).
    pub(crate) fn note_first_outcome(&self, url: &RouteUrl) {
        if self.outcomes.lock().insert(url.display.clone()) {
            self.changed.notify_waiters();
        }
    }

    /// Wait until every configured route (but ourselves) has had its first
    /// outcome: up, or its peer unreachable. A starting server holds its
    /// clients back this long (at most `timeout`) so that what they publish
    /// first reaches the subscribers behind routes that can come up.
    pub async fn wait_configured(&self, expected: &[String], timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let done = {
                let o = self.outcomes.lock();
                expected.iter().all(|u| o.contains(u))
            };
            if done {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    pub(crate) fn next_rid(&self) -> u64 {
        self.next_rid.fetch_add(1, Ordering::Relaxed)
    }
}

/// Parse a gossiped `nats-route://host:port/` into a route URL carrying
/// our own route credentials (as nats-server does for implicit routes).
pub fn gossip_url(ip: &str, opts: &ClusterOptions) -> Option<RouteUrl> {
    let rest = ip.split_once("://").map(|(_, r)| r).unwrap_or(ip);
    let hp = rest.trim_end_matches('/');
    let hp = hp.rsplit_once('@').map(|(_, h)| h).unwrap_or(hp);
    let (host, port) = hp.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return None;
    }
    // nats-server dials implicit routes with the cluster's own route
    // credentials; a bcrypt route password cannot be sent, so such a
    // cluster needs every route configured explicitly.
    let (user, password) = match &opts.auth {
        Some(a) => match &a.password {
            crate::config::Secret::Plain(p) => (Some(a.user.clone()), Some(p.to_string())),
            crate::config::Secret::Bcrypt { .. } => (Some(a.user.clone()), None),
        },
        None => (None, None),
    };
    Some(RouteUrl {
        scheme: "nats-route".into(),
        display: format!("nats-route://{hp}/"),
        host,
        port,
        user,
        password,
    })
}
