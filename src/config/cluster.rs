//! The `cluster { ... }` block and the cluster flags: the route listener,
//! the routes to solicit, and their authorization and TLS. Plain data and
//! its parsing; the route actors consume it.
//!
//! nats-server v2.15.1's `parseCluster` is the reference. Where rnats
//! differs it is stricter, never looser:
//!
//! * A cluster without a port is refused. nats-server accepts one and then
//!   runs no route listener and dials none of the `routes`, silently.
//! * Route TLS is always mutual and verified against `ca_file` only: the
//!   block needs `cert_file`, `key_file` and `ca_file`. nats-server also
//!   forces peer verification for routes, but without a `ca_file` it
//!   trusts the system roots, i.e. any publicly issued certificate.
//!   `verify: false` (which nats-server ignores here) and `insecure: true`
//!   are refused, so nobody believes verification is off or on when it
//!   is not.
//! * Route URLs must be `nats-route://`, `nats://` or `tls://` with a host
//!   and a port (nats-server accepts any URL and fails when dialling it).
//!   The scheme does not choose TLS (the `tls` block does, as in
//!   nats-server), so `tls://` without a `tls` block is refused.
//! * Keys nats-server knows and rnats does not implement (route
//!   permissions, pooling, pinned accounts, compression, backoff, write
//!   deadlines) are refused, except the values that mean what rnats does
//!   anyway: `pool_size: -1` (one unpooled route per peer) and
//!   `compression: off`.

use std::time::Duration;

mod flags;
mod urls;

pub use flags::ClusterFlags;
pub use urls::{RouteUrl, parse_advertise};

use super::parser::{ConfigError, Spanned, Value};
use super::tls::TlsOptions;
use super::value::{self as conf, Context};
use super::{Secret, auth, fmt_duration};

/// The listen host when the block gives none (nats-server's DEFAULT_HOST).
pub const DEFAULT_CLUSTER_HOST: &str = "0.0.0.0";

/// nats-server never pings a route less often than this (its
/// routeMaxPingInterval); longer intervals are cut to it.
pub const ROUTE_MAX_PING_INTERVAL: Duration = Duration::from_secs(30);

/// The route authorization timeout without TLS (nats-server's
/// AUTH_TIMEOUT); with TLS it is the TLS timeout plus one second.
pub const DEFAULT_ROUTE_AUTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The `cluster` block, after the command-line flags.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterOptions {
    /// `name`; empty when not set (the server then makes one up, as
    /// nats-server does).
    pub name: String,
    /// Listen host (from `listen` or `host`), default "0.0.0.0".
    pub host: String,
    /// Listen port (from `listen` or `port`); -1 means a random port. Never
    /// 0 once validated: a cluster without a port is refused (see the
    /// module docs).
    pub port: i32,
    /// `advertise` / `cluster_advertise`: "host[:port]" given to other
    /// nodes in gossip instead of the listen address (see
    /// [`parse_advertise`]; without a port the listen port is meant).
    pub advertise: Option<String>,
    /// `no_advertise`: do not tell clients the other nodes' client URLs
    /// (connect_urls).
    pub no_advertise: bool,
    /// `routes`: the routes to solicit ("explicit" routes, dialled until
    /// they connect), without duplicates.
    pub routes: Vec<RouteUrl>,
    /// `connect_retries`, nats-server's meaning: how many times to retry
    /// a route learned through gossip ("implicit") after the first failed
    /// attempt (0: one attempt only). Explicit routes retry forever.
    pub connect_retries: i32,
    /// `authorization { user, password, timeout }` of the route port.
    pub auth: Option<RouteAuth>,
    /// `tls { ... }`: always mutual (both sides present a certificate
    /// and verify the other's against `ca_file`, which is always set).
    pub tls: Option<TlsOptions>,
    /// `tls { verify_cert_and_check_known_urls: true }`.
    pub tls_check_known_urls: bool,
    /// Cluster-level `ping_interval` (at most [`ROUTE_MAX_PING_INTERVAL`]);
    /// `None`: the top-level one. See [`ClusterOptions::route_ping_interval`].
    pub ping_interval: Option<Duration>,
    /// Cluster-level `ping_max`; `None`: the top-level one.
    pub ping_max: Option<u64>,
}

