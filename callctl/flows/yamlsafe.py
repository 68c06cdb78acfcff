"""Operator YAML read defensively into position-carrying nodes: size, encoding, tabs, tags, aliases.

Nothing here constructs Python objects from tags: files are composed into YAML nodes with a
SafeLoader subclass that counts nodes and aliases as it goes, then walked into ``Node`` values
whose scalars keep their source text (so "+33..." and "10:00" stay strings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from callctl.flows.model import Pos

MAX_FILE_BYTES = 1024 * 1024
MAX_ALIASES = 50  # aliases are a convenience; a billion-laughs file needs far more
MAX_NODES = 100_000  # after alias expansion
MAX_DEPTH = 64
MAX_TOTAL_NODES = 200_000  # all files of a dialplan together
MAX_SHOWN = 80  # longest quoted value a message repeats
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A quoted value: opens after a space or bracket, no space just inside the quotes (so the text
# between two quoted values is never taken for one).
_LONG_QUOTE = re.compile("(?<![\\w])'([^'\\s][^']{" + str(MAX_SHOWN - 1) + ",}[^'\\s])'(?![\\w])")

_TAG = "tag:yaml.org,2002:"
ALLOWED_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")}
NULLS = ("", "~", "null", "Null", "NULL")


@dataclass
class Node:
    """A YAML value with its position. ``kind`` is map, seq or scalar."""

    kind: str
    pos: Pos
    text: str = ""  # scalar source text
    tag: str = ""
    items: list[Node] = field(default_factory=list)  # seq
    entries: dict[str, tuple[Node, Node]] = field(default_factory=dict)  # map: key text -> (key, value)

    @property
    def is_null(self) -> bool:
        return self.kind == "scalar" and self.tag == _TAG + "null"

    def plain(self) -> object:
        """The value as plain Python (scalars as their source text): for free-form python step args."""
        if self.kind == "map":
            return {k: v.plain() for k, (_, v) in self.entries.items()}
        if self.kind == "seq":
            return [i.plain() for i in self.items]
        return None if self.is_null else self.text


class Problems:
    """Every problem found in one run, each anchored at a position."""

    def __init__(self) -> None:
        self._items: list[tuple[Pos, str]] = []

    def add(self, pos: Pos, message: str) -> None:
        self._items.append((pos, shown(message)))

    def __len__(self) -> int:
        return len(self._items)

    def render(self) -> list[str]:
        seen: set[str] = set()
        out: list[str] = []
        for pos, message in sorted(self._items, key=lambda item: (item[0].file, item[0].line, item[0].col)):
            line = f"{pos}: {message}"
            if line not in seen:
                seen.add(line)
                out.append(line)
        return out


def shown(message: str) -> str:
    """A message safe to print: quoted values cut to ``MAX_SHOWN`` characters and control
    characters (a terminal escape in a file) written as \\xNN, so a problem never dumps a
    file's content onto the operator's terminal."""
    message = _LONG_QUOTE.sub(lambda m: f"'{m.group(1)[:MAX_SHOWN]}...' ({len(m.group(1))} characters)", message)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", message)


class NodeBudget:
    """The values (YAML nodes) all files of one dialplan may still hold together."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0

    @property
    def spent(self) -> bool:
        return self.used > self.total


