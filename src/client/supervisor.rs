//! Parent of every client connection actor. Admits new sockets (the
//! max_connections limit), and when a connection actor ends, cleanly or by
//! failure or panic, removes its subscriptions and counts. ractor skips
//! `post_stop` for a failed actor, so this is where cleanup is guaranteed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::conn::{ConnActor, ConnArgs, ConnMsg, errors};
use super::shared::{CloseReason, ConnKind, ConnShared};
use crate::server::ServerContext;

pub enum ClientSupMsg {
    Accepted(TcpStream, SocketAddr),
    /// Close one connection by cid.
    Kick(u64, CloseReason),
    /// Fault injection for tests: make a connection's actor panic.
    #[doc(hidden)]
    InjectPanic(u64),
    /// Close every connection (shutdown).
    CloseAll,
}

pub struct ClientSupervisor;

pub struct ClientSupState {
    ctx: Arc<ServerContext>,
    by_actor: HashMap<ActorId, Arc<ConnShared>>,
    by_cid: HashMap<u64, ActorRef<ConnMsg>>,
}

impl Actor for ClientSupervisor {
    type Msg = ClientSupMsg;
    type State = ClientSupState;
    type Arguments = Arc<ServerContext>;

    async fn pre_start(
        &self,
        _myself: ActorRef<ClientSupMsg>,
        ctx: Arc<ServerContext>,
    ) -> Result<ClientSupState, ActorProcessingErr> {
        Ok(ClientSupState {
            ctx,
            by_actor: HashMap::new(),
            by_cid: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ClientSupMsg>,
        msg: ClientSupMsg,
        st: &mut ClientSupState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClientSupMsg::Accepted(stream, peer) => self.admit(myself, st, stream, peer).await,
            ClientSupMsg::Kick(cid, reason) => {
                if let Some(a) = st.by_cid.get(&cid) {
                    let _ = a.cast(ConnMsg::Kick(reason));
                }
            }
            ClientSupMsg::InjectPanic(cid) => {
                if let Some(a) = st.by_cid.get(&cid) {
                    let _ = a.cast(ConnMsg::InjectPanic);
                }
            }
            ClientSupMsg::CloseAll => {
                for a in st.by_cid.values() {
                    let _ = a.cast(ConnMsg::Kick(CloseReason::ServerShutdown));
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ClientSupMsg>,
        evt: SupervisionEvent,
        st: &mut ClientSupState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match &evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            _ => return Ok(()),
        };
        let Some(shared) = st.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        st.by_cid.remove(&shared.cid);
        if let Some(why) = &failure {
            tracing::error!(
                "{} - cid:{} - connection actor failed: {why}; cleaning up",
                shared.peer,
                shared.cid
            );
        }
        finish(&st.ctx, &shared);
        Ok(())
    }
}

impl ClientSupervisor {
    async fn admit(
        &self,
        myself: ActorRef<ClientSupMsg>,
        st: &mut ClientSupState,
        stream: TcpStream,
        peer: SocketAddr,
    ) {
        let ctx = st.ctx.clone();
        let opts = ctx.opts();
        if ctx.conns.len() >= opts.max_connections {
            tracing::warn!(
                "{peer} - Maximum connections of {} exceeded",
                opts.max_connections
            );
            // Refuse off the supervisor's mailbox: a stuck peer must not delay admissions.
            let info = ctx.client_info_line_for(None, &peer);
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                    stream.write_all(&info).await?;
                    stream.write_all(errors::MAX_CONNECTIONS).await?;
                    stream.shutdown().await
                })
                .await;
            });
            return;
        }
        let _ = stream.set_nodelay(true);
        let cid = ctx.next_cid.fetch_add(1, Ordering::Relaxed);
        let account = ctx.global_account.clone();
        let shared = Arc::new(ConnShared::new(
            cid,
            ConnKind::Client,
            peer,
            account.clone(),
            opts.max_pending,
        ));
        account.connections.fetch_add(1, Ordering::Relaxed);
        ctx.conns.insert(cid, shared.clone());
        ctx.stats.total_connections.fetch_add(1, Ordering::Relaxed);
        if ctx.debug() {
            tracing::debug!("{peer} - cid:{cid} - Client connection created");
        }
        let (rd, wr) = stream.into_split();
        let args = ConnArgs {
            shared: shared.clone(),
            ctx: ctx.clone(),
            reader: Box::new(rd),
            writer: Box::new(wr),
        };
        match Actor::spawn_linked(None, ConnActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                st.by_actor.insert(actor.get_id(), shared);
                st.by_cid.insert(cid, actor);
            }
            Err(e) => {
                tracing::error!("{peer} - cid:{cid} - could not start connection actor: {e}");
                finish(&ctx, &shared);
            }
        }
    }
}

/// Final bookkeeping for a connection that ended.
fn finish(ctx: &ServerContext, shared: &Arc<ConnShared>) {
    shared.cleanup();
    if ctx.conns.remove(&shared.cid).is_some() {
        shared.account.connections.fetch_sub(1, Ordering::Relaxed);
    }
    ctx.note_closed(shared);
    if ctx.debug() {
        let reason = shared.close_reason().unwrap_or(CloseReason::ClientClosed);
        tracing::debug!(
            "{} - cid:{} - Client connection closed: {reason}",
            shared.peer,
            shared.cid
        );
    }
}
