"""The store as a real node process: deliver by LMTP (smtplib.LMTP), read back with
imaplib, poplib and imapclient, and survive a SIGKILL right after a 250."""

from __future__ import annotations

import base64
import imaplib
import poplib
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

from mxlab.lab.checks import split_trace
from tests.test_relay_support import make_tls
from tests.test_store_support import (
    PASSWORDS,
    StoreProcess,
    deliver,
    free_port,
    message,
    running_store,
    unique,
)

RECEIVED = re.compile(
    rb"^Received: from relay\.alpha\.test \(127\.\d+\.\d+\.\d+\) by store\.alpha\.test"
    rb" \(mxlab store\) with LMTP id \w+ for <alice@alpha\.test>; \w{3}, \d+ \w{3} \d{4} ",
    re.M,
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    yield from running_store(tmp_path_factory.mktemp("store"), "127.20.0.1")


def imap_message(imap: imaplib.IMAP4, subject: str) -> tuple[bytes, bytes]:
    """(sequence number, raw bytes) of the one message with this Message-ID."""
    imap.select("INBOX", readonly=True)
    typ, data = imap.search(None, "HEADER", "Message-ID", f"<{subject}@beta.test>")
    assert typ == "OK" and len(data[0].split()) == 1, data
    num = data[0].split()[0]
    typ, parts = imap.fetch(num, "(BODY.PEEK[])")
    assert typ == "OK"
    return num, parts[0][1]


def test_delivered_bytes_and_trace_survive_both_protocols(node: StoreProcess) -> None:
    subject = unique("exact")
    body = b"first\r\n.starts with a dot\r\n..two dots\r\n\r\nlast line\r\n"
    sent = message(subject, body)
    deliver(node, sent)
    imap = node.imap()
    _, raw = imap_message(imap, subject)
    imap.logout()
    hosts, rest = split_trace(raw)
    assert hosts == ["store.alpha.test"]
    assert rest == sent
    assert RECEIVED.search(raw), raw[:400]
    assert raw.startswith(b"Return-Path: <carol@beta.test>\r\nDelivered-To: alice@alpha.test\r\n")
    pop = node.pop3()
    try:
        count, _ = pop.stat()
        found = []
        for n in range(1, count + 1):
            _, lines, octets = pop.retr(n)
            got = b"\r\n".join(lines) + b"\r\n"
            if subject.encode() in got:
                found.append((got, octets))
        assert len(found) == 1
        got, _ = found[0]
        assert got == raw
        listing = dict(line.split() for line in pop.list()[1])
        assert str(len(raw)).encode() in listing.values()
    finally:
        pop.quit()


def _lmtp_dialogue(node: StoreProcess, lines: list[bytes]) -> bytes:
    with socket.create_connection((node.address, node.config.lmtp_port), 5) as sock:
        sock.settimeout(5)
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"".join(lines))
        out = b""
        while not re.search(rb"^221", out, re.M):
            line = f.readline()
            if not line:
                break
            out += line
        return out


def test_lmtp_replies_per_recipient_and_refuses_unknown_users(node: StoreProcess) -> None:
    subject = unique("multi")
    data = message(subject)
    out = _lmtp_dialogue(
        node,
        [
            b"LHLO relay.alpha.test\r\n",
            b"MAIL FROM:<carol@beta.test>\r\n",
            b"RCPT TO:<alice@alpha.test>\r\n",
            b"RCPT TO:<nobody@alpha.test>\r\n",
            b"RCPT TO:<bob@alpha.test>\r\n",
            b"DATA\r\n",
            data + b".\r\n",
            b"QUIT\r\n",
        ],
    )
    assert b"550 5.1.1" in out
    # RFC 2033 §5: an LMTP server must offer these two
    assert b"250-PIPELINING\r\n" in out and b"250-ENHANCEDSTATUSCODES\r\n" in out
    after_data = out.split(b"354", 1)[1]
    replies = re.findall(rb"^250 2\.0\.0 <([^>]+)> delivered", after_data, re.M)
    assert replies == [b"alice@alpha.test", b"bob@alpha.test"]  # RFC 2033 §4.2
    for user in ("alice@alpha.test", "bob@alpha.test"):
        imap = node.imap(user)
        _, raw = imap_message(imap, subject)
        assert f"Delivered-To: {user}\r\n".encode() in raw
        imap.logout()


def test_idle_hears_lmtp_delivery(node: StoreProcess) -> None:
    with IMAPClient(node.address, port=node.config.imap_port, ssl=False, timeout=10) as client:
        client.login("bob@alpha.test", PASSWORDS["bob@alpha.test"])
        before = client.select_folder("INBOX")[b"EXISTS"]
        client.idle()
        deliver(node, message(unique("idle")), ["bob@alpha.test"])
        started = time.monotonic()
        responses = client.idle_check(timeout=5)
        client.idle_done()
        assert (before + 1, b"EXISTS") in responses
        assert time.monotonic() - started < 2  # pushed, not found by a slow poll


