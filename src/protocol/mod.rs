//! The NATS wire protocol: sans-I/O parsers for client operations and for
//! the route (server-to-server) protocol, subject rules, and the server's
//! INFO/CONNECT documents.

pub mod info;
pub mod parser;
pub mod route;
pub mod subject;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod route_proptests;

pub use parser::{ClientOp, Limits, Parser, ProtocolError, PubFrame};
pub use route::{RouteOp, RouteParser, RouteSub, RoutedMsg};
