"""Change a running lab the way an operator changes a mail system: users, domains, MX.

The lab directory keeps the topology the lab was planned from. A change edits that
topology, plans it again (the same subnet, so every node keeps its address), writes the
node configs that came out different, and has those nodes reload them: relays and
stores reread their config on SIGHUP (as Postfix and Dovecot reload), and acknowledge
it by the config's digest; the DNS node is restarted to serve changed zones, as
``mxlab dns add`` does. Records added to the running lab by hand survive a change."""

from __future__ import annotations

import copy
import fcntl
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from mxlab.dns.zonefile import render_zone
from mxlab.lab import kinds, labdir
from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan, make_plan
from mxlab.lab.runtime.base import Runtime
from mxlab.lab.topology import Topology, parse_topology
from mxlab.nodes.config import DnsNodeConfig, StoreNodeConfig, Zone
from mxlab.nodes.reload import APPLIED_FILE, digest

RELOAD_TIMEOUT = 10.0
RELOADS = ("dns", "relay", "store")  # kinds whose node program rereads its config on SIGHUP


def topology(plan: LabPlan) -> dict[str, Any]:
    """The running lab's topology as data (passwords included): edit it, then ``change``."""
    return labdir.read_topology(plan)[0]


def _validated(plan: LabPlan, data: dict[str, Any]) -> Topology:
    """The edited topology checked like a file (a wrong node name is one located line)."""
    return parse_topology(yaml.safe_dump(data, sort_keys=False), f"lab {plan.lab}")


def _hashes(plan: LabPlan) -> dict[str, str]:
    return {
        address: user.password_hash
        for node in plan.nodes.values()
        if isinstance(node.config, StoreNodeConfig)
        for address, user in node.config.users.items()
    }


def _plan(plan: LabPlan, topo: Topology, privileged: bool, keep: dict[str, str]) -> LabPlan:
    return make_plan(
        topo,
        runtime=plan.runtime,
        lab_dir=Path(plan.lab_dir),
        subnet=plan.subnet,
        privileged=privileged,
        known_hashes=keep,
    )


def _merge_zones(live: list[Zone], before: list[Zone], after: list[Zone]) -> list[Zone]:
    """Three-way: the live zones (with records added by hand), less what was planned
    before and is not now, plus what is planned only now."""
    old = {z.origin: set(z.records) for z in before}
    have = {z.origin: list(z.records) for z in live}
    out = []
    for zone in after:
        planned, was = set(zone.records), old.get(zone.origin, set())
        kept = [r for r in have.get(zone.origin, []) if r in planned or r not in was]
        kept += [r for r in zone.records if r not in was and r not in kept]
        out.append(Zone(origin=zone.origin, records=kept))
    return out


def replan(plan: LabPlan, topo: Topology) -> tuple[LabPlan, list[Zone]]:
    """The running lab planned again from the edited topology: unchanged users keep
    their password hashes, every node its address, the zones the records added by hand.
    Also the zones as planned, before those records."""
    _, privileged, before = labdir.read_topology(plan)
    hashes = _hashes(plan)
    new_pw = {f"{u}@{d}": pw for d, s in topo.domains.items() for u, pw in s.users.items()}
    keep = {a: h for a, h in hashes.items() if plan.user(a).password == new_pw.get(a)}
    new = _plan(plan, topo, privileged, keep)
    if [(n.name, n.address) for n in new.start_order()] != [
        (n.name, n.address) for n in plan.start_order()
    ]:
        raise LabError("that change moves nodes: bring the lab down and up with it instead")
    zones = _merge_zones(plan.zones, before, new.zones)
    dns = new.dns_node
    assert isinstance(dns.config, DnsNodeConfig)
    dns = dns.model_copy(update={"config": dns.config.model_copy(update={"zones": zones})})
    merged = new.model_copy(update={"zones": zones, "nodes": new.nodes | {dns.name: dns}})
    return merged, new.zones


def changed_nodes(plan: LabPlan, new: LabPlan) -> list[str]:
    """Nodes whose config differs, in start order."""
    return [n.name for n in new.start_order() if n.config != plan.nodes[n.name].config]


