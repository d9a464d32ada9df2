"""The relay's extensions, limits and errors driven by swaks, the SMTP test tool, as
an operator would probe a production MTA.

swaks 20201014 (Debian) has no options for MAIL/RCPT parameters; it writes
``MAIL FROM:<$from>`` as given, so a parameter goes after the address and the
closing ``>`` lands inside a last xtext value (ENVID, ORCPT), where it is legal
(RFC 3461 §4). BDAT has no swaks form at all: test_relay_smtpd.py sends it raw.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest

from mxlab.lab.checks import split_trace
from mxlab.nodes.config import LocalDomain
from mxlab.nodes.passwords import hash_password
from tests.conftest import wait_for
from tests.test_relay_support import RelayProcess, Sink, make_tls, new_address, relay_config

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")

TRUSTED = new_address()  # the relay before this one in a chain
LIMIT = 20_000  # SIZE


@pytest.fixture(scope="module")
def hops() -> Iterator[tuple[Sink, Sink]]:
    """The smarthost for foreign domains and the LMTP store of alpha.test."""
    smarthost, store = Sink().start(), Sink(lmtp=True, smtputf8=True).start()
    yield smarthost, store
    smarthost.stop()
    store.stop()


@pytest.fixture(scope="module")
def relay(
    tmp_path_factory: pytest.TempPathFactory, hops: tuple[Sink, Sink]
) -> Iterator[RelayProcess]:
    """TLS from a lab CA, and AUTH only after STARTTLS (plaintext AUTH off)."""
    tmp = tmp_path_factory.mktemp("swaks")
    address = new_address()
    config = relay_config(
        tmp,
        address=address,
        fqdn="mx.alpha.test",
        tls=make_tls(tmp / "tls", "mx.alpha.test", address),
        local_domains={"alpha.test": LocalDomain(lmtp=hops[1].endpoint, users=["alice", "bob"])},
        auth_users={"alice@alpha.test": hash_password("alice-secret")},
        allow_plaintext_auth=False,
        trusted_clients=[TRUSTED],
        next_hop=hops[0].endpoint,
        max_message_size=LIMIT,
    )
    proc = RelayProcess(config, tmp).start()
    yield proc
    proc.stop()


def swaks(relay: RelayProcess, *args: str, submission: bool = False) -> tuple[int, str]:
    """Run swaks against the relay; its exit code and its transcript."""
    port = relay.config.submission_port if submission else relay.config.smtp_port
    cmd = ["swaks", "--server", relay.config.address, "--port", str(port), "--timeout", "10"]
    cmd += ["--helo", "client.test", "--from", "someone@elsewhere.test", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


def replies(transcript: str) -> list[str]:
    """The server's replies in a swaks transcript (plain and inside TLS)."""
    return [line[4:].strip() for line in transcript.splitlines() if line[:2] in ("<-", "<*", "<~")]


def queued(transcript: str) -> str:
    m = re.search(r"250 2\.0\.0 Ok: queued as (\w+)", transcript)
    assert m, transcript
    return m.group(1)


def arrived(sink: Sink, qid: str) -> bytes:
    """The message a hop received, found by the relay's queue id in its trace."""
    got = wait_for(lambda: [m for m in sink.messages if qid.encode() in m.content])
    return got[0].content


def test_pipelining(relay: RelayProcess, hops: tuple[Sink, Sink]) -> None:
    """RFC 2920: swaks sends MAIL, RCPT, DATA in one write when PIPELINING is offered."""
    code, out = swaks(relay, "--pipeline", "--to", "alice@alpha.test,bob@alpha.test")
    assert code == 0, out
    assert "250-PIPELINING" in out
    assert re.search(r" -> MAIL FROM.*\n -> RCPT TO.*\n -> RCPT TO.*\n -> DATA", out), out
    content = arrived(hops[1], queued(out))
    assert b"by mx.alpha.test (mxlab) with ESMTP" in content


def test_every_reply_after_ehlo_has_an_enhanced_code(relay: RelayProcess) -> None:
    """RFC 2034 §3, on a transcript with successes and failures alike."""
    code, out = swaks(relay, "--to", "alice@alpha.test,nobody@alpha.test,victim@gamma.test")
    assert code == 0, out
    answered = replies(out)
    assert answered[0].startswith("220") and "ENHANCEDSTATUSCODES" in out
    ehlo_end = next(n for n, r in enumerate(answered) if r.startswith("250 "))  # RFC 2034 §3
    after_ehlo = answered[ehlo_end + 1 :]
    assert len(after_ehlo) >= 6
    for reply in after_ehlo:  # 354 is no completion: it has none (RFC 3463 §2)
        assert reply.startswith("354") or re.match(r"\d{3} [245]\.\d{1,3}\.\d{1,3} ", reply), reply


