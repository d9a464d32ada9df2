"""A message's MIME tree over its raw bytes, so FETCH can return exact sections
(BODY[1.2], HEADER.FIELDS, MIME, §6.4.5) and describe them (ENVELOPE, BODY,
BODYSTRUCTURE, §7.4.2). The stdlib parses each header; we keep the byte offsets."""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32, default
from email.utils import getaddresses

from mxlab.nodes.store.imap_wire import nstring, plist, string

_PARSER = BytesHeaderParser(policy=compat32)


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(header with its blank line, body), RFC 5322 §2.1."""
    if raw.startswith(b"\r\n"):
        return b"\r\n", raw[2:]
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return raw, b""
    return raw[: end + 4], raw[end + 4 :]


def raw_fields(header: bytes) -> list[tuple[str, bytes]]:
    """Each header field as (lower-case name, its raw lines with CRLF)."""
    fields: list[tuple[str, bytes]] = []
    for line in header.split(b"\r\n")[:-1]:
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line + b"\r\n")
        else:
            name = line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
            fields.append((name, line + b"\r\n"))
    return fields


def header_fields(header: bytes, names: list[str], *, exclude: bool) -> bytes:
    """HEADER.FIELDS / HEADER.FIELDS.NOT (§6.4.5): the chosen fields and a blank line."""
    wanted = {n.lower() for n in names}
    kept = [raw for name, raw in raw_fields(header) if (name in wanted) != exclude]
    return b"".join(kept) + b"\r\n"


@dataclass
class Part:
    raw: bytes
    header: bytes
    body: bytes
    headers: Message
    children: list[Part] = field(default_factory=list)  # multipart
    message: Part | None = None  # message/rfc822 encapsulated

    @property
    def maintype(self) -> str:
        return self.headers.get_content_maintype()

    @property
    def subtype(self) -> str:
        return self.headers.get_content_subtype()


def parse(raw: bytes, default_type: str = "text/plain") -> Part:
    header, body = split_message(raw)
    headers = _PARSER.parsebytes(header)
    headers.set_default_type(default_type)
    part = Part(raw, header, body, headers)
    if part.maintype == "multipart":
        boundary = parameters(headers, "Content-Type").get("boundary")
        if boundary:
            child_type = "message/rfc822" if part.subtype == "digest" else "text/plain"
            part.children = [parse(p, child_type) for p in _split_multipart(body, boundary)]
    elif part.maintype == "message" and part.subtype == "rfc822":
        part.message = parse(body)
    return part


def parameters(headers: Message, name: str) -> dict[str, str]:
    """A Content-Type/-Disposition field's parameters, by the full RFC 2045 §5.1
    grammar: folded lines, comments and RFC 2231 continuations (``boundary*0=``,
    ``name*1*=``) included, which the compat32 splitter gets wrong."""
    value = headers.get(name)
    if value is None:
        return {}
    unfolded = str(value).replace("\r\n", "").replace("\n", "")
    try:
        return dict(default.header_factory(name, unfolded).params)
    except Exception:  # the registry can choke on junk: a part without parameters
        return {}


def _split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter."""
    delim = re.compile(
        rb"(?:^|\r\n)--"
        + re.escape(boundary.encode("utf-8", "surrogateescape"))
        + rb"(--)?[ \t]*(?:\r\n|$)"
    )
    parts: list[bytes] = []
    start: int | None = None
    for m in delim.finditer(body):
        if start is not None:
            parts.append(body[start : m.start()])
        if m.group(1):
            break
        start = m.end()
    return parts


def _text(value: str | None) -> bytes | None:
    if value is None:
        return None
    return value.replace("\r\n", "").replace("\n", "").encode("ascii", "surrogateescape")


def _split_groups(value: str) -> list[tuple[str | None, str]]:
    """RFC 5322 §3.4 address-list cut into (group name, members) and (None, plain
    addresses) pieces, in order; colons and semicolons inside quoted strings,
    comments and angle brackets (obsolete routes) do not count."""
    pieces: list[tuple[str | None, str]] = []
    start, group, quoted, comment, angle = 0, None, False, 0, 0
    i = 0
    while i < len(value):
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif comment:
            if c == "\\":
                i += 1
            comment += {"(": 1, ")": -1}.get(c, 0)
        elif c == '"':
            quoted = True
        elif c == "(":
            comment = 1
        elif c in "<>":
            angle = max(0, angle + (1 if c == "<" else -1))
        elif angle:
            pass
        elif c == ":" and group is None:
            cut = value.rfind(",", start, i) + 1 or start
            pieces.append((None, value[start:cut]))
            group, start = value[cut:i].strip(), i + 1
        elif c == ";" and group is not None:
            pieces.append((group, value[start:i]))
            group, start = None, i + 1
        i += 1
    pieces.append((group, value[start:]))
    return pieces


def _address(display: str | None, mailbox: str | None, host: str | None) -> bytes:
    return plist([nstring(_text(display)), b"NIL", nstring(_text(mailbox)), nstring(_text(host))])


