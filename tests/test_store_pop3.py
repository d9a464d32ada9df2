"""POP3 without sockets: the state machine, byte-stuffing, TOP, the maildrop lock,
SASL PLAIN; and a property test that any input line gets +OK or -ERR."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxlab.nodes.store.auth import Authenticator
from mxlab.nodes.store.mailstore import MailStore
from mxlab.nodes.store.pop3 import Pop3Session, byte_stuff, top_of
from tests.test_store_support import (
    PASSWORDS,
    auth_fixture,  # noqa: F401 (the "auth" fixture)
    message,
    store_config,
    store_fixture,  # noqa: F401 (the "store" fixture)
)


def logged_in(store: MailStore, auth: Authenticator, user: str = "alice@alpha.test") -> Pop3Session:
    s = Pop3Session(store, auth, "store.alpha.test")
    assert s.greeting().startswith(b"+OK")
    out = s.receive(f"USER {user}\r\nPASS {PASSWORDS[user]}\r\n".encode())
    assert out.split(b"\r\n")[1].startswith(b"+OK maildrop"), out
    return s


def test_byte_stuffing_and_top() -> None:
    assert byte_stuff(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n.\r\n"
    assert byte_stuff(b"no final newline") == b"no final newline\r\n.\r\n"
    msg = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n"
    assert top_of(msg, 0) == b"A: 1\r\nB: 2\r\n\r\n"
    assert top_of(msg, 2) == b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n"
    assert top_of(msg, 10) == msg


def test_transaction_and_update(store: MailStore, auth: Authenticator) -> None:
    mail = store.user("alice@alpha.test")
    first, second = message("one", b".dot\r\n"), message("two")
    mail.append("INBOX", first, frozenset(), None)
    mail.append("INBOX", second, frozenset(), None)
    s = logged_in(store, auth)
    assert s.receive(b"STAT\r\n") == f"+OK 2 {len(first) + len(second)}\r\n".encode()
    uidvalidity = mail.mailbox("INBOX").uidvalidity  # type: ignore[union-attr]
    assert s.receive(b"UIDL\r\n") == (
        f"+OK\r\n1 {uidvalidity}.1\r\n2 {uidvalidity}.2\r\n.\r\n".encode()
    )
    out = s.receive(b"RETR 1\r\n")
    assert out == f"+OK {len(first)} octets\r\n".encode() + byte_stuff(first)
    assert b"\r\n..dot\r\n" in out
    assert s.receive(b"DELE 1\r\nDELE 1\r\nLIST\r\n") == (
        b"+OK message 1 deleted\r\n-ERR no such message\r\n"
        + f"+OK\r\n2 {len(second)}\r\n.\r\n".encode()
    )
    assert s.receive(b"RSET\r\nDELE 2\r\n").count(b"+OK") == 2
    assert s.receive(b"QUIT\r\n").startswith(b"+OK")
    assert [m.uid for m in mail.messages("INBOX")] == [1]


def test_no_update_without_quit(store: MailStore, auth: Authenticator) -> None:
    mail = store.user("alice@alpha.test")
    mail.append("INBOX", message("keep"), frozenset(), None)
    s = logged_in(store, auth)
    s.receive(b"DELE 1\r\n")
    s.close()  # the connection dropped: RFC 1939 §6 says no UPDATE
    assert len(mail.messages("INBOX")) == 1


def test_maildrop_lock(store: MailStore, auth: Authenticator) -> None:
    first = logged_in(store, auth)
    second = Pop3Session(store, auth, "h")
    out = second.receive(b"USER alice@alpha.test\r\nPASS alice-pw\r\n")
    assert b"-ERR [IN-USE]" in out
    first.receive(b"QUIT\r\n")
    assert b"+OK maildrop" in second.receive(b"USER alice@alpha.test\r\nPASS alice-pw\r\n")


def test_auth_plain_and_failures(store: MailStore, auth: Authenticator) -> None:
    token = base64.b64encode(b"\0bob@alpha.test\0bob-pw")
    s = Pop3Session(store, auth, "h")
    assert s.receive(b"AUTH PLAIN\r\n") == b"+ \r\n"
    assert s.receive(token + b"\r\n").startswith(b"+OK")
    bad = Pop3Session(store, auth, "h")
    assert bad.receive(b"PASS x\r\n").startswith(b"-ERR")
    assert bad.receive(b"USER bob@alpha.test\r\nPASS nope\r\n").endswith(
        b"-ERR [AUTH] invalid user name or password\r\n"
    )
    assert bad.receive(b"STAT\r\n").startswith(b"-ERR")
    caps = bad.receive(b"CAPA\r\n")
    for cap in (b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING", b"AUTH-RESP-CODE", b"SASL PLAIN"):
        assert b"\r\n" + cap + b"\r\n" in caps


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[MailStore, Authenticator]:
    tmp = tmp_path_factory.mktemp("pop3prop")
    mail = MailStore(tmp / "mail")
    mail.user("alice@alpha.test").append("INBOX", message("x"), frozenset(), None)
    return mail, Authenticator(store_config(tmp))


_verbs = st.sampled_from(["STAT", "LIST", "RETR", "TOP", "DELE", "UIDL", "RSET", "NOOP", "CAPA"])


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(verb=_verbs | st.text(max_size=6), args=st.lists(st.text(max_size=5), max_size=3))
def test_any_line_gets_ok_or_err(
    shared: tuple[MailStore, Authenticator], verb: str, args: list[str]
) -> None:
    s = logged_in(*shared)
    line = " ".join([verb, *args]).replace("\r", "").replace("\n", "")
    out = s.receive(line.encode("utf-8", "surrogateescape") + b"\r\n")
    assert out.startswith((b"+OK", b"-ERR")), (line, out)
    s.close()


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    login=st.booleans(),
    chunks=st.lists(
        st.binary(max_size=40) | st.sampled_from([b"\r\n", b"AUTH PLAIN\r\n", b"TOP 1 ", b"."]),
        max_size=10,
    ),
)
def test_random_bytes_never_raise_and_every_reply_is_well_formed(
    shared: tuple[MailStore, Authenticator], login: bool, chunks: list[bytes]
) -> None:
    s = logged_in(*shared) if login else Pop3Session(*shared, "h")
    try:
        for chunk in chunks:
            out = s.receive(chunk)
            assert not out or out.startswith((b"+OK", b"-ERR", b"+ ")), out
    finally:
        s.close()
    assert shared[0].sessions == {} and shared[0].pop3_locked == set()
