"""Exercises: a broken lab, a task, and goals checked against the RUNNING lab (DNS
answers, delivery probes, queues), never against the files the student may edit.

An exercise file (``topologies/exercises/*.exercise.yaml``) names a topology that
validates and comes up; the breakage is in the topology itself (an extra record) or in
``break`` steps applied once the lab is up - the same operations a student uses to fix
it (``mxlab dns add/remove``, ``start``, ``dns restore``...). A layer over ``mxlab.Lab``,
like the CLI."""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mxlab.api import Lab, validate
from mxlab.lab.errors import LabError
from mxlab.nodes.config import RelayNodeConfig

SUFFIX = ".exercise.yaml"
# beside the package in a checkout (editable install), else the working directory's
_PLACES = (Path(__file__).resolve().parent.parent, Path.cwd())
SHIPPED = next(
    (p / "topologies" / "exercises" for p in _PLACES if (p / "topologies" / "exercises").is_dir()),
    _PLACES[0] / "topologies" / "exercises",
)
MARK = "exercise.json"  # in the lab directory: which exercise this lab is


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Record(_Model):
    """A DNS record; ``{address:NODE}``, ``{reverse:NODE}`` (its in-addr.arpa name) and
    ``{fqdn:NODE}`` stand for what the plan gave the node."""

    name: str
    type: str
    value: str | None = None


_PLACEHOLDER = re.compile(r"\{(address|reverse|fqdn):([a-z0-9-]+)\}")


def expand(lab: Lab, text: str) -> str:
    """The placeholders of a break step filled in from the running lab's plan."""

    def fill(m: re.Match[str]) -> str:
        node = lab.plan.nodes.get(m.group(2))
        if node is None:
            raise LabError(f"{m.group(0)}: lab {lab.name} has no node {m.group(2)!r}")
        if m.group(1) == "address":
            return node.address
        if m.group(1) == "fqdn":
            return node.fqdn + "."
        return ipaddress.ip_address(node.address).reverse_pointer + "."

    return _PLACEHOLDER.sub(fill, text)


class Step(_Model):
    """One break step; exactly one field set."""

    dns_add: Record | None = None
    dns_remove: Record | None = None
    dns_fail: dict[str, str] | None = None  # {name, mode}
    stop: str | None = None
    expired_cert: str | None = None  # node: an expired certificate from the lab CA
    open_relay: str | None = None  # relay node: trusts the host's clients to relay anywhere
    hop_to: dict[str, str] | None = None  # {node, to}: node's next hop becomes relay "to"
    lmtp_to: dict[str, str] | None = None  # {node, domain, store}: hand domain to store
    send: dict[str, str] | None = None  # {from, to, subject}


class Goal(_Model):
    """One thing that must hold in the running lab; exactly one check field set."""

    title: str
    hint: str = ""
    mx_targets_resolve: str | None = None  # domain: every MX host has an address
    mx_targets_accept: str | None = None  # domain: every MX address is a relay for it
    answers: dict[str, str] | None = None  # {name, type}: NOERROR with an answer
    reverse_matches: str | None = None  # node: PTR of its address is its name, and back
    running: str | None = None  # node
    tls_trusted: str | None = None  # node: its certificate verifies against the lab CA
    fetches: str | None = None  # address: its mailbox can be read over IMAP
    expect: dict[str, Any] | None = None  # a scenario check step, e.g. expect_no_open_relay
    queue_empty: str | None = None  # relay node
    delivers: dict[str, Any] | None = None  # {from, to, within}
    arrived: dict[str, Any] | None = None  # {to, subject, within}: sent before the fix


class Exercise(_Model):
    name: str
    title: str
    topology: str
    task: str
    steps: list[Step] = Field(default_factory=list, alias="break")
    goals: list[Goal] = Field(min_length=1)
    source: str = ""  # the file it was read from

    @property
    def lab(self) -> str:
        return validate(self.topology_path).name

    @property
    def topology_path(self) -> Path:
        return Path(self.source).parent / self.topology


def load(path: str | Path) -> Exercise:
    """An exercise file, by path or by the name of a shipped one."""
    p = Path(path)
    if not p.is_file():
        p = SHIPPED / f"{path}{SUFFIX}"
    if not p.is_file():
        known = ", ".join(shipped()) or "none"
        raise LabError(f"no exercise {str(path)!r} (shipped: {known})")
    try:
        data = yaml.safe_load(p.read_text())
        return Exercise.model_validate({**data, "source": str(p)})
    except (yaml.YAMLError, ValidationError, TypeError) as exc:
        raise LabError(f"{p}: not a valid exercise: {str(exc).splitlines()[0]}") from None


def shipped() -> list[str]:
    return sorted(p.name.removesuffix(SUFFIX) for p in SHIPPED.glob(f"*{SUFFIX}"))