def _addresses(headers: Message, name: str) -> bytes:
    """An address list (§7.4.2 ENVELOPE): (name adl mailbox host) each, or NIL; a
    group is (NIL NIL "name" NIL), its members, then (NIL NIL NIL NIL)."""
    values = headers.get_all(name)
    if not values:
        return b"NIL"
    out = []
    for value in values:
        for group, text in _split_groups(str(value).replace("\r\n", "").replace("\n", "")):
            if group is not None:
                out.append(_address(None, group or None, None))
            for display, addr in getaddresses([text]) if text.strip(" ,") else []:
                if not addr and not display:
                    continue
                mailbox, _, host = addr.partition("@")
                out.append(_address(display or None, mailbox, host or None))
            if group is not None:
                out.append(_address(None, None, None))
    return b"(" + b"".join(out) + b")" if out else b"NIL"


def envelope(part: Part) -> bytes:
    h = part.headers
    frm = _addresses(h, "From")
    sender = _addresses(h, "Sender")
    reply_to = _addresses(h, "Reply-To")
    return plist(
        [
            nstring(_text(h.get("Date"))),
            nstring(_text(h.get("Subject"))),
            frm,
            sender if sender != b"NIL" else frm,  # §7.4.2: default to From
            reply_to if reply_to != b"NIL" else frm,
            _addresses(h, "To"),
            _addresses(h, "Cc"),
            _addresses(h, "Bcc"),
            nstring(_text(h.get("In-Reply-To"))),
            nstring(_text(h.get("Message-ID"))),
        ]
    )


def _params(headers: Message, header: str) -> bytes:
    pairs = parameters(headers, header)
    if not pairs:
        return b"NIL"
    items: list[bytes] = []
    for key, value in pairs.items():
        items += [string(key.upper()), string(value)]
    return plist(items)


def _disposition(headers: Message) -> bytes:
    value = headers.get("Content-Disposition")
    if value is None:
        return b"NIL"
    kind = value.split(";", 1)[0].strip()
    return plist([string(kind), _params(headers, "Content-Disposition")])


def _lines(body: bytes) -> int:
    return body.count(b"\r\n") + (1 if body and not body.endswith(b"\r\n") else 0)


def bodystructure(part: Part, extended: bool = True) -> bytes:
    """BODYSTRUCTURE (extended) or BODY (§7.4.2)."""
    h = part.headers
    if part.children:
        items = [b"".join(bodystructure(c, extended) for c in part.children)]
        items.append(string(part.subtype.upper()))
        if extended:
            items += [_params(h, "Content-Type"), _disposition(h), b"NIL", b"NIL"]
        return b"(" + b" ".join(items) + b")"
    fields = [
        string(part.maintype.upper()),
        string(part.subtype.upper()),
        _params(h, "Content-Type"),
        nstring(_text(h.get("Content-ID"))),
        nstring(_text(h.get("Content-Description"))),
        string((_text(h.get("Content-Transfer-Encoding")) or b"7BIT").strip().upper()),
        str(len(part.body)).encode(),
    ]
    if part.message is not None:
        inner = part.message
        fields += [envelope(inner), bodystructure(inner, extended), str(_lines(part.body)).encode()]
    elif part.maintype == "text":
        fields.append(str(_lines(part.body)).encode())
    if extended:
        fields += [b"NIL", _disposition(h), b"NIL", b"NIL"]
    return plist(fields)


def _node(root: Part, path: list[int]) -> Part | None:
    """The part a section path names (§6.4.5 part numbers), or None."""
    node = root
    for depth, n in enumerate(path):
        if depth and node.message is not None:
            node = node.message
        if node.children:
            if n > len(node.children):
                return None
            node = node.children[n - 1]
        elif n != 1:
            return None
    return node


class UnknownCte(ValueError):
    """RFC 3516 §4.3: a transfer encoding BINARY cannot undo: NO [UNKNOWN-CTE]."""


def binary_section(root: Part, path: list[int]) -> bytes:
    """BINARY[<path>] (RFC 3516 §4.2): the part's body with its Content-Transfer-
    Encoding undone; the whole message, as it is, for an empty path."""
    node = _node(root, path) if path else None
    if node is None:
        return root.raw if not path else b""
    cte = (node.headers.get("Content-Transfer-Encoding") or "7bit").strip().lower()
    if cte in ("7bit", "8bit", "binary"):
        return node.body
    try:
        if cte == "base64":
            return binascii.a2b_base64(node.body)
        if cte == "quoted-printable":
            return binascii.a2b_qp(node.body)
    except binascii.Error as exc:
        raise UnknownCte(f"cannot decode {cte}: {exc}") from None
    raise UnknownCte(f"unknown transfer encoding {cte[:40]}")


def section(root: Part, path: list[int], spec: str, names: list[str]) -> bytes:
    """The octets of BODY[<path>.<spec>] (§6.4.5); empty when the part is missing."""
    found = _node(root, path)
    if found is None:
        return b""
    node = found
    if not spec:
        return node.body if path else root.raw
    if spec == "MIME":
        return node.header if path else b""
    msg = node if not path else node.message
    if msg is None:
        return b""
    if spec == "HEADER":
        return msg.header
    if spec == "TEXT":
        return msg.body
    return header_fields(msg.header, names, exclude=spec == "HEADER.FIELDS.NOT")
