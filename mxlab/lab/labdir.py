"""The lab directory: the plan, each node's config and state, logs — inspectable on disk,
and private: the directory is 0700, every file in it 0600 (keys, mail, the secrets file
that alone holds the users' passwords)."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan
from mxlab.nodes.config import RelayNodeConfig, Zone


def home() -> Path:
    """Where labs live: ``$MXLAB_HOME``, else ``~/.local/state/mxlab``."""
    return Path(os.environ.get("MXLAB_HOME") or "~/.local/state/mxlab").expanduser()


def lab_dir(lab: str) -> Path:
    return home() / "labs" / lab


SECRETS = "secrets.json"


@contextlib.contextmanager
def private() -> Iterator[None]:
    """Files and folders made inside are 0600/0700 (the lab's state is nobody else's)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


@contextlib.contextmanager
def lock(lab: str) -> Iterator[None]:
    """Hold the lab while it is brought up or down: a second `up` of the same lab fails
    with one line instead of racing the first. The lock file lives beside the lab's
    folder, so removing the folder does not drop the lock."""
    root = home() / "labs"
    with private():
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / f".{lab}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LabError(
                f"lab {lab!r} is being started or stopped by another mxlab: wait for it"
            ) from None
        yield
    finally:
        os.close(fd)


def is_locked(lab: str) -> bool:
    """Another process is bringing the lab up or down right now."""
    path = home() / "labs" / f".{lab}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove(lab: str) -> None:
    """Nothing of the lab stays on disk: mail, queues, keys, plan."""
    shutil.rmtree(lab_dir(lab), ignore_errors=True)


def node_dir(plan: LabPlan, node: str) -> Path:
    return Path(plan.lab_dir) / "nodes" / node


def write_secrets(plan: LabPlan) -> None:
    """The users' passwords, in the one file that holds them (0600)."""
    secrets = {u.address: u.password for u in plan.users}
    with private():
        (Path(plan.lab_dir) / SECRETS).write_text(json.dumps(secrets, indent=2) + "\n")


def write_plan(plan: LabPlan) -> None:
    """Write plan.json, one config.json and a state folder per node, and the zones."""
    from mxlab.dns.zonefile import render_zone
    from mxlab.lab import kinds
    from mxlab.lab.mtasts import cert_names
    from mxlab.lab.pki import ensure_ca, issue

    root = Path(plan.lab_dir)
    with private():
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        ca = ensure_ca(root / "ca", plan.lab)
        (root / "zones").mkdir(parents=True, exist_ok=True)
        (root / "plan.json").write_text(plan.model_dump_json(indent=2))
        write_secrets(plan)
        for name, node in plan.nodes.items():
            ndir = node_dir(plan, name)
            (ndir / "state").mkdir(parents=True, exist_ok=True)
            (ndir / "config.json").write_text(node.config.model_dump_json(indent=2))
            if getattr(node.config, "tls", None) is not None:
                tls = ndir / "tls"
                also = cert_names(node.config)  # mta-sts.<domain> it serves policies for
                issue(ca, node.fqdn, node.address, tls / "cert.pem", tls / "key.pem", also=also)
                shutil.copyfile(root / "ca" / "ca.pem", tls / "ca.pem")
            kinds.get(node.kind).write_config(plan, node)  # e.g. Postfix's main.cf
        for zone in plan.zones:
            (root / "zones" / f"{zone.origin.rstrip('.')}.zone").write_text(render_zone(zone))
        write_auth_keys(plan)


def write_auth_keys(plan: LabPlan) -> None:
    """The domains' DKIM keys, and in each relay's folder the keys it signs with (a
    domain added to a running lab gets its keys here too)."""
    from mxlab.lab.mailauth import write_keys

    auth = {
        node_dir(plan, name): node.config.mailauth
        for name, node in plan.nodes.items()
        if isinstance(node.config, RelayNodeConfig)
    }
    with private():
        write_keys(Path(plan.lab_dir), plan.dkim, auth)


TOPOLOGY = "topology.json"
_ZONES = TypeAdapter(list[Zone])


def write_topology(
    plan: LabPlan, topology: dict[str, Any], privileged: bool, zones: list[Zone]
) -> None:
    """Keep the topology the lab was planned from (without its passwords, which stay in
    the secrets file alone) and the zones as planned from it (records added later by
    hand are the difference), so a running lab can be changed and planned again."""
    data = copy.deepcopy(topology)
    for dom in data["domains"].values():
        dom["users"] = dict.fromkeys(dom["users"], "")
    saved = {
        "privileged": privileged,
        "topology": data,
        "zones": _ZONES.dump_python(zones, mode="json"),
    }
    with private():
        (Path(plan.lab_dir) / TOPOLOGY).write_text(json.dumps(saved, indent=2))


def read_topology(plan: LabPlan) -> tuple[dict[str, Any], bool, list[Zone]]:
    """The topology as written by ``write_topology``, passwords put back from the plan
    (read with its secrets); whether the lab was planned with privileged ports; the
    zones as planned."""
    try:
        saved = json.loads((Path(plan.lab_dir) / TOPOLOGY).read_bytes())
    except FileNotFoundError:
        raise LabError(
            f"lab {plan.lab} keeps no topology to change (started by an older mxlab):"
            " bring it down and up again"
        ) from None
    data = saved["topology"]
    for user in plan.users:
        local = user.address.rsplit("@", 1)[0]
        data["domains"][user.domain]["users"][local] = user.password
    zones = _ZONES.validate_python(saved["zones"])
    return data, bool(saved["privileged"]), zones


def read_plan(lab: str) -> LabPlan:
    """The plan with each user's password put back from the secrets file."""
    path = lab_dir(lab) / "plan.json"
    try:
        plan = LabPlan.model_validate_json(path.read_bytes())
        secrets = json.loads((path.parent / SECRETS).read_bytes())
    except FileNotFoundError:
        known = ", ".join(list_labs()) or "none"
        hint = f"labs here: {known}; start one with mxlab up"
        raise LabError(f"no lab named {lab!r} ({hint})") from None
    for user in plan.users:
        user.password = secrets.get(user.address, "")
    return plan


def list_labs() -> list[str]:
    root = home() / "labs"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "plan.json").is_file())
