"""Sequence-numbered pub/sub load and delivery accounting for scripts/chaos.

On every node: a publisher, a plain subscriber and a member of one queue
group, each a nats-py client that knows all the nodes' URLs (its own node
first), reconnects forever and buffers publishes while reconnecting. Plus
one probe client pinned to each node, which checks that a message gets
from every node to every other node and to every plain subscriber.

Publisher p sends chaos.load.<p> with payload "<seq>", seq = 1, 2, ...
Per subscriber (and for the queue group as a whole) we count deliveries of
every (p, seq). Marks are snapshots of every publisher's last seq, so a
window between two marks is exactly the messages handed to the client
library in between.

Core NATS is at most once: a message published while a route is down may
be lost for good, and that is not a fault. What must hold is that once
the cluster has recovered, every plain subscriber gets every message once
and the queue group gets every message once in total.
"""

import asyncio
import time

import nats
from nats.errors import Error as NatsError

LOAD = "chaos.load"
PROBE = "chaos.probe"
QUEUE = "chaos-q"


class Counts:
    """Deliveries per (publisher, seq), saturating at 255."""

    def __init__(self):
        self.by_pub = {}

    def add(self, pub, seq):
        arr = self.by_pub.get(pub)
        if arr is None:
            arr = self.by_pub[pub] = bytearray()
        if seq >= len(arr):
            arr.extend(bytes(max(seq + 1 - len(arr), 4096)))
        if arr[seq] < 255:
            arr[seq] += 1

    def tally(self, lo, hi):
        """(expected, lost, duplicated) for seqs in (lo[p], hi[p]] of each p."""
        expected = lost = dup = 0
        for pub, top in hi.items():
            arr = self.by_pub.get(pub, b"")
            for seq in range(lo.get(pub, 0) + 1, top + 1):
                c = arr[seq] if seq < len(arr) else 0
                expected += 1
                if c == 0:
                    lost += 1
                elif c > 1:
                    dup += c - 1
        return expected, lost, dup

    def total(self):
        return sum(sum(a) for a in self.by_pub.values())


