"""Scenario files: a lab, then fault steps and checks interleaved, validated like topologies.

topology: ../topologies/backup-mx.yaml
steps:
  - stop: mx1-beta
  - send: {id: m1, from: alice@alpha.test, to: bob@beta.test}
  - expect_queued: {id: m1, node: mx2-beta, within: 10}
  - start: mx1-beta
  - expect_delivered: {id: m1, within: 30}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mxlab.lab.topology import (
    Topology,
    TopologyError,
    load_topology,
    read_yaml,
    validation_error,
)


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeStep(_Step):
    """stop / start / kill / restart / cut / restore / clear one node."""

    action: Literal["stop", "start", "kill", "restart", "cut", "restore", "clear"]
    node: str


class Impair(_Step):
    """tc netem on the node's link (docker): delay, loss, rate."""

    action: Literal["impair"] = "impair"
    node: str
    delay: str | None = None  # "100ms"
    jitter: str | None = None
    loss: str | None = None  # "5%"
    rate: str | None = None  # "1mbit"


class DnsFault(_Step):
    action: Literal["dns_fail"] = "dns_fail"
    name: str
    mode: Literal["servfail", "timeout", "drop_mx"] = "servfail"


class DnsRestore(_Step):
    action: Literal["dns_restore"] = "dns_restore"
    name: str | None = None  # lift only this name's faults; default: all


class Send(_Step):
    """Submit a message as a lab user (587, AUTH) — or expect it refused."""

    action: Literal["send"] = "send"
    id: str
    sender: str = Field(alias="from")
    to: list[str]
    subject: str | None = None
    body: str = "mxlab scenario message\n"
    count: int = Field(1, ge=1, le=100000)  # a load: ``count`` messages, ids id-1..id-N
    concurrency: int = Field(1, ge=1, le=100)
    background: bool = False  # go on with the next steps while the load runs


class ExpectSent(_Step):
    """Wait until a background load has ``at_least`` messages acknowledged."""

    action: Literal["expect_sent"] = "expect_sent"
    id: str
    at_least: int = Field(1, ge=1)
    within: float = Field(30.0, gt=0)


class Reject(_Step):
    """Expect the SMTP reply ``code`` at submission (e.g. 550 unknown user, 554 relay)."""

    action: Literal["expect_reject"] = "expect_reject"
    sender: str = Field(alias="from")
    to: str
    code: int = Field(ge=400, le=599)
    node: str | None = None  # which relay to talk to; default the sender's submission relay
    auth: bool = True


class ExpectDelivered(_Step):
    action: Literal["expect_delivered"] = "expect_delivered"
    id: str
    by: Literal["imap", "pop3", "both"] = "both"
    within: float = Field(30.0, gt=0)
    route: list[str] | None = None  # FQDNs of the Received: by hosts, oldest first


class ExpectBounce(_Step):
    action: Literal["expect_bounce"] = "expect_bounce"
    id: str
    within: float = Field(30.0, gt=0)


class ExpectQueued(_Step):
    action: Literal["expect_queued"] = "expect_queued"
    id: str
    node: str
    within: float = Field(15.0, gt=0)


class ExpectDns(_Step):
    action: Literal["expect_dns"] = "expect_dns"
    name: str
    type: str = "A"
    answer: list[str] = Field(default_factory=list)  # rdata strings; empty: NODATA
    rcode: str = "NOERROR"


class OpenRelayProbe(_Step):
    action: Literal["expect_no_open_relay"] = "expect_no_open_relay"
    node: str


Step = Annotated[
    NodeStep | Impair | DnsFault | DnsRestore | Send | ExpectSent | Reject | ExpectDelivered
    | ExpectBounce | ExpectQueued | ExpectDns | OpenRelayProbe,
    Field(discriminator="action"),
]  # fmt: skip


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    topology: str
    runtime: Literal["auto", "docker", "local"] = "auto"
    steps: list[Step] = Field(min_length=1)


