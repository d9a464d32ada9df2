"""Opening a node's listeners: a busy port ends the node with one clear line, and a
connection cut off by the node's stop ends quietly."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

from mxlab.nodes.config import NodeBase

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def quiet_on_stop(handler: StreamHandler) -> StreamHandler:
    """A ``start_server`` callback whose task, cancelled when the node stops, returns
    instead of ending cancelled: Python 3.11's stream protocol calls ``task.exception()``
    on the finished task, which raises CancelledError into the loop's exception handler
    (cpython gh-113538, mended in 3.12)."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()

    return client


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
