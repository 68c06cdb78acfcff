"""Day/night switches: named on/off states an operator flips at run time (``callctl dialplan switch
NAME on|off``) and ``when: {switch: NAME}`` steps read. The states live in PostgreSQL
(store/switches.py); the flow language only sees a ``SwitchReader``, bound by the daemon.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from callctl.flows.model import Switch
from callctl.logging import get_logger

log = get_logger("callctl.flows")


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


async def read(switch: Switch, reader: SwitchReader | None, timeout_s: float, *,
               quiet: bool = False) -> tuple[bool, str]:
    """The switch's state and how to say it; its dialplan default when nothing can answer in time
    (a closed line must still answer callers while the database is away). ``quiet``: the failure
    is only said in the answer (simulate), not logged."""
    default = f"{'on' if switch.default else 'off'} (its default"
    if reader is None:
        return switch.default, default + "; switch states not read)"
    try:
        async with asyncio.timeout(timeout_s):
            states = await reader.states()
    except Exception as exc:  # any store failure: the default, logged once per call that asks
        error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        if isinstance(exc, TimeoutError):
            error = f"no answer within {timeout_s:g} s"
        if not quiet:
            log.warning("switch_state_unavailable", switch=switch.name, error=error)
        return switch.default, default + f"; the switch store did not answer: {error})"
    state = states.get(switch.name)
    if state is None:
        return switch.default, default + "; never switched)"
    return state.on, state.describe()


_reader: SwitchReader | None = None


def bind(reader: SwitchReader | None) -> None:
    """Called by the daemon once its database pool exists (None to unbind at shutdown)."""
    global _reader
    _reader = reader


def bound() -> SwitchReader | None:
    return _reader
