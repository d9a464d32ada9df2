"""The on-disk queue and the bounce (DSN) builder, without sockets."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from email import message_from_bytes
from pathlib import Path

import pytest

from mxlab.nodes import durable
from mxlab.nodes.config import ConfigError, parse_json
from mxlab.nodes.durable import file_system, mount_type
from mxlab.nodes.relay import queue as queue_module
from mxlab.nodes.relay.bounce import build_dsn, status_code, wants_notice, wire_params
from mxlab.nodes.relay.queue import (
    Envelope,
    GroupWriter,
    Queue,
    Recipient,
    apply_action,
    new_queue_id,
    read_envelope,
)

CONTENT = b"Received: from x by y; now\r\nSubject: hi\r\nMessage-ID: <m@t>\r\n\r\nbody\r\n"


def envelope(*rcpts: str, sender: str = "alice@alpha.test") -> Envelope:
    return Envelope(
        id=new_queue_id(),
        sender=sender,
        recipients=[Recipient(address=r) for r in rcpts],
        arrival=1_700_000_000.0,
        message_id="<m@t>",
    )


def test_put_then_load_returns_envelope_and_exact_bytes(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "queue")
    env = envelope("bob@beta.test", "carol@beta.test")
    queue.put(env, CONTENT)
    loaded, dropped = Queue(tmp_path / "queue").load()
    assert loaded == [env] and dropped == []
    assert queue.data(loaded[0]).read() == CONTENT
    assert not [p for p in (tmp_path / "queue").iterdir() if p.name.endswith(".tmp")]


def test_per_recipient_state_survives_a_reload(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    env = envelope("bob@beta.test", "carol@beta.test")
    queue.put(env, CONTENT)
    env.recipients[0].state = "delivered"
    env.state, env.attempts, env.next_attempt = "deferred", 2, 123.0
    queue.save(env)
    (loaded,), _ = queue.load()
    assert [r.address for r in loaded.pending()] == ["carol@beta.test"]
    assert (loaded.state, loaded.attempts, loaded.next_attempt) == ("deferred", 2, 123.0)


def test_remove_deletes_both_files(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    env = envelope("bob@beta.test")
    queue.put(env, CONTENT)
    queue.remove(env.id)
    assert [p.name for p in tmp_path.iterdir()] == ["delivered.journal"]


def test_journaled_deliveries_survive_a_crash(tmp_path: Path) -> None:
    """commit() is the only record until the envelope is saved; a restart applies it."""
    queue = Queue(tmp_path)
    env = envelope("bob@beta.test", "carol@beta.test")
    done = envelope("dave@beta.test")
    queue.put(env, CONTENT)
    queue.put(done, CONTENT)
    queue.commit(env.id, ["bob@beta.test"])
    queue.commit(done.id, ["dave@beta.test"])
    queue.close()  # the crash: nothing saved after the commits
    restarted = Queue(tmp_path)
    loaded = {e.id: e for e in restarted.load()[0]}
    assert [r.address for r in loaded[env.id].pending()] == ["carol@beta.test"]
    assert loaded[done.id].pending() == []
    assert (tmp_path / "delivered.journal").stat().st_size == 0
    (again,) = [e for e in Queue(tmp_path).load()[0] if e.id == env.id]
    assert [r.address for r in again.pending()] == ["carol@beta.test"]  # saved for good


def test_crash_leftovers_are_dropped_and_corrupt_envelopes_set_aside(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    kept = envelope("bob@beta.test")
    queue.put(kept, CONTENT)
    (tmp_path / "ORPHAN.env").write_bytes(b"{}")  # crashed between the two unlinks
    (tmp_path / ".X.msg.tmp").write_bytes(b"half")  # crashed mid-write
    (tmp_path / "BAD.msg").write_bytes(b"{not json\n" + CONTENT)
    loaded, dropped = queue.load()
    assert [e.id for e in loaded] == [kept.id]
    assert sorted(dropped) == sorted(["ORPHAN.env", ".X.msg.tmp", "BAD.msg"])
    assert (tmp_path / "corrupt" / "BAD.msg").exists()
    assert not (tmp_path / "ORPHAN.env").exists()


def test_queue_ids_are_unique_and_time_ordered() -> None:
    ids = [new_queue_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert ids[0][:13] <= ids[-1][:13]


def test_status_code_prefers_the_enhanced_code() -> None:
    assert status_code("550 5.1.1 no such user") == "5.1.1"
    assert status_code("554 no enhanced code") == "5.0.0"
    assert status_code("451 4.4.1 timeout") == "4.4.1"


def test_notify_decides_which_notices_go_out() -> None:
    default = Recipient(address="a@b")
    assert wants_notice(default, "failed") and wants_notice(default, "delayed")
    assert not wants_notice(default, "delivered")
    never = Recipient(address="a@b", notify=["NEVER"])
    assert not any(wants_notice(never, a) for a in ("failed", "delayed", "delivered"))
    success = Recipient(address="a@b", notify=["SUCCESS"])
    assert wants_notice(success, "relayed") and not wants_notice(success, "failed")


def test_dsn_parameters_go_on_the_wire_as_received() -> None:
    env = envelope("bob@beta.test", "carol@beta.test")
    env.ret, env.envid = "HDRS", "QQ314159"
    env.recipients[0].notify = ["SUCCESS", "FAILURE"]
    env.recipients[0].orcpt = "rfc822;Bob@Beta.test"
    params = wire_params(env, env.recipients)
    assert params.mail == ["RET=HDRS", "ENVID=QQ314159"]
    assert params.rcpt == {
        "bob@beta.test": ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob@Beta.test"],
        "carol@beta.test": [],
    }


def test_dsn_is_an_rfc_3464_multipart_report() -> None:
    env = envelope("bob@beta.test", "carol@beta.test")
    bob = env.recipients[0]
    bob.reply, bob.hop = "550 5.1.1 <bob@beta.test>: user unknown", "mx.beta.test"
    raw = build_dsn(env, [(bob, "failed", "5.1.1")], CONTENT, reporting_mta="mx.alpha.test")
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only, ready for SMTP
    msg = message_from_bytes(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["To"] == "alice@alpha.test"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    human, status, original = msg.get_payload()
    assert "user unknown" in human.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_rcpt = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mx.alpha.test"
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@beta.test"
    assert per_rcpt["Action"] == "failed" and per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx.beta.test"
    assert original.get_content_type() == "text/rfc822-headers"
    assert "Message-ID: <m@t>" in original.get_payload()
    assert "body" not in original.get_payload()  # RET=HDRS is the default


def test_dsn_returns_the_full_message_when_asked() -> None:
    env = envelope("bob@beta.test")
    env.ret = "FULL"
    rcpt = env.recipients[0]
    raw = build_dsn(env, [(rcpt, "failed", "4.4.7")], CONTENT, reporting_mta="mx.alpha.test")
    original = message_from_bytes(raw).get_payload()[2]
    assert original.get_content_type() == "message/rfc822"
    assert original.get_payload()[0].get_payload() == "body\r\n"


def test_dsn_reports_success_and_keeps_the_original_recipient() -> None:
    env = envelope("bob@beta.test")
    env.envid = "ENV1"
    bob = env.recipients[0]
    bob.reply, bob.orcpt = "250 2.0.0 Ok", "rfc822;Bob@beta.test"
    raw = build_dsn(env, [(bob, "relayed", "2.0.0")], CONTENT, reporting_mta="mx.alpha.test")
    msg = message_from_bytes(raw)
    assert msg["Subject"] == "Successful Mail Delivery Report"
    per_message, per_rcpt = msg.get_payload()[1].get_payload()
    assert per_message["Original-Envelope-Id"] == "ENV1"
    assert per_rcpt["Original-Recipient"] == "rfc822;Bob@beta.test"
    assert (per_rcpt["Action"], per_rcpt["Status"]) == ("relayed", "2.0.0")


def test_a_new_message_is_one_file_with_its_envelope_last(tmp_path: Path) -> None:
    queue = Queue(tmp_path)
    env = envelope("bob@beta.test")
    queue.put(env, CONTENT)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["delivered.journal", f"{env.id}.msg"]
    )
    raw = (tmp_path / f"{env.id}.msg").read_bytes()
    content, line = raw[: env.size], raw[env.size :]
    assert content == CONTENT and line[:1] == b"\n" and line.endswith(b"\n")
    assert parse_json(Envelope, line[1:]) == env
    env.state = "hold"
    queue.save(env)  # later states go to <id>.env, which wins over the last line
    assert read_envelope(tmp_path, env.id).state == "hold"


# An envelope as the relay wrote it while its envelopes were pydantic models: queues
# spooled then must read back, and be written again byte for byte the same.
PYDANTIC_LINE = (
    '{"id":"18C0A1B2C3D4E5F6A7","sender":"al\u00efce@alpha.test","recipients":['
    '{"address":"bob@beta.test","state":"delivered","reply":"250 2.0.0 ok","hop":"mx.beta.test",'
    '"notify":["SUCCESS","FAILURE"],"orcpt":"rfc822;bob@beta.test"},'
    '{"address":"carol@beta.test","state":"pending","reply":"","hop":"","notify":[],"orcpt":""}],'
    '"arrival":1700000000.25,"size":57,"message_id":"<m@t>","mail_options":["BODY=8BITMIME"],'
    '"ret":"HDRS","envid":"ENV1","state":"deferred","attempts":2,"warned":false,'
    '"next_attempt":1700000030.0,"digest":"ab12"}'
)


def test_envelopes_written_by_earlier_versions_read_and_write_back_the_same(
    tmp_path: Path,
) -> None:
    qid = "18C0A1B2C3D4E5F6A7"
    (tmp_path / f"{qid}.msg").write_bytes(b"x" * 57 + b"\n" + PYDANTIC_LINE.encode() + b"\n")
    env = read_envelope(tmp_path, qid)
    assert env.recipients[0].notify == ["SUCCESS", "FAILURE"] and env.next_attempt == 1700000030.0
    assert env.recipients[1].state == "pending" and env.sender == "al\u00efce@alpha.test"
    Queue(tmp_path).save(env)
    assert (tmp_path / f"{qid}.env").read_bytes() == PYDANTIC_LINE.encode()


@pytest.mark.parametrize(
    ("line", "fault"),
    [
        (b'{"id":"Q1","sender":"","recipients":[],"arrival":"soon"}', "arrival: float"),
        (
            b'{"id":"Q1","sender":"","recipients":[{"address":"a","state":"lost"}],"arrival":1}',
            "state",
        ),
        (b'{"id":"Q1","recipients":[],"arrival":1}', "sender: missing"),
        (b"[1]", "an object expected"),
    ],
)
def test_an_envelope_of_the_wrong_shape_is_refused(line: bytes, fault: str) -> None:
    with pytest.raises(ConfigError, match=fault):
        parse_json(Envelope, line)


@pytest.mark.parametrize("need_dir_fsync", [True, False], ids=["other-fs", "ext4"])
def test_the_writer_batches_concurrent_messages_into_one_directory_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, need_dir_fsync: bool
) -> None:
    """Each message is fsynced before its caller goes on; the directory once a batch,
    where the file system needs it for the new names."""
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    monkeypatch.setattr(queue_module, "new_names_need_dir_fsync", lambda path: need_dir_fsync)
    queue = Queue(tmp_path)
    envelopes = [envelope(f"r{n}@beta.test") for n in range(20)]

    async def write_all() -> None:
        writer = GroupWriter(queue)
        spools = [queue.spool(e.id) for e in envelopes]
        for spool in spools:
            spool.write(CONTENT)
        await asyncio.gather(*(writer.put(e, s) for e, s in zip(envelopes, spools, strict=True)))
        await writer.remove(envelopes[0].id)
        await writer.close()

    asyncio.run(write_all())
    files = [s for s in synced if s != str(tmp_path)]
    assert len(files) == 20  # one per message
    if need_dir_fsync:
        assert 1 <= synced.count(str(tmp_path)) < 20  # the directory: once per batch
    else:
        assert synced.count(str(tmp_path)) == 0  # the files' fsyncs made the names durable
    assert len(list(tmp_path.glob("*.msg"))) == 19


def test_hold_release_flush_on_an_envelope() -> None:
    env = envelope("bob@beta.test")
    env.state, env.next_attempt = "deferred", 1e12
    assert apply_action(env, "hold") and env.state == "hold"
    assert not apply_action(env, "hold")
    assert not apply_action(env, "flush") and env.next_attempt == 1e12  # held stays put
    assert apply_action(env, "release") and env.state == "deferred"
    assert apply_action(env, "flush") and env.next_attempt == 0
    assert not apply_action(env, "release")


@pytest.mark.skipif(shutil.which("findmnt") is None, reason="findmnt (util-linux) not installed")
def test_the_file_system_of_a_path_is_the_one_findmnt_names(tmp_path: Path) -> None:
    for path in (tmp_path, Path("/"), Path("/proc/self"), Path("/dev/shm"), Path("/sys/fs")):
        if path.exists():
            found = subprocess.run(
                ["findmnt", "-n", "-o", "FSTYPE", "-T", str(path)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            assert file_system(path) == found[-1], path  # the last one mounted there


MOUNTINFO = [
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
    "30 22 0:26 / /var/spool rw shared:2 - xfs /dev/sdb1 rw\n",
    "31 30 0:27 / /var/spool/my\\040queue rw shared:3 - tmpfs tmpfs rw\n",
    "32 22 0:28 / /srv rw shared:4 - xfs /dev/sdc1 rw\n",
    "33 22 0:29 / /srv rw shared:5 - ext4 /dev/sdd1 rw\n",
]


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("/home/relay/queue", "ext4"),
        ("/var/spool/queue", "xfs"),
        ("/var/spoolish", "ext4"),  # a prefix of the name is not the mount point
        ("/var/spool/my queue/q", "tmpfs"),  # \040 is a space
        ("/var/spool/my\\040queue", "xfs"),  # an escape taken literally is not it
        ("/srv/q", "ext4"),  # of two mounts on one point, the later hides the earlier
    ],
)
def test_the_mount_holding_a_path_is_the_longest_match(target: str, kind: str) -> None:
    assert mount_type(target, MOUNTINFO) == kind


@pytest.mark.parametrize(
    ("kind", "needed"), [("ext4", False), ("xfs", True), ("overlay", True), ("ext2", True)]
)
def test_only_ext4_makes_a_new_name_durable_with_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, needed: bool
) -> None:
    monkeypatch.setattr(durable, "file_system", lambda path: kind)
    assert durable.new_names_need_dir_fsync(tmp_path) is needed


def test_without_proc_the_directory_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_proc(path: Path) -> str:
        raise FileNotFoundError("/proc/self/mountinfo")

    monkeypatch.setattr(durable, "file_system", no_proc)
    assert durable.new_names_need_dir_fsync(tmp_path)


def test_a_closed_writer_refuses_new_messages_and_still_removes(tmp_path: Path) -> None:
    """A session that ends its DATA while the relay stops gets an error (451), not a
    wait for ever on a thread that is gone; a finished delivery still removes its files."""
    queue = Queue(tmp_path)
    kept, late = envelope("bob@beta.test"), envelope("carol@beta.test")

    async def close_then_use() -> None:
        writer = GroupWriter(queue)
        spool = queue.spool(kept.id)
        spool.write(CONTENT)
        await writer.put(kept, spool)
        await writer.close()
        spool = queue.spool(late.id)
        spool.write(CONTENT)
        with pytest.raises(OSError, match="relay is stopping"):
            await asyncio.wait_for(writer.put(late, spool), 5)
        await asyncio.wait_for(writer.remove(kept.id), 5)

    asyncio.run(close_then_use())
    assert list(tmp_path.glob("*.msg")) == []
    assert list(tmp_path.glob(".*.tmp")) == []
