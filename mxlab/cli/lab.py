"""`mxlab validate|up|down|status|gc|hosts`: a lab's life."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

import mxlab
from mxlab.cli import render
from mxlab.cli.app import JsonOpt, LabArg, RuntimeOpt, TopologyArg, app, attach, out, say
from mxlab.lab.topology import role_of


@app.command()
def validate(topology: TopologyArg, json_out: JsonOpt = False) -> None:
    """Check a topology file; print a summary or one line saying what is wrong."""
    topo = mxlab.validate(topology)
    roles = [role_of(n.kind) for n in topo.nodes.values()]  # a postfix node is a relay
    summary = {
        "lab": topo.name,
        "domains": len(topo.domains),
        "users": sum(len(d.users) for d in topo.domains.values()),
        "relays": roles.count("relay"),
        "stores": roles.count("store"),
        "dns": roles.count("dns"),
    }
    others = {"resolvers": "resolver", "sinks": "sink", "external": "external"}
    summary |= {k: roles.count(role) for k, role in others.items() if role in roles}
    if json_out:
        print(json.dumps({"file": str(topology), "ok": True} | summary))
        return
    out.print(
        f"{topology}: ok — lab {topo.name}: {summary['domains']} domains, "
        f"{summary['users']} users, {summary['relays']} relays, {summary['stores']} stores, "
        f"{summary['dns']} DNS" + "".join(f", {summary[k]} {k}" for k in others if k in summary)
    )


@app.command()
def up(
    topology: TopologyArg,
    runtime: RuntimeOpt = "auto",
    json_out: JsonOpt = False,
    inventory: Annotated[
        Path | None,
        typer.Option(
            "--inventory", "-i", metavar="FILE", help="Ansible inventory (--runtime hosts)"
        ),
    ] = None,
) -> None:
    """Start a lab and wait until every node answers its protocol."""
    _status(mxlab.Lab.up(topology, runtime, progress=say, inventory=inventory), json_out)


@app.command()
def down(
    lab: LabArg = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="keep the lab directory (mail, queues, logs)")
    ] = False,
) -> None:
    """Stop every node and remove the lab and its directory (docker: by label, even
    when the directory is gone)."""
    if keep:
        directory = attach(lab).directory
    name = mxlab.down(lab, keep, say)
    out.print(f"lab {name} is down" + (f" (kept {directory})" if keep else ""))


@app.command()
def gc() -> None:
    """Remove what crashed runs left: node processes whose lab directory is gone,
    containers and networks of docker labs whose nodes are all gone."""
    removed = mxlab.gc(say)
    out.print(f"removed: {', '.join(removed)}" if removed else "nothing to remove")


@app.command()
def status(lab: LabArg = None, json_out: JsonOpt = False) -> None:
    """Each node of a lab: address, ports, state (docker labs: from their labels, even
    without the lab's files)."""
    if lab is None and not mxlab.labs():
        labelled = mxlab.labelled()
        if labelled:
            _labelled(labelled, json_out)
            return
    try:
        the_lab = attach(lab)
    except mxlab.LabError:
        labelled = mxlab.labelled(lab) if lab else {}
        if not labelled:
            raise
        _labelled(labelled, json_out)
        return
    _status(the_lab, json_out)


def _status(lab: mxlab.Lab, json_out: bool) -> None:
    name = lab.name
    nodes = lab.status()
    ports = {
        n.name: " ".join(f"{k}:{v}" for k, v in n.ports.items()) for n in lab.plan.nodes.values()
    }
    if json_out:
        rows = [
            {"node": s.node, "role": s.role, "fqdn": lab.plan.nodes[s.node].fqdn,
             "address": s.address, "ports": lab.plan.nodes[s.node].ports, "state": s.state}
            for s in nodes
        ]  # fmt: skip
        print(json.dumps({"lab": name, "runtime": lab.plan.runtime, "nodes": rows}, indent=2))
        return
    render.status(out, f"lab {name} ({lab.plan.runtime}, {lab.plan.subnet})", nodes, ports)


def _labelled(labs: dict[str, list], json_out: bool) -> None:
    if json_out:
        doc = {lab: [s.__dict__ for s in nodes] for lab, nodes in labs.items()}
        print(json.dumps(doc, indent=2))
        return
    for lab, nodes in labs.items():
        render.status(out, f"lab {lab} (docker, from labels)", nodes, {})


@app.command()
def hosts(lab: LabArg = None) -> None:
    """/etc/hosts lines for the lab's nodes, and where its CA is: what a host-side client
    (fetchmail, mbsync, mutt) needs to verify TLS by name."""
    the_lab = attach(lab)
    print(f"# lab {the_lab.name}: trust the lab CA {the_lab.ca_file}")
    print(the_lab.hosts(), end="")
