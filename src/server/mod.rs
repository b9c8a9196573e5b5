//! The server: shared context, start, reload, lame duck and shutdown.
//! The supervision tree under `ServerSupervisor` is drawn once, in
//! docs/ARCHITECTURE.md.

mod claims;
pub mod cluster;
mod lame_duck;
pub mod listener;
pub mod logging;
mod recheck;
pub mod system;

pub use recheck::{check_presented, moved_account, pins_still_hold};
pub mod signals;
mod supervisor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use ractor::{Actor, ActorRef};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::account::Accounts;
use crate::auth::Authenticator;
use crate::client::{ClientSupMsg, CloseReason, ConnCtl, ConnShared};
use crate::config::Options;
use crate::monitor::{ClosedConn, MAX_CLOSED};
use crate::protocol::info::{NATS_COMPAT_VERSION, ServerInfo};
use crate::router::interest::InterestBus;
use crate::tls::TlsOptions;
use supervisor::{ServerSupervisor, SupervisorArgs, SupervisorMsg};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Server-wide counters for /varz.
#[derive(Default)]
pub struct ServerStats {
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    pub out_msgs: AtomicU64,
    pub out_bytes: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub stale_connections: AtomicU64,
    pub total_connections: AtomicU64,
    /// Children the root supervisor restarted.
    pub restarts: AtomicU64,
}

/// Everything the actors and tasks share.
pub struct ServerContext {
    opts: RwLock<Arc<Options>>,
    pub server_id: String,
    pub server_name: String,
    pub client_addr: SocketAddr,
    pub stats: ServerStats,
    pub conns: DashMap<u64, Arc<ConnShared>>,
    /// Every account by name; connections bind to one at CONNECT.
    pub accounts: Arc<Accounts>,
    /// Running accept loops (one per listener).
    pub accept_loops: AtomicUsize,
    /// Lame duck mode: no new clients, existing ones told and closed.
    pub lame_duck: AtomicBool,
    pub next_cid: AtomicU64,
    pub start_time: SystemTime,
    pub shutdown: CancellationToken,
    /// Recently closed connections for /connz?state=closed.
    pub closed: Mutex<std::collections::VecDeque<ClosedConn>>,
    client_sup: RwLock<Option<ActorRef<ClientSupMsg>>>,
    /// Authentication for new (and, on reload, existing) clients.
    auth: RwLock<Arc<Authenticator>>,
    /// Bumped by every reload (under `auth`'s write lock), so a login or a
    /// re-check knows which configuration its verdict belongs to and the
    /// newest one wins.
    config_gen: AtomicU64,
    /// TLS for client connections, when configured.
    tls: RwLock<Option<Arc<ClientTls>>>,
    /// Operator mode: the account JWTs (fixed for the server's life; a
    /// reload cannot switch operator mode on or off).
    pub account_store: Option<Arc<crate::auth::resolver::AccountStore>>,
    /// The cluster (routes), when a `cluster` block is configured.
    pub cluster: std::sync::OnceLock<Arc<crate::route::Cluster>>,
}

/// The client TLS acceptor and the options it was built from.
pub struct ClientTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub opts: TlsOptions,
}

impl ClientTls {
    pub fn from_options(opts: &TlsOptions) -> Result<ClientTls, StartError> {
        let config = crate::tls::server_config(opts)
            .map_err(|e| StartError(format!("TLS configuration error: {e}")))?;
        Ok(ClientTls {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            opts: opts.clone(),
        })
    }
}

impl ServerContext {
    pub fn opts(&self) -> Arc<Options> {
        self.opts.read().clone()
    }

    pub fn debug(&self) -> bool {
        self.opts.read().debug
    }

    pub fn auth(&self) -> Arc<Authenticator> {
        self.auth.read().clone()
    }

    /// The authenticator and the configuration generation it belongs to.
    pub fn auth_with_gen(&self) -> (Arc<Authenticator>, u64) {
        let a = self.auth.read();
        (a.clone(), self.config_gen.load(Ordering::Acquire))
    }

