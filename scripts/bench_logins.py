#!/usr/bin/env python3
"""The cost of a login: bcrypt password vs JWT (nonce signature), rnats vs
nats-server side by side, same configurations.

For each server and each kind of login, N sequential logins on fresh TCP
connections: connect, read INFO, send CONNECT (signing the nonce for a
JWT user) + PING, wait for PONG. Prints p50/p99 per login and the ratio.

Needs: target/release/rnats and rnats-server (cargo build --release),
nats-server on PATH, and the Python `nkeys` package (pip install nkeys).

    python3 scripts/bench_logins.py [--logins 200]
"""

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_security import free_port, start  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNATS = os.path.join(ROOT, "target", "release", "rnats")
RNATS_SERVER = os.path.join(ROOT, "target", "release", "rnats-server")


def login(port, make_connect):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    info = json.loads(f.readline()[5:])
    s.sendall(b"CONNECT " + make_connect(info).encode() + b"\r\nPING\r\n")
    line = f.readline()
    if line.startswith(b"+OK"):
        line = f.readline()
    s.close()
    if not line.startswith(b"PONG"):
        raise RuntimeError(f"login refused: {line!r}")


def measure(port, make_connect, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        login(port, make_connect)
        times.append(time.perf_counter() - t)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logins", type=int, default=200)
    args = ap.parse_args()
    import nkeys

    nats = shutil.which("nats-server")
    if not nats:
        sys.exit("nats-server not on PATH")
    work = tempfile.mkdtemp(prefix="bench-logins-")
    store = os.path.join(work, "st")
    run = lambda *a: subprocess.run([RNATS, "jwt", "--store", store, *a], check=True,
                                    capture_output=True, text=True).stdout
    run("init", "--operator", "OP")
    run("add-account", "APP")
    run("add-user", "APP", "alice")
    resolver = run("resolver-config", "--type", "memory")
    creds = open(os.path.join(store, "accounts", "APP", "users", "alice.creds")).read()
    lines = [l.strip() for l in creds.splitlines()]
    user_jwt = next(l for l in lines if l.startswith("eyJ"))
    seed = next(l for l in lines if l.startswith("SU"))
    kp = nkeys.from_seed(seed.encode())

    def jwt_connect(info):
        sig = kp.sign(info["nonce"].encode())
        sig = base64.urlsafe_b64encode(sig).decode().rstrip("=")
        return json.dumps({"verbose": False, "jwt": user_jwt, "sig": sig})

    out = subprocess.run([RNATS, "passwd", "--cost", "11"], check=True,
                         capture_output=True, text=True).stdout
    password = out.split("pass: ")[1].split()[0]
    bcrypt_hash = out.split("bcrypt hash: ")[1].split()[0]

    def bcrypt_connect(_info):
        return json.dumps({"verbose": False, "user": "u", "pass": password})

    kinds = [
        ("bcrypt cost 11", f'authorization {{ users: [{{user: u, password: "{bcrypt_hash}"}}] }}\n',
         bcrypt_connect),
        ("JWT (nonce signature)", resolver, jwt_connect),
    ]
    print(f"{args.logins} sequential logins each; p50 / p99 per login")
    for name, conf_text, make in kinds:
        row = []
        for label, binary in (("rnats", RNATS_SERVER), ("nats-server", nats)):
            port = free_port()
            conf = os.path.join(work, f"{label}.conf")
            with open(conf, "w") as f:
                f.write(f"listen: 127.0.0.1:{port}\n{conf_text}")
            proc = start(binary, conf, port)
            try:
                measure(port, make, 5)
                p50, p99 = measure(port, make, args.logins)
            finally:
                proc.terminate()
                proc.wait()
            row.append((label, p50, p99))
        (a, ap50, ap99), (b, bp50, bp99) = row
        print(f"{name:24} {a} {ap50*1e3:7.2f} / {ap99*1e3:7.2f} ms   "
              f"{b} {bp50*1e3:7.2f} / {bp99*1e3:7.2f} ms   "
              f"p50 ratio (nats/rnats) {bp50/ap50:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
