"""`mxlab exercise list|start|task|check`: broken labs to repair, checked on the running
lab."""

from __future__ import annotations

from typing import Annotated

import typer

from mxlab import exercises
from mxlab.cli.app import LabArg, RuntimeOpt, app, argument, attach, out, say

exercise_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Broken labs to repair, and a checker."
)
app.add_typer(exercise_app, name="exercise")


@exercise_app.command("list")
def list_() -> None:
    """The shipped exercises."""
    for name in exercises.shipped():
        out.print(f"{name:20} {exercises.load(name).title}", markup=False)


@exercise_app.command("start")
def start(
    exercise: Annotated[str, argument("NAME|FILE")],
    runtime: RuntimeOpt = "auto",
) -> None:
    """Bring an exercise's lab up, broken, and print the task."""
    ex = exercises.load(exercise)
    lab = exercises.start(ex, runtime, say)
    out.print(f"lab {lab.name} is up and broken. Your task ({ex.title}):\n", markup=False)
    out.print(ex.task.rstrip(), markup=False)
    out.print(f"\nWhen you think it is fixed: mxlab exercise check {lab.name}", markup=False)


@exercise_app.command("task")
def task(lab: LabArg = None) -> None:
    """Print the running exercise's task again."""
    ex = exercises.of_lab(attach(lab))
    out.print(f"{ex.title}\n\n{ex.task.rstrip()}", markup=False)


@exercise_app.command("check")
def check(
    lab: LabArg = None,
    hint: Annotated[bool, typer.Option("--hint", help="a hint for each goal not met")] = False,
) -> None:
    """Say, goal by goal, whether the running lab is fixed (DNS answers, delivery
    probes, node states); exit 1 while a goal is not met."""
    the_lab = attach(lab)
    ex = exercises.of_lab(the_lab)
    verdicts = exercises.check(the_lab, ex)
    for v in verdicts:
        mark = "[green]ok  [/]" if v.ok else "[red]FAIL[/]"
        out.print(f"{mark} {v.title}: ", end="")
        out.print(v.detail, markup=False)
        if hint and not v.ok:
            out.print(f"     hint: {v.hint or 'none for this goal'}", markup=False)
    done = sum(v.ok for v in verdicts)
    out.print(
        f"{done} of {len(verdicts)} goals met" + (": solved!" if done == len(verdicts) else "")
    )
    if done < len(verdicts):
        if not hint:
            out.print("(mxlab exercise check --hint gives a hint for each goal not met)")
        raise typer.Exit(1)
