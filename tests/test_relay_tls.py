"""STARTTLS (RFC 3207) when the node has TLS files: advertised, required for AUTH when
plaintext AUTH is off, recorded as ESMTPS in the trace, and used between relays."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxlab.lab.checks import split_trace
from mxlab.nodes.passwords import hash_password
from tests.conftest import wait_for
from tests.test_relay_support import (
    RelayProcess,
    Sink,
    make_tls,
    message,
    new_address,
    relay_chain,
    relay_config,
)


@pytest.fixture
def sink() -> Iterator[Sink]:
    sink = Sink().start()
    yield sink
    sink.stop()


def test_starttls_then_auth_and_the_trace_says_esmtpsa(tmp_path: Path, sink: Sink) -> None:
    address = new_address()
    tls = make_tls(tmp_path / "tls", "mx.alpha.test", address)
    config = relay_config(
        tmp_path,
        address=address,
        tls=tls,
        allow_plaintext_auth=False,
        auth_users={"alice@alpha.test": hash_password("pw")},
        next_hop=sink.endpoint,
    )
    relay = RelayProcess(config, tmp_path).start()
    try:
        with relay.smtp(submission=True) as client:
            assert client.has_extn("starttls") and not client.has_extn("auth")
            code, text = client.docmd("AUTH PLAIN AGFsaWNlQGFscGhhLnRlc3QAcHc=")
            # Postfix's smtpd_tls_auth_only reply (RFC 3207 §4)
            assert (code, text) == (530, b"5.7.0 Must issue a STARTTLS command first")
            # the lab CA's certificate names the node's address: full verification
            reply = client.starttls(context=ssl.create_default_context(cafile=tls.ca))
            assert reply == (220, b"2.0.0 Ready to start TLS")  # RFC 2034, RFC 3207 §4
            client.ehlo("client.test")
            assert not client.has_extn("starttls") and client.has_extn("auth")
            client.login("alice@alpha.test", "pw")
            client.sendmail("alice@alpha.test", ["bob@beta.test"], message("tls"))
        wait_for(lambda: sink.messages, what="the message")
        assert b"with ESMTPSA id" in sink.messages[0].content.replace(b"\r\n\t", b" ")
    finally:
        relay.stop()


def test_relays_use_starttls_between_them(tmp_path: Path, sink: Sink) -> None:
    first_address, edge_address = new_address(), new_address()
    first, edge = relay_chain(
        tmp_path,
        sink.endpoint,
        first={
            "address": first_address,
            "tls": make_tls(tmp_path / "tls", "mx.alpha.test", first_address),
            "trusted_clients": ["127.0.0.1"],
        },
        edge={
            "address": edge_address,
            "tls": make_tls(tmp_path / "tls", "edge.alpha.test", edge_address),
        },
    )
    relays = [RelayProcess(edge).start(), RelayProcess(first).start()]
    try:
        with relays[1].smtp() as client:
            client.sendmail("alice@alpha.test", ["bob@beta.test"], message("between"))
        wait_for(lambda: sink.messages, what="the message")
        content = sink.messages[0].content.replace(b"\r\n\t", b" ")
        assert split_trace(content)[0] == ["mx.alpha.test", "edge.alpha.test"]
        by_edge = content.split(b"Received:")[1]
        assert b"by edge.alpha.test (mxlab) with ESMTPS id" in by_edge
    finally:
        for relay in relays:
            relay.stop()
