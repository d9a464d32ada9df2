"""Runtimes: docker (containers) where an engine answers, local processes otherwise."""

from __future__ import annotations

from pathlib import Path

from mxlab.lab.errors import LabError
from mxlab.lab.runtime.base import NodeStatus, Progress, Runtime, SubnetTaken

__all__ = ["NodeStatus", "Progress", "Runtime", "SubnetTaken", "select"]


def select(name: str, progress: Progress, inventory: Path | None = None) -> Runtime:
    """The runtime called ``name``; ``auto`` is docker where an engine answers, else
    local — announced on the first line of output. ``inventory``: the hosts runtime's
    Ansible inventory (for ``up``; a running lab keeps its own)."""
    from mxlab.lab.runtime.local import LocalRuntime

    if name == "local":
        return LocalRuntime()
    if name == "hosts":
        from mxlab.lab.runtime.hosts import HostsRuntime

        return HostsRuntime(inventory)
    if name not in ("docker", "swarm", "auto"):
        raise LabError(f"--runtime {name}: use docker, local, swarm, hosts or auto")
    from mxlab.lab.runtime.docker import DockerRuntime, engine_error

    problem = engine_error()
    if name == "swarm":
        from mxlab.lab.runtime.swarm import SwarmRuntime

        if problem is not None:
            raise LabError(f"{problem}: start the engine, or use --runtime local")
        return SwarmRuntime()
    if problem is None:
        return DockerRuntime()
    if name == "docker":
        raise LabError(f"{problem}: start the engine, or use --runtime local")
    progress(f"runtime: local processes ({problem})")
    return LocalRuntime()
