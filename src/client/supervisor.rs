//! Parent of every client connection actor. Admits new sockets (the
//! max_connections limit), carries control messages to connections (kick,
//! permissions, async INFO), and when a connection actor ends, cleanly or
//! by failure or panic, removes its subscriptions and counts. ractor skips
//! `post_stop` for a failed actor, so this is where cleanup is guaranteed.
//!
//! If this supervisor itself fails, ractor kills every connection actor
//! (their tasks abort with them); the restarted supervisor starts with
//! empty maps, so its `pre_start` closes and cleans every connection left
//! in the connection table: nothing leaks, and the clients reconnect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::conn::{BoxWrite, ConnActor, ConnArgs, ConnCtl, ConnMsg, ReadSide, TcpWrite, errors};
use super::shared::ConnShared;
use crate::auth::Admission;
use crate::outbound::CloseReason;
use crate::server::ClientTls;
use crate::server::ServerContext;

pub enum ClientSupMsg {
    Accepted(TcpStream, SocketAddr),
    /// A TLS handshake finished: start the connection actor.
    Secured(Box<Secured>),
    /// A control message for one connection, by cid.
    Control(u64, ConnCtl),
    /// The same control message for every connection.
    Broadcast(fn() -> ConnCtl),
    /// An async INFO line for every connection.
    BroadcastInfo(Vec<u8>),
    /// Fault injection for tests: make a connection's actor, or its
    /// writer, panic; or this supervisor itself.
    #[doc(hidden)]
    InjectPanic(u64),
    #[doc(hidden)]
    InjectWriterPanic(u64),
    #[doc(hidden)]
    InjectSelfPanic,
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
        // Connections of a previous incarnation of this supervisor: their
        // actors were killed with it, so close and clean them here.
        let orphans: Vec<Arc<ConnShared>> = ctx.conns.iter().map(|c| c.value().clone()).collect();
        if !orphans.is_empty() {
            tracing::warn!(
                "client supervisor (re)started with {} orphaned connections; closing them",
                orphans.len()
            );
        }
        for conn in orphans {
            conn.close(CloseReason::Crashed);
            finish(&ctx, &conn);
        }
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
            ClientSupMsg::Secured(sec) => {
                let Secured {
                    shared,
                    reader,
                    writer,
                } = *sec;
                if shared.is_closing() {
                    finish(&st.ctx, &shared);
                } else {
                    self.start_actor(myself, st, shared, reader, writer, true)
                        .await;
                }
            }
            ClientSupMsg::Control(cid, c) => {
                if let Some(a) = st.by_cid.get(&cid) {
                    let _ = a.cast(ConnMsg::Control(c));
                }
            }
            ClientSupMsg::Broadcast(make) => {
                for a in st.by_cid.values() {
                    let _ = a.cast(ConnMsg::Control(make()));
                }
            }
            ClientSupMsg::BroadcastInfo(line) => {
                for a in st.by_cid.values() {
                    let _ = a.cast(ConnMsg::Control(ConnCtl::Info(line.clone())));
                }
            }
            ClientSupMsg::InjectPanic(cid) => {
                if let Some(a) = st.by_cid.get(&cid) {
                    let _ = a.cast(ConnMsg::InjectPanic);
                }
            }
            ClientSupMsg::InjectWriterPanic(cid) => {
                if let Some(a) = st.by_cid.get(&cid) {
                    let _ = a.cast(ConnMsg::InjectWriterPanic);
                }
            }
            ClientSupMsg::InjectSelfPanic => panic!("injected fault in the client supervisor"),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ClientSupMsg>,
        evt: SupervisionEvent,
        st: &mut ClientSupState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why, failed)) = crate::supervision::ended(&evt) else {
            return Ok(());
        };
        let Some(shared) = st.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        st.by_cid.remove(&shared.cid);
        if failed {
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
        // The connection-rate limit (off by default), before any TLS work.
        // Failed-login bans are per user and wait for CONNECT: refusing a
        // whole address here would lock out every client behind a NAT.
        if ctx.auth().limiter().admit(peer.ip()) == Admission::RateLimited {
            tracing::warn!("{peer} - connection refused: connection rate limit exceeded");
            // INFO first, then the reason, as for max_connections, so a
            // client reports why.
            let info = ctx.client_info_line_for(None, &peer);
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
                    stream.write_all(&info).await?;
                    stream.write_all(errors::RATE_LIMITED).await?;
                    stream.shutdown().await
                })
                .await;
            });
            return;
        }
        let _ = stream.set_nodelay(true);
        let cid = ctx.next_cid.fetch_add(1, Ordering::Relaxed);
        // The account is bound later, when CONNECT says who this is.
        let shared = Arc::new(ConnShared::new(cid, peer, opts.max_pending));
        ctx.conns.insert(cid, shared.clone());
        ctx.stats.total_connections.fetch_add(1, Ordering::Relaxed);
        if ctx.debug() {
            tracing::debug!("{peer} - cid:{cid} - Client connection created");
        }
        if let Some(tls) = ctx.tls() {
            // Handshake off the supervisor's mailbox; the actor starts when
            // it completes (Secured) and never starts if it fails.
            tokio::spawn(secure(ctx.clone(), tls, shared, stream, myself));
            return;
        }
        // Shared, not split: publishers may flush to it in place.
        let stream = Arc::new(stream);
        shared.out.set_direct(stream.clone());
        let reader = ReadSide::Tcp(stream.clone());
        self.start_actor(
            myself,
            st,
            shared,
            reader,
            Box::new(TcpWrite(stream)),
            false,
        )
        .await;
    }

    async fn start_actor(
        &self,
        myself: ActorRef<ClientSupMsg>,
        st: &mut ClientSupState,
        shared: Arc<ConnShared>,
        reader: ReadSide,
        writer: BoxWrite,
        info_sent: bool,
    ) {
        let ctx = st.ctx.clone();
        let (cid, peer) = (shared.cid, shared.peer);
        let args = ConnArgs {
            shared: shared.clone(),
            ctx: ctx.clone(),
            reader,
            writer,
            info_sent,
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

/// A connection whose TLS handshake succeeded.
pub struct Secured {
    shared: Arc<ConnShared>,
    reader: ReadSide,
    writer: BoxWrite,
}

/// The NATS TLS upgrade: INFO in clear (with `tls_required`), then the TLS
/// handshake, bounded by the TLS timeout. With `handshake_first` the
/// handshake comes first and INFO follows inside TLS.
async fn secure(
    ctx: Arc<ServerContext>,
    tls: Arc<ClientTls>,
    shared: Arc<ConnShared>,
    mut stream: TcpStream,
    sup: ActorRef<ClientSupMsg>,
) {
    let debug = ctx.debug();
    let (peer, cid) = (shared.peer, shared.cid);
    let mut handshake_first = tls.opts.handshake_first;
    // One deadline for the whole upgrade (INFO, the client's first byte,
    // the handshake). Separate timeouts for each step let a silent client
    // hold the connection for twice the TLS timeout.
    let deadline = tokio::time::Instant::now() + tls.opts.timeout;
    // `handshake_first: auto` (or a delay): a TLS-first client speaks at
    // once; one that says nothing within the delay is waiting for INFO, so
    // fall back to INFO first, as nats-server does.
    if let (true, Some(delay)) = (handshake_first, tls.opts.handshake_first_fallback) {
        let mut first = [0u8; 1];
        let wait_until = deadline.min(tokio::time::Instant::now() + delay);
        let peeked = tokio::time::timeout_at(wait_until, stream.peek(&mut first)).await;
        if !matches!(peeked, Ok(Ok(n)) if n > 0) {
            handshake_first = false;
        }
    }
    if !handshake_first {
        let info = ctx.client_info_line(&shared);
        if tokio::time::timeout_at(deadline, stream.write_all(&info))
            .await
            .map_or(true, |r| r.is_err())
        {
            shared.close(CloseReason::WriteError);
            hand_back(&ctx, &sup, Secured::closed(shared));
            return;
        }
        // A client speaking plain NATS to a TLS-only server: say so in
        // clear instead of failing the handshake obscurely.
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)).await;
        if matches!(peeked, Ok(Ok(1))) && first[0] != 0x16 {
            let _ = stream
                .write_all(b"-ERR 'Secure Connection - TLS Required'\r\n")
                .await;
            tracing::warn!("{peer} - cid:{cid} - TLS required but the client sent plain text");
            shared.close(CloseReason::ProtocolViolation("TLS required"));
            hand_back(&ctx, &sup, Secured::closed(shared));
            return;
        }
    }
    if debug {
        tracing::debug!("{peer} - cid:{cid} - Starting TLS client connection handshake");
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    let tls_stream = match crate::tls::accept(&tls.acceptor, stream, remaining).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{peer} - cid:{cid} - TLS handshake error: {e}");
            shared.close(CloseReason::ProtocolViolation("TLS handshake"));
            hand_back(&ctx, &sup, Secured::closed(shared));
            return;
        }
    };
    {
        let (_, conn) = tls_stream.get_ref();
        if !tls.opts.pinned_certs.is_empty()
            && !crate::tls::check_pinned(&tls.opts, crate::tls::peer_leaf_der(conn))
        {
            tracing::error!("{peer} - cid:{cid} - TLS handshake error: certificate not pinned");
            shared.close(CloseReason::ProtocolViolation("TLS pin"));
            hand_back(&ctx, &sup, Secured::closed(shared));
            return;
        }
        let (version, suite) = crate::tls::negotiated(conn);
        if debug {
            tracing::debug!("{peer} - cid:{cid} - TLS handshake complete");
            tracing::debug!("{peer} - cid:{cid} - TLS version {version}, cipher suite {suite}");
        }
        *shared.tls_identity.lock() = crate::tls::peer_identity(conn);
        *shared.tls_fingerprint.lock() =
            crate::tls::peer_leaf_der(conn).and_then(crate::tls::spki_sha256_hex);
        let mut meta = shared.meta.lock();
        meta.tls_version = Some(version);
        meta.tls_cipher = Some(suite);
    }
    let (rd, wr) = tokio::io::split(tls_stream);
    let sec = Secured {
        shared,
        reader: ReadSide::Stream(Box::new(rd)),
        writer: Box::new(wr),
    };
    // With handshake_first the actor sends INFO, now inside TLS.
    if handshake_first {
        sec.shared.out.send_now(&ctx.client_info_line(&sec.shared));
    }
    hand_back(&ctx, &sup, sec);
}

/// Give a handshake's outcome to the supervisor that started it. If that
/// supervisor died meanwhile, its successor already swept the connection
/// table; finish the bookkeeping here so nothing is left behind.
fn hand_back(ctx: &ServerContext, sup: &ActorRef<ClientSupMsg>, sec: Secured) {
    if let Err(ractor::MessagingErr::SendErr(ClientSupMsg::Secured(sec))) =
        sup.cast(ClientSupMsg::Secured(Box::new(sec)))
    {
        sec.shared.close(CloseReason::Crashed);
        finish(ctx, &sec.shared);
    }
}

impl Secured {
    /// A placeholder for a connection that failed before its actor started,
    /// so the supervisor still runs the final bookkeeping.
    fn closed(shared: Arc<ConnShared>) -> Secured {
        Secured {
            shared,
            reader: ReadSide::Stream(Box::new(tokio::io::empty())),
            writer: Box::new(tokio::io::sink()),
        }
    }
}

/// Final bookkeeping for a connection that ended (once, however many
/// paths reach it).
fn finish(ctx: &ServerContext, shared: &Arc<ConnShared>) {
    shared.cleanup();
    if ctx.conns.remove(&shared.cid).is_none() {
        return;
    }
    shared.unbind_account();
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