def test_size_is_advertised_and_enforced_during_data(relay: RelayProcess) -> None:
    code, out = swaks(
        relay, "--to", "alice@alpha.test", "--body", "x" * 70 + "\n" * 0 + ("y" * 70 + "\n") * 400
    )
    assert f"250-SIZE {LIMIT}" in out
    assert code != 0 and "552 5.3.4" in out, out
    code, out = swaks(
        relay, "--to", "alice@alpha.test", "--from", f"a@elsewhere.test> SIZE={LIMIT + 1} ENVID=s"
    )
    assert code != 0 and re.search(r"552 5\.3\.4 .*\n", out), out  # declared too big: at MAIL


def test_8bit_data_and_body_8bitmime_travel_unchanged(
    relay: RelayProcess, hops: tuple[Sink, Sink]
) -> None:
    """RFC 6152: BODY=8BITMIME is taken and 8-bit bytes reach the next hop as sent."""
    body = "Grüße aus Köln, 8 bit\n"
    code, out = swaks(
        relay,
        "--to", "alice@alpha.test",
        "--from", "a@elsewhere.test> BODY=8BITMIME ENVID=e8",
        "--header", "Subject: 8bit",
        "--body", body,
    )  # fmt: skip
    assert code == 0, out
    assert "250-8BITMIME" in out
    content = arrived(hops[1], queued(out))
    assert "Grüße aus Köln".encode() in content


def test_smtputf8_address_needs_the_parameter(relay: RelayProcess, hops: tuple[Sink, Sink]) -> None:
    """RFC 6531 §3.2: a UTF-8 address only in an SMTPUTF8 transaction."""
    code, out = swaks(relay, "--to", "jörg@gamma.test", "--from", "a@elsewhere.test")
    assert code != 0 and "553 5.6.7" in out, out
    code, out = swaks(
        relay, "--to", "alice@alpha.test", "--from", "jörg@elsewhere.test> SMTPUTF8 ENVID=u"
    )
    assert code == 0 and "250-SMTPUTF8" in out, out
    assert arrived(hops[1], queued(out))


def swaks_tls() -> None:
    """swaks speaks TLS through Perl's Net::SSLeay (Debian: libnet-ssleay-perl)."""
    done = subprocess.run(["perl", "-MNet::SSLeay", "-e", "1"], capture_output=True)
    if done.returncode != 0:
        pytest.skip("swaks has no TLS here: install libnet-ssleay-perl")


def test_starttls_with_the_lab_ca(relay: RelayProcess) -> None:
    """RFC 3207: the certificate verifies against the lab CA made by the planner."""
    swaks_tls()
    ca = Path(relay.config.tls.ca)  # type: ignore[union-attr]
    code, out = swaks(
        relay, "--to", "alice@alpha.test", "--tls", "--tls-verify", "--tls-ca-path", str(ca),
        "--tls-sni", "mx.alpha.test",
    )  # fmt: skip
    assert code == 0, out
    assert "TLS started" in out and "250 2.0.0 Ok: queued as" in out


def test_auth_only_on_submission_and_only_after_starttls(relay: RelayProcess) -> None:
    """RFC 4954 §4/§14: no AUTH on the MX port; on 587 only inside TLS unless the
    topology allows plaintext AUTH (the relay of test_relay_smtpd allows it)."""
    swaks_tls()
    auth = ["--auth", "PLAIN", "--auth-user", "alice@alpha.test", "--auth-password", "alice-secret"]
    to = ["--to", "carol@gamma.test", "--from", "alice@alpha.test"]
    code, out = swaks(relay, *to, *auth)  # the MX port
    assert code != 0 and "250-AUTH" not in out, out
    code, out = swaks(relay, *to, *auth, submission=True)  # 587, no TLS
    assert code != 0 and "250-AUTH" not in out, out
    code, out = swaks(relay, *to, "--auth", "LOGIN", "--auth-user", "alice@alpha.test",
                      "--auth-password", "alice-secret", "--tls", submission=True)  # fmt: skip
    assert code == 0 and "235 2.7.0" in out, out
    code, out = swaks(relay, *to, *auth[:-1], "wrong", "--tls", submission=True)
    assert code != 0 and "535 5.7.8" in out, out


