"""The sampled delivery check: linear in the domains, every domain still sending and
receiving; small labs keep every pair."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mxlab.lab.checks import FULL_PAIRS_MAX, SAMPLE_K, choose_pairs


def lab(domains: int, users: int) -> SimpleNamespace:
    """What choose_pairs reads of a plan: its users' addresses and domains."""
    return SimpleNamespace(
        users=[
            SimpleNamespace(address=f"u{u}@d{d}.test", domain=f"d{d}.test")
            for d in range(domains)
            for u in range(users)
        ]
    )


def test_small_lab_checks_every_ordered_pair() -> None:
    plan = lab(3, 2)
    pairs, k = choose_pairs(plan)  # type: ignore[arg-type]
    addresses = [u.address for u in plan.users]
    assert k == 0
    assert sorted(pairs) == sorted((s, r) for s in addresses for r in addresses if s != r)


@pytest.mark.parametrize("users", [1, 2, 3])
def test_sampled_check_grows_linearly(users: int) -> None:
    counts = {d: len(choose_pairs(lab(d, users))[0]) for d in (20, 40, 80)}  # type: ignore[arg-type]
    per_domain = SAMPLE_K + (users > 1)  # k others, and itself when it has two users
    assert counts == {d: d * per_domain for d in counts}
    assert 20 * users * (20 * users - 1) > FULL_PAIRS_MAX  # so these were sampled


@pytest.mark.parametrize(("domains", "users", "k"), [(50, 2, None), (7, 1, 2), (4, 3, 9)])
def test_sampled_check_covers_every_domain_both_ways(domains: int, users: int, k) -> None:  # noqa: ANN001
    plan = lab(domains, users)
    pairs, used = choose_pairs(plan, k)  # type: ignore[arg-type]
    assert used == (k or SAMPLE_K)
    every = {u.domain for u in plan.users}
    assert {s.split("@")[1] for s, _ in pairs} == every
    assert {r.split("@")[1] for _, r in pairs} == every
    assert all(s != r for s, r in pairs)
    assert len(set(pairs)) == len(pairs)
    if users > 1:  # senders and recipients take turns within a domain
        assert {s for s, _ in pairs} == {u.address for u in plan.users}


def test_sample_zero_forces_every_pair() -> None:
    plan = lab(20, 1)
    assert len(choose_pairs(plan, 0)[0]) == 20 * 19  # type: ignore[arg-type]
