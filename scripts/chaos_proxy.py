"""Userspace TCP proxies in front of every node's route port, for
scripts/chaos to cut and heal route links.

Every node's configured routes and its `cluster.advertise` point at the
proxies, never at a real route port. The advertise matters: a node passes
its peers' advertised route URLs on to the others (gossip), and a node that
learns a URL it has not configured dials it. With the advertised URL equal
to the configured proxy URL, nats-server sees the gossiped route as one it
already has, and there is no path around the proxies.

One proxy per node (the target) serves every dialler, so the proxy has to
find out who is dialling: a route's first line is CONNECT, whose "name" is
the dialling server's id; ids are mapped to node names through /varz
(refreshed when an unknown id shows up, since a restarted node has a new
id). Link state is per unordered pair of nodes:

  up         connections are relayed
  refuse     existing connections are dropped, new ones closed as soon as
             the dialler is known (it sees the route close and retries)
  blackhole  existing connections are dropped, new ones are accepted and
             held silently (nothing relayed) until the link heals or
             `hold` seconds pass, like a dial into a partition

Plain routes only: with route TLS the CONNECT is encrypted.
"""

import asyncio
import json

READ_SIZE = 64 * 1024
# How long to wait for the dialler's CONNECT before relaying anyway (a
# server that waits for the accepting side's INFO before it sends CONNECT).
CONNECT_WAIT = 0.5


class Relay:
    """One proxied connection."""

    def __init__(self, target, down_writer):
        self.target = target
        self.dialer = None
        self.down = down_writer
        self.up = None
        self.closed = False

    def link(self):
        return frozenset((self.dialer, self.target)) if self.dialer else None

    def close(self):
        if self.closed:
            return
        self.closed = True
        for w in (self.down, self.up):
            if w is not None:
                try:
                    w.close()
                except (OSError, RuntimeError):
                    pass


class RouteProxies:
    def __init__(self, targets, identify, log=print, hold=5.0):
        """`targets`: {node: (listen_port, real_route_port)}. `identify`: an
        async function from server id to node name (or None)."""
        self.targets = targets
        self.identify = identify
        self.log = log
        self.hold = hold
        self.links = {}  # frozenset({x, y}) -> "refuse" | "blackhole"
        self.relays = set()
        self.held = set()
        self.servers = []
        self.stats = {"relayed": 0, "refused": 0, "held": 0, "dropped": 0, "unidentified": 0}

    async def start(self):
        for node, (port, _) in self.targets.items():
            srv = await asyncio.start_server(
                lambda r, w, node=node: self._accept(node, r, w), "127.0.0.1", port)
            self.servers.append(srv)

    async def close(self):
        for srv in self.servers:
            srv.close()
        for r in list(self.relays) + list(self.held):
            r.close()
        for srv in self.servers:
            await srv.wait_closed()

    # -- control --------------------------------------------------------------

    def state(self, a, b):
        return self.links.get(frozenset((a, b)), "up")

    def cut(self, a, b, mode="refuse"):
        """Cut the link between nodes a and b in both directions."""
        assert mode in ("refuse", "blackhole")
        link = frozenset((a, b))
        self.links[link] = mode
        n = 0
        for r in list(self.relays):
            if r.link() == link:
                r.close()
                n += 1
        self.stats["dropped"] += n
        return n

    def heal(self, a, b):
        link = frozenset((a, b))
        self.links.pop(link, None)
        for r in list(self.held):
            if r.link() == link:
                r.close()

    def heal_all(self):
        for link in list(self.links):
            a, b = tuple(link)
            self.heal(a, b)

    def _allowed(self, dialer, target):
        if dialer == target:
            return "up"
        if dialer is None:
            # Unknown dialler: only let it through when nothing about this
            # target is cut, so a cut can never be bypassed.
            cut = any(target in link for link in self.links)
            return "refuse" if cut else "up"
        return self.state(dialer, target)

    # -- connections ----------------------------------------------------------

    async def _who(self, line):
        if not line.startswith(b"CONNECT "):
            return None
        try:
            info = json.loads(line[8:].decode())
            return await self.identify(info.get("name", ""))
        except (ValueError, UnicodeDecodeError, AttributeError):
            return None

    async def _accept(self, target, reader, writer):
        relay = Relay(target, writer)
        try:
            first = b""
            try:
                first = await asyncio.wait_for(reader.readline(), CONNECT_WAIT)
            except asyncio.TimeoutError:
                pass
            except (ConnectionError, asyncio.LimitOverrunError, ValueError):
                relay.close()
                return
            if first == b"" and reader.at_eof():
                relay.close()
                return
            if first:
                relay.dialer = await self._who(first)
                if relay.dialer is None:
                    self.stats["unidentified"] += 1
                verdict = self._allowed(relay.dialer, target)
                if verdict == "refuse":
                    self.stats["refused"] += 1
                    relay.close()
                    return
                if verdict == "blackhole":
                    await self._hold(relay, reader)
                    return
            _, real_port = self.targets[target]
            try:
                up_reader, relay.up = await asyncio.open_connection("127.0.0.1", real_port)
            except OSError:
                relay.close()  # target down: the dialler sees what it would see
                return
            self.relays.add(relay)
            self.stats["relayed"] += 1
            if first:
                relay.up.write(first)
            await asyncio.gather(self._pump(reader, relay.up, relay, identify=not first),
                                 self._pump(up_reader, relay.down, relay))
        finally:
            relay.close()
            self.relays.discard(relay)
            self.held.discard(relay)

    async def _hold(self, relay, reader):
        self.held.add(relay)
        self.stats["held"] += 1

        async def swallow():
            while not relay.closed and await reader.read(READ_SIZE):
                pass
        try:
            await asyncio.wait_for(swallow(), self.hold)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass

    async def _pump(self, src, dst, relay, identify=False):
        try:
            if identify:
                # The CONNECT came late (after our wait); judge it now.
                line = await src.readline()
                relay.dialer = await self._who(line)
                if self._allowed(relay.dialer, relay.target) != "up":
                    self.stats["refused"] += 1
                    return
                dst.write(line)
            while not relay.closed:
                data = await src.read(READ_SIZE)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            relay.close()
