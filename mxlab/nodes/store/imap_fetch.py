"""FETCH data items (RFC 3501 §6.4.5, BINARY RFC 3516 §4.2): parse what the client
asks for, and write one message's FETCH response (§7.4.2)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from mxlab.nodes.store.imap_mime import binary_section, bodystructure, envelope, parse, section
from mxlab.nodes.store.imap_parser import ParseError, Token
from mxlab.nodes.store.imap_wire import flag_list, internal_date, literal, literal8
from mxlab.nodes.store.index import MessageInfo

_SECTION = re.compile(
    r"^(BODY(?:\.PEEK)?|BINARY(?:\.PEEK)?)\[(.*)\](?:<(\d+)(?:\.(\d+))?>)?$", re.I | re.S
)
_BINARY_SIZE = re.compile(r"^BINARY\.SIZE\[([\d.]*)\]$", re.I)
_PART = re.compile(r"^(\d+(\.\d+)*)?$")  # RFC 3516 section-binary: part numbers only
_SPECS = {"", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"}
_SIMPLE = {
    "FLAGS",
    "UID",
    "INTERNALDATE",
    "RFC822.SIZE",
    "ENVELOPE",
    "BODY",
    "BODYSTRUCTURE",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.TEXT",
    "MODSEQ",
}
_MACROS = {
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
_NO_CONTENT = {"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"}
CACHED = {"ENVELOPE", "BODY", "BODYSTRUCTURE"}  # kept in the index once rendered


@dataclass(frozen=True)
class FetchItem:
    name: str  # one of _SIMPLE, "SECTION" for BODY[...], "BINARY", "BINARY.SIZE"
    peek: bool = False
    path: tuple[int, ...] = ()
    spec: str = ""
    fields: tuple[str, ...] = ()
    origin: int | None = None
    count: int | None = None
    label: str = ""  # the name the response carries, e.g. "BODY[HEADER]<0>"

    @functools.cached_property
    def head(self) -> bytes:
        """The label as sent, ready to prefix each value (FETCH 1:* repeats it)."""
        return self.label.encode("utf-8", "surrogateescape") + b" "

    @functools.cached_property
    def needs_content(self) -> bool:
        return self.name not in _NO_CONTENT

    @property
    def sets_seen(self) -> bool:
        """§6.4.5: reading the text sets \\Seen, except with .PEEK."""
        return self.name in ("RFC822", "RFC822.TEXT") or (
            self.name in ("SECTION", "BINARY") and not self.peek
        )


def _section_item(m: re.Match[str]) -> FetchItem:
    inside = m.group(2).strip()
    fields: tuple[str, ...] = ()
    if "(" in inside:
        inside, _, rest = inside.partition("(")
        if not rest.endswith(")"):
            raise ParseError("bad header field list")
        fields = tuple(f.strip('"') for f in rest[:-1].split())
        inside = inside.strip()
    pieces = inside.split(".") if inside else []
    path: list[int] = []
    while pieces and pieces[0].isdigit():
        path.append(int(pieces.pop(0)))
    spec = ".".join(pieces).upper()
    if (
        spec not in _SPECS
        or 0 in path
        or (spec == "MIME" and not path)
        or (spec.startswith("HEADER.FIELDS") and not fields)
        or (fields and not spec.startswith("HEADER.FIELDS"))
    ):
        raise ParseError(f"bad section [{m.group(2)[:60]}]")
    origin = int(m.group(3)) if m.group(3) is not None else None
    count = int(m.group(4)) if m.group(4) is not None else None
    if origin is not None and count is None:
        raise ParseError("partial needs <origin.count>")
    label = f"BODY[{m.group(2)}]" + (f"<{origin}>" if origin is not None else "")
    return FetchItem(
        "SECTION",
        peek=m.group(1).upper().endswith(".PEEK"),
        path=tuple(path),
        spec=spec,
        fields=fields,
        origin=origin,
        count=count,
        label=label,
    )


def _binary_path(text: str) -> tuple[int, ...]:
    if not _PART.match(text.strip()):
        raise ParseError(f"bad binary section [{text[:40]}]")
    path = tuple(int(n) for n in text.split(".")) if text else ()
    if 0 in path:
        raise ParseError("0 is not a part number")
    return path


def _binary_item(m: re.Match[str]) -> FetchItem:
    """BINARY[part]<origin.count> and BINARY.PEEK (RFC 3516 §4.2)."""
    origin = int(m.group(3)) if m.group(3) is not None else None
    count = int(m.group(4)) if m.group(4) is not None else None
    if origin is not None and count is None:
        raise ParseError("partial needs <origin.count>")
    return FetchItem(
        "BINARY",
        peek=m.group(1).upper().endswith(".PEEK"),
        path=_binary_path(m.group(2)),
        origin=origin,
        count=count,
        label=f"BINARY[{m.group(2)}]" + (f"<{origin}>" if origin is not None else ""),
    )


def parse_items(token: Token) -> list[FetchItem]:
    """A macro, one item, or a parenthesized list of items."""
    if isinstance(token, str) and token.upper() in _MACROS:
        return [FetchItem(n, label=n) for n in _MACROS[token.upper()]]
    tokens = token if isinstance(token, list) else [token]
    items: list[FetchItem] = []
    for t in tokens:
        if not isinstance(t, str):
            raise ParseError("fetch item expected")
        name = t.upper()
        if name in _SIMPLE:
            items.append(FetchItem(name, label=name))
            continue
        size = _BINARY_SIZE.match(t)
        if size is not None:
            path = _binary_path(size.group(1))
            items.append(FetchItem("BINARY.SIZE", path=path, label=f"BINARY.SIZE[{size.group(1)}]"))
            continue
        m = _SECTION.match(t)
        if m is None:
            raise ParseError(f"unknown fetch item {t[:40]}")
        items.append(
            _binary_item(m) if m.group(1).upper().startswith("BINARY") else _section_item(m)
        )
    if not items:
        raise ParseError("no fetch items")
    return items


def describe(raw: bytes) -> dict[str, bytes]:
    """The CACHED items of a message, rendered once when it is stored, so that even
    the first ``FETCH 1:* ALL`` of a big mailbox reads no message file."""
    tree = parse(raw)
    return {
        "ENVELOPE": envelope(tree),
        "BODY": bodystructure(tree, extended=False),
        "BODYSTRUCTURE": bodystructure(tree, extended=True),
    }


def _partial(data: bytes, item: FetchItem) -> bytes:
    """<origin.count> (§6.4.5): a slice, empty when the origin is past the end."""
    if item.origin is None:
        return data
    return data[item.origin : item.origin + (item.count or 0)]


def render(
    seq: int,
    info: MessageInfo,
    items: list[FetchItem],
    load: Callable[[], bytes],
    known: dict[str, bytes] | None = None,
) -> bytes:
    """``* seq FETCH (...)``. ``load`` reads the message, called only when an item
    needs it; ``known`` holds the cached ENVELOPE/BODY/BODYSTRUCTURE values and gets
    the ones computed here added, for the caller to keep."""
    parts: list[bytes] = []
    tree = None
    raw = b""
    for item in items:
        name = item.name
        if known is not None and name in known:
            parts.append(item.head + known[name])
            continue
        if item.needs_content and not raw:
            raw = load()
        if name == "FLAGS":
            value = flag_list(info.flags)
        elif name == "UID":
            value = b"%d" % info.uid
        elif name == "INTERNALDATE":
            value = internal_date(info.internaldate)
        elif name == "RFC822.SIZE":
            value = b"%d" % info.size
        elif name == "MODSEQ":
            value = b"(%d)" % info.modseq  # RFC 7162 §3.1.4.1
        elif name == "RFC822" or (name == "SECTION" and not item.path and not item.spec):
            value = literal(_partial(raw, item))  # the common BODY.PEEK[]: no MIME parse
        else:
            tree = tree or parse(raw)
            if name == "ENVELOPE":
                value = envelope(tree)
            elif name in ("BODY", "BODYSTRUCTURE"):
                value = bodystructure(tree, extended=name == "BODYSTRUCTURE")
            elif name == "RFC822.HEADER":
                value = literal(tree.header)
            elif name == "RFC822.TEXT":
                value = literal(tree.body)
            elif name == "BINARY":
                value = literal8(_partial(binary_section(tree, list(item.path)), item))
            elif name == "BINARY.SIZE":
                value = b"%d" % len(binary_section(tree, list(item.path)))
            else:
                data = section(tree, list(item.path), item.spec, list(item.fields))
                value = literal(_partial(data, item))
            if known is not None and name in CACHED:
                known[name] = value
        parts.append(item.head + value)
    return b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"
