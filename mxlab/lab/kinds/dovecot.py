"""Dovecot as a store: IMAP, POP3 and LMTP, configured from the store's node config
(StoreNodeConfig): its domains' users with the plan's hashes (``{CRYPT}``: crypt(3)
reads our ``$7$`` scrypt), maildirs in the node directory, TLS from the lab CA
(implicit on imaps and pop3s), no plaintext login before TLS unless the lab allows it.
Its log goes to stderr, read back for ``trace``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from mxlab.lab.kinds.debian import DebianKind
from mxlab.lab.plan import LabPlan, NodePlan
from mxlab.nodes.config import StoreNodeConfig

MAIL_UID = 65534  # nobody: Dovecot runs no mail process as root


def dovecot_conf(cfg: StoreNodeConfig, root: str) -> str:
    at = cfg.address
    plaintext = "no" if not cfg.allow_plaintext_auth else "yes"
    ssl = "no"
    tls_listeners = {"imap": "", "pop3": ""}
    if cfg.tls is not None:
        ssl = f"yes\nssl_cert = <{root}/tls/cert.pem\nssl_key = <{root}/tls/key.pem"
        if cfg.imaps_port:
            tls_listeners["imap"] = (
                f"  inet_listener imaps {{\n    address = {at}\n    port = {cfg.imaps_port}\n"
                "    ssl = yes\n  }\n"
            )
        if cfg.pop3s_port:
            tls_listeners["pop3"] = (
                f"  inet_listener pop3s {{\n    address = {at}\n    port = {cfg.pop3s_port}\n"
                "    ssl = yes\n  }\n"
            )
    postmaster = f"postmaster@{cfg.domains[0]}" if cfg.domains else "postmaster@localhost"
    return f"""\
# Dovecot for store {cfg.node} ({cfg.fqdn}), generated from its node config
protocols = imap pop3 lmtp
listen = {at}
hostname = {cfg.fqdn}
base_dir = {root}/run
state_dir = {root}/lib
log_path = /dev/stderr
log_timestamp = "%Y-%m-%dT%H:%M:%S "
ssl = {ssl}
disable_plaintext_auth = {"no" if plaintext == "yes" else "yes"}
auth_mechanisms = plain login
auth_username_format = %Lu
auth_failure_delay = {math.ceil(cfg.login_limits.failure_delay)} secs
mail_location = maildir:{root}/mail/%d/%n
mail_fsync = always
first_valid_uid = {MAIL_UID}
pop3_uidl_format = %08Xu%08Xv
namespace inbox {{
  inbox = yes
  mailbox Junk {{
    auto = create
    special_use = \\Junk
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=CRYPT username_format=%Lu {root}/dovecot/users
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_UID} home={root}/mail/%d/%n
}}
service auth {{
  user = root
}}
service imap-login {{
  inet_listener imap {{
    address = {at}
    port = {cfg.imap_port}
  }}
{tls_listeners["imap"]}}}
service pop3-login {{
  inet_listener pop3 {{
    address = {at}
    port = {cfg.pop3_port}
  }}
{tls_listeners["pop3"]}}}
service lmtp {{
  inet_listener lmtp {{
    address = {at}
    port = {cfg.lmtp_port}
  }}
}}
protocol lmtp {{
  postmaster_address = {postmaster}
}}
"""


def users(cfg: StoreNodeConfig) -> str:
    return "".join(f"{a.lower()}:{{CRYPT}}{u.password_hash}\n" for a, u in cfg.users.items())


class DovecotKind(DebianKind):
    name = "dovecot"
    process_marker = b"dovecot"
    programs = ("dovecot",)
    files = ("/usr/lib/dovecot/imap", "/usr/lib/dovecot/pop3", "/usr/lib/dovecot/lmtp")

    def write_config(self, plan: LabPlan, node: NodePlan) -> None:
        cfg = node.config
        assert isinstance(cfg, StoreNodeConfig)
        root = self.root(plan, node)
        files = {"dovecot/dovecot.conf": dovecot_conf(cfg, root), "dovecot/users": users(cfg)}
        self.write_files(plan, node, files)

    def argv(self, plan: LabPlan, node: NodePlan) -> list[str]:
        root = self.root(plan, node)
        script = (
            f"mkdir -p {root}/mail && chown {MAIL_UID}:{MAIL_UID} {root}/mail || exit 1; "
            # a killed node's master.pid may name another process of the new container
            f"rm -f {root}/run/master.pid; "
            f"exec dovecot -F -c {root}/dovecot/dovecot.conf"
        )
        return self.run(plan, node, script)

    def events(self, node: NodePlan, log: bytes) -> list[dict[str, Any]]:
        return dovecot_events(node.name, log)


# "2026-12-01T03:40:00 lmtp(bob@beta.test)<12><x>: msgid=<id@x>: saved mail to INBOX"
_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) (?P<svc>[\w-]+)(?:\((?P<user>[^)]*)\))?"
)
_SAVED = re.compile(r"msgid=<?(?P<mid>[^>:\s]*)>?: saved mail to (?P<box>\S+)")
_LOGIN = re.compile(
    r"(?P<svc>imap|pop3)-login: (?P<what>Login|Disconnected|Aborted login)"
    r"[^u]*user=<(?P<user>[^>]*)>"
)


def dovecot_events(node: str, log: bytes) -> list[dict[str, Any]]:
    """Dovecot's log as our events: ``delivered`` (LMTP saved a message, with its
    Message-ID), ``imap_login``/``pop3_login`` (ok or not)."""
    events: list[dict[str, Any]] = []
    for raw in log.decode(errors="replace").splitlines():
        m = _LINE.match(raw)
        if m is None:
            continue
        stamp = datetime.fromisoformat(m["ts"]).replace(tzinfo=UTC)  # it runs with TZ=UTC
        base = {"ts": stamp.timestamp(), "node": node}
        saved = _SAVED.search(raw)
        if m["svc"] == "lmtp" and saved:
            events.append(
                base | {"event": "delivered", "message_id": saved["mid"], "to": m["user"] or "",
                        "folder": saved["box"]}
            )  # fmt: skip
            continue
        login = _LOGIN.search(raw)
        if login:
            events.append(
                base | {"event": f"{login['svc']}_login", "user": login["user"],
                        "ok": login["what"] == "Login"}
            )  # fmt: skip
    return events


KIND = DovecotKind()
