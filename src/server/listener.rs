//! Listener actors: each owns one accept loop. The socket itself is kept
//! by the supervisor's arguments so a restarted listener keeps its port.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpListener;

use super::ServerContext;
use crate::client::ClientSupMsg;
use crate::supervision::TaskGuard;

#[derive(Clone)]
pub enum ListenerKind {
    Client,
    Monitor,
    /// HTTPS monitoring: TLS first, then the same endpoints.
    MonitorTls(tokio_rustls::TlsAcceptor),
}

impl std::fmt::Debug for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ListenerKind::Client => "client",
            ListenerKind::Monitor => "monitor",
            ListenerKind::MonitorTls(_) => "https monitor",
        })
    }
}

pub struct ListenerArgs {
    pub ctx: Arc<ServerContext>,
    pub listener: Arc<TcpListener>,
    pub kind: ListenerKind,
}

pub enum ListenerMsg {
    /// The accept loop ended unexpectedly: fail so the supervisor restarts us.
    LoopEnded(String),
    /// Fault injection for the supervision tests.
    #[doc(hidden)]
    InjectPanic,
}

pub struct ListenerActor;

impl Actor for ListenerActor {
    type Msg = ListenerMsg;
    /// The accept loop: aborted when the state drops, so a listener that
    /// failed (no `post_stop`) leaves no loop behind and its restart has
    /// exactly one.
    type State = TaskGuard;
    type Arguments = ListenerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ListenerMsg>,
        args: ListenerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(TaskGuard::spawn(accept_loop(args, myself)))
    }

    async fn handle(
        &self,
        _myself: ActorRef<ListenerMsg>,
        msg: ListenerMsg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ListenerMsg::LoopEnded(why) => Err(why.into()),
            ListenerMsg::InjectPanic => panic!("injected fault in a listener"),
        }
    }
}

async fn accept_loop(args: ListenerArgs, myself: ActorRef<ListenerMsg>) {
    let ListenerArgs {
        ctx,
        listener,
        kind,
    } = args;
    // Counted while running, so tests can see that a restart leaves
    // exactly one loop per listener.
    struct Running(Arc<ServerContext>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0
                .accept_loops
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    ctx.accept_loops
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _running = Running(ctx.clone());
    let what = format!("{kind:?}");
    let r = crate::supervision::accept_loop(&what, &listener, &ctx.shutdown, |stream, peer| {
        match &kind {
            ListenerKind::Client => {
                let Some(sup) = ctx.client_sup() else {
                    // The client supervisor is restarting; drop this one.
                    return true;
                };
                if sup.cast(ClientSupMsg::Accepted(stream, peer)).is_err() {
                    return true;
                }
            }
            ListenerKind::Monitor => {
                tokio::spawn(crate::monitor::serve_connection(
                    ctx.clone(),
                    stream,
                    peer,
                    false,
                ));
            }
            ListenerKind::MonitorTls(acceptor) => {
                let (ctx, acceptor) = (ctx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let timeout = std::time::Duration::from_secs(2);
                    match crate::tls::accept(&acceptor, stream, timeout).await {
                        Ok(tls) => {
                            // The acceptor asks for a certificate only
                            // with monitor_auth's ca_file, and then
                            // refuses a session without a valid one.
                            let cert = tls.get_ref().1.peer_certificates().is_some();
                            crate::monitor::serve_connection(ctx, tls, peer, cert).await
                        }
                        Err(e) => tracing::debug!("{peer} - https monitor: {e}"),
                    }
                });
            }
        }
        true
    })
    .await;
    if let Err(e) = r {
        let _ = myself.cast(ListenerMsg::LoopEnded(e));
    }
}