def start(exercise: Exercise, runtime: str = "auto", progress: Any = None) -> Lab:
    """Bring the exercise's lab up, break it, and remember which exercise it is."""
    kwargs = {"progress": progress} if progress else {}
    lab = Lab.up(exercise.topology_path, runtime, **kwargs)
    try:
        for step in exercise.steps:
            apply(lab, step)
    except Exception:
        lab.down()
        raise
    (lab.directory / MARK).write_text(f'{{"exercise": "{exercise.source}"}}\n')
    return lab


def of_lab(lab: Lab) -> Exercise:
    """The exercise a running lab was started for (or whose topology it runs)."""
    mark = lab.directory / MARK
    if mark.is_file():
        return load(json.loads(mark.read_text())["exercise"])
    for name in shipped():
        ex = load(name)
        if ex.lab == lab.name:
            return ex
    raise LabError(f"lab {lab.name} is not an exercise (start one: mxlab exercise start NAME)")


def apply(lab: Lab, step: Step) -> None:
    if step.dns_remove is not None:
        r = step.dns_remove
        value = expand(lab, r.value) if r.value is not None else None
        lab.dns_remove(expand(lab, r.name), r.type, value)
    elif step.dns_add is not None:
        r = step.dns_add
        if r.value is None:
            raise LabError(f"break step dns_add {r.name} {r.type}: needs a value")
        lab.dns_add(expand(lab, r.name), r.type, expand(lab, r.value))
    elif step.dns_fail is not None:
        lab.dns_fail(step.dns_fail["name"], step.dns_fail.get("mode", "servfail"))
    elif step.stop is not None:
        lab.stop(step.stop)
    elif step.expired_cert is not None:
        lab.cert_renew(step.expired_cert, expired=True)
    elif step.open_relay is not None:
        _open_relay(lab, step.open_relay)
    elif step.hop_to is not None:
        _hop_to(lab, step.hop_to["node"], step.hop_to["to"])
    elif step.lmtp_to is not None:
        _lmtp_to(lab, **step.lmtp_to)
    elif step.send is not None:
        s = step.send
        lab.send(s["from"], [s["to"]], subject=s.get("subject", "sent before the fix"))


# where the lab sees a host-side client come from: loopback, or a docker network's gateway
HOST_CLIENTS = ("127.0.0.1",)


def _relay_config(lab: Lab, node: str) -> tuple[Path, dict[str, Any]]:
    path = lab.directory / "nodes" / node / "config.json"
    config = json.loads(path.read_text())
    if config.get("role") != "relay":
        raise LabError(f"{node} is not a relay")
    return path, config


def _open_relay(lab: Lab, node: str) -> None:
    """Edit the relay's config file as a careless admin would - trust the host's clients
    to relay anywhere (Postfix's mynetworks too wide) - and restart it."""
    path, config = _relay_config(lab, node)
    gateway = str(next(ipaddress.ip_network(lab.plan.subnet).hosts()))
    config["trusted_clients"] = sorted({*config["trusted_clients"], *HOST_CLIENTS, gateway})
    path.write_text(json.dumps(config, indent=2))
    lab.restart(node)


def _hop_to(lab: Lab, node: str, to: str) -> None:
    """Point a relay's next hop (smarthost) at another relay, which is told to trust it:
    where ``to`` already sends through ``node``, mail goes round in a loop."""
    path, config = _relay_config(lab, node)
    target_path, target = _relay_config(lab, to)
    address = lab.plan.nodes[to].address
    config["next_hop"] = {"host": address, "port": lab.plan.nodes[to].ports["smtp"]}
    target["trusted_clients"] = sorted({*target["trusted_clients"], lab.plan.nodes[node].address})
    path.write_text(json.dumps(config, indent=2))
    target_path.write_text(json.dumps(target, indent=2))
    lab.restart(to)
    lab.restart(node)


def _lmtp_to(lab: Lab, node: str, domain: str, store: str) -> None:
    """Make a relay hand a domain's mail to another store (which knows none of its
    users), and restart it."""
    path, config = _relay_config(lab, node)
    if domain not in config["local_domains"]:
        raise LabError(f"{node} is not final for {domain}")
    target = lab.plan.nodes[store]
    config["local_domains"][domain]["lmtp"] = {"host": target.address, "port": target.ports["lmtp"]}
    path.write_text(json.dumps(config, indent=2))
    lab.restart(node)


@dataclass(frozen=True)
class Verdict:
    title: str
    ok: bool
    detail: str
    hint: str


def check(lab: Lab, exercise: Exercise) -> list[Verdict]:
    """Each goal judged on the running lab, in order."""
    out = []
    for goal in exercise.goals:
        try:
            ok, detail = _judge(lab, goal)
        except LabError as exc:
            ok, detail = False, str(exc)
        out.append(Verdict(goal.title, ok, detail, goal.hint))
    return out


