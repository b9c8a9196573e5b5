//! The INFO document the server sends and the CONNECT document it receives.
//! Field names follow nats-server exactly: clients parse them.

use serde::{Deserialize, Serialize};

/// The protocol version nats-server announces; clients gate features on it.
pub const NATS_COMPAT_VERSION: &str = "2.15.1";

#[derive(Debug, Clone, Serialize, Default)]
pub struct ServerInfo {
    pub server_id: String,
    pub server_name: String,
    /// The nats-server version whose protocol we speak (clients compare it).
    pub version: String,
    pub proto: u32,
    /// nats-server names its Go toolchain here; we name the Rust one.
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
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_available: bool,
    pub max_payload: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ldm: bool,
    /// rnats's own version, beside the compatibility version above.
    pub rnats_version: String,
}

impl ServerInfo {
    /// The `INFO {...}\r\n` line.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = b"INFO ".to_vec();
        // Serializing a struct of plain fields cannot fail.
        serde_json::to_writer(&mut line, self).expect("INFO serializes");
        // nats-server puts a space between the JSON and CRLF; match it byte for byte.
        line.extend_from_slice(b" \r\n");
        line
    }
}

/// CONNECT options. Unknown fields are ignored, as nats-server does.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ConnectOptions {
    pub verbose: bool,
    pub pedantic: bool,
    pub tls_required: bool,
    pub auth_token: Option<String>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
    /// Signed: nats-server answers a negative protocol with
    /// 'invalid client protocol' rather than a JSON error.
    pub protocol: i64,
    pub echo: bool,
    pub sig: Option<String>,
    pub jwt: Option<String>,
    pub nkey: Option<String>,
    pub headers: bool,
    pub no_responders: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            // nats-server's defaults when CONNECT omits them (or never comes).
            verbose: true,
            pedantic: true,
            tls_required: false,
            auth_token: None,
            user: None,
            pass: None,
            name: None,
            lang: None,
            version: None,
            protocol: 0,
            // Echo is on unless the client turns it off.
            echo: true,
            sig: None,
            jwt: None,
            nkey: None,
            headers: false,
            no_responders: false,
        }
    }
}
