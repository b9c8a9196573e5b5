//! One client connection: an actor for its life cycle and control, plus a
//! reader task (parse, publish through the delivery engine) and a writer
//! task (drain the outbound queue, keep the connection alive).
//!
//! The reader and writer are tasks rather than actor handlers because a
//! handler that blocks on a socket would starve the mailbox. They are tied
//! to the actor: their handles live in its state and abort when it is
//! dropped (also when ractor kills the actor without `post_stop`), and a
//! panic in either is caught and turned into the actor's failure, so the
//! supervisor sees it and cleans up.
//!
//! The control path: the `ClientSupervisor` sends `ConnMsg::Control` to the
//! actor, which forwards it on a bounded channel into the reader's
//! `select!` (kick with a reason, new permissions, credential expiry,
//! async INFO). A close decided on the data plane (a publisher finding a
//! slow consumer) cancels the outlet's token, which reader and writer both
//! select on.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

use super::reader::Reader;
use super::shared::ConnShared;
use super::writer::run_writer;
use crate::outbound::CloseReason;
use crate::server::ServerContext;
use crate::supervision::{TaskGuard, panic_message};

pub use super::socket::{BoxRead, BoxWrite, ReadSide, TcpWrite};

/// Control messages a connection's reader acts on.
pub enum ConnCtl {
    /// Close, after queueing `err` for the client.
    Kick {
        reason: CloseReason,
        err: Option<&'static [u8]>,
    },
    /// New permissions from the re-check after configuration reload
    /// `generation`; None allows everything. Ignored when the connection
    /// already holds a verdict of a newer generation.
    Permissions {
        perms: Option<Arc<crate::auth::Permissions>>,
        generation: u64,
    },
    /// The credentials failed the re-check after configuration reload
    /// `generation`: close with 'Authorization Violation' (unless a newer
    /// generation already admitted the connection).
    Revoke { generation: u64 },
    /// The credentials stop being valid at this instant.
    ExpireAt(tokio::time::Instant),
    /// An asynchronous INFO line (lame duck mode, cluster changes).
    Info(Vec<u8>),
    /// Fault injection for the supervision tests.
    #[doc(hidden)]
    InjectReaderPanic,
}

/// Capacity of the control channel: control messages are rare, and a
/// full channel means the reader is stuck, so a kick then closes directly.
const CTL_CAPACITY: usize = 16;

pub struct ConnActor;

pub struct ConnArgs {
    pub shared: Arc<ConnShared>,
    pub ctx: Arc<ServerContext>,
    pub reader: ReadSide,
    pub writer: BoxWrite,
    /// INFO already went out (before a TLS handshake, or queued inside it).
    pub info_sent: bool,
}

