"""A module whose tests need another topology: the marker names it (a path relative to
this file, a dict or a Topology); the module's tests share that lab."""

from __future__ import annotations

import pytest
from notify import SmtpSettings, send_welcome

import mxlab

pytestmark = pytest.mark.mxlab(topology="topologies/two-domains.yaml")


def test_mail_crosses_to_the_other_domain(mail_lab: mxlab.Lab) -> None:
    host, port = mail_lab.smtp("alpha.test")
    carol = mail_lab.user("carol@alpha.test")
    settings = SmtpSettings(host, port, carol.address, carol.password, str(mail_lab.ca_file))
    send_welcome(settings, "dave@beta.test", "Dave")
    msg = mail_lab.mailbox("dave@beta.test").wait_for(subject="Welcome, Dave", timeout=30)
    hops = [e.node for e in mail_lab.trace(str(msg["Message-ID"]))]
    assert "mx-alpha" in hops and "mx-beta" in hops
