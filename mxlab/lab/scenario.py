"""Scenario files: a lab, then fault steps and checks interleaved, validated like topologies.

topology: ../topologies/backup-mx.yaml
steps:
  - stop: mx1-beta
  - send: {id: m1, from: alice@alpha.test, to: [bob@beta.test]}
  - expect_queued: {id: m1, node: mx2-beta, within: 10}
  - start: mx1-beta
  - expect_delivered: {id: m1, within: 30}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import dns.name
import dns.rcode
import dns.rdatatype
from pydantic import AfterValidator, Field, ValidationError, model_validator

from mxlab.lab.errors import TopologyError
from mxlab.lab.topology import (
    StrictModel,
    Topology,
    did_you_mean,
    in_lab,
    is_address,
    parse_topology,
    role_of,
    validation_error,
)
from mxlab.lab.yamlfile import read_source, read_yaml

_DURATION = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")  # tc(8) TIME
_PERCENT = re.compile(r"^(100(\.0+)?|\d{1,2}(\.\d+)?)%$")
_RATE = re.compile(r"^\d+(\.\d+)?([kmg]?bit|[kmg]?bps)$")  # tc(8) RATE
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # goes into Message-IDs


def _matching(pattern: re.Pattern[str], example: str) -> AfterValidator:
    """A value handed to tc(8) or a header later must have its shape now."""

    def check(v: str | None) -> str | None:
        if v is not None and not pattern.match(v):
            raise ValueError(f"{v!r} is not like {example}")
        return v

    return AfterValidator(check)


def _address(v: str) -> str:
    if not is_address(v):
        raise ValueError(f"{v!r} is not a mail address like bob@beta.test")
    return v


def _one_line(v: str | None) -> str | None:
    if v is not None and ("\r" in v or "\n" in v):
        raise ValueError("a header cannot hold CR or LF")
    return v


def _rcode(v: str) -> None:
    if v != "TIMEOUT":  # no answer at all
        dns.rcode.from_text(v)


def _parses(parse: Callable[[str], object], what: str) -> AfterValidator:
    """What dnspython will be given at run time must parse now."""

    def check(v: str) -> str:
        try:
            parse(v)
        except Exception:  # dnspython raises a dozen classes, all meaning "does not parse"
            raise ValueError(f"{v!r} is not {what}") from None
        return v

    return AfterValidator(check)


Address = Annotated[str, AfterValidator(_address)]
MessageId = Annotated[str, _matching(_MESSAGE_ID, "m1 (letters, digits, . _ -)")]
Duration = Annotated[str | None, _matching(_DURATION, "100ms")]


class _Step(StrictModel):
    pass


class NodeStep(_Step):
    """stop / start / kill / restart / cut / restore / clear one node."""

    action: Literal["stop", "start", "kill", "restart", "cut", "restore", "clear"]
    node: str


class Impair(_Step):
    """tc netem on the node's link (docker): delay, loss, rate."""

    action: Literal["impair"] = "impair"
    node: str
    delay: Duration = None  # "100ms"
    jitter: Duration = None
    loss: Annotated[str | None, _matching(_PERCENT, "5% (0-100%)")] = None
    rate: Annotated[str | None, _matching(_RATE, "1mbit")] = None

    @model_validator(mode="after")
    def _something(self) -> Impair:
        if self.jitter and not self.delay:
            raise ValueError("jitter needs a delay")
        if not (self.delay or self.loss or self.rate):
            raise ValueError("give a delay, loss or rate")
        return self


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
    id: MessageId
    sender: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1)
    header_from: Address | None = None  # a From: header other than the sender (spoofing)
    subject: Annotated[str | None, AfterValidator(_one_line)] = None
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
    sender: Address = Field(alias="from")
    to: Address
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
    status: str | None = None  # text the bounce must hold, e.g. 5.7.1 (a DMARC reject)


AuthValue = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]


class ExpectAuth(_Step):
    """What the checks of the recipient's MX found, in the delivered copy's topmost
    Authentication-Results (RFC 8601); dkim matches when any signature has the result."""

    action: Literal["expect_auth"] = "expect_auth"
    id: str
    rcpt: Address | None = None  # whose copy; default the first recipient, forwards followed
    spf: AuthValue | None = None
    dkim: AuthValue | None = None
    dmarc: AuthValue | None = None
    arc: AuthValue | None = None
    within: float = Field(30.0, gt=0)


