"""Run a topology with other software in the same roles: the shipped scenarios with
Postfix and Dovecot in place of our relays and stores (``--kinds
relay=postfix,store=dovecot``), checked and accounted for the same way."""

from __future__ import annotations

from collections.abc import Mapping

from mxlab.lab.errors import LabError
from mxlab.lab.kinds import MODULES
from mxlab.lab.topology import Topology, role_of

REAL_SOFTWARE = {"relay": "postfix", "store": "dovecot"}  # what --kinds real means


def parse_kinds(text: str) -> dict[str, str]:
    """``relay=postfix,store=dovecot`` (or ``real``) as a mapping, each pair checked:
    both kinds known, and of one role."""
    if text == "real":
        return dict(REAL_SOFTWARE)
    swap = {}
    for part in filter(None, text.split(",")):
        old, sep, new = part.strip().partition("=")
        if not sep:
            raise LabError(
                f"--kinds {text}: write KIND=KIND pairs, e.g. relay=postfix,store=dovecot"
            )
        swap[old] = new
    check_swap(swap)
    return swap


def check_swap(swap: Mapping[str, str]) -> None:
    for old, new in swap.items():
        for kind in (old, new):
            if kind not in MODULES:
                raise LabError(f"--kinds: no kind {kind!r} (kinds: {', '.join(MODULES)})")
        if role_of(old) != role_of(new):
            raise LabError(
                f"--kinds {old}={new}: a {old} node is a {role_of(old)}, a {new} node a "
                f"{role_of(new)}: swap kinds of one role"
            )


def swap_kinds(topo: Topology, swap: Mapping[str, str]) -> Topology:
    """The topology with every node of kind K run by ``swap[K]`` instead."""
    check_swap(swap)
    nodes = {
        name: spec.model_copy(update={"kind": swap.get(spec.kind, spec.kind)})
        for name, spec in topo.nodes.items()
    }
    return topo.model_copy(update={"nodes": nodes})
