"""Start many nodes of one role cheaply: import the role's modules once, then fork one
node per directory named on stdin (its pid answered on stdout), as a fork server does.

``python -m mxlab.nodes.spawn ROLE`` reads node directories, one a line, until stdin
closes. A node forked here runs exactly as ``python -m mxlab.nodes ROLE --config
config.json`` run in its directory would (own session, log on stdout and stderr), but
starts in milliseconds instead of a fresh interpreter's import time, and shares the
imported modules' memory with its siblings (copy on write; gc.freeze keeps the garbage
collector from touching, hence copying, them)."""

from __future__ import annotations

import gc
import importlib
import os
import sys
import traceback

from mxlab.nodes.__main__ import ROLES, run


def _child(role: str, node_dir: str) -> int:
    """In the forked process: become the node (own session, cwd, log), then run it."""
    os.setsid()  # killed as a group, like a node started with start_new_session
    os.chdir(node_dir)
    log = os.open("node.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    try:
        return run(role, "config.json")
    except BaseException:  # the log gets the traceback a plain start would print
        traceback.print_exc()
        return 1


def main() -> int:
    role = sys.argv[1]
    importlib.import_module(ROLES[role])  # the cost paid once for all its nodes
    gc.freeze()
    for line in sys.stdin:
        node_dir = line.strip()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = _child(role, node_dir)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        print(pid, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
