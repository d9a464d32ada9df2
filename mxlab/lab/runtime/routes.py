"""The host's IPv4 routes, which a lab's docker network must not cover: a bridge on
a /24 inside a VPN's or a LAN's route takes the host's traffic for those addresses
(the longer prefix wins), so the lab would hide real hosts. Docker's own address pools
avoid them the same way (libnetwork's CheckRouteOverlaps); a subnet handed to it is
not checked."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

ROUTE_TABLE = Path("/proc/net/route")
# docker's bridges: their subnets are docker networks, judged as such (a crashed run's
# leftover of the same lab is not in the way)
DOCKER_BRIDGES = ("docker0", "docker_gwbridge", "br-")


def host_routes(table: str | None = None) -> dict[str, ipaddress.IPv4Network]:
    """Each route but the default and docker's bridges', as ``"dev IFACE NETWORK":
    network`` (several on one device keep distinct keys); ``table`` is
    /proc/net/route's text."""
    if table is None:
        try:
            table = ROUTE_TABLE.read_text()
        except OSError:
            return {}
    routes: dict[str, ipaddress.IPv4Network] = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[0].startswith(DOCKER_BRIDGES):
            continue
        # addresses in the kernel's byte order (network order), printed as a host int
        dest, mask = (struct.pack("=I", int(f, 16)) for f in (fields[1], fields[7]))
        prefix = bin(int.from_bytes(mask, "big")).count("1")
        if prefix == 0:
            continue  # the default route covers everything, and is no network of its own
        net = ipaddress.IPv4Network((ipaddress.IPv4Address(dest), prefix), strict=False)
        routes[f"dev {fields[0]} {net}"] = net
    return routes
