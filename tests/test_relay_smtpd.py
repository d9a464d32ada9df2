"""The relay's SMTP side, live: policy, AUTH, SIZE, loop and smuggling checks, against
``python -m mxlab.nodes relay`` as a child process on loopback."""

from __future__ import annotations

import base64
import re
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxlab.lab.checks import split_trace
from mxlab.nodes.config import LocalDomain, RelayDomain
from mxlab.nodes.passwords import hash_password
from tests.conftest import wait_for
from tests.test_relay_support import RelayProcess, Sink, message, new_address, relay_config

TRUSTED = new_address()  # a client address the relay trusts (the relay before it)


@pytest.fixture(scope="module")
def smarthost() -> Iterator[Sink]:
    """The relay's next hop for every foreign domain: swallows everything."""
    sink = Sink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def store() -> Iterator[Sink]:
    """The LMTP store of alpha.test."""
    sink = Sink(lmtp=True).start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def relay(
    tmp_path_factory: pytest.TempPathFactory, smarthost: Sink, store: Sink
) -> Iterator[RelayProcess]:
    """One relay for the whole module."""
    tmp = tmp_path_factory.mktemp("relay")
    config = relay_config(
        tmp,
        local_domains={"alpha.test": LocalDomain(lmtp=store.endpoint, users=["alice"])},
        relay_domains={"beta.test": RelayDomain(users=["bob"], preference=20)},
        auth_users={"alice@alpha.test": hash_password("alice-secret")},
        trusted_clients=[TRUSTED],
        next_hop=smarthost.endpoint,
        max_message_size=20_000,
        max_received_headers=5,
    )
    proc = RelayProcess(config, tmp).start()
    yield proc
    proc.stop()


def trusted_client(relay: RelayProcess) -> smtplib.SMTP:
    """A session from the address the relay trusts, as the relay before it in a chain."""
    address = (relay.config.address, relay.config.smtp_port)
    client = smtplib.SMTP(*address, source_address=(TRUSTED, 0), timeout=10)
    client.ehlo("relay0.test")
    return client


def rcpt(client: smtplib.SMTP, address: str) -> tuple[int, bytes]:
    client.rset()
    assert client.mail("someone@elsewhere.test")[0] == 250
    return client.rcpt(address)


def test_greeting_and_ehlo_advertise_the_extensions(relay: RelayProcess) -> None:
    with relay.smtp() as client:
        assert client.ehlo_resp.split(b"\n")[0] == b"mx.alpha.test"
        assert client.has_extn("size") and client.esmtp_features["size"] == "20000"
        extensions = (
            "8bitmime",
            "smtputf8",
            "pipelining",
            "enhancedstatuscodes",
            "dsn",
            "chunking",
        )
        for ext in extensions:
            assert client.has_extn(ext), ext
        assert not client.has_extn("auth")  # AUTH is for the submission port
        assert not client.has_extn("starttls")  # no TLS configured
    with relay.smtp(submission=True) as client:
        assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]


def test_mx_port_accepts_local_and_backup_users(relay: RelayProcess) -> None:
    with relay.smtp() as client:
        assert rcpt(client, "alice@alpha.test")[0] == 250
        assert rcpt(client, "bob@beta.test")[0] == 250


def test_unknown_local_user_is_550_5_1_1(relay: RelayProcess) -> None:
    with relay.smtp() as client:
        for address in ("zed@alpha.test", "zed@beta.test"):
            code, text = rcpt(client, address)
            assert (code, text[:5]) == (550, b"5.1.1")


@pytest.mark.parametrize(
    "address",
    [
        "victim@gamma.test",
        "victim%gamma.test@alpha.test",
        '"victim@gamma.test"@alpha.test',
        "@alpha.test:victim@gamma.test",
        "@gamma.test:alice@alpha.test",
    ],
)
def test_no_open_relay(relay: RelayProcess, address: str) -> None:
    with relay.smtp() as client:
        client.mail("spammer@elsewhere.test")
        code, text = client.docmd(f"RCPT TO:<{address}>")
        assert code in (553, 554) and text.startswith(b"5.7.1"), (code, text)


def test_a_trusted_relay_may_relay(relay: RelayProcess) -> None:
    with trusted_client(relay) as client:
        assert rcpt(client, "victim@gamma.test")[0] == 250


