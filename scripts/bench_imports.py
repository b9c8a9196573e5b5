#!/usr/bin/env python3
"""Messages across accounts: a stream import (publisher in A, subscriber
in B) and a service import (requester in B, replier in A), rnats vs
nats-server side by side with the same `accounts` configuration, beside
the same traffic inside one account for reference. Prints msgs/s (or
request p50) and the ratio rnats/nats-server.

Needs target/release/rnats and rnats-server and nats-server on PATH.

    python3 scripts/bench_imports.py [--msgs 1000000] [--requests 20000] [--runs 3]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from bench_security import free_port, start  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNATS = os.path.join(ROOT, "target", "release", "rnats")
RNATS_SERVER = os.path.join(ROOT, "target", "release", "rnats-server")

CONFIG = """
accounts {
  A: {
    users: [ {user: a, password: a} ]
    exports: [ {stream: "bench"}, {service: "svc"} ]
  }
  B: {
    users: [ {user: b, password: b} ]
    imports: [ {stream: {account: A, subject: "bench"}}, {service: {account: A, subject: "svc"}} ]
  }
}
"""


def bench(port, subject, pub_user, sub_user, extra):
    url = lambda u: f"nats://{u}:{u}@127.0.0.1:{port}"
    out = subprocess.run(
        [RNATS, "-s", url(pub_user), "bench", subject, "--json", "--no-progress",
         "--sub-server", url(sub_user)] + extra,
        capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or out.stdout.strip())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--msgs", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    nats = shutil.which("nats-server")
    if not nats:
        sys.exit("nats-server not on PATH")
    work = tempfile.mkdtemp(prefix="bench-imports-")
    conf = os.path.join(work, "accounts.conf")
    with open(conf, "w") as f:
        f.write(CONFIG)
    pubsub = ["--pub", "1", "--sub", "1", "--size", "16", "--msgs", str(args.msgs)]
    request = ["--request", "--pub", "1", "--sub", "1", "--size", "16",
               "--msgs", str(args.requests)]
    scenarios = [
        ("pub/sub 16B, one account", "bench", "a", "a", pubsub, "sub_msgs_per_sec"),
        ("pub/sub 16B, stream import A->B", "bench", "a", "b", pubsub, "sub_msgs_per_sec"),
        ("req/reply 16B, one account", "svc", "a", "a", request, "p50_us"),
        ("req/reply 16B, service import B->A", "svc", "b", "a", request, "p50_us"),
    ]
    results = {}
    for label, binary in (("rnats", RNATS_SERVER), ("nats-server", nats)):
        port = free_port()
        c = os.path.join(work, f"{label}.conf")
        with open(c, "w") as f:
            f.write(f"listen: 127.0.0.1:{port}\n" + CONFIG)
        proc = start(binary, c, port)
        try:
            for name, subject, pu, su, extra, key in scenarios:
                vals = []
                for _ in range(args.runs):
                    r = bench(port, subject, pu, su, extra)
                    vals.append(r[key])
                results[(label, name)] = statistics.median(vals)
        finally:
            proc.terminate()
            proc.wait()
    for name, _, _, _, _, key in scenarios:
        ours, theirs = results[("rnats", name)], results[("nats-server", name)]
        if key == "p50_us":
            print(f"{name:38} rnats p50 {ours:8.1f} us   nats-server p50 {theirs:8.1f} us   "
                  f"ratio {theirs / ours:.2f}x")
        else:
            print(f"{name:38} rnats {ours:12,.0f} msg/s   nats-server {theirs:12,.0f} msg/s   "
                  f"ratio {ours / theirs:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
