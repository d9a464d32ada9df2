"""The DNS node: asyncio UDP and TCP endpoints around the sans-IO ``Responder``.

One process, one thread; replies come from precomputed templates, so the loop only
moves datagrams. Faults are reloaded from ``<state_dir>/faults.json`` on SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket

from mxlab.dns.answer import Responder
from mxlab.dns.faults import Faults, mark_applied, read_request
from mxlab.nodes.config import DnsNodeConfig
from mxlab.nodes.events import emit

UDP_BATCH = 64  # datagrams per readiness event before other tasks get a turn
UDP_BUFFER = 4 << 20  # receive buffer: absorbs bursts instead of dropping them
TCP_IDLE = 10.0  # RFC 7766 §6.2.3: close idle connections after some seconds


class _Node:
    """The responder in force; replaced whole when the faults change."""

    def __init__(self, config: DnsNodeConfig) -> None:
        self.config = config
        self._lock = asyncio.Lock()
        self._asked = self._done = 0  # SIGHUPs received, and covered by a finished reload
        try:
            faults, generation = read_request(config.state_dir)
        except ValueError as exc:
            emit(config.node, "faults_error", error=str(exc))
            faults, generation = Faults(), None
        self.responder = Responder(config.zones, faults)
        if faults != Faults():
            emit(config.node, "faults_loaded", **_summary(faults))
        if generation is not None:
            mark_applied(config.state_dir, generation)

    async def reload(self) -> None:
        """SIGHUP: rebuild the answers off the loop; keep the old ones if the file is bad.

        Reloads run one at a time, each reading the file when its turn comes: two
        overlapping rebuilds could otherwise finish out of order and leave the older
        file's faults in force (a restored name stuck at SERVFAIL). A SIGHUP that
        arrives while an earlier reload waits is covered by that reload."""
        self._asked += 1
        mine = self._asked
        async with self._lock:
            if self._done >= mine:
                return  # a reload that started after this signal has read the file
            covers = self._asked
            try:
                faults, generation = await asyncio.to_thread(read_request, self.config.state_dir)
                responder = await asyncio.to_thread(Responder, self.config.zones, faults)
            except ValueError as exc:
                emit(self.config.node, "faults_error", error=str(exc))
                return
            finally:
                self._done = covers
            self.responder = responder
            emit(self.config.node, "faults_loaded", **_summary(faults))
            try:
                await asyncio.to_thread(mark_applied, self.config.state_dir, generation)
            except OSError as exc:  # answers changed; only the acknowledgement is lost
                emit(self.config.node, "faults_error", error=str(exc))


def _summary(faults: Faults) -> dict[str, list[str]]:
    return {k: sorted(getattr(faults, k)) for k in ("servfail", "timeout", "drop_mx")}


class _UdpEndpoint:
    """UDP served from the loop's selector. asyncio's datagram transport reads one
    datagram per loop iteration; draining a batch per readiness event measured ~40%
    more queries/s (bench/dns_server.py). Non-blocking both ways: a full send buffer drops
    the reply, as UDP may, and the loop never waits."""

    def __init__(self, node: _Node, address: str, port: int) -> None:
        self.node = node
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
        self.sock.bind((address, port))
        self.sock.setblocking(False)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._read_ready)

    def _read_ready(self) -> None:
        recvfrom, sendto = self.sock.recvfrom, self.sock.sendto
        for _ in range(UDP_BATCH):
            try:
                query, addr = recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                continue  # e.g. an ICMP error queued on the socket
            for reply in self.node.responder.respond(query):
                with contextlib.suppress(OSError):  # buffer full: UDP may drop, we never wait
                    sendto(reply, addr)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


async def _tcp_client(
    node: _Node, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """RFC 1035 §4.2.2 / RFC 7766 §6.2.1: many length-prefixed queries per connection,
    answered in order, while the client keeps sending."""
    try:
        while True:
            length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TCP_IDLE))
            query = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE)
            for reply in node.responder.respond(query, tcp=True):
                writer.write(len(reply).to_bytes(2, "big") + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(config: DnsNodeConfig) -> None:
    """Bind UDP and TCP on (address, port), say ready, answer until cancelled."""
    loop = asyncio.get_running_loop()
    try:
        node = _Node(config)
    except ValueError as exc:  # a zone that does not load: one line, not a traceback
        emit(config.node, "zone_error", error=str(exc))
        raise SystemExit(2) from None
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = loop.create_task(node.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    async with contextlib.AsyncExitStack() as stack:
        udp = _UdpEndpoint(node, config.address, config.port)
        stack.callback(udp.close)
        server = await asyncio.start_server(
            lambda r, w: _tcp_client(node, r, w), config.address, config.port
        )
        stack.push_async_callback(server.wait_closed)
        stack.callback(server.close)
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        emit(
            config.node,
            "ready",
            address=config.address,
            port=config.port,
            zones=[z.origin for z in config.zones],
        )
        await asyncio.Event().wait()
