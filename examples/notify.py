"""A small application that sends mail the plainest way: ``smtplib``, STARTTLS and AUTH on
the submission port (587), settings from the environment as most web apps have them.

Nothing here knows about mxlab: the tests point ``SmtpSettings`` at a lab instead of a
real provider, and trust the lab's CA instead of the system's.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str
    password: str
    ca_file: str | None = None  # None: the system's trusted CAs
    sender: str | None = None  # None: the username

    @classmethod
    def from_env(cls) -> SmtpSettings:
        """SMTP_HOST, SMTP_PORT (587), SMTP_USERNAME, SMTP_PASSWORD, SMTP_CA_FILE."""
        return cls(
            os.environ["SMTP_HOST"],
            int(os.environ.get("SMTP_PORT", "587")),
            os.environ["SMTP_USERNAME"],
            os.environ["SMTP_PASSWORD"],
            os.environ.get("SMTP_CA_FILE"),
        )


def send(settings: SmtpSettings, to: str, subject: str, body: str, **headers: str) -> str:
    """Submit one message (STARTTLS before AUTH, as RFC 3207 and every provider ask);
    return its Message-ID. Refusals raise ``smtplib.SMTPException``."""
    msg = EmailMessage()
    msg["From"] = settings.sender or settings.username
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=(settings.sender or settings.username).split("@")[-1])
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    context = ssl.create_default_context(cafile=settings.ca_file)
    with smtplib.SMTP(settings.host, settings.port, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.login(settings.username, settings.password)
        smtp.send_message(msg)
    return str(msg["Message-ID"])


def send_welcome(settings: SmtpSettings, to: str, name: str) -> str:
    return send(settings, to, f"Welcome, {name}", f"Hello {name},\n\nyour account is ready.\n")


def send_password_reset(settings: SmtpSettings, to: str, token: str) -> str:
    link = f"https://app.example.test/reset?token={token}"
    body = f"Someone asked to reset your password. If it was you, open:\n\n{link}\n"
    return send(settings, to, "Reset your password", body, X_Reset_Token=token)
