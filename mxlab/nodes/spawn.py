"""Start many nodes of one role cheaply: import the role's modules once, then fork one
node per directory named on stdin (its pid answered on stdout), as a fork server does.

``python -m mxlab.nodes.spawn ROLE`` reads node directories, one a line, until stdin
closes. A node forked here runs exactly as ``python -m mxlab.nodes ROLE --config
config.json`` run in its directory would (own session, log on stdout and stderr), but
starts in milliseconds instead of a fresh interpreter's import time, and shares the
imported modules' memory with its siblings (copy on write; gc.freeze keeps the garbage
collector from touching, hence copying, them).

What is shared counts whole in each node's RSS but is split among them in PSS, which is
what the nodes cost the machine together: so what its nodes would each load on first
use is loaded here once, before the first fork (``_warm``)."""

from __future__ import annotations

import gc
import importlib
import os
import ssl
import sys
import traceback
from pathlib import Path

from mxlab.nodes.__main__ import ROLES, run
from mxlab.nodes.config import ConfigError, RelayNodeConfig, load_config


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


def _warm(node_dir: str) -> None:
    """Before the first fork, what the nodes would each build on first use, judged from
    the first node's config: OpenSSL's tables, which a process builds at its first TLS
    context (0.5 MiB a node), and a relay's mail authentication libraries when its
    config turns them on (see ``used_modules``)."""
    try:
        config = load_config(Path(node_dir, "config.json"))
    except ConfigError:
        return  # the node will say so in its log
    if getattr(config, "tls", None) is not None:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if isinstance(config, RelayNodeConfig):
        from mxlab.nodes.mailauth.inbound import used_modules

        for module in used_modules(config.mailauth):
            importlib.import_module(module)
    gc.freeze()


def main() -> int:
    role = sys.argv[1]
    importlib.import_module(ROLES[role])  # the cost paid once for all its nodes
    gc.freeze()
    warm = False
    for line in sys.stdin:
        node_dir = line.strip()
        if not warm:
            _warm(node_dir)
            warm = True
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
