//! Supervision of routes: a `ClusterSupervisor` with one `RouteActor` per
//! peer connection, and the route port's accept loop.
//!
//! - A **solicited** route actor dials its URL (retrying with capped
//!   exponential backoff and jitter while the peer is unreachable), runs
//!   the session, and when an established or handshaking session fails
//!   (TLS error, reset, peer restart, read or write error) it fails: the
//!   supervisor counts the restart for that URL, logs it at INF, and
//!   starts a new actor after a backoff. Restart counts show in /routez.
//! - An **accepted** route actor runs one session and stops; the peer
//!   that dialed re-establishes it.
//! - A route found to be a duplicate (both servers dialed each other) is
//!   closed; its solicited actor waits until no route to that server is
//!   left, then dials again. A route to ourselves stops for good.
//!
//! Route failures are the network's doing, not a bug in the actor, so
//! they are paced by backoff rather than counted against a restart
//! budget; the cluster supervisor itself is under the root supervisor's
//! budget. Session state (registration, interest, subscriptions) is
//! undone by the session's drop, so an actor killed with its supervisor
//! leaves nothing behind.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use rustc_hash::FxHashMap;
use tokio::net::{TcpListener, TcpStream};

use super::Cluster;
use super::link::{self, End};
use crate::config::cluster::RouteUrl;
use crate::supervision::TaskGuard;

/// First redial delay; doubles per failure up to `BACKOFF_MAX`, with up
/// to 50% jitter (nats-server waits a fixed second).
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A session that lived this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(10);
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

pub enum ClusterMsg {
    /// A socket accepted on the route port.
    Accepted(TcpStream, std::net::SocketAddr),
    /// Dial a server heard of through gossip.
    Implicit(RouteUrl),
    /// Start (again) the solicited route for this URL; `failures` so far
    /// (for the backoff of the next restart).
    Solicit {
        url: RouteUrl,
        implicit: bool,
        failures: u32,
    },
    /// The accept loop ended: fail so our supervisor restarts us.
    LoopEnded(String),
}

pub struct ClusterArgs {
    pub cluster: Arc<Cluster>,
    pub listener: Arc<TcpListener>,
}

struct Solicited {
    url: RouteUrl,
    implicit: bool,
    /// Consecutive failures without a healthy session.
    failures: u32,
}

pub struct ClusterState {
    cluster: Arc<Cluster>,
    _accept: TaskGuard,
    /// Route actors by id: Some for solicited ones.
    children: FxHashMap<ractor::ActorId, Option<Solicited>>,
}

pub struct ClusterSupervisor;

impl ClusterSupervisor {
    async fn spawn_route(
        myself: &ActorRef<ClusterMsg>,
        st: &mut ClusterState,
        args: RouteArgs,
        failures: u32,
    ) -> Result<(), ActorProcessingErr> {
        let solicited = match &args.role {
            Role::Solicit { url, implicit } => Some(Solicited {
                url: url.clone(),
                implicit: *implicit,
                failures,
            }),
            Role::Accepted(..) => None,
        };
        let (a, _) = Actor::spawn_linked(None, RouteActor, args, myself.get_cell()).await?;
        st.children.insert(a.get_id(), solicited);
        Ok(())
    }

    fn soliciting(st: &ClusterState, url: &RouteUrl) -> bool {
        st.children
            .values()
            .flatten()
            .any(|s| s.url.port == url.port && s.url.host.eq_ignore_ascii_case(&url.host))
    }
}