pub enum ConnMsg {
    /// The reader finished (peer closed, error, or a close was requested).
    ReaderDone,
    /// The reader or writer panicked: fail the actor so its supervisor
    /// cleans up.
    TaskCrashed(&'static str, String),
    /// A control message for the reader.
    Control(ConnCtl),
    /// Fault injection for the supervision tests.
    #[doc(hidden)]
    InjectPanic,
    #[doc(hidden)]
    InjectWriterPanic,
}

pub struct ConnState {
    shared: Arc<ConnShared>,
    ctl: mpsc::Sender<ConnCtl>,
    _reader: TaskGuard,
    writer: TaskGuard,
}

impl Actor for ConnActor {
    type Msg = ConnMsg;
    type State = ConnState;
    type Arguments = ConnArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConnMsg>,
        args: ConnArgs,
    ) -> Result<ConnState, ActorProcessingErr> {
        let ConnArgs {
            shared,
            ctx,
            reader,
            writer,
            info_sent,
        } = args;
        // INFO goes first, before anything the client could trigger.
        if !info_sent {
            shared.out.send_now(&ctx.client_info_line(&shared));
        }
        let (ctl, ctl_rx) = mpsc::channel(CTL_CAPACITY);
        let me = myself.clone();
        let writer_task = run_writer(shared.clone(), ctx.clone(), writer);
        let writer = TaskGuard::spawn(async move {
            if let Err(p) = std::panic::AssertUnwindSafe(writer_task)
                .catch_unwind()
                .await
            {
                let _ = me.cast(ConnMsg::TaskCrashed("writer", panic_message(&*p)));
            }
        });
        let reader_task = Reader::new(shared.clone(), ctx).run(reader, ctl_rx);
        let reader = TaskGuard::spawn(async move {
            let msg = match std::panic::AssertUnwindSafe(reader_task)
                .catch_unwind()
                .await
            {
                Ok(()) => ConnMsg::ReaderDone,
                Err(p) => ConnMsg::TaskCrashed("reader", panic_message(&*p)),
            };
            // The actor may already be gone (kicked and stopped): fine.
            let _ = myself.cast(msg);
        });
        Ok(ConnState {
            shared,
            ctl,
            _reader: reader,
            writer,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ConnMsg>,
        msg: ConnMsg,
        state: &mut ConnState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConnMsg::ReaderDone => myself.stop(None),
            ConnMsg::TaskCrashed(which, why) => {
                state.shared.close(CloseReason::Crashed);
                return Err(format!("connection {which} panicked: {why}").into());
            }
            // Closes act at once, from here: the reader and writer watch
            // the token, and the reader stops before its next operation
            // instead of after the rest of its read buffer.
            ConnMsg::Control(ConnCtl::Kick { reason, err }) => state.shared.kick(reason, err),
            ConnMsg::Control(ConnCtl::Revoke { generation }) => state.shared.revoke(generation),
            ConnMsg::Control(c) => {
                // A full channel means the reader is stuck. New permissions
                // that cannot be applied must not leave the old (maybe
                // wider) ones in force: close instead.
                if let Err(mpsc::error::TrySendError::Full(ConnCtl::Permissions { .. })) =
                    state.ctl.try_send(c)
                {
                    state.shared.kick(CloseReason::Kicked, None);
                }
            }
            ConnMsg::InjectPanic => panic!("injected fault in cid {}", state.shared.cid),
            ConnMsg::InjectWriterPanic => {
                state
                    .shared
                    .inject_writer_panic
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                state.shared.out.signal();
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConnMsg>,
        state: &mut ConnState,
    ) -> Result<(), ActorProcessingErr> {
        state.shared.cleanup();
        // Let the writer send what is left (an -ERR explaining the close);
        // it bounds its own final flush.
        state.writer.join(Duration::from_secs(1)).await;
        Ok(())
    }
}

/// `-ERR` lines with nats-server's exact wording.
pub mod errors {
    pub const UNKNOWN_OP: &[u8] = b"-ERR 'Unknown Protocol Operation'\r\n";
    pub const MAX_PAYLOAD: &[u8] = b"-ERR 'Maximum Payload Violation'\r\n";
    pub const MAX_CONTROL_LINE: &[u8] = b"-ERR 'maximum control line exceeded'\r\n";
    pub const INVALID_SUBJECT: &[u8] = b"-ERR 'Invalid Subject'\r\n";
    pub const INVALID_PUB_SUBJECT: &[u8] = b"-ERR 'Invalid Publish Subject'\r\n";
    /// Sent (best effort) to a client cut off as a slow consumer.
    pub const SLOW_CONSUMER: &[u8] = b"-ERR 'Slow Consumer'\r\n";
    pub const STALE_CONNECTION: &[u8] = b"-ERR 'Stale Connection'\r\n";
    pub const MAX_CONNECTIONS: &[u8] = b"-ERR 'maximum connections exceeded'\r\n";
    /// rnats-specific: `auth_limits.max_conn_rate` (off by default).
    pub const RATE_LIMITED: &[u8] = b"-ERR 'Connection Rate Limit Exceeded'\r\n";
    pub const MAX_SUBSCRIPTIONS: &[u8] = b"-ERR 'maximum subscriptions exceeded'\r\n";
    pub const MAX_ACCOUNT_CONNECTIONS: &[u8] =
        b"-ERR 'maximum account active connections exceeded'\r\n";
    pub const AUTH_VIOLATION: &[u8] = b"-ERR 'Authorization Violation'\r\n";
    pub const AUTH_TIMEOUT: &[u8] = b"-ERR 'Authentication Timeout'\r\n";
    pub const AUTH_EXPIRED: &[u8] = b"-ERR 'User Authentication Expired'\r\n";
}