class _Refused(Exception):
    def __init__(self, pos: Pos, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


class _CountingLoader(yaml.SafeLoader):
    """Counts nodes and aliases while composing; refuses at once above the limits."""

    def __init__(self, stream: str, rel: str, budget: NodeBudget) -> None:
        super().__init__(stream)
        self.rel = rel
        self.aliases = 0
        self.nodes = 0
        self.depth = 0
        self.budget = budget

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        # The composer recurses once per level: refuse at the level itself (its line and column),
        # long before Python's recursion limit would stop it somewhere meaningless.
        if self.depth >= MAX_DEPTH:
            raise _Refused(_pos(self.rel, event.start_mark), f"values nested more than {MAX_DEPTH} deep: refused")
        self.depth += 1
        try:
            return self._compose_counted(event, parent, index)
        finally:
            self.depth -= 1

    def _compose_counted(self, event: Any, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Refused(_pos(self.rel, event.start_mark),
                               f"too many aliases (more than {MAX_ALIASES}): refused (anchors and aliases "
                               "are limited so a file cannot expand without bound)")
        else:
            self.nodes += 1
            self.budget.used += 1
            if self.nodes > MAX_NODES:
                raise _Refused(_pos(self.rel, event.start_mark), f"too many YAML nodes (more than {MAX_NODES})")
            if self.budget.spent:
                raise _Refused(_pos(self.rel, event.start_mark),
                               f"the dialplan holds more than {self.budget.total} values in all (all files "
                               "together): refused here; split it into several dialplans or remove unused entries")
        return super().compose_node(parent, index)


def _pos(rel: str, mark: Any) -> Pos:
    if mark is None:
        return Pos(rel, 1, 1)
    return Pos(rel, mark.line + 1, mark.column + 1)


def read_bytes(path: Path, rel: str, problems: Problems) -> bytes | None:
    """The file's bytes, or None (problem added) when it is too big or unreadable."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            problems.add(Pos(rel, 1, 1), f"file is {size} bytes, more than the {MAX_FILE_BYTES} bytes allowed")
            return None
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)  # the size may change between stat and read
    except OSError as exc:
        problems.add(Pos(rel, 1, 1), f"cannot read file: {exc.strerror}")
        return None
    if len(data) > MAX_FILE_BYTES:
        problems.add(Pos(rel, 1, 1), f"file is more than the {MAX_FILE_BYTES} bytes allowed")
        return None
    return data


def decode(data: bytes, rel: str, problems: Problems) -> str | None:
    """UTF-8 text, or None with a problem at the first byte that is not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        problems.add(Pos(rel, line, col), f"byte 0x{data[exc.start]:02x} is not UTF-8: save the file as UTF-8")
        return None
    return text.removeprefix("\ufeff")


def find_tabs(text: str, rel: str, problems: Problems) -> bool:
    """Adds a problem per line indented with a tab; True if any."""
    found = False
    for number, line in enumerate(text.splitlines(), 1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            problems.add(Pos(rel, number, indent.index("\t") + 1),
                         "tab in indentation: YAML indents with spaces only")
            found = True
    return found


def parse(text: str, rel: str, problems: Problems, budget: NodeBudget | None = None) -> Node | None:
    """Compose one YAML document into a Node tree; None (problems added) when refused.
    ``budget`` is shared by the files of one dialplan (default: this file alone)."""
    loader = _CountingLoader(text, rel, budget if budget is not None else NodeBudget(MAX_TOTAL_NODES))
    try:
        root = loader.get_single_node()
    except _Refused as exc:
        problems.add(exc.pos, exc.message)
        return None
    except yaml.MarkedYAMLError as exc:
        pos, message = explain(exc, text, rel)
        problems.add(pos, f"invalid YAML: {message}")
        return None
    except yaml.YAMLError as exc:
        problems.add(Pos(rel, 1, 1), f"invalid YAML: {exc}")
        return None
    except RecursionError:
        problems.add(Pos(rel, 1, 1), "YAML nested too deeply")
        return None
    finally:
        loader.dispose()
    if root is None:
        return None
    walker = _Walker(rel, problems)
    try:
        return walker.walk(root, 0)
    except _Refused as exc:
        problems.add(exc.pos, exc.message)
        return None


STEP_WORDS = ("answer", "play", "collect", "menu", "set", "goto", "flow", "hangup", "dial", "python", "when",
              "branch", "voicemail")
AFTER_PARSE = " (what this file defines is not checked against the other files until it reads)"


def explain(exc: yaml.MarkedYAMLError, text: str, rel: str) -> tuple[Pos, str]:
    """The parser's complaint, where it most likely is, with the likely fix in the operator's terms."""
    context, problem = exc.context or "", exc.problem or ""
    words = f"{context}, {problem}" if context and problem else (problem or context or "invalid YAML")
    lines = text.splitlines()
    if "could not find expected ':'" in problem and exc.context_mark is not None:
        # The scanner gives up where the next key starts; the line without ':' is where the key began.
        pos = _pos(rel, exc.context_mark)
        line = lines[pos.line - 1] if pos.line <= len(lines) else ""
        word = line.strip().removeprefix("- ").strip()
        if word in STEP_WORDS:
            return pos, (f"'{word}' needs a colon here: write '{word}:' (in a step with a name, the step's type "
                         f"is a key like 'name:')" + AFTER_PARSE)
        return pos, ("this line is not 'key: value': add the ':' or, if it continues the line above, indent it "
                     f"further or quote the text ({words})" + AFTER_PARSE)
    pos = _pos(rel, exc.problem_mark or exc.context_mark)
    if "expected <block end>" in problem or "expected <block end>" in words:
        return pos, (f"this line is indented differently from the lines above it: align it with the other keys "
                     f"of the same mapping or items of the same list ({words})" + AFTER_PARSE)
    if "mapping values are not allowed here" in problem:
        return pos, ("a ':' where a value was expected: quote a value that holds ':' (\"10:00-13:00\"), or "
                     f"indent this line under a key that ends with ':' ({words})" + AFTER_PARSE)
    return pos, words + AFTER_PARSE


class _Walker:
    def __init__(self, rel: str, problems: Problems) -> None:
        self.rel = rel
        self.problems = problems
        self.count = 0

    def walk(self, node: yaml.Node, depth: int) -> Node:
        pos = _pos(self.rel, node.start_mark)
        self.count += 1
        if self.count > MAX_NODES:
            raise _Refused(pos, f"file expands to more than {MAX_NODES} values (aliases): refused")
        if depth > MAX_DEPTH:
            raise _Refused(pos, f"values nested more than {MAX_DEPTH} deep")
        tag = str(node.tag)
        if tag == _TAG + "merge":
            self.problems.add(pos, "merge keys '<<' are not supported: write the keys out")
            return Node("scalar", pos, tag=_TAG + "null")
        if tag not in ALLOWED_TAGS:
            shown = tag.replace(_TAG, "!!")
            hint = " (python tags are never allowed: dialplans are data)" if "python" in tag else ""
            self.problems.add(pos, f"tag '{shown}' is not allowed{hint}")
            return Node("scalar", pos, tag=_TAG + "null")
        if isinstance(node, yaml.ScalarNode):
            return Node("scalar", pos, text=str(node.value), tag=tag)
        if isinstance(node, yaml.SequenceNode):
            return Node("seq", pos, tag=tag, items=[self.walk(item, depth + 1) for item in node.value])
        assert isinstance(node, yaml.MappingNode)
        out = Node("map", pos, tag=tag)
        for key_node, value_node in node.value:
            key = self.walk(key_node, depth + 1)
            value = self.walk(value_node, depth + 1)
            if key.kind != "scalar":
                self.problems.add(key.pos, "a key must be a plain word or number, not a list or mapping")
                continue
            if key.tag == _TAG + "merge" or key_node.tag == _TAG + "merge":
                continue
            if key.text in out.entries:
                first = out.entries[key.text][0].pos
                self.problems.add(key.pos, f"duplicate key '{key.text}' (first at line {first.line}, "
                                           f"column {first.col})")
                continue
            out.entries[key.text] = (key, value)
        return out