def _replace(path: Path, text: str) -> None:
    """Write then rename: a node reloading on a signal never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def apply(
    plan: LabPlan, runtime: Runtime, new: LabPlan, topo: Topology, planned: list[Zone]
) -> list[str]:
    """Write the new plan, secrets, topology, zones and changed configs; have each running
    node that changed pick its config up. Returns the changed nodes."""
    changed = changed_nodes(plan, new)
    root = Path(new.lab_dir)
    written: dict[str, str] = {}
    with labdir.private():
        for name in changed:
            text = new.nodes[name].config.model_dump_json(indent=2)
            _replace(labdir.node_dir(new, name) / "config.json", text)
            written[name] = digest(text.encode())
        _replace(root / "plan.json", new.model_dump_json(indent=2))
        for zone in new.zones:
            _replace(root / "zones" / f"{zone.origin.rstrip('.')}.zone", render_zone(zone))
    labdir.write_secrets(new)
    labdir.write_auth_keys(new)  # before the relays reload: they sign with them
    privileged = labdir.read_topology(plan)[1]
    labdir.write_topology(new, topo.model_dump(mode="json"), privileged, planned)
    for name in changed:  # the files a kind's software reads beside config.json
        kinds.get(new.nodes[name].kind).write_config(new, new.nodes[name])
    running = {s.node for s in runtime.status(new.lab) if s.state == "running"}
    hup = [n for n in changed if n in running and new.nodes[n].kind in RELOADS]
    for name in changed:
        if name in hup:
            runtime.signal(new, name, signal.SIGHUP)
        elif name in running:
            runtime.restart(new, name)  # loads zones (or another kind's files) at start
    for name in hup:
        wait_reloaded(new, name, written[name])
    return changed


def wait_reloaded(plan: LabPlan, node: str, want: str) -> None:
    """SIGHUP is asynchronous: the next step (a message to the new user) must already
    find the node reloaded."""
    path = labdir.node_dir(plan, node) / "state" / APPLIED_FILE
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while True:
        try:
            if path.read_text().strip() == want:
                return
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise LabError(f"{node} did not reload its config (see: mxlab logs {node})")
        time.sleep(0.02)


Edit = Callable[[dict[str, Any]], dict[str, Any]]


def change(
    plan: LabPlan, runtime: Runtime, edit: Edit, dry_run: bool = False
) -> tuple[LabPlan, list[str]]:
    """Edit the lab's topology as it is on disk now, plan it and (unless ``dry_run``) put
    it in force; the new plan and the nodes that change ([] when nothing does). One
    change at a time: two playbooks editing one lab must not lose an edit."""
    if plan.runtime == "hosts":  # node files live on the hosts, copied there at `up`
        raise LabError(
            f"lab {plan.lab} runs on the hosts runtime, which cannot change it live:"
            " bring it down and up with the changed topology"
        )
    with labdir.private(), open(Path(plan.lab_dir) / ".change.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        plan = labdir.read_plan(plan.lab)
        current = topology(plan)
        data = edit(copy.deepcopy(current))
        if data == current:
            return plan, []
        topo = _validated(plan, data)
        new, planned = replan(plan, topo)
        if dry_run:
            return new, changed_nodes(plan, new)
        return new, apply(plan, runtime, new, topo, planned)


# -- edits of the topology, as data ------------------------------------------------------
def _split(address: str) -> tuple[str, str]:
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise LabError(f"{address!r} is not an address (user@domain)")
    return local, domain.lower()


def _domain(data: dict[str, Any], domain: str) -> dict[str, Any]:
    try:
        spec: dict[str, Any] = data["domains"][domain]
    except KeyError:
        known = ", ".join(data["domains"])
        raise LabError(f"{domain} is not a domain of the lab ({known})") from None
    return spec


def with_user(data: dict[str, Any], address: str, password: str) -> dict[str, Any]:
    """The topology with the user added, or given this password."""
    local, domain = _split(address)
    out = copy.deepcopy(data)
    users = _domain(out, domain)["users"]
    users[next((u for u in users if u.lower() == local.lower()), local)] = password
    return out


def without_user(data: dict[str, Any], address: str) -> dict[str, Any]:
    local, domain = _split(address)
    out = copy.deepcopy(data)
    users = _domain(out, domain)["users"]
    for name in [u for u in users if u.lower() == local.lower()]:
        del users[name]
    return out


def with_domain(
    data: dict[str, Any],
    domain: str,
    store: str,
    mx: dict[str, int],
    users: dict[str, str],
    submission: str | None = None,
) -> dict[str, Any]:
    """The topology with a domain served by existing nodes (its own zone, MX records,
    the relays' routing and the store's users follow from the plan)."""
    out = copy.deepcopy(data)
    spec = out["domains"].setdefault(domain.lower(), {})  # an existing one keeps the rest
    spec.update(store=store, mx=_mx_list(mx), submission=submission, users=dict(users))
    return out


def with_mx(data: dict[str, Any], domain: str, mx: dict[str, int]) -> dict[str, Any]:
    """The domain's MX set and preferences replaced by ``mx`` (node -> preference)."""
    out = copy.deepcopy(data)
    _domain(out, domain.lower())["mx"] = _mx_list(mx)
    return out


def _mx_list(mx: dict[str, int]) -> list[dict[str, Any]]:
    return [{"node": n, "preference": p} for n, p in sorted(mx.items(), key=lambda i: (i[1], i[0]))]


def mx_of(data: dict[str, Any], domain: str) -> dict[str, int]:
    return {m["node"]: m["preference"] for m in _domain(data, domain.lower())["mx"]}
