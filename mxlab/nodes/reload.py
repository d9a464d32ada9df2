"""SIGHUP: reread the node's config file and put it in force without a restart, as
Postfix (``postfix reload``) and Dovecot (``doveadm reload``) do.

The config file sits beside the node's state folder on every runtime (the node folder
locally, its bind mount in a container). Once a config is in force the node writes its
digest to ``state/config.applied``, so the lab can wait for the reload instead of
racing it; a config that does not load is logged and the old one kept."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from mxlab.nodes.config import NodeBase, load_config
from mxlab.nodes.events import emit
from mxlab.nodes.host_signals import handle

CONFIG_FILE = "config.json"
APPLIED_FILE = "config.applied"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_config(config: NodeBase) -> tuple[Any, bytes] | None:
    """The node's config file as it is now, with its bytes (for ``mark_applied``); None,
    logged, when it does not load or belongs to another node."""
    path = config.state_path.parent / CONFIG_FILE
    try:
        data = path.read_bytes()
        new = load_config(path)
    except (OSError, ValueError) as exc:  # a ConfigError is a ValueError
        emit(config.node, "reload_error", error=str(exc))
        return None
    if new.node != config.node or new.role != getattr(config, "role", None):
        emit(config.node, "reload_error", error=f"{path} is {new.role} node {new.node}")
        return None
    return new, data


def mark_applied(config: NodeBase, data: bytes) -> None:
    """Say which config is in force, so the lab can wait for the reload."""
    applied = config.state_path / APPLIED_FILE
    tmp = applied.with_name(f".{APPLIED_FILE}.tmp")
    tmp.write_text(digest(data) + "\n")
    os.replace(tmp, applied)
    emit(config.node, "reloaded", config=str(config.state_path.parent / CONFIG_FILE))


def on_sighup(config: NodeBase, apply: Callable[[Any], asyncio.Future[None] | None]) -> None:
    """Reread the config on SIGHUP and hand it to ``apply`` (same node, same role).
    It is marked applied at once, or once the future ``apply`` returns is done (a
    relay's delivery process has it in force too)."""

    def reload() -> None:
        loaded = read_config(config)
        if loaded is None:
            return
        new, data = loaded
        pending = apply(new)
        if pending is None:
            mark_applied(config, data)
        else:

            def applied(done: asyncio.Future[None]) -> None:
                if not done.cancelled():
                    mark_applied(config, data)

            pending.add_done_callback(applied)

    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only: a server in a thread (tests) never reloads
    handle(signal.SIGHUP, reload)