impl Default for ClusterOptions {
    /// No port: callers set one (or validation refuses it).
    fn default() -> Self {
        ClusterOptions {
            name: String::new(),
            host: DEFAULT_CLUSTER_HOST.into(),
            port: 0,
            advertise: None,
            no_advertise: false,
            routes: Vec::new(),
            connect_retries: 0,
            auth: None,
            tls: None,
            tls_check_known_urls: false,
            ping_interval: None,
            ping_max: None,
        }
    }
}
/// checks peers that log in; this server also sends the configured
/// password when it dials a route learned through gossip (as nats-server
/// does), which a hash cannot serve.
#[derive(Clone, Debug)]
pub struct RouteAuth {
    pub user: String,
    pub password: Secret,
    /// Time a peer has to send CONNECT; 0 in the file means the default
    /// (TLS timeout + 1s with TLS, else 2s).
    pub timeout: Duration,
}

impl PartialEq for RouteAuth {
    fn eq(&self, other: &Self) -> bool {
        self.user == other.user
            && self.password.same_config(&other.password)
            && self.timeout == other.timeout
    }
}

/// Keys nats-server's cluster block has and rnats does not implement,
/// with the feature they belong to.
const REFUSED: &[(&str, &str)] = &[
    ("permissions", "route permissions"),
    ("accounts", "pinned-account routes"),
    ("connect_backoff", "route connect backoff"),
    ("write_deadline", "route write deadlines"),
    ("write_timeout", "route write timeout policies"),
];

const NEEDS_CA: &str = "cluster tls needs \"ca_file\": rnats route TLS is always mutual and \
                        trusts only ca_file (nats-server would trust the system roots)";

impl ClusterOptions {
    /// Parse the `cluster` block. Cross-field rules wait for
    /// [`Options::validate`](super::Options::validate) (flags may still
    /// change the options).
    pub fn parse_block(v: &Spanned, cx: &mut Context) -> Result<ClusterOptions, ConfigError> {
        let map = conf::map(v, "cluster")?;
        let mut c = ClusterOptions::default();
        // A missing port is blamed on the block (a `port` key moves it).
        cx.record("cluster.port", v);
        for (k, val) in map {
            let lk = k.to_ascii_lowercase();
            let key = lk.as_str();
            match key {
                "name" => {
                    cx.record("cluster.name", val);
                    c.name = conf::string(val, key)?;
                    if c.name.contains(' ') {
                        return Err(conf::err(val, "cluster name cannot contain spaces"));
                    }
                }
                "listen" => {
                    let (h, p) = conf::host_port(val, key)?;
                    if let Some(h) = h {
                        c.host = h;
                        cx.record("cluster.host", val);
                    }
                    c.port = p;
                    cx.record("cluster.port", val);
                }
                "port" => {
                    c.port = conf::port(val, key)?;
                    cx.record("cluster.port", val);
                }
                "host" | "net" => {
                    c.host = conf::string(val, key)?;
                    cx.record("cluster.host", val);
                }
                "routes" => c.routes = parse_routes(val, cx)?,
                "advertise" | "cluster_advertise" => {
                    let a = conf::string(val, key)?;
                    parse_advertise(&a).map_err(|m| conf::err(val, m))?;
                    c.advertise = Some(a);
                    cx.record("cluster.advertise", val);
                }
                "no_advertise" => c.no_advertise = conf::boolean(val, key)?,
                "connect_retries" => {
                    // Negative retries mean 0 to nats-server; refused here.
                    let n = conf::int_in(val, key, 0, i64::from(i32::MAX))?;
                    c.connect_retries = i32::try_from(n).unwrap_or(i32::MAX);
                }
                "authorization" => {
                    cx.record("cluster.authorization", val);
                    c.auth = Some(parse_auth(val, cx)?);
                }
                "tls" => {
                    cx.record("cluster.tls", val);
                    let (tls, known_urls) = parse_tls(val, cx)?;
                    c.tls = Some(tls);
                    c.tls_check_known_urls = known_urls;
                }
                "ping_interval" => {
                    cx.record("cluster.ping_interval", val);
                    c.ping_interval = ping_interval(val, cx)?;
                }
                "ping_max" => {
                    let n = conf::uint(val, key)?;
                    if n == 0 {
                        cx.warn(val, "cluster ping_max of 0 means the top-level ping_max");
                    }
                    c.ping_max = (n > 0).then_some(n);
                }
                "pool_size" => {
                    // -1 is nats-server's "no pooling": one route per peer,
                    // what rnats does. 0 would mean its default pool of 3.
                    if val.as_i64() != Some(-1) {
                        return Err(conf::err(
                            val,
                            "\"pool_size\" in cluster is not supported by rnats yet (route \
                             pooling); only -1 (one unpooled route per peer) is accepted",
                        ));
                    }
                }
                "compression" => {
                    let off = match &val.value {
                        Value::Bool(b) => !b,
                        Value::Str(s) => ["off", "disabled", "false"]
                            .iter()
                            .any(|o| s.eq_ignore_ascii_case(o)),
                        _ => false,
                    };
                    if !off {
                        return Err(conf::err(
                            val,
                            "\"compression\" in cluster is not supported by rnats yet (route \
                             compression); only off is accepted",
                        ));
                    }
                }
                _ => match REFUSED.iter().find(|(r, _)| *r == key) {
                    Some((_, what)) => {
                        return Err(conf::err(
                            val,
                            format!("\"{k}\" in cluster is not supported by rnats yet ({what})"),
                        ));
                    }
                    None => cx.unknown(Some("cluster"), k, val)?,
                },
            }
        }
        let default_timeout = c.default_auth_timeout();
        if let Some(a) = c.auth.as_mut().filter(|a| a.timeout.is_zero()) {
            a.timeout = default_timeout;
        }
        Ok(c)
    }

