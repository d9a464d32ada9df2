"""Exactly once across a SIGKILL (issue 12): the store keeps a durable record of the
(relay, queue id, recipient) copies it took, the relay a durable duplicate filter;
a copy sent again after a kill is answered 250 and not kept twice."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import Session

from mxlab.nodes.config import Endpoint, LocalDomain, MailAuth
from mxlab.nodes.login_limits import LoginThrottle
from mxlab.nodes.relay.dedupe import DuplicateFilter
from mxlab.nodes.relay.delivery import Delivery
from mxlab.nodes.relay.esmtp import RelayEnvelope
from mxlab.nodes.relay.queue import Envelope, Queue, Recipient
from mxlab.nodes.relay.smtpd import RelayHandler
from mxlab.nodes.seen import SeenLog
from mxlab.nodes.store.lmtp import DELIVERED_LOG, delivery_key
from tests.conftest import wait_for
from tests.test_relay_support import RelayProcess, Sink, message, new_address, relay_config
from tests.test_store_support import StoreProcess, unique
from tests.test_store_support import message as store_message


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StoreProcess]:
    node = StoreProcess(tmp_path, new_address())
    node.start()
    yield node
    node.stop()


def lmtp_send(node: StoreProcess, data: bytes, queue_id: str, helo: str = "mx.alpha.test") -> str:
    """One LMTP transaction naming ``queue_id``; the DATA reply."""
    with smtplib.LMTP(node.address, node.config.lmtp_port, helo, timeout=10) as lmtp:
        code, lines = lmtp.ehlo(helo)  # smtplib's LMTP sends LHLO
        assert code == 250 and b"XQUEUEID" in lines
        assert lmtp.mail("carol@beta.test", [f"XQUEUEID={queue_id}"])[0] == 250
        assert lmtp.rcpt("alice@alpha.test")[0] == 250
        code, text = lmtp.data(data)
        assert code == 250, text
        return text.decode()


def copies(node: StoreProcess, subject: str) -> int:
    imap = node.imap()
    try:
        imap.select("INBOX")
        _, found = imap.search(None, "SUBJECT", subject)
        return len(found[0].split())
    finally:
        imap.logout()


def test_the_same_queue_entry_twice_is_stored_once(store: StoreProcess) -> None:
    subject = unique("once")
    data = store_message(subject)
    first = lmtp_send(store, data, "1A2B3C")
    again = lmtp_send(store, data, "1A2B3C")
    assert "delivered already" in again and "delivered already" not in first
    assert copies(store, subject) == 1
    other = lmtp_send(store, data, "1A2B3D")  # another queue entry is another message
    assert "delivered already" not in other
    assert copies(store, subject) == 2


def test_the_record_survives_a_sigkill(store: StoreProcess) -> None:
    subject = unique("killed")
    data = store_message(subject)
    lmtp_send(store, data, "FEED01")
    store.stop(9)
    store.start()
    assert "delivered already" in lmtp_send(store, data, "FEED01")
    assert copies(store, subject) == 1


def test_another_relay_with_the_same_queue_id_is_another_message(store: StoreProcess) -> None:
    subject = unique("relays")
    data = store_message(subject)
    lmtp_send(store, data, "ABC123", helo="mx.alpha.test")
    assert "delivered already" not in lmtp_send(store, data, "ABC123", helo="mx.beta.test")
    assert copies(store, subject) == 2


def _begun_only(node: StoreProcess, queue_id: str, delivery_id: str) -> None:
    """What a store killed between its "begun" record and its "done" leaves."""
    log = SeenLog(node.config.state_path / DELIVERED_LOG, 3600, 100)
    log.put(delivery_key("mx.alpha.test", queue_id, "alice@alpha.test"), f"B:{delivery_id}")
    log.close()


def test_a_begun_record_whose_copy_is_in_the_mailbox_counts_as_delivered(tmp_path: Path) -> None:
    node = StoreProcess(tmp_path, new_address())
    node.start()
    try:
        subject = unique("begun")
        lmtp_send(node, store_message(subject), "0FF1CE")
        node.stop(9)
        # forget the "done" line: only the copy itself can say it arrived
        log = node.config.state_path / DELIVERED_LOG
        begun = [line for line in log.read_text().splitlines() if " B:" in line]
        log.write_text("\n".join(begun) + "\n")
        node.start()
        assert "delivered already" in lmtp_send(node, store_message(subject), "0FF1CE")
        assert copies(node, subject) == 1
    finally:
        node.stop()


def test_a_begun_record_without_its_copy_is_delivered(tmp_path: Path) -> None:
    node = StoreProcess(tmp_path, new_address())
    node.config.state_path.mkdir(parents=True)
    _begun_only(node, "DEAD01", "000000000000")  # killed before the copy was renamed
    node.start()
    try:
        subject = unique("lost")
        assert "delivered already" not in lmtp_send(node, store_message(subject), "DEAD01")
        assert copies(node, subject) == 1
    finally:
        node.stop()


def test_a_malformed_queue_id_is_a_syntax_error(store: StoreProcess) -> None:
    with smtplib.LMTP(store.address, store.config.lmtp_port, "mx.alpha.test", timeout=10) as lmtp:
        lmtp.ehlo("mx.alpha.test")
        code, _ = lmtp.mail("carol@beta.test", ["XQUEUEID=../x"])
        assert code == 501
        assert lmtp.mail("carol@beta.test")[0] == 250  # and the session goes on


def test_the_relay_names_its_queue_entry_to_the_store(tmp_path: Path, store: StoreProcess) -> None:
    config = relay_config(
        tmp_path,
        local_domains={
            "alpha.test": LocalDomain(
                lmtp=Endpoint(host=store.address, port=store.config.lmtp_port),
                users=["alice"],
            )
        },
        trusted_clients=["127.0.0.1"],
    )
    relay = RelayProcess(config, tmp_path).start()
    try:
        with relay.smtp() as client:
            client.mail("carol@beta.test")
            client.rcpt("alice@alpha.test")
            code, text = client.data(message("named", rcpt="alice@alpha.test"))
        assert code == 250
        qid = text.decode().rsplit(" ", 1)[1]
        relay.wait_event("delivered", queue_id=qid)
        events = (tmp_path / "store.log").read_text()
        assert f'"queue_id": "{qid}"' in events
    finally:
        relay.stop()


def test_the_relay_filter_survives_a_sigkill(tmp_path: Path) -> None:
    """An upstream resends after our 250 was lost; we were killed and restarted
    meanwhile: the durable filter still knows the message."""
    sink = Sink().start()
    try:
        config = relay_config(tmp_path, trusted_clients=["127.0.0.1"], next_hop=sink.endpoint)
        relay = RelayProcess(config, tmp_path).start()
        sent = b"Received: from a by upstream.test id Q7; now\r\n" + message("durable dedupe")
        with relay.smtp() as client:
            client.mail("alice@alpha.test")
            client.rcpt("bob@beta.test")
            first = client.data(sent)
        relay.kill()
        relay.start()
        with relay.smtp() as client:
            client.mail("alice@alpha.test")
            client.rcpt("bob@beta.test")
            second = client.data(sent)
        assert first == second  # "queued as" the same id
        wait_for(lambda: sink.messages, what="the delivery")
        with pytest.raises(AssertionError):
            wait_for(lambda: len(sink.messages) > 1, timeout=1.0)
        relay.stop()
    finally:
        sink.stop()


def test_a_resend_racing_its_original_is_queued_once(tmp_path: Path) -> None:
    """A client that gave up waiting for our 250 sends the message again while its
    first copy is still being made durable (its filter records not yet written): the
    resend waits for that copy and is answered with its queue id, not queued again."""
    config = relay_config(tmp_path, mailauth=MailAuth(verify=False))
    content = b"Received: from a by up.test id Q7; now\r\nSubject: race\r\n\r\nbody\r\n"

    async def race() -> tuple[list[str], list[str]]:
        state = Path(config.state_dir)
        state.mkdir(parents=True)
        dupes = DuplicateFilter(state / "duplicates.log", ttl=60)
        queue = Queue(state / "queue", dupes)
        delivery = Delivery(config, queue)
        throttle = LoginThrottle(config.login_limits)
        handler = RelayHandler(config, queue, delivery, dupes, throttle, submission=False)
        gate = asyncio.Event()
        accepted: list[str] = []
        accept = delivery.accept

        def held(env, spool, queued, **kw):  # noqa: ANN001, ANN003, ANN202 - Delivery.accept's
            accepted.append(env.id)

            async def durable_later() -> None:
                await gate.wait()  # the first copy's fsync, taking its time
                await accept(env, spool, queued, **kw)

            return asyncio.get_running_loop().create_task(durable_later())

        delivery.accept = held  # type: ignore[method-assign]

        async def send() -> str:
            session = Session(asyncio.get_running_loop())
            session.peer, session.host_name = ("127.0.0.1", 40000), "up.test"
            envelope = RelayEnvelope()
            envelope.mail_from, envelope.rcpt_tos = "alice@alpha.test", ["bob@beta.test"]
            envelope.dsn_rcpt["bob@beta.test"] = {}
            envelope.incoming = handler.incoming(session, envelope)
            envelope.incoming.write(content)
            return await handler.handle_DATA(None, session, envelope)  # type: ignore[arg-type]

        first = asyncio.create_task(send())
        while not accepted:  # the first copy is being queued
            await asyncio.sleep(0.001)
        second = asyncio.create_task(send())
        await asyncio.sleep(0.05)
        assert not second.done()  # waiting for the first copy, not queued beside it
        gate.set()
        replies = list(await asyncio.gather(first, second))
        await delivery.writer.close()
        queue.close()
        dupes.close()
        return replies, accepted

    replies, accepted = asyncio.run(race())
    assert accepted == [accepted[0]]  # one copy queued
    assert replies == [f"250 2.0.0 Ok: queued as {accepted[0]}"] * 2


def test_records_lost_to_a_kill_come_back_from_the_queue(tmp_path: Path) -> None:
    """A kill between the queue file and its filter records: the envelope carries
    the digest, and loading the queue restores them."""
    dupes = DuplicateFilter(tmp_path / "dupes.log", ttl=60)
    queue = Queue(tmp_path / "queue")  # no filter: as if killed before the records
    key = dupes.key("alice@alpha.test", b"bytes")
    env = Envelope(
        id="Q1",
        sender="alice@alpha.test",
        recipients=[Recipient(address="b@beta.test")],
        arrival=0.0,
        digest=key,
    )
    queue.put(env, b"bytes")
    queue.close()
    assert dupes.check(key, ["b@beta.test"]) == (None, ["b@beta.test"])
    Queue(tmp_path / "queue", dupes).load()
    assert dupes.check(key, ["b@beta.test"]) == ("Q1", [])


def test_the_log_is_bounded_in_size_and_age(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "seen.log"
    log = SeenLog(path, ttl=60, max_entries=10, clock=lambda: now[0])
    for n in range(25):
        log.put(f"k{n}", "v")
    assert len(log) == 10 and log.get("k0") is None and log.get("k24") == "v"
    assert len(path.read_text().splitlines()) <= 20  # compacted at twice the bound
    now[0] += 61
    assert log.get("k24") is None  # too old
    log.close()
    now[0] -= 61
    again = SeenLog(path, ttl=60, max_entries=10, clock=lambda: now[0])
    assert again.get("k24") == "v" and again.get("k0") is None
    again.close()


def test_a_line_cut_by_a_crash_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "seen.log"
    path.write_text("1000.000 good v\n1000.0 trunc")
    log = SeenLog(path, ttl=1e9, max_entries=10, clock=lambda: 1000.0)
    assert log.get("good") == "v" and log.get("trunc") is None
    log.close()
