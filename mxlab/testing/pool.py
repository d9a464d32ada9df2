"""The labs of one test session (or one xdist worker): started on first use, reused while
tests ask for the same topology, brought down at the end, watched by the reaper.

Lifetimes, kept simple:
- the session's own topology (the ini option's, else :data:`DEFAULT_TOPOLOGY`) gets one
  lab that lives until the session ends;
- a topology chosen by a marker gets a lab that lives while consecutive tests ask for it
  (a module marked with ``pytestmark`` shares one); when a test asks for another marker
  topology, the previous one is brought down first, so at most two labs run at once.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import mxlab
from mxlab.lab import labdir
from mxlab.lab.topology import Topology
from mxlab.testing.reaper import Reaper

TopologySpec = str | Path | dict[str, Any] | Topology

# One domain, two users: what a test of code that sends mail needs, and no more.
DEFAULT_TOPOLOGY: dict[str, Any] = {
    "name": "pytest",
    "nodes": {"ns": {"kind": "dns"}, "mx": {"kind": "relay"}, "store": {"kind": "store"}},
    "domains": {
        "example.test": {
            "store": "store",
            "mx": [{"node": "mx", "preference": 10}],
            "users": {"alice": "alice-secret", "bob": "bob-secret"},
        }
    },
}

NAME_MAX = 32  # the topology's own limit on lab names
log = logging.getLogger("mxlab")


class LabPool:
    """Labs by topology for one session; ``worker`` (an xdist worker id) suffixes every
    lab's name, which gives each worker its own lab directory and so its own subnet."""

    def __init__(self, runtime: str = "local", worker: str | None = None) -> None:
        self.runtime, self.worker = runtime, worker
        self._session: tuple[str, mxlab.Lab] | None = None
        self._marked: tuple[str, mxlab.Lab] | None = None
        self._failed: dict[str, BaseException] = {}
        self._reaper: Reaper | None = None

    def session_lab(self, topology: TopologySpec = DEFAULT_TOPOLOGY) -> mxlab.Lab:
        """The session's lab (started on first use, down at the end of the session)."""
        topo = self._prepare(topology)
        key = topo.model_dump_json()
        if self._session is None and self._marked is not None and self._marked[0] == key:
            self._session, self._marked = self._marked, None  # a marker asked for it first
        elif self._session is None:
            self._session = (key, self._up(key, topo))
        elif self._session[0] != key:
            raise mxlab.LabError(
                f"the session lab is {self._session[1].name}; another topology needs a marker"
            )
        return self._session[1]

    def lab_for(self, topology: TopologySpec) -> mxlab.Lab:
        """A lab of this topology: the session's if it is the same, else the marker lab,
        started now (the previous marker lab brought down) unless it is already up."""
        topo = self._prepare(topology)
        key = topo.model_dump_json()
        if self._session is not None and self._session[0] == key:
            return self._session[1]
        if self._marked is not None and self._marked[0] == key:
            return self._marked[1]
        if self._marked is not None:
            self._down(self._marked[1])
            self._marked = None
        if self._session is not None and self._session[1].name == topo.name:
            topo = topo.model_copy(update={"name": topo.name[: NAME_MAX - 2] + "-m"})
        self._marked = (key, self._up(key, topo))
        return self._marked[1]

    def close(self) -> None:
        """Bring every lab down; the reaper then exits."""
        for held in (self._marked, self._session):
            if held is not None:
                self._down(held[1])
        self._marked = self._session = None
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None

    # -- inside ----------------------------------------------------------------------
    def _prepare(self, topology: TopologySpec) -> Topology:
        """Validated, named for this worker; a pinned subnet is dropped for workers (two
        workers cannot share one), each then derives its own."""
        topo = mxlab.validate(topology)
        if self.worker is None:
            return topo
        settings = topo.settings.model_copy(update={"local_subnet": None, "docker_subnet": None})
        suffix = "-" + re.sub(r"[^a-z0-9]", "", self.worker.lower())
        name = topo.name[: NAME_MAX - len(suffix)].rstrip("-") + suffix
        return topo.model_copy(update={"name": name, "settings": settings})

    def _up(self, key: str, topo: Topology) -> mxlab.Lab:
        """Start the lab once: a topology that failed to start fails every later test that
        asks for it at once, with the same error, instead of trying again each time."""
        if key in self._failed:
            raise self._failed[key]
        if self._reaper is None:
            self._reaper = Reaper()  # it also collects what earlier runs left (mxlab.gc)
        self._reaper.watch(topo.name)
        try:
            if topo.name in labdir.list_labs():
                log.info("lab %s is left from an earlier run: bringing it down", topo.name)
                mxlab.down(topo.name)
            lab = mxlab.Lab.up(topo, self.runtime, progress=log.info)
        except BaseException as exc:
            self._failed[key] = exc
            raise
        log.info("lab %s up (%s, %s)", lab.name, lab.plan.runtime, lab.plan.subnet)
        return lab

    def _down(self, lab: mxlab.Lab) -> None:
        try:
            lab.down()
        except mxlab.LabError as exc:  # already gone: nothing left to remove
            log.warning("lab %s: %s", lab.name, exc)
        if self._reaper is not None:
            self._reaper.forget(lab.name)
