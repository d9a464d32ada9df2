"""The application's mail, tested against a real lab: what arrives, what is refused, and
what happens when the mail store is down for a while."""

from __future__ import annotations

import smtplib
import time
import uuid

import pytest
from notify import SmtpSettings, send_password_reset, send_welcome

import mxlab


def test_welcome_mail_arrives(mail_lab: mxlab.Lab, smtp_settings: SmtpSettings) -> None:
    name = f"Bob {uuid.uuid4().hex[:6]}"  # the session's lab is shared: a subject of its own
    send_welcome(smtp_settings, "bob@example.test", name)
    msg = mail_lab.mailbox("bob@example.test").wait_for(subject=f"Welcome, {name}", timeout=30)
    assert msg["From"] == "alice@example.test"
    assert f"Hello {name}" in msg.get_content()


def test_reset_mail_carries_the_token(mail_lab: mxlab.Lab, smtp_settings: SmtpSettings) -> None:
    token = uuid.uuid4().hex
    send_password_reset(smtp_settings, "bob@example.test", token)
    box = mail_lab.mailbox("bob@example.test")
    msg = box.wait_for(header=("X-Reset-Token", token), timeout=30)
    assert f"token={token}" in msg.get_content()


def test_unknown_recipient_is_refused(smtp_settings: SmtpSettings) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_welcome(smtp_settings, "nobody@example.test", "Nobody")


def test_mail_waits_while_the_store_is_down(
    mail_lab: mxlab.Lab, smtp_settings: SmtpSettings
) -> None:
    mail_lab.stop("store")
    try:
        message_id = send_welcome(smtp_settings, "bob@example.test", "Patient Bob")
        deadline = time.monotonic() + 30
        while not any(q["message_id"] == message_id for q in mail_lab.queue()):
            assert time.monotonic() < deadline, "the relay never queued the message"
            time.sleep(0.1)
    finally:
        mail_lab.start("store")
    mail_lab.queue_action("flush")  # retry now rather than at the next scheduled attempt
    msg = mail_lab.mailbox("bob@example.test").wait_for(message_id=message_id, timeout=30)
    assert msg["Subject"] == "Welcome, Patient Bob"