impl Actor for ClusterSupervisor {
    type Msg = ClusterMsg;
    type State = ClusterState;
    type Arguments = ClusterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ClusterMsg>,
        args: ClusterArgs,
    ) -> Result<ClusterState, ActorProcessingErr> {
        *args.cluster.supervisor.write() = Some(myself.clone());
        let accept = TaskGuard::spawn(accept_loop(
            args.cluster.clone(),
            args.listener.clone(),
            myself.clone(),
        ));
        for url in &args.cluster.opts.routes {
            if is_self(&args.cluster, url) {
                continue;
            }
            let _ = myself.cast(ClusterMsg::Solicit {
                url: url.clone(),
                implicit: false,
                failures: 0,
            });
        }
        Ok(ClusterState {
            cluster: args.cluster,
            _accept: accept,
            children: FxHashMap::default(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ClusterMsg>,
        st: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        *st.cluster.supervisor.write() = None;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ClusterMsg>,
        msg: ClusterMsg,
        st: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClusterMsg::Accepted(stream, peer) => {
                let args = RouteArgs {
                    cluster: st.cluster.clone(),
                    role: Role::Accepted(Some(stream), peer),
                };
                if let Err(e) = Self::spawn_route(&myself, st, args, 0).await {
                    tracing::error!("{peer} - cannot start a route actor: {e}");
                }
            }
            ClusterMsg::Implicit(url) => {
                if !Self::soliciting(st, &url) && !is_self(&st.cluster, &url) {
                    let _ = myself.cast(ClusterMsg::Solicit {
                        url,
                        implicit: true,
                        failures: 0,
                    });
                }
            }
            ClusterMsg::Solicit {
                url,
                implicit,
                failures,
            } => {
                if st.cluster.shutdown.is_cancelled() || Self::soliciting(st, &url) {
                    return Ok(());
                }
                let args = RouteArgs {
                    cluster: st.cluster.clone(),
                    role: Role::Solicit {
                        url: url.clone(),
                        implicit,
                    },
                };
                if let Err(e) = Self::spawn_route(&myself, st, args, failures).await {
                    tracing::error!("cannot start the route actor for {}: {e}", url.display);
                }
            }
            ClusterMsg::LoopEnded(why) => return Err(why.into()),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ClusterMsg>,
        evt: SupervisionEvent,
        st: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why, failed)) = crate::supervision::ended(&evt) else {
            return Ok(());
        };
        let Some(child) = st.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        // Accepted routes are not restarted; neither is anything during
        // shutdown or a solicited route that ended on purpose (a route to
        // ourselves, the implicit route's retries spent).
        let Some(mut s) = child else {
            return Ok(());
        };
        if st.cluster.shutdown.is_cancelled() || !failed {
            return Ok(());
        }
        s.failures = if why.contains(HEALTHY_MARK) {
            1
        } else {
            s.failures.saturating_add(1)
        };
        let delay = backoff(s.failures);
        st.cluster.note_solicit(&s.url, |x| {
            x.restarts += 1;
            x.connected = false;
            x.last_error = Some(why.clone());
        });
        tracing::info!(
            "route to {} failed ({why}); restarting its actor in {delay:?}",
            s.url.display
        );
        let (url, implicit, failures) = (s.url, s.implicit, s.failures);
        let me = myself.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.cast(ClusterMsg::Solicit {
                url,
                implicit,
                failures,
            });
        });
        Ok(())
    }
}

/// Marks a failure that followed a healthy session (resets the backoff).
const HEALTHY_MARK: &str = "[after a healthy session]";

/// Capped exponential backoff with jitter for the `n`th failure (n ≥ 1).
pub fn backoff(n: u32) -> Duration {
    let exp = BACKOFF_MIN.saturating_mul(1u32 << n.saturating_sub(1).min(16));
    let base = exp.min(BACKOFF_MAX);
    let jitter = base.mul_f64(fastrand::f64() * 0.5);
    base + jitter
}

/// The configured routes other than ourselves (their display URLs).
pub fn configured_peers(cluster: &Cluster) -> Vec<String> {
    cluster
        .opts
        .routes
        .iter()
        .filter(|u| !is_self(cluster, u))
        .map(|u| u.display.clone())
        .collect()
}

/// Does this URL point at our own route listener?
fn is_self(cluster: &Cluster, url: &RouteUrl) -> bool {
    if url.port != cluster.listen_addr.port() {
        return false;
    }
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let ours = cluster.listen_addr.ip();
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip == ours || (ours.is_unspecified() && ip.is_loopback()),
        Err(_) => {
            host.eq_ignore_ascii_case("localhost") && (ours.is_loopback() || ours.is_unspecified())
        }
    }
}

async fn accept_loop(cluster: Arc<Cluster>, listener: Arc<TcpListener>, sup: ActorRef<ClusterMsg>) {
    let r = crate::supervision::accept_loop("route", &listener, &cluster.shutdown, |s, peer| {
        sup.cast(ClusterMsg::Accepted(s, peer)).is_ok()
    })
    .await;
    if let Err(e) = r {
        let _ = sup.cast(ClusterMsg::LoopEnded(e));
    }
}

pub enum Role {
    /// The socket is taken by the session task.
    Accepted(Option<TcpStream>, std::net::SocketAddr),
    Solicit {
        url: RouteUrl,
        implicit: bool,
    },
}

