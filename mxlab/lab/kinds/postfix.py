"""Postfix as a relay: configured from the relay's node config (RelayNodeConfig).

Final for its local domains (LMTP to the store, users from the config), backup MX for
its relay domains (Postfix drops MX hosts not better than itself), everything else by
MX through the lab DNS or to the next hop (``relayhost``); submission on 587 and 465
with AUTH through a Dovecot auth instance in the same node (Postfix's SASL; the
hashes are the plan's, which crypt(3) reads), no AUTH before TLS unless the lab allows
it. Its log goes to stdout (``maillog_file``), read back for ``trace``.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from datetime import UTC, datetime
from typing import Any

from mxlab.lab import labdir
from mxlab.lab.kinds.debian import DebianKind
from mxlab.lab.plan import LabPlan, NodePlan
from mxlab.nodes.config import RelayNodeConfig


def _seconds(value: float) -> str:
    return f"{max(1, math.ceil(value))}s"


def main_cf(cfg: RelayNodeConfig, root: str, local: bool) -> dict[str, str]:
    """main.cf, parameter by parameter, from the relay's config."""
    q = cfg.queue
    domains = [*cfg.local_domains, *cfg.relay_domains]
    tls_auth_only = "no" if cfg.allow_plaintext_auth else "yes"
    main = {
        "compatibility_level": "3.6",
        "myhostname": cfg.fqdn,
        "mydomain": cfg.fqdn.partition(".")[2],
        "myorigin": "$myhostname",
        "mydestination": "",
        "queue_directory": f"{root}/spool",
        "data_directory": f"{root}/data",
        "inet_protocols": "ipv4",
        "mynetworks": " ".join([cfg.address, *cfg.trusted_clients]),
        "relay_domains": " ".join(domains),
        "transport_maps": f"texthash:{root}/postfix/transport",
        "relay_recipient_maps": f"texthash:{root}/postfix/recipients",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "biff": "no",
        "append_dot_mydomain": "no",
        "relayhost": f"[{cfg.next_hop.host}]:{cfg.next_hop.port}" if cfg.next_hop else "",
        "smtp_tcp_port": str(cfg.remote_smtp_port),
        "message_size_limit": str(cfg.max_message_size),
        "hopcount_limit": str(cfg.max_received_headers),
        # the lab's queue policy: Postfix's own timers, scaled the same way
        "minimal_backoff_time": _seconds(q.retry_initial),
        "maximal_backoff_time": _seconds(q.retry_max),
        "queue_run_delay": _seconds(q.retry_initial),
        "maximal_queue_lifetime": _seconds(q.lifetime),
        "bounce_queue_lifetime": _seconds(q.lifetime),
        "delay_warning_time": _seconds(q.delay_warning) if q.delay_warning else "0h",
        "default_destination_concurrency_limit": str(q.concurrency_per_destination),
        "smtpd_relay_restrictions": (
            "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"
        ),
        "smtpd_sender_login_maps": f"texthash:{root}/postfix/senders",
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": f"{root}/sasl/auth-postfix",
        "smtpd_tls_auth_only": tls_auth_only,
        "maillog_file": "/dev/stdout",
    }
    if cfg.tls is not None:  # RFC 3207 STARTTLS both ways, the lab CA trusted
        main |= {
            "smtpd_tls_cert_file": f"{root}/tls/cert.pem",
            "smtpd_tls_key_file": f"{root}/tls/key.pem",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_received_header": "no",
            "smtp_tls_security_level": "may",
            "smtp_tls_CAfile": f"{root}/tls/ca.pem",
            "lmtp_tls_security_level": "none",
        }
    if local:  # lo carries 127.0.0.1/8 only: listeners name their address in master.cf
        main |= {
            "inet_interfaces": "loopback-only",
            "proxy_interfaces": cfg.address,  # its own address, to spot MX loops
            "smtp_bind_address": cfg.address,
        }
    else:
        main["inet_interfaces"] = "all"
    return main