def test_dsn_parameters_and_the_success_notice(
    relay: RelayProcess, hops: tuple[Sink, Sink]
) -> None:
    """RFC 3461: RET/ENVID on MAIL, NOTIFY/ORCPT on RCPT; the smarthost has no DSN,
    so the relay reports "relayed" to the sender itself (§6.2.1)."""
    code, out = swaks(
        relay,
        "--from", "bob@alpha.test> RET=HDRS ENVID=swaks-envid",
        "--to", "dave@delta.test> NOTIFY=SUCCESS ORCPT=rfc822;dave@delta.test",
        "--header", "Subject: dsn",
        "--local-interface", TRUSTED,
    )  # fmt: skip
    assert code == 0, out
    qid = queued(out)
    arrived(hops[0], qid)
    notice = wait_for(lambda: [m for m in hops[1].messages if b"swaks-envid" in m.content])[0]
    assert notice.rcpts == ["bob@alpha.test"] and notice.sender == "<>"
    report = message_from_bytes(split_trace(notice.content)[1])
    assert report.get_content_type() == "multipart/report"
    assert b"Action: relayed" in notice.content
    assert b"Original-Envelope-Id: swaks-envid" in notice.content
    code, out = swaks(relay, "--to", "alice@alpha.test> NOTIFY=SOMETIMES ORCPT=rfc822;a")
    assert code != 0 and "501 5.5.4" in out, out


def test_bare_lf_and_bare_cr_are_refused(relay: RelayProcess) -> None:
    """RFC 5321 §2.3.8: the SMTP smuggling material never passes."""
    for smuggled in ("hello\n.\r\nMAIL FROM:<x@y>\r\n", "hello\r.\r\nRCPT TO:<v@gamma.test>\r\n"):
        data = f"Subject: smuggle\r\n\r\n{smuggled}.\r\n"
        code, out = swaks(relay, "--to", "alice@alpha.test", "--no-data-fixup", "--data", data)
        assert code != 0 and "550 5.6.0" in out, out


def test_line_and_command_length_limits(relay: RelayProcess) -> None:
    """RFC 5321 §4.5.3.1.4 (512-octet command lines), §4.5.3.1.6 (1000-octet text)."""
    code, out = swaks(relay, "--to", "alice@alpha.test", "--body", "z" * 1200)
    assert code != 0 and "500 5.5.2 line too long" in out, out
    code, out = swaks(relay, "--to", "a" * 600 + "@alpha.test")
    assert code != 0 and "500 5.5.2 Command line too long" in out, out
    code, out = swaks(relay, "--to", "alice@alpha.test", "--body", "z" * 998)
    assert code == 0, out  # the longest line allowed


@pytest.mark.parametrize(
    ("address", "refusal"),
    [
        ("victim@gamma.test", "554 5.7.1 relay access denied"),
        ("victim%gamma.test@alpha.test", "554 5.7.1 relay access denied"),  # %-hack
        ("gamma.test!victim@alpha.test", "554 5.7.1 relay access denied"),  # bang path
        ('"victim@gamma.test"@alpha.test', "554 5.7.1 relay access denied"),  # quoted
        ("@alpha.test:victim@gamma.test", "553 5.7.1 source routes"),  # RFC 5321 §3.6.1
        ("@gamma.test:alice@alpha.test", "553 5.7.1 source routes"),
        ("victim@gamma.test@alpha.test", "553 5.1.3"),  # not an address at all
    ],
)
def test_no_open_relay_under_any_probe(relay: RelayProcess, address: str, refusal: str) -> None:
    code, out = swaks(relay, "--to", address)
    assert code == 24, out  # swaks: every recipient refused
    assert f"<** {refusal}" in out, out


def test_a_trusted_relay_may_relay(relay: RelayProcess, hops: tuple[Sink, Sink]) -> None:
    code, out = swaks(relay, "--to", "victim@gamma.test", "--local-interface", TRUSTED)
    assert code == 0, out
    arrived(hops[0], queued(out))


def test_error_budget_drops_a_client_that_keeps_failing(relay: RelayProcess) -> None:
    """Postfix's smtpd_hard_error_limit (20): then 421 and the connection closes."""
    strangers = ",".join(f"victim{n}@gamma.test" for n in range(25))
    code, out = swaks(relay, "--to", strangers)
    assert code != 0
    refused = [r for r in replies(out) if r.startswith("554 5.7.1")]
    assert len(refused) == 20 and "421 4.7.0 too many errors" in out, out


def test_connection_budget_per_client(relay: RelayProcess) -> None:
    """Postfix's smtpd_client_connection_count_limit (50) per client address; a
    trusted relay is exempt, and a freed slot is usable again."""
    client = new_address()
    held: list[socket.socket] = []
    try:
        for _ in range(50):
            sock = socket.create_connection(
                (relay.config.address, relay.config.smtp_port), source_address=(client, 0)
            )
            held.append(sock)
            assert sock.recv(3) == b"220"
        code, out = swaks(relay, "--to", "alice@alpha.test", "--local-interface", client)
        assert code != 0 and "421 4.7.0 too many connections" in out, out
        code, out = swaks(relay, "--to", "alice@alpha.test", "--local-interface", TRUSTED)
        assert code == 0, out
        held.pop().close()

        def admitted() -> bool:
            code, _ = swaks(relay, "--to", "alice@alpha.test", "--local-interface", client)
            return code == 0

        wait_for(admitted, what="a freed connection slot")
    finally:
        for sock in held:
            sock.close()