def _relay_for(lab: Lab, address: str, domain: str) -> str | None:
    """The relay at ``address`` if it accepts mail for ``domain`` (final or backup)."""
    for n in lab.plan.nodes.values():
        cfg = n.config
        accepts = isinstance(cfg, RelayNodeConfig) and (
            domain in cfg.local_domains or domain in cfg.relay_domains
        )
        if n.address == address and accepts:
            return n.name
    return None


def _mx_hosts(lab: Lab, domain: str) -> list[str]:
    rcode, mx = lab.dns(domain, "MX")
    if rcode != "NOERROR" or not mx:
        raise LabError(f"MX {domain}: {rcode}, {len(mx)} answer(s)")
    return [r.split()[1] for r in mx]


def _judge(lab: Lab, goal: Goal) -> tuple[bool, str]:
    if goal.mx_targets_resolve is not None:
        dom = goal.mx_targets_resolve
        bad = [h for h in _mx_hosts(lab, dom) if not lab.dns(h, "A")[1]]
        return not bad, (f"no address for {', '.join(bad)}" if bad else "every MX host has an A")
    if goal.mx_targets_accept is not None:
        dom = goal.mx_targets_accept
        wrong = []
        for host in _mx_hosts(lab, dom):
            for addr in lab.dns(host, "A")[1] or ["(none)"]:
                if _relay_for(lab, addr, dom) is None:
                    wrong.append(f"{host} -> {addr}")
        detail = "not a relay for " + dom + ": " + ", ".join(wrong)
        return not wrong, detail if wrong else f"every MX of {dom} is one of its relays"
    if goal.answers is not None:
        rcode, got = lab.dns(goal.answers["name"], goal.answers["type"])
        return rcode == "NOERROR" and bool(got), f"{rcode}: {', '.join(got) or 'no answer'}"
    if goal.reverse_matches is not None:
        return _reverse(lab, goal.reverse_matches)
    if goal.expect is not None:
        outcome = lab.run_checks([goal.expect])
        return outcome.ok, "; ".join(s.detail for s in outcome.steps)
    if goal.tls_trusted is not None:
        return lab.cert_check(goal.tls_trusted)
    if goal.fetches is not None:
        try:
            count = len(lab.mailbox(goal.fetches).raw())
        except (LabError, OSError) as exc:
            return False, f"IMAP as {goal.fetches}: {exc}"
        return True, f"{goal.fetches} reads {count} message(s) over IMAP"
    if goal.running is not None:
        state = {s.node: s.state for s in lab.status()}.get(goal.running, "unknown")
        return state == "running", f"{goal.running} is {state}"
    if goal.queue_empty is not None:
        left = lab.queue(goal.queue_empty)
        return not left, f"{len(left)} message(s) queued at {goal.queue_empty}"
    if goal.delivers is not None:
        return _probe(lab, goal.delivers)
    if goal.arrived is not None:
        rcpt, subject = goal.arrived["to"], goal.arrived["subject"]
        within = float(goal.arrived.get("within", 20))
        try:
            lab.mailbox(rcpt).wait_for(subject=subject, timeout=within)
        except LabError:
            return False, f"{subject!r} has not reached {rcpt} (within {within:g}s)"
        return True, f"{subject!r} reached {rcpt}"
    raise LabError(f"goal {goal.title!r} checks nothing")


def _reverse(lab: Lab, node: str) -> tuple[bool, str]:
    """FCrDNS: the PTR of the node's address names it, and that name's A is the address
    (what a strict receiver checks of a connecting server)."""
    n = lab.plan.nodes[node]
    rev = ipaddress.ip_address(n.address).reverse_pointer
    rcode, names = lab.dns(rev, "PTR")
    if not names:
        return False, f"PTR {rev}: {rcode}, no answer"
    back = {name: lab.dns(name, "A")[1] for name in names}
    good = [name for name, addrs in back.items() if n.address in addrs]
    return bool(good), f"PTR {n.address} -> {', '.join(names)}"


def _probe(lab: Lab, spec: dict[str, Any]) -> tuple[bool, str]:
    """Send a uniquely tagged message and wait for it in the recipient's mailbox."""
    tag = uuid.uuid4().hex[:12]
    sender, rcpt, within = spec["from"], spec["to"], float(spec.get("within", 15))
    lab.send(sender, [rcpt], subject=f"exercise probe {tag}", headers={"X-Mxlab-Probe": tag})
    try:
        lab.mailbox(rcpt).wait_for(header=("X-Mxlab-Probe", tag), timeout=within)
    except LabError:
        return False, f"a probe from {sender} did not reach {rcpt} within {within:g}s"
    return True, f"a probe from {sender} reached {rcpt}"
