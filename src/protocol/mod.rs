//! The NATS wire protocol: a sans-I/O parser for client operations, subject
//! rules, and the server's INFO/CONNECT documents.

pub mod info;
pub mod parser;
pub mod subject;

#[cfg(test)]
mod proptests;

pub use parser::{ClientOp, Limits, Parser, ProtocolError, PubFrame};
