"""Commands that impair or clear a node's link, run inside its container.

tc netem does delay, jitter, loss and rate in one qdisc. Some kernels (minimal VM
kernels among them) have no sch_netem; there rate falls back to tbf and loss to an
nftables rule dropping a random share of outgoing packets, and only delay and jitter
are refused, with a line saying why.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from mxlab.lab.errors import LabError

TABLE = "mxlab_link"
NO_NETEM = "qdisc kind is unknown"  # what tc says when the kernel lacks sch_netem
NOTHING_TO_CLEAR = ("handle of zero", "No such file", "Cannot delete qdisc")


def netem(dev: str, spec: dict[str, str]) -> list[list[str]]:
    argv = ["tc", "qdisc", "replace", "dev", dev, "root", "netem"]
    if spec.get("delay"):
        argv += ["delay", spec["delay"]] + ([spec["jitter"]] if spec.get("jitter") else [])
    for key in ("loss", "rate"):
        if spec.get(key):
            argv += [key, spec[key]]
    return [argv]


def _per_10000(loss: str) -> int:
    try:
        share = Decimal(loss.rstrip("%")) * 100
    except InvalidOperation:
        raise LabError(f"loss {loss!r}: expected a percentage such as 2% or 0.5%") from None
    if not 0 <= share <= 10000:
        raise LabError(f"loss {loss!r}: must be between 0% and 100%")
    return int(share)


def without_netem(dev: str, spec: dict[str, str]) -> list[list[str]]:
    """The same impairment from tbf and nftables, for kernels without sch_netem."""
    if spec.get("delay") or spec.get("jitter"):
        raise LabError(
            "delay and jitter need the kernel's sch_netem, which this host lacks "
            "(loss and rate still work)"
        )
    cmds = []
    if spec.get("rate"):
        cmds.append(["tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                     "rate", spec["rate"], "burst", "32kbit", "latency", "400ms"])  # fmt: skip
    if spec.get("loss"):
        cmds += [
            ["nft", "add", "table", "inet", TABLE],
            ["nft", "add", "chain", "inet", TABLE, "out",
             "{ type filter hook output priority 0 ; }"],
            ["nft", "add", "rule", "inet", TABLE, "out", "oifname", dev,
             "numgen", "random", "mod", "10000", "<", str(_per_10000(spec["loss"])), "drop"],
        ]  # fmt: skip
    return cmds


def clear(dev: str) -> list[list[str]]:
    return [["tc", "qdisc", "del", "dev", dev, "root"], ["nft", "delete", "table", "inet", TABLE]]
