"""Local loopback clusters of rnats-server (or nats-server) nodes.

Shared by scripts/cluster (the command line) and scripts/chaos. A cluster
lives in a state directory: one config, log and pid file per node plus
state.json, so separate invocations of scripts/cluster find the nodes the
`up` started. Nodes are named a, b, c...; node `b` has server_name node-b.

Both servers read the same configuration format, so everything written
here uses only keys the two share. TLS file paths in a config are
resolved against the server's working directory (nats-server and
rnats-server alike), so generated configs carry absolute paths and the
committed ones in cluster-configs/ are relative to the repository root,
which is where nodes are started.
"""

import json
import os
import signal
import socket
import string
import subprocess
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "cluster-configs")
CERT_DIR = os.path.join(CONFIG_DIR, "tls", "certs")
DEFAULT_STATE = os.path.join(ROOT, ".cluster")
CLUSTER_NAME = "rnats-local"
HOST = "127.0.0.1"
NAMES = string.ascii_lowercase
# Every file `rnats certs dev` writes that the configs use.
CERT_FILES = ["ca.pem", "server-cert.pem", "server-key.pem", "client-cert.pem",
              "client-key.pem", "route-ca.pem", "route-cert.pem", "route-key.pem"]


class ClusterError(Exception):
    pass


def default_bin():
    return os.environ.get("RNATS_SERVER") or os.path.join(ROOT, "target", "release", "rnats-server")


