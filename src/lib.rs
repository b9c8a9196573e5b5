#![recursion_limit = "256"]
//! rnats: a NATS-compatible message broker built as a tree of supervised
//! ractor actors. See docs/ARCHITECTURE.md for the tree and the life of a
//! message.

pub mod account;
pub mod auth;
pub mod busy_poll;
pub mod client;
pub mod config;
pub mod deliver;
pub mod jwt;
pub mod monitor;
pub mod outbound;
pub mod protocol;
pub mod route;
pub mod router;
pub mod server;
pub mod supervision;
pub mod tls;

/// The Rust toolchain that built us (the INFO `go` field's counterpart).
pub const RUST_TOOLCHAIN: &str = env!("RNATS_RUST_TOOLCHAIN");

pub use config::Options;
pub use server::Server;
