"""Reading a topology or scenario file: bounded in size, in alias expansion and in depth,
so that any file a user points at (``/dev/zero``, UTF-16, a "billion laughs") answers
with one ``TopologyError`` line at once instead of a traceback or minutes of CPU."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import yaml

from mxlab.lab.errors import TopologyError

MAX_FILE_BYTES = 1 << 20  # a topology is a few kB: a wrong path must not fill memory
MAX_YAML_VALUES = 100_000  # after alias expansion; the largest real lab has a few thousand
MAX_YAML_DEPTH = 32  # the deepest real field (checks[0].expect_dns.answer[0]) is 4 down

_FIX_ENCODING = "save the file as UTF-8"


def read_source(path: Path) -> str:
    """The file as text: at most ``MAX_FILE_BYTES`` of UTF-8 (a UTF-8 BOM is dropped)."""
    src = str(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        raise TopologyError(src, "", "is a directory", "give the path of a YAML file") from None
    except FileNotFoundError:
        raise TopologyError(src, "", "cannot read: no such file", "check the path") from None
    except OSError as exc:
        raise TopologyError(src, "", f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise TopologyError(
            src, "", f"larger than {MAX_FILE_BYTES >> 20} MiB, not a topology", "check the path"
        )
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in data:
        raise TopologyError(src, "", "UTF-16 or binary, not UTF-8 text", _FIX_ENCODING)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TopologyError(
            f"{src}:{line}", "", f"not UTF-8 (byte 0x{data[exc.start]:02x})", _FIX_ENCODING
        ) from None


def read_yaml(text: str, source: str) -> dict[str, Any]:
    """YAML to a mapping; syntax errors, duplicate keys, alias bombs and deep nesting are
    ``TopologyError``s. The tree is composed once, measured, then constructed."""
    try:
        loader = yaml.SafeLoader(text)  # checks the characters at once
        try:
            root = loader.get_single_node()
            if root is None:
                raise TopologyError(source, "", "the file is empty", "start with 'name: ...'")
            _Measure(source).node(root, "", 0)
            data = loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise TopologyError(
            f"{source}:{line}", "", f"YAML cannot hold the character {chr(exc.character)!r}",
            "remove it, or write it as an escape in a double-quoted string",
        ) from None  # fmt: skip
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if problem.startswith("but "):  # "expected a single document ... but found another"
            problem = f"{exc.context} {problem}"
        raise TopologyError(where, "", f"YAML syntax error: {problem}", "fix the YAML") from None
    except RecursionError:
        raise TopologyError(
            source, "", "YAML nested too deeply", f"at most {MAX_YAML_DEPTH} levels"
        ) from None
    if not isinstance(data, dict):
        what = "a list" if isinstance(data, list) else f"the single value {data!r}"
        what = "only null" if data is None else what
        raise TopologyError(
            source, "(top level)", f"{what}, not a mapping of fields", "start with 'name: ...'"
        )
    return data


class _Measure:
    """One walk over the composed tree, each shared (aliased) node once: its size after
    alias expansion, its depth, recursive aliases, and duplicate keys (YAML loaders keep
    the last of two equal keys; a lab must not lose a user that way)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sizes: dict[int, int] = {}
        self.open: set[int] = set()

    def node(self, node: yaml.Node, path: str, depth: int) -> int:
        if id(node) in self.sizes:
            return self.sizes[id(node)]
        where = path or "(top level)"
        if id(node) in self.open:
            raise TopologyError(self.source, where, "an alias refers to itself", "remove it")
        if depth > MAX_YAML_DEPTH:
            raise TopologyError(
                self.source, where, "nested too deeply", f"at most {MAX_YAML_DEPTH} levels"
            )
        self.open.add(id(node))
        size = 1
        if isinstance(node, yaml.MappingNode):
            size += self._mapping(node, path, depth)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                size += self.node(item, f"{path}[{i}]", depth + 1)
        self.open.discard(id(node))
        if size > MAX_YAML_VALUES:
            raise TopologyError(
                self.source,
                where,
                f"aliases expand this to more than {MAX_YAML_VALUES} values",
                "write the values out, or use fewer aliases",
            )
        self.sizes[id(node)] = size
        return size

    def _mapping(self, node: yaml.MappingNode, path: str, depth: int) -> int:
        size = 0
        seen: dict[str, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarNode):
                raise TopologyError(
                    f"{self.source}:{line}", path or "(top level)", "a key must be a plain name"
                )
            here = f"{path}.{key.value}" if path else str(key.value)
            if key.value in seen and key.tag != "tag:yaml.org,2002:merge":
                raise TopologyError(
                    self.source,
                    here,
                    f"duplicate key (lines {seen[key.value]} and {line})",
                    "keep one of them",
                )
            seen[key.value] = line
            size += 1 + self.node(value, here, depth + 1)
        return size
