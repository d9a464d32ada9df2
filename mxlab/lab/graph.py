"""Draw a lab from its plan: nodes by role, domains and their MX preferences, relay
chains, the store each relay hands mail to, the lab network and every address; a
running lab adds node states and queue sizes.

Pure: the plan (and, optionally, live state) in, text out - Mermaid, Graphviz DOT,
or a self-contained SVG laid out here (for HTML pages that must not need Graphviz).
Only :func:`graphviz` runs a program: ``dot``, to turn DOT into SVG or PNG."""

from __future__ import annotations

import html
import shutil
import subprocess
from dataclasses import dataclass, field

from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan
from mxlab.nodes.config import RelayNodeConfig, ResolverNodeConfig, StoreNodeConfig

FORMATS = ("mermaid", "dot", "svg", "png", "html")
ROLE_ORDER = {
    "domain": 0, "relay": 1, "store": 2, "sink": 3, "external": 4, "dns": 5, "resolver": 6
}  # fmt: skip


@dataclass
class Box:
    """One thing drawn: a node of the lab, or a domain with its users."""

    id: str
    role: str  # "domain", "relay", "store", "dns"
    title: str
    lines: list[str]
    state: str = ""  # "running", "stopped"... for a running lab
    column: int = 0


@dataclass(frozen=True)
class Arrow:
    src: str
    dst: str
    label: str
    kind: str  # "mx", "lmtp", "next_hop", "submission", "dns"


@dataclass
class Graph:
    lab: str
    network: str  # "lab network 127.9.3.0/24 (local)"
    boxes: list[Box] = field(default_factory=list)
    arrows: list[Arrow] = field(default_factory=list)


def _domain_id(domain: str) -> str:
    return "d_" + domain.replace(".", "_").replace("-", "_")


def _node_id(node: str) -> str:
    return "n_" + node.replace("-", "_")


def build(
    plan: LabPlan,
    states: dict[str, str] | None = None,
    queues: dict[str, int] | None = None,
) -> Graph:
    """The drawing's content, from the plan and (for a running lab) each node's state
    and each relay's queue size."""
    g = Graph(plan.lab, f"lab network {plan.subnet} ({plan.runtime})")
    by_address = {n.address: n.name for n in plan.nodes.values()}
    for dom, d in plan.domains.items():
        users = [u.address.split("@")[0] for u in plan.users if u.domain == dom]
        g.boxes.append(Box(_domain_id(dom), "domain", dom, [f"users: {', '.join(users)}"]))
        for pref, node in d.mx:
            g.arrows.append(Arrow(_domain_id(dom), _node_id(node), f"MX {pref}", "mx"))
        if d.submission not in {n for _, n in d.mx}:
            g.arrows.append(
                Arrow(_domain_id(dom), _node_id(d.submission), "submission", "submission")
            )
    for name, n in plan.nodes.items():
        lines = [n.fqdn, n.address, " ".join(f"{k} {v}" for k, v in n.ports.items())]
        cfg = n.config
        if isinstance(cfg, RelayNodeConfig):
            if cfg.local_domains:
                lines.append("final for " + ", ".join(cfg.local_domains))
            if cfg.relay_domains:
                backup = (f"{d} (pref {r.preference})" for d, r in cfg.relay_domains.items())
                lines.append("backup MX for " + ", ".join(backup))
            for dom, local in cfg.local_domains.items():
                store = by_address.get(local.lmtp.host, local.lmtp.host)
                g.arrows.append(Arrow(_node_id(name), _node_id(store), f"LMTP {dom}", "lmtp"))
            if cfg.next_hop is not None:
                hop = by_address.get(cfg.next_hop.host, cfg.next_hop.host)
                g.arrows.append(Arrow(_node_id(name), _node_id(hop), "next hop", "next_hop"))
            if cfg.next_hop is None or cfg.relay_domains:  # finds other domains' MX by DNS
                dns = by_address.get(cfg.dns.host, plan.dns_node.name)  # or its resolver
                g.arrows.append(Arrow(_node_id(name), _node_id(dns), "MX, A lookups", "dns"))
            if queues is not None and name in queues:
                lines.append(f"queue: {queues[name]}")
        elif isinstance(cfg, StoreNodeConfig):
            lines.append(f"mailboxes of {', '.join(cfg.domains) or 'no domain'}")
        elif isinstance(cfg, ResolverNodeConfig):
            dns = by_address.get(cfg.dns.host, cfg.dns.host)
            g.arrows.append(Arrow(_node_id(name), _node_id(dns), "stub zones", "dns"))
        if states is not None:
            lines.append(f"state: {states.get(name, 'unknown')}")
        g.boxes.append(Box(_node_id(name), n.role, name, lines, (states or {}).get(name, "")))
    _columns(g)
    return g