def test_new_mail_and_pop3_deletes_reach_an_open_imap_session(node: StoreProcess) -> None:
    subject = unique("shared")
    imap = node.imap()
    imap.select("INBOX")
    typ, data = imap.search(None, "ALL")
    before = len(data[0].split())
    deliver(node, message(subject))
    typ, data = imap.noop()
    assert imap.untagged_responses.get("EXISTS", [b"0"])[-1] == str(before + 1).encode()
    pop = node.pop3()
    with pytest.raises(poplib.error_proto, match=r"IN-USE"):
        node.pop3()
    count, _ = pop.stat()
    pop.dele(count)  # the newest one: ours
    pop.quit()
    imap.noop()
    assert imap.untagged_responses.get("EXPUNGE") == [str(before + 1).encode()]
    imap.logout()


def test_imapclient_folders_append_copy_move_search(node: StoreProcess) -> None:
    with IMAPClient(node.address, port=node.config.imap_port, ssl=False, timeout=10) as client:
        client.login("bob@alpha.test", PASSWORDS["bob@alpha.test"])
        assert client.find_special_folder(b"\\Sent") == "Sent"
        name = unique("Project")
        client.create_folder(name)
        assert client.folder_exists(name)
        subject = unique("append")
        data = message(subject)
        client.append(name, data, flags=[b"\\Flagged"])
        client.select_folder(name)
        uids = client.search(["SUBJECT", subject])
        assert len(uids) == 1
        fetched = client.fetch(uids, ["RFC822.SIZE", "BODY.PEEK[]", "FLAGS", "ENVELOPE"])
        item = fetched[uids[0]]
        assert item[b"BODY[]"] == data and item[b"RFC822.SIZE"] == len(data)
        assert b"\\Flagged" in item[b"FLAGS"]
        assert item[b"ENVELOPE"].subject == subject.encode()
        client.copy(uids, "Trash")
        client.move(uids, "Junk")
        assert client.search(["ALL"]) == []
        client.select_folder("Junk")
        assert client.search(["SUBJECT", subject]) != []
        client.rename_folder(name, name + "-old")
        assert client.folder_exists(name + "-old") and not client.folder_exists(name)
        client.delete_folder(name + "-old")


def test_bad_input_gets_bad_and_the_session_goes_on(node: StoreProcess) -> None:
    with socket.create_connection((node.address, node.config.imap_port), 5) as sock:
        sock.settimeout(5)
        f = sock.makefile("rb")
        assert f.readline().startswith(b"* OK")
        sock.sendall(b"a1 FETCH ((((\r\n\x00\xff garbage\r\na2 NOOP\r\n")
        lines = [f.readline() for _ in range(3)]
        assert lines[0].startswith(b"a1 BAD")
        assert lines[1].startswith(b"* BAD") or lines[1].split()[1] == b"BAD"
        assert lines[2] == b"a2 OK NOOP completed\r\n"


def test_appends_are_not_stalled_by_nagle(node: StoreProcess) -> None:
    """imaplib sends a literal and its CRLF as two writes (REFERENCES.md)."""
    imap = node.imap("bob@alpha.test")
    started = time.monotonic()
    for n in range(20):
        imap.append("Drafts", None, None, message(unique(f"draft{n}")))
    elapsed = time.monotonic() - started
    imap.logout()
    assert elapsed < 0.6, f"20 APPENDs took {elapsed:.2f}s"


def test_sigkill_right_after_250_loses_nothing(tmp_path: Path) -> None:
    node = StoreProcess(tmp_path, "127.20.0.2")
    node.start()
    try:
        subject = unique("durable")
        deliver(node, message(subject))
        node.stop(signal.SIGKILL)
        node.start()
        imap = node.imap()
        _, raw = imap_message(imap, subject)
        assert split_trace(raw)[1] == message(subject)
        typ, data = imap.status("INBOX", "(UIDVALIDITY UIDNEXT)")
        imap.logout()
        first_status = data[0]
        node.stop()
        node.start()
        deliver(node, message(unique("after")))
        imap = node.imap()
        typ, data = imap.status("INBOX", "(UIDVALIDITY UIDNEXT MESSAGES)")
        imap.logout()
        validity = re.search(rb"UIDVALIDITY (\d+)", first_status)
        assert validity and validity.group(0) in data[0]  # UIDVALIDITY persisted
        assert b"UIDNEXT 3" in data[0] and b"MESSAGES 2" in data[0]
    finally:
        node.stop()