def test_auth_plain_then_relay_to_a_foreign_domain(relay: RelayProcess) -> None:
    with relay.smtp(submission=True) as client:
        client.login("alice@alpha.test", "alice-secret")
        refused = client.sendmail("alice@alpha.test", ["carol@gamma.test"], message("auth"))
        assert refused == {}
    event = relay.wait_event("received", **{"to": ["carol@gamma.test"]})
    assert event["from"] == "alice@alpha.test"


def test_auth_login_mechanism(relay: RelayProcess) -> None:
    with relay.smtp(submission=True) as client:
        code, _ = client.docmd("AUTH LOGIN")
        assert code == 334
        client.docmd(base64.b64encode(b"alice@alpha.test").decode())
        code, text = client.docmd(base64.b64encode(b"alice-secret").decode())
        assert (code, text[:5]) == (235, b"2.7.0")


def test_bad_password_is_535(relay: RelayProcess) -> None:
    with relay.smtp(submission=True) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login("alice@alpha.test", "wrong")
        assert info.value.smtp_code == 535
        code, text = client.docmd("MAIL FROM:<alice@alpha.test>")
        assert (code, text[:5]) == (530, b"5.7.0")


def test_unauthenticated_submission_is_refused(relay: RelayProcess) -> None:
    with relay.smtp(submission=True) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            client.sendmail("alice@alpha.test", ["carol@gamma.test"], message("noauth"))
        assert info.value.smtp_code == 530


def test_auth_is_not_offered_on_the_mx_port(relay: RelayProcess) -> None:
    with relay.smtp() as client:
        auth = base64.b64encode(b"\0alice@alpha.test\0alice-secret").decode()
        assert client.docmd(f"AUTH PLAIN {auth}")[0] == 504
        client.mail("x@elsewhere.test")
        assert client.rcpt("victim@gamma.test")[0] == 554


def test_size_is_enforced(relay: RelayProcess) -> None:
    with relay.smtp() as client:
        code, _ = client.mail("x@elsewhere.test", ["SIZE=20001"])
        assert code == 552
        client.rset()
        big = message("big", rcpt="alice@alpha.test") + (b"x" * 70 + b"\r\n") * 400
        client.mail("x@elsewhere.test")  # no SIZE: the limit bites during DATA
        client.rcpt("alice@alpha.test")
        assert client.data(big)[0] == 552


