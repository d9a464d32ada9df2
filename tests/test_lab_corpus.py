"""A corpus of malformed inputs, each run through the real `mxlab` command line: every one
exits 2 with exactly one line naming the file and the field, no traceback, nothing
started and nothing written (not even under MXLAB_HOME), and answers at once.

The inputs are data: ``CASES`` below, built from the shipped two-domains topology by
small edits, plus whole files (encodings, alias bombs, special paths). Most cases run the
console script's entry point in this process (cheap on two cores); those marked
``subprocess=True`` run `mxlab` as a real child process.
"""

# ruff: noqa: E501 - the corpus is a table, one case a line
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from .conftest import TOPOLOGIES

GOOD = (TOPOLOGIES / "two-domains.yaml").read_text()
DEADLINE = 10.0  # seconds: generous; every case is a parse and a few checks
BOMB_DEADLINE = 4.0  # the alias bomb took 79 s of CPU before expansion was bounded


@dataclass(frozen=True)
class Case:
    name: str
    content: str | bytes | None  # the file; None: validate ``path`` as it is
    field: str | None  # the field the line names; None: a mistake of the file as a whole
    expect: str  # a substring of the line
    kind: str = "topology"  # or "scenario": run with ``mxlab scenario run``
    path: str | None = None  # a path to give instead of a written file
    subprocess: bool = False  # run `mxlab` as a child process
    source: str | None = None  # the file the line names, if not the one given
    xfail: str | None = None  # a known defect outside validation, and where it lives
    args: tuple[str, ...] = ()  # any other command line; "{file}" stands for the file


def edit(old: str, new: str, base: str = GOOD) -> str:
    """The base topology with one edit; the edit must apply."""
    assert old in base, f"{old!r} not in the base topology"
    return base.replace(old, new, 1)


def add_node(spec: str) -> str:
    return edit("  store-beta:\n    kind: store\n", f"  store-beta:\n    kind: store\n{spec}")


def node_field(node: str, line: str) -> str:
    """Add ``line`` under the node's ``kind:``."""
    kinds = {"ns": "dns", "mx-alpha": "relay", "store-alpha": "store"}
    return edit(
        f"  {node}:\n    kind: {kinds[node]}\n", f"  {node}:\n    kind: {kinds[node]}\n{line}"
    )


def add_user(line: str) -> str:
    return edit("      carol: carol-secret\n", f"      carol: carol-secret\n      {line}\n")


def settings(body: str) -> str:
    return GOOD + "\nsettings:\n" + "".join(f"  {line}\n" for line in body.splitlines())


def checks(*steps: str) -> str:
    return GOOD + "".join(f"  - {s}\n" for s in steps)


def many_nodes(count: int, extra: str = "") -> str:
    nodes = "".join(f"  r{i}:\n    kind: relay\n" for i in range(count))
    return add_node(nodes) + extra


SEND = "send: {id: hello, from: alice@alpha.test, to: [bob@beta.test, carol@alpha.test]}"


def scenario(*steps: str, head: str = "name: drill\ntopology: lab.yaml\n") -> str:
    return head + "steps:\n" + "".join(f"  - {s}\n" for s in steps)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{k}: &{k} [{', '.join([f'*{p}'] * 9)}]\n" for p, k in zip("abcdefgh", "bcdefghi", strict=True)
)  # 9**9 values from a few hundred bytes

