"""Runtimes: docker (containers) where an engine answers, local processes otherwise."""

from __future__ import annotations

from mxlab.lab.runtime.base import NodeStatus, Progress, Runtime

__all__ = ["NodeStatus", "Progress", "Runtime", "select"]


def select(name: str, progress: Progress) -> Runtime:
    """The runtime called ``name``; ``auto`` falls back to local, said on the first line."""
    from mxlab.lab.runtime.local import LocalRuntime

    if name == "local":
        return LocalRuntime()
    if name in ("docker", "auto"):
        try:
            from mxlab.lab.runtime.docker import DockerRuntime, engine_error
        except ImportError:
            DockerRuntime, engine_error = None, lambda: "the docker runtime is not built yet"
        problem = engine_error()
        if problem is None:
            return DockerRuntime()
        if name == "docker":
            from mxlab.lab.errors import LabError

            raise LabError(f"{problem} (or use --runtime local)")
        progress(f"runtime: local processes ({problem})")
        return LocalRuntime()
    raise ValueError(name)