    /// Start a new authentication generation without a new configuration
    /// (an account JWT changed): logins and re-checks in flight are judged
    /// again, and connected clients are re-checked.
    pub fn refresh_auth(&self) -> u64 {
        let _a = self.auth.write();
        self.config_gen.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The current configuration generation (see `config_gen`).
    pub fn config_gen(&self) -> u64 {
        self.config_gen.load(Ordering::Acquire)
    }

    pub fn tls(&self) -> Option<Arc<ClientTls>> {
        self.tls.read().clone()
    }

    /// Swap in new options, authentication and TLS (configuration reload);
    /// returns the new configuration generation.
    pub fn replace_config(
        &self,
        opts: Options,
        auth: Authenticator,
        tls: Option<ClientTls>,
    ) -> u64 {
        *self.opts.write() = Arc::new(opts);
        *self.tls.write() = tls.map(Arc::new);
        let mut a = self.auth.write();
        *a = Arc::new(auth);
        self.config_gen.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn info(&self) -> ServerInfo {
        let opts = self.opts();
        ServerInfo {
            server_id: self.server_id.clone(),
            server_name: self.server_name.clone(),
            version: NATS_COMPAT_VERSION.into(),
            proto: 1,
            go: crate::RUST_TOOLCHAIN.into(),
            host: opts.host.clone(),
            port: self.client_addr.port(),
            headers: true,
            auth_required: self.auth().auth_required(),
            tls_required: self.tls().is_some(),
            tls_verify: self
                .tls()
                .is_some_and(|t| t.opts.verify || t.opts.verify_and_map),
            max_payload: opts.max_payload,
            ldm: self.lame_duck.load(Ordering::Relaxed),
            rnats_version: VERSION.into(),
            connect_urls: self.connect_urls(),
            cluster: self.cluster.get().map(|c| c.name.clone()),
            ..Default::default()
        }
    }

    /// Client URLs of this server and its peers (`connect_urls`), so
    /// clients learn the other nodes; empty without a cluster.
    pub fn connect_urls(&self) -> Vec<String> {
        let Some(c) = self.cluster.get() else {
            return Vec::new();
        };
        let peers = c.peer_client_urls();
        if peers.is_empty() {
            return Vec::new();
        }
        let mut urls: Vec<String> = c.own_client_urls().to_vec();
        urls.extend(peers);
        urls.dedup();
        urls
    }

    /// Send every client an async INFO (the cluster's `connect_urls` changed).
    pub fn broadcast_info(&self) {
        if let Some(sup) = self.client_sup() {
            let _ = sup.cast(ClientSupMsg::BroadcastInfo(self.async_info_line()));
        }
    }

    /// The INFO line for a new client connection.
    pub fn client_info_line(&self, conn: &ConnShared) -> Vec<u8> {
        let mut info = self.info();
        info.client_id = Some(conn.cid);
        info.client_ip = Some(conn.peer.ip().to_string());
        if self.auth().needs_nonce() {
            info.nonce = Some(conn.nonce.get_or_init(new_nonce).clone());
        }
        info.to_line()
    }

    pub fn client_info_line_for(&self, cid: Option<u64>, peer: &SocketAddr) -> Vec<u8> {
        let mut info = self.info();
        info.client_id = cid;
        info.client_ip = Some(peer.ip().to_string());
        info.to_line()
    }

    /// An asynchronous INFO for connected clients (lame duck mode).
    pub fn async_info_line(&self) -> Vec<u8> {
        self.info().to_line()
    }

    pub fn note_closed(&self, conn: &ConnShared) {
        let mut closed = self.closed.lock();
        if closed.len() >= MAX_CLOSED {
            closed.pop_front();
        }
        closed.push_back(ClosedConn::from_conn(conn));
    }

    pub(crate) fn client_sup(&self) -> Option<ActorRef<ClientSupMsg>> {
        self.client_sup.read().clone()
    }

    /// Send a control message to one connection through its actor.
    pub fn control(&self, cid: u64, c: ConnCtl) {
        if let Some(s) = self.client_sup() {
            let _ = s.cast(ClientSupMsg::Control(cid, c));
        }
    }

    /// Close one connection.
    pub fn kick(&self, cid: u64) {
        self.control(
            cid,
            ConnCtl::Kick {
                reason: CloseReason::Kicked,
                err: None,
            },
        );
    }

    /// Fault injection for the supervision tests.
    #[doc(hidden)]
    pub fn inject_connection_panic(&self, cid: u64) {
        if let Some(s) = self.client_sup() {
            let _ = s.cast(ClientSupMsg::InjectPanic(cid));
        }
    }

    #[doc(hidden)]
    pub fn inject_writer_panic(&self, cid: u64) {
        if let Some(s) = self.client_sup() {
            let _ = s.cast(ClientSupMsg::InjectWriterPanic(cid));
        }
    }

    #[doc(hidden)]
    pub fn inject_reader_panic(&self, cid: u64) {
        self.control(cid, ConnCtl::InjectReaderPanic);
    }

    #[doc(hidden)]
    pub fn inject_client_supervisor_panic(&self) {
        if let Some(s) = self.client_sup() {
            let _ = s.cast(ClientSupMsg::InjectSelfPanic);
        }
    }

    #[doc(hidden)]
    pub fn inject_shard_panic(&self, shard: usize) {
        self.accounts.inject_shard_panic(shard);
    }
}

/// A fresh nonce for a client to sign: 11 random bytes in base64url, as
/// nats-server makes them.
fn new_nonce() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 11];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // The system RNG failing is not survivable for a security nonce;
        // fall back to fastrand's 64-bit seed only to keep serving (every
        // signature is still checked against this value).
        b.iter_mut().for_each(|x| *x = fastrand::u8(..));
    }
    data_encoding::BASE64URL_NOPAD.encode(&b)
}

