//! Client connections: the per-connection actor and its reader and writer
//! tasks, the shared per-connection state, and the supervisor that owns
//! them all.

pub mod conn;
mod reader;
pub mod shared;
mod socket;
pub mod supervisor;
mod writer;

pub use crate::outbound::CloseReason;
pub use conn::{ConnActor, ConnCtl, ConnMsg};
pub use reader::MAX_UNACKED_SUBS;
pub use shared::ConnShared;
pub use supervisor::{ClientSupMsg, ClientSupervisor};
