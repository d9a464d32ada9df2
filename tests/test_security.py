"""The attacker's view (issue 12): live nodes on loopback, each trick refused with the
protocol's own reply, and the server still serving everyone else afterwards.

Brute force (the failed-login delay measured), plaintext passwords before TLS,
sender spoofing, mailbox names that climb out of the maildir, open-relay tricks,
SMTP smuggling, oversize lines and literals. The delay arithmetic itself is tested
on a fake clock; the live tests use a short base delay and measure its doubling."""

from __future__ import annotations

import base64
import imaplib
import ipaddress
import poplib
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxlab.lab import labdir
from mxlab.lab.lifecycle import bring_up, tear_down
from mxlab.lab.mail import build_message, submit
from mxlab.lab.plan import make_plan
from mxlab.lab.topology import parse_topology
from mxlab.nodes.config import LocalDomain, LoginLimits
from mxlab.nodes.login_limits import LoginThrottle
from mxlab.nodes.passwords import hash_password
from mxlab.nodes.store.pop3 import Pop3Session
from mxlab.nodes.store.security import Security
from tests.conftest import WHY_NO_DOCKER
from tests.test_relay_support import (
    RelayProcess,
    Sink,
    make_tls,
    message,
    new_address,
    relay_config,
)
from tests.test_store_support import PASSWORDS, StoreProcess

BASE = 0.2  # the live nodes' failed-login delay: 0.2, 0.4, 0.8 ... (default 2 s)
LIVE_LIMITS = LoginLimits(failure_delay=BASE, max_delay=2.0, max_failures=3)
PENALISED = LIVE_LIMITS.max_delay  # what the attacker's next failure waits
DEFAULTS = LoginLimits()


# -- the delay arithmetic, on a fake clock ----------------------------------------------


def test_the_delay_doubles_per_failure_up_to_a_cap() -> None:
    now = [0.0]
    throttle = LoginThrottle(DEFAULTS, clock=lambda: now[0])
    attempts = throttle.attempts("192.0.2.1")
    delays = [attempts.failed() for _ in range(5)]
    assert delays == [2.0, 4.0, 8.0, 15.0, 15.0]  # Dovecot: 2 s, penalty up to 15 s


def test_reconnecting_keeps_the_source_penalty_and_others_are_not_slowed() -> None:
    now = [0.0]
    throttle = LoginThrottle(DEFAULTS, clock=lambda: now[0])
    first = throttle.attempts("192.0.2.1")
    assert [first.failed() for _ in range(3)] == [2.0, 4.0, 8.0]
    assert first.exhausted  # three failures: the connection is closed
    again = throttle.attempts("192.0.2.1")  # a new connection from the same address
    assert again.failed() == 15.0 and not again.exhausted
    assert throttle.attempts("198.51.100.7").failed() == 2.0  # another client
    now[0] += DEFAULTS.penalty_ttl + 1  # an hour later the penalty is forgotten
    assert throttle.attempts("192.0.2.1").failed() == 2.0