# fmt: off
CASES = [
    # -- the file itself: encodings, size, special paths ---------------------------------
    Case("not utf-8", b"name: lab\xff\n", None, "not UTF-8", subprocess=True),
    Case("latin-1 comment", GOOD.replace("Two", "Tw\xf6").encode("latin-1"), None, "UTF-8"),
    Case("utf-16 with BOM", GOOD.encode("utf-16"), None, "UTF-16", subprocess=True),
    Case("utf-16-be without BOM", GOOD.encode("utf-16-be"), None, "UTF-16"),
    Case("utf-32", GOOD.encode("utf-32"), None, "not UTF-8 text"),
    Case("binary", b"\x7fELF\x02\x01\x01\x00\x00\x00", None, "binary"),
    Case("/dev/zero", None, None, "larger than 1 MiB", path="/dev/zero", subprocess=True),
    Case("over 1 MiB", GOOD + "#" + "x" * (1 << 20) + "\n", None, "larger than 1 MiB"),
    Case("a directory", None, None, "is a directory", path="."),
    Case("missing file", None, None, "no such file", path="nope.yaml"),
    Case("empty file", "", None, "the file is empty", subprocess=True),
    Case("only comments", "# nothing here\n", None, "the file is empty"),
    Case("a YAML list", "- name: lab\n", "(top level)", "a list, not a mapping"),
    Case("a YAML scalar", "two-domains\n", "(top level)", "not a mapping"),
    Case("a YAML null", "~\n", "(top level)", "not a mapping"),
    Case("alias bomb", BOMB, "f", "aliases expand", subprocess=True),
    Case("alias bomb in a field", GOOD + "bomb:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines()), "bomb.f", "aliases expand"),
    Case("recursive alias", "a: &a [*a]\n", "a[0]", "refers to itself"),
    Case("nested 40 deep", "a: " + "[" * 40 + "]" * 40 + "\n", "a[0][0]", "nested too deeply"),
    Case("nested 5000 deep", "a: " + "[" * 5000 + "]" * 5000 + "\n", None, "nested too deeply"),
    Case("unclosed bracket", edit("  mx-beta:\n", "  mx-beta: [\n"), None, "YAML syntax"),
    Case("tab indentation", edit("    kind: dns", "\tkind: dns"), None, "YAML syntax"),
    Case("control character", edit("kind: dns", "kind: d\x1bns"), None, "cannot hold the character"),
    Case("two documents", GOOD + "---\nname: other\n", None, "YAML syntax"),
    Case("python tag", GOOD + "x: !!python/object/apply:os.system [true]\n", None, "YAML syntax"),
    Case("list as a key", GOOD + "? [a, b]\n: 1\n", "(top level)", "a key must be a plain name"),
    # -- top level ------------------------------------------------------------------------
    Case("no name", edit("name: two-domains\n", ""), "name", "required field is missing"),
    Case("bad lab name", edit("name: two-domains", "name: Two_Domains"), "name", "lowercase"),
    Case("lab name a number", edit("name: two-domains", "name: 42"), "name", "valid string"),
    Case("lab name too long", edit("name: two-domains", "name: " + "a" * 40), "name", "max 32"),
    Case("unknown top field", edit("nodes:", "nodez:"), "nodez", "did you mean 'nodes'"),
    Case("duplicate top key", GOOD + "name: again\n", "name", "duplicate key"),
    Case("no domains", GOOD.split("domains:")[0], "domains", "required field is missing"),
    Case("nodes a list", "name: x\nnodes: [ns]\ndomains: {}\n", "nodes", "where a mapping of fields belongs"),
    Case("nodes empty", "name: x\nnodes: {}\ndomains: {}\n", "nodes", "at least 1"),
    # -- nodes ----------------------------------------------------------------------------
    Case("kind typo", edit("kind: relay", "kind: rely"), "nodes.mx-alpha.kind", "did you mean 'relay'"),
    Case("node a bare kind", edit("  ns:\n    kind: dns\n", "  ns: dns\n"), "nodes.ns", "'dns' where a mapping of fields belongs"),
    Case("settings a number", settings("").rstrip() + " 5\n", "settings", "5 where a mapping"),
    Case("kind missing", edit("  mx-alpha:\n    kind: relay\n", "  mx-alpha:\n    hostname: mx.alpha.test\n"), "nodes.mx-alpha.kind", "required"),
    Case("kind a list", edit("kind: dns", "kind: [dns]"), "nodes.ns.kind", "is not one of dns, relay, store"),
    Case("node field typo", node_field("mx-alpha", "    hostnme: mx.alpha.test\n"), "nodes.mx-alpha.hostnme", "did you mean 'hostname'"),
    Case("node colour", node_field("ns", "    colour: red\n"), "nodes.ns.colour", "unknown field"),
    Case("bad node name", add_node("  Bad_Node:\n    kind: relay\n"), "nodes.Bad_Node", "bad node name"),
    Case("node name too long", add_node(f"  {'n' * 33}:\n    kind: relay\n"), "nodes.nnn", "bad node name"),
    Case("two dns nodes", add_node("  ns2:\n    kind: dns\n"), "nodes", "exactly one node of kind dns"),
    Case("no dns node", edit("  ns:\n    kind: dns\n", ""), "nodes", "exactly one node of kind dns"),
    Case("next hop on a store", node_field("store-alpha", "    next_hop: mx-beta\n"), "nodes.store-alpha.next_hop", "only relays"),
    Case("next hop unknown", node_field("mx-alpha", "    next_hop: mx9\n"), "nodes.mx-alpha.next_hop", "no relay named 'mx9'"),
    Case("next hop itself", node_field("mx-alpha", "    next_hop: mx-alpha\n"), "nodes.mx-alpha.next_hop", "own next hop"),
    Case("next hop loop", edit("  mx-beta:\n    kind: relay\n", "  mx-beta:\n    kind: relay\n    next_hop: mx-alpha\n", node_field("mx-alpha", "    next_hop: mx-beta\n")), "nodes.mx-alpha.next_hop", "loop"),
    Case("hostname with a space", node_field("mx-alpha", "    hostname: mx alpha.alpha.test\n"), "nodes.mx-alpha.hostname", "not a host name"),
    Case("hostname outside the lab", node_field("mx-alpha", "    hostname: mail.example.org\n"), "nodes.mx-alpha.hostname", "outside the lab"),
    Case("same hostname twice", node_field("store-alpha", "    hostname: mx-alpha.alpha.test\n"), "nodes.store-alpha.hostname", "already the host name of node mx-alpha"),
    Case("same explicit hostnames", node_field("store-alpha", "    hostname: mail.alpha.test\n").replace("  mx-beta:\n    kind: relay\n", "  mx-beta:\n    kind: relay\n    hostname: mail.alpha.test\n"), "nodes.mx-beta.hostname", "already the host name"),
    Case("254 nodes", many_nodes(249), "nodes", "addresses for 253", subprocess=True),
    Case("too many for a pinned /28", many_nodes(10, "settings:\n  docker_subnet: 10.231.7.0/28\n"), "nodes", "addresses for 13"),
    # -- domains --------------------------------------------------------------------------
    Case("not a .test domain", edit("beta.test:", "beta.example:"), "domains.beta.example", "must end in .test"),
    Case("IDN domain", edit("beta.test:", "bücher.test:"), "domains.bücher.test", "xn--"),
    Case("uppercase domain", edit("beta.test:", "Beta.test:"), "domains.Beta.test", "lowercase"),
    Case("trailing dot", edit("beta.test:", "beta.test.:"), "domains.beta.test.", "not a domain name"),
    Case("leading hyphen", edit("beta.test:", "-beta.test:"), "domains.-beta.test", "not a domain name"),
    Case("emoji code in a field", edit("beta.test:", "b:smile:.test:"), "domains.b:smile:.test", "not a domain name"),
    Case("bare TLD", edit("beta.test:", "test:"), "domains.test", "not a domain name"),
    Case("label over 63", edit("beta.test:", "b" * 64 + ".test:"), "domains.bbbb", "not a domain name"),
    Case("domain over 253", edit("beta.test:", ("b" * 60 + ".") * 5 + "test:"), "domains.bbbb", "longer than 253"),
    Case("domain a list", edit("  beta.test:\n    store: store-beta\n", "  beta.test:\n    - store: store-beta\n"), None, "YAML syntax"),
    Case("store unknown", edit("store: store-beta", "store: store9"), "domains.beta.test.store", "no node named 'store9'"),
    Case("store is a relay", edit("store: store-beta", "store: mx-beta"), "domains.beta.test.store", "'mx-beta' is a relay"),
    Case("no store", edit("    store: store-beta\n", ""), "domains.beta.test.store", "required field is missing"),
    Case("mx a bare name", edit("      - node: mx-beta\n        preference: 10\n", "      - mx-beta\n"), "domains.beta.test.mx[0]", "write it as {node: ...}"),
    Case("mx empty", edit("    mx:\n      - node: mx-beta\n        preference: 10\n", "    mx: []\n"), "domains.beta.test.mx", "at least 1"),
    Case("mx is a store", edit("- node: mx-beta", "- node: store-beta"), "domains.beta.test.mx[0].node", "'store-beta' is a store, need a relay"),
    Case("mx unknown", edit("- node: mx-beta", "- node: mx9"), "domains.beta.test.mx[0].node", "no node named 'mx9'"),
    Case("mx preference negative", edit("preference: 10", "preference: -1"), "domains.alpha.test.mx[0].preference", "greater than or equal to 0"),
    Case("mx preference too big", edit("preference: 10", "preference: 70000"), "domains.alpha.test.mx[0].preference", "less than or equal to 65535"),
    Case("mx preference a word", edit("preference: 10", "preference: ten"), "domains.alpha.test.mx[0].preference", "valid integer"),
    Case("mx preference quoted", edit("preference: 10", "preference: '10'"), "domains.alpha.test.mx[0].preference", "valid integer"),
    Case("submission unknown", edit("    store: store-beta\n", "    store: store-beta\n    submission: mx9\n"), "domains.beta.test.submission", "no node named 'mx9'"),
    Case("no users", edit("      bob: bob-secret\n      dave: dave-secret\n", "      {}\n").replace("    users:\n      {}", "    users: {}"), "domains.beta.test.users", "at least 1"),
    # -- users and passwords --------------------------------------------------------------
    Case("user starts with a dot", add_user(".alice2: pw"), "domains.alpha.test.users..alice2", "start or end with '.'"),
    Case("user ends with a dot", add_user("alice.: pw"), "domains.alpha.test.users.alice.", "start or end with '.'"),
    Case("user with two dots", add_user("a..b: pw"), "domains.alpha.test.users.a..b", "'..'"),
    Case("user is two dots", add_user("'..': pw"), "domains.alpha.test.users...", "'..'"),
    Case("user with a space", add_user("'al ice': pw"), "domains.alpha.test.users.al ice", "bad user name"),
    Case("user with an at", add_user("'al@ice': pw"), "domains.alpha.test.users.al@ice", "bad user name"),
    Case("user not ASCII", add_user("élodie: pw"), "domains.alpha.test.users.élodie", "bad user name"),
    Case("user over 64", add_user("u" * 65 + ": pw"), "domains.alpha.test.users.uuu", "address too long"),
    Case("user a number", add_user("123: pw"), "domains.alpha.test.users", "valid string"),
    Case("duplicate user", add_user("alice: again"), "domains.alpha.test.users.alice", "duplicate key"),
    Case("duplicate user by case", add_user("Alice: again"), "domains.alpha.test.users.Alice", "case-blind"),
    Case("empty password", add_user("erin: ''"), "domains.alpha.test.users.erin", "empty password"),
    Case("null password", add_user("erin:"), "domains.alpha.test.users.erin", "valid string"),
    Case("number password", add_user("erin: 1234"), "domains.alpha.test.users.erin", "in quotes"),
    Case("boolean password", add_user("erin: yes"), "domains.alpha.test.users.erin", "valid string"),
    Case("password with LF", add_user('erin: "pass\\nword"'), "domains.alpha.test.users.erin", "control character"),
    Case("password with CR", add_user('erin: "pass\\rword"'), "domains.alpha.test.users.erin", "control character"),
    Case("password with NUL", add_user('erin: "pass\\0word"'), "domains.alpha.test.users.erin", "control character"),
    Case("password over a line", add_user("erin: " + "p" * 400), "domains.alpha.test.users.erin", "login line would not fit"),
    # -- records --------------------------------------------------------------------------
    Case("record type typo", edit("type: TXT", "type: TXTT"), "records[0].type", "did you mean 'TXT'"),
    Case("record outside the lab", edit("  - name: alpha.test\n", "  - name: example.org\n"), "records[0].name", "outside the lab"),
    Case("record that does not parse", edit("type: TXT\n    value: '\"v=spf1 mx -all\"'", "type: MX\n    value: ten mx"), "records[0].value", "zone file"),
    Case("CNAME beside other data", edit("records:", "records:\n  - {name: alpha.test, type: CNAME, value: x.test.}"), "records", "CNAME and other records"),
    Case("record name with a space", edit("  - name: alpha.test\n", "  - name: a b.alpha.test\n"), "records[0].name", "not a DNS name"),
    Case("record name with a semicolon", edit("  - name: alpha.test\n", "  - name: a;b.alpha.test\n"), "records[0].name", "not a DNS name"),
    Case("record ttl over 2^31", edit("    type: TXT\n", "    type: TXT\n    ttl: 4294967296\n"), "records[0].ttl", "less than or equal to 2147483647"),
    Case("record ttl negative", edit("    type: TXT\n", "    type: TXT\n    ttl: -5\n"), "records[0].ttl", "greater than or equal to 0"),
    Case("records a mapping", edit("records:\n  - name: alpha.test", "records:\n  name: alpha.test").replace("    type: TXT", "  type: TXT").replace("    value: '\"v", "  value: '\"v"), "records", "valid list"),
    # -- settings -------------------------------------------------------------------------
    Case("port over 65535", settings("ports:\n  smtp: 70000"), "settings.ports.smtp", "less than or equal to 65535"),
    Case("port 0", settings("ports:\n  smtp: 0"), "settings.ports.smtp", "greater than or equal to 1"),
    Case("port negative", settings("ports:\n  imap: -143"), "settings.ports.imap", "greater than or equal to 1"),
    Case("port quoted", settings("ports:\n  smtp: '25'"), "settings.ports.smtp", "valid integer"),
    Case("port a boolean", settings("ports:\n  smtp: true"), "settings.ports.smtp", "valid integer"),
    Case("port service typo", settings("ports:\n  smpt: 25"), "settings.ports.smpt", "did you mean 'smtp'"),
    Case("two services one port", settings("ports:\n  imap: 2000\n  pop3: 2000"), "settings.ports.pop3", "would both listen on port 2000"),
    Case("port of another service", settings("ports:\n  smtp: 587"), "settings.ports.smtp", "smtp and submission would both listen on port 587"),
    Case("port of an unprivileged default", settings("ports:\n  lmtp: 2143"), "settings.ports.lmtp", "imap"),
    Case("ports a list", settings("ports: [25, 587]"), "settings.ports", "[25, 587] where a mapping"),
    Case("settings typo", settings("queu:\n  lifetime: 60"), "settings.queu", "did you mean 'queue'"),
    Case("retry zero", settings("queue:\n  retry_initial: 0"), "settings.queue.retry_initial", "greater than 0"),
    Case("retry negative", settings("queue:\n  retry_max: -3"), "settings.queue.retry_max", "greater than 0"),
    Case("lifetime infinite", settings("queue:\n  lifetime: .inf"), "settings.queue.lifetime", "finite number"),
    Case("lifetime nan", settings("queue:\n  lifetime: .nan"), "settings.queue.lifetime", "finite number"),
    Case("lifetime a century", settings("queue:\n  lifetime: 3153600000"), "settings.queue.lifetime", "less than or equal"),
    Case("lifetime a word", settings("queue:\n  lifetime: forever"), "settings.queue.lifetime", "valid number"),
    Case("retry above its max", settings("queue:\n  retry_initial: 60\n  retry_max: 30"), "settings.queue.retry_initial", "more than retry_max"),
    Case("retry above the lifetime", settings("queue:\n  retry_initial: 20\n  lifetime: 10"), "settings.queue.retry_initial", "not before the lifetime"),
    Case("warning after bounce", settings("queue:\n  delay_warning: 400"), "settings.queue.delay_warning", "not before the lifetime"),
    Case("concurrency zero", settings("queue:\n  concurrency_per_destination: 0"), "settings.queue.concurrency_per_destination", "greater than or equal to 1"),
    Case("concurrency huge", settings("queue:\n  concurrency_per_destination: 1000"), "settings.queue.concurrency_per_destination", "less than or equal to 100"),
    Case("queue field typo", settings("queue:\n  retry_intial: 5"), "settings.queue.retry_intial", "did you mean 'retry_initial'"),
    Case("message size tiny", settings("max_message_size: 10"), "settings.max_message_size", "greater than 1024"),
    Case("message size huge", settings("max_message_size: 10000000000000"), "settings.max_message_size", "less than or equal"),
    Case("subnet not a subnet", settings("local_subnet: lo"), "settings.local_subnet", "does not appear to be"),
    Case("subnet host bits", settings("local_subnet: 127.1.2.3/24"), "settings.local_subnet", "host bits set"),
    Case("subnet too small", settings("local_subnet: 127.1.2.0/30"), "settings.local_subnet", "too small"),
    Case("local subnet off loopback", settings("local_subnet: 10.0.0.0/24"), "settings.local_subnet", "127.0.0.0/8"),
    Case("docker subnet IPv6", settings("docker_subnet: fd00::/64"), "settings.docker_subnet", "IPv4"),
    Case("plaintext auth a string", settings("allow_plaintext_auth: 'no'"), "settings.allow_plaintext_auth", "valid boolean"),
    # -- checks declared in the topology --------------------------------------------------
    Case("fault step among the checks", edit("checks:\n", "checks:\n  - stop: mx-beta\n"), "checks[0]", "stop is a fault step"),
    Case("check typo", checks("expect_delivred: {id: hello}"), "checks[5]", "did you mean 'expect_delivered'"),
    Case("send from a non-user", checks("send: {id: h2, from: mallory@alpha.test, to: [bob@beta.test]}"), "checks[5].from", "not a user of lab two-domains", subprocess=True),
    Case("send from another lab", checks("send: {id: h2, from: alice@gamma.test, to: [bob@beta.test]}"), "checks[5].from", "not a user"),
    Case("send from a bare name", checks("send: {id: h2, from: alice, to: [bob@beta.test]}"), "checks[5].from", "not a mail address"),
    Case("send to a bare domain", checks("send: {id: h2, from: alice@alpha.test, to: ['@beta.test']}"), "checks[5].to[0]", "not a mail address"),
    Case("send to a dotted local", checks("send: {id: h2, from: alice@alpha.test, to: [.bob@beta.test]}"), "checks[5].to[0]", "not a mail address"),
    Case("send to one string", checks("send: {id: h2, from: alice@alpha.test, to: bob@beta.test}"), "checks[5].to", "valid list"),
    Case("send to nobody", checks("send: {id: h2, from: alice@alpha.test, to: []}"), "checks[5].to", "at least 1"),
    Case("send id with a space", checks("send: {id: 'h 2', from: alice@alpha.test, to: [bob@beta.test]}"), "checks[5].id", "not like"),
    Case("send subject with CRLF", checks('send: {id: h2, from: alice@alpha.test, to: [bob@beta.test], subject: "a\\r\\nBcc: x@y.test"}'), "checks[5].subject", "CR or LF"),
    Case("send count zero", checks("send: {id: h2, from: alice@alpha.test, to: [bob@beta.test], count: 0}"), "checks[5].count", "greater than or equal to 1"),
    Case("send id twice", checks(SEND), "checks[5].id", "used twice"),
    Case("delivered never sent", checks("expect_delivered: {id: nope}"), "checks[5].id", "no message 'nope'"),
    Case("delivered to a stranger", checks("send: {id: h2, from: alice@alpha.test, to: [nobody@beta.test]}", "expect_delivered: {id: h2}"), "checks[6].id", "no mailbox"),
    Case("delivered within negative", checks("expect_delivered: {id: hello, within: -1}"), "checks[5].within", "greater than 0"),
    Case("delivered by typo", checks("expect_delivered: {id: hello, by: imap4}"), "checks[5].by", "did you mean 'imap'"),
    Case("open relay probe at a store", edit("expect_no_open_relay: {node: mx-alpha}", "expect_no_open_relay: {node: store-alpha}"), "checks[1].node", "is a store, need a relay"),
    Case("open relay probe unknown node", edit("expect_no_open_relay: {node: mx-alpha}", "expect_no_open_relay: {node: mx9}"), "checks[1].node", "no node named 'mx9'"),
    Case("reject code 200", edit("code: 550", "code: 200"), "checks[2].code", "greater than or equal to 400"),
    Case("reject from a non-user", edit("expect_reject: {from: alice@alpha.test", "expect_reject: {from: eve@alpha.test"), "checks[2].from", "not a user"),
    Case("dns type typo", edit("type: MX, answer", "type: MXX, answer"), "checks[0].type", "not a DNS type"),
    Case("dns rcode typo", checks("expect_dns: {name: beta.test, rcode: NXDOMIAN}"), "checks[5].rcode", "not an rcode"),
    Case("dns name label over 63", checks(f"expect_dns: {{name: {'x' * 70}.beta.test}}"), "checks[5].name", "not a DNS name"),
    Case("checks a mapping", GOOD.split("checks:")[0] + "checks: {send: x}\n", "checks", "valid list"),
    # -- scenario files (`mxlab scenario run`, refused before anything starts) -------------
    Case("scenario send from a non-user", scenario("send: {id: m1, from: mallory@beta.test, to: [alice@alpha.test]}"), "steps[0].from", "not a user", kind="scenario", subprocess=True),
    Case("scenario reject from a non-user", scenario("expect_reject: {from: eve@alpha.test, to: x@alpha.test, code: 550}"), "steps[0].from", "not a user", kind="scenario"),
    Case("scenario unauthenticated reject, no relay", scenario("expect_reject: {from: eve@else.test, to: bob@beta.test, code: 554, auth: false}"), "steps[0].from", "give the relay to talk to as node", kind="scenario"),
    Case("scenario send to no address", scenario("send: {id: m1, from: alice@alpha.test, to: [bob]}"), "steps[0].to[0]", "not a mail address", kind="scenario"),
    Case("scenario delivered to a stranger", scenario("send: {id: m1, from: alice@alpha.test, to: [nobody@beta.test]}", "expect_delivered: {id: m1}"), "steps[1].id", "no mailbox", kind="scenario"),
    Case("scenario topology missing", scenario("stop: mx-beta", head="name: drill\ntopology: nowhere.yaml\n"), "topology", "no such file", kind="scenario"),
    Case("scenario topology a directory", scenario("stop: mx-beta", head="name: drill\ntopology: .\n"), "topology", "is a directory", kind="scenario"),
    Case("scenario without topology", scenario("stop: mx-beta", head="name: drill\n"), "topology", "required field is missing", kind="scenario"),
    Case("scenario without steps", "name: drill\ntopology: lab.yaml\nsteps: []\n", "steps", "at least 1", kind="scenario"),
    Case("scenario steps a string", "name: drill\ntopology: lab.yaml\nsteps: stop\n", "steps", "valid list", kind="scenario"),
    Case("scenario step typo", scenario("sotp: mx-beta"), "steps[0]", "did you mean 'stop'", kind="scenario"),
    Case("scenario unknown node", scenario("kill: mx9"), "steps[0].node", "no node named 'mx9'", kind="scenario"),
    Case("scenario queued at a store", scenario(SEND, "expect_queued: {id: hello, node: store-beta}"), "steps[1].node", "need a relay", kind="scenario"),
    Case("scenario impair delay spaced", scenario("impair: {node: mx-beta, delay: 100 ms}"), "steps[0].delay", "not like 100ms", kind="scenario"),
    Case("scenario impair loss over 100", scenario("impair: {node: mx-beta, loss: 150%}"), "steps[0].loss", "0-100%", kind="scenario"),
    Case("scenario impair rate word", scenario("impair: {node: mx-beta, rate: fast}"), "steps[0].rate", "1mbit", kind="scenario"),
    Case("scenario jitter alone", scenario("impair: {node: mx-beta, jitter: 10ms}"), "steps[0]", "jitter needs a delay", kind="scenario"),
    Case("scenario impair nothing", scenario("impair: {node: mx-beta}"), "steps[0]", "give a delay, loss or rate", kind="scenario"),
    Case("scenario dns fault outside the lab", scenario("dns_fail: {name: example.org}"), "steps[0].name", "not served by the lab's DNS", kind="scenario"),
    Case("scenario route through a stranger", scenario(SEND, "expect_delivered: {id: hello, route: [mx-alpha.alpha.test, mx.beta.test]}"), "steps[1].route[1]", "no node has the host name 'mx.beta.test'", kind="scenario"),
    Case("scenario route by node name", scenario(SEND, "expect_delivered: {id: hello, route: [mx-alpha]}"), "steps[1].route[0]", "did you mean 'mx-alpha.alpha.test'", kind="scenario"),
    Case("scenario dns mode typo", scenario("dns_fail: {name: beta.test, mode: servfial}"), "steps[0].mode", "did you mean 'servfail'", kind="scenario"),
    Case("scenario runtime typo", scenario("stop: mx-beta", head="name: drill\ntopology: lab.yaml\nruntime: dokker\n"), "runtime", "did you mean 'docker'", kind="scenario"),
    Case("scenario field typo", scenario("stop: mx-beta", head="name: drill\ntopology: lab.yaml\nstep: []\n"), "step", "did you mean 'steps'", kind="scenario"),
    Case("scenario not utf-8", b"name: drill\xe9\n", None, "not UTF-8", kind="scenario"),
    Case("scenario alias bomb", BOMB, "f", "aliases expand", kind="scenario"),
    Case("scenario given to validate", scenario("stop: mx-beta"), "steps", "a scenario file, not a topology"),
    Case("scenario a list", "- stop: mx-beta\n", "(top level)", "a list", kind="scenario"),
    Case("scenario on a broken topology", scenario("stop: mx-beta", head="name: drill\ntopology: broken.yaml\n"), "nodes.mx-alpha.kind", "did you mean 'relay'", kind="scenario", source="broken.yaml"),
    # -- CLI misuse: send, exec, down... (added by the CLI's owner) -----------------------
    # e.g. Case("exec unknown node", None, None, "no node", args=("exec", "nope", "--", "true")),
    # ``field`` None and ``args`` without "{file}": only exit 2, one line, nothing written.
]
# fmt: on


def _run(args: list[str], cwd: Path, subproc: bool, capsys: pytest.CaptureFixture[str]):
    """(exit code, all output) of `mxlab ARGS`, in this process or as a child."""
    if subproc:
        timeout = BOMB_DEADLINE if "bomb" in " ".join(args) else DEADLINE
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("mxlab")), *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout,
        )
        return proc.returncode, proc.stdout + proc.stderr
    (main,) = entry_points(group="console_scripts", name="mxlab")
    with pytest.raises(SystemExit) as info:
        main.load()()
    captured = capsys.readouterr()
    return info.value.code, captured.out + captured.err


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=c.xfail)) if c.xfail else c
        for c in CASES
    ],
    ids=[c.name for c in CASES],
)
def test_malformed_input_is_one_line_exit_2(
    case: Case,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "mxlab-home"
    monkeypatch.setenv("MXLAB_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lab.yaml").write_text(GOOD)
    (tmp_path / "broken.yaml").write_text(edit("kind: relay", "kind: rely"))
    name = "drill.scenario.yaml" if case.kind == "scenario" else "given.yaml"
    given = tmp_path / name
    if case.content is not None:
        data = case.content if isinstance(case.content, bytes) else case.content.encode()
        given.write_bytes(data)
    path = case.path or str(given)
    if case.args:
        args = [a.replace("{file}", path) for a in case.args]
    elif case.kind == "scenario":
        args = ["scenario", "run", path, "--runtime", "local"]
    else:
        args = ["validate", path]
    before = _tree(tmp_path)
    argv = ["mxlab", *args]
    monkeypatch.setattr(sys, "argv", argv)

    started = time.monotonic()
    code, output = _run(args, tmp_path, case.subprocess, capsys)
    elapsed = time.monotonic() - started

    lines = output.strip().splitlines()
    assert "Traceback" not in output, output
    assert len(lines) == 1, output
    line = lines[0]
    assert code == 2, (code, line)
    if not case.args or "{file}" in case.args:  # a file's mistake names the file first
        source = str(tmp_path / case.source) if case.source else path
        assert line.startswith(f"error: {source}"), line
    if case.field is not None:
        assert f": {case.field}" in line, line
    assert case.expect in line, line
    assert not home.exists(), "something was written under MXLAB_HOME"
    assert _tree(tmp_path) == before, "something was written beside the input"
    assert elapsed < DEADLINE, f"took {elapsed:.1f}s"


def test_corpus_is_large_and_distinct() -> None:
    """At least 80 malformed inputs, each with its own name (pytest ids)."""
    names = [c.name for c in CASES]
    assert len(names) >= 80 and len(set(names)) == len(names)