/// The server's identity is an NKey, as in nats-server: `server_id` is
/// the public key of a server key pair made at start ("N...").
fn new_server_id() -> String {
    nkeys::KeyPair::new_server().public_key()
}

/// A running server.
pub struct Server {
    pub ctx: Arc<ServerContext>,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    supervisor: ActorRef<SupervisorMsg>,
    done: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Fault injection for the supervision tests: panic the client listener.
    #[doc(hidden)]
    pub fn inject_listener_panic(&self) {
        let _ = self.supervisor.cast(SupervisorMsg::InjectListenerPanic);
    }
}

#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl Server {
    /// Bind the listeners and start the supervision tree.
    pub async fn start(opts: Options) -> Result<Server, StartError> {
        // Options built in code get the same checks as a file's.
        opts.validate()
            .map_err(|e| StartError(format!("configuration error: {e}")))?;
        // Process-wide; it only acts where the runtime calls its park hook
        // (the rnats-server binary).
        crate::busy_poll::set_budget(opts.busy_poll);
        let port = if opts.port < 0 { 0 } else { opts.port as u16 };
        let client_listener = TcpListener::bind((opts.host.as_str(), port))
            .await
            .map_err(|e| {
                StartError(format!(
                    "Error listening on port: {}:{}, \"{e}\"",
                    opts.host, opts.port
                ))
            })?;
        let client_addr = client_listener
            .local_addr()
            .map_err(|e| StartError(e.to_string()))?;
        let http_listener = if opts.http_port != 0 {
            let p = if opts.http_port < 0 {
                0
            } else {
                opts.http_port as u16
            };
            Some(
                TcpListener::bind((opts.http_host.as_str(), p))
                    .await
                    .map_err(|e| {
                        StartError(format!(
                            "Error listening on monitor port: {}:{}, \"{e}\"",
                            opts.http_host, opts.http_port
                        ))
                    })?,
            )
        } else {
            None
        };
        let http_addr = http_listener.as_ref().and_then(|l| l.local_addr().ok());
        let route_listener = cluster::bind(&opts).await?;
        let https = if opts.https_port != 0 {
            let Some(tls) = &opts.tls else {
                return Err(StartError(
                    "https_port needs a tls block (the monitor uses the server certificate)".into(),
                ));
            };
            // Same certificate; client certificates only when monitor_auth
            // names a CA for them.
            let mut mtls = tls.clone();
            mtls.verify_and_map = false;
            mtls.verify = false;
            mtls.ca_file = None;
            mtls.pinned_certs.clear();
            if let Some(ca) = opts.monitor_auth.as_ref().and_then(|m| m.ca_file.clone()) {
                mtls.ca_file = Some(ca);
                mtls.verify = true;
            }
            let config = crate::tls::server_config(&mtls)
                .map_err(|e| StartError(format!("HTTPS monitor TLS error: {e}")))?;
            let p = if opts.https_port < 0 {
                0
            } else {
                opts.https_port as u16
            };
            let l = TcpListener::bind((opts.http_host.as_str(), p))
                .await
                .map_err(|e| {
                    StartError(format!(
                        "Error listening on https monitor port: {}:{}, \"{e}\"",
                        opts.http_host, opts.https_port
                    ))
                })?;
            Some((Arc::new(l), tokio_rustls::TlsAcceptor::from(config)))
        } else {
            None
        };
        let https_addr = https.as_ref().and_then(|(l, _)| l.local_addr().ok());
        let mut auth = Authenticator::from_options(&opts)
            .map_err(|e| StartError(format!("authorization configuration error: {e}")))?;
        let account_store = if opts.operator_mode() {
            let store = crate::auth::resolver::AccountStore::from_options(&opts)
                .map_err(|e| StartError(format!("account resolver error: {e}")))?;
            let store = Arc::new(store);
            auth = auth.with_operator(store.clone());
            Some(store)
        } else {
            None
        };
        let tls = match &opts.tls {
            Some(t) => Some(Arc::new(ClientTls::from_options(t)?)),
            None => None,
        };
        let server_id = new_server_id();
        let server_name = if opts.server_name.is_empty() {
            server_id.clone()
        } else {
            opts.server_name.clone()
        };
        let ctx = Arc::new(ServerContext {
            accounts: Accounts::new(
                opts.router_shards,
                opts.cluster.as_ref().map(|_| InterestBus::new()),
            ),
            accept_loops: AtomicUsize::new(0),
            lame_duck: AtomicBool::new(false),
            opts: RwLock::new(Arc::new(opts)),
            server_id,
            server_name,
            client_addr,
            stats: ServerStats::default(),
            conns: DashMap::new(),
            next_cid: AtomicU64::new(1),
            start_time: SystemTime::now(),
            shutdown: CancellationToken::new(),
            // Allocated once, so the ring never reallocates mid-flood.
            closed: Mutex::new(std::collections::VecDeque::with_capacity(MAX_CLOSED)),
            client_sup: RwLock::new(None),
            auth: RwLock::new(Arc::new(auth)),
            config_gen: AtomicU64::new(0),
            tls: RwLock::new(tls),
            account_store,
            cluster: std::sync::OnceLock::new(),
        });
        let cluster = match route_listener {
            Some(l) => match cluster::build(&ctx, &l)? {
                Some(c) => {
                    let _ = ctx.cluster.set(c.clone());
                    Some((c, Arc::new(l)))
                }
                None => None,
            },
            None => None,
        };
        let opts = ctx.opts();
        tracing::info!("Starting rnats-server");
        tracing::info!("  Version:  {VERSION} (NATS protocol {NATS_COMPAT_VERSION})");
        tracing::info!("  Rust:     {}", crate::RUST_TOOLCHAIN);
        tracing::info!("  Name:     {}", ctx.server_name);
        tracing::info!("  ID:       {}", ctx.server_id);
        if let Some(cf) = &opts.config_file {
            tracing::info!("Using configuration file: {}", cf.display());
        }
        for w in &opts.warnings {
            tracing::warn!("{w}");
        }
        for w in crate::auth::plaintext_warnings(&opts.effective_auth()) {
            tracing::warn!("{w}");
        }
        if ctx.tls().is_some() {
            tracing::info!("TLS required for client connections");
        }
        let args = SupervisorArgs {
            ctx: ctx.clone(),
            client_listener: Some(Arc::new(client_listener)),
            http_listener: http_listener.map(Arc::new),
            https,
            cluster,
        };
        let (supervisor, handle) = Actor::spawn(None, ServerSupervisor, args)
            .await
            .map_err(|e| StartError(format!("could not start supervisor: {e}")))?;
        // Accounts, their limits and imports, before the server says it
        // is ready.
        if let Err(e) = crate::deliver::imports::install(&ctx.accounts, &opts.accounts).await {
            supervisor.stop(None);
            return Err(StartError(format!("accounts configuration error: {e}")));
        }
        if let Err(e) = system::install(&ctx).await {
            supervisor.stop(None);
            return Err(StartError(format!("system account error: {e}")));
        }
        // Top-level `mappings` belong to the global account.
        ctx.accounts
            .default_account()
            .set_mappings(opts.mappings.clone());
        if let Some(store) = &ctx.account_store {
            if let Err(e) = claims::install(&ctx, store).await {
                supervisor.stop(None);
                return Err(StartError(format!("account resolver error: {e}")));
            }
            if matches!(
                opts.resolver,
                Some(crate::config::operator::ResolverConfig::Full { .. })
            ) {
                tokio::spawn(claims::watch_dir(ctx.clone(), store.clone()));
            }
            tracing::info!(
                "Trusted operators: {}, accounts known: {}, system account {}",
                opts.trusted_operators.len() + opts.trusted_keys.len(),
                store.keys().len(),
                opts.system_account()
            );
        }
        if let Some(a) = http_addr {
            tracing::info!("Starting http monitor on {}", a);
        }
        if let Some(a) = https_addr {
            tracing::info!("Starting https monitor on {}", a);
        }
        tracing::info!("Listening for client connections on {}", client_addr);
        tracing::info!("Server is ready");
        tokio::spawn(release_memory(ctx.clone()));
        tokio::spawn(sweep_limiter(ctx.clone()));
        let done = tokio::spawn(async move {
            let _ = handle.await;
        });
        Ok(Server {
            ctx,
            http_addr,
            https_addr,
            supervisor,
            done,
        })
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.ctx.client_addr
    }

    /// Apply a reloaded configuration: new TLS certificates and CA apply to
    /// new connections (existing ones stay up); new authorization applies
    /// at once (the failed-login limiter keeps its bans and counts), and
    /// clients whose credentials are no longer valid are disconnected with
    /// 'Authorization Violation', as nats-server does.
    /// Monitoring addresses, ports and `monitor_auth { ca_file }` are not
    /// reloadable: a reload that changes them is refused
    /// ([`Options::check_reload`]); client listener addresses are kept as
    /// they were.
    pub fn reload(&self, opts: Options) -> Result<(), String> {
        opts.validate().map_err(|e| e.to_string())?;
        self.ctx.opts().check_reload(&opts)?;
        let tls = match &opts.tls {
            Some(t) => Some(ClientTls::from_options(t).map_err(|e| e.0)?),
            None => None,
        };
        // Last, as it applies the new limits to the limiter it carries over
        // (bans, failure counts and the rate bucket survive a reload).
        let mut auth = Authenticator::reloaded(&opts, &self.ctx.auth())?;
        if let Some(store) = &self.ctx.account_store {
            store.set_trust(crate::auth::resolver::Trust::from_options(&opts));
            auth = auth.with_operator(store.clone());
        }
        for w in crate::auth::plaintext_warnings(&opts.effective_auth()) {
            tracing::warn!("{w}");
        }
        crate::busy_poll::set_budget(opts.busy_poll);
        let generation = self.ctx.replace_config(opts, auth, tls);
        tokio::spawn(recheck::recheck_clients(self.ctx.clone(), generation));
        Ok(())
    }

    /// Close every connection (flushing what is queued), stop the tree.
    pub async fn shutdown(self) {
        self.ctx.shutdown.cancel();
        self.close_all_clients(CloseReason::ServerShutdown);
        // Let writers flush their final bytes before the tree goes.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.ctx.conns.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.supervisor.stop(Some("shutdown".into()));
        let _ = self.done.await;
    }

    /// Kick every client through the control path.
    fn close_all_clients(&self, reason: CloseReason) {
        let cids: Vec<u64> = self.ctx.conns.iter().map(|c| *c.key()).collect();
        for cid in cids {
            self.ctx.control(
                cid,
                ConnCtl::Kick {
                    reason: reason.clone(),
                    err: None,
                },
            );
        }
        // Connections still in their TLS handshake have no actor yet.
        for c in self.ctx.conns.iter() {
            if c.value().account().is_none() {
                c.value().close(reason.clone());
            }
        }
    }
}