def _peak_rss(relay: RelayProcess) -> int:
    """The relay process's peak resident memory so far, in bytes (VmHWM)."""
    assert relay.proc is not None
    status = Path(f"/proc/{relay.proc.pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]


def test_size_limit_holds_while_data_is_read(relay: RelayProcess) -> None:
    """RFC 1870 §6: 40 MB against a 20 kB limit are read and dropped as they come,
    never held: the relay's peak memory does not grow by the message."""
    before = _peak_rss(relay)
    block = (b"y" * 998 + b"\r\n") * 1000
    with relay.smtp() as client:
        client.mail("x@elsewhere.test")
        client.rcpt("alice@alpha.test")
        assert client.docmd("DATA")[0] == 354
        for _ in range(40):
            client.send(block)
        client.send(b".\r\n")
        code, text = client.getreply()
        assert (code, text[:5]) == (552, b"5.3.4")
        assert client.noop()[0] == 250
    assert _peak_rss(relay) - before < 8 * 1024 * 1024


def test_too_many_received_headers_is_a_loop(relay: RelayProcess) -> None:
    looping = b"Received: from a by b; now\r\n" * 6 + message("loop", rcpt="alice@alpha.test")
    with relay.smtp() as client, pytest.raises(smtplib.SMTPDataError) as info:
        client.sendmail("x@elsewhere.test", ["alice@alpha.test"], looping)
    assert info.value.smtp_code == 554 and info.value.smtp_error.startswith(b"5.4.6")
    ok = b"Received: from a by b; now\r\n" * 5 + message("no loop", rcpt="alice@alpha.test")
    with relay.smtp() as client:
        assert client.sendmail("x@elsewhere.test", ["alice@alpha.test"], ok) == {}


def test_bare_lf_is_refused_against_smuggling(relay: RelayProcess) -> None:
    """RFC 5321 §2.3.8: `\\n.\\r\\n` must not end the data here or downstream."""
    smuggled = (
        b"Subject: outer\r\n\r\nhello\n.\r\nMAIL FROM:<x@y>\r\nRCPT TO:<victim@gamma.test>\r\n"
    )
    with relay.smtp() as client:
        client.mail("x@elsewhere.test")
        client.rcpt("alice@alpha.test")
        client.send(b"DATA\r\n")
        assert client.getreply()[0] == 354
        client.send(smuggled + b".\r\n")
        code, text = client.getreply()
        assert code == 550 and text.startswith(b"5.6.0")
        assert client.noop()[0] == 250  # still serving


def test_pipelined_transaction(relay: RelayProcess) -> None:
    """RFC 2920: the commands of one transaction sent in one write."""
    with relay.smtp() as client:
        client.send(
            b"MAIL FROM:<x@elsewhere.test>\r\nRCPT TO:<alice@alpha.test>\r\n"
            b"RCPT TO:<nobody@alpha.test>\r\nDATA\r\n"
        )
        codes = [client.getreply()[0] for _ in range(4)]
        assert codes == [250, 250, 550, 354]
        client.send(message("pipelined", rcpt="alice@alpha.test") + b".\r\n")
        code, text = client.getreply()
        assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")


def test_protocol_errors_do_not_stop_the_server(relay: RelayProcess) -> None:
    with relay.smtp() as client:
        assert client.docmd("BOGUS")[0] == 500
        assert client.docmd("RCPT TO:<alice@alpha.test>")[0] == 503
        assert client.docmd("MAIL FROM:<<<")[0] in (501, 553)
    with relay.smtp() as client:
        assert client.noop()[0] == 250


def test_help_lists_the_commands_and_gives_their_syntax(relay: RelayProcess) -> None:
    with relay.smtp() as client:
        code, listing = client.docmd("HELP")
        assert code == 250
        assert {"EHLO", "MAIL", "RCPT", "DATA", "BDAT", "QUIT"} <= set(listing.decode().split())
        code, mail = client.docmd("HELP MAIL")
        assert code == 250 and b"MAIL FROM: <address>" in mail
        assert client.docmd("HELP FROB")[0] == 501


def test_every_reply_carries_an_enhanced_status_code(relay: RelayProcess) -> None:
    """RFC 2034 §3: after EHLO, aiosmtpd's own replies get codes too."""
    commands = [
        "NOOP", "HELP", "BOGUS", "VRFY x", "EXPN x", "RCPT TO:<a@alpha.test>", "DATA",
        "MAIL FROM:<x@y.test> FOO=BAR", "MAIL FROM:<x@y.test>", "MAIL FROM:<x@y.test>",
        "RCPT TO:<a@alpha.test> FOO=BAR", "RSET", "AUTH PLAIN", "STARTTLS", "QUIT",
    ]  # fmt: skip
    with relay.smtp() as client:
        replies = [client.docmd(c) for c in commands]
    for command, (code, text) in zip(commands, replies, strict=True):
        assert re.match(rb"[245]\.\d{1,3}\.\d{1,3} ", text), (command, code, text)


def test_swaks_submission(relay: RelayProcess, tmp_path: Path) -> None:
    if shutil.which("swaks") is None:
        pytest.skip("swaks not installed")
    cmd = [
        "swaks",
        "--server", relay.config.address,
        "--port", str(relay.config.submission_port),
        "--auth", "PLAIN", "--auth-user", "alice@alpha.test", "--auth-password", "alice-secret",
        "--from", "alice@alpha.test", "--to", "dave@delta.test",
        "--header", "Subject: swaks",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "250 2.0.0 Ok: queued as" in out.stdout
    relay.wait_event("received", **{"to": ["dave@delta.test"]})


def test_bdat_chunks_arrive_as_one_message(relay: RelayProcess, smarthost: Sink) -> None:
    """RFC 3030: chunks without dot-stuffing; the bytes travel on unchanged."""
    body = message("chunked", rcpt="carl@gamma.test") + b".a line with a dot\r\n"
    chunks = [body[:17], body[17:60], body[60:]]
    with smtplib.SMTP(
        relay.config.address, relay.config.smtp_port, source_address=(TRUSTED, 0)
    ) as c:
        c.ehlo("relay0.test")
        c.mail("x@elsewhere.test")
        c.rcpt("carl@gamma.test")
        for n, chunk in enumerate(chunks):
            last = " LAST" if n == len(chunks) - 1 else ""
            c.send(f"BDAT {len(chunk)}{last}\r\n".encode() + chunk)
            code, text = c.getreply()
            assert code == 250, text
        assert text.startswith(b"2.0.0 Ok: queued as")
    got = wait_for(lambda: [m for m in smarthost.messages if m.rcpts == ["carl@gamma.test"]])
    assert split_trace(got[0].content)[1] == body


def test_bdat_errors_keep_the_stream_in_step(relay: RelayProcess) -> None:
    with relay.smtp() as client:
        client.send(b"BDAT 5 LAST\r\nhello")  # no transaction: 503, chunk skipped
        assert client.getreply()[0] == 503
        client.send(b"BDAT 5\r\nhello")
        assert client.getreply()[0] == 503
        assert client.noop()[0] == 250
        client.mail("x@elsewhere.test")  # a later transaction is not tainted
        client.rcpt("alice@alpha.test")
        client.send(b"BDAT 14 LAST\r\nSubject: s\r\n\r\n")
        assert client.getreply()[0] == 250
        client.mail("x@elsewhere.test")
        client.rcpt("alice@alpha.test")
        client.send(b"BDAT 30000\r\n" + b"x" * 30000)  # over SIZE 20000: read, refused
        assert client.getreply()[0] == 552
        client.send(b"BDAT 3 LAST\r\nabc")
        assert client.getreply()[0] == 552  # the transaction stays failed to the end
        client.mail("x@elsewhere.test")
        client.rcpt("alice@alpha.test")
        client.send(b"BDAT 3\r\nabc")
        assert client.getreply()[0] == 250
        assert client.docmd("DATA")[0] == 503  # RFC 3030 §2: no mixing
        assert client.docmd("BDAT x")[0] == 501


def test_dsn_parameters_are_accepted_and_checked(relay: RelayProcess) -> None:
    with relay.smtp() as client:
        assert client.docmd("MAIL FROM:<x@elsewhere.test> RET=HDRS ENVID=Q+2Bx")[0] == 250
        ok = client.docmd("RCPT TO:<alice@alpha.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a@b")
        assert ok[0] == 250
        assert client.docmd("RCPT TO:<alice@alpha.test> NOTIFY=NEVER,SUCCESS")[0] == 501
        assert client.docmd("RCPT TO:<alice@alpha.test> NOTIFY=SOMETIMES")[0] == 501
        assert client.docmd("RCPT TO:<alice@alpha.test> ORCPT=no-type")[0] == 501
        client.rset()
        assert client.docmd("MAIL FROM:<x@elsewhere.test> RET=ALL")[0] == 501


def test_a_recipient_named_twice_gets_one_copy(relay: RelayProcess, smarthost: Sink) -> None:
    with trusted_client(relay) as client:
        client.sendmail("x@elsewhere.test", ["dup@gamma.test", "DUP@gamma.test"], message("dup"))
    got = wait_for(lambda: [m for m in smarthost.messages if "dup@gamma.test" in m.rcpts])
    assert got[0].rcpts == ["dup@gamma.test"]


def test_postfix_smtp_source_pipelines_into_the_relay(relay: RelayProcess, store: Sink) -> None:
    """Postfix's load generator, with PIPELINING, as a client: every message lands."""
    if shutil.which("smtp-source") is None:
        pytest.skip("smtp-source (postfix) not installed")
    target = f"{relay.config.address}:{relay.config.smtp_port}"
    cmd = ["smtp-source", "-s", "3", "-m", "15", "-l", "2000", "-f", "ps@elsewhere.test",
           "-t", "alice@alpha.test", target]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=60)

    def landed() -> list:
        return [m for m in store.messages if m.sender == "ps@elsewhere.test"]

    wait_for(lambda: len(landed()) >= 15, what="15 messages at the store")
    assert len(landed()) == 15 and all(m.rcpts == ["alice@alpha.test"] for m in landed())
