"""unbound as the lab's recursive resolver (role resolver): the lab's zones are stub
zones at the lab DNS, so its customers (relays naming it as ``resolver``, clients)
resolve lab names through a real recursive server, as an ISP's customers do.

Iterator only (the lab zones are unsigned); the defaults that hide .test and private
reverse zones lifted, and querying loopback allowed (the local runtime's addresses)."""

from __future__ import annotations

from mxlab.lab.kinds.debian import DebianKind
from mxlab.lab.kinds.nsd import DNS_PACKAGES
from mxlab.lab.plan import LabPlan, NodePlan
from mxlab.lab.ready import answers_soa
from mxlab.nodes.config import ResolverNodeConfig


def unbound_conf(
    address: str, port: int, directory: str, dns: str, stub_zones: list[str], allow: list[str]
) -> str:
    """unbound.conf: foreground, no chroot, no privilege drop, no remote control, log on
    stderr; ``dns`` is the authoritative server as ADDRESS@PORT."""
    lines = [
        "server:",
        f"  interface: {address}@{port}",
        f"  port: {port}",
        "  do-daemonize: no",
        '  chroot: ""',
        '  username: ""',
        f'  directory: "{directory}"',
        f'  pidfile: "{directory}/unbound.pid"',
        '  logfile: ""',
        "  use-syslog: no",
        "  verbosity: 1",
        "  do-ip6: no",
        "  do-not-query-localhost: no",
        '  module-config: "iterator"',
        *(f"  access-control: {net} allow" for net in allow),
        "  num-threads: 1",
        "  qname-minimisation: no",
        '  local-zone: "test." nodefault',
        '  local-zone: "127.in-addr.arpa." nodefault',
        "  unblock-lan-zones: yes",
        "  insecure-lan-zones: yes",
        *(f'  domain-insecure: "{zone}"' for zone in stub_zones),
        "remote-control:",
        "  control-enable: no",
    ]
    for zone in stub_zones:
        lines += ["stub-zone:", f'  name: "{zone}"', f"  stub-addr: {dns}"]
    return "\n".join(lines) + "\n"


class UnboundKind(DebianKind):
    name = "unbound"
    process_marker = b"unbound"
    packages = DNS_PACKAGES
    programs = ("unbound",)

    def write_config(self, plan: LabPlan, node: NodePlan) -> None:
        cfg = node.config
        assert isinstance(cfg, ResolverNodeConfig)
        dns = f"{cfg.dns.host}@{cfg.dns.port}"
        directory = f"{self.root(plan, node)}/unbound"
        conf = unbound_conf(cfg.address, cfg.port, directory, dns, cfg.stub_zones, cfg.allow)
        self.write_files(plan, node, {"unbound/unbound.conf": conf})

    def argv(self, plan: LabPlan, node: NodePlan) -> list[str]:
        root = self.root(plan, node)
        return self.run(plan, node, f"exec unbound -d -c {root}/unbound/unbound.conf")

    def is_ready(self, node: NodePlan, timeout: float) -> bool:
        """It answers a lab zone's SOA: recursion through the stub works."""
        cfg = node.config
        assert isinstance(cfg, ResolverNodeConfig)
        return answers_soa(node.address, cfg.port, cfg.stub_zones[0], timeout)


KIND = UnboundKind()
