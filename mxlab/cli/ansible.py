"""`mxlab ansible inventory|path`: operate a running lab with Ansible."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

import mxlab
from mxlab.cli.app import LabArg, app, attach
from mxlab.lab.inventory import render_ini

ansible_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Operate the lab with Ansible."
)
app.add_typer(ansible_app, name="ansible")


@ansible_app.command("inventory")
def inventory(
    lab: LabArg = None,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="yaml or ini")] = "yaml",
) -> None:
    """Print the running lab as an Ansible inventory (ansible -i FILE): groups dns, relays,
    stores and one per domain; each node's address, FQDN, ports, role and connection."""
    if fmt not in ("yaml", "ini"):
        raise mxlab.LabError(f"--format {fmt}: use yaml or ini")
    inv = attach(lab).inventory()
    sys.stdout.write(render_ini(inv) if fmt == "ini" else yaml.safe_dump(inv, sort_keys=False))


@ansible_app.command("path")
def path() -> None:
    """Print the directory to put in ANSIBLE_COLLECTIONS_PATH for the mxlab.lab collection
    (it ships inside the mxlab package, under ansible_collections/mxlab/lab)."""
    print(Path(mxlab.__file__).resolve().parent)