_NODE_ACTIONS = {"stop", "start", "kill", "restart", "cut", "restore", "clear"}


def _normalise(step: Any) -> Any:
    """``- stop: mx1`` and ``- send: {...}`` become ``{"action": ..., ...}``."""
    if step == "dns_restore":
        return {"action": step}
    if not isinstance(step, dict) or len(step) != 1:
        return step
    ((action, args),) = step.items()
    if action in _NODE_ACTIONS:
        return {"action": action, "node": args}
    if action == "dns_restore":  # ``- dns_restore: beta.test`` lifts one name's faults
        return {"action": action, "name": args}
    if isinstance(args, dict):
        return {"action": action, **args}
    return step


# what a topology's ``checks:`` may hold: checks only, no faults (those go in a scenario)
CHECK_ACTIONS = {
    "send", "expect_sent", "expect_reject", "expect_delivered", "expect_bounce",
    "expect_queued", "expect_dns", "expect_no_open_relay",
}  # fmt: skip


def checks_scenario(lab: str, checks: list[Any]) -> Scenario:
    """A lab's declared checks as a scenario to run on the lab as it is."""
    return _checks_as_scenario(lab, [_normalise(s) for s in checks])


def _checks_as_scenario(lab: str, steps: list[Any]) -> Scenario:
    return Scenario.model_validate({"name": f"{lab}-checks", "topology": "", "steps": steps})


def topology_checks(topo: Topology, source: str) -> Scenario | None:
    """The topology's own ``checks:`` as a fault-free scenario; mistakes are located at
    ``checks[i]`` like any other topology error."""
    if not topo.checks:
        return None
    steps = [_normalise(s) for s in topo.checks]
    for i, step in enumerate(steps):
        action = step.get("action") if isinstance(step, dict) else None
        if action is not None and action not in CHECK_ACTIONS:
            raise TopologyError(
                source, f"checks[{i}]", f"{action} is a fault step", "put it in a scenario file"
            )
    try:
        scenario = _checks_as_scenario(topo.name, steps)
    except ValidationError as exc:
        tags = {s.get("action") for s in steps if isinstance(s, dict)}
        err = validation_error(exc, source, skip=tags)
        field = err.field.replace("steps", "checks", 1)
        raise TopologyError(source, field, err.message, err.fix) from None
    _check_names(scenario, topo, source, "checks")
    return scenario


def load_scenario(path: Path) -> tuple[Scenario, Topology]:
    """Parse a scenario and its topology; mistakes are one-line ``TopologyError``s."""
    src = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyError(src, "", f"cannot read: {exc.strerror}") from None
    data = read_yaml(text, src)
    steps = [_normalise(s) for s in data.get("steps") or []]
    data["steps"] = steps
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        tags = {s.get("action") for s in steps if isinstance(s, dict)}
        raise validation_error(exc, src, skip=tags) from None
    topo = load_topology((path.parent / scenario.topology).resolve())
    _check_names(scenario, topo, src)
    return scenario, topo


def _check_names(scenario: Scenario, topo: Topology, src: str, field: str = "steps") -> None:
    """Nodes, users and message ids a step names must exist."""
    sent: set[str] = set()
    for i, step in enumerate(scenario.steps):
        where = f"{field}[{i}]"
        node = getattr(step, "node", None)
        if node is not None and node not in topo.nodes:
            raise TopologyError(
                src,
                f"{where}.node",
                f"no node named {node!r}",
                f"use one of: {', '.join(topo.nodes)}",
            )
        if isinstance(step, Send):
            if step.id in sent:
                raise TopologyError(src, f"{where}.id", f"message id {step.id!r} used twice")
            sent.add(step.id)
        msg_id = getattr(step, "id", None)
        if not isinstance(step, Send) and msg_id is not None and msg_id not in sent:
            raise TopologyError(
                src, f"{where}.id", f"no message {msg_id!r} was sent before this step"
            )