def _columns(g: Graph) -> None:
    """Left to right: domains, relays (a smarthost one column right of who uses it),
    stores, the DNS node."""
    hops = [(a.src, a.dst) for a in g.arrows if a.kind == "next_hop"]

    def depth(box_id: str, seen: frozenset[str] = frozenset()) -> int:
        """How many relays hand their mail to this one before it (chains have no loops)."""
        before = [src for src, dst in hops if dst == box_id and src not in seen]
        return max((depth(src, seen | {box_id}) + 1 for src in before), default=0)

    depths = {b.id: depth(b.id) for b in g.boxes if b.role == "relay"}
    relay_cols = max(depths.values(), default=0) + 1
    for box in g.boxes:
        if box.role == "domain":
            box.column = 0
        elif box.role == "relay":
            box.column = 1 + depths[box.id]
        elif box.role in ("store", "sink", "external"):  # where mail ends, for the lab
            box.column = 1 + relay_cols
        else:
            box.column = 2 + relay_cols


# -- Mermaid -------------------------------------------------------------------------
_MERMAID_SHAPE = {
    "domain": ('(["', '"])'),
    "relay": ('["', '"]'),
    "store": ('[("', '")]'),
    "dns": ('{{"', '"}}'),
    "resolver": ('{{"', '"}}'),
    "sink": ('[("', '")]'),
    "external": ('[/"', '"/]'),
}
_MERMAID_ARROW = {
    "mx": "-->",
    "lmtp": "==>",
    "next_hop": "-->",
    "submission": "-.->",
    "dns": "-.->",
}


def _mermaid_text(text: str) -> str:
    return html.escape(text, quote=False).replace('"', "#quot;")


def mermaid(g: Graph) -> str:
    """A Mermaid flowchart: domains outside, the lab network as a subgraph."""
    out = ["flowchart LR"]

    def node(box: Box) -> str:
        left, right = _MERMAID_SHAPE[box.role]
        label = "<br/>".join(_mermaid_text(t) for t in [f"{box.title} ({box.role})", *box.lines])
        return f"{box.id}{left}{label}{right}"

    out += [f"  {node(b)}" for b in g.boxes if b.role == "domain"]
    out.append(f'  subgraph net["{_mermaid_text(g.network)}"]')
    out += [f"    {node(b)}" for b in g.boxes if b.role != "domain"]
    out.append("  end")
    for a in g.arrows:
        out.append(f'  {a.src} {_MERMAID_ARROW[a.kind]}|"{_mermaid_text(a.label)}"| {a.dst}')
    for b in g.boxes:
        out.append(f"  class {b.id} {b.role}")
        if b.state and b.state != "running":
            out.append(f"  class {b.id} down")
    out += [
        "  classDef domain fill:#eef6ff,stroke:#3b6ea5",
        "  classDef relay fill:#fff6e5,stroke:#b7791f",
        "  classDef store fill:#eefaf0,stroke:#2f855a",
        "  classDef dns fill:#f5f0ff,stroke:#6b46c1",
        "  classDef down stroke:#c53030,stroke-width:3px,stroke-dasharray:4",
    ]
    return "\n".join(out) + "\n"


