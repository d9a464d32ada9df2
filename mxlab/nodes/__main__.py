"""Entry point of every node, identical in a container and as a local process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import sys
from typing import Any

from mxlab.nodes.config import ConfigError, load_config

# role -> module whose ``serve(config)`` coroutine runs the node until cancelled
ROLES = {
    "dns": "mxlab.dns.server",
    "relay": "mxlab.nodes.relay.server",
    "store": "mxlab.nodes.store.server",
    "sink": "mxlab.nodes.sink.server",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mxlab.nodes")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    return run(args.role, args.config)


def run(role: str, config_path: str) -> int:
    """Load the config, check it is for ``role``, serve until SIGTERM; the exit code."""
    os.umask(0o077)  # queue files, maildirs and indexes are the lab's alone (0600/0700)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if config.role != role:
        print(f"{config_path}: role is {config.role!r}, not {role!r}", file=sys.stderr)
        return 2
    module = importlib.import_module(ROLES[role])
    asyncio.run(_run(module, config))
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
