#!/usr/bin/env python3
"""Hardening measures (rnats-server only; nothing to compare with where
nats-server has no such mechanism, and nats-server where it does).

1. Hang-up flood: 1,000 clients send a bcrypt CONNECT and hang up at once.
   How long until the server's pending credential checks are back to 0
   (/varz auth_limits.pending_checks), against the auth timeout, and how
   many bcrypt verifications ran for clients that were gone.
2. Revocation after SIGHUP: N connections of N plain-password users and B
   connections of one bcrypt (cost 8) user; the config is rewritten so all
   of them are revoked, SIGHUP, and the time until the last connection is
   closed. Run for rnats-server and nats-server.
3. Request/reply p99 beside a flood of 1 MiB messages (4 publishers, 20
   subscribers), rnats-server and nats-server.

Usage: scripts/bench_hardening.py [--conns N] [--bcrypt-conns B]
Needs target/release/{rnats,rnats-server}, nats-server on PATH (parts 2, 3
skip it otherwise), an open-file limit above 2N+100.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from bench_security import free_port, start  # same folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNATS = os.path.join(ROOT, "target", "release", "rnats")
RNATS_SERVER = os.path.join(ROOT, "target", "release", "rnats-server")


def new_password(cost):
    """A fresh (password, bcrypt hash) pair from `rnats passwd`."""
    out = subprocess.run([RNATS, "passwd", "--cost", str(cost)], capture_output=True, text=True, check=True)
    fields = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())
    return fields["pass"], fields["bcrypt hash"]


def varz(http_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/varz", timeout=5) as r:
        return json.loads(r.read())


async def hang_up(port, user, password):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        await asyncio.wait_for(r.readline(), 10)
        w.write(b'CONNECT {"verbose":false,"user":"%s","pass":"%s"}\r\nPING\r\n' % (user, password))
        await w.drain()
        w.close()
    except (OSError, asyncio.TimeoutError):
        pass


def hang_up_flood(tmp):
    port, http = free_port(), free_port()
    conf = os.path.join(tmp, "hang.conf")
    with open(conf, "w") as f:
        f.write(
            f'listen: "127.0.0.1:{port}"\nhttp: "127.0.0.1:{http}"\n'
            f'authorization {{ user: u, password: "{new_password(11)[1]}", timeout: 2 }}\n'
        )
    proc = start(RNATS_SERVER, conf, port)
    try:
        before = varz(http)
        t0 = time.time()

        async def flood():
            await asyncio.gather(*[hang_up(port, b"u", b"wrong") for _ in range(1000)])

        asyncio.run(flood())
        peak = 0
        while True:
            v = varz(http)["auth_limits"]
            peak = max(peak, v["pending_checks"])
            if v["pending_checks"] == 0 and time.time() - t0 > 0.2:
                break
            if time.time() - t0 > 30:
                break
            time.sleep(0.02)
        drained = time.time() - t0
        after = varz(http)["auth_limits"]
        print(
            f"hang-up flood: 1,000 bcrypt (cost 11) CONNECTs that hang up; pending checks "
            f"peak {peak}, back to 0 after {drained:.2f} s (auth timeout 2 s); "
            f"abandoned {after['abandoned_checks'] - before['auth_limits']['abandoned_checks']}, "
            f"failures counted {after['auth_failures'] - before['auth_limits']['auth_failures']}",
            flush=True,
        )
    finally:
        proc.terminate()
        proc.wait()


def write_users(path, port, users, http=None):
    with open(path, "w") as f:
        f.write(f'listen: "127.0.0.1:{port}"\nmax_connections: 100000\n')
        f.write("authorization { timeout: 30\n users = [\n")
        for name, pw in users:
            f.write(f'  {{ user: "{name}", password: "{pw}" }}\n')
        f.write("] }\n")


def revocation(binary, tmp, n, b, label):
    port = free_port()
    conf = os.path.join(tmp, f"rev-{label}.conf")
    shared_pw, hashed = new_password(8)
    users = [("shared", hashed)] + [(f"u{i}", f"p{i}") for i in range(n)]
    write_users(conf, port, users)
    proc = start(binary, conf, port)
    socks = []
    try:
        logins = [("shared", shared_pw)] * b + [(f"u{i}", f"p{i}") for i in range(n)]
        for i in range(0, len(logins), 200):
            batch = []
            for user, pw in logins[i : i + 200]:
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b'CONNECT {"verbose":false,"user":"%s","pass":"%s"}\r\nPING\r\n' % (user.encode(), pw.encode()))
                batch.append(s)
            for s in batch:
                s.settimeout(60)
                buf = b""
                while b"PONG" not in buf:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise SystemExit(f"{label}: login refused: {buf!r}")
                    buf += chunk
                s.setblocking(False)
            socks.extend(batch)
        # Everyone revoked: new passwords for all.
        write_users(conf, port, [("shared", new_password(8)[1])] + [(f"u{i}", f"x{i}") for i in range(n)])
        t0 = time.time()
        proc.send_signal(signal.SIGHUP)
        open_socks = set(socks)
        while open_socks and time.time() - t0 < 120:
            for s in list(open_socks):
                try:
                    data = s.recv(65536)
                    if not data:
                        open_socks.discard(s)
                except BlockingIOError:
                    pass
                except OSError:
                    open_socks.discard(s)
            time.sleep(0.01)
        took = time.time() - t0
        left = len(open_socks)
        print(
            f"revocation after SIGHUP, {label}: {n} connections of {n} plain users + {b} of "
            f"one bcrypt user: last one closed after {took:.2f} s"
            + (f" ({left} still open at 120 s)" if left else ""),
            flush=True,
        )
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait()


def rr_beside_flood(binary, tmp, label):
    port = free_port()
    # Both default to a 1 MiB max_payload.
    conf = os.path.join(tmp, f"flood-{label}.conf")
    with open(conf, "w") as f:
        f.write(f'listen: "127.0.0.1:{port}"\n')
    proc = start(binary, conf, port)
    url = f"nats://127.0.0.1:{port}"
    try:
        flood = subprocess.Popen(
            [RNATS, "-s", url, "bench", "flood", "--pub", "4", "--sub", "20", "--size", "1048576",
             "--msgs", "1500", "--no-progress"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        out = subprocess.run(
            [RNATS, "-s", url, "bench", "rr", "--request", "--pub", "1", "--sub", "1", "--msgs", "3000",
             "--size", "16", "--json", "--no-progress"],
            capture_output=True, text=True, timeout=300,
        )
        flood.kill()
        flood.wait()
        if out.returncode != 0 or not out.stdout.strip():
            err = (out.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"request/reply beside 4 x 1 MiB publishers to 20 subscribers, {label}: "
                  f"the benchmark failed: {err}", flush=True)
            return
        d = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"request/reply beside 4 x 1 MiB publishers to 20 subscribers, {label}: "
              f"p50 {d['p50_us']} us, p99 {d['p99_us']} us", flush=True)
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=10000, help="plain-password users in part 2")
    ap.add_argument("--bcrypt-conns", type=int, default=500, help="connections of the bcrypt user")
    ap.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 3")
    a = ap.parse_args()
    nats = shutil.which("nats-server")
    with tempfile.TemporaryDirectory() as tmp:
        parts = a.parts.split(",")
        if "1" in parts:
            hang_up_flood(tmp)
        if "2" in parts:
            revocation(RNATS_SERVER, tmp, a.conns, a.bcrypt_conns, "rnats-server")
            if nats:
                revocation(nats, tmp, a.conns, a.bcrypt_conns, "nats-server")
        for _ in range(3 if "3" in parts else 0):
            rr_beside_flood(RNATS_SERVER, tmp, "rnats-server")
            if nats:
                rr_beside_flood(nats, tmp, "nats-server")


if __name__ == "__main__":
    sys.exit(main())