# -- Graphviz DOT --------------------------------------------------------------------
_DOT_SHAPE = {"domain": "ellipse", "relay": "box", "store": "cylinder", "dns": "hexagon"}
_DOT_SHAPE |= {"resolver": "hexagon", "sink": "cylinder", "external": "parallelogram"}
_DOT_FILL = {"domain": "#eef6ff", "relay": "#fff6e5", "store": "#eefaf0", "dns": "#f5f0ff"}
_DOT_FILL |= {"resolver": "#f5f0ff", "sink": "#f0f0f0", "external": "#ffffff"}
_DOT_STYLE = {
    "mx": "solid",
    "lmtp": "bold",
    "next_hop": "solid",
    "submission": "dashed",
    "dns": "dotted",
}


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def dot(g: Graph) -> str:
    """Graphviz DOT: the lab network a cluster, domains outside it."""
    out = [
        f'digraph "{_dot_text(g.lab)}" {{',
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10, style=filled];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]

    def node(box: Box) -> str:
        label = "\\n".join(_dot_text(t) for t in [f"{box.title} ({box.role})", *box.lines])
        color = "#c53030" if box.state and box.state != "running" else "black"
        return (
            f'{box.id} [label="{label}", shape={_DOT_SHAPE[box.role]}, '
            f'fillcolor="{_DOT_FILL[box.role]}", color="{color}"];'
        )

    out += [f"  {node(b)}" for b in g.boxes if b.role == "domain"]
    out.append("  subgraph cluster_net {")
    out.append(f'    label="{_dot_text(g.network)}";')
    out += [f"    {node(b)}" for b in g.boxes if b.role != "domain"]
    out.append("  }")
    for a in g.arrows:
        out.append(
            f'  {a.src} -> {a.dst} [label="{_dot_text(a.label)}", style={_DOT_STYLE[a.kind]}];'
        )
    out.append("}")
    return "\n".join(out) + "\n"


def graphviz(dot_source: str, fmt: str) -> bytes:
    """DOT rendered by Graphviz's ``dot`` into ``svg`` or ``png``."""
    exe = shutil.which("dot")
    if exe is None:
        raise LabError(
            f"--format {fmt} needs Graphviz's dot program (apt-get install graphviz); "
            "--format html or mermaid need nothing"
        )
    run = subprocess.run(
        [exe, f"-T{fmt}"], input=dot_source.encode(), capture_output=True, timeout=60
    )
    if run.returncode != 0:
        raise LabError(f"dot failed: {run.stderr.decode(errors='replace').strip()}")
    return run.stdout


# -- our own SVG (no Graphviz) ---------------------------------------------------------
BOX_W, LINE_H, PAD, COL_GAP, ROW_GAP, CHAR_W = 180, 15, 8, 90, 28, 6.3
_SVG_FILL = _DOT_FILL
_SVG_STROKE = {"domain": "#3b6ea5", "relay": "#b7791f", "store": "#2f855a", "dns": "#6b46c1"}
_SVG_STROKE |= {"resolver": "#6b46c1", "sink": "#4a5568", "external": "#4a5568"}


