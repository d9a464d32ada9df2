"""The lab directory: the plan, each node's config and state, logs — inspectable on disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan


def home() -> Path:
    """Where labs live: ``$MXLAB_HOME``, else ``~/.local/state/mxlab``."""
    return Path(os.environ.get("MXLAB_HOME") or "~/.local/state/mxlab").expanduser()


def lab_dir(lab: str) -> Path:
    return home() / "labs" / lab


def node_dir(plan: LabPlan, node: str) -> Path:
    return Path(plan.lab_dir) / "nodes" / node


def write_plan(plan: LabPlan) -> None:
    """Write plan.json, one config.json and a state folder per node, and the zones."""
    from mxlab.dns.zonefile import render_zone
    from mxlab.lab.pki import ensure_ca, issue

    root = Path(plan.lab_dir)
    ca = ensure_ca(root / "ca", plan.lab)
    (root / "zones").mkdir(parents=True, exist_ok=True)
    (root / "plan.json").write_text(plan.model_dump_json(indent=2))
    for name, node in plan.nodes.items():
        ndir = node_dir(plan, name)
        (ndir / "state").mkdir(parents=True, exist_ok=True)
        (ndir / "config.json").write_text(node.config.model_dump_json(indent=2))
        if getattr(node.config, "tls", None) is not None:
            tls = ndir / "tls"
            issue(ca, node.fqdn, node.address, tls / "cert.pem", tls / "key.pem")
            shutil.copyfile(root / "ca" / "ca.pem", tls / "ca.pem")
    for zone in plan.zones:
        (root / "zones" / f"{zone.origin.rstrip('.')}.zone").write_text(render_zone(zone))


def read_plan(lab: str) -> LabPlan:
    path = lab_dir(lab) / "plan.json"
    try:
        return LabPlan.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        known = ", ".join(list_labs()) or "none"
        hint = f"labs here: {known}; start one with mxlab up"
        raise LabError(f"no lab named {lab!r} ({hint})") from None


def list_labs() -> list[str]:
    root = home() / "labs"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "plan.json").is_file())


def only_lab(lab: str | None) -> str:
    """The lab a command means: the one given, else the only one there is."""
    if lab:
        return lab
    labs = list_labs()
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise LabError("no lab is up (start one with: mxlab up TOPOLOGY.yaml)")
    raise LabError(f"several labs are up ({', '.join(labs)}): name one")