/// The monotonic instant of a unix time in seconds (now if it has passed).
pub fn instant_of_unix(at: i64) -> tokio::time::Instant {
    let left = at.saturating_sub(crate::jwt::now_unix()).max(0) as u64;
    // A JWT expiring in the far future must not overflow the timer.
    tokio::time::Instant::now() + Duration::from_secs(left.min(100 * 365 * 86400))
}

/// An account JWT changed (a push or a file): its limits apply to the
/// account now, and every connected client is checked again, so a revoked
/// user or an expired account is disconnected at once.
pub(crate) fn account_updated(ctx: &Arc<ServerContext>, key: &str) {
    let generation = ctx.refresh_auth();
    let ctx = ctx.clone();
    let key = key.to_string();
    tokio::spawn(async move {
        // Limits and imports first (for an account in use), then the
        // re-check that drops revoked users.
        if let (Some(store), Some(_)) = (&ctx.account_store, ctx.accounts.get(&key))
            && let Err(e) = crate::deliver::imports::apply_jwt(&ctx.accounts, store, &key).await
        {
            tracing::error!("account {key}: updated JWT not applied: {e}");
        }
        // Accounts in use that import from this one: its exports (and the
        // revocations of their activation tokens) may have changed.
        if let Some(store) = &ctx.account_store {
            for a in ctx.accounts.all() {
                let imports_from_it = a.jwt_applied() != 0
                    && store
                        .get(&a.name)
                        .is_some_and(|s| s.claims.nats.imports.iter().any(|i| i.account == key));
                if imports_from_it {
                    a.set_jwt_applied(0);
                    if let Err(e) =
                        crate::deliver::imports::apply_jwt(&ctx.accounts, store, &a.name).await
                    {
                        tracing::error!("account {}: JWT not re-applied: {e}", a.name);
                    }
                }
            }
        }
        recheck::recheck_clients(ctx, generation).await;
    });
}

