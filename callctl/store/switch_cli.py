"""The store side of ``callctl dialplan switch NAME [on|off]`` and of ``simulate``'s switch states
(the flow language's CLI loads this module by name, so it never imports asyncpg itself)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from callctl.config import Settings
from callctl.flows.model import Dialplan
from callctl.flows.switches import SwitchState
from callctl.store import switches as store
from callctl.store.db import close_quietly, connect, run_with_pool


def operator_name() -> str:
    """Who flips the switch: the login, and the sudo user behind it when there is one."""
    user = getpass.getuser()
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {user})" if sudo and sudo != user else user


def switch_cmd(args: argparse.Namespace, settings: Settings, plan: Dialplan) -> int:
    name: str = args.name
    switch = plan.switches[name]
    if args.state is None:
        async def show(db: Any) -> dict[str, Any]:
            state = (await store.states(db)).get(name)
            return {"switch": name, "on": state.on if state else switch.default,
                    "since": state.changed_at.isoformat() if state and state.changed_at else None,
                    "by": state.changed_by if state else None, "default": switch.default,
                    "history": await store.history(db, name)}

        print(json.dumps(run_with_pool(settings.database_url, show), indent=2))
        return 0
    on = args.state == "on"
    who = args.by or operator_name()

    async def flip(db: Any) -> SwitchState:
        return await store.flip(db, name, on, who, args.reason)

    state = run_with_pool(settings.database_url, flip)
    # The command's stdout is JSON only; the human sentence goes to stderr.
    print(json.dumps({"switch": name, "on": state.on, "by": state.changed_by,
                      "at": state.changed_at.isoformat() if state.changed_at else None}), flush=True)
    print(f"switch '{name}' is now {'on' if on else 'off'} for new calls (by {who}; the change is logged in "
          "dialplan_switch_log)", file=sys.stderr)
    return 0


def list_cmd(settings: Settings, plan: Dialplan) -> int:
    async def show(db: Any) -> list[dict[str, Any]]:
        recorded = await store.states(db)
        out = []
        for name, switch in sorted(plan.switches.items()):
            state = recorded.get(name)
            out.append({"switch": name, "on": state.on if state else switch.default, "default": switch.default,
                         "since": state.changed_at.isoformat() if state and state.changed_at else None,
                         "by": state.changed_by if state else None})
        return out

    print(json.dumps(run_with_pool(settings.database_url, show), indent=2))
    return 0


class StoreSwitches:
    """``simulate``'s switch reader: one connection, opened when a switch is first read."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url

    async def states(self) -> Mapping[str, SwitchState]:
        conn = await connect(self._url, timeout_s=2.0)
        try:
            return await store.states(conn)
        finally:
            await close_quietly(conn)
