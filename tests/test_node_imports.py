"""Nodes start light: no pydantic or cryptography in a node's process, and
the node-side config loader checks what pydantic used to (types, unknown keys)."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop

from mxlab.lab.plan import make_plan
from mxlab.lab.topology import parse_topology
from mxlab.nodes.__main__ import ROLES, main, run
from mxlab.nodes.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("pydantic", "cryptography", "argparse")  # argparse: 0.5 MiB for two arguments


def _imported(module: str) -> set[str]:
    code = (
        f"import sys, mxlab.nodes.__main__, {module}\n"
        "print(' '.join({m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "module",
    [
        "mxlab.dns.server",
        "mxlab.nodes.store.server",
        "mxlab.nodes.relay.server",
        "mxlab.nodes.sink.server",
    ],
)
def test_node_does_not_import_heavy_libraries(module: str) -> None:
    assert _imported(module).isdisjoint(HEAVY)


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a LabPlan
    text = (ROOT / "examples/topologies/two-domains.yaml").read_text()
    topo = parse_topology(text, "two-domains.yaml")
    lab_dir = tmp_path_factory.mktemp("lab")
    return make_plan(topo, runtime="local", lab_dir=lab_dir, subnet="127.77.0.0/24")


def test_planned_configs_load_back_equal(plan, tmp_path: Path) -> None:  # noqa: ANN001
    for node in plan.nodes.values():
        path = tmp_path / f"{node.name}.json"
        path.write_text(node.config.model_dump_json(indent=2))
        assert load_config(path) == node.config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"queue": {"retry_max": "soon"}}, "queue.retry_max: float expected"),
        ({"smtp_port": True}, "smtp_port: int expected"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"role": "printer"}, "role: one of"),
        ({"dns": {"host": "127.0.0.1"}}, "dns.port: missing"),
    ],
)
def test_bad_config_names_the_field(plan, tmp_path: Path, change, message) -> None:  # noqa: ANN001
    relay = next(n for n in plan.nodes.values() if n.role == "relay")
    data = json.loads(relay.config.model_dump_json())
    for key, value in change.items():
        data[key] = data[key] | value if isinstance(value, dict) and key != "dns" else value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(err.value).startswith(str(path))


def test_the_node_command_line_is_read_without_argparse(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    assert main(["--help"]) == 0
    assert "{dns,relay,sink,store} --config CONFIG" in capsys.readouterr().out
    assert main(["printer", "--config", "x.json"]) == 2
    assert "one of dns, relay, sink, store expected, got 'printer'" in capsys.readouterr().err
    assert main(["relay"]) == 2
    assert "--config CONFIG is required" in capsys.readouterr().err
    assert main(["relay", "--config", "x.json", "--verbose"]) == 2
    assert "unexpected argument '--verbose'" in capsys.readouterr().err
    missing = tmp_path / "none.json"
    assert main([f"--config={missing}", "dns"]) == 2  # either order, as argparse took it
    assert str(missing) in capsys.readouterr().err
    assert os.umask(umask) == umask  # a refused node left this process's umask alone


def _warmed(node_dir: Path) -> set[str]:
    """The modules a spawner holds after warming up for the node in ``node_dir``."""
    code = (
        "import sys\nfrom mxlab.nodes.spawn import _warm\nbefore = set(sys.modules)\n"
        "_warm(sys.argv[1])\nprint(' '.join(set(sys.modules) - before))"
    )
    argv = [sys.executable, "-c", code, str(node_dir)]
    return set(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split())


def test_a_relay_spawner_loads_mail_authentication_only_for_relays_using_it(
    plan,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    relay = next(n for n in plan.nodes.values() if n.role == "relay")
    data = json.loads(relay.config.model_dump_json())
    assert data["mailauth"]["verify"]  # the planner turns the checks on
    (tmp_path / "on").mkdir()
    (tmp_path / "on/config.json").write_text(json.dumps(data))
    assert "mxlab.nodes.mailauth.verify" in _warmed(tmp_path / "on")
    data["mailauth"] |= {"verify": False, "sign": {}, "arc": None}
    (tmp_path / "off").mkdir()
    (tmp_path / "off/config.json").write_text(json.dumps(data))
    assert _warmed(tmp_path / "off").isdisjoint({"dkim", "spf", "mxlab.nodes.mailauth.verify"})
    assert _warmed(tmp_path) == set()  # no config: nothing warmed, the node will say why


@pytest.mark.parametrize(("role", "on_uvloop"), [("relay", True), ("store", False)])
def test_each_role_runs_on_its_event_loop(
    plan,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    role: str,
    on_uvloop: bool,
) -> None:
    """The relay's throughput wants libuv's loop; the others keep asyncio's memory."""
    node = next(n for n in plan.nodes.values() if n.role == role)
    path = tmp_path / "config.json"
    path.write_text(node.config.model_dump_json())
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve(_config: object) -> None:
        loops.append(asyncio.get_running_loop())

    monkeypatch.setattr(importlib.import_module(ROLES[role]), "serve", serve)
    umask = os.umask(0o022)
    try:
        assert run(role, str(path)) == 0
    finally:
        os.umask(umask)  # run() sets the node's 077
    assert len(loops) == 1 and isinstance(loops[0], uvloop.Loop) is on_uvloop
