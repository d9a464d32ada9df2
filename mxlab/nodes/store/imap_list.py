"""LIST and LSUB (RFC 3501 §6.3.8-9) with LIST-EXTENDED (RFC 5258): selection and
return options, several patterns, \\Subscribed, \\NonExistent and CHILDINFO; the
SPECIAL-USE option (RFC 6154 §2); and the STATUS return option of LIST-STATUS
(RFC 5819), which the session answers. Pure: names in, entries out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mxlab.nodes.store.imap_parser import ParseError, Token, as_text
from mxlab.nodes.store.index import MailboxInfo
from mxlab.nodes.store.maildir import INBOX, SEPARATOR

SELECTION = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
RETURNS = {"SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE"}


@dataclass
class ListRequest:
    reference: str
    patterns: list[str]
    selection: set[str] = field(default_factory=set)
    returns: set[str] = field(default_factory=set)
    status: list[Token] = field(default_factory=list)  # RFC 5819 STATUS items
    extended: bool = False  # any RFC 5258 syntax used


@dataclass
class Entry:
    name: str
    attributes: list[str]
    child_info: bool = False  # RFC 5258 §3.5: ("CHILDINFO" ("SUBSCRIBED"))


def parse_list(args: list[Token]) -> ListRequest:
    """[(selection)] reference (pattern | (patterns)) [RETURN (options)] (§3 of 5258)."""
    args = list(args)
    selection: set[str] = set()
    extended = False
    if args and isinstance(args[0], list):
        selection = {as_text(t).upper() for t in args.pop(0)}  # type: ignore[arg-type]
        extended = True
        if selection - SELECTION:
            raise ParseError("unknown LIST selection option")
        if "RECURSIVEMATCH" in selection and not selection - {"RECURSIVEMATCH", "REMOTE"}:
            raise ParseError("RECURSIVEMATCH needs another selection option")  # §3.1
    returns: set[str] = set()
    status: list[Token] = []
    if len(args) == 4 and isinstance(args[2], str) and args[2].upper() == "RETURN":
        options = args.pop(3)
        args.pop(2)
        if not isinstance(options, list):
            raise ParseError("RETURN needs a list of options")
        extended = True
        tokens = list(options)
        while tokens:
            word = as_text(tokens.pop(0)).upper()
            if word not in RETURNS:
                raise ParseError("unknown LIST return option")
            if word == "STATUS":  # RFC 5819 §2: STATUS (items)
                if not tokens or not isinstance(tokens[0], list) or not tokens[0]:
                    raise ParseError("STATUS needs a list of items")
                status = tokens.pop(0)  # type: ignore[assignment]
            returns.add(word)
    if len(args) != 2:
        raise ParseError("LIST needs a reference and a pattern")
    patterns = args[1]
    if isinstance(patterns, list):
        extended = True
        names = [as_text(p) for p in patterns]
        if not names:
            raise ParseError("empty pattern list")
    else:
        names = [as_text(patterns)]
    return ListRequest(as_text(args[0]), names, selection, returns, status, extended)


def _matcher(reference: str, patterns: list[str]) -> re.Pattern[str]:
    """§6.3.8: "*" matches across the hierarchy, "%" within one level."""
    alternatives = [
        "".join(
            ".*" if c == "*" else f"[^{re.escape(SEPARATOR)}]*" if c == "%" else re.escape(c)
            for c in reference + pattern
        )
        for pattern in patterns
    ]
    return re.compile("(?:" + "|".join(alternatives) + ")$")


def _parents(names: set[str]) -> set[str]:
    return {
        name.rsplit(SEPARATOR, depth)[0]
        for name in names
        for depth in range(1, name.count(SEPARATOR) + 1)
    }


def list_entries(
    request: ListRequest, boxes: dict[str, MailboxInfo], subscribed: set[str], lsub: bool = False
) -> list[Entry]:
    """What LIST (or LSUB) answers, in order."""
    exact = _matcher(request.reference, request.patterns)
    folded = re.compile(exact.pattern, re.I)

    def matches(name: str) -> bool:
        # RFC 3501 §5.1: INBOX matches whatever its case in the pattern
        return bool(exact.match(name) or (name == INBOX and folded.match(name)))

    def has_children(name: str) -> bool:
        return any(n.startswith(name + SEPARATOR) for n in boxes)

    if lsub:
        # §6.3.9: an unsubscribed parent of a subscribed child "%" hid, as \Noselect
        hidden = _parents({n for n in subscribed if not matches(n)}) - subscribed
        entries = []
        for name in sorted(subscribed | hidden):
            if matches(name):
                noselect = name in hidden or name not in boxes
                entries.append(Entry(name, ["\\Noselect"] if noselect else []))
        return entries
    # Maildir++ lets "a.b" exist without "a": such parents are listed as \Noselect
    parents = _parents(set(boxes)) - set(boxes)
    if "SUBSCRIBED" in request.selection:
        names = sorted(subscribed)
        if "RECURSIVEMATCH" in request.selection:  # §3.5: parents of what "%" hid
            names = sorted(set(names) | _parents({n for n in subscribed if not matches(n)}))
    else:
        names = [*boxes, *sorted(parents)]
    entries = []
    for name in names:
        if not matches(name):
            continue
        info = boxes.get(name)
        if "SPECIAL-USE" in request.selection and (info is None or not info.special_use):
            continue  # RFC 6154 §2
        attrs: list[str] = []
        if name in parents:
            attrs += ["\\Noselect", "\\HasChildren"]
        elif info is None:
            attrs.append("\\NonExistent")  # RFC 5258 §3: subscribed, but not there
        else:
            attrs.append("\\HasChildren" if has_children(name) else "\\HasNoChildren")
        if name in subscribed and (request.selection | request.returns) & {"SUBSCRIBED"}:
            attrs.append("\\Subscribed")
        if info is not None and info.special_use:
            attrs.append(info.special_use)
        child_info = "RECURSIVEMATCH" in request.selection and any(
            n.startswith(name + SEPARATOR) for n in subscribed
        )
        if "SUBSCRIBED" in request.selection and name not in subscribed and not child_info:
            continue
        entries.append(Entry(name, attrs, child_info))
    return entries
