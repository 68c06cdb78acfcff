"""Day/night switches: named on/off states an operator flips at run time (``callctl dialplan switch
NAME on|off``) and ``when: {switch: NAME}`` steps read. The states live in PostgreSQL
(store/switches.py); the flow language only sees a ``SwitchReader``, bound by the daemon.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SwitchState:
    name: str
    on: bool
    changed_by: str
    changed_at: dt.datetime | None  # None: not a recorded switch (simulate --switch)

    def describe(self) -> str:
        state = "on" if self.on else "off"
        if self.changed_at is None:
            return f"{state} (set by {self.changed_by})"
        return f"{state} (switched by {self.changed_by} at {self.changed_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC)"


class SwitchReader(Protocol):
    async def states(self) -> Mapping[str, SwitchState]:
        """Every switch ever flipped, by name (a switch never flipped has its dialplan default)."""


@dataclass(frozen=True)
class FixedSwitches:
    """States given up front (``simulate --switch``, tests)."""

    fixed: Mapping[str, SwitchState]

    async def states(self) -> Mapping[str, SwitchState]:
        return self.fixed


_reader: SwitchReader | None = None


def bind(reader: SwitchReader | None) -> None:
    """Called by the daemon once its database pool exists (None to unbind at shutdown)."""
    global _reader
    _reader = reader


def bound() -> SwitchReader | None:
    return _reader
