"""The AGI commands that set channel variables: one ``EXEC MSet`` line for a whole answer where Asterisk
can carry it, a ``SET VARIABLE`` for what it cannot (issue 17; the quoting rules are Asterisk 22's)."""

from __future__ import annotations

import functools
from collections.abc import Mapping


def _quote(value: str) -> str:
    clean = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ").replace("\r", " ")
    return f'"{clean}"'


# One ``EXEC MSet`` instead of a ``SET VARIABLE`` per variable (issue 17: one round trip, not eight).
# Asterisk 22 unquotes it twice (docs/benchmarks.md, issue 17 third round): res_agi's parse_args takes the
# double-quoted argument (backslash escapes any character), then MSet (pbx_builtin_setvar_multiple)
# splits it at commas with __ast_app_separate_args, which removes quotes and backslashes and does not
# split inside () or []; each pair is split at its first '=' and the value is kept as is. So each of
# \ " , ( ) [ ] is escaped with a backslash for MSet, then \ and " once more for the AGI line.
# What cannot be carried that way goes as SET VARIABLE, as before: a line break or NUL (one command a
# line; SET VARIABLE turns them into spaces), '$' (a dialplan that sets AGIEXECFULL would substitute
# it), a name that is not a plain identifier.
_MSET_ESCAPE = {c: "\\" + c for c in '\\",()[]'}
_AGI_ESCAPE = {"\\": "\\\\", '"': '\\"'}
# Both in one pass (a value is translated once): MSet's escape, then the AGI line's.
_ESCAPE = str.maketrans({c: "".join(_AGI_ESCAPE.get(e, e) for e in escaped) for c, escaped in _MSET_ESCAPE.items()})
_NOT_CARRIED = frozenset("\n\r\0$")
MSET_MAX_PAIRS = 64  # MSet parses up to 98 pairs
MSET_MAX_LINE = 4000  # res_agi reads a command line of up to 8,191 bytes (AGI_BUF_LEN)


# A gate answers with the same few names and mostly the same values (rule, reason, route, country), so
# each (name, value) is escaped once: a bounded cache of a pure function, values of at most this length.
PAIR_CACHE_SIZE = 4096
PAIR_CACHE_MAX_CHARS = 256


def _mset_pair(name: str, value: str) -> str | None:
    """``name=value`` escaped for MSet and for the AGI line, or None if it must go as ``SET VARIABLE``."""
    if not name.isidentifier() or not name.isascii() or not _NOT_CARRIED.isdisjoint(value):
        return None
    return f"{name}={value.translate(_ESCAPE)}"  # a name is an identifier: nothing to escape


def _pair_entry(name: str, value: str) -> tuple[str, int] | None:
    """``_mset_pair`` and its length in bytes, or None."""
    pair = _mset_pair(name, value)
    return None if pair is None else (pair, len(pair.encode()))


_cached_pair_entry = functools.lru_cache(maxsize=PAIR_CACHE_SIZE)(_pair_entry)


def variable_commands(variables: Mapping[str, str], *, mset: bool = True) -> list[bytes]:
    """The AGI commands that set ``variables`` on the channel: as few ``EXEC MSet`` lines as fit, and a
    ``SET VARIABLE`` for each variable MSet cannot carry (or for all with ``mset=False``)."""
    if not mset:
        return _batched(variables, None)
    entries = [(_cached_pair_entry(name, value) if len(value) <= PAIR_CACHE_MAX_CHARS else _pair_entry(name, value))
               for name, value in variables.items()]
    # The usual answer: every pair carried, one line. _batched would cut a line only past MSET_MAX_PAIRS pairs
    # or once its pairs, their commas and 16 bytes of margin pass MSET_MAX_LINE.
    carried = [entry for entry in entries if entry is not None]
    if (carried and len(carried) == len(entries) and len(carried) <= MSET_MAX_PAIRS
            and sum(size for _, size in carried) + len(carried) + 15 <= MSET_MAX_LINE):
        return [_mset_line([pair for pair, _ in carried])]
    return _batched(variables, entries)


def _batched(variables: Mapping[str, str], entries: list[tuple[str, int] | None] | None) -> list[bytes]:
    """``entries``: each variable's MSet pair and its size (None: it goes as ``SET VARIABLE``); None: all do."""
    commands: list[bytes] = []
    batch: list[str] = []
    size = 0
    for i, (name, value) in enumerate(variables.items()):
        entry = entries[i] if entries is not None else None
        if entry is None:
            commands.append(f"SET VARIABLE {name} {_quote(value)}\n".encode())
            continue
        pair, encoded = entry
        if encoded + 16 > MSET_MAX_LINE:
            commands.append(f"SET VARIABLE {name} {_quote(value)}\n".encode())
            continue
        if batch and (len(batch) >= MSET_MAX_PAIRS or size + encoded + 16 > MSET_MAX_LINE):
            commands.append(_mset_line(batch))
            batch, size = [], 0
        batch.append(pair)
        size += encoded + 1
    if batch:
        commands.append(_mset_line(batch))
    return commands


def _mset_line(pairs: list[str]) -> bytes:
    return ('EXEC MSet "' + ",".join(pairs) + '"\n').encode()
