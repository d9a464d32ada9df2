"""The pytest plugin (registered through the ``pytest11`` entry point): a ``mail_lab``
fixture giving each test a running :class:`mxlab.Lab`.

Which topology:
1. ``@pytest.mark.mxlab(topology=...)`` on the test, its class or its module (a path,
   relative to the test file's folder, or a dict, or a ``Topology``);
2. else the ini option ``mxlab_topology`` (a path, relative to the ini file's folder);
3. else one domain (example.test) with two users, alice and bob.

Which runtime: ``--mxlab-runtime``, else the ini option ``mxlab_runtime`` (default
"local": no Docker needed). The session's lab is started on first use and brought down at
the end of the session; see :mod:`mxlab.testing.pool` for marker labs, xdist workers
and the reaper that cleans up after a killed run. A failed test that used ``mail_lab``
reports the lab's mailboxes, queues and recent events.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported on first use: a test run that never asks for a lab pays nothing
    from mxlab.api import Lab
    from mxlab.testing.pool import LabPool, TopologySpec

try:
    import pytest
except ModuleNotFoundError:
    # installed without pytest: only pytest loads this plugin (its pytest11 entry point),
    # so there is nothing to define, and `import mxlab.testing.plugin` still works
    pass
else:
    MARKER = "mxlab"
    _SINCE = pytest.StashKey[float]()

    def pytest_addoption(parser: pytest.Parser) -> None:
        parser.addini(
            "mxlab_topology",
            "topology file for the mail_lab fixture (default: one domain, two users)",
            default="",
        )
        parser.addini(
            "mxlab_runtime", "runtime of the mail_lab labs: local, docker or auto", default="local"
        )
        parser.getgroup("mxlab").addoption(
            "--mxlab-runtime",
            default=None,
            choices=["local", "docker", "auto"],
            help="runtime of the mail_lab labs (overrides the mxlab_runtime ini option)",
        )

    def pytest_configure(config: pytest.Config) -> None:
        config.addinivalue_line(
            "markers",
            f"{MARKER}(topology): the topology (path, dict or Topology) mail_lab starts for "
            "this test, class or module",
        )

    def _session_topology(config: pytest.Config) -> TopologySpec:
        from mxlab.testing.pool import DEFAULT_TOPOLOGY

        value = str(config.getini("mxlab_topology") or "")
        if not value:
            return DEFAULT_TOPOLOGY
        base = config.inipath.parent if config.inipath else config.rootpath
        return base / value

    @pytest.fixture(scope="session")
    def mxlab_pool(pytestconfig: pytest.Config) -> Iterator[LabPool]:
        """Every lab of this session (or xdist worker). A session-scoped fixture of your own
        can take this and call ``mxlab_pool.session_lab()`` for the session's lab."""
        from mxlab.testing.pool import LabPool

        runtime = pytestconfig.getoption("mxlab_runtime") or pytestconfig.getini("mxlab_runtime")
        pool = LabPool(str(runtime), os.environ.get("PYTEST_XDIST_WORKER"))
        yield pool
        pool.close()

    @pytest.fixture
    def mail_lab(request: pytest.FixtureRequest, mxlab_pool: LabPool) -> Lab:
        """A running lab: the session's (started once, shared by every test), or the one the
        test's ``mxlab`` marker names. Mail from earlier tests stays in the mailboxes: give
        each test's messages their own subject."""
        marker = request.node.get_closest_marker(MARKER)
        if marker is None:
            lab = mxlab_pool.session_lab(_session_topology(request.config))
        else:
            topology = marker.kwargs.get("topology", marker.args[0] if marker.args else None)
            if topology is None:
                raise pytest.UsageError(f"@pytest.mark.{MARKER} needs topology=PATH|dict|Topology")
            if isinstance(topology, str | Path) and not Path(topology).is_absolute():
                topology = request.path.parent / topology
            lab = mxlab_pool.lab_for(topology)
        request.node.stash[_SINCE] = time.time()
        return lab

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """A failed test that used the lab shows what the lab held and did."""
        report = yield
        lab = getattr(item, "funcargs", {}).get("mail_lab")
        if report.when == "call" and report.failed and lab is not None:
            from mxlab.testing.report import sections

            for title, text in sections(lab, item.stash.get(_SINCE, 0.0)):
                report.sections.append((title, text))
        return report
