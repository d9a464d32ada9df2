"""What every mxlab.lab module shares: the lab it acts on (through the mxlab Python
API, on the control node), errors as one-line failures, and a topology change reported
the Ansible way: changed, check mode, diff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule

LAB_OPTION = {"lab": {"type": "str", "required": False}}
HIDDEN = "********"


def lab_module(options: dict[str, Any], **kwargs: Any) -> AnsibleModule:
    """A module taking ``lab`` (the only running one when omitted) besides ``options``."""
    return AnsibleModule(argument_spec=LAB_OPTION | options, supports_check_mode=True, **kwargs)


def run(module: AnsibleModule, act: Callable[[Any], dict[str, Any]]) -> None:
    """Attach to the lab, ``act`` on it, exit with what it returns; a lab error (no such
    lab, node or domain; a change the topology refuses) is the task's failure message."""
    try:
        import mxlab
    except ImportError as exc:
        module.fail_json(msg=f"the mxlab package is not importable by {module._name}: {exc}")
    try:
        result = act(mxlab.Lab.attach(module.params["lab"]))
    except (mxlab.LabError, mxlab.TopologyError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


def converge(
    module: AnsibleModule, lab: Any, edit: Callable[[dict], dict], view: Callable[[dict], Any]
) -> dict[str, Any]:
    """Edit the lab's topology and put it in force (in check mode: only say what would
    change); ``view`` picks from a topology what the diff shows."""
    before = lab.topology()
    nodes = lab.reconfigure(edit, dry_run=module.check_mode)
    return {
        "changed": bool(nodes),
        "nodes": nodes,
        "diff": {"before": view(before), "after": view(edit(before))},
    }


def domain_view(topology: dict[str, Any], domain: str) -> dict[str, Any]:
    """A domain as a diff shows it: passwords hidden."""
    spec = topology["domains"].get(domain)
    if spec is None:
        return {}
    users = {local: HIDDEN for local in spec["users"]}
    return {k: v for k, v in spec.items() if k != "users"} | {"users": users}
