"""THREAD (RFC 5256 §2.2, §4): ORDEREDSUBJECT and REFERENCES over a few facts per
message, and the parenthesized thread list the response carries."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
_MSG_ID = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class Facts:
    """What threading needs of one message; ``number`` is what the response shows
    (sequence number or UID), ``seq`` breaks ties."""

    number: int
    seq: int
    date: float  # sent date (§2.2)
    subject: str  # base subject (§2.1)
    is_reply: bool  # the subject had a Re:/Fwd: taken off
    message_id: str | None
    references: tuple[str, ...]  # References, else the first of In-Reply-To


def message_ids(value: str | None) -> tuple[str, ...]:
    return tuple(_MSG_ID.findall(value or ""))


@dataclass(eq=False)
class Node:
    facts: Facts | None = None  # None for a dummy (a message referred to, not present)
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)

    def date_key(self) -> tuple[float, int]:
        """§2.2 step 4: a dummy sorts by its first child's date."""
        if self.facts is not None:
            return self.facts.date, self.facts.seq
        return self.children[0].date_key() if self.children else (0.0, 0)

    def adopt(self, child: Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def has_descendant(self, other: Node) -> bool:
        return any(c is other or c.has_descendant(other) for c in self.children)


def ordered_subject(messages: list[Facts]) -> list[Node]:
    """§4 ORDEREDSUBJECT: by base subject then date; each subject's first message is
    the parent of the rest; threads ordered by their first message's date."""
    threads: dict[str, Node] = {}
    for facts in sorted(messages, key=lambda f: (f.subject, f.date, f.seq)):
        node = Node(facts)
        if facts.subject in threads:
            threads[facts.subject].adopt(node)
        else:
            threads[facts.subject] = node
    return sorted(threads.values(), key=Node.date_key)


def references(messages: list[Facts]) -> list[Node]:
    """§4 REFERENCES (after Zawinski): link by Message-ID and References, prune
    dummies, sort by date, then gather the root threads of one base subject."""
    table: dict[str, Node] = {}
    for facts in messages:  # step 1
        mid = facts.message_id
        if mid is None or (mid in table and table[mid].facts is not None):
            mid = f"<dup.{facts.seq}@mxlab>"  # missing or duplicate: a unique one
        node = table.setdefault(mid, Node())
        node.facts = facts
        parent: Node | None = None
        for ref in facts.references:  # 1B: link the chain, never into a loop
            current = table.setdefault(ref, Node())
            if (
                parent is not None
                and current.parent is None
                and current is not parent
                and not current.has_descendant(parent)
            ):
                parent.adopt(current)
            parent = current
        if node.parent is not None:  # 1C: the message's own references win
            node.parent.children.remove(node)
            node.parent = None
        if parent is not None and parent is not node and not node.has_descendant(parent):
            parent.adopt(node)
    roots = [n for n in table.values() if n.parent is None]
    roots = _prune(roots, top=True)  # steps 2, 3
    _sort(roots)  # step 4
    roots = _gather(roots)  # step 5
    _sort(roots)  # step 6
    return roots


def _prune(siblings: list[Node], top: bool) -> list[Node]:
    """§2.2 step 3: drop childless dummies; promote a dummy's children, unless that
    would put several of them at the root."""
    kept: list[Node] = []
    for node in siblings:
        node.children = _prune(node.children, top=False)
        for child in node.children:
            child.parent = node
        if node.facts is not None:
            kept.append(node)
        elif node.children and (not top or len(node.children) == 1):
            for child in node.children:
                child.parent = node.parent
            kept += node.children
        elif node.children:
            kept.append(node)
    return kept


def _sort(siblings: list[Node]) -> None:
    for node in siblings:
        _sort(node.children)
    siblings.sort(key=Node.date_key)


def _subject_of(node: Node) -> Facts | None:
    return (
        node.facts
        if node.facts is not None
        else (node.children[0].facts if node.children else None)
    )


def _gather(roots: list[Node]) -> list[Node]:
    """§2.2 step 5: root threads with the same base subject become one."""
    by_subject: dict[str, Node] = {}
    for root in roots:
        facts = _subject_of(root)
        if (
            facts is not None
            and facts.subject
            and (facts.subject not in by_subject or _prefer(root, by_subject[facts.subject]))
        ):
            by_subject[facts.subject] = root
    result: list[Node] = []
    for root in roots:
        facts = _subject_of(root)
        holder = by_subject.get(facts.subject) if facts is not None and facts.subject else None
        if holder is None or holder is root:
            result.append(root)
            continue
        if holder.facts is None and root.facts is None:  # two dummies: merge
            for child in list(root.children):
                holder.adopt(child)
        elif holder.facts is None or (root.facts is not None and root.facts.is_reply):
            holder.adopt(root)  # a reply goes under the original
        else:  # neither is a reply of the other: siblings under a new dummy
            dummy = Node()
            result[result.index(holder)] = dummy
            dummy.adopt(holder)
            dummy.adopt(root)
            by_subject[facts.subject] = dummy  # type: ignore[union-attr]
    return result


def _prefer(candidate: Node, current: Node) -> bool:
    """Step 5C: a dummy beats a message, a non-reply beats a reply."""
    if current.facts is None:
        return False
    if candidate.facts is None:
        return True
    return current.facts.is_reply and not candidate.facts.is_reply


def thread_list(threads: list[Node]) -> str:
    """§4 thread-list: ``(1 2 3)`` is a chain, ``(1 (2)(3))`` a branch, and a dummy
    parent shows only its children: ``((2)(3))``."""
    return "".join(f"({_members(node)})" for node in threads)


def _members(node: Node) -> str:
    head = [str(node.facts.number)] if node.facts is not None else []
    if len(node.children) == 1:
        return " ".join([*head, _members(node.children[0])])
    branches = "".join(f"({_members(c)})" for c in node.children)
    return " ".join([*head, branches]) if branches else " ".join(head)
