"""NSD as the lab's authoritative DNS: the plan's zones (as ``mxlab dns zone`` renders
them) in zone files beside an nsd.conf, in the node directory. Foreground, no chroot,
no privilege drop, no remote control; response-rate limiting off (a lab's checks are
a burst from one /24, which Debian's default limit of 200 qps would drop).

Our DNS node's faults (``mxlab dns fail``) are not NSD's: they need our node."""

from __future__ import annotations

from mxlab.dns.zonefile import render_zone
from mxlab.lab.kinds.debian import DebianKind
from mxlab.lab.plan import LabPlan, NodePlan
from mxlab.nodes.config import DnsNodeConfig, Zone

DNS_PACKAGES = ("nsd", "unbound")  # what a local instance needs installed


def zone_files(zones: list[Zone]) -> dict[str, str]:
    """File name -> zone file text (RFC 1035 §5 master files), one per zone."""
    return {f"{z.origin.rstrip('.')}.zone": render_zone(z) for z in zones}


def nsd_conf(address: str, port: int, directory: str, zones: dict[str, str]) -> str:
    """nsd.conf serving ``zones`` (origin -> zone file name in ``directory``)."""
    lines = [
        "server:",
        f"  ip-address: {address}@{port}",
        f"  port: {port}",
        '  username: ""',
        '  chroot: ""',
        '  database: ""',
        f'  zonesdir: "{directory}"',
        f'  pidfile: "{directory}/nsd.pid"',
        f'  xfrdfile: "{directory}/xfrd.state"',
        f'  zonelistfile: "{directory}/zone.list"',
        f'  logfile: "{directory}/nsd.log"',
        "  server-count: 1",
        "  rrl-ratelimit: 0",
        "  verbosity: 1",
        "remote-control:",
        "  control-enable: no",
    ]
    for origin, name in zones.items():
        lines += ["zone:", f"  name: {origin}", f"  zonefile: {name}"]
    return "\n".join(lines) + "\n"


class NsdKind(DebianKind):
    name = "nsd"
    process_marker = b"nsd"
    packages = DNS_PACKAGES
    programs = ("nsd",)

    def write_config(self, plan: LabPlan, node: NodePlan) -> None:
        cfg = node.config
        assert isinstance(cfg, DnsNodeConfig)
        files = zone_files(cfg.zones)
        names = dict(zip([z.origin for z in cfg.zones], files, strict=True))
        conf = nsd_conf(cfg.address, cfg.port, f"{self.root(plan, node)}/nsd", names)
        self.write_files(plan, node, {f"nsd/{n}": text for n, text in files.items()})
        self.write_files(plan, node, {"nsd/nsd.conf": conf})

    def argv(self, plan: LabPlan, node: NodePlan) -> list[str]:
        root = self.root(plan, node)
        return self.run(plan, node, f"exec nsd -d -c {root}/nsd/nsd.conf")


KIND = NsdKind()