_SERVICES = """\
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
  -o syslog_name=postfix/$service_name
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
lmtp       unix  - - n -  - lmtp
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


def master_cf(cfg: RelayNodeConfig) -> str:
    """master.cf: SMTP, submission (RFC 6409) and submissions (RFC 8314) on the node's
    address, chroot off (a private queue); then Postfix's own services."""
    at = cfg.address
    auth = [
        "-o smtpd_sasl_auth_enable=yes",
        "-o smtpd_client_restrictions=permit_sasl_authenticated,reject",
        "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject",
        "-o smtpd_sender_restrictions=reject_sender_login_mismatch",
    ]
    level = "may" if cfg.allow_plaintext_auth else "encrypt"
    lines = [f"{at}:{cfg.smtp_port} inet n - n - - smtpd"]
    lines += [f"{at}:{cfg.submission_port} inet n - n - - smtpd"]
    lines += [f"  -o syslog_name=postfix/submission -o smtpd_tls_security_level={level}"]
    lines += [f"  {o}" for o in auth]
    if cfg.submissions_port and cfg.tls is not None:
        lines += [f"{at}:{cfg.submissions_port} inet n - n - - smtpd"]
        lines += ["  -o syslog_name=postfix/submissions -o smtpd_tls_wrappermode=yes"]
        lines += [f"  {o}" for o in auth]
    return "\n".join(lines) + "\n" + _SERVICES


def transport(cfg: RelayNodeConfig, outside: dict[str, str] | None = None) -> str:
    """Local domains go to their store by LMTP (RFC 2033); ``outside`` (domain -> its
    MX host's address) those whose MX is a server outside the lab on a port of its own."""
    lines = [
        f"{dom} lmtp:inet:[{d.lmtp.host}]:{d.lmtp.port}" for dom, d in cfg.local_domains.items()
    ]
    if cfg.next_hop is None:  # else the next hop takes them (relayhost)
        lines += [f"{dom} smtp:[{a}]:{cfg.smtp_ports[a]}" for dom, a in (outside or {}).items()]
    return "".join(f"{line}\n" for line in lines)


def outside_mx(plan: LabPlan, cfg: RelayNodeConfig) -> dict[str, str]:
    """Domains whose best MX is an external node listening on a port of its own."""
    found = {}
    for dom, d in plan.domains.items():
        best = plan.nodes[d.mx[0][1]]
        if best.kind == "external" and best.address in cfg.smtp_ports:
            found[dom] = best.address
    return found


def recipients(cfg: RelayNodeConfig) -> str:
    """The users of every domain it takes mail for: others are refused at RCPT (550)."""
    domains = {d: x.users for d, x in cfg.local_domains.items()}
    domains |= {d: x.users for d, x in cfg.relay_domains.items()}
    return "".join(f"{u}@{d} OK\n" for d, users in domains.items() for u in users)


def senders(cfg: RelayNodeConfig) -> str:
    """Who may send as whom after AUTH (smtpd_sender_login_maps): each user as itself
    and as the aliases the topology gives it (send_as)."""
    owners = {a.lower(): [a.lower()] for a in cfg.auth_users}
    for login, aliases in cfg.sender_aliases.items():
        for alias in aliases:
            owners.setdefault(alias.lower(), []).append(login.lower())
    return "".join(f"{a} {','.join(logins)}\n" for a, logins in owners.items())


def sasl_conf(cfg: RelayNodeConfig, root: str) -> str:
    """A Dovecot that only answers Postfix's SASL questions (no mail protocols)."""
    return f"""\
# Dovecot as Postfix's SASL server only: the submission users and their hashes
protocols =
base_dir = {root}/sasl
state_dir = {root}/sasl-state
log_path = /dev/stderr
ssl = no
auth_mechanisms = plain login
auth_username_format = %Lu
passdb {{
  driver = passwd-file
  args = scheme=CRYPT username_format=%Lu {root}/postfix/sasl-users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534
}}
service auth {{
  user = root
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
"""


def sasl_users(cfg: RelayNodeConfig) -> str:
    return "".join(f"{a.lower()}:{{CRYPT}}{h}\n" for a, h in cfg.auth_users.items())