def svg(g: Graph) -> str:
    """A layered drawing, columns left to right by role (see ``_columns``), with every
    arrow labelled; a self-contained SVG document."""
    columns: dict[int, list[Box]] = {}
    for box in g.boxes:
        columns.setdefault(box.column, []).append(box)
    longest = max(
        (len(t) for b in g.boxes for t in [b.title + b.role + "   ", *b.lines]), default=0
    )
    box_w = max(BOX_W, int(longest * CHAR_W) + 2 * PAD)
    pos: dict[str, tuple[float, float, float]] = {}  # id -> x, y, height
    height = 0.0
    for col, boxes in sorted(columns.items()):
        y = 40.0
        for box in boxes:
            h = float(PAD * 2 + LINE_H * (1 + len(box.lines)))
            pos[box.id] = (20 + col * (box_w + COL_GAP), y, h)
            y += h + ROW_GAP
        height = max(height, y)
    width = 40 + (max(columns, default=0) + 1) * (box_w + COL_GAP) - COL_GAP
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica,Arial,sans-serif" '
        'font-size="11">',
        '<defs><marker id="arrow" markerUnits="userSpaceOnUse" viewBox="0 0 10 10" '
        'refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
        f'<text x="20" y="20" font-size="13" font-weight="bold">{e(g.lab)}: {e(g.network)}</text>',
    ]
    for a in g.arrows:
        if a.src not in pos or a.dst not in pos:
            continue
        sx, sy, sh = pos[a.src]
        dx, dy, dh = pos[a.dst]
        x1, y1 = (sx + box_w, sy + sh / 2) if dx > sx else (sx, sy + sh / 2)
        x2, y2 = (dx, dy + dh / 2) if dx > sx else (dx + box_w, dy + dh / 2)
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        if dx == sx:  # same column: bow out to the right
            x1, x2, mx = sx + box_w, dx + box_w, sx + box_w + 40
        elif abs(dx - sx) > box_w + COL_GAP:  # skips columns: bow below the boxes between
            my = max(y1, y2) + 30 * abs(dx - sx) / (box_w + COL_GAP)
        dash = {"submission": "6,4", "dns": "2,3"}.get(a.kind, "")
        width_ = 2.5 if a.kind == "lmtp" else 1.2
        out.append(
            f'<path class="arrow {a.kind}" d="M{x1:.0f},{y1:.0f} Q{mx:.0f},{my:.0f} '
            f'{x2:.0f},{y2:.0f}" fill="none" stroke="#555" stroke-width="{width_}" '
            f'stroke-dasharray="{dash}" marker-end="url(#arrow)"/>'
        )
        out.append(
            f'<text x="{(x1 + 2 * mx + x2) / 4:.0f}" y="{(y1 + 2 * my + y2) / 4 - 3:.0f}" '
            'text-anchor="middle" fill="#333">'
            f"{e(a.label)}</text>"
        )
    for box in g.boxes:
        x, y, h = pos[box.id]
        down = box.state and box.state != "running"
        stroke = "#c53030" if down else _SVG_STROKE[box.role]
        out.append(
            f'<g class="node {box.role}" id="{box.id}"><rect x="{x:.0f}" y="{y:.0f}" '
            f'width="{box_w}" height="{h:.0f}" rx="6" fill="{_SVG_FILL[box.role]}" '
            f'stroke="{stroke}" stroke-width="{3 if down else 1.5}"/>'
        )
        out.append(
            f'<text x="{x + PAD:.0f}" y="{y + PAD + 11:.0f}" font-weight="bold">'
            f"{e(box.title)} ({box.role})</text>"
        )
        for i, line in enumerate(box.lines, start=1):
            out.append(
                f'<text x="{x + PAD:.0f}" y="{y + PAD + 11 + i * LINE_H:.0f}">{e(line)}</text>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def page(g: Graph) -> str:
    """A self-contained HTML page: the drawing and a legend; no script, no CDN."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(b.title)}</td><td>{b.role}</td><td>{e(' | '.join(b.lines))}</td></tr>"
        for b in sorted(g.boxes, key=lambda b: (ROLE_ORDER[b.role], b.title))
    )
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>mxlab {e(g.lab)}</title><style>"
        "body{font-family:Helvetica,Arial,sans-serif;margin:1.5em}"
        "table{border-collapse:collapse}td{border:1px solid #ccc;padding:2px 6px}"
        "</style></head><body>\n"
        f"<h1>lab {e(g.lab)}</h1>\n<div style='overflow-x:auto'>{svg(g)}</div>"
        "<p>Arrows: MX (with preference) from a domain to its relays; bold LMTP from a "
        "final relay to the store; next hop along a relay chain; dashed: submission.</p>\n"
        f"<table><tr><th>name</th><th>role</th><th>details</th></tr>{rows}</table>\n"
        "</body></html>\n"
    )


def render(g: Graph, fmt: str) -> bytes:
    """The drawing in one of ``FORMATS``."""
    if fmt == "mermaid":
        return mermaid(g).encode()
    if fmt == "dot":
        return dot(g).encode()
    if fmt == "html":
        return page(g).encode()
    if fmt in ("svg", "png"):
        return graphviz(dot(g), fmt)
    raise LabError(f"unknown graph format {fmt!r} (one of {', '.join(FORMATS)})")
