//! What the server gives the cluster: which accounts a peer may name, our
//! client URLs, and the async INFO clients get when `connect_urls`
//! change.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::TcpListener;

use super::{ServerContext, StartError};
use crate::account::Account;
use crate::config::Options;
use crate::route::{AccountResolver, Cluster, ClusterDeps};

/// How long a starting server holds its clients back while its configured
/// routes come up (see `Cluster::wait_configured`).
pub const ROUTE_STARTUP_WAIT: Duration = Duration::from_secs(3);

/// Bind the route port (`port: -1` picks one).
pub async fn bind(opts: &Options) -> Result<Option<TcpListener>, StartError> {
    let Some(c) = &opts.cluster else {
        return Ok(None);
    };
    let port = if c.port < 0 { 0 } else { c.port as u16 };
    TcpListener::bind((c.host.as_str(), port))
        .await
        .map(Some)
        .map_err(|e| {
            StartError(format!(
                "Error listening on router port: {}:{}, \"{e}\"",
                c.host, c.port
            ))
        })
}

/// The accounts a peer may name: `$G`, the system account, configured
/// accounts, and in operator mode any account the resolver knows (its
/// JWT applied as for a client binding to it).
struct ServerResolver(Weak<ServerContext>);

impl AccountResolver for ServerResolver {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Arc<Account>>> + Send + 'a>> {
        Box::pin(async move {
            let ctx = self.0.upgrade()?;
            if let Some(a) = ctx.accounts.get(name) {
                return Some(a);
            }
            let opts = ctx.opts();
            let configured = name == crate::account::Accounts::name_of(None)
                || name == opts.system_account()
                || opts.accounts.iter().any(|a| a.name == name);
            let jwt = ctx
                .account_store
                .as_ref()
                .is_some_and(|s| s.get(name).is_some());
            if !configured && !jwt {
                return None;
            }
            let a = ctx.accounts.bind(Some(name)).await.ok()?;
            if jwt
                && let Some(store) = &ctx.account_store
                && let Err(e) = crate::deliver::imports::apply_jwt(&ctx.accounts, store, name).await
            {
                tracing::error!("account {name} named by a route cannot be used: {e}");
                return None;
            }
            Some(a)
        })
    }
}

/// This server's client URLs (`host:port`) as peers should tell clients:
/// the client listener's address, or when it listens on every interface,
/// one URL per global unicast address of this host (as nats-server).
fn client_urls(ctx: &ServerContext) -> Vec<String> {
    let addr: SocketAddr = ctx.client_addr;
    if !addr.ip().is_unspecified() {
        return vec![addr.to_string()];
    }
    let urls: Vec<String> = global_ips()
        .into_iter()
        .map(|ip| SocketAddr::new(ip, addr.port()).to_string())
        .collect();
    if urls.is_empty() {
        tracing::error!("Address \"{}\" can not be resolved properly", addr.ip());
    }
    urls
}

/// The host's global unicast addresses (not loopback, link-local or
/// unspecified), from getifaddrs(3).
fn global_ips() -> Vec<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then
    // free with freeifaddrs; every pointer is checked for null before use.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                        if !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified() {
                            out.push(IpAddr::V4(ip));
                        }
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
                        if !ip.is_loopback() && !link_local && !ip.is_unspecified() {
                            out.push(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

/// Build the cluster for a server whose options have a `cluster` block.
pub fn build(
    ctx: &Arc<ServerContext>,
    listener: &TcpListener,
) -> Result<Option<Arc<Cluster>>, StartError> {
    let opts = ctx.opts();
    let Some(copts) = opts.cluster.clone() else {
        return Ok(None);
    };
    let Some(bus) = ctx.accounts.interest.clone() else {
        return Err(StartError("internal error: no interest bus".into()));
    };
    let listen_addr = listener
        .local_addr()
        .map_err(|e| StartError(format!("route listener: {e}")))?;
    let weak = Arc::downgrade(ctx);
    let deps = ClusterDeps {
        server_id: ctx.server_id.clone(),
        server_name: ctx.server_name.clone(),
        accounts: ctx.accounts.clone(),
        resolver: Arc::new(ServerResolver(weak.clone())),
        client_urls: client_urls(ctx),
        on_urls_changed: Box::new(move || {
            if let Some(ctx) = weak.upgrade() {
                ctx.broadcast_info();
            }
        }),
        max_payload: opts.max_payload,
        // Routes carry everyone's traffic: a generous queue before a
        // stalled peer is cut (nats-server uses max_pending for routes too).
        max_pending: opts.max_pending.max(64 * 1024 * 1024),
        write_deadline: opts.write_deadline.max(Duration::from_secs(10)),
        ping_interval: copts.route_ping_interval(opts.ping_interval),
        ping_max: copts.route_ping_max(opts.ping_max),
        shutdown: ctx.shutdown.clone(),
    };
    let cluster = Cluster::new(copts, deps, bus, listen_addr).map_err(StartError)?;
    tracing::info!("Cluster name is {}", cluster.name);
    if cluster.dynamic_name {
        tracing::warn!("Cluster name was dynamically generated, consider setting one");
    }
    tracing::info!("Listening for route connections on {listen_addr}");
    Ok(Some(cluster))
}
