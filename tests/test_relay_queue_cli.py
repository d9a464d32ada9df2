"""`mxlab queue` against a live lab (local runtime): a relay whose next hop is down
keeps mail deferred; hold keeps it from a flush, release and flush deliver it once
the next hop is back, delete drops it; a stopped relay's queue is read and changed
through its files."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mxlab.cli.queue import queue_app
from mxlab.lab import labdir
from mxlab.lab.errors import LabError
from mxlab.lab.lifecycle import bring_up
from mxlab.lab.mail import build_message, submit
from mxlab.lab.plan import LabPlan
from mxlab.lab.runtime import Runtime
from mxlab.lab.topology import load_topology
from mxlab.nodes.relay.queue_admin import queue_dir
from tests.conftest import wait_for

TOPOLOGY = """
name: {name}
settings:
  local_subnet: {subnet}
  queue: {{retry_initial: 60, retry_max: 60, lifetime: 600}}
nodes:
  ns: {{kind: dns}}
  mx-alpha: {{kind: relay}}
  store-alpha: {{kind: store}}
  mx-beta: {{kind: relay}}
  store-beta: {{kind: store}}
domains:
  alpha.test:
    store: store-alpha
    mx: [{{node: mx-alpha}}]
    users: {{alice: alice-secret}}
  beta.test:
    store: store-beta
    mx: [{{node: mx-beta}}]
    users: {{bob: bob-secret}}
"""


@pytest.fixture
def lab(mxlab_home: Path, tmp_path: Path) -> Iterator[tuple[LabPlan, Runtime]]:
    """A two-domain lab whose retries are a minute apart: only a flush hurries them."""
    name = f"queue-cli-{random.randrange(10**6)}"
    path = tmp_path / "lab.yaml"
    subnet = f"127.31.{random.randrange(1, 250)}.0/24"
    path.write_text(TOPOLOGY.format(name=name, subnet=subnet))
    plan, runtime = bring_up(load_topology(path), "local", lambda _: None)
    try:
        yield plan, runtime
    finally:
        runtime.down(plan.lab)


def queue(*args: str) -> str:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(queue_app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


def listing(plan: LabPlan) -> list[dict[str, Any]]:
    return json.loads(queue(plan.lab, "mx-alpha", "--json"))


def send(plan: LabPlan, subject: str) -> str:
    msg = build_message("alice@alpha.test", ["bob@beta.test"], subject, "hello\n", [])
    submit(plan, msg)
    return msg["Message-ID"]


def deferred(plan: LabPlan, message_id: str) -> dict[str, Any]:
    """The message once its first attempt failed and it waits for its retry."""

    def found() -> dict[str, Any] | None:
        hits = [m for m in listing(plan) if m["message_id"] == message_id]
        return hits[0] if hits and hits[0]["state"] == "deferred" else None

    return wait_for(found, 20, f"{message_id} deferred at mx-alpha")


def relay_events(plan: LabPlan, runtime: Runtime, node: str, event: str) -> list[dict]:
    lines = runtime.log_bytes(plan, node).splitlines()
    events = [json.loads(line) for line in lines if line.startswith(b"{")]
    return [e for e in events if e["event"] == event]


def test_hold_release_flush_and_delete(lab: tuple[LabPlan, Runtime]) -> None:
    plan, runtime = lab
    runtime.stop(plan, "mx-beta")
    first = send(plan, "held, released, flushed")
    msg = deferred(plan, first)
    (rcpt,) = msg["recipients"]
    assert (rcpt["address"], rcpt["state"]) == ("bob@beta.test", "pending")
    assert rcpt["reply"].startswith("451 4.4.1"), rcpt  # why it waits
    assert msg["size"] > 0 and msg["sender"] == "alice@alpha.test" and msg["age"] >= 0
    table = queue(plan.lab)  # every relay, as a table
    assert msg["id"] in table and "deferred" in table and "mx-beta: queue empty" in table

    assert "hold 1" in queue("hold", plan.lab, "mx-alpha", msg["id"])
    assert [m["state"] for m in listing(plan)] == ["hold"]
    runtime.start(plan, "mx-beta")
    assert "1 unchanged" in queue("flush", plan.lab)  # a held message stays put
    assert "release 1" in queue("release", plan.lab, "mx-alpha", msg["id"])
    assert [m["state"] for m in listing(plan)] == ["deferred"]  # next retry a minute away
    queue("flush", plan.lab, "mx-alpha")
    wait_for(lambda: listing(plan) == [], 20, "an empty queue after the flush")
    delivered = relay_events(plan, runtime, "mx-alpha", "delivered")
    assert [e["message_id"] for e in delivered] == [first]
    assert delivered[0]["hop"].startswith("mx-beta")

    runtime.stop(plan, "mx-beta")
    second = send(plan, "deleted while its relay is down")
    msg = deferred(plan, second)
    runtime.stop(plan, "mx-alpha")  # now the queue files are read and changed directly
    assert "stopped" in queue(plan.lab, "mx-alpha")
    assert [m["id"] for m in listing(plan)] == [msg["id"]]
    assert "hold 1" in queue("hold", plan.lab, "mx-alpha", "ALL")
    runtime.start(plan, "mx-alpha")
    runtime.start(plan, "mx-beta")
    assert [m["state"] for m in listing(plan)] == ["hold"]  # the restart kept it held
    assert "delete 1" in queue("delete", plan.lab, "mx-alpha", "ALL")
    assert listing(plan) == []
    assert not list(queue_dir(labdir.node_dir(plan, "mx-alpha") / "state").glob("*.msg"))
    assert [e["queue_id"] for e in relay_events(plan, runtime, "mx-alpha", "delete")] == [msg["id"]]


def test_errors_are_one_line(lab: tuple[LabPlan, Runtime]) -> None:
    plan, _ = lab
    with pytest.raises(LabError, match="ALL"):
        queue("delete", plan.lab, "mx-alpha")
    with pytest.raises(LabError, match="not a relay"):
        queue(plan.lab, "store-alpha")
    with pytest.raises(LabError, match="not queued"):
        queue("hold", plan.lab, "NOSUCHID")
