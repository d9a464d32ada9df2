"""The fault file the lab writes and the DNS node reads, and the node's reloads of it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from mxlab.dns import server
from mxlab.dns.answer import Responder
from mxlab.dns.faults import (
    Faults,
    applied,
    mark_applied,
    read_faults,
    read_request,
    wait_applied,
    write_faults,
)
from mxlab.dns.server import _Node
from mxlab.nodes.config import DnsNodeConfig, Zone
from tests.test_dns_support import DnsNode, dig, second_zone


def test_round_trip_normalizes_names(tmp_path: Path) -> None:
    path = write_faults(tmp_path / "state", servfail=["Beta.Test"], drop_mx=["alpha.test."])
    assert path == tmp_path / "state" / "faults.json"
    faults = read_faults(tmp_path / "state")
    assert faults == Faults.of(servfail=["beta.test."], drop_mx=["alpha.test"])
    assert faults.servfail == {"beta.test."} and not faults.timeout


def test_no_file_means_no_faults(tmp_path: Path) -> None:
    assert read_faults(tmp_path) == Faults()


@pytest.mark.parametrize(
    "text", ["{broken", "[]", '{"servfail": "beta.test"}', '{"servfail": [1]}', '{"nxdomain": []}']
)
def test_malformed_file_is_a_value_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "faults.json").write_text(text)
    with pytest.raises(ValueError, match="faults.json"):
        read_faults(tmp_path)


def test_rewrite_replaces_the_file_atomically(tmp_path: Path) -> None:
    write_faults(tmp_path, timeout=["mx.beta.test"])
    write_faults(tmp_path)
    assert read_faults(tmp_path) == Faults()
    assert [p.name for p in tmp_path.iterdir()] == ["faults.json"]


def test_each_write_is_a_new_generation_until_applied(tmp_path: Path) -> None:
    write_faults(tmp_path, servfail=["beta.test"])
    faults, first = read_request(tmp_path)
    assert faults.servfail == {"beta.test."} and first
    write_faults(tmp_path, servfail=["beta.test"])
    assert read_request(tmp_path)[1] not in ("", first)
    assert applied(tmp_path) is None and not wait_applied(tmp_path, timeout=0.05)
    mark_applied(tmp_path, first)
    assert applied(tmp_path) == first and not wait_applied(tmp_path, timeout=0.05)
    mark_applied(tmp_path, read_request(tmp_path)[1])
    assert wait_applied(tmp_path, timeout=0)


def _config(tmp_path: Path) -> DnsNodeConfig:
    zones = [second_zone()]
    return DnsNodeConfig(
        lab="t", node="dns", fqdn="ns.alpha.test", address="127.0.0.1", port=53,
        state_dir=str(tmp_path), zones=zones,
    )  # fmt: skip


def test_overlapping_reloads_end_on_the_newest_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dns-outage bug: dns_fail then dns_restore signal twice; the first rebuild
    (SERVFAIL) finishing after the second (no faults) left beta.test at SERVFAIL."""
    entered, built, release = threading.Event(), threading.Event(), threading.Event()

    class SlowWhenFaulty(Responder):
        def __init__(self, zones: list[Zone], faults: Faults | None = None) -> None:
            if faults and faults.servfail:
                entered.set()
                release.wait(5)  # a big zone, still building when the restore arrives
            else:
                built.set()
            super().__init__(zones, faults)

    node = _Node(_config(tmp_path))
    monkeypatch.setattr(server, "Responder", SlowWhenFaulty)

    async def fail_then_restore() -> None:
        write_faults(tmp_path, servfail=["beta.test"])
        failing = asyncio.create_task(node.reload())
        assert await asyncio.to_thread(entered.wait, 5)
        write_faults(tmp_path)
        built.clear()
        restoring = asyncio.create_task(node.reload())
        await asyncio.to_thread(built.wait, 0.5)  # the buggy node rebuilds at once
        release.set()
        await asyncio.gather(failing, restoring)

    asyncio.run(fail_then_restore())
    assert node.responder.lookup.faults == Faults()
    query = dns.message.make_query("beta.test", "MX")
    (reply,) = node.responder.respond(query.to_wire())
    assert dns.message.from_wire(reply).rcode() == dns.rcode.NOERROR
    assert wait_applied(tmp_path, timeout=0)


def test_signals_during_a_reload_are_covered_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A burst of SIGHUPs costs two rebuilds (the one running, then one for the rest)."""
    write_faults(tmp_path, servfail=["beta.test"])
    node = _Node(_config(tmp_path))
    capsys.readouterr()

    async def burst() -> None:
        await asyncio.gather(*(node.reload() for _ in range(20)))

    write_faults(tmp_path)
    asyncio.run(burst())
    assert capsys.readouterr().out.count('"faults_loaded"') == 2
    assert node.responder.lookup.faults == Faults() and wait_applied(tmp_path, timeout=0)


def test_live_restore_is_answered_once_applied(tmp_path: Path) -> None:
    """What a scenario does: fail, restore at once, and ask right after wait_applied."""
    live = DnsNode(tmp_path)
    try:
        assert wait_applied(live.state_dir, timeout=5)  # the start-up state is marked too
        for _ in range(3):
            write_faults(live.state_dir, servfail=["beta.test"], drop_mx=["alpha.test"])
            live.signal_hup()
            write_faults(live.state_dir)
            live.signal_hup()
            assert wait_applied(live.state_dir, timeout=5)
            assert "status: NOERROR" in dig(live, "beta.test", "MX")
            assert "10 mx1.alpha.test." in dig(live, "+short", "alpha.test", "MX")
        write_faults(live.state_dir, drop_mx=["alpha.test"])
        live.signal_hup()
        assert wait_applied(live.state_dir, timeout=5)
        assert dig(live, "+short", "alpha.test", "MX") == ""
    finally:
        live.stop()