def resolve_bin(path):
    """An absolute path to an executable server binary, or ClusterError."""
    if os.sep not in path:
        found = shutil_which(path)
        if found:
            path = found
    path = os.path.abspath(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ClusterError(
            f"server binary {path} not found (build it with `cargo build --release`, "
            "or pass --bin / set RNATS_SERVER, e.g. --bin $(which nats-server))")
    return path


def shutil_which(name):
    import shutil
    return shutil.which(name)


# ---------------------------------------------------------------------------
# Configuration


class Ports:
    """Port bases; node i listens on base + i."""

    def __init__(self, client=4222, monitor=8222, cluster=6222):
        self.client, self.monitor, self.cluster = client, monitor, cluster

    def to_json(self):
        return {"client": self.client, "monitor": self.monitor, "cluster": self.cluster}


class Node:
    def __init__(self, index, ports):
        if index >= len(NAMES):
            raise ClusterError(f"at most {len(NAMES)} nodes")
        self.index = index
        self.name = NAMES[index]
        self.server_name = f"node-{self.name}"
        self.client_port = ports.client + index
        self.monitor_port = ports.monitor + index
        self.cluster_port = ports.cluster + index

    @property
    def client_url(self):
        return f"nats://{HOST}:{self.client_port}"

    @property
    def monitor_url(self):
        return f"http://{HOST}:{self.monitor_port}"


def nodes_for(n, ports):
    if not 1 <= n <= len(NAMES):
        raise ClusterError(f"node count must be 1..{len(NAMES)}")
    return [Node(i, ports) for i in range(n)]


def tls_paths(cert_dir, relative_to=None):
    """Config-ready paths of the dev certificates (relative to
    `relative_to` when given, for the committed configs)."""
    def p(name):
        full = os.path.join(cert_dir, name)
        return os.path.relpath(full, relative_to) if relative_to else full
    return {name: p(name) for name in CERT_FILES}


def node_config(node, nodes, tls=None, route_targets=None, advertise=None, header=None):
    """The config text of `node` in a cluster of `nodes`.

    `route_targets` maps a node name to the host:port other nodes dial to
    reach its route listener (default: its real cluster port); chaos puts
    proxies there. `advertise` is the host:port this node gives in its
    route INFO, which peers pass on to each other (gossip). `tls` is a
    dict from tls_paths(), or None for plain connections.
    """
    routes = []
    for peer in nodes:
        target = (route_targets or {}).get(peer.name, f"{HOST}:{peer.cluster_port}")
        routes.append(f"    nats-route://{target}")
    lines = []
    if header:
        lines += [f"# {h}" if h else "#" for h in header]
        lines.append("")
    lines += [
        f"server_name: {node.server_name}",
        f"listen: {HOST}:{node.client_port}",
        f"http: {HOST}:{node.monitor_port}",
    ]
    if tls:
        lines += [
            "",
            "# Clients must present a certificate from ca.pem (client-cert.pem).",
            "tls {",
            f'  cert_file: "{tls["server-cert.pem"]}"',
            f'  key_file: "{tls["server-key.pem"]}"',
            f'  ca_file: "{tls["ca.pem"]}"',
            "  verify: true",
            "  timeout: 2",
            "}",
        ]
    lines += [
        "",
        "cluster {",
        f"  name: {CLUSTER_NAME}",
        f"  listen: {HOST}:{node.cluster_port}",
    ]
    if advertise:
        lines.append(f"  advertise: {advertise}")
    lines.append("  # every node lists all nodes, itself included (a route to self is dropped)")
    lines.append("  routes: [")
    lines += routes
    lines.append("  ]")
    if tls:
        lines += [
            "  # Mutual TLS under the route CA only: a client certificate is refused here.",
            "  tls {",
            f'    cert_file: "{tls["route-cert.pem"]}"',
            f'    key_file: "{tls["route-key.pem"]}"',
            f'    ca_file: "{tls["route-ca.pem"]}"',
            "    timeout: 2",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def committed_configs():
    """{path: text} of the three-node configs kept in cluster-configs/."""
    nodes = nodes_for(3, Ports())
    out = {}
    for kind in ("plain", "tls"):
        tls = tls_paths(CERT_DIR, relative_to=ROOT) if kind == "tls" else None
        for node in nodes:
            header = [
                f"Node {node.name} of the three-node local cluster ({kind}).",
                "Written by `scripts/cluster configs`; see cluster-configs/README.md.",
                "Start from the repository root:",
                f"  rnats-server -c cluster-configs/{kind}/node-{node.name}.conf",
                "The same file works with nats-server.",
            ]
            if tls:
                header += ["Paths are relative to the working directory (the repository root);",
                           "certificates: rnats certs dev cluster-configs/tls/certs"]
            path = os.path.join(CONFIG_DIR, kind, f"node-{node.name}.conf")
            out[path] = node_config(node, nodes, tls=tls, header=header)
    return out


# ---------------------------------------------------------------------------
# Certificates


def find_rnats_cli():
    targets = [os.environ.get("CARGO_TARGET_DIR") or "", os.path.join(ROOT, "target")]
    cands = [os.environ.get("RNATS_CLI")]
    cands += [os.path.join(t, prof, "rnats") for t in targets if t for prof in ("release", "debug")]
    cands.append(shutil_which("rnats"))
    for cand in cands:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise ClusterError("the rnats CLI is needed to make certificates: "
                       "cargo build --release --bin rnats (or set RNATS_CLI)")


def ensure_certs(cert_dir=CERT_DIR):
    """Make the dev certificates unless they are all there already."""
    if all(os.path.isfile(os.path.join(cert_dir, f)) for f in CERT_FILES):
        return False
    cli = find_rnats_cli()
    r = subprocess.run([cli, "certs", "dev", cert_dir, "--force"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise ClusterError(f"rnats certs dev failed: {r.stderr.strip()}")
    missing = [f for f in CERT_FILES if not os.path.isfile(os.path.join(cert_dir, f))]
    if missing:
        raise ClusterError(f"{cli} certs dev did not write {', '.join(missing)} "
                           "(an rnats CLI from before the route CA? rebuild it)")
    return True


# ---------------------------------------------------------------------------
# Monitoring


def http_json(url, timeout=1.0):
    """GET a monitor endpoint; None when the node does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def routez(node, timeout=1.0):
    return http_json(f"{node.monitor_url}/routez", timeout)


def route_summary(rz):
    """(peer server names, connection count, restarts or None) from /routez.

    nats-server opens several connections per peer (a pool, plus one for the
    system account), so peers are counted by name, not by connection.
    Restarts: rnats's `restarts` (absent from nats-server's /routez)."""
    if rz is None:
        return None, 0, None
    routes = rz.get("routes") or []
    peers = set()
    restarts = None
    for r in routes:
        peers.add(r.get("remote_name") or r.get("remote_id") or "?")
        if "restarts" in r:
            restarts = (restarts or 0) + int(r.get("restarts") or 0)
    # rnats also lists every configured route it dials, connected or not,
    # with its restarts: the complete count when present.
    solicited = rz.get("solicited")
    if isinstance(solicited, list) and any("restarts" in s for s in solicited):
        restarts = sum(int(s.get("restarts") or 0) for s in solicited)
    return peers, len(routes), restarts


def full_mesh(nodes, alive=None):
    """True when every node in `alive` (default all) sees every other one."""
    alive = nodes if alive is None else alive
    want_all = {n.server_name for n in alive}
    for n in alive:
        peers, _, _ = route_summary(routez(n))
        if peers is None or peers != want_all - {n.server_name}:
            return False
    return True


# ---------------------------------------------------------------------------
# Processes


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def proc_state(pid):
    """The /proc state letter (R, S, T, Z...) or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


class Cluster:
    """Nodes of one cluster and their processes, persisted in `state_dir`."""

    def __init__(self, state_dir=DEFAULT_STATE):
        self.state_dir = os.path.abspath(state_dir)
        self.state_file = os.path.join(self.state_dir, "state.json")
        self.children = {}  # name -> Popen, for processes this instance started
        self.state = None
        self.nodes = []

    # -- persisted description ------------------------------------------------

    def load(self):
        try:
            with open(self.state_file) as f:
                self.state = json.load(f)
        except FileNotFoundError:
            raise ClusterError(f"no cluster in {self.state_dir} (scripts/cluster up first)")
        p = self.state["ports"]
        self.nodes = nodes_for(self.state["n"], Ports(p["client"], p["monitor"], p["cluster"]))
        return self

    def save(self):
        os.makedirs(self.state_dir, exist_ok=True)
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=2)
        os.replace(tmp, self.state_file)

    def create(self, n, bin_path, tls=False, ports=None, route_targets=None, advertise=None):
        """Describe a new cluster and write its configs. The committed
        cluster-configs/ files are used as they are for the default
        three-node layout; anything else gets generated configs."""
        ports = ports or Ports()
        self.nodes = nodes_for(n, ports)
        if self.any_alive_from_state():
            raise ClusterError(f"a cluster from {self.state_dir} is still running "
                               "(scripts/cluster down first)")
        os.makedirs(self.state_dir, exist_ok=True)
        if tls:
            ensure_certs()
        standard = (n == 3 and ports.to_json() == Ports().to_json()
                    and not route_targets and not advertise)
        configs = {}
        for node in self.nodes:
            if standard:
                path = os.path.join(CONFIG_DIR, "tls" if tls else "plain", f"node-{node.name}.conf")
                if not os.path.isfile(path):
                    raise ClusterError(f"{path} is missing")
            else:
                path = os.path.join(self.state_dir, f"node-{node.name}.conf")
                text = node_config(
                    node, self.nodes, tls=tls_paths(CERT_DIR) if tls else None,
                    route_targets=route_targets,
                    advertise=(advertise or {}).get(node.name),
                    header=[f"Generated by scripts/cluster for {self.state_dir}"])
                with open(path, "w") as f:
                    f.write(text)
            configs[node.name] = path
        for node in self.nodes:
            # Logs are per cluster: a new `up` starts them afresh.
            open(self.log_path(node.name), "wb").close()
        self.state = {"n": n, "bin": bin_path, "tls": tls, "ports": ports.to_json(),
                      "configs": configs, "pids": {}, "created": time.time()}
        self.save()

    def any_alive_from_state(self):
        try:
            with open(self.state_file) as f:
                st = json.load(f)
        except (FileNotFoundError, ValueError):
            return False
        for name, pid in (st.get("pids") or {}).items():
            if self._is_ours(pid, st["configs"].get(name, "")):
                return True
        return False

    def node(self, name):
        for n in self.nodes:
            if name in (n.name, n.server_name):
                return n
        raise ClusterError(f"no node {name!r} (nodes: {' '.join(n.name for n in self.nodes)})")

    def log_path(self, name):
        return os.path.join(self.state_dir, f"{name}.log")

    def pid_path(self, name):
        return os.path.join(self.state_dir, f"{name}.pid")

    # -- processes --------------------------------------------------------------

    @staticmethod
    def _is_ours(pid, conf):
        """Is `pid` a live server started with `conf`? Guards against a
        recycled pid: we only ever signal our own nodes."""
        if not pid or proc_state(pid) in (None, "Z", "X"):
            return False
        cmdline = proc_cmdline(pid)
        # Empty while the process is between exec()s (a wrapper such as a
        # pyenv shim exec'ing the real binary): still ours.
        return cmdline == [""] or cmdline == [] or conf in cmdline

    def pid(self, name):
        """The pid of a running node, or None."""
        pid = self.state["pids"].get(name)
        child = self.children.get(name)
        if child is not None and child.pid == pid:
            return pid if child.poll() is None else None  # poll() also reaps it
        return pid if self._is_ours(pid, self.state["configs"][name]) else None

    def exit_status(self, name):
        """How a node this instance started ended, for error messages."""
        child = self.children.get(name)
        rc = child.poll() if child is not None else None
        if rc is None:
            return "exited"
        return f"killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"

    def start(self, name):
        if self.pid(name):
            raise ClusterError(f"node {name} is already running")
        node = self.node(name)
        for port in (node.client_port, node.monitor_port, node.cluster_port):
            if not port_free(port):
                raise ClusterError(f"port {port} for node {name} is in use")
        conf = self.state["configs"][name]
        log = open(self.log_path(name), "ab")
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} scripts/cluster starts "
                  f"{self.state['bin']} -c {conf}\n".encode())
        log.flush()
        # A session of its own: the node outlives this script and a ^C here.
        child = subprocess.Popen([self.state["bin"], "-c", conf], cwd=ROOT,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        log.close()
        self.children[name] = child
        self.state["pids"][name] = child.pid
        with open(self.pid_path(name), "w") as f:
            f.write(f"{child.pid}\n")
        self.save()
        return child.pid

    def signal(self, name, sig):
        pid = self.pid(name)
        if not pid:
            raise ClusterError(f"node {name} is not running")
        os.kill(pid, sig)
        return pid

    def wait_exit(self, name, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pid(name):
                return True
            time.sleep(0.02)
        return not self.pid(name)

    def stop(self, name, grace=10.0):
        """SIGTERM, then SIGKILL if it has not exited after `grace` seconds.
        Returns how it ended: 'stopped', 'killed' or 'not running'."""
        pid = self.pid(name)
        if not pid:
            return "not running"
        if proc_state(pid) == "T":
            os.kill(pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        os.kill(pid, signal.SIGTERM)
        if self.wait_exit(name, grace):
            return "stopped"
        os.kill(pid, signal.SIGKILL)
        if not self.wait_exit(name, 5.0):
            raise ClusterError(f"node {name} (pid {pid}) survived SIGKILL")
        return "killed"

    def wait_mesh(self, timeout, nodes=None):
        """Wait until every node (of `nodes`, default all) has a route to
        every other one. Returns seconds taken; ClusterError on timeout."""
        nodes = nodes or self.nodes
        t0 = time.monotonic()
        while True:
            dead = [n.name for n in nodes if not self.pid(n.name)]
            if dead:
                raise ClusterError("\n".join(
                    f"node {d} {self.exit_status(d)}; {self.log_path(d)} ends:\n"
                    + self.log_tail(d, 3) for d in dead))
            if full_mesh(nodes):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise ClusterError(f"routes did not form a full mesh within {timeout:g}s:\n"
                                   + self.describe_routes(nodes))
            time.sleep(0.05)

    def describe_routes(self, nodes=None):
        out = []
        for n in nodes or self.nodes:
            peers, conns, _ = route_summary(routez(n))
            if peers is None:
                out.append(f"  {n.name}: monitor {n.monitor_url} not answering")
            else:
                out.append(f"  {n.name}: routes to {sorted(peers) or 'nobody'} ({conns} connections)")
        return "\n".join(out)

    def log_tail(self, name, lines=15):
        """The last lines the node's current run wrote (since the banner
        `start` puts in front of each run)."""
        try:
            with open(self.log_path(name), "rb") as f:
                data = f.read()[-50000:]
        except OSError:
            return ""
        text = data.decode(errors="replace").splitlines()
        for i in range(len(text) - 1, -1, -1):
            if text[i].startswith("=== "):
                text = text[i:]
                break
        return "\n".join(text[-lines:])
