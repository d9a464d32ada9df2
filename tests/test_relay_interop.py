"""Interop with Postfix, both ways: Postfix delivers into our relay by MX (looked up
in a lab DNS), and our relay delivers to Postfix as an MX and as its next hop.

Postfix runs as a private instance (bench/smtp.py's helper) in a mount namespace
whose resolv.conf names the test's DNS stub; STARTTLS is on between the two."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.smtp import Postfix, postfix_missing, private_postfix
from mxlab.lab.checks import split_trace
from mxlab.nodes.config import Endpoint, LocalDomain
from tests.conftest import wait_for
from tests.test_relay_support import (
    DnsStub,
    RelayProcess,
    Sink,
    make_tls,
    message,
    new_address,
    relay_config,
)

PORT = 2525  # every SMTP listener here; Postfix's smtp_tcp_port


@dataclass
class Peers:
    postfix: Postfix
    relay: RelayProcess  # mx.beta.test: final for beta.test (LMTP), MX-routes the rest
    store: Sink  # beta.test's store, behind our relay
    final: Sink  # where Postfix sends gamma.test and delta.test


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    problem = postfix_missing()
    if problem is not None:
        pytest.skip(problem)
    tmp = tmp_path_factory.mktemp("interop")
    relay_address, postfix_address = new_address(), new_address()
    zone = f"""
beta.test. 300 IN MX 10 mx.beta.test.
mx.beta.test. 300 IN A {relay_address}
gamma.test. 300 IN MX 10 mx.gamma.test.
mx.gamma.test. 300 IN A {postfix_address}
"""
    dns = DnsStub(zone, port=53)  # the resolver library asks port 53 only
    store, final = Sink(lmtp=True).start(), Sink().start()
    config = relay_config(
        tmp,
        address=relay_address,
        fqdn="mx.beta.test",
        smtp_port=PORT,
        remote_smtp_port=PORT,
        dns=dns.endpoint,
        tls=make_tls(tmp / "tls", "mx.beta.test", relay_address),
        local_domains={"beta.test": LocalDomain(lmtp=store.endpoint, users=["bob"])},
        trusted_clients=["127.0.0.1"],
    )
    relay = RelayProcess(config, tmp).start()
    settings = {
        "myhostname": "postfix.gamma.test",
        "smtp_bind_address": postfix_address,
        "smtp_tcp_port": str(PORT),  # MX hosts listen here, as in the lab
        "smtp_tls_security_level": "may",  # STARTTLS with our relay
        "relay_domains": "gamma.test, delta.test",
        "relay_transport": f"smtp:[{final.endpoint.host}]:{final.endpoint.port}",
    }
    try:
        with private_postfix(
            Endpoint(host=postfix_address, port=PORT), settings, dns.endpoint
        ) as pf:
            yield Peers(pf, relay, store, final)
    finally:
        relay.stop()
        for thing in (store, final, dns):
            thing.stop()


def landed(sink: Sink, subject: str) -> bytes:
    found = wait_for(
        lambda: [m for m in sink.messages if f"Subject: {subject}".encode() in m.content],
        20,
        f"{subject!r} at the last hop",
    )
    assert len(found) == 1
    return found[0].content.replace(b"\r\n\t", b" ")


def test_postfix_delivers_into_our_relay_by_mx(peers: Peers) -> None:
    sent = message("postfix to mxlab", sender="alice@alpha.test", rcpt="bob@beta.test")
    with smtplib.SMTP(peers.postfix.listen.host, PORT, timeout=10) as client:
        assert client.sendmail("alice@alpha.test", ["bob@beta.test"], sent) == {}
    got = landed(peers.store, "postfix to mxlab")
    hosts, body = split_trace(got)
    assert hosts == ["postfix.gamma.test", "mx.beta.test"]
    assert body == sent
    assert b"from postfix.gamma.test" in got and b"by mx.beta.test (mxlab) with ESMTPS" in got
    event = peers.relay.wait_event("delivered", to="bob@beta.test")
    assert event["hop"] == peers.store.endpoint.host


def test_our_relay_delivers_to_postfix_as_mx(peers: Peers) -> None:
    sent = message("mxlab to postfix by mx", sender="bob@beta.test", rcpt="carol@gamma.test")
    with peers.relay.smtp() as client:  # from 127.0.0.1: trusted, may relay
        assert client.sendmail("bob@beta.test", ["carol@gamma.test"], sent) == {}
    got = landed(peers.final, "mxlab to postfix by mx")
    hosts, body = split_trace(got)
    assert hosts == ["mx.beta.test", "postfix.gamma.test"] and body == sent
    event = peers.relay.wait_event("delivered", to="carol@gamma.test")
    assert event["hop"] == "mx.gamma.test" and event["status"].startswith("250 2.0.0")


def test_our_relay_delivers_to_postfix_as_next_hop(peers: Peers, tmp_path: Path) -> None:
    config = relay_config(
        tmp_path,
        node="smarthosted",
        fqdn="out.alpha.test",
        next_hop=peers.postfix.listen,
        trusted_clients=["127.0.0.1"],
    )
    relay = RelayProcess(config, tmp_path).start()
    try:
        sent = message("mxlab to postfix as next hop", rcpt="dave@delta.test")
        with relay.smtp() as client:
            assert client.sendmail("a@alpha.test", ["dave@delta.test"], sent) == {}
        got = landed(peers.final, "mxlab to postfix as next hop")
        hosts, body = split_trace(got)
        assert hosts == ["out.alpha.test", "postfix.gamma.test"] and body == sent
        assert relay.wait_event("delivered")["hop"] == peers.postfix.listen.host
    finally:
        relay.stop()
