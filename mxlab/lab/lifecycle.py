"""Bringing a lab up from a topology: shared by `up`, `run` and scenarios."""

from __future__ import annotations

import os
import time

from mxlab.lab import labdir
from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan, RuntimeName, make_plan
from mxlab.lab.runtime import Progress, Runtime, select
from mxlab.lab.topology import Topology


def runtime_of(plan: LabPlan, progress: Progress) -> Runtime:
    return select(plan.runtime, progress)


def is_running(lab: str, progress: Progress) -> bool:
    if lab not in labdir.list_labs():
        return False
    plan = labdir.read_plan(lab)
    return any(s.state == "running" for s in runtime_of(plan, progress).status(lab))


def bring_up(topo: Topology, runtime_name: str, progress: Progress) -> tuple[LabPlan, Runtime]:
    """Plan the lab, write its directory, start every node and wait until all answer."""
    runtime = select(runtime_name, progress)
    if is_running(topo.name, progress):
        raise LabError(f"lab {topo.name!r} is already running (mxlab down {topo.name} first)")
    rt_name: RuntimeName = "docker" if runtime.name == "docker" else "local"
    plan = make_plan(
        topo,
        runtime=rt_name,
        lab_dir=labdir.lab_dir(topo.name),
        subnet=runtime.choose_subnet(topo),
        privileged=os.geteuid() == 0,
    )
    labdir.write_plan(plan)
    started = time.monotonic()
    try:
        runtime.up(plan, progress)
    except BaseException:
        runtime.down(plan.lab)  # a half-started lab leaves nothing behind
        raise
    took = time.monotonic() - started
    progress(f"lab {plan.lab} up in {took:.1f}s ({runtime.name}, {plan.subnet})")
    return plan, runtime