class PostfixKind(DebianKind):
    name = "postfix"
    process_marker = b"postfix"
    programs = ("postfix", "dovecot")
    resolves = True

    def write_config(self, plan: LabPlan, node: NodePlan) -> None:
        cfg = node.config
        assert isinstance(cfg, RelayNodeConfig)
        root = self.root(plan, node)
        main = main_cf(cfg, root, plan.runtime == "local")
        self.write_files(
            plan,
            node,
            {
                "postfix/main.cf": "".join(f"{k} = {v}\n" for k, v in main.items()),
                "postfix/master.cf": master_cf(cfg),
                "postfix/transport": transport(cfg, outside_mx(plan, cfg)),
                "postfix/recipients": recipients(cfg),
                "postfix/senders": senders(cfg),
                "postfix/sasl.conf": sasl_conf(cfg, root),
                "postfix/sasl-users": sasl_users(cfg),
            },
        )

    def argv(self, plan: LabPlan, node: NodePlan) -> list[str]:
        root = self.root(plan, node)
        script = (
            f"mkdir -p {root}/spool {root}/data && chown postfix {root}/data || exit 1; "
            # A killed node leaves Dovecot's master.pid: in a new container its pid may
            # be another process's, and Dovecot would refuse to start ("already running")
            f"rm -f {root}/sasl/master.pid; "
            # Dovecot answers Postfix's SASL. This shell is the node's first process (of
            # its container or PID namespace): when it ends, both end.
            f"dovecot -F -c {root}/postfix/sasl.conf & postfix -c {root}/postfix start-fg & "
            f"trap 'postfix -c {root}/postfix stop; exit 0' TERM INT; wait $!"
        )
        return self.run(plan, node, script)

    def queued(self, plan: LabPlan, node: NodePlan, message_id: str) -> bool:
        """In one of Postfix's queues: its queue files hold the message's headers."""
        spool = labdir.node_dir(plan, node.name) / "spool"
        wanted = message_id.encode()
        for queue in ("incoming", "active", "deferred", "hold"):
            for path in (spool / queue).rglob("*"):
                with contextlib.suppress(OSError):  # delivered while we looked
                    if path.is_file() and wanted in path.read_bytes():
                        return True
        return False

    def events(self, node: NodePlan, log: bytes) -> list[dict[str, Any]]:
        return postfix_events(node.name, log)


# maillog_file lines: "Dec  1 03:40:00 host postfix/smtp[123]: 4ABC: to=<...>, ..."
_LINE = re.compile(
    r"^(?P<ts>\w{3} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?) \S+ postfix/(?P<svc>[\w/-]+)\[\d+\]: "
    r"(?P<qid>[0-9A-F]{6,}): (?P<rest>.*)$"
)
_FIELD = re.compile(r"(\w+)=(<[^>]*>|[^,\s]+)")
_STATUS = {"sent": "delivered", "deferred": "deferred", "bounced": "bounced"}


def _timestamp(text: str) -> float:
    """Postfix's log stamps (UTC: the node runs with TZ=UTC) carry no year: this
    year's, or last year's if that would be in the future."""
    now = datetime.now(UTC)
    fmt = "%Y %b %d %H:%M:%S.%f" if "." in text else "%Y %b %d %H:%M:%S"
    stamp = datetime.strptime(f"{now.year} {text}", fmt).replace(tzinfo=UTC)
    if stamp.timestamp() > time.time() + 86400:
        stamp = stamp.replace(year=now.year - 1)
    return stamp.timestamp()


def postfix_events(node: str, log: bytes) -> list[dict[str, Any]]:
    """Postfix's log as our events: ``received`` (cleanup names the Message-ID),
    ``delivered``/``deferred``/``bounced`` per recipient (smtp, lmtp)."""
    events = []
    for raw in log.decode(errors="replace").splitlines():
        m = _LINE.match(raw)
        if m is None:
            continue
        fields = {k: v.strip("<>") for k, v in _FIELD.findall(m["rest"])}
        base = {"ts": _timestamp(m["ts"]), "node": node, "queue_id": m["qid"]}
        if m["svc"] == "cleanup" and "message-id" in m["rest"]:
            mid = m["rest"].split("message-id=", 1)[1].strip()
            events.append(base | {"event": "received", "message_id": mid.strip("<>")})
        elif "status" in fields and fields["status"] in _STATUS:
            reply = m["rest"].rpartition("(")[2].rstrip(")")
            events.append(
                base
                | {"event": _STATUS[fields["status"]], "to": fields.get("to", ""),
                   "hop": fields.get("relay", ""), "status": reply}
            )  # fmt: skip
    return events


KIND = PostfixKind()