    /// nats-server's route authorization timeout when none is set.
    pub fn default_auth_timeout(&self) -> Duration {
        match &self.tls {
            Some(t) => t.timeout + Duration::from_secs(1),
            None => DEFAULT_ROUTE_AUTH_TIMEOUT,
        }
    }

    /// Time a connecting route has to send CONNECT.
    pub fn auth_timeout(&self) -> Duration {
        self.auth
            .as_ref()
            .map_or_else(|| self.default_auth_timeout(), |a| a.timeout)
    }

    /// The PING interval of a route: the cluster's, else the top-level
    /// `ping_interval`, at most [`ROUTE_MAX_PING_INTERVAL`] (as nats-server).
    pub fn route_ping_interval(&self, top_level: Duration) -> Duration {
        self.ping_interval
            .unwrap_or(top_level)
            .min(ROUTE_MAX_PING_INTERVAL)
    }

    /// Unanswered PINGs before a route is stale: the cluster's, else the
    /// top-level `ping_max`.
    pub fn route_ping_max(&self, top_level: u64) -> u64 {
        self.ping_max.unwrap_or(top_level)
    }

    /// Rules between fields, for the file, the flags and options built in
    /// code alike: `Err((position key, message))`. Files are not read.
    pub fn check(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, msg: String| Err((key.to_string(), msg));
        if self.port == 0 {
            return fail(
                "cluster.port",
                "cluster has no port: set \"port\" or \"listen\" (-1 picks a free port); \
                 nats-server would silently run without routes"
                    .into(),
            );
        }
        if !(-1..=65535).contains(&self.port) {
            return fail(
                "cluster.port",
                format!("cluster port {} is not a valid port", self.port),
            );
        }
        if self.host.trim().is_empty() {
            return fail("cluster.host", "cluster host must not be empty".into());
        }
        if self.name.contains(' ') {
            return fail("cluster.name", "cluster name cannot contain spaces".into());
        }
        if let Some(a) = &self.advertise {
            parse_advertise(a).map_err(|m| ("cluster.advertise".to_string(), m))?;
        }
        if self.connect_retries < 0 {
            return fail(
                "cluster",
                "cluster connect_retries must not be negative".into(),
            );
        }
        if self.ping_interval.is_some_and(|d| d.is_zero()) || self.ping_max == Some(0) {
            return fail(
                "cluster",
                "cluster ping_interval and ping_max must be positive (None means the \
                 top-level value)"
                    .into(),
            );
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("cluster.routes.{i}");
            if r.host.is_empty() || r.port == 0 {
                return fail(
                    &key,
                    format!("route URL {} needs a host and a port", r.display),
                );
            }
            if r.user.is_some() != r.password.is_some() {
                return fail(
                    &key,
                    format!(
                        "route URL {} needs a user and a password, or neither",
                        r.display
                    ),
                );
            }
            if r.scheme == "tls" && self.tls.is_none() {
                return fail(
                    &key,
                    format!(
                        "route URL {} says tls:// but the cluster has no tls block: the route \
                         would be plain TCP (the scheme does not turn TLS on)",
                        r.display
                    ),
                );
            }
        }
        if let Some(a) = &self.auth {
            if a.user.is_empty() {
                return fail(
                    "cluster.authorization",
                    "cluster authorization needs a user".into(),
                );
            }
            if a.timeout.is_zero() || a.timeout > conf::MAX_DURATION {
                return fail(
                    "cluster.authorization",
                    "cluster authorization timeout must be positive and at most 100 years".into(),
                );
            }
        }
        if let Some(t) = &self.tls {
            if t.ca_file.is_none() {
                return fail("cluster.tls", NEEDS_CA.into());
            }
            t.check().map_err(|m| ("cluster.tls".to_string(), m))?;
            if !t.verify || t.verify_and_map || t.handshake_first {
                return fail(
                    "cluster.tls",
                    "cluster tls must verify peers (verify: true), without verify_and_map \
                     or handshake_first"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Can a running server with `self` take `new` on a reload? rnats
    /// refuses every change for now and keeps the running configuration
    /// (nats-server reloads routes, authorization, TLS, name and more, but
    /// not the listen host and port; those messages are its own). As in
    /// nats-server, a new port of -1 means the port the server already has
    /// (the running options may hold the port it bound).
    pub fn check_reload(old: Option<&Self>, new: Option<&Self>) -> Result<(), String> {
        let new = new.map(|n| match old {
            Some(o) if n.port == -1 => ClusterOptions {
                port: o.port,
                ..n.clone()
            },
            _ => n.clone(),
        });
        let new = new.as_ref();
        if old == new {
            return Ok(());
        }
        let host = |c: Option<&Self>| c.map_or(String::new(), |c| c.host.clone());
        let port = |c: Option<&Self>| c.map_or(0, |c| c.port);
        if host(old) != host(new) {
            return Err(format!(
                "config reload not supported for cluster host: old={}, new={}",
                host(old),
                host(new)
            ));
        }
        if port(old) != port(new) {
            return Err(format!(
                "config reload not supported for cluster port: old={}, new={}",
                port(old),
                port(new)
            ));
        }
        Err(
            "config reload not supported for Cluster: rnats keeps the running cluster \
             configuration (routes, authorization, TLS, name...) until restart"
                .into(),
        )
    }
}

/// `routes = [...]`: each a [`RouteUrl`]; a duplicate is skipped with
/// nats-server's warning.
fn parse_routes(v: &Spanned, cx: &mut Context) -> Result<Vec<RouteUrl>, ConfigError> {
    cx.record("cluster.routes", v);
    let items = v.as_array().ok_or_else(|| {
        conf::err(
            v,
            format!(
                "\"routes\" expects an array of route URLs, got {}",
                v.value.type_name()
            ),
        )
    })?;
    let mut routes: Vec<RouteUrl> = Vec::new();
    for item in items {
        let text = conf::string(item, "routes")?;
        let r = RouteUrl::parse(&text)
            .map_err(|e| conf::err(item, format!("error parsing route url: {e}")))?;
        if routes.contains(&r) {
            cx.warn(
                item,
                format!("Duplicate route entry detected: {}", r.display),
            );
            continue;
        }
        cx.record(format!("cluster.routes.{}", routes.len()), item);
        routes.push(r);
    }
    Ok(routes)
}

/// `authorization { user, password, timeout }`: one user, no tokens, no
/// permissions (nats-server's messages where it refuses too).
fn parse_auth(v: &Spanned, cx: &mut Context) -> Result<RouteAuth, ConfigError> {
    let map = conf::map(v, "cluster authorization")?;
    let (mut user, mut password, mut timeout) = (None, None, Duration::ZERO);
    for (k, val) in map {
        let lk = k.to_ascii_lowercase();
        let refuse = |msg: &str| Err(conf::err(val, msg));
        match lk.as_str() {
            "user" | "username" => {
                let u = conf::string(val, &lk)?;
                if u.is_empty() {
                    return refuse("empty user name");
                }
                user = Some(u);
            }
            "password" | "pass" => password = Some(auth::secret(val, &lk)?),
            "timeout" => {
                cx.record("cluster.authorization.timeout", val);
                timeout = auth::timeout(val, &lk, cx)?;
            }
            "users" => return refuse("Cluster authorization does not allow multiple users"),
            "token" => return refuse("Cluster authorization does not support tokens"),
            "auth_callout" | "auth_hook" => {
                return refuse("Cluster authorization does not support callouts");
            }
            "permissions" | "default_permissions" | "default_permission" => {
                return refuse(
                    "\"permissions\" in cluster authorization is not supported by rnats yet \
                     (route permissions)",
                );
            }
            "proxy_required" => {
                return refuse(
                    "\"proxy_required\" in cluster authorization is not supported by rnats yet \
                     (trusted proxies)",
                );
            }
            _ => cx.unknown(Some("cluster authorization"), k, val)?,
        }
    }
    let user = user.ok_or_else(|| conf::err(v, "cluster authorization needs a user"))?;
    let password = password.ok_or_else(|| {
        conf::err(
            v,
            "cluster authorization has a user but no password (rnats refuses a route user \
             anyone could log in as)",
        )
    })?;
    Ok(RouteAuth {
        user,
        password,
        timeout,
    })
}

/// The route `tls` block: the shared TLS parser, with verification forced
/// on, `ca_file` required, and the route-only keys.
fn parse_tls(v: &Spanned, cx: &mut Context) -> Result<(TlsOptions, bool), ConfigError> {
    let mut known_urls = false;
    let mut base = TlsOptions::new("", "");
    base.verify = true;
    let mut own = |k: &str, val: &Spanned| -> Result<bool, ConfigError> {
        let refuse = |msg: String| Err(conf::err(val, msg));
        match k {
            "verify" if !conf::boolean(val, k)? => refuse(
                "cluster tls \"verify: false\" is refused: rnats always verifies route peers \
                 against ca_file (nats-server ignores it and verifies anyway)"
                    .into(),
            ),
            "verify" => Ok(true),
            "verify_cert_and_check_known_urls" => {
                known_urls = conf::boolean(val, k)?;
                Ok(true)
            }
            "insecure" if conf::boolean(val, k)? => refuse(
                "cluster tls \"insecure\" is not supported by rnats (route certificates are \
                 always verified)"
                    .into(),
            ),
            "insecure" => Ok(true),
            "verify_and_map" if conf::boolean(val, k)? => refuse(
                "cluster tls \"verify_and_map\" is not supported by rnats yet (mapping route \
                 certificates to the cluster user)"
                    .into(),
            ),
            "verify_and_map" => Ok(true),
            "handshake_first" | "first" | "immediate" => refuse(format!(
                "cluster tls \"{k}\" is refused: nats-server ignores it for routes"
            )),
            _ => Ok(false),
        }
    };
    let tls = TlsOptions::parse_block_with(v, cx, "cluster.tls", base, &mut own)?;
    if tls.ca_file.is_none() {
        return Err(conf::err(v, NEEDS_CA));
    }
    tls.check().map_err(|m| conf::err(v, m))?;
    Ok((tls, known_urls))
}

/// Cluster `ping_interval`: as the top-level one (duration string, or
/// seconds with a warning); 0 means the top-level value, and anything
/// above [`ROUTE_MAX_PING_INTERVAL`] is cut to it with nats-server's
/// warning.
fn ping_interval(v: &Spanned, cx: &mut Context) -> Result<Option<Duration>, ConfigError> {
    let d = super::timer_value(v, "ping_interval", cx)?;
    if d.is_zero() {
        cx.warn(
            v,
            "cluster ping_interval of 0 means the top-level ping_interval",
        );
        return Ok(None);
    }
    if d > ROUTE_MAX_PING_INTERVAL {
        cx.warn(
            v,
            format!(
                "Cluster 'ping_interval' will reset to {} which is the max for routes",
                fmt_duration(ROUTE_MAX_PING_INTERVAL)
            ),
        );
        return Ok(Some(ROUTE_MAX_PING_INTERVAL));
    }
    Ok(Some(d))
}
