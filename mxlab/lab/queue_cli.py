"""`mxlab queue`: a lab relay's mail queue — list it (Postfix's mailq), flush it
(postqueue -f), hold, release and delete messages (postsuper -h/-H/-d).

    mxlab queue [LAB] [NODE] [--json]
    mxlab queue flush LAB [NODE] [IDS...]
    mxlab queue hold|release|delete LAB [NODE] IDS...|ALL

A running relay is asked through its state directory and a signal (see
mxlab.nodes.relay.queue_admin); a stopped one has its queue files changed directly.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from mxlab.lab import labdir
from mxlab.lab.errors import LabError
from mxlab.lab.lifecycle import runtime_of
from mxlab.lab.plan import LabPlan
from mxlab.nodes.relay.queue import Envelope
from mxlab.nodes.relay.queue_admin import SIGNAL, Reply, Request, ask, offline

ANSWER_TIMEOUT = 10.0


class _ListByDefault(TyperGroup):
    """``mxlab queue LAB`` means ``mxlab queue list LAB``."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


queue_app = typer.Typer(
    cls=_ListByDefault,
    help="A relay's mail queue: list (default), flush, hold, release, delete.",
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

LabArg = Annotated[str, typer.Argument(help="lab name")]
TargetsArg = Annotated[
    list[str] | None, typer.Argument(help="[NODE] then queue ids (or ALL)", show_default=False)
]


def _relays(plan: LabPlan, node: str | None) -> list[str]:
    relays = [name for name, n in plan.nodes.items() if n.role == "relay"]
    if node is None:
        return relays
    if node not in plan.nodes:
        raise LabError(f"lab {plan.lab} has no node {node!r} ({', '.join(plan.nodes)})")
    if node not in relays:
        raise LabError(
            f"{node} is a {plan.nodes[node].role} node, not a relay ({', '.join(relays)})"
        )
    return [node]


def _run(plan: LabPlan, nodes: list[str], request: Request) -> dict[str, Reply]:
    """The request carried out on each node: asked live, or on its files when stopped."""
    runtime = runtime_of(plan, lambda line: err.print(f"[dim]{line}[/]"))
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


def _age(seconds: float) -> str:
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _size(octets: int) -> str:
    return f"{octets / 1024:.1f}K" if octets >= 1024 else str(octets)


def _as_json(node: str, env: Envelope, now: float) -> dict[str, object]:
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


@queue_app.command("list")
def list_queue(
    lab: Annotated[str | None, typer.Argument(help="lab name (default: the only lab)")] = None,
    node: Annotated[str | None, typer.Argument(help="one relay (default: all)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List queued messages, each recipient with its state and last reply."""
    plan = labdir.read_plan(labdir.only_lab(lab))
    replies = _run(plan, _relays(plan, node), Request(action="list"))
    now = time.time()
    if json_out:
        rows = [_as_json(n, e, now) for n, reply in replies.items() for e in reply.messages]
        print(json.dumps(rows, indent=2))
        return
    for name, reply in replies.items():
        source = "" if reply.live else " (stopped: from its queue files)"
        if not reply.messages:
            out.print(f"{name}: queue empty{source}")
            continue
        pending = sum(len(e.pending()) for e in reply.messages)
        count = f"{len(reply.messages)} message(s), {pending} recipient(s) pending"
        t = Table(title=f"{name}: {count}{source}")
        for col in ("queue id", "state", "age", "size"):  # ids stay whole, for copying
            t.add_column(col, no_wrap=True)
        for col in ("sender", "recipient", "rcpt state", "last reply"):
            t.add_column(col, overflow="fold")
        for env in reply.messages:
            for n, rcpt in enumerate(env.recipients):
                head = (
                    [
                        env.id,
                        env.state,
                        _age(now - env.arrival),
                        _size(env.size),
                        env.sender or "<>",
                    ]
                    if n == 0
                    else [""] * 5
                )
                t.add_row(*head, rcpt.address, rcpt.state, rcpt.reply)
        out.print(t)


def _act(action: str, lab: str, targets: list[str] | None) -> None:
    plan = labdir.read_plan(lab)
    targets = list(targets or [])
    node = targets.pop(0) if targets and targets[0] in plan.nodes else None
    nodes = _relays(plan, node)
    everything = targets in ([], ["ALL"])
    if everything and not targets and action != "flush":
        raise LabError(f"name the queue ids to {action}, or ALL for every message")
    ids = None if everything else targets
    replies = _run(plan, nodes, Request(action=action, ids=ids))  # type: ignore[arg-type]
    for name, reply in replies.items():
        parts = [f"{action} {len(reply.done)}"]
        if reply.unchanged:
            parts.append(f"{len(reply.unchanged)} unchanged (already so, or held)")
        if reply.later:
            parts.append(f"{len(reply.later)} in delivery now ({action} when its attempt ends)")
        if not reply.live:
            parts.append("node stopped: queue files changed, they count when it starts")
        out.print(f"{name}: " + "; ".join(parts))
    if ids is not None:
        unknown = [q for q in ids if all(q in r.missing for r in replies.values())]
        if unknown:
            raise LabError(f"not queued at {', '.join(nodes)}: {', '.join(unknown)}")


def _action(action: str, summary: str):  # noqa: ANN202 - builds the typer command
    def command(lab: LabArg, targets: TargetsArg = None) -> None:
        _act(action, lab, targets)

    command.__doc__ = summary
    return command


queue_app.command("flush")(_action("flush", "Deliver now what waits for a retry (all, or IDS)."))
queue_app.command("hold")(_action("hold", "Keep messages queued, undelivered, until released."))
queue_app.command("release")(_action("release", "Put held messages back on their retry schedule."))
queue_app.command("delete")(_action("delete", "Remove messages from the queue, unsent."))
