"""The DNS node: a UDP thread and asyncio TCP around the sans-IO ``Responder``.

Replies come from wire templates (each packed on first sight) and a cache of whole
replies, so serving only moves datagrams. On SIGHUP the node rereads its config (zones
changed by `mxlab dns add` or a live change, as ``nsd-control reload`` does) and
``<state_dir>/faults.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable

from mxlab.dns import batch_io
from mxlab.dns.answer import Responder
from mxlab.dns.faults import Faults, mark_applied, read_request
from mxlab.nodes.config import DnsNodeConfig
from mxlab.nodes.events import emit
from mxlab.nodes.host_signals import handle
from mxlab.nodes.listen import quiet_on_stop
from mxlab.nodes.reload import mark_applied as mark_config_applied
from mxlab.nodes.reload import read_config

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
                loaded = await asyncio.to_thread(read_config, self.config)
                config = self.config if loaded is None else loaded[0]
                faults, generation = await asyncio.to_thread(read_request, config.state_dir)
                responder = await asyncio.to_thread(Responder, config.zones, faults)
            except ValueError as exc:  # a zone or fault file that does not load: keep serving
                emit(self.config.node, "faults_error", error=str(exc))
                return
            finally:
                self._done = covers
            self.config, self.responder = config, responder
            if loaded is not None:
                await asyncio.to_thread(mark_config_applied, config, loaded[1])
            emit(self.config.node, "faults_loaded", **_summary(faults))
            try:
                await asyncio.to_thread(mark_applied, self.config.state_dir, generation)
            except OSError as exc:  # answers changed; only the acknowledgement is lost
                emit(self.config.node, "faults_error", error=str(exc))


def _summary(faults: Faults) -> dict[str, list[str]]:
    return {k: sorted(getattr(faults, k)) for k in ("servfail", "timeout", "drop_mx")}


class _UdpEndpoint:
    """UDP served by a thread of its own, blocked in recvmmsg: up to 64 datagrams per
    system call each way (batch_io), no selector wake-up, no event-loop callback per
    datagram. The loop's datagram transport reads one datagram per iteration; draining a
    batch per readiness event was ~40% better, this ~30% better again
    (bench/dns_server.py). Replies never wait: a full send buffer drops them, as UDP may."""

    def __init__(self, node: _Node, address: str, port: int) -> None:
        self.node = node
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
        self.sock.bind((address, port))
        self.closing = False
        self.thread = threading.Thread(target=self._serve, name="dns-udp", daemon=True)
        self.thread.start()

    def _answerer(self) -> Callable[[bytes], list[bytes]]:
        return self.node.responder.respond  # the responder in force (reloads replace it)

    def _serve(self) -> None:
        if batch_io.available():
            batch_io.Batches(self.sock).serve(self._answerer, lambda: self.closing)
            return
        while not self.closing:  # one datagram per system call
            try:
                query, addr = self.sock.recvfrom(65535)
            except OSError:
                continue  # e.g. an ICMP error queued on the socket
            for reply in self._answerer()(query):
                with contextlib.suppress(OSError):
                    self.sock.sendto(reply, socket.MSG_DONTWAIT, addr)

    def close(self) -> None:
        """shutdown() wakes the blocked receive, which returns at once from then on."""
        self.closing = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join()
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
            quiet_on_stop(lambda r, w: _tcp_client(node, r, w)), config.address, config.port
        )
        stack.push_async_callback(server.wait_closed)
        stack.callback(server.close)
        handle(signal.SIGHUP, on_hup)
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        emit(
            config.node,
            "ready",
            address=config.address,
            port=config.port,
            zones=[z.origin for z in config.zones],
        )
        await asyncio.Event().wait()
