"""SPF and DMARC evaluation against the RFCs' own examples: RFC 7208 Appendix A's zone
served by the lab's DNS node and asked through the relay's SPF path (pyspf over
dnspython); RFC 7489's alignment examples (Appendix B.1), records (B.2) and policy
discovery (§6.6.3) through ``mxlab.nodes.mailauth.dmarc``, offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mxlab.nodes.config import DnsRecord
from mxlab.nodes.mailauth import dmarc, verify
from tests.test_dns_support import DnsNode, _zone

# RFC 7208 Appendix A: the sample zone (the SPF record at example.com varies per case)
RFC7208_ZONE = """
example.com.          MX     10 mail-a.example.com.
example.com.          MX     20 mail-b.example.com.
example.com.          A      192.0.2.10
example.com.          A      192.0.2.11
amy.example.com.      A      192.0.2.65
bob.example.com.      A      192.0.2.66
mail-a.example.com.   A      192.0.2.129
mail-b.example.com.   A      192.0.2.130
www.example.com.      CNAME  example.com.
"""
RFC7208_ORG = """
example.org.          MX     10 mail-c.example.org.
mail-c.example.org.   A      192.0.2.140
"""
RFC7208_PTR = """
10.2.0.192.in-addr.arpa.   PTR  example.com.
11.2.0.192.in-addr.arpa.   PTR  example.com.
65.2.0.192.in-addr.arpa.   PTR  amy.example.com.
66.2.0.192.in-addr.arpa.   PTR  bob.example.com.
129.2.0.192.in-addr.arpa.  PTR  mail-a.example.com.
130.2.0.192.in-addr.arpa.  PTR  mail-b.example.com.
140.2.0.192.in-addr.arpa.  PTR  mail-c.example.org.
"""
# RFC 7208 Appendix A.1: each policy at example.com, and what clients get
A1_CASES = [
    ("v=spf1 +all", {"192.0.2.129": "pass", "198.51.100.7": "pass"}),
    ("v=spf1 a -all", {"192.0.2.10": "pass", "192.0.2.11": "pass", "192.0.2.65": "fail"}),
    ("v=spf1 a:example.org -all", {"192.0.2.10": "fail"}),
    ("v=spf1 mx -all", {"192.0.2.129": "pass", "192.0.2.130": "pass", "192.0.2.10": "fail"}),
    ("v=spf1 mx:example.org -all", {"192.0.2.140": "pass", "192.0.2.129": "fail"}),
    (
        "v=spf1 mx mx:example.org -all",
        {"192.0.2.129": "pass", "192.0.2.130": "pass", "192.0.2.140": "pass"},
    ),
    ("v=spf1 mx/30 mx:example.org/30 -all", {"192.0.2.131": "pass", "192.0.2.143": "pass"}),
    ("v=spf1 ptr -all", {"192.0.2.65": "pass", "192.0.2.140": "fail"}),
    ("v=spf1 ip4:192.0.2.128/28 -all", {"192.0.2.65": "fail", "192.0.2.129": "pass"}),
]


def _rows(text: str) -> list[DnsRecord]:
    out = []
    for line in text.strip().splitlines():
        name, rtype, rdata = line.split(None, 2)
        out.append(DnsRecord(name=name, type=rtype, rdata=rdata.strip()))
    return out


pytestmark = pytest.mark.usefixtures("dns_resolver_restored")


@pytest.fixture(scope="module")
def spf_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DnsNode]]:
    """One DNS node per A.1 policy (the policy sits at example.com, as in the RFC)."""
    nodes = []
    for i, (policy, _) in enumerate(A1_CASES):
        zones = [
            _zone("example.com.", *_rows(RFC7208_ZONE), _rows(f'example.com. TXT "{policy}"')[0]),
            _zone("example.org.", *_rows(RFC7208_ORG)),
            _zone("2.0.192.in-addr.arpa.", *_rows(RFC7208_PTR)),
        ]
        nodes.append(DnsNode(Path(tmp_path_factory.mktemp(f"spf{i}")), zones))
    yield nodes
    for node in nodes:
        node.stop()


@pytest.mark.parametrize("case", range(len(A1_CASES)), ids=[c[0] for c in A1_CASES])
def test_spf_rfc7208_appendix_a1(spf_dns: list[DnsNode], case: int) -> None:
    import spf

    node = spf_dns[case]
    verify.use_lab_dns(node.address, node.port)
    policy, expected = A1_CASES[case]
    got = {ip: spf.check2(i=ip, s="user@example.com", h="mail.example.com")[0] for ip in expected}
    assert got == expected, policy


def _txt(records: dict[str, list[str]]) -> dmarc.TxtLookup:
    return lambda name: records.get(name, [])


# RFC 7489 Appendix B.2.1: the simplest record, at the domain itself
B21 = {"_dmarc.example.com": ["v=DMARC1; p=none; rua=mailto:dmarc-feedback@example.com"]}


@pytest.mark.parametrize(
    ("mail_from", "strict", "relaxed"),
    [  # RFC 7489 Appendix B.1.1: SPF identifier alignment, From: sender@example.com
        ("example.com", True, True),
        ("child.example.com", False, True),
        ("example.org", False, False),
    ],
)
def test_dmarc_rfc7489_b11_spf_alignment(mail_from: str, strict: bool, relaxed: bool) -> None:
    assert dmarc.aligned(mail_from, "example.com", "s") is strict
    assert dmarc.aligned(mail_from, "example.com", "r") is relaxed
    records = {"_dmarc.example.com": ["v=DMARC1; p=reject; aspf=s"]}
    got = dmarc.evaluate("example.com", ("pass", mail_from), [], _txt(records))
    assert got.result == ("pass" if strict else "fail") and got.policy == "reject"
    got = dmarc.evaluate("example.com", ("pass", mail_from), [], _txt(B21))
    assert got.result == ("pass" if relaxed else "fail")


@pytest.mark.parametrize(
    ("d", "strict", "relaxed"),
    [  # RFC 7489 Appendix B.1.2: DKIM identifier alignment, From: sender@example.com
        ("example.com", True, True),
        ("child.example.com", False, True),
        ("example.org", False, False),
    ],
)
def test_dmarc_rfc7489_b12_dkim_alignment(d: str, strict: bool, relaxed: bool) -> None:
    records = {"_dmarc.example.com": ["v=DMARC1; p=quarantine; adkim=s"]}
    got = dmarc.evaluate("example.com", ("fail", "example.com"), [("pass", d)], _txt(records))
    assert got.result == ("pass" if strict else "fail")
    got = dmarc.evaluate("example.com", ("none", ""), [("pass", d)], _txt(B21))
    assert got.result == ("pass" if relaxed else "fail")
    # a signature that does not verify aligns nothing
    got = dmarc.evaluate("example.com", ("none", ""), [("fail", "example.com")], _txt(B21))
    assert got.result == "fail" and got.policy == "none"


def test_dmarc_rfc7489_b2_records_and_discovery() -> None:
    # B.2.3: quarantine, with reporting tags the lab ignores
    b23 = "v=DMARC1; p=quarantine; rua=mailto:dmarc-feedback@example.com; fo=1"
    policy = dmarc.parse_record(b23)
    assert policy is not None
    assert policy == dmarc.Policy(p="quarantine", sp="quarantine", adkim="r", aspf="r")
    # §6.6.3: no record at the From domain: the organizational domain's, with its sp=
    org = {"_dmarc.example.com": ["v=DMARC1; p=none; sp=reject"]}
    got = dmarc.evaluate("mail.example.com", ("fail", "x.example.net"), [], _txt(org))
    assert (got.result, got.policy) == ("fail", "reject")
    # a record at the From domain wins over the organizational one
    both = org | {"_dmarc.mail.example.com": ["v=DMARC1; p=quarantine"]}
    assert dmarc.evaluate("mail.example.com", ("none", ""), [], _txt(both)).policy == "quarantine"
    # §6.6.3: no record, two records, or v= not first: no DMARC policy
    assert dmarc.evaluate("example.com", ("none", ""), [], _txt({})).result == "none"
    two = {"_dmarc.example.com": ["v=DMARC1; p=none", "v=DMARC1; p=reject"]}
    assert dmarc.evaluate("example.com", ("none", ""), [], _txt(two)).result == "none"
    assert dmarc.parse_record("p=reject; v=DMARC1") is None
    assert dmarc.parse_record("v=DMARC1; p=bogus") is None
    # §3.2: the lab's .test names have their own organizational domains
    assert dmarc.organizational_domain("mx-alpha.alpha.test") == "alpha.test"
    assert not dmarc.aligned("beta.test", "alpha.test", "r")
