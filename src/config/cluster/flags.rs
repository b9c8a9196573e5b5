//! The cluster flags of `rnats-server`.

use super::urls::{ListenUrl, parse_listen_url};
use super::{ClusterOptions, RouteAuth, RouteUrl};
use crate::config::{Options, Secret};

/// The cluster flags of `rnats-server` (nats-server's names). They
/// override the file, as in nats-server.
#[derive(Clone, Debug, Default)]
pub struct ClusterFlags {
    /// `--cluster` / `--cluster_listen URL`: listen host and port, and the
    /// route authorization from the URL's `user:password@` (none: the
    /// file's user and password are dropped). "" turns clustering off.
    pub listen: Option<String>,
    /// `--routes url1,url2`: replaces the file's routes ("" clears them).
    pub routes: Option<String>,
    pub name: Option<String>,
    pub advertise: Option<String>,
    pub no_advertise: bool,
    pub connect_retries: Option<i32>,
}

impl ClusterFlags {
    /// Apply to `opts` (already loaded from the file); [`Options::validate`]
    /// comes after.
    pub fn apply(&self, opts: &mut Options) -> Result<(), String> {
        if let Some(l) = &self.listen {
            if l.trim().is_empty() {
                opts.cluster = None;
                opts.positions.forget_under("cluster");
            } else {
                let ListenUrl { host, port, creds } =
                    parse_listen_url(l).map_err(|e| format!("invalid --cluster: {e}"))?;
                let c = opts.cluster.get_or_insert_with(ClusterOptions::default);
                c.host = host;
                c.port = port;
                c.auth = match creds {
                    None => None,
                    Some((user, pass)) => Some(RouteAuth {
                        user,
                        password: Secret::parse(&pass)
                            .map_err(|e| format!("invalid --cluster password: {e}"))?,
                        timeout: c
                            .auth
                            .as_ref()
                            .map_or_else(|| c.default_auth_timeout(), |a| a.timeout),
                    }),
                };
                opts.positions.forget("cluster.host");
                opts.positions.forget("cluster.port");
                opts.positions.forget_under("cluster.authorization");
            }
        }
        let Some(c) = opts.cluster.as_mut() else {
            if self.routes.is_some() {
                return Err("solicited routes require cluster capabilities, e.g. --cluster".into());
            }
            let others = [
                ("--cluster_name", self.name.is_some()),
                ("--cluster_advertise", self.advertise.is_some()),
                ("--no_advertise", self.no_advertise),
                ("--connect_retries", self.connect_retries.is_some()),
            ];
            if let Some((flag, _)) = others.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{flag} needs a cluster (a cluster block or --cluster)"
                ));
            }
            return Ok(());
        };
        if let Some(list) = &self.routes {
            c.routes.clear();
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let r = RouteUrl::parse(item).map_err(|e| format!("invalid --routes: {e}"))?;
                if !c.routes.contains(&r) {
                    c.routes.push(r);
                }
            }
            opts.positions.forget_under("cluster.routes");
        }
        if let Some(n) = &self.name {
            c.name = n.clone();
            opts.positions.forget("cluster.name");
        }
        if let Some(a) = &self.advertise {
            c.advertise = Some(a.clone());
            opts.positions.forget("cluster.advertise");
        }
        c.no_advertise |= self.no_advertise;
        if let Some(n) = self.connect_retries {
            c.connect_retries = n;
        }
        Ok(())
    }
}