def test_the_penalty_table_is_bounded() -> None:
    from mxlab.nodes import login_limits

    throttle = LoginThrottle(DEFAULTS, clock=lambda: 0.0)
    for n in range(login_limits.MAX_SOURCES + 10):
        throttle.failed(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
    assert throttle.failures("10.0.0.0") == 0  # the oldest went first
    assert len(throttle._penalty) == login_limits.MAX_SOURCES


def test_pop3_session_holds_the_reply_and_hangs_up_after_the_cap(
    tmp_path: Path,
) -> None:
    from mxlab.nodes.store.auth import Authenticator
    from mxlab.nodes.store.mailstore import MailStore
    from tests.test_store_support import store_config

    auth = Authenticator(store_config(tmp_path))
    session = Pop3Session(MailStore(tmp_path / "mail"), auth, "h", Security(peer="192.0.2.9"))
    holds = []
    for _ in range(3):
        reply = session.receive(b"USER alice@alpha.test\r\nPASS wrong\r\n")
        holds.append(session.security.take_hold())
    assert holds == [2.0, 4.0, 8.0]
    assert reply.endswith(b"-ERR [AUTH] invalid user name or password; too many failures, bye\r\n")
    assert session.closed


def test_imap_session_holds_the_reply_and_says_bye_after_the_cap(tmp_path: Path) -> None:
    from mxlab.nodes.store.auth import Authenticator
    from mxlab.nodes.store.imap_session import ImapSession
    from mxlab.nodes.store.mailstore import MailStore
    from tests.test_store_support import store_config

    auth = Authenticator(store_config(tmp_path))
    session = ImapSession(
        MailStore(tmp_path / "mail"), auth, "h", security=Security(peer="192.0.2.9")
    )
    session.greeting()
    wrong = _plain("alice@alpha.test", "wrong").encode()
    holds, replies = [], []
    for n in range(3):  # AUTHENTICATE with its continuation, the other way in
        assert session.receive(f"a{n} AUTHENTICATE PLAIN\r\n".encode()) == b"+ \r\n"
        replies.append(session.receive(wrong + b"\r\n"))
        holds.append(session.security.take_hold())
    assert holds == [2.0, 4.0, 8.0]
    assert replies[0] == b"a0 NO [AUTHENTICATIONFAILED] invalid credentials\r\n"
    assert replies[2].endswith(b"* BYE too many failed logins\r\n") and session.closed


# -- live nodes ----------------------------------------------------------------------------


@pytest.fixture
def tls_relay(tmp_path: Path) -> Iterator[tuple[RelayProcess, Sink, ssl.SSLContext]]:
    """A relay with a lab-CA certificate, plaintext AUTH off (the default), a short
    failed-login delay; alice may also send as her alias postmaster@alpha.test."""
    sink = Sink().start()
    address = new_address()
    tls = make_tls(tmp_path / "tls", "mx.alpha.test", address)
    config = relay_config(
        tmp_path,
        address=address,
        tls=tls,
        allow_plaintext_auth=False,
        login_limits=LIVE_LIMITS,
        auth_users={"alice@alpha.test": hash_password("alice-pw")},
        sender_aliases={"alice@alpha.test": ["postmaster@alpha.test"]},
        local_domains={"alpha.test": LocalDomain(lmtp=sink.endpoint, users=["alice", "bob"])},
        next_hop=sink.endpoint,
    )
    relay = RelayProcess(config, tmp_path).start()
    yield relay, sink, ssl.create_default_context(cafile=tls.ca)
    relay.stop()
    sink.stop()


def submission(relay: RelayProcess, context: ssl.SSLContext, source: str = "") -> smtplib.SMTP:
    client = smtplib.SMTP(
        relay.config.address,
        relay.config.submission_port,
        timeout=20,
        source_address=(source, 0) if source else None,
    )
    client.ehlo("client.test")
    client.starttls(context=context)
    client.ehlo("client.test")
    return client


def doubling(what: str, took: list[float], capsys: pytest.CaptureFixture[str]) -> None:
    """Each failure waited at least twice the one before (printed for CI's log)."""
    with capsys.disabled():
        print(f"\n{what} delays (s): " + ", ".join(f"{t:.2f}" for t in took))
    for n, seconds in enumerate(took):
        assert seconds >= BASE * 2**n * 0.95, took


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_smtp_auth_before_starttls_is_refused(tls_relay: tuple) -> None:
    relay, _, context = tls_relay
    with relay.smtp(submission=True) as client:
        assert not client.has_extn("auth")  # not even offered (Postfix's smtpd_tls_auth_only)
        code, text = client.docmd("AUTH PLAIN " + _plain("alice@alpha.test", "alice-pw"))
        assert (code, text) == (530, b"5.7.0 Must issue a STARTTLS command first")
        assert client.starttls(context=context) == (220, b"2.0.0 Ready to start TLS")
        client.ehlo("client.test")
        client.login("alice@alpha.test", "alice-pw")  # and after TLS it works


def test_smtp_brute_force_is_slowed_capped_and_penalised(
    tls_relay: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    relay, _, context = tls_relay
    attacker, bystander = new_address(), new_address()
    took = []
    with submission(relay, context, attacker) as client:
        for _ in range(3):
            started = time.monotonic()
            code, text = client.docmd("AUTH PLAIN " + _plain("alice@alpha.test", "guess"))
            took.append(time.monotonic() - started)
            assert (code, text[:5]) == (535, b"5.7.8")
        # the cap: the third failure closes the session with 421
        assert client.getreply()[0] == 421
    with submission(relay, context, attacker) as client:  # reconnecting does not help
        started = time.monotonic()
        assert client.docmd("AUTH PLAIN " + _plain("alice@alpha.test", "guess"))[0] == 535
        took.append(time.monotonic() - started)
    doubling("SMTP failed-AUTH", took, capsys)
    with submission(relay, context, bystander) as client:  # another address: no penalty
        started = time.monotonic()
        assert client.docmd("AUTH PLAIN " + _plain("alice@alpha.test", "typo"))[0] == 535
        assert time.monotonic() - started < PENALISED / 2  # the base delay, not the penalty
        client.login("alice@alpha.test", "alice-pw")


def test_sender_spoofing_is_refused(tls_relay: tuple) -> None:
    relay, _, context = tls_relay
    with submission(relay, context) as client:
        client.login("alice@alpha.test", "alice-pw")
        for spoofed in ("ceo@bank.example", "bob@alpha.test", "ALICE@alpha.test.evil"):
            code, text = client.mail(spoofed)
            assert (code, text[:5]) == (553, b"5.7.1"), spoofed
        assert client.mail("Alice@Alpha.test")[0] == 250  # her own, in any case
        client.rset()
        assert client.mail("postmaster@alpha.test")[0] == 250  # a declared alias
        client.rset()
        assert client.sendmail("alice@alpha.test", ["bob@alpha.test"], message("own")) == {}


@pytest.mark.parametrize(
    "rcpt",
    [
        "victim%gamma.test@alpha.test",  # percent hack
        '"victim@gamma.test"@alpha.test',  # quoted local part
        "@alpha.test:victim@gamma.test",  # source route
        "gamma.test!victim@alpha.test",  # bang path
        "victim@gamma.test",  # plain relaying
        "alice@xn--lpha-6hd.test",  # IDN lookalike of alpha.test (Cyrillic a)
    ],
)
def test_open_relay_tricks_are_refused(tls_relay: tuple, rcpt: str) -> None:
    relay, _, _ = tls_relay
    with relay.smtp() as client:
        client.mail("spammer@elsewhere.test")
        code, text = client.docmd(f"RCPT TO:<{rcpt}>")
        assert code in (550, 553, 554) and text[:2] == b"5.", (rcpt, code, text)
        client.rset()
        client.mail("friend@elsewhere.test")
        assert client.rcpt("alice@alpha.test")[0] == 250  # still serving


def test_an_idn_lookalike_in_utf8_is_refused(tls_relay: tuple) -> None:
    relay, _, _ = tls_relay
    lookalike = "RCPT TO:<alice@\u0430lpha.test>\r\n".encode()  # a Cyrillic a
    with relay.smtp() as client:
        client.mail("spammer@elsewhere.test", ["SMTPUTF8"])
        client.send(lookalike)
        code, text = client.getreply()
        assert code == 554 and text.startswith(b"5.7.1"), (code, text)
    with relay.smtp() as client:
        client.mail("spammer@elsewhere.test")  # the same without SMTPUTF8
        client.send(lookalike)
        code, text = client.getreply()
        assert code == 553 and text.startswith(b"5.6.7"), (code, text)


SMUGGLING = [
    b"\n.\n",  # bare LF . bare LF
    b"\n.\r\n",  # bare LF . CRLF
    b"\r.\r",  # bare CR . bare CR
    b"\r\n.\n",  # CRLF . bare LF
    b"\r.\r\n",  # bare CR . CRLF
]


@pytest.mark.parametrize("ending", SMUGGLING, ids=[repr(e) for e in SMUGGLING])
def test_smtp_smuggling_is_refused(tls_relay: tuple, ending: bytes) -> None:
    """A second message hidden behind a non-standard end of data must not be taken
    as a second transaction (RFC 5321 §2.3.8, §4.1.1.4): one reply, a refusal."""
    relay, _, _ = tls_relay
    inner = b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<bob@alpha.test>\r\nDATA\r\nsmuggled\r\n"
    with relay.smtp() as client:
        client.mail("friend@elsewhere.test")
        client.rcpt("alice@alpha.test")
        client.putcmd("DATA")
        assert client.getreply()[0] == 354
        client.send(b"Subject: outer\r\n\r\nouter" + ending + inner + b".\r\n")
        code, text = client.getreply()
        assert code == 550 and text.startswith(b"5.6.0"), (code, text)
        assert client.noop()[0] == 250  # one reply only: nothing was smuggled in
        client.rset()
        assert client.sendmail("friend@elsewhere.test", ["alice@alpha.test"], message()) == {}
    senders = [e["from"] for e in relay.events("received")]
    assert "friend@elsewhere.test" in senders and "ceo@bank.example" not in senders


def test_oversize_command_and_data_lines_are_refused(tls_relay: tuple) -> None:
    relay, _, _ = tls_relay
    with relay.smtp() as client:
        code, _ = client.docmd("NOOP " + "x" * 2000)
        assert code == 500
        client.mail("friend@elsewhere.test")
        client.rcpt("alice@alpha.test")
        code, text = client.data(b"Subject: long\r\n\r\n" + b"y" * 5000 + b"\r\n")
        assert (code, text[:5]) == (500, b"5.5.2")
        assert client.noop()[0] == 250


# -- the store -------------------------------------------------------------------------------


@pytest.fixture
def tls_store(tmp_path: Path) -> Iterator[tuple[StoreProcess, ssl.SSLContext]]:
    address = new_address()
    tls = make_tls(tmp_path / "tls", "store.alpha.test", address)
    node = StoreProcess(
        tmp_path, address, tls=tls, allow_plaintext_auth=False, login_limits=LIVE_LIMITS
    )
    node.start()
    yield node, ssl.create_default_context(cafile=tls.ca)
    node.stop()


class _Imap(imaplib.IMAP4):
    """imaplib from a chosen source address (the attacker's or a bystander's)."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=20)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        source = (self._source, 0) if self._source else None
        return socket.create_connection((self.host, self.port), timeout, source)


def imap_tls(node: StoreProcess, context: ssl.SSLContext, source: str = "") -> imaplib.IMAP4:
    imap = _Imap(node.address, node.config.imap_port, source)
    imap.starttls(ssl_context=context)
    return imap


def test_imap_and_pop3_refuse_passwords_before_tls(tls_store: tuple) -> None:
    node, context = tls_store
    imap = imaplib.IMAP4(node.address, node.config.imap_port, timeout=10)
    assert "LOGINDISABLED" in imap.capabilities and "STARTTLS" in imap.capabilities
    typ, data = imap._simple_command("LOGIN", "alice@alpha.test", PASSWORDS["alice@alpha.test"])
    assert typ == "NO" and b"PRIVACYREQUIRED" in data[0]
    typ, data = imap._simple_command("AUTHENTICATE", "PLAIN", "=")
    assert typ == "NO" and b"PRIVACYREQUIRED" in data[0]
    imap.starttls(ssl_context=context)
    assert "LOGINDISABLED" not in imap.capabilities
    imap.login("alice@alpha.test", PASSWORDS["alice@alpha.test"])
    imap.logout()
    pop = poplib.POP3(node.address, node.config.pop3_port, timeout=10)
    assert "USER" not in pop.capa() and "STLS" in pop.capa()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop.user("alice@alpha.test")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop._shortcmd("AUTH PLAIN " + _plain("alice@alpha.test", "alice-pw"))
    pop.stls(context=context)
    pop.user("alice@alpha.test")
    pop.pass_(PASSWORDS["alice@alpha.test"])
    pop.quit()


def test_imap_brute_force_is_slowed_capped_and_penalised(
    tls_store: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    node, context = tls_store
    attacker, bystander = new_address(), new_address()
    imap = imap_tls(node, context, attacker)
    took = []
    for n in range(3):
        started = time.monotonic()
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login("alice@alpha.test", f"guess{n}")
        took.append(time.monotonic() - started)
    with pytest.raises((imaplib.IMAP4.abort, OSError)):  # BYE after the third: closed
        imap.noop()
    imap = imap_tls(node, context, attacker)
    started = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error):
        imap.login("alice@alpha.test", "guess")
    took.append(time.monotonic() - started)
    doubling("IMAP failed-LOGIN", took, capsys)
    other = imap_tls(node, context, bystander)  # another address: no penalty
    started = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error):
        other.login("alice@alpha.test", "typo")
    assert time.monotonic() - started < PENALISED / 2  # the base delay, not the penalty
    other.login("alice@alpha.test", PASSWORDS["alice@alpha.test"])
    other.logout()


def test_pop3_brute_force_is_slowed_and_capped(
    tls_store: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    node, context = tls_store
    pop = poplib.POP3(node.address, node.config.pop3_port, timeout=20)
    pop.stls(context=context)
    took = []
    for _ in range(3):
        pop.user("alice@alpha.test")
        started = time.monotonic()
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            pop.pass_("guess")
        took.append(time.monotonic() - started)
    doubling("POP3 failed-PASS", took, capsys)
    with pytest.raises((poplib.error_proto, OSError)):
        pop.noop()  # hung up after the third


@pytest.mark.parametrize(
    "name",
    ["../../etc", "..", "a/../../b", "/etc/passwd", "Work/..", "%", "*", "a..b", ".hidden"],
)
def test_mailbox_names_cannot_leave_the_maildir(tls_store: tuple, name: str) -> None:
    node, context = tls_store
    imap = imap_tls(node, context)
    imap.login("alice@alpha.test", PASSWORDS["alice@alpha.test"])
    quoted = '"' + name + '"'
    for command in ("CREATE", "SELECT", "DELETE"):
        typ, _ = imap._simple_command(command, quoted)
        assert typ == "NO", (command, name)
    typ, _ = imap._simple_command("RENAME", "INBOX", quoted)
    assert typ == "NO", ("RENAME", name)
    assert imap.select("INBOX")[0] == "OK"  # still serving
    imap.logout()
    state = node.config.state_path
    outside = [p for p in state.parent.rglob("*") if not p.is_relative_to(state)]
    assert all(p.name in {"store.json", "store.log", "tls"} or "tls" in p.parts for p in outside)


def test_oversize_literal_and_line_are_refused(tls_store: tuple) -> None:
    node, context = tls_store
    imap = imap_tls(node, context)
    imap.login("alice@alpha.test", PASSWORDS["alice@alpha.test"])
    sock = imap.sock
    sock.sendall(b"a1 APPEND INBOX {999999999999}\r\n")
    reply = imap.readline()
    assert reply.startswith((b"a1 NO", b"a1 BAD")), reply
    sock.sendall(b"a2 NOOP " + b"x" * 200_000 + b"\r\n")
    reply = imap.readline()
    assert reply.startswith(b"a2 BAD") or reply.startswith(b"* BYE"), reply[:80]
    other = imap_tls(node, context)  # another client is still served
    other.login("alice@alpha.test", PASSWORDS["alice@alpha.test"])
    assert other.select("INBOX")[0] == "OK"
    other.logout()


# -- a whole lab --------------------------------------------------------------------------

LESSON = "name: lesson\nnodes: {ns: {kind: dns}, mx: {kind: relay}, st: {kind: store}}\n" + (
    "domains: {a.test: {store: st, mx: [{node: mx, preference: 10}], users: {u: u-pw}}}\n"
)


@pytest.mark.parametrize(
    ("settings", "allowed"), [("", False), ("allow_plaintext_auth: true", True)]
)
def test_labs_refuse_plaintext_logins_unless_a_lesson_allows_them(
    tmp_path: Path, settings: str, allowed: bool
) -> None:
    text = LESSON + (f"settings: {{{settings}}}\n" if settings else "")
    plan = make_plan(parse_topology(text), runtime="local", lab_dir=tmp_path)
    configs = [n.config for n in plan.nodes.values() if n.role in ("relay", "store")]
    assert [c.allow_plaintext_auth for c in configs] == [allowed, allowed]  # type: ignore[union-attr]


@pytest.mark.docker
@pytest.mark.skipif(WHY_NO_DOCKER is not None, reason=WHY_NO_DOCKER or "")
@pytest.mark.timeout(1200)  # the first docker test to run builds the node image
@pytest.mark.usefixtures("mxlab_home")
def test_plaintext_over_the_docker_bridge_is_refused() -> None:
    """The host reaches the containers over the lab's bridge, a real network path:
    no password may cross it before TLS, with each protocol's refusal."""
    plan, _ = bring_up(parse_topology(LESSON.replace("lesson", "plaintext")), "docker", print)
    try:
        store, relay = plan.nodes["st"], plan.nodes["mx"]
        assert not ipaddress.ip_address(store.address).is_loopback
        imap = imaplib.IMAP4(store.address, store.ports["imap"], timeout=10)
        assert "LOGINDISABLED" in imap.capabilities
        typ, data = imap._simple_command("LOGIN", "u@a.test", "u-pw")
        assert typ == "NO" and b"PRIVACYREQUIRED" in data[0]
        imap.shutdown()
        pop = poplib.POP3(store.address, store.ports["pop3"], timeout=10)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            pop.user("u@a.test")
        pop.close()
        with smtplib.SMTP(relay.address, relay.ports["submission"], timeout=10) as smtp:
            smtp.ehlo("client.test")
            assert not smtp.has_extn("auth")
            code, text = smtp.docmd("AUTH PLAIN " + _plain("u@a.test", "u-pw"))
            assert (code, text) == (530, b"5.7.0 Must issue a STARTTLS command first")
        msg = build_message("u@a.test", ["u@a.test"], "over tls", "x\n")
        submit(labdir.read_plan(plan.lab), msg)  # with STARTTLS it all works
    finally:
        tear_down(plan.lab, print)
