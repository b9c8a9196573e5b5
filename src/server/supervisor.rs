//! The root of the supervision tree (docs/ARCHITECTURE.md draws it).
//!
//! Restarts a failed child after a short backoff, within a restart budget
//! (10 restarts in 10 s); past it the root gives up and shuts the server
//! down rather than spin. The listening sockets and the account state
//! live outside the children, so a restart loses neither the port nor any
//! subscription.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::net::TcpListener;

use super::ServerContext;
use super::listener::{ListenerActor, ListenerArgs, ListenerKind, ListenerMsg};
use crate::account::AccountsSupervisor;
use crate::client::ClientSupervisor;
use crate::supervision::RestartBudget;

pub enum SupervisorMsg {
    /// Lame duck mode: stop the client listener for good and close its
    /// socket, so new clients are refused and go to another server.
    StopAccepting,
    /// Fault injection for the supervision tests: panic the client listener.
    #[doc(hidden)]
    InjectListenerPanic,
}

pub struct SupervisorArgs {
    pub(super) ctx: Arc<ServerContext>,
    pub(super) client_listener: Option<Arc<TcpListener>>,
    pub(super) http_listener: Option<Arc<TcpListener>>,
    pub(super) https: Option<(Arc<TcpListener>, tokio_rustls::TlsAcceptor)>,
    /// The cluster and its route listener, when clustered.
    pub(super) cluster: Option<(Arc<crate::route::Cluster>, Arc<TcpListener>)>,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    children: Vec<(ActorCell, Child)>,
    budget: RestartBudget,
    routes_waited: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Child {
    Accounts,
    Clients,
    ClientListener,
    MonitorListener,
    HttpsListener,
    Cluster,
}

pub struct ServerSupervisor;

impl ServerSupervisor {
    async fn spawn_listener(
        ctx: &Arc<ServerContext>,
        sup: ActorCell,
        listener: Arc<TcpListener>,
        kind: ListenerKind,
    ) -> Result<ActorCell, ActorProcessingErr> {
        let args = ListenerArgs {
            ctx: ctx.clone(),
            listener,
            kind,
        };
        let (a, _) = Actor::spawn_linked(None, ListenerActor, args, sup).await?;
        Ok(a.get_cell())
    }

    async fn start_child(
        myself: &ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
        child: Child,
    ) -> Result<(), ActorProcessingErr> {
        let ctx = st.args.ctx.clone();
        let sup = myself.get_cell();
        let cell = match child {
            Child::Accounts => {
                let (a, _) =
                    Actor::spawn_linked(None, AccountsSupervisor, ctx.accounts.clone(), sup)
                        .await?;
                a.get_cell()
            }
            Child::Clients => {
                let (a, _) = Actor::spawn_linked(None, ClientSupervisor, ctx.clone(), sup).await?;
                *ctx.client_sup.write() = Some(a.clone());
                a.get_cell()
            }
            Child::Cluster => {
                let Some((cluster, listener)) = st.args.cluster.clone() else {
                    return Ok(());
                };
                let args = crate::route::supervisor::ClusterArgs { cluster, listener };
                let (a, _) =
                    Actor::spawn_linked(None, crate::route::ClusterSupervisor, args, sup).await?;
                a.get_cell()
            }
            Child::ClientListener => {
                let Some(l) = st.args.client_listener.clone() else {
                    return Ok(());
                };
                // The first time only: hold clients back while the
                // configured routes come up (bounded), so what they
                // publish first reaches subscribers on the other nodes.
                if !st.routes_waited {
                    st.routes_waited = true;
                    if let Some((cluster, _)) = &st.args.cluster {
                        let peers = crate::route::supervisor::configured_peers(cluster);
                        if !peers.is_empty()
                            && !cluster
                                .wait_configured(&peers, super::cluster::ROUTE_STARTUP_WAIT)
                                .await
                        {
                            tracing::warn!(
                                "not all configured routes answered within {:?}; accepting clients",
                                super::cluster::ROUTE_STARTUP_WAIT
                            );
                        }
                    }
                }
                Self::spawn_listener(&ctx, sup, l, ListenerKind::Client).await?
            }
            Child::MonitorListener => {
                let Some(l) = st.args.http_listener.clone() else {
                    return Ok(());
                };
                Self::spawn_listener(&ctx, sup, l, ListenerKind::Monitor).await?
            }
            Child::HttpsListener => {
                let Some((l, acceptor)) = st.args.https.clone() else {
                    return Ok(());
                };
                Self::spawn_listener(&ctx, sup, l, ListenerKind::MonitorTls(acceptor)).await?
            }
        };
        st.children.push((cell, child));
        Ok(())
    }
}

impl Actor for ServerSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut st = SupervisorState {
            args,
            children: Vec::new(),
            budget: RestartBudget::default_tree(),
            routes_waited: false,
        };
        // Monitoring first, so /varz and /routez answer while the client
        // listener waits for the configured routes.
        for child in [
            Child::Accounts,
            Child::Clients,
            Child::MonitorListener,
            Child::HttpsListener,
            Child::Cluster,
            Child::ClientListener,
        ] {
            Self::start_child(&myself, &mut st, child).await?;
        }
        Ok(st)
    }

    async fn handle(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let listener = st
            .children
            .iter()
            .position(|(_, c)| *c == Child::ClientListener);
        match msg {
            SupervisorMsg::StopAccepting => {
                // Forget the child first so its end is not a restart, and
                // drop our handle on the socket so it closes with the actor.
                st.args.client_listener = None;
                if let Some(i) = listener {
                    let (cell, _) = st.children.remove(i);
                    cell.stop(Some("lame duck mode".into()));
                }
            }
            SupervisorMsg::InjectListenerPanic => {
                if let Some(i) = listener {
                    let cell = st.children[i].0.clone();
                    let _ =
                        ractor::ActorRef::<ListenerMsg>::from(cell).cast(ListenerMsg::InjectPanic);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why, _)) = crate::supervision::ended(&evt) else {
            return Ok(());
        };
        let Some(pos) = st
            .children
            .iter()
            .position(|(c, _)| c.get_id() == cell.get_id())
        else {
            return Ok(());
        };
        let (_, child) = st.children.remove(pos);
        let ctx = st.args.ctx.clone();
        if ctx.shutdown.is_cancelled() {
            return Ok(());
        }
        if !st.budget.allow() {
            // Restarting has not helped: stop the server rather than spin.
            tracing::error!(
                "supervisor: {child:?} stopped ({why}) and the restart budget is spent; shutting down"
            );
            ctx.shutdown.cancel();
            return Err(format!("{child:?} keeps failing: {why}").into());
        }
        tracing::error!("supervisor: {child:?} stopped ({why}); restarting");
        ctx.stats
            .restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        Self::start_child(&myself, st, child).await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        for (cell, _) in &st.children {
            cell.stop(None);
        }
        Ok(())
    }
}
