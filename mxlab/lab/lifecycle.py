"""A lab's life: up (locked, fresh, retrying a subnet another lab took), which labs are
really running, down (nothing left unless kept), and gc of what crashed runs left."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import cast

from mxlab.lab import labdir
from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan, RuntimeName, make_plan
from mxlab.lab.runtime import Progress, Runtime, SubnetTaken, select
from mxlab.lab.topology import Topology

SUBNET_TRIES = 8


def runtime_of(plan: LabPlan, progress: Progress) -> Runtime:
    return select(plan.runtime, progress)


def is_running(lab: str, progress: Progress) -> bool:
    """Some node of the lab runs (a lab on disk whose nodes are all gone is not up)."""
    if lab not in labdir.list_labs():
        return False
    plan = labdir.read_plan(lab)
    return any(s.state == "running" for s in runtime_of(plan, progress).status(lab))


def running_labs(progress: Progress) -> list[str]:
    """The labs of this MXLAB_HOME that have a running node."""
    return [lab for lab in labdir.list_labs() if is_running(lab, progress)]


def resolve(lab: str | None, progress: Progress) -> str:
    """The lab a command means: the one named, else the only one running."""
    if lab:
        return lab
    labs = running_labs(progress)
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise LabError("no lab is up (start one with: mxlab up TOPOLOGY.yaml)")
    raise LabError(f"several labs are up ({', '.join(labs)}): name one")


def bring_up(
    topo: Topology, runtime_name: str, progress: Progress, inventory: Path | None = None
) -> tuple[LabPlan, Runtime]:
    """Plan the lab, write its directory, start every node and wait until all answer.
    A lab left on disk by ``down --keep`` is replaced: an `up` starts empty."""
    runtime = select(runtime_name, progress, inventory)
    with labdir.lock(topo.name):
        if is_running(topo.name, progress):
            raise LabError(f"lab {topo.name!r} is already running (mxlab down {topo.name} first)")
        labdir.remove(topo.name)
        started = time.monotonic()
        plan = _start(topo, runtime, progress)
    took = time.monotonic() - started
    progress(f"lab {plan.lab} up in {took:.1f}s ({runtime.name}, {plan.subnet})")
    return plan, runtime


def _start(topo: Topology, runtime: Runtime, progress: Progress) -> LabPlan:
    """Start on a free subnet; when another lab takes it between choosing and creating
    (two `up`s at once), plan again on the next one."""
    rt_name = cast(RuntimeName, runtime.name)
    taken: set[str] = set()
    privileged = os.geteuid() == 0
    runtime.prepare(topo)
    for _ in range(SUBNET_TRIES):
        plan = make_plan(
            topo,
            runtime=rt_name,
            lab_dir=labdir.lab_dir(topo.name),
            subnet=runtime.choose_subnet(topo, avoid=taken),
            privileged=privileged,
        )
        labdir.write_plan(plan)
        labdir.write_topology(plan, topo.model_dump(mode="json"), privileged, plan.zones)
        try:
            runtime.up(plan, progress)
            return plan
        except SubnetTaken:
            runtime.down(plan.lab)
            taken.add(plan.subnet)
            progress(f"subnet {plan.subnet} was taken meanwhile; trying another")
        except BaseException:
            runtime.down(plan.lab)  # a half-started lab leaves nothing behind
            labdir.remove(plan.lab)
            raise
    labdir.remove(topo.name)
    raise LabError(f"no free subnet after {SUBNET_TRIES} tries (run mxlab gc, or pin one)")


def tear_down(lab: str, progress: Progress, keep: bool = False) -> None:
    """Stop every node; remove the lab directory unless ``keep`` (to inspect its mail,
    queues and logs). Works on a docker lab whose directory is gone, from its labels."""
    with labdir.lock(lab):
        if lab in labdir.list_labs():
            runtime_of(labdir.read_plan(lab), progress).down(lab)
        elif not _down_orphan(lab):
            raise LabError(f"no lab named {lab!r} here (mxlab status lists the labs)")
        if not keep:
            labdir.remove(lab)


def _down_orphan(lab: str) -> bool:
    """A lab whose directory was deleted while it ran: its processes or containers."""
    from mxlab.lab.runtime.local import orphans, stop_pids

    found = False
    pids = orphans().get(lab, [])
    if pids:
        stop_pids(pids)
        found = True
    docker = _docker()
    if docker is not None and lab in docker.labs():
        docker.down(lab)
        found = True
    return found


def _docker():  # noqa: ANN202 - DockerRuntime | None, imported only when an engine answers
    from mxlab.lab.runtime.docker import DockerRuntime, engine_error

    return DockerRuntime() if engine_error() is None else None


def gc(progress: Progress) -> list[str]:
    """Remove what labs of this MXLAB_HOME left behind: node processes whose lab
    directory is gone, containers and networks of docker labs whose nodes are all gone.
    A lab being brought up right now (its lock held) is never touched."""
    from mxlab.lab.runtime.local import orphans, stop_pids

    removed = []
    for lab, pids in sorted(orphans().items()):
        if not labdir.is_locked(lab):
            stop_pids(pids)
            removed.append(f"{lab} (local)")
    docker = _docker()
    if docker is not None:
        for lab in docker.dead_labs():
            if not labdir.is_locked(lab):
                docker.down(lab)
                removed.append(f"{lab} (docker)")
    return removed


def build_image(force: bool, progress: Progress) -> str:
    """The node image, built (offline if need be) unless up to date; its tag."""
    from mxlab.lab.runtime.docker import build_image as build
    from mxlab.lab.runtime.docker import engine_error

    problem = engine_error()
    if problem is not None:
        raise LabError(f"{problem}: the node image needs a Docker engine")
    return build(force, progress)


def labelled(lab: str | None = None) -> dict[str, list]:
    """Docker labs of this MXLAB_HOME known to the engine by label, whether or not their
    directory is still here: name -> node statuses ({} without an engine)."""
    docker = _docker()
    if docker is None:
        return {}
    found = {name: docker.status(name) for name in ([lab] if lab else docker.labs())}
    return {name: nodes for name, nodes in found.items() if nodes}
