"""`mxlab export compose LAB|FILE`: the lab as a compose (or stack) file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mxlab.cli.app import app, argument, out

export_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="The lab for other tools to run."
)
app.add_typer(export_app, name="export")


@export_app.command("compose")
def compose(
    source: Annotated[str, argument("LAB|FILE")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="DIR", help="folder to write (default: NAME-compose)"
        ),
    ] = None,
    swarm: Annotated[
        bool, typer.Option("--swarm", help="a stack file for docker stack deploy")
    ] = False,
) -> None:
    """Write a folder with a compose file and each node's config, from a running docker
    or swarm lab (LAB) or a topology (FILE): `docker compose up` runs the same lab."""
    from mxlab.lab.compose import export  # the docker SDK only when exporting
    from mxlab.lab.image import IMAGE

    folder = output or Path(f"{Path(source).stem}-compose")
    path = export(source, folder, swarm)
    run = f"docker stack deploy -c {path} NAME" if swarm else f"docker compose -f {path} up -d"
    out.print(f"wrote {path} (node image {IMAGE}, mxlab image build makes it): {run}")
