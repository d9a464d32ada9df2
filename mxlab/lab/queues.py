"""A lab relay's mail queue, asked live through the relay's state directory and a signal,
or read and changed in its files when the relay is stopped (see
mxlab.nodes.relay.queue_admin): what Postfix's mailq, postqueue and postsuper do."""

from __future__ import annotations

import signal
import time

from mxlab.lab import labdir
from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan
from mxlab.lab.runtime import Runtime
from mxlab.nodes.relay.queue import Envelope
from mxlab.nodes.relay.queue_admin import SIGNAL, Reply, Request, ask, offline

ANSWER_TIMEOUT = 10.0


def relays_of(plan: LabPlan, node: str | None) -> list[str]:
    """Every relay of the lab, or the one named (refused with one line if not a relay)."""
    # the queue requests are our relay program's: a postfix node has postqueue instead
    relays = [name for name, n in plan.nodes.items() if n.kind == "relay"]
    if node is None:
        return relays
    if node not in plan.nodes:
        raise LabError(f"lab {plan.lab} has no node {node!r} ({', '.join(plan.nodes)})")
    if node not in relays:
        raise LabError(
            f"{node} is a {plan.nodes[node].kind} node, not a relay of ours "
            f"({', '.join(relays)}); a postfix node's queue: postqueue in the node"
        )
    return [node]


def ask_relays(
    plan: LabPlan, runtime: Runtime, nodes: list[str], request: Request
) -> dict[str, Reply]:
    """The request carried out on each node: asked live, or on its files when stopped."""
    running = {s.node for s in runtime.status(plan.lab) if s.state == "running"}
    replies = {}
    for node in nodes:
        state_dir = labdir.node_dir(plan, node) / "state"

        def poke(node: str = node) -> None:
            runtime.signal(plan, node, signal.Signals(SIGNAL))

        try:
            if node in running:
                replies[node] = ask(state_dir, request, poke, ANSWER_TIMEOUT)
            else:
                replies[node] = offline(state_dir, request)
        except TimeoutError:
            raise LabError(
                f"{node} did not answer the queue request within {ANSWER_TIMEOUT:.0f}s "
                f"(is it a relay of this version? mxlab logs {node})"
            ) from None
        except PermissionError as exc:
            raise LabError(
                f"{node} is stopped and its queue files are not ours to change "
                f"({exc.filename}): start it (mxlab start {node}) and try again"
            ) from None
        if replies[node].error:
            raise LabError(f"{node}: {replies[node].error}")
    return replies


def as_dict(node: str, env: Envelope, now: float | None = None) -> dict[str, object]:
    """One queued message as plain data (the API's and `--json`'s shape)."""
    now = time.time() if now is None else now
    return {
        "node": node,
        "id": env.id,
        "state": env.state,
        "age": round(now - env.arrival, 3),
        "size": env.size,
        "sender": env.sender,
        "message_id": env.message_id,
        "attempts": env.attempts,
        "next_attempt": env.next_attempt,
        "recipients": [
            {"address": r.address, "state": r.state, "reply": r.reply, "hop": r.hop}
            for r in env.recipients
        ],
    }
