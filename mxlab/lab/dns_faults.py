"""Stage DNS failures in a running lab: the fault file on the DNS node is the one record
of what is broken, so the CLI and scenarios can add and lift faults independently."""

from __future__ import annotations

import signal
from dataclasses import asdict

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from mxlab.dns.faults import Faults, normalize_name, read_faults, wait_applied, write_faults
from mxlab.lab import labdir
from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan
from mxlab.lab.runtime.base import Runtime

MODES = ("servfail", "timeout", "drop_mx")
APPLY_TIMEOUT = 10.0


def ask(plan: LabPlan, name: str, rdtype: str, timeout: float = 3.0) -> tuple[str, list[str]]:
    """(rcode or "TIMEOUT", sorted rdata of that type) from the lab's DNS node."""
    dns_node = plan.dns_node
    query = dns.message.make_query(name, rdtype)
    try:
        reply = dns.query.udp(query, dns_node.address, port=dns_node.ports["dns"], timeout=timeout)
    except dns.exception.Timeout:
        return "TIMEOUT", []
    want = dns.rdatatype.from_text(rdtype)
    got = sorted(rd.to_text() for rrset in reply.answer if rrset.rdtype == want for rd in rrset)
    return dns.rcode.to_text(reply.rcode()), got


def _state_dir(plan: LabPlan):  # noqa: ANN202 - a Path
    name = plan.dns_node.name
    return name, labdir.node_dir(plan, name) / "state"


def current(plan: LabPlan) -> Faults:
    _, state = _state_dir(plan)
    try:
        return read_faults(state)
    except ValueError as exc:
        raise LabError(f"{exc} (fix or delete the file, then mxlab dns restore)") from None


def _apply(plan: LabPlan, runtime: Runtime, faults: Faults) -> None:
    node, state = _state_dir(plan)
    if plan.dns_node.kind != "dns":
        raise LabError(
            f"DNS faults are our DNS node's: {node} runs {plan.dns_node.kind} (use kind: dns)"
        )
    write_faults(state, **{k: sorted(v) for k, v in asdict(faults).items()})
    runtime.signal(plan, node, signal.SIGHUP)  # the DNS node reloads its faults on HUP
    if not wait_applied(state, APPLY_TIMEOUT):  # SIGHUP is asynchronous: the next step of
        raise LabError(  # a scenario must already see the outage (or its end)
            f"the lab DNS did not apply the fault change (is it running? mxlab logs {node})"
        )


def fail(plan: LabPlan, runtime: Runtime, name: str, mode: str) -> None:
    """Make NAME (and only NAME) fail the way MODE says, until restored."""
    if mode not in MODES:
        raise LabError(f"unknown DNS fault {mode!r} (one of {', '.join(MODES)})")
    faults = asdict(current(plan))
    faults[mode] = set(faults[mode]) | {normalize_name(name)}
    _apply(plan, runtime, Faults.of(**faults))


def restore(plan: LabPlan, runtime: Runtime, name: str | None = None) -> None:
    """Lift the faults on NAME, or every fault when NAME is None."""
    faults = asdict(current(plan))
    gone = {normalize_name(name)} if name else None
    _apply(
        plan,
        runtime,
        Faults.of(**{k: (set(v) - gone if gone else ()) for k, v in faults.items()}),
    )
