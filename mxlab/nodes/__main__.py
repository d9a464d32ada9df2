"""Entry point of every node, identical in a container and as a local process."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
from typing import Any

from mxlab.nodes.config import ConfigError, load_config
from mxlab.nodes.host_signals import held

# role -> module whose ``serve(config)`` coroutine runs the node until cancelled, on the
# event loop its ``new_event_loop`` makes if it has one (asyncio's otherwise)
ROLES = {
    "dns": "mxlab.dns.server",
    "relay": "mxlab.nodes.relay.server",
    "store": "mxlab.nodes.store.server",
    "sink": "mxlab.nodes.sink.server",
}


USAGE = f"usage: python -m mxlab.nodes {{{','.join(sorted(ROLES))}}} --config CONFIG"


def main(argv: list[str] | None = None) -> int:
    """``ROLE --config PATH``, read by hand: argparse would cost every node 0.5 MiB."""
    rest = list(sys.argv[1:] if argv is None else argv)
    role = config = None
    while rest:
        arg = rest.pop(0)
        if arg in ("-h", "--help"):
            print(USAGE)
            return 0
        if arg == "--config" and rest:
            config = rest.pop(0)
        elif arg.startswith("--config="):
            config = arg.removeprefix("--config=")
        elif role is None and not arg.startswith("-"):
            role = arg
        else:
            return _usage(f"unexpected argument {arg!r}")
    if role not in ROLES:
        return _usage(f"ROLE: one of {', '.join(sorted(ROLES))} expected, got {role!r}")
    if config is None:
        return _usage("--config CONFIG is required")
    return run(role, config)


def _usage(problem: str) -> int:
    print(f"{USAGE}\npython -m mxlab.nodes: error: {problem}", file=sys.stderr)
    return 2


def run(role: str, config_path: str) -> int:
    """Load the config, check it is for ``role``, serve until SIGTERM; the exit code."""
    with held():  # from the start: a reload or queue request may come while it starts
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        if config.role != role:
            print(f"{config_path}: role is {config.role!r}, not {role!r}", file=sys.stderr)
            return 2
        # Set once the node will serve, not before: main() refusing its arguments must
        # leave the caller's umask as it was (the tests call it in pytest's own process).
        os.umask(0o077)  # queue files, maildirs and indexes are the lab's alone (0600/0700)
        module = importlib.import_module(ROLES[role])
        with asyncio.Runner(loop_factory=getattr(module, "new_event_loop", None)) as runner:
            runner.run(_run(module, config))
        return 0


async def _run(module: Any, config: Any) -> None:
    """Run the node; SIGTERM/SIGINT cancel it so ``serve`` can close its listeners."""
    task = asyncio.current_task()
    assert task is not None  # asyncio.run() runs this coroutine as a task
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await module.serve(config)


if __name__ == "__main__":
    sys.exit(main())
