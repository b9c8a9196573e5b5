//! Client connections: the per-connection actor and tasks, the shared
//! per-connection state, and the supervisor that owns them all.

pub mod conn;
pub mod shared;
pub mod supervisor;

pub use conn::{ConnActor, ConnMsg};
pub use shared::{CloseReason, ConnKind, ConnShared};
pub use supervisor::{ClientSupMsg, ClientSupervisor};
