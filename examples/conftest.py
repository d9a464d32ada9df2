"""Point the application at the lab: the submission port of example.test, as alice, trusting
the lab's CA."""

from __future__ import annotations

import pytest
from notify import SmtpSettings

import mxlab


@pytest.fixture
def smtp_settings(mail_lab: mxlab.Lab) -> SmtpSettings:
    host, port = mail_lab.smtp("example.test")  # the relay taking submissions, port 587
    alice = mail_lab.user("alice@example.test")
    return SmtpSettings(host, port, alice.address, alice.password, str(mail_lab.ca_file))
