"""The ARI resources callctl uses (channels, bridges, playbacks, recordings, the application), each a
method of ``AriClient`` over one request of its connection (callctl.ari.connection: connecting,
events, how requests travel, errors translated). A 404 names what is gone: ChannelGone, BridgeGone,
RecordingGone, PlaybackGone; operations whose object may already be gone (a stop, a removal) say so
by ignoring it."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from callctl.ari.connection import AriConnection
from callctl.errors import AriError, BridgeGone, ChannelGone, PlaybackGone, RecordingGone, ResourceGone


class AriClient(AriConnection):
    """The ARI connection and the resource methods on it (``async with AriClient(...)``)."""

    async def answer(self, channel_id: str) -> None:
        sent_at = time.monotonic()
        await self._request("POST", f"channels/{channel_id}/answer", gone=_channel(channel_id))
        self._answer_timed(channel_id, sent_at)

    async def play(self, channel_id: str, media: list[str], playback_id: str, language: str) -> None:
        await self._request("POST", f"channels/{channel_id}/play/{playback_id}",
                            params={"media": ",".join(media), "lang": language}, gone=_channel(channel_id))

    async def stop_playback(self, playback_id: str) -> None:
        with contextlib.suppress(PlaybackGone):
            await self._request("DELETE", f"playbacks/{playback_id}", gone=_playback(playback_id))

    async def hang_up(self, channel_id: str, reason: str = "normal") -> None:
        await self._request("DELETE", f"channels/{channel_id}", params={"reason": reason}, gone=_channel(channel_id))

    async def originate(self, channel_id: str, endpoint: str, *, timeout_s: float, caller_id: str | None,
                        variables: dict[str, str] | None = None, app_args: str = "callctl-leg") -> None:
        """Create an outbound channel that enters our app when it answers: by default a call's leg (args
        "callctl-leg"); other ``app_args`` make it a call of its own (an originated dialer call)."""
        params = {"endpoint": endpoint, "app": self._settings.ari_app, "appArgs": app_args,
                  "timeout": str(max(1, int(timeout_s)))}
        if caller_id:
            params["callerId"] = caller_id
        await self._request("POST", f"channels/{channel_id}", params=params, json_body={"variables": variables or {}})

    async def ring(self, channel_id: str, ringing: bool) -> None:
        """Indicate ringing to an unanswered caller (180 Ringing), or stop it."""
        with contextlib.suppress(ChannelGone):
            await self._request("POST" if ringing else "DELETE", f"channels/{channel_id}/ring",
                                gone=_channel(channel_id))

    async def set_var(self, channel_id: str, name: str, value: str) -> None:
        await self._request("POST", f"channels/{channel_id}/variable", params={"variable": name, "value": value},
                            gone=_channel(channel_id))

    async def get_var(self, channel_id: str, name: str) -> str | None:
        """A channel variable or function read now (e.g. TIMEOUT(absolute): the seconds left;
        CHANNEL(pjsip,secure) of a calling phone, issue 20)."""
        answer = await self._request("GET", f"channels/{channel_id}/variable", params={"variable": name},
                                     gone=_channel(channel_id))
        value = (answer or {}).get("value")
        return None if value is None else str(value)

    async def continue_in_dialplan(self, channel_id: str, context: str, extension: str = "s",
                                   priority: int = 1) -> None:
        await self._request("POST", f"channels/{channel_id}/continue", gone=_channel(channel_id),
                            params={"context": context, "extension": extension, "priority": str(priority)})

    # -- bridges (conference rooms, two-party calls) --------------------------------------------

    async def create_bridge(self, bridge_id: str, name: str) -> None:
        await self._request("POST", f"bridges/{bridge_id}", params={"type": "mixing,dtmf_events", "name": name})

    async def destroy_bridge(self, bridge_id: str) -> None:
        with contextlib.suppress(BridgeGone):
            await self._request("DELETE", f"bridges/{bridge_id}", gone=_bridge(bridge_id))

    async def add_to_bridge(self, bridge_id: str, channel_id: str) -> None:
        await self._request("POST", f"bridges/{bridge_id}/addChannel", params={"channel": channel_id},
                            gone=_channel(channel_id))

    async def remove_from_bridge(self, bridge_id: str, channel_id: str) -> None:
        with contextlib.suppress(ChannelGone, AriError):
            await self._request("POST", f"bridges/{bridge_id}/removeChannel", params={"channel": channel_id},
                                gone=_channel(channel_id))

    async def play_to_bridge(self, bridge_id: str, media: list[str], playback_id: str, language: str) -> None:
        await self._request("POST", f"bridges/{bridge_id}/play/{playback_id}",
                            params={"media": ",".join(media), "lang": language}, gone=_bridge(bridge_id))

    async def mute(self, channel_id: str, muted: bool) -> None:
        """Mute what the channel says to others (direction in)."""
        await self._request("POST" if muted else "DELETE", f"channels/{channel_id}/mute",
                            params={"direction": "in"}, gone=_channel(channel_id))

    async def start_moh(self, channel_id: str) -> None:
        await self._request("POST", f"channels/{channel_id}/moh", gone=_channel(channel_id))

    async def stop_moh(self, channel_id: str) -> None:
        with contextlib.suppress(ChannelGone):
            await self._request("DELETE", f"channels/{channel_id}/moh", gone=_channel(channel_id))

    # -- recordings (callctl.recording) ---------------------------------------------------------

    async def record_bridge(self, bridge_id: str, name: str, fmt: str) -> None:
        """Start recording everything the bridge mixes, as ``name`` in Asterisk's recording spool."""
        await self._request("POST", f"bridges/{bridge_id}/record", gone=_bridge(bridge_id),
                            params={"name": name, "format": fmt, "ifExists": "fail", "beep": "false",
                                    "terminateOn": "none"})

    async def record_channel(self, channel_id: str, name: str, fmt: str, *, max_s: int, silence_s: int,
                             beep: bool) -> None:
        """Record what the caller says (voicemail), as ``name``: ends after ``max_s`` seconds,
        ``silence_s`` seconds of silence (0: never), on '#', or when the caller hangs up."""
        await self._request("POST", f"channels/{channel_id}/record", gone=_channel(channel_id),
                            params={"name": name, "format": fmt, "ifExists": "fail", "beep": str(beep).lower(),
                                    "maxDurationSeconds": str(max_s), "maxSilenceSeconds": str(silence_s),
                                    "terminateOn": "#"})

    async def stop_recording(self, name: str) -> None:
        with contextlib.suppress(RecordingGone):
            await self._request("POST", f"recordings/live/{name}/stop", gone=_recording(name))

    async def live_recording_state(self, name: str) -> str | None:
        """The live recording's state ('queued', 'recording', 'paused'...), None once it is over."""
        try:
            live = await self._request("GET", f"recordings/live/{name}", gone=_recording(name))
        except RecordingGone:
            return None
        return str((live or {}).get("state") or "") or None

    async def stored_recording(self, name: str) -> bytes | None:
        """The finished recording's file, None if Asterisk has none by that name."""
        try:
            return bytes(await self._request("GET", f"recordings/stored/{name}/file", gone=_recording(name), raw=True,
                                             timeout_s=120.0))
        except RecordingGone:
            return None

    async def delete_stored_recording(self, name: str) -> None:
        with contextlib.suppress(RecordingGone):
            await self._request("DELETE", f"recordings/stored/{name}", gone=_recording(name))

    async def bridges(self) -> dict[str, list[str]]:
        """Every bridge of Asterisk: its id -> the ids of the channels in it."""
        return {str(b.get("id")): [str(c) for c in b.get("channels") or []]
                for b in await self._request("GET", "bridges") or []}

    async def bridge_ids(self) -> list[str]:
        return list(await self.bridges())

    async def bridge_channel_count(self, bridge_id: str) -> int | None:
        """How many channels the bridge holds, None if it no longer exists."""
        try:
            bridge = await self._request("GET", f"bridges/{bridge_id}", gone=_bridge(bridge_id))
        except BridgeGone:
            return None
        return len((bridge or {}).get("channels") or [])

    async def playback_live(self, playback_id: str) -> bool:
        """True while the playback is queued or playing (Asterisk forgets it once it has finished)."""
        try:
            await self._request("GET", f"playbacks/{playback_id}", gone=_playback(playback_id))
        except PlaybackGone:
            return False
        return True

    async def application_channel_ids(self) -> set[str]:
        app = await self._request("GET", f"applications/{self._settings.ari_app}") or {}
        return {ref.removeprefix("channel:") for ref in app.get("channel_ids", [])} | {
            str(ref) for ref in app.get("channel_ids", []) if ":" not in str(ref)}

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        return dict(await self._request("GET", f"channels/{channel_id}", gone=_channel(channel_id)))

    async def asterisk_info(self) -> dict[str, Any]:
        return dict(await self._request("GET", "asterisk/info"))


def _channel(channel_id: str) -> tuple[type[ResourceGone], str]:
    return ChannelGone, f"channel {channel_id}"


def _bridge(bridge_id: str) -> tuple[type[ResourceGone], str]:
    return BridgeGone, f"bridge {bridge_id}"


def _recording(name: str) -> tuple[type[ResourceGone], str]:
    return RecordingGone, f"recording {name}"


def _playback(playback_id: str) -> tuple[type[ResourceGone], str]:
    return PlaybackGone, f"playback {playback_id}"