class ExpectQuarantined(_Step):
    """The message sits in the recipient's Junk folder (RFC 6154 \\Junk), not the INBOX."""

    action: Literal["expect_quarantined"] = "expect_quarantined"
    id: str
    rcpt: Address | None = None  # default the first recipient, forwards followed
    within: float = Field(30.0, gt=0)


class ExpectQueued(_Step):
    action: Literal["expect_queued"] = "expect_queued"
    id: str
    node: str
    within: float = Field(15.0, gt=0)


class ExpectSink(_Step):
    """A sink node kept the message: each SMTP transaction that reached it, envelope
    recipients and bytes as sent."""

    action: Literal["expect_sink"] = "expect_sink"
    id: str
    node: str  # a node of kind sink
    within: float = Field(30.0, gt=0)
    tls: bool | None = None  # true: every copy came over STARTTLS; false: none did


class ExpectDns(_Step):
    action: Literal["expect_dns"] = "expect_dns"
    name: Annotated[str, _parses(dns.name.from_text, "a DNS name")]
    type: Annotated[str, _parses(dns.rdatatype.from_text, "a DNS type (A, MX...)")] = "A"
    answer: list[str] = Field(default_factory=list)  # rdata strings; empty: NODATA
    rcode: Annotated[str, _parses(_rcode, "an rcode (NOERROR, NXDOMAIN...) or TIMEOUT")] = "NOERROR"


class OpenRelayProbe(_Step):
    action: Literal["expect_no_open_relay"] = "expect_no_open_relay"
    node: str


Step = Annotated[
    NodeStep | Impair | DnsFault | DnsRestore | Send | ExpectSent | Reject | ExpectDelivered
    | ExpectBounce | ExpectQueued | ExpectDns | OpenRelayProbe | ExpectAuth | ExpectQuarantined
    | ExpectSink,
    Field(discriminator="action"),
]  # fmt: skip


class Scenario(StrictModel):
    name: str
    topology: str
    runtime: Literal["auto", "docker", "local"] = "auto"
    steps: list[Step] = Field(min_length=1)


_NODE_ACTIONS = {"stop", "start", "kill", "restart", "cut", "restore", "clear"}
ACTIONS = {
    action
    for model in get_args(get_args(Step)[0])
    for action in get_args(model.model_fields["action"].annotation)
}


def _normalise(step: Any) -> Any:
    """``- stop: mx1`` and ``- send: {...}`` become ``{"action": ..., ...}``."""
    if step == "dns_restore":
        return {"action": step}
    if not isinstance(step, dict) or len(step) != 1:
        return step
    ((action, args),) = step.items()
    if action not in ACTIONS:  # a typo: the action alone gets a did-you-mean
        return {"action": action}
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
    "expect_queued", "expect_dns", "expect_no_open_relay", "expect_auth", "expect_quarantined",
    "expect_sink",
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
        if action in ACTIONS and action not in CHECK_ACTIONS:
            raise TopologyError(
                source, f"checks[{i}]", f"{action} is a fault step", "put it in a scenario file"
            )
        if action is not None and action not in ACTIONS:
            raise TopologyError(
                source,
                f"checks[{i}]",
                f"{action!r} is not a check",
                did_you_mean(str(action), sorted(CHECK_ACTIONS))
                or f"use one of: {', '.join(sorted(CHECK_ACTIONS))}",
            )
    try:
        scenario = _checks_as_scenario(topo.name, steps)
    except ValidationError as exc:
        err = validation_error(exc, source, skip=_tags(steps))
        field = err.field.replace("steps", "checks", 1)
        raise TopologyError(source, field, err.message, err.fix) from None
    _check_names(scenario, topo, source, "checks")
    return scenario


def load_scenario(path: Path) -> tuple[Scenario, Topology]:
    """Parse a scenario and its topology; mistakes are one-line ``TopologyError``s."""
    src = str(path)
    data = read_yaml(read_source(path), src)
    steps = data.get("steps")
    if isinstance(steps, list):
        data["steps"] = steps = [_normalise(s) for s in steps]
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        skip = _tags(steps) if isinstance(steps, list) else set()
        raise validation_error(exc, src, skip=skip) from None
    topo_path = (path.parent / scenario.topology).resolve()
    try:
        text = read_source(topo_path)
    except TopologyError as exc:
        raise TopologyError(src, "topology", f"{topo_path}: {exc.message}", exc.fix) from None
    topo = parse_topology(text, str(topo_path))
    _check_names(scenario, topo, src)
    return scenario, topo


