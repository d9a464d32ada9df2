"""The checks of one incoming message: SPF (pyspf, RFC 7208), each DKIM signature and
the ARC chain (dkimpy, RFC 6376, RFC 8617), DMARC (``dmarc``, RFC 7489), and the
Authentication-Results header that reports them (authres, RFC 8601)."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import getaddresses

import authres
import authres.arc
import authres.dmarc
import dkim
import dns.exception
import dns.resolver
import spf

from mxlab.nodes.mailauth import dmarc


@dataclass
class Verdict:
    header: bytes  # the Authentication-Results line, CRLF-terminated
    spf: str
    dkim: list[tuple[str, str]] = field(default_factory=list)  # (result, d=)
    arc: str = "none"
    dmarc: dmarc.Result | None = None
    action: str = "accept"  # accept, quarantine, reject: the DMARC policy honoured

    @property
    def domain(self) -> str:
        return self.dmarc.domain if self.dmarc else ""

    @property
    def reply(self) -> str:
        """The SMTP refusal of a message DMARC rejects (RFC 7489 §6.7)."""
        return f"550 5.7.1 Email rejected per DMARC policy for {self.domain}"


def use_lab_dns(host: str, port: int) -> None:
    """Point dnspython's default resolver, which pyspf and dkimpy ask, at the lab DNS
    (one relay per process)."""
    current = dns.resolver.default_resolver
    if current is not None and current.nameservers == [host] and current.port == port:
        return
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    resolver.lifetime = 5.0
    dns.resolver.default_resolver = resolver


def txt(name: str) -> list[str]:
    """TXT strings of ``name`` joined per record (RFC 7208 §3.3); [] when none."""
    try:
        answer = dns.resolver.resolve(name, "TXT", raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers, dns.exception.Timeout):
        return []
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def from_domains(message: bytes) -> list[str]:
    """The RFC5322.From domains (RFC 7489 §6.6.1)."""
    headers, _ = dkim.rfc822_parse(message)
    values = [v.decode("utf-8", "replace") for n, v in headers if n.lower() == b"from"]
    return [_domain(a) for _, a in getaddresses(values) if "@" in a]


def check_dkim(message: bytes) -> list[tuple[str, str, str]]:
    """Each DKIM-Signature's (result, d=, s=), newest first (RFC 6376 §6)."""
    headers, _ = dkim.rfc822_parse(message)
    sigs = [v for n, v in headers if n.lower() == b"dkim-signature"]
    verifier = dkim.DKIM(message)
    out = []
    for idx, value in enumerate(sigs):
        try:
            tags = dkim.util.parse_tag_value(value)
        except dkim.util.InvalidTagValueList:
            out.append(("permerror", "", ""))
            continue
        d = tags.get(b"d", b"").decode("ascii", "replace")
        s = tags.get(b"s", b"").decode("ascii", "replace")
        try:
            result = "pass" if verifier.verify(idx=idx) else "fail"
        except dkim.DnsTimeoutError:
            result = "temperror"
        except dkim.ValidationError:  # a body hash or signature that does not match
            result = "fail"
        except dkim.DKIMException:  # no key at the selector, a bad key or tag
            result = "permerror"
        out.append((result, d, s))
    return out


def check_arc(message: bytes) -> str:
    """The chain validation status of the ARC sets a forwarder added (RFC 8617 §5.2)."""
    if b"arc-seal:" not in message.split(b"\r\n\r\n", 1)[0].lower():
        return "none"
    try:
        cv, _, _ = dkim.arc_verify(message)
    except dkim.DKIMException:
        return "fail"
    return (cv or b"none").decode()


def check(message: bytes, *, ip: str, helo: str, mail_from: str, authserv_id: str) -> Verdict:
    """All checks, the header, and what DMARC asks to do; a valid ARC chain overrides a
    DMARC failure (RFC 7489 §6.7 local policy, as RFC 8617 §7.2 suggests)."""
    spf_result, _ = spf.check2(i=ip, s=mail_from, h=helo)  # "" sender: HELO (§2.4)
    spf_domain = _domain(mail_from) if mail_from else helo.lower()
    sigs = check_dkim(message)
    arc = check_arc(message)
    froms = from_domains(message)
    result = None
    if len(set(froms)) == 1:  # §6.6.1: none or several From domains are not evaluated
        pairs = [(r, d) for r, d, _ in sigs]
        result = dmarc.evaluate(froms[0], (spf_result, spf_domain), pairs, txt)
    results: list[authres.AuthenticationResult] = [
        authres.SPFAuthenticationResult(
            result=spf_result,
            smtp_mailfrom=mail_from or None,
            smtp_helo=None if mail_from else helo,
        )
    ]
    results += [
        authres.DKIMAuthenticationResult(result=r, header_d=d or None, header_s=s or None)
        for r, d, s in sigs
    ] or [authres.DKIMAuthenticationResult(result="none")]
    if arc != "none":
        results.append(authres.arc.ARCAuthenticationResult(result=arc))
    action = "accept"
    if result is not None:
        comment = f"p={result.policy}"
        if result.result == "fail" and result.policy != "none":
            if arc == "pass":
                comment += "; overridden by arc"
            else:
                action = result.policy
        results.append(
            authres.dmarc.DMARCAuthenticationResult(
                result=result.result,
                result_comment=comment if result.result != "none" else None,
                header_from=result.domain,
            )
        )
    header = str(authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results))
    return Verdict(
        header=header.encode("utf-8", "replace") + b"\r\n",
        spf=spf_result,
        dkim=[(r, d) for r, d, _ in sigs],
        arc=arc,
        dmarc=result,
        action=action,
    )
