//! Placeholder until the cluster configuration lands (branch cfg).

use std::time::Duration;

use super::secret::Secret;
use super::tls::TlsOptions;

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub name: String,
    pub host: String,
    pub port: i32,
    pub advertise: Option<String>,
    pub no_advertise: bool,
    pub routes: Vec<RouteUrl>,
    pub connect_retries: i32,
    pub auth: Option<RouteAuth>,
    pub tls: Option<TlsOptions>,
    pub tls_check_known_urls: bool,
    pub ping_interval: Option<Duration>,
    pub ping_max: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct RouteUrl {
    pub display: String,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Clone, Debug)]
pub struct RouteAuth {
    pub user: String,
    pub password: Secret,
    pub timeout: Duration,
}
