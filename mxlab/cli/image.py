"""`mxlab image build`: the node image for the docker runtime."""

from __future__ import annotations

from typing import Annotated

import typer

import mxlab
from mxlab.cli.app import app, out, say

image_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="The node image (docker runtime)."
)
app.add_typer(image_app, name="image")


@image_app.command("build")
def build(
    force: Annotated[bool, typer.Option("--force", help="rebuild even when up to date")] = False,
) -> None:
    """Build the node image (offline: from a debootstrap base when no registry answers)."""
    out.print(mxlab.build_image(force, say))
