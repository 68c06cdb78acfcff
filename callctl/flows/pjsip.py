"""The PJSIP endpoints Asterisk is configured with (pjsip.conf), so ``dialplan check`` refuses a
dial step through a trunk that does not exist (a typo such as ``pstm``).

Reads the static configuration only: ``[name]`` sections whose ``type = endpoint`` is their own
or comes from a template (``[name](template)``), following ``#include``/``#tryinclude``.
"""

from __future__ import annotations

import re
from pathlib import Path

from callctl.errors import ConfigError
from callctl.flows.validate import Endpoints

_SECTION = re.compile(r"^\[([^\]]+)\]\s*(?:\(([^)]*)\))?")
_INCLUDE = re.compile(r'^#(?:try)?include\s+"?([^"\s]+)"?')
MAX_INCLUDES = 50


def configured_endpoints(path: Path) -> Endpoints | None:
    """The trunks dial steps may use: the endpoints of the ``pjsip_conf`` setting's file; None when the
    file is not there (a workstation: trunks not checked); ConfigError when it cannot be read."""
    try:
        return Endpoints(endpoints_in(path), str(path))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the PJSIP configuration (pjsip_conf): {exc.strerror}") from None


def endpoints_in(path: Path) -> frozenset[str]:
    """Endpoint names defined in ``path`` (and the files it includes). OSError if unreadable."""
    types: dict[str, set[str]] = {}  # section -> types, its own
    parents: dict[str, list[str]] = {}  # section -> templates and "!" (itself a template)
    _read(path, types, parents, [0])

    def is_endpoint(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if "endpoint" in types.get(name, ()):
            return True
        return any(p not in seen and is_endpoint(p, seen | {name}) for p in parents.get(name, ()))

    return frozenset(name for name in types if is_endpoint(name) and "!" not in parents.get(name, ()))


def _read(path: Path, types: dict[str, set[str]], parents: dict[str, list[str]], count: list[int]) -> None:
    count[0] += 1
    if count[0] > MAX_INCLUDES:
        return
    section: str | None = None
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split(";", 1)[0].strip()
        include = _INCLUDE.match(line)
        if include:
            target = Path(include.group(1))
            target = target if target.is_absolute() else path.parent / target
            if target.is_file():
                _read(target, types, parents, count)
            continue
        header = _SECTION.match(line)
        if header:
            section = header.group(1).strip()
            types.setdefault(section, set())
            options = [o.strip() for o in (header.group(2) or "").split(",") if o.strip()]
            parents.setdefault(section, []).extend(o for o in options if o != "+")
            continue
        key, sep, value = line.partition("=")
        if section is not None and sep and key.strip() == "type":
            types[section].add(value.strip().lstrip(">").strip())
