"""`mxlab queue`: a lab relay's mail queue — list it (Postfix's mailq), flush it
(postqueue -f), hold, release and delete messages (postsuper -h/-H/-d).

    mxlab queue [LAB] [NODE] [--json]
    mxlab queue flush [LAB] [NODE] [IDS...]
    mxlab queue hold|release|delete [LAB] [NODE] IDS...|ALL
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

import mxlab
from mxlab.cli import render
from mxlab.cli.app import JsonOpt, app, argument, attach, out


class _ListByDefault(TyperGroup):
    """``mxlab queue LAB`` means ``mxlab queue list LAB``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: click's Context
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


queue_app = typer.Typer(
    cls=_ListByDefault,
    rich_markup_mode=None,
    help="A relay's mail queue: list (default), flush, hold, release, delete.",
)
app.add_typer(queue_app, name="queue")

TargetsArg = Annotated[
    list[str] | None,
    argument("[LAB] [NODE] [ID...|ALL]"),
]


def _targets(words: list[str] | None) -> tuple[mxlab.Lab, str | None, list[str]]:
    """Lab (a first word naming a running lab, else the only one up), then a relay, then
    queue ids: ids never look like lab or node names, so each word says what it is."""
    words = list(words or [])
    lab = words.pop(0) if words and words[0] in mxlab.labs() else None
    the_lab = attach(lab)
    node = words.pop(0) if words and words[0] in the_lab.plan.nodes else None
    return the_lab, node, words


@queue_app.command("list")
def list_queue(
    targets: Annotated[list[str] | None, argument("[LAB] [NODE]")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List queued messages, each recipient with its state and last reply."""
    the_lab, node, rest = _targets(targets)
    if rest:
        raise mxlab.LabError(f"{rest[0]!r} is neither a lab nor a node of {the_lab.name}")
    if json_out:
        print(json.dumps(the_lab.queue(node), indent=2))
        return
    for name, reply in the_lab.queue_action("list", node=node).items():
        render.queue(out, name, reply)


def _act(action: str, targets: list[str] | None) -> None:
    the_lab, node, ids = _targets(targets)
    everything = ids in ([], ["ALL"])
    if everything and not ids and action != "flush":
        raise mxlab.LabError(f"name the queue ids to {action}, or ALL for every message")
    wanted = None if everything else ids
    replies = the_lab.queue_action(action, wanted, node)  # type: ignore[arg-type]
    unknown = [q for q in wanted or [] if all(q in r.missing for r in replies.values())]
    if unknown and not any(r.done for r in replies.values()):
        raise mxlab.LabError(f"not queued at {', '.join(replies)}: {', '.join(unknown)}")
    for name, reply in replies.items():
        parts = [f"{action} {len(reply.done)}"]
        if reply.unchanged:
            parts.append(f"{len(reply.unchanged)} unchanged (already so, or held)")
        if reply.later:
            parts.append(f"{len(reply.later)} in delivery now ({action} when its attempt ends)")
        if not reply.live:
            parts.append("node stopped: queue files changed, they count when it starts")
        out.print(f"{name}: " + "; ".join(parts))
    if unknown:
        raise mxlab.LabError(f"not queued at {', '.join(replies)}: {', '.join(unknown)}")


def _action(action: str, summary: str):  # noqa: ANN202 - builds the typer command
    def command(targets: TargetsArg = None) -> None:
        _act(action, targets)

    command.__doc__ = summary
    return command


queue_app.command("flush")(_action("flush", "Deliver now what waits for a retry (all, or IDS)."))
queue_app.command("hold")(_action("hold", "Keep messages queued, undelivered, until released."))
queue_app.command("release")(_action("release", "Put held messages back on their retry schedule."))
queue_app.command("delete")(_action("delete", "Remove messages from the queue, unsent."))
