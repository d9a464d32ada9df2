"""The relay and the store extend aiosmtpd through names it does not promise to keep.
pyproject pins aiosmtpd below the next minor release; this test names the symbol that
went missing when a newer aiosmtpd is tried, instead of failing somewhere in a session."""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path

import aiosmtpd
import pytest
from aiosmtpd.smtp import SMTP

ROOT = Path(__file__).resolve().parent.parent

# methods of aiosmtpd.smtp.SMTP that our subclasses override or call
PRIVATE_METHODS = [
    "_handle_client",
    "_getaddr",
    "_getparams",
    "_set_post_data_state",
    "_create_envelope",
    "_call_handler_hook",
    "_timeout_cb",
]
# attributes an SMTP instance carries after __init__ that our subclasses read or set
PRIVATE_ATTRIBUTES = ["_smtp_methods", "_auth_methods", "_auth_require_tls", "_tls_protocol"]


@pytest.mark.parametrize("name", PRIVATE_METHODS)
def test_aiosmtpd_still_has_the_methods_we_extend(name: str) -> None:
    assert callable(getattr(SMTP, name, None)), (
        f"aiosmtpd {aiosmtpd.__version__} has no SMTP.{name}: the relay/store subclasses "
        "rely on it (mxlab/nodes/relay/esmtp.py, mxlab/nodes/store/lmtp.py)"
    )


def test_aiosmtpd_instances_still_carry_the_attributes_we_use() -> None:
    async def make() -> SMTP:
        return SMTP(object(), auth_require_tls=True)

    smtp = asyncio.run(make())
    for name in PRIVATE_ATTRIBUTES:
        assert hasattr(smtp, name), f"aiosmtpd {aiosmtpd.__version__}: SMTP().{name} is gone"


def test_relied_on_names_are_the_ones_the_code_uses() -> None:
    """The lists above stay true: every private aiosmtpd name the code calls is listed."""
    used: set[str] = set()
    for path in [ROOT / "mxlab/nodes/relay/esmtp.py", ROOT / "mxlab/nodes/store/lmtp.py"]:
        text = path.read_text()
        used |= set(re.findall(r"(?:super\(\)|self)\.(_[a-z][a-z_]*)\(", text))
    missing = {n for n in used if hasattr(SMTP, n)} - set(PRIVATE_METHODS)
    assert not missing, f"list these in PRIVATE_METHODS: {sorted(missing)}"


def test_aiosmtpd_is_pinned_below_the_next_minor() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if d.startswith("aiosmtpd"))
    assert "<1.5" in spec, f"pin aiosmtpd below 1.5 in pyproject.toml (now {spec!r})"
