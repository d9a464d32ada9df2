"""`mxlab start|stop|kill|restart|cut|restore|exec|logs`: one node, for fault drills."""

from __future__ import annotations

from typing import Annotated

import typer

from mxlab.cli.app import app, argument, attach, out, split_lab

NodeArgs = Annotated[list[str], argument("[LAB] NODE")]

DRILLS = {
    "start": "Start a stopped node and wait until it answers.",
    "stop": "Stop a node gracefully (SIGTERM).",
    "kill": "Kill a node (SIGKILL): what it acknowledged must survive.",
    "restart": "Stop and start a node.",
    "cut": "Take a node off the lab network (docker).",
    "restore": "Put a cut node back on the lab network (docker).",
}


def _drill(action: str):  # noqa: ANN202 - builds the typer command
    def command(args: NodeArgs) -> None:
        lab, (node,) = split_lab(args, "[LAB] NODE")
        getattr(attach(lab), action)(node)
        out.print(f"{node}: {action} done")

    command.__doc__ = DRILLS[action]
    return command


for _action in DRILLS:
    app.command(name=_action)(_drill(_action))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec(  # noqa: A001 - the command's name
    ctx: typer.Context,
    args: Annotated[list[str], argument("[LAB] NODE -- CMD [ARGS]...")],
) -> None:
    """Run a command in a node (its container; its folder on the local runtime)."""
    import mxlab

    words = [w for w in [*args, *ctx.args] if w != "--"]
    lab = words.pop(0) if len(words) > 1 and words[0] in mxlab.labs() else None
    the_lab = attach(lab)
    node = words.pop(0)
    if not words:
        raise mxlab.LabError("nothing to run: mxlab exec [LAB] NODE -- CMD [ARGS]...")
    raise typer.Exit(the_lab.exec(node, words))


@app.command()
def logs(
    args: NodeArgs,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep following")] = False,
) -> None:
    """Print a node's structured log."""
    import sys

    lab, (node,) = split_lab(args, "[LAB] NODE")
    the_lab = attach(lab)
    if follow:
        the_lab.follow_log(node)
    else:
        sys.stdout.buffer.write(the_lab.log(node))
