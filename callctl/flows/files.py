"""The files of a dialplan directory: which YAML files are read, within a budget for the whole
directory, and never through a symbolic link that leaves it."""

from __future__ import annotations

import os
from pathlib import Path

from callctl.errors import DialplanError
from callctl.flows.model import Pos
from callctl.flows.yamlsafe import MAX_FILE_BYTES, Problems

MAX_FILES = 500
MAX_TOTAL_BYTES = 2 * MAX_FILE_BYTES  # checking is ~5 s per MiB on one core: keep `check` quick


def dialplan_files(directory: Path, problems: Problems) -> list[tuple[str, Path]]:
    """The YAML files to read, as (name shown in problems, path), within the directory's budget.

    Symbolic links are never followed out of the directory: a link that leaves it is refused
    with where it points (its target is not read, so nothing of it can appear in a message).
    A link that stays inside is read once, under the name of the first path that reaches it.
    """
    if not directory.is_dir():
        raise DialplanError([f"{directory}:1:1: dialplan directory not found"])
    base = directory.name or str(directory)
    root = directory.resolve()
    found: dict[Path, tuple[str, Path]] = {}  # real path -> (shown name, path)
    links: list[tuple[str, Path]] = []
    for path in sorted(_walk(directory)):
        rel = f"{base}/{path.relative_to(directory).as_posix()}"
        if path.is_symlink():
            links.append((rel, path))
        elif path.suffix in (".yaml", ".yml"):
            if path.is_file():
                found[path.resolve()] = (rel, path)
            else:
                problems.add(Pos(rel, 1, 1), "not a regular file (a device, a pipe or a socket): refused")
    for rel, path in links:
        real = path.resolve()
        if not real.is_relative_to(root):
            target = os.readlink(path)
            shown = target if Path(target).is_absolute() and Path(target) == real else f"{target} ({real})"
            problems.add(Pos(rel, 1, 1), f"symbolic link to {shown} leaves the dialplan directory: "
                                              "refused (copy the file into the directory instead)")
        elif path.suffix in (".yaml", ".yml") and real.is_file() and real not in found:
            found[real] = (rel, path)
    files = sorted(found.values())
    if len(files) > MAX_FILES:
        raise DialplanError([f"{base}:1:1: {len(files)} YAML files, more than the {MAX_FILES} files allowed "
                             "in a dialplan directory"])
    total = sum(size for _, p in files if (size := _size(p)) <= MAX_FILE_BYTES)  # bigger: refused alone
    if total > MAX_TOTAL_BYTES:
        raise DialplanError([f"{base}:1:1: {total} bytes in all YAML files, more than the {MAX_TOTAL_BYTES} "
                             "bytes allowed in a dialplan directory (nothing was read)"])
    if not files and not len(problems):
        raise DialplanError([f"{directory}:1:1: no .yaml files in the dialplan directory"])
    return files


def _walk(directory: Path) -> list[Path]:
    """Every path under ``directory``; symbolic links are listed, never descended into."""
    out: list[Path] = []
    for top, dirs, names in os.walk(directory, followlinks=False):
        here = Path(top)
        out.extend(here / name for name in names)
        out.extend(here / name for name in dirs if (here / name).is_symlink())
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # read_bytes reports it
