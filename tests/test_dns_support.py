"""Helpers for the DNS tests (no tests here): sample lab zones, the DNS node started as
a real process, dig. Loopback 127.10.0.0/16 only."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mxlab.lab.plan import LabPlan, make_plan
from mxlab.lab.topology import parse_topology
from mxlab.nodes.config import DnsNodeConfig, DnsRecord, Zone
from tests.conftest import wait_for

_SUBNET = random.randrange(1, 250)  # per session: reruns do not meet old sockets
_HOSTS = itertools.count(2)
NS = "ns.alpha.test."


def new_address() -> str:
    """A fresh loopback address of this test session inside 127.10.0.0/16."""
    return f"127.10.{_SUBNET}.{next(_HOSTS)}"


def free_port() -> int:
    return random.randrange(20000, 60000)


def _r(name: str, type_: str, rdata: str, ttl: int = 300) -> DnsRecord:
    return DnsRecord(name=name, type=type_, ttl=ttl, rdata=rdata)


def _zone(origin: str, *records: DnsRecord, soa_ttl: int = 300, minimum: int = 60) -> Zone:
    """The records after an apex SOA (negative-caching minimum as given) and NS."""
    soa = f"{NS} hostmaster.alpha.test. 7 3600 600 86400 {minimum}"
    apex = [_r(origin, "SOA", soa, ttl=soa_ttl), _r(origin, "NS", NS)]
    return Zone(origin=origin, records=[*apex, *records])


def forward_zone() -> Zone:
    """SOA, NS, A, MX at two preferences, TXT, CNAME, and empty non-terminals
    (``_tcp.alpha.test`` exists only because ``_submission._tcp.alpha.test`` does),
    a delegation with glue and a wildcard."""
    rows = """
        alpha.test.                  MX     10 mx1.alpha.test.
        alpha.test.                  MX     20 mx2.alpha.test.
        alpha.test.                  TXT    "v=spf1 mx -all"
        ns.alpha.test.               A      127.10.0.53
        mx1.alpha.test.              A      127.10.0.25
        mx2.alpha.test.              A      127.10.0.26
        mx2.alpha.test.              AAAA   fd00::26
        www.alpha.test.              CNAME  mx1.alpha.test.
        chain.alpha.test.            CNAME  www.alpha.test.
        dangling.alpha.test.         CNAME  nowhere.alpha.test.
        outside.alpha.test.          CNAME  mx.beta.test.
        ext.alpha.test.              CNAME  mail.example.com.
        _submission._tcp.alpha.test. SRV    0 1 587 mx1.alpha.test.
        sub.alpha.test.              NS     ns.sub.alpha.test.
        ns.sub.alpha.test.           A      127.10.0.54
        *.wild.alpha.test.           A      127.10.0.28
    """
    records = [_r(*line.split(None, 2)) for line in rows.strip().splitlines()]
    return _zone("alpha.test.", *records, soa_ttl=600)


def second_zone() -> Zone:
    mx = _r("beta.test.", "MX", "10 mx.beta.test.")
    return _zone("beta.test.", mx, _r("mx.beta.test.", "A", "127.10.0.27"), minimum=120)


def reverse_zone() -> Zone:
    ptrs = {"25": "mx1.alpha.test.", "26": "mx2.alpha.test.", "53": NS}
    o = "10.127.in-addr.arpa."
    return _zone(o, *[_r(f"{n}.0.{o}", "PTR", host) for n, host in ptrs.items()])


def big_zone() -> Zone:
    """A name with more TXT than fits 512 bytes but less than 1232: truncation."""
    txt = [_r("many.big.test.", "TXT", f'"record {i:02d} {"x" * 60}"') for i in range(12)]
    return _zone("big.test.", *txt)


def lab_zones() -> list[Zone]:
    return [forward_zone(), second_zone(), reverse_zone(), big_zone()]


RICH_TOPOLOGY = """
name: dnsrich
nodes:
  ns: {kind: dns, hostname: ns.alpha.test}
  mx-alpha: {kind: relay}
  store-alpha: {kind: store, hostname: imap.alpha.test}
  mx1-beta: {kind: relay, hostname: mx1.beta.test}
  mx2-beta: {kind: relay, hostname: mx2.beta.test}
  store-beta: {kind: store}
domains:
  alpha.test:
    store: store-alpha
    mx: [{node: mx-alpha}]
    users: {alice: a}
  beta.test:
    store: store-beta
    mx: [{node: mx2-beta, preference: 20}, {node: mx1-beta, preference: 10}]
    users: {bob: b}
records:
  - {name: alpha.test, type: TXT, value: '"v=spf1 mx -all"'}
  - {name: _dmarc.alpha.test, type: TXT, value: '"v=DMARC1; p=reject"'}
  - {name: www.alpha.test, type: A, value: 127.0.0.80, ttl: 60}
  - {name: www.alpha.test, type: AAAA, value: "fd00::80"}
  - {name: webmail.alpha.test, type: CNAME, value: imap.alpha.test.}
  - {name: _submission._tcp.alpha.test, type: SRV, value: 0 1 587 mx-alpha.alpha.test.}
  - {name: alpha.test, type: CAA, value: '0 issue "ca.alpha.test"'}
  - {name: lists.beta.test, type: MX, value: 5 mx2.beta.test.}
  - {name: sub.beta.test, type: NS, value: ns.sub.beta.test.}
  - {name: ns.sub.beta.test, type: A, value: 127.0.0.54}
  - {name: host.beta.test, type: PTR, value: mx1.beta.test.}
"""  # every kind of record a topology can declare, node hostnames set and defaulted


def rich_plan(lab_dir: Path) -> LabPlan:
    """The planned lab for ``RICH_TOPOLOGY``."""
    return make_plan(parse_topology(RICH_TOPOLOGY, "rich.yaml"), runtime="local", lab_dir=lab_dir)


def need(binary: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"{binary} is not installed")
    return path


class DnsNode:
    """``python -m mxlab.nodes dns`` as a subprocess, on its own 127.10.x.y address."""

    def __init__(self, tmp: Path, zones: list[Zone] | None = None) -> None:
        self.address = new_address()
        self.port = free_port()
        self.state_dir = tmp / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = DnsNodeConfig(
            lab="t",
            node="dns",
            fqdn="ns.alpha.test",
            address=self.address,
            port=self.port,
            state_dir=str(self.state_dir),
            zones=zones if zones is not None else lab_zones(),
        )
        path = tmp / "dns.json"
        path.write_text(config.model_dump_json())
        self.log = tmp / "dns.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mxlab.nodes", "dns", "--config", str(path)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_for(lambda: self.events("ready") or self._died(), what="the DNS node ready")

    def _died(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"DNS node exited: {self.log.read_text()}")
        return False

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()
        return [e for e in map(_json_or_none, lines) if e and e.get("event") == name]

    def signal_hup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _json_or_none(line: str) -> dict[str, Any] | None:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def dig(node: DnsNode, *args: str) -> str:
    """dig against the node: plain output, short timeouts, no retries."""
    binary = need("dig")
    cmd = [binary, f"@{node.address}", "-p", str(node.port), "+time=2", "+tries=1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
