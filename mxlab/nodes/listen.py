"""Opening a node's listeners: a busy port ends the node with one clear line."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable

from mxlab.nodes.config import NodeBase


async def listen(
    config: NodeBase, servers: list[asyncio.Server], port: int, start: Awaitable[asyncio.Server]
) -> None:
    """Await one listener and keep it in ``servers`` (for closing at shutdown)."""
    try:
        servers.append(await start)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio wraps it
        raise SystemExit(
            f"{config.node}: cannot listen on {config.address}:{port}: {reason}"
        ) from None
