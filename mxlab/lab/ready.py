"""Readiness probes that speak each node's protocol, not "the process is running"."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import dns.exception
import dns.message
import dns.query
import dns.rcode

from mxlab.lab.plan import NodePlan

# service -> the greeting a ready server sends first
_GREETINGS = {"smtp": b"220", "submission": b"220", "lmtp": b"220", "imap": b"* OK", "pop3": b"+OK"}
# implicit-TLS ports (submissions, imaps, pop3s) are not probed: each node binds them
# before its plaintext ports, so a node whose plaintext ports greet has them too


def _greets(host: str, port: int, prefix: bytes, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(512).startswith(prefix)
    except OSError:
        return False


def answers_soa(host: str, port: int, zone: str, timeout: float) -> bool:
    query = dns.message.make_query(zone, "SOA")
    try:
        reply = dns.query.udp(query, host, port=port, timeout=timeout)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def is_ready(node: NodePlan, timeout: float = 1.0) -> bool:
    """True when every service of the node answers its protocol's greeting."""
    for service, port in node.ports.items():
        if service == "dns":
            zone = node.config.zones[0].origin  # type: ignore[union-attr]
            if not answers_soa(node.address, port, zone, timeout):
                return False
        elif service in _GREETINGS and not _greets(
            node.address, port, _GREETINGS[service], timeout
        ):
            return False
    return True


PROBE_TIMEOUT = 0.25  # short: a probe sent before the node's address exists is just lost
PROBE_PAUSE_MAX = 0.2  # between probes of a node that is not ready yet
ALIVE_EVERY = 0.5  # seconds between asking whether a node that is not ready yet died


def wait_ready(
    nodes: list[NodePlan], deadline: float, alive: Callable[[NodePlan], str | None]
) -> None:
    """Poll every node, all at once, until all are ready or the deadline passes.

    ``alive(node)`` returns None while the node's process lives, else why it died,
    so a crashed node fails at once instead of at the deadline.
    """
    from mxlab.lab import kinds  # the kinds build on this module
    from mxlab.lab.errors import LabError

    def one(node: NodePlan) -> None:
        kind = kinds.get(node.kind)
        pause, asked = 0.02, 0.0
        while not failed.is_set() and not kind.is_ready(node, PROBE_TIMEOUT):
            if time.monotonic() - asked > ALIVE_EVERY:  # docker: an engine call each time
                asked = time.monotonic()
                died = alive(node)
                if died is not None:
                    raise LabError(f"node {node.name} exited while starting: {died}")
            if time.monotonic() > deadline:
                raise LabError(f"node {node.name} not ready in time (see mxlab logs {node.name})")
            time.sleep(pause)
            pause = min(pause * 1.5, PROBE_PAUSE_MAX)  # 200 nodes polling: CPU for them

    failed = threading.Event()  # one node failed: the others stop polling
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        futures = [pool.submit(one, n) for n in nodes]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed.set()
        for future in done:
            future.result()  # raises the failure, if one ended the wait
