"""Link impairments: netem where the kernel has it, tbf and nftables where it has not."""

from __future__ import annotations

import pytest

from mxlab.lab.errors import LabError
from mxlab.lab.runtime import netem


def test_netem_takes_every_knob_in_one_qdisc() -> None:
    spec = {"delay": "100ms", "jitter": "10ms", "loss": "2%", "rate": "1mbit"}
    assert netem.netem("eth1", spec) == [
        ["tc", "qdisc", "replace", "dev", "eth1", "root", "netem",
         "delay", "100ms", "10ms", "loss", "2%", "rate", "1mbit"]
    ]  # fmt: skip


def test_without_netem_rate_is_tbf_and_loss_is_a_random_drop_rule() -> None:
    cmds = netem.without_netem("eth0", {"loss": "0.5%", "rate": "2mbit"})
    assert cmds[0][:8] == ["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate"]
    assert cmds[0][8] == "2mbit"
    rule = cmds[-1]
    assert rule[:6] == ["nft", "add", "rule", "inet", netem.TABLE, "out"]
    assert rule[rule.index("<") + 1] == "50" and rule[-1] == "drop"  # 0.5% of 10000


@pytest.mark.parametrize("spec", [{"delay": "50ms"}, {"jitter": "5ms"}])
def test_without_netem_delay_is_refused_in_one_line(spec: dict[str, str]) -> None:
    with pytest.raises(LabError, match="sch_netem"):
        netem.without_netem("eth0", spec)


@pytest.mark.parametrize("loss", ["lots", "150%", "-1%"])
def test_bad_loss_is_a_clear_error(loss: str) -> None:
    with pytest.raises(LabError, match="loss"):
        netem.without_netem("eth0", {"loss": loss})


def test_clear_lifts_both_kinds() -> None:
    kinds = {argv[0] for argv in netem.clear("eth2")}
    assert kinds == {"tc", "nft"}
