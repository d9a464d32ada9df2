"""The reaper: a watchdog process that brings a test run's labs down when the run dies.

testcontainers' Ryuk idea without a daemon: the pytest process holds the only write end
of a pipe whose read end is the watchdog's stdin. The parent names each lab before it
starts it ("+NAME") and again once it brought it down itself ("-NAME"). When the pipe
reaches end of file (the parent exited, or was killed with SIGKILL, which nothing can
catch), the watchdog brings down every lab still named and then collects what any crashed
run of this MXLAB_HOME left (``mxlab.gc``), as it also does when it starts: the leftovers
of a run whose reaper died with it are gone by the next run.

Run as ``python -m mxlab.testing.reaper``; :class:`Reaper` starts and feeds it. What it
prints (a lab that would not come down, a traceback) goes to ``reaper.log`` in
MXLAB_HOME: it outlives the run, so nothing else would show it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import IO

from mxlab.lab.labdir import home

LOG = "reaper.log"


class Reaper:
    """The parent's side: the watchdog process and the write end of its pipe."""

    def __init__(self) -> None:
        read, write = os.pipe()  # both ends close-on-exec: only the watchdog gets `read`
        root = home()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = os.open(root / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "mxlab.testing.reaper"],
                stdin=read,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C or a killed process group spares it
            )
        finally:
            os.close(log)
        os.close(read)
        self._pipe: IO[str] = os.fdopen(write, "w", buffering=1)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def watch(self, lab: str) -> None:
        """Told before the lab starts: a run killed half-way through `up` is covered."""
        self._send(f"+{lab}")

    def forget(self, lab: str) -> None:
        """The parent brought the lab down itself."""
        self._send(f"-{lab}")

    def _send(self, line: str) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._pipe.write(line + "\n")

    def close(self, timeout: float = 30.0) -> None:
        """End of file: the watchdog cleans up what is still named, then exits."""
        with contextlib.suppress(BrokenPipeError):
            self._pipe.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def labs_left(lines: IO[str]) -> list[str]:
    """Read the parent's lines until end of file; the labs it started and did not bring
    down, in the order it started them."""
    labs: dict[str, None] = {}
    for line in lines:
        name = line.strip()
        if name.startswith("+"):
            labs[name[1:]] = None
        elif name.startswith("-"):
            labs.pop(name[1:], None)
    return list(labs)


def reap(labs: list[str]) -> None:
    """Bring each lab down (directory and all), then collect orphans of crashed runs."""
    import mxlab

    for lab in labs:
        with contextlib.suppress(mxlab.LabError):  # never started, or already gone
            mxlab.down(lab)
    mxlab.gc()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent's Ctrl-C is the parent's
    with contextlib.suppress(OSError):
        os.nice(10)  # the lab the parent starts meanwhile comes first
    import mxlab

    mxlab.gc()  # what earlier runs left; a lab being started (locked) is never touched
    reap(labs_left(sys.stdin))


if __name__ == "__main__":
    main()