pub struct RouteArgs {
    pub cluster: Arc<Cluster>,
    pub role: Role,
}

pub enum RouteMsg {
    /// The session ended: fail (restart) or stop.
    Ended { failed: Option<String> },
}

/// One route connection; its session task is aborted when the actor's
/// state drops, and the session's drop undoes its registration.
pub struct RouteActor;

impl Actor for RouteActor {
    type Msg = RouteMsg;
    type State = TaskGuard;
    type Arguments = RouteArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RouteMsg>,
        args: RouteArgs,
    ) -> Result<TaskGuard, ActorProcessingErr> {
        Ok(TaskGuard::spawn(route_task(args, myself)))
    }

    async fn handle(
        &self,
        myself: ActorRef<RouteMsg>,
        msg: RouteMsg,
        _st: &mut TaskGuard,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouteMsg::Ended { failed: Some(why) } => Err(why.into()),
            RouteMsg::Ended { failed: None } => {
                myself.stop(None);
                Ok(())
            }
        }
    }
}

async fn route_task(args: RouteArgs, myself: ActorRef<RouteMsg>) {
    let RouteArgs { cluster, role } = args;
    let failed = match role {
        Role::Accepted(mut stream, peer) => {
            if let Some(s) = stream.take() {
                let _ = link::run(cluster, s, peer, None).await;
            }
            None
        }
        Role::Solicit { url, implicit } => solicit(cluster, url, implicit).await,
    };
    let _ = myself.cast(RouteMsg::Ended { failed });
}

/// Dial and run sessions for one URL until a session fails (returns why,
/// so the actor fails and is restarted) or the route should stop (None).
async fn solicit(cluster: Arc<Cluster>, url: RouteUrl, implicit: bool) -> Option<String> {
    let mut attempts: u32 = 0;
    let mut known_id: Option<String> = None;
    loop {
        if cluster.shutdown.is_cancelled() {
            return None;
        }
        // A route to this server exists already (it dialed us first): wait
        // until it is gone before dialing again.
        if let Some(id) = &known_id {
            while cluster.is_connected_to(id) {
                tokio::select! {
                    _ = cluster.shutdown.cancelled() => return None,
                    _ = cluster.route_change() => {}
                }
            }
            // Let the peer redial first half the time, so two servers that
            // lost their duplicate pair do not collide again.
            tokio::time::sleep(backoff(1)).await;
        }
        let addr = format!("{}:{}", url.host, url.port);
        let dialed = tokio::select! {
            _ = cluster.shutdown.cancelled() => return None,
            r = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&addr)) => r,
        };
        let stream = match dialed {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                attempts += 1;
                cluster.note_solicit(&url, |x| x.last_error = Some(format!("dial: {e}")));
                cluster.note_first_outcome(&url);
                if attempts == 1 || attempts.is_multiple_of(30) {
                    tracing::debug!("Error trying to connect to route {}: {e}", url.display);
                }
                if implicit && retries_spent(&cluster, attempts) {
                    tracing::info!("giving up on implicit route {}", url.display);
                    return None;
                }
                tokio::time::sleep(backoff(attempts.min(8))).await;
                continue;
            }
            Err(_) => {
                attempts += 1;
                cluster.note_first_outcome(&url);
                if implicit && retries_spent(&cluster, attempts) {
                    return None;
                }
                tokio::time::sleep(backoff(attempts.min(8))).await;
                continue;
            }
        };
        attempts = 0;
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], url.port)));
        let started = tokio::time::Instant::now();
        cluster.note_solicit(&url, |x| x.connected = true);
        let end = link::run(cluster.clone(), stream, peer, Some(url.clone())).await;
        cluster.note_solicit(&url, |x| x.connected = false);
        cluster.note_first_outcome(&url);
        match end {
            End::Shutdown => return None,
            End::SelfRoute => {
                tracing::debug!("route {} is this server; not soliciting it", url.display);
                return None;
            }
            End::Duplicate(id) => {
                known_id = Some(id);
                continue;
            }
            End::Failed(why) => {
                let mark = if started.elapsed() >= HEALTHY {
                    format!(" {HEALTHY_MARK}")
                } else {
                    String::new()
                };
                return Some(format!("{why}{mark}"));
            }
        }
    }
}

/// nats-server's `connect_retries` for implicit routes: 0 means try once.
fn retries_spent(cluster: &Cluster, attempts: u32) -> bool {
    let max = cluster.opts.connect_retries.max(0) as u32;
    attempts > max
}
