"""The AMI connection: logs in for the ``security`` event class only, decodes each security event into
a frozen ``SecurityEvent`` handed to a sync callback (never awaits business logic), reconnects by itself
(panoramisk), and sends ``UpdateConfig`` actions. panoramisk errors become ``AmiError`` here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from panoramisk import Manager

from callctl.errors import AmiError
from callctl.logging import get_logger

log = get_logger("callctl.ami")

ACTION_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SecurityEvent:
    """One Asterisk security event: ``name`` (InvalidPassword, ChallengeResponseFailed, ...), the
    ``remote`` address as Asterisk writes it ('IPV4/UDP/203.0.113.7/5060'), the account tried, the service."""

    name: str
    remote: str
    account: str
    service: str


class AmiClient:
    """``async with AmiClient(...)``: connected (and reconnecting) until the block exits.
    ``on_login`` runs after every successful login (the first and each reconnection)."""

    def __init__(self, host: str, port: int, user: str, password: str, on_event: Callable[[SecurityEvent], None],
                 on_login: Callable[[], None] = lambda: None) -> None:
        self._config = {"host": host, "port": port, "username": user, "secret": password, "events": "security",
                        "reconnect_timeout": 2, "ping_delay": 10, "ping_interval": 10}
        self._on_event = on_event
        self._on_login = on_login
        self._manager: Any = None
        self.logged_in = asyncio.Event()
        self._was_up = False

    async def __aenter__(self) -> AmiClient:
        loop = asyncio.get_running_loop()
        manager = Manager(loop=loop, on_login=self._logged_in, on_disconnect=self._lost, **self._config)
        manager.log.disabled = True  # panoramisk logs through stdlib logging; we log once per change below
        manager.register_event("*", self._dispatch)
        manager.connect()
        self._manager = manager
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        manager, self._manager = self._manager, None
        if manager is not None:
            manager.connect = lambda *a, **k: None  # no reconnection after close
            manager.close()
        self.logged_in.clear()

    def _logged_in(self, manager: Any) -> None:
        if manager.authenticated:
            log.info("ami_connected", host=self._config["host"], port=self._config["port"])
            self._was_up = True
            self.logged_in.set()
            self._on_login()

    def _lost(self, _manager: Any, _exc: Any) -> None:
        self.logged_in.clear()
        if self._was_up:
            log.warning("ami_connection_lost", host=self._config["host"], port=self._config["port"])
            self._was_up = False

    def _dispatch(self, _manager: Any, message: Any) -> None:
        name = str(message.get("Event", ""))
        if name == "FullyBooted" or "RemoteAddress" not in message:
            return
        self._on_event(SecurityEvent(name, str(message.get("RemoteAddress", "")), str(message.get("AccountID", "")),
                                     str(message.get("Service", ""))))

    async def update_config(self, filename: str, category: str, values: list[tuple[str, str]], *,
                            reload_module: str) -> None:
        """Replace ``category`` of ``filename`` (in Asterisk's etc) by ``values`` and reload ``reload_module``."""
        if self._manager is None or not self.logged_in.is_set():
            raise AmiError(f"AMI at {self._config['host']}:{self._config['port']} is not connected")
        action: dict[str, str] = {"Action": "UpdateConfig", "SrcFilename": filename, "DstFilename": filename,
                                  "Reload": reload_module, "Action-000000": "EmptyCat", "Cat-000000": category}
        for n, (var, value) in enumerate(values, start=1):
            action.update({f"Action-{n:06d}": "Append", f"Cat-{n:06d}": category, f"Var-{n:06d}": var,
                           f"Value-{n:06d}": value})
        try:
            response = await asyncio.wait_for(self._manager.send_action(action), ACTION_TIMEOUT_S)
        except (OSError, AttributeError, TimeoutError) as exc:
            raise AmiError(f"AMI UpdateConfig of {filename} failed: {exc or type(exc).__name__}") from None
        if not getattr(response, "success", False):
            raise AmiError(f"Asterisk refused UpdateConfig of {filename}: {response.get('Message', response)}")
