"""The running daemon's current dialplan: loaded at start (refused if invalid), swapped atomically by a
reload; each call takes it once, so a reload affects new calls only."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from callctl.countries import Country
from callctl.errors import ConfigError, DialplanError
from callctl.flows.loader import load_dialplan
from callctl.flows.model import Dialplan
from callctl.flows.pjsip import configured_endpoints
from callctl.logging import get_logger

log = get_logger("callctl.app")


class DialplanHolder:
    """The current dialplan; a reload swaps it atomically, calls keep the one they started with.

    Dial steps' trunks are checked against Asterisk's ``pjsip_conf`` (read again at each reload, so a
    trunk added there and the flow using it can be reloaded together), as ``dialplan check`` does."""

    def __init__(self, directory: Path, pjsip_conf: Path | None = None) -> None:
        self.directory = directory
        self.pjsip_conf = pjsip_conf
        self.current = self._load()

    def _load(self) -> Dialplan:
        endpoints = configured_endpoints(self.pjsip_conf) if self.pjsip_conf is not None else None
        return load_dialplan(self.directory, endpoints=endpoints)

    def reload(self) -> bool:
        try:
            plan = self._load()
        except ConfigError as exc:
            log.error("dialplan_reload_refused", problems=1, problem=exc.message, kept=self.current.version)
            return False
        except DialplanError as exc:
            for problem in exc.problems:
                log.error("dialplan_reload_problem", problem=problem)
            log.error("dialplan_reload_refused", problems=len(exc.problems), kept=self.current.version)
            return False
        old, self.current = self.current, plan
        log.info("dialplan_reloaded", version=plan.version, previous=old.version, summary=plan.summary())
        return True

    def language_of(self, country: str) -> str | None:
        """A country's prompt language in the current dialplan (None if the table has no such country)."""
        found = self.current.countries.get(country)
        return found.language if found is not None else None


class LiveCountries(Mapping[str, Country]):
    """The country table of the current dialplan (a reload applies to the next request)."""

    def __init__(self, holder: DialplanHolder) -> None:
        self._holder = holder

    def __getitem__(self, key: str) -> Country:
        return self._holder.current.countries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._holder.current.countries)

    def __len__(self) -> int:
        return len(self._holder.current.countries)


def load_countries(dialplan_dir: Path) -> Mapping[str, Country]:
    """The country table of the operator's dialplan, for one-shot commands (the daemon keeps its own)."""
    from callctl.flows.cli import STEP_MODULES

    for module in STEP_MODULES:  # step types of feature packages, so their flows load
        importlib.import_module(module)
    return load_dialplan(dialplan_dir).countries