class Load:
    def __init__(self, nodes, rate):
        """`nodes`: clusterlib.Node list; `rate`: messages/s per publisher."""
        self.nodes = nodes
        self.rate = rate
        self.seq = {n.name: 0 for n in nodes}
        self.plain = {n.name: Counts() for n in nodes}
        self.queue = Counts()
        self.queue_members = {n.name: 0 for n in nodes}
        self.clients = []
        self.roles = {}  # (role, node name) -> client; roles: pub, sub, queue
        self.probe_clients = {}
        self.probe_seen = {}  # (receiver, round) -> set of origin nodes
        self.reconnects = 0
        self.disconnects = 0
        self.publish_errors = 0
        self.errors = []
        self.stopping = False
        self.tasks = []

    # -- clients ----------------------------------------------------------------

    async def _connect(self, name, servers, pinned=False):
        async def on_disc():
            self.disconnects += 1

        async def on_reconn():
            self.reconnects += 1

        async def on_err(e):
            if not self.stopping and len(self.errors) < 50:
                self.errors.append(f"{name}: {type(e).__name__}: {e}")

        nc = await nats.connect(
            servers=servers, name=name, dont_randomize=True, allow_reconnect=True,
            max_reconnect_attempts=-1, reconnect_time_wait=0.1 if pinned else 0.25,
            connect_timeout=2, pending_size=64 * 1024 * 1024, ping_interval=5,
            max_outstanding_pings=3, disconnected_cb=on_disc, reconnected_cb=on_reconn,
            error_cb=on_err)
        self.clients.append(nc)
        return nc

    def _urls(self, first):
        return [first.client_url] + [n.client_url for n in self.nodes if n is not first]

    async def _make(self, role, node):
        """A load client of `role` (pub, sub, queue) homed on `node`."""
        name = node.name
        nc = await self._connect(f"chaos-{role}-{name}", self._urls(node))
        if role == "sub":
            async def on_plain(msg):
                if msg.subject.startswith(PROBE + "."):
                    self._probe_seen(f"sub-{name}", msg.subject)
                else:
                    self.plain[name].add(msg.subject[len(LOAD) + 1:], int(msg.data))
            await nc.subscribe("chaos.>", cb=on_plain)
        elif role == "queue":
            async def on_queue(msg):
                self.queue.add(msg.subject[len(LOAD) + 1:], int(msg.data))
                self.queue_members[name] += 1
            await nc.subscribe(LOAD + ".>", queue=QUEUE, cb=on_queue)
        await nc.flush(timeout=5)
        self.roles[(role, name)] = nc
        return nc

    async def start(self):
        for node in self.nodes:
            await self._make("sub", node)
            await self._make("queue", node)
            probe = await self._connect(f"chaos-probe-{node.name}", [node.client_url], pinned=True)

            async def on_probe(msg, name=node.name):
                self._probe_seen(f"probe-{name}", msg.subject)
            await probe.subscribe(PROBE + ".>", cb=on_probe)
            await probe.flush(timeout=5)
            self.probe_clients[node.name] = probe
        for node in self.nodes:
            await self._make("pub", node)
            self.tasks.append(asyncio.create_task(self._publish(node.name)))

    def away(self):
        """Load clients connected to a node other than their own."""
        out = []
        for (role, name), nc in self.roles.items():
            url = nc.connected_url
            home = next(n for n in self.nodes if n.name == name)
            if url is None or url.port != home.client_port:
                out.append((role, name))
        return out

    async def rehome(self):
        """Move every load client that failed over to another node back to
        its own node (a new connection first, then the old one closes), so
        each fault again hits clients on the faulty node. Returns the
        clients moved."""
        moved = self.away()
        for role, name in moved:
            old = self.roles[(role, name)]
            await self._make(role, next(n for n in self.nodes if n.name == name))
            try:
                await old.flush(timeout=1)
            except (NatsError, OSError, asyncio.TimeoutError):
                pass
            try:
                await old.close()
            except (NatsError, OSError, asyncio.TimeoutError):
                pass
            if old in self.clients:
                self.clients.remove(old)
        return moved

    async def _publish(self, name):
        subject = f"{LOAD}.{name}"
        t0 = time.monotonic()
        sent_at_start = self.seq[name]
        while not self.stopping:
            due = sent_at_start + int((time.monotonic() - t0) * self.rate)
            # After a stall, catch up in bounded bursts rather than at once.
            burst = min(due - self.seq[name], max(1, self.rate // 10))
            for _ in range(burst):
                nc = self.roles[("pub", name)]
                try:
                    await nc.publish(subject, str(self.seq[name] + 1).encode())
                except (NatsError, OSError) as e:
                    self.publish_errors += 1
                    if len(self.errors) < 50:
                        self.errors.append(f"publish {name}: {type(e).__name__}: {e}")
                    break
                self.seq[name] += 1
            await asyncio.sleep(0.01)

    def mark(self):
        return dict(self.seq)

    async def flush_publishers(self):
        """A round trip on every connected publisher: the server has read
        everything published before this call."""
        for (role, _), nc in list(self.roles.items()):
            if role == "pub" and nc.is_connected:
                try:
                    await nc.flush(timeout=1)
                except (NatsError, OSError, asyncio.TimeoutError):
                    pass

    async def stop(self, settle_timeout=10.0):
        """Stop publishing, flush, and wait until deliveries stop arriving."""
        self.stopping = True
        for t in self.tasks:
            await t
        for nc in self.clients:
            try:
                await nc.flush(timeout=5)
            except (NatsError, OSError, asyncio.TimeoutError):
                pass
        deadline = time.monotonic() + settle_timeout
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now = sum(c.total() for c in self.plain.values()) + self.queue.total()
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since > 1.0:
                break
            await asyncio.sleep(0.1)
        for nc in self.clients:
            try:
                await nc.close()
            except (NatsError, OSError, asyncio.TimeoutError):
                pass

    # -- probes -----------------------------------------------------------------

    def _probe_seen(self, receiver, subject):
        # chaos.probe.<round>.<origin>
        parts = subject.split(".")
        if len(parts) == 4:
            self.probe_seen.setdefault((receiver, parts[2]), set()).add(parts[3])

    def receivers(self):
        return [f"probe-{n.name}" for n in self.nodes] + [f"sub-{n.name}" for n in self.nodes]

    async def probe_round(self, rnd, wait=0.4):
        """Publish probe `rnd` from every node; True when, within `wait`
        seconds, every probe client and every plain subscriber has it from
        every node."""
        origins = {n.name for n in self.nodes}
        for name, nc in self.probe_clients.items():
            if not nc.is_connected:
                return False
            try:
                await nc.publish(f"{PROBE}.{rnd}.{name}", b"")
                await nc.flush(timeout=1)
            except (NatsError, OSError, asyncio.TimeoutError):
                return False
        deadline = time.monotonic() + wait
        while True:
            if all(self.probe_seen.get((r, str(rnd)), set()) >= origins for r in self.receivers()):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)

    def probe_missing(self, rnd):
        origins = {n.name for n in self.nodes}
        out = []
        for r in self.receivers():
            miss = origins - self.probe_seen.get((r, str(rnd)), set())
            if miss:
                out.append(f"{r} <- {','.join(sorted(miss))}")
        return out

    # -- accounting -------------------------------------------------------------

    def tally(self, lo, hi):
        """Delivery figures for the messages published between marks lo and hi."""
        published = sum(hi[p] - lo.get(p, 0) for p in hi)
        plain = [self.plain[n.name].tally(lo, hi) for n in self.nodes]
        q = self.queue.tally(lo, hi)
        return {
            "published": published,
            "plain_expected": sum(e for e, _, _ in plain),
            "plain_lost": sum(l for _, l, _ in plain),
            "plain_dup": sum(d for _, _, d in plain),
            "plain_per_sub": {n.name: plain[i] for i, n in enumerate(self.nodes)},
            "queue_lost": q[1],
            "queue_dup": q[2],
        }
