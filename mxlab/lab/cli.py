"""The `mxlab` command line: validate, up, run, check, send, status, down, fault drills."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mxlab.lab import labdir, report
from mxlab.lab.checks import build_message, check_pairs, collect, submit
from mxlab.lab.errors import LabError
from mxlab.lab.lifecycle import bring_up, runtime_of
from mxlab.lab.plan import LabPlan
from mxlab.lab.queue_cli import queue_app
from mxlab.lab.runtime import Runtime
from mxlab.lab.topology import TopologyError, load_topology

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Spin up a mail cluster as a lab and prove mail crosses it.",
)
dns_app = typer.Typer(no_args_is_help=True, help="The lab's DNS.")
app.add_typer(dns_app, name="dns")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

RuntimeOpt = Annotated[
    str, typer.Option("--runtime", "-r", help="docker, local, or auto (docker if it answers)")
]
LabArg = Annotated[str | None, typer.Argument(help="lab name (default: the only lab up)")]
LabOpt = Annotated[str | None, typer.Option("--lab", help="lab name (default: the only lab)")]


def _say(line: str) -> None:
    err.print(f"[dim]{line}[/]")


def _runtime_of(plan: LabPlan) -> Runtime:
    return runtime_of(plan, _say)


@app.command()
def validate(topology: Path) -> None:
    """Check a topology file; print a summary or one line saying what is wrong."""
    topo = load_topology(topology)
    kinds = [n.kind for n in topo.nodes.values()]
    users = sum(len(d.users) for d in topo.domains.values())
    out.print(
        f"{topology}: ok — lab {topo.name}: {len(topo.domains)} domains, {users} users, "
        f"{kinds.count('relay')} relays, {kinds.count('store')} stores, 1 DNS"
    )


@app.command()
def up(topology: Path, runtime: RuntimeOpt = "auto") -> None:
    """Start a lab and wait until every node answers its protocol."""
    topo = load_topology(topology)
    plan, _ = bring_up(topo, runtime, _say)
    _print_status(plan.lab)


@app.command()
def down(lab: LabArg = None) -> None:
    """Stop and remove every node of a lab (docker labs: by label, even without files)."""
    if lab is not None and lab not in labdir.list_labs():
        from mxlab.lab.runtime.docker import DockerRuntime, engine_error

        if engine_error() is None and DockerRuntime().status(lab):
            DockerRuntime().down(lab)
            out.print(f"lab {lab} is down")
            return
    name = labdir.only_lab(lab)
    _runtime_of(labdir.read_plan(name)).down(name)
    out.print(f"lab {name} is down")


@app.command()
def gc() -> None:
    """Remove containers and networks of docker labs whose nodes are all gone."""
    from mxlab.lab.runtime.docker import DockerRuntime, engine_error

    problem = engine_error()
    if problem is not None:
        raise LabError(problem)
    removed = DockerRuntime().gc()
    out.print(f"removed: {', '.join(removed)}" if removed else "nothing to remove")


image_app = typer.Typer(no_args_is_help=True, help="The node image (docker runtime).")
app.add_typer(image_app, name="image")


@image_app.command("build")
def image_build(
    force: Annotated[bool, typer.Option(help="rebuild even when up to date")] = False,
) -> None:
    """Build the node image (offline: from a debootstrap base when no registry answers)."""
    import docker

    from mxlab.lab.image import ensure_image
    from mxlab.lab.runtime.docker import engine_error

    problem = engine_error()
    if problem is not None:
        raise LabError(problem)
    out.print(ensure_image(docker.from_env(timeout=600), force=force, progress=_say))


@app.command()
def status(lab: LabArg = None) -> None:
    """Show each node of a lab, its address and whether it runs (docker labs: from their
    labels, even without the lab's files)."""
    if lab not in labdir.list_labs() and (lab or not labdir.list_labs()):
        labelled = _docker_labs(lab)
        if labelled:
            _print_labelled(labelled)
            return
    _print_status(labdir.only_lab(lab))


def _docker_labs(lab: str | None) -> dict[str, list]:
    """Labs the engine knows by label: name -> node statuses ({} without an engine)."""
    from mxlab.lab.runtime.docker import DockerRuntime, engine_error

    if engine_error() is not None:
        return {}
    runtime = DockerRuntime()
    labs = {name: runtime.status(name) for name in ([lab] if lab else runtime.labs())}
    return {name: nodes for name, nodes in labs.items() if nodes}


def _print_labelled(labs: dict[str, list]) -> None:
    from rich.table import Table

    for lab, nodes in labs.items():
        t = Table(title=f"lab {lab} (docker, from labels)")
        for col in ("node", "role", "address", "state", "container"):
            t.add_column(col)
        for s in nodes:
            state = f"[green]{s.state}[/]" if s.state == "running" else f"[red]{s.state}[/]"
            t.add_row(s.node, s.role, s.address, state, s.detail)
        out.print(t)


def _print_status(lab: str) -> None:
    from rich.table import Table

    plan = labdir.read_plan(lab)
    t = Table(title=f"lab {lab} ({plan.runtime}, {plan.subnet})")
    for col in ("node", "role", "fqdn", "address", "ports", "state"):
        t.add_column(col)
    for s in _runtime_of(plan).status(lab):
        node = plan.nodes[s.node]
        ports = " ".join(f"{k}:{v}" for k, v in node.ports.items())
        state = f"[green]{s.state}[/]" if s.state == "running" else f"[red]{s.state}[/]"
        t.add_row(s.node, s.role, node.fqdn, s.address, ports, state)
    out.print(t)


@app.command()
def check(
    lab: LabArg = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    junit: Annotated[Path | None, typer.Option(help="write JUnit XML here")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for delivery")] = 60.0,
) -> None:
    """Send mail between every pair of users and prove each arrived, by its route."""
    plan = labdir.read_plan(labdir.only_lab(lab))
    results = check_pairs(plan, deadline=timeout)
    _report(results, plan.lab, json_out, junit, _declared_checks(plan, _runtime_of(plan)))


def _declared_checks(plan: LabPlan, runtime: Runtime):  # noqa: ANN202 - Outcome | None
    """The topology's own ``checks:``, run on the lab after the pairwise ones."""
    if not plan.checks:
        return None
    from mxlab.lab.scenario import checks_scenario
    from mxlab.lab.scenario_run import run_steps

    return run_steps(checks_scenario(plan.lab, plan.checks), plan, runtime, _say)


def _report(
    results: list,
    suite: str,
    json_out: bool,
    junit: Path | None,
    declared=None,  # noqa: ANN001
) -> None:
    if junit is not None:
        suites = [report.junit_suite(results, suite)]
        if declared is not None:
            suites.append(report.scenario_junit_suite(declared))
        report.write_junit(junit, *suites)
    if json_out:
        doc = json.loads(report.as_json(results))
        if declared is not None:
            doc["checks"] = json.loads(report.scenario_json(declared))
        print(json.dumps(doc, indent=2))
    else:
        report.table(results, out)
        if declared is not None:
            report.scenario_table(declared, out)
    if not results or not all(r.ok for r in results) or (declared and not declared.ok):
        raise typer.Exit(1)


@app.command()
def run(
    topology: Path,
    runtime: RuntimeOpt = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    junit: Annotated[Path | None, typer.Option(help="write JUnit XML here")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for delivery")] = 60.0,
    keep: Annotated[bool, typer.Option(help="leave the lab running afterwards")] = False,
) -> None:
    """Start a lab, prove delivery between every pair of users, tear it down."""
    topo = load_topology(topology)
    plan, rt = bring_up(topo, runtime, _say)
    try:
        results = check_pairs(plan, deadline=timeout)
        declared = _declared_checks(plan, rt)
    finally:
        if not keep:
            rt.down(plan.lab)
            _say(f"lab {plan.lab} is down")
    _report(results, plan.lab, json_out, junit, declared)


@app.command()
def send(
    sender: Annotated[str, typer.Option("--from", help="a lab user, e.g. alice@alpha.test")],
    to: Annotated[list[str], typer.Option("--to", help="recipient (repeatable)")],
    subject: str = "mxlab test message",
    body: str = "Hello from mxlab.\n",
    attach: Annotated[list[Path] | None, typer.Option(help="file to attach")] = None,
    lab: LabOpt = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for delivery (0: don't)")] = 30,
) -> None:
    """Submit one message as a lab user (587, AUTH) and, by default, wait for delivery."""
    plan = labdir.read_plan(labdir.only_lab(lab))
    try:
        plan.user(sender)
    except KeyError:
        raise LabError(f"--from {sender}: not a user of lab {plan.lab}") from None
    for path in attach or []:
        if not path.is_file():
            raise LabError(f"--attach {path}: no such file")
    msg = build_message(sender, to, subject, body, attach or [])
    data = submit(plan, msg)
    out.print(f"submitted {msg['Message-ID']} ({len(data)} bytes) to {len(to)} recipient(s)")
    if wait <= 0:
        return
    from mxlab.lab.checks import Result
    from mxlab.lab.plan import predict_route

    lab_users = {u.address.lower() for u in plan.users}
    results = [
        Result(sender, r, msg["Message-ID"], [sorted(a) for a in predict_route(plan, sender, r)])
        for r in to
        if r.lower() in lab_users
    ]
    now = time.monotonic()
    sent = {msg["Message-ID"]: data}
    collect(plan, results, sent, {msg["Message-ID"]: now}, now + wait)
    report.table(results, out)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _node_action(action: str):  # noqa: ANN202 - builds the typer command
    def command(node: Annotated[str, typer.Argument(help="node name")], lab: LabOpt = None) -> None:
        plan = labdir.read_plan(labdir.only_lab(lab))
        if node not in plan.nodes:
            raise LabError(f"lab {plan.lab} has no node {node!r} ({', '.join(plan.nodes)})")
        getattr(_runtime_of(plan), action)(plan, node)
        out.print(f"{node}: {action} done")

    command.__doc__ = f"{action.capitalize()} one node (fault drills)."
    return command


for _action in ("start", "stop", "kill", "restart"):
    app.command(name=_action)(_node_action(_action))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec(  # noqa: A001 - the command's name
    ctx: typer.Context, node: str, lab: LabOpt = None
) -> None:
    """Run a command in a node: mxlab exec NODE -- CMD ARGS."""
    plan = labdir.read_plan(labdir.only_lab(lab))
    if not ctx.args:
        raise LabError("nothing to run: mxlab exec NODE -- CMD")
    raise typer.Exit(_runtime_of(plan).exec(plan, node, list(ctx.args)))


@app.command()
def logs(
    node: str,
    follow: Annotated[bool, typer.Option("-f", "--follow")] = False,
    lab: LabOpt = None,
) -> None:
    """Print a node's log."""
    plan = labdir.read_plan(labdir.only_lab(lab))
    if node not in plan.nodes:
        raise LabError(f"lab {plan.lab} has no node {node!r} ({', '.join(plan.nodes)})")
    _runtime_of(plan).logs(plan, node, follow)


@app.command()
def trace(message_id: str, lab: LabOpt = None) -> None:
    """Follow a message across the lab's nodes by its Message-ID."""
    from datetime import datetime

    from rich.table import Table

    from mxlab.lab.trace import events_for

    plan = labdir.read_plan(labdir.only_lab(lab))
    events = events_for(plan, _runtime_of(plan), message_id)
    if not events:
        raise LabError(f"no node of lab {plan.lab} logged {message_id}")
    t = Table(title=f"trace {message_id}")
    for col in ("time", "node", "event", "details"):
        t.add_column(col)
    for e in events:
        when = datetime.fromtimestamp(e.ts).strftime("%H:%M:%S.%f")[:-3]
        details = " ".join(f"{k}={v}" for k, v in e.fields.items() if k != "message_id")
        t.add_row(when, e.node, e.event, details)
    out.print(t)
    path: list[str] = []  # each node once, in the order the message first reached it
    for e in events:
        if e.node not in path:
            path.append(e.node)
    out.print("path: " + " > ".join(path))


app.add_typer(queue_app, name="queue")

scenario_app = typer.Typer(no_args_is_help=True, help="Fault scenarios with checks.")
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("run")
def scenario_run(
    file: Path,
    runtime: Annotated[str | None, typer.Option("--runtime", "-r")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    junit: Annotated[Path | None, typer.Option(help="write JUnit XML here")] = None,
    artifacts: Annotated[Path, typer.Option(help="where a failed run keeps its lab")] = Path(
        "mxlab-artifacts"
    ),
) -> None:
    """Bring up the scenario's lab, run its steps and checks, account for every message."""
    from mxlab.lab.scenario import load_scenario
    from mxlab.lab.scenario_run import run_scenario

    scenario, topo = load_scenario(file)
    outcome = run_scenario(scenario, topo, runtime, _say, artifacts)
    if junit is not None:
        report.write_junit(junit, report.scenario_junit_suite(outcome))
    if json_out:
        print(report.scenario_json(outcome))
    else:
        report.scenario_table(outcome, out)
    if not outcome.ok:
        raise typer.Exit(1)


@dns_app.command("zone")
def dns_zone(lab: LabArg = None) -> None:
    """Print the lab's zones in BIND format."""
    from mxlab.dns.zonefile import render_zone

    plan = labdir.read_plan(labdir.only_lab(lab))
    for zone in plan.zones:
        sys.stdout.write(render_zone(zone) + "\n")


@dns_app.command("fail")
def dns_fail(
    name: Annotated[str, typer.Argument(help="a lab name, e.g. beta.test")],
    mode: Annotated[str, typer.Option(help="servfail, timeout, or drop_mx")] = "servfail",
    lab: LabOpt = None,
) -> None:
    """Make a name fail in the lab's DNS (SERVFAIL, no answer, or no MX) until restored."""
    from mxlab.lab import dns_faults

    plan = labdir.read_plan(labdir.only_lab(lab))
    dns_faults.fail(plan, _runtime_of(plan), name, mode)
    out.print(f"{name}: {mode} until mxlab dns restore")


@dns_app.command("restore")
def dns_restore(
    name: Annotated[str | None, typer.Argument(help="lift only this name's faults")] = None,
    lab: LabOpt = None,
) -> None:
    """Lift DNS faults (all, or one name's)."""
    from mxlab.lab import dns_faults

    plan = labdir.read_plan(labdir.only_lab(lab))
    dns_faults.restore(plan, _runtime_of(plan), name)
    left = dns_faults.current(plan)
    faulty = sorted(left.servfail | left.timeout | left.drop_mx)
    out.print("DNS faults left: " + (", ".join(faulty) if faulty else "none"))


def main() -> None:
    """Entry point: every known failure is one line on stderr, never a traceback."""
    try:
        app()
    except TopologyError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(2)
    except LabError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
