"""The architecture and code rules of STYLE.md, checked on every run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_layers_point_one_way() -> None:
    res = run(str(BIN / "lint-imports"))
    assert res.returncode == 0, res.stdout[-3000:]


def test_ruff_is_clean() -> None:
    res = run(str(BIN / "ruff"), "check", "callctl", "tests", "scripts", "bench")
    assert res.returncode == 0, res.stdout[-3000:]


def test_mypy_strict_is_clean() -> None:
    res = run(str(BIN / "mypy"))
    assert res.returncode == 0, res.stdout[-3000:]
