//! The INFO and CONNECT documents servers exchange on a route.
//!
//! Field names are nats-server's. rnats leaves out `route_pool_size` and
//! `compression`, so a nats-server peer treats it as a server without
//! pooling or compression: one route per pair, every RS+/RS-/RMSG naming
//! its account. Fields we do not know are ignored when reading.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteInfo {
    pub server_id: String,
    pub server_name: String,
    pub version: String,
    pub proto: i32,
    pub go: String,
    pub host: String,
    pub port: u16,
    pub headers: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auth_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_verify: bool,
    pub max_payload: i64,
    /// The route URL other nodes should dial (`nats-route://host:port/`),
    /// from `cluster.advertise`; empty: derive it from the connection.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ip: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    #[serde(rename = "cluster_dynamic", skip_serializing_if = "std::ops::Not::not")]
    pub dynamic: bool,
    /// The sender's client URLs (`host:port`), for clients' `connect_urls`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ldm: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub nonce: String,
    /// Read only: a nats-server peer with pooling says its pool size; we
    /// never send it (see the module comment).
    #[serde(skip_serializing)]
    pub route_pool_size: i64,
    #[serde(skip_serializing)]
    pub route_account: String,
    #[serde(skip_serializing)]
    pub gateway: String,
}

impl RouteInfo {
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = b"INFO ".to_vec();
        // Plain fields: serializing cannot fail.
        let _ = serde_json::to_writer(&mut line, self);
        line.extend_from_slice(b"\r\n");
        line
    }
}

/// A route's CONNECT (sent by the dialing side).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteConnect {
    pub echo: bool,
    pub verbose: bool,
    pub pedantic: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pass: String,
    pub tls_required: bool,
    pub headers: bool,
    /// The dialing server's id.
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    pub dynamic: bool,
}

impl RouteConnect {
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = b"CONNECT ".to_vec();
        let _ = serde_json::to_writer(&mut line, self);
        line.extend_from_slice(b"\r\n");
        line
    }
}