/// Forget failed-login entries that have gone quiet, now and then, so the
/// table holds only live ones (a full table also evicts on its own).
async fn sweep_limiter(ctx: Arc<ServerContext>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => ctx.auth().limiter().sweep(),
        }
    }
}

/// Hand freed memory back to the OS after a flood is over. glibc's
/// allocator keeps freed pages in its arenas, which is why a server's RSS
/// tends to stay at its peak; `malloc_trim` returns them. Runs only when
/// connections, subscriptions or traffic went down or through a lot, so an
/// idle or steady server pays nothing.
async fn release_memory(ctx: Arc<ServerContext>) {
    use std::sync::atomic::Ordering::Relaxed;
    // Frees trail the counters (a closed connection's subscriptions leave
    // their tries after it leaves the table), so after a drop the heap is
    // trimmed on a few more ticks, not only on the one that saw it.
    const TRIMS_AFTER_DROP: u32 = 3;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut conns, mut subs, mut bytes, mut opened) = (0usize, 0usize, 0u64, 0u64);
    let mut trims_left = 0u32;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now_conns = ctx.conns.len();
        let now_subs = ctx.accounts.total_subscriptions();
        let now_bytes = ctx.stats.in_bytes.load(Relaxed) + ctx.stats.out_bytes.load(Relaxed);
        let now_opened = ctx.stats.total_connections.load(Relaxed);
        // Connections that came and went between two ticks leave the count
        // where it was but their memory freed: the total opened tells.
        let came_and_went = now_conns.saturating_sub(conns) < (now_opened - opened) as usize;
        let shrank = now_conns < conns || now_subs < subs || came_and_went;
        let churned = now_bytes.saturating_sub(bytes) > 64 * 1024 * 1024;
        (conns, subs, bytes, opened) = (now_conns, now_subs, now_bytes, now_opened);
        if shrank || churned {
            trims_left = TRIMS_AFTER_DROP;
        }
        if trims_left > 0 {
            trims_left -= 1;
            trim_heap();
            if ctx.debug() {
                tracing::debug!("Returned free heap memory (conns {now_conns}, subs {now_subs})");
            }
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}