def _tags(steps: list[Any]) -> set[str]:
    """The action names, which pydantic puts in an error's location; dropped from it."""
    return {s["action"] for s in steps if isinstance(s, dict) and isinstance(s.get("action"), str)}


# steps whose node must be a relay: they look at its queue or talk SMTP to it
_RELAY_STEPS = (ExpectQueued, OpenRelayProbe, Reject)


def _check_names(scenario: Scenario, topo: Topology, src: str, field: str = "steps") -> None:
    """Nodes, users and message ids a step names must exist, and be of the right kind."""
    sent: dict[str, Send] = {}
    users = {f"{u}@{d}".lower() for d, spec in topo.domains.items() for u in spec.users}
    relays = [n for n, spec in topo.nodes.items() if role_of(spec.kind) == "relay"]
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
        if isinstance(step, ExpectSink) and topo.nodes[step.node].kind != "sink":
            sinks = [n for n, spec in topo.nodes.items() if spec.kind == "sink"]
            kind = topo.nodes[step.node].kind
            raise TopologyError(
                src, f"{where}.node", f"{step.node!r} is of kind {kind}, need a sink",
                f"use one of: {', '.join(sinks)}" if sinks else "add a node of kind sink",
            )  # fmt: skip
        if node is not None and isinstance(step, _RELAY_STEPS) and node not in relays:
            raise TopologyError(
                src,
                f"{where}.node",
                f"{node!r} is a {topo.nodes[node].kind}, need a relay",
                f"use one of: {', '.join(relays)}",
            )
        # it logs in as the sender, or finds the relay to talk to by the sender's domain
        logs_in = isinstance(step, Send) or (
            isinstance(step, Reject) and (step.auth or step.node is None)
        )
        sender = getattr(step, "sender", "")
        if logs_in and sender.lower() not in users:
            fix = f"send as one of: {', '.join(sorted(users))}"
            if isinstance(step, Reject) and not step.auth:
                fix = "or give the relay to talk to as node"
            raise TopologyError(
                src, f"{where}.from", f"{sender} is not a user of lab {topo.name}", fix
            )
        if isinstance(step, Send):
            if step.id in sent:
                raise TopologyError(src, f"{where}.id", f"message id {step.id!r} used twice")
            sent[step.id] = step
        msg_id = getattr(step, "id", None)
        if not isinstance(step, Send) and msg_id is not None and msg_id not in sent:
            raise TopologyError(
                src, f"{where}.id", f"no message {msg_id!r} was sent before this step"
            )
        if isinstance(step, DnsFault) and not _served(topo, step.name):
            raise TopologyError(
                src,
                f"{where}.name",
                f"{step.name!r} is not served by the lab's DNS",
                f"use a name under {', '.join(topo.domains)}",
            )
        if isinstance(step, ExpectDelivered) and step.route:  # Received: by these hosts
            _check_route(step.route, topo, src, f"{where}.route")
        rcpt = getattr(step, "rcpt", None)
        if isinstance(step, ExpectAuth | ExpectQuarantined) and rcpt and rcpt.lower() not in users:
            raise TopologyError(
                src, f"{where}.rcpt", f"{rcpt} has no mailbox in lab {topo.name}",
                f"use one of: {', '.join(sorted(users))}",
            )  # fmt: skip
        if isinstance(step, ExpectDelivered):  # it reads each recipient's mailbox
            strangers = [r for r in sent[step.id].to if r.lower() not in users]
            if strangers:
                raise TopologyError(
                    src,
                    f"{where}.id",
                    f"{step.id} goes to {strangers[0]}, who has no mailbox in lab {topo.name}",
                    "expect_bounce for mail to unknown users",
                )


def _served(topo: Topology, name: str) -> bool:
    """Names the lab's DNS answers for: its domains and its reverse zone."""
    return in_lab(topo, name) or name.lower().rstrip(".").endswith(".in-addr.arpa")


def _check_route(route: list[str], topo: Topology, src: str, where: str) -> None:
    """A route lists the host names of lab nodes, as their ``Received: by`` shows them."""
    from mxlab.lab.plan import _hostnames  # the planner builds on topologies

    fqdns = _hostnames(topo)
    hosts = sorted(fqdns.values())
    for i, host in enumerate(route):
        if host not in hosts:  # compared as written with the Received: chain
            known = did_you_mean(fqdns[host], hosts) if host in fqdns else ""  # a node name
            raise TopologyError(
                src,
                f"{where}[{i}]",
                f"no node has the host name {host!r}",
                known or did_you_mean(host.lower(), hosts) or f"use one of: {', '.join(hosts)}",
            )