def test_starttls_stls_and_implicit_tls(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "pki", "store.alpha.test", "127.20.0.4")
    node = StoreProcess(
        tmp_path,
        "127.20.0.4",
        tls=tls,
        allow_plaintext_auth=False,
        imaps_port=free_port("127.20.0.4"),
        pop3s_port=free_port("127.20.0.4"),
    )
    node.start()
    context = ssl.create_default_context(cafile=tls.ca)
    user, password = "alice@alpha.test", PASSWORDS["alice@alpha.test"]
    try:
        imap = imaplib.IMAP4(node.address, node.config.imap_port, timeout=10)
        assert "STARTTLS" in imap.capabilities and "LOGINDISABLED" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            imap.login(user, password)
        imap.starttls(context)  # checks the lab CA signed store.alpha.test
        assert "STARTTLS" not in imap.capabilities
        assert imap.login(user, password)[0] == "OK"
        imap.logout()
        pop = poplib.POP3(node.address, node.config.pop3_port, timeout=10)
        assert "STLS" in pop.capa() and "USER" not in pop.capa()
        pop.stls(context)
        pop.user(user)
        assert pop.pass_(password).startswith(b"+OK")
        pop.quit()
        assert node.config.imaps_port and node.config.pop3s_port
        with imaplib.IMAP4_SSL(
            node.address, node.config.imaps_port, ssl_context=context, timeout=10
        ) as imaps:
            assert imaps.login(user, password)[0] == "OK"
        pops = poplib.POP3_SSL(node.address, node.config.pop3s_port, context=context, timeout=10)
        pops.user(user)
        assert pops.pass_(password).startswith(b"+OK")
        pops.quit()
    finally:
        node.stop()


def test_busy_port_is_one_clear_line(node: StoreProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mxlab.nodes", "store", "--config", str(node.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"store1: cannot listen on {node.address}:{node.config.lmtp_port}: Address already in use"
    ]


def test_imapclient_condstore_resync(node: StoreProcess) -> None:
    """RFC 7162 as a client library drives it: ENABLE, HIGHESTMODSEQ on SELECT,
    FETCH CHANGEDSINCE, SEARCH MODSEQ, STATUS HIGHESTMODSEQ."""
    with IMAPClient(node.address, port=node.config.imap_port, ssl=False, timeout=10) as client:
        client.login("bob@alpha.test", PASSWORDS["bob@alpha.test"])
        assert client.has_capability("CONDSTORE")
        assert client.enable("CONDSTORE") == [b"CONDSTORE"]
        folder = unique("Sync")
        client.create_folder(folder)
        for n in range(3):
            client.append(folder, message(unique(f"sync{n}")))
        before = client.select_folder(folder)[b"HIGHESTMODSEQ"]
        uids = client.search(["ALL"])
        client.add_flags(uids[1:2], [b"\\Flagged"])
        changed = client.fetch(uids, ["FLAGS"], modifiers=[f"CHANGEDSINCE {before}"])
        assert list(changed) == uids[1:2]
        assert changed[uids[1]][b"MODSEQ"][0] > before
        assert b"\\Flagged" in changed[uids[1]][b"FLAGS"]
        found = client.search(["MODSEQ", str(before + 1)])
        assert found == uids[1:2] and found.modseq == changed[uids[1]][b"MODSEQ"][0]
        status = client.folder_status(folder, [b"HIGHESTMODSEQ"])
        assert status[b"HIGHESTMODSEQ"] == found.modseq
        client.close_folder()
        client.delete_folder(folder)


def test_imaplib_search_charset_utf8_with_a_literal(node: StoreProcess) -> None:
    """imaplib sends a non-ASCII search string as a synchronising literal (§6.4.4)."""
    word = unique("crème")
    deliver(
        node,
        b"From: carol@beta.test\r\nSubject: =?utf-8?q?"
        + word.encode().replace("è".encode(), b"=C3=A8")
        + b"?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(f"{word}!".encode())
        + b"\r\n",
    )
    imap = node.imap()
    imap.select("INBOX", readonly=True)
    for key in ("SUBJECT", "BODY"):
        imap.literal = word.encode()
        typ, data = imap.search("UTF-8", key)
        assert typ == "OK" and len(data[0].split()) == 1, (key, data)
    imap.logout()


def test_three_live_sessions_share_one_mailbox(node: StoreProcess) -> None:
    """Issue 11 over real sockets: a phone, a laptop and a webmail on one INBOX.
    B's undelete beats A's stale \\Deleted at EXPUNGE, both STOREs on one message
    land, and the new message is \\Recent in exactly one of them."""
    user = "bob@alpha.test"
    mail = [node.imap(user) for _ in range(3)]
    for imap in mail:
        imap.select("INBOX")
    subject = unique("shared")
    deliver(node, message(subject), [user])
    recent = []
    for imap in mail:
        imap.noop()
        _, found = imap.uid("SEARCH", None, "SUBJECT", subject)
        _, flags = imap.uid("FETCH", found[0].decode(), "(FLAGS)")
        recent.append(b"\\Recent" in flags[-1])
    assert sorted(recent) == [False, False, True]
    uid = found[0].decode()
    a, b, c = mail
    a.uid("STORE", uid, "+FLAGS", "(\\Deleted \\Seen)")
    b.uid("STORE", uid, "-FLAGS", "(\\Deleted)")
    c.uid("STORE", uid, "+FLAGS", "(\\Flagged)")
    a.expunge()
    _, flags = a.uid("FETCH", uid, "(FLAGS)")
    last = flags[-1]  # imaplib also hands back the unsolicited FETCHes of earlier commands
    assert last is not None and b"\\Seen" in last and b"\\Flagged" in last
    assert b"\\Deleted" not in last
    for imap in mail:
        imap.logout()
