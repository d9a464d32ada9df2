"""The running lab as an Ansible inventory: groups ``dns``, ``relays``, ``stores`` and
one per domain, each node with its address, FQDN, ports, role, the domains it serves
and the connection that reaches it (the container through the Docker API, or this
machine for a local-runtime node)."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from mxlab.lab import kinds
from mxlab.lab.plan import LabPlan

ROLE_GROUPS = {"dns": "dns", "relay": "relays", "store": "stores"}  # others: role + "s"


def role_group(role: str) -> str:
    return ROLE_GROUPS.get(role, f"{role}s")


def domain_group(domain: str) -> str:
    """Ansible group names are identifiers: ``alpha.test`` -> ``domain_alpha_test``."""
    return "domain_" + re.sub(r"[^a-z0-9_]", "_", domain.lower())


def served(plan: LabPlan, node: str) -> list[str]:
    """The domains a node serves: the DNS node all of them (it is authoritative), a relay
    those it is MX, submission server or backup for, a store those it keeps mail of."""
    n = plan.nodes[node]
    if n.role == "dns":
        return sorted(plan.domains)
    out: set[str] = set()
    for dom, d in plan.domains.items():
        if n.role == "store" and d.store == node:
            out.add(dom)
        if n.role == "relay" and (node == d.submission or any(m == node for _, m in d.mx)):
            out.add(dom)
    return sorted(out)


def _connection(plan: LabPlan, node: str) -> dict[str, str]:
    """How Ansible reaches the node: its container through this machine's Docker engine,
    or this machine for a local process (run by the Python mxlab runs on). Nodes of other
    runtimes get none: the inventory they were placed from says how to reach them; an
    external node (a server mxlab does not run) only its address, for the user's own
    connection settings."""
    n = plan.nodes[node]
    if not kinds.get(n.kind).runs:
        return {"ansible_host": n.address}
    if plan.runtime in ("docker", "swarm"):
        from mxlab.lab.runtime.docker import container_name

        return {
            "ansible_connection": "community.docker.docker_api",
            "ansible_host": container_name(plan.lab, node),
            "ansible_python_interpreter": "auto_silent",
        }
    if plan.runtime == "local":
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        }
    return {}


def host_vars(plan: LabPlan, node: str) -> dict[str, Any]:
    n = plan.nodes[node]
    return _connection(plan, node) | {
        "mxlab_node": n.name,
        "mxlab_role": n.role,
        "mxlab_kind": n.kind,  # which software (postfix, dovecot...)
        "mxlab_address": n.address,
        "mxlab_fqdn": n.fqdn,
        "mxlab_ports": dict(n.ports),
        "mxlab_domains": served(plan, node),
    }


def inventory(plan: LabPlan) -> dict[str, Any]:
    """The inventory in Ansible's YAML structure (``all`` -> ``children`` -> ``hosts``)."""
    roles = list(ROLE_GROUPS) + sorted({n.role for n in plan.nodes.values()} - set(ROLE_GROUPS))
    children: dict[str, Any] = {
        role_group(role): {"hosts": {n.name: None for n in plan.start_order() if n.role == role}}
        for role in roles
    }
    for dom in plan.domains:
        members = [n.name for n in plan.start_order() if dom in served(plan, n.name)]
        children[domain_group(dom)] = {
            "hosts": dict.fromkeys(members),
            "vars": {"mxlab_domain": dom},
        }
    return {
        "all": {
            "vars": {"mxlab_lab": plan.lab, "mxlab_runtime": plan.runtime},
            "hosts": {n.name: host_vars(plan, n.name) for n in plan.start_order()},
            "children": children,
        }
    }


def _ini_value(value: Any) -> str:
    """A host variable on an INI line: Ansible reads it back as a Python literal."""
    if isinstance(value, str):
        return shlex.quote(value)
    return shlex.quote(json.dumps(value))


def render_ini(inv: dict[str, Any]) -> str:
    """The same inventory in INI format: each host with its variables under ``[all]``,
    the groups listing names only."""
    root = inv["all"]
    lines = ["[all]"]
    for host, hvars in root["hosts"].items():
        lines.append(" ".join([host, *(f"{k}={_ini_value(v)}" for k, v in hvars.items())]))
    lines += ["", "[all:vars]", *(f"{k}={_ini_value(v)}" for k, v in root["vars"].items())]
    for group, spec in root["children"].items():
        lines += ["", f"[{group}]", *spec["hosts"]]
        if spec.get("vars"):
            lines += ["", f"[{group}:vars]"]
            lines += [f"{k}={_ini_value(v)}" for k, v in spec["vars"].items()]
    return "\n".join(lines) + "\n"
