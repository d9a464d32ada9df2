"""Relay policy, trace fields and retry schedule: pure functions, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.utils import parsedate_to_datetime

import pytest

from mxlab.lab.checks import split_trace
from mxlab.nodes.config import Endpoint, LocalDomain, QueuePolicy, RelayDomain, RelayNodeConfig
from mxlab.nodes.message import message_id
from mxlab.nodes.relay.delivery import retry_delay
from mxlab.nodes.relay.policy import address_error, is_source_route, rcpt_verdict
from mxlab.nodes.relay.trace import (
    count_received,
    has_bare_line_ending,
    protocol_name,
    received_header,
)

CONFIG = RelayNodeConfig(
    lab="t",
    node="mx",
    fqdn="mx.alpha.test",
    address="127.30.0.10",
    state_dir="/nonexistent",
    smtp_port=2525,
    submission_port=2587,
    remote_smtp_port=2525,
    dns=Endpoint(host="127.30.0.1", port=5353),
    local_domains={
        "alpha.test": LocalDomain(lmtp=Endpoint(host="127.30.0.2", port=24), users=["alice"])
    },
    relay_domains={"beta.test": RelayDomain(users=["bob"], preference=20)},
    trusted_clients=["127.30.0.50"],
    queue=QueuePolicy(retry_initial=2.0, retry_max=30.0),
)


def verdict(address: str, *, auth: bool = False, ip: str = "127.30.0.99") -> str | None:
    return rcpt_verdict(CONFIG, address, authenticated=auth, client_ip=ip)


@pytest.mark.parametrize("address", ["alice@alpha.test", "ALICE@Alpha.Test", "bob@beta.test"])
def test_known_users_of_final_and_backup_domains_are_accepted(address: str) -> None:
    assert verdict(address) is None


@pytest.mark.parametrize("address", ["zed@alpha.test", "carol@beta.test"])
def test_unknown_user_of_a_served_domain_is_550_5_1_1(address: str) -> None:
    reply = verdict(address)
    assert reply is not None and reply.startswith("550 5.1.1")


@pytest.mark.parametrize(
    "address",
    [
        "victim@gamma.test",
        "victim%gamma.test@alpha.test",  # %-hack through a local domain
        '"victim@gamma.test"@alpha.test',  # quoted local part with an @
        "gamma.test!victim@alpha.test",  # bang path
        "victim@[127.30.0.7]",  # address literal
        "alice@alpha.test.evil.test",
    ],
)
def test_strangers_cannot_relay(address: str) -> None:
    reply = verdict(address)
    assert reply is not None and reply.startswith("554 5.7.1 relay access denied")


@pytest.mark.parametrize("kw", [{"auth": True}, {"ip": "127.30.0.50"}])
def test_authenticated_users_and_trusted_relays_may_relay(kw: dict) -> None:
    assert verdict("victim@gamma.test", **kw) is None


def test_relaying_clients_still_get_550_for_unknown_local_users() -> None:
    reply = verdict("zed@alpha.test", auth=True)
    assert reply is not None and reply.startswith("550 5.1.1")


def test_source_routes_are_recognised() -> None:
    assert is_source_route(" <@a.test:victim@gamma.test>")
    assert is_source_route("<@a.test,@b.test:victim@gamma.test>")
    assert not is_source_route("<victim@gamma.test>")


def test_received_header_names_the_relay_for_the_lab_checker() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    header = received_header(
        helo="client.test",
        client_ip="127.30.0.99",
        by="mx.alpha.test",
        protocol="ESMTPA",
        queue_id="Q1",
        rcpts=["alice@alpha.test"],
        now=now,
    )
    original = b"Subject: x\r\n\r\nbody\r\n"
    hosts, rest = split_trace(header + b"Received: from a by relay0.test; x\r\n" + original)
    assert hosts == ["relay0.test", "mx.alpha.test"]
    assert rest == original
    msg = message_from_bytes(header + original)
    value = " ".join(msg["Received"].split())
    assert "with ESMTPA id Q1" in value and "for <alice@alpha.test>" in value
    assert parsedate_to_datetime(value.rsplit(";", 1)[1].strip()) == now


def test_received_header_is_stamped_now_in_utc() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    header = received_header(
        helo="h", client_ip="127.0.0.1", by="b", protocol="ESMTP", queue_id="Q", rcpts=["x"]
    )
    after = datetime.now(UTC)
    stamp = header.decode().rsplit(";", 1)[1].strip()
    assert stamp.endswith("+0000")
    assert before <= parsedate_to_datetime(stamp) <= after


def test_received_header_keeps_other_recipients_private() -> None:
    header = received_header(
        helo="h", client_ip="127.0.0.1", by="b", protocol="ESMTP", queue_id="Q", rcpts=["x", "y"]
    )
    assert b" for " not in header.replace(b"\r\n\t", b" ")


@pytest.mark.parametrize(
    ("esmtp", "tls", "auth", "name"),
    [(False, False, False, "SMTP"), (True, False, False, "ESMTP"), (True, True, True, "ESMTPSA")],
)
def test_protocol_names_follow_rfc_3848(esmtp: bool, tls: bool, auth: bool, name: str) -> None:
    assert protocol_name(esmtp=esmtp, tls=tls, authenticated=auth) == name


def test_received_headers_are_counted_in_the_header_section_only() -> None:
    msg = b"Received: a\r\nreceived: b\r\n\tcont\r\nSubject: s\r\n\r\nReceived: in body\r\n"
    assert count_received(msg) == 2


@pytest.mark.parametrize(
    ("data", "bare"),
    [(b"a\r\nb\r\n", False), (b"a\nb\r\n", True), (b"a\rb\r\n", True), (b"a\r\n.\n", True)],
)
def test_bare_line_endings_are_detected(data: bytes, bare: bool) -> None:
    assert has_bare_line_ending(data) is bare


def test_message_id_is_read_unfolded_from_the_header() -> None:
    assert message_id(b"Subject: s\r\nMessage-Id:\r\n <a@b>\r\n\r\nMessage-ID: <no>\r\n") == "<a@b>"
    assert message_id(b"Subject: s\r\n\r\nMessage-ID: <body@b>\r\n") == ""


def test_retry_delay_doubles_up_to_the_maximum() -> None:
    assert [retry_delay(CONFIG, n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_addresses_must_be_utf8_and_declared() -> None:
    assert address_error("alice@alpha.test", smtputf8=False) is None
    assert address_error("jörg@alpha.test", smtputf8=True) is None
    assert (address_error("jörg@alpha.test", smtputf8=False) or "").startswith("553 5.6.7")
    undecodable = b"\xff@alpha.test".decode("utf-8", "surrogateescape")
    assert (address_error(undecodable, smtputf8=True) or "").startswith("553 5.6.7")
