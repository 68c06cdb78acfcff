"""Automatic recording of business-line calls (accounts with the recording option): both parties
hear the notice once bridged, then the bridge is recorded; the remote party may press the
objection key, which stops the recording and discards what was captured of that call."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import phonenumbers

from callctl.calls.port import DialHooks
from callctl.errors import AriError, StoreError
from callctl.logging import get_logger
from callctl.numbers import e164_or_none
from callctl.recording import rules
from callctl.recording.service import Active, Party, RecordingService
from callctl.store import recordings as store

log = get_logger("callctl.recording")


class LineRecorder:
    """Creates one ``CallRecording`` per recorded call (wired by the composition root).

    Each party hears the notice in their own language: the user in their account country's, the
    remote party in the language of their number's country (the dialplan's country table,
    ``language_of``), else the account's, else English."""

    def __init__(self, service: RecordingService,
                 language_of: Callable[[str], str | None] = lambda country: None) -> None:
        self._service = service
        # One key for the installation (setting recording_objection_key), the one the notice names.
        self.objection_key = service.objection_key
        self._language_of = language_of

    def for_call(self, call_id: str, account_id: uuid.UUID, account_country: str, remote_number: str, *,
                 remote_is_caller: bool) -> CallRecording:
        user_language = self._language_of(account_country) or rules.LANGUAGES[0]
        remote_language = self._language_of(_country_of(remote_number, account_country) or "") or user_language
        return CallRecording(self._service, call_id, account_id, (remote_language, user_language),
                             self.objection_key, remote_is_caller)


def _country_of(number: str, account_country: str) -> str | None:
    e164 = e164_or_none(number, account_country)
    if e164 is None:
        return None
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None


class CallRecording:
    def __init__(self, service: RecordingService, call_id: str, account_id: uuid.UUID, languages: tuple[str, str],
                 objection_key: str, remote_is_caller: bool) -> None:
        self._service = service
        self._call_id = call_id
        self._account_id = account_id
        self._remote_language, self._user_language = languages
        self._key = objection_key
        self._remote_is_caller = remote_is_caller
        self._remote: str | None = None
        self.active: Active | None = None
        self.objected = False

    @property
    def hooks(self) -> DialHooks:
        return DialHooks(on_bridged=self._on_bridged, on_digit=self._on_digit, on_resumed=self._on_resumed)

    async def _on_resumed(self, bridge_id: str, caller_channel: str, leg_channel: str) -> None:
        """The engine restarted during the call: the recording a previous engine started on this bridge is
        this call's again (the objection key works, the end of the call files it)."""
        if self.objected or self.active is not None:
            return
        self._remote = caller_channel if self._remote_is_caller else leg_channel
        self.active = await self._service.adopt(bridge_id)

    async def _on_bridged(self, bridge_id: str, caller_channel: str, leg_channel: str) -> None:
        if self.objected or self.active is not None:
            return
        self._remote = caller_channel if self._remote_is_caller else leg_channel
        user = leg_channel if self._remote_is_caller else caller_channel
        parties = [Party(self._remote, "remote", self._remote, self._remote_language),
                   Party(user, "user", user, self._user_language)]
        self.active = await self._service.start(rules.CALL, bridge_id, parties, call_id=self._call_id,
                                                account_id=str(self._account_id))

    async def _on_digit(self, channel_id: str, digit: str) -> None:
        if channel_id != self._remote or digit != self._key or self.active is None:
            return
        active, self.active = self.active, None
        self.objected = True
        at = dt.datetime.now(dt.UTC)
        log.info("recording_objection", recording_id=str(active.id))
        try:
            await store.add_objection(self._service.pool, active.id, channel_id, digit, at)
        except StoreError as exc:
            log.error("recording_objection_write_failed", error=exc.message)
        await self._service.discard(active, rules.RULE_OBJECTION, {"key": digit, "at": at.isoformat(),
                                                                    "call_id": self._call_id})

    async def finish(self) -> None:
        """The dialled call is over: file what was recorded."""
        active, self.active = self.active, None
        if active is not None:
            try:
                await self._service.stop(active)
            except AriError as exc:
                log.warning("recording_stop_failed", error=exc.message)
