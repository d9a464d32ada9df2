"""Helpers for the relay tests (no tests here): a dnslib DNS stub, aiosmtpd SMTP and
LMTP sinks, and the relay started as a real node process. Loopback 127.30.0.0/16 only."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import smtplib
import subprocess
import sys
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from pydantic import TypeAdapter

from mxlab.lab.pki import ensure_ca, issue
from mxlab.nodes.config import Endpoint, RelayNodeConfig, TlsFiles
from tests.conftest import wait_for

_SUBNET = random.randrange(1, 250)  # per session: reruns do not meet old sockets
_HOSTS = itertools.count(2)


def new_address() -> str:
    """A fresh loopback address of this test session inside 127.30.0.0/16."""
    return f"127.30.{_SUBNET}.{next(_HOSTS)}"


class _ZoneResolver(BaseResolver):
    """Authoritative enough for the relay: NODATA for a known name, else NXDOMAIN."""

    def __init__(self, zone: str) -> None:
        self.records = RR.fromZone(zone)

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        qname, qtype = request.q.qname, request.q.qtype
        known = [rr for rr in self.records if rr.rname == qname]
        reply.add_answer(*[rr for rr in known if rr.rtype == qtype or qtype == QTYPE.ANY])
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class DnsStub:
    """UDP DNS server answering from a zone text, in a background thread."""

    def __init__(self, zone: str, port: int = 5353) -> None:
        self.endpoint = Endpoint(host=new_address(), port=port)
        logger = DNSLogger(
            "-request,-reply,-truncated,-error,-recv,-send,-data", logf=lambda _: None
        )
        self.server = DNSServer(
            _ZoneResolver(zone), address=self.endpoint.host, port=self.endpoint.port, logger=logger
        )
        self.server.start_thread()

    def stop(self) -> None:
        self.server.stop()
        self.server.server.server_close()


@dataclass
class Received:
    sender: str
    rcpts: list[str]
    content: bytes


@dataclass
class SinkHandler:
    """Records what it accepts; ``refuse`` maps a recipient to its RCPT reply."""

    refuse: dict[str, str] = field(default_factory=dict)
    data_reply: str = "250 2.0.0 Ok"
    messages: list[Received] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)  # client of each message

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope) -> str:
        self.peers.append(session.peer)
        if self.data_reply.startswith("2"):
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return self.data_reply


class _LmtpController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


class Sink:
    """An SMTP (or LMTP) server standing in for the next hop or the store."""

    def __init__(
        self,
        address: str | None = None,
        port: int = 2525,
        lmtp: bool = False,
        smtputf8: bool = False,
    ) -> None:
        self.handler = SinkHandler()
        cls = _LmtpController if lmtp else Controller
        self.endpoint = Endpoint(host=address or new_address(), port=port)
        self.controller = cls(
            self.handler, hostname=self.endpoint.host, port=port, enable_SMTPUTF8=smtputf8
        )

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller.loop.is_running():  # stopping twice is fine
            self.controller.stop()


def make_tls(directory: Path, fqdn: str, address: str) -> TlsFiles:
    """A node certificate from a lab CA, issued the way the planner issues them."""
    ca = ensure_ca(directory / "ca", "relay-tests")
    cert, key = directory / f"{fqdn}.pem", directory / f"{fqdn}.key"
    issue(ca, fqdn, address, cert, key)
    return TlsFiles(cert=str(cert), key=str(key), ca=str(directory / "ca" / "ca.pem"))


def relay_config(tmp_path: Path, **overrides: Any) -> RelayNodeConfig:
    """A relay config for tests; the defaults can be overridden field by field."""
    fields: dict[str, Any] = {
        "lab": "t",
        "node": "relay",
        "fqdn": "mx.alpha.test",
        "address": new_address(),
        "state_dir": str(tmp_path / "relay-state"),
        "smtp_port": 2525,
        "submission_port": 2587,
        "remote_smtp_port": 2525,
        "dns": Endpoint(host="127.30.0.1", port=5353),
        "queue": {"retry_initial": 0.2, "retry_max": 0.5, "lifetime": 30.0},
        "allow_plaintext_auth": True,  # most tests AUTH without TLS; the node's default is off
    }
    fields.update(overrides)
    return TypeAdapter(RelayNodeConfig).validate_python(fields)  # nodes read plain dataclasses


def relay_chain(
    tmp_path: Path,
    last_hop: Endpoint,
    first: dict[str, Any] | None = None,
    edge: dict[str, Any] | None = None,
) -> tuple[RelayNodeConfig, RelayNodeConfig]:
    """Two relays, first -> edge -> ``last_hop``, as a smarthost chain: the edge
    trusts the first; each has its own directory, and fields can be overridden."""
    edge = {"address": new_address(), **(edge or {})}
    first_config = relay_config(
        tmp_path / "first",
        **{"node": "first", "next_hop": Endpoint(host=edge["address"], port=2525), **(first or {})},
    )
    edge_config = relay_config(
        tmp_path / "edge",
        **{
            "node": "edge",
            "fqdn": "edge.alpha.test",
            "trusted_clients": [first_config.address],
            "next_hop": last_hop,
            **edge,
        },
    )
    for config in (first_config, edge_config):
        Path(config.state_dir).parent.mkdir(parents=True, exist_ok=True)
    return first_config, edge_config


class RelayProcess:
    """``python -m mxlab.nodes relay --config X.json`` as a child process."""

    def __init__(self, config: RelayNodeConfig, tmp_path: Path | None = None) -> None:
        directory = tmp_path or Path(config.state_dir).parent
        self.config = config
        self.config_path = directory / f"{config.node}.json"
        self.config_path.write_text(config.model_dump_json())
        self.log_path = directory / f"{config.node}.events"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RelayProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mxlab.nodes", "relay", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self._greets, what="the relay's SMTP greeting")
        return self

    def _greets(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"relay exited: {self.log_path.read_text()}")
        try:
            with smtplib.SMTP(self.config.address, self.config.smtp_port, timeout=2):
                return True
        except OSError:
            return False

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in events if name is None or e["event"] == name]

    def wait_event(self, name: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            hits = [e for e in self.events(name) if all(e.get(k) == v for k, v in match.items())]
            return hits[0] if hits else None

        return wait_for(found, timeout, f"event {name} {match} in {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def smtp(self, submission: bool = False) -> smtplib.SMTP:
        port = self.config.submission_port if submission else self.config.smtp_port
        client = smtplib.SMTP(self.config.address, port, timeout=10)
        client.ehlo("client.test")
        return client


def message(
    subject: str = "test", *, sender: str = "a@alpha.test", rcpt: str = "b@beta.test"
) -> bytes:
    """A complete RFC 5322 message (with Date, so no MTA on the way adds one)."""
    mid = f"<{time.time_ns()}.{random.randrange(10**6)}@client.test>"
    return (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n"
        f"Date: {formatdate()}\r\n\r\nbody of {subject}\r\n"
    ).encode()
