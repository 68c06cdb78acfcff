"""The recording service with a fake ARI: the notice is over before capture starts, a recording
whose metadata cannot be stored is not kept, an objection throws the capture away."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from callctl.recording.calls import CallRecording
from callctl.recording.service import Active, Party, RecordingService


class FakeOps:
    """Playbacks last ``polls`` checks each; every call is logged in order."""

    def __init__(self, polls: int = 3) -> None:
        self.log: list[tuple[str, str]] = []
        self.polls: dict[str, int] = {}
        self.default_polls = polls
        self.live: set[str] = set()
        self.stored: set[str] = set()

    async def play(self, channel_id: str, media: list[str], playback_id: str, language: str) -> None:
        self.log.append(("play", f"{channel_id}:{media[0]}"))
        self.polls[playback_id] = self.default_polls

    async def playback_live(self, playback_id: str) -> bool:
        self.polls[playback_id] -= 1
        if self.polls[playback_id] <= 0:
            self.log.append(("notice_over", playback_id))
            return False
        return True

    async def record_bridge(self, bridge_id: str, name: str, fmt: str) -> None:
        self.log.append(("record", fmt))
        self.live.add(name)

    async def stop_recording(self, name: str) -> None:
        self.log.append(("stop", name))
        if name in self.live:
            self.live.discard(name)
            self.stored.add(name)

    async def live_recording_state(self, name: str) -> str | None:
        return "recording" if name in self.live else None

    async def stored_recording(self, name: str) -> bytes | None:
        return b"RIFF" if name in self.stored else None

    async def delete_stored_recording(self, name: str) -> None:
        self.log.append(("delete_stored", name))
        self.stored.discard(name)

    async def bridge_channel_count(self, bridge_id: str) -> int | None:
        return 2


class DownDb:
    """PostgreSQL gone: every statement fails like a lost connection."""

    async def fetchrow(self, *args: object) -> None:
        raise OSError("connection refused")

    async def execute(self, *args: object) -> None:
        raise OSError("connection refused")

    def transaction(self) -> DownDb:
        return self

    async def __aenter__(self) -> None:
        raise OSError("connection refused")

    async def __aexit__(self, *exc: object) -> None:
        return None


def parties() -> list[Party]:
    return [Party("ch-a", "a@example.com", "leg-a", "en"), Party("ch-b", "b@example.com", "leg-b", "fr")]


async def test_capture_starts_after_every_notice_is_over_and_is_dropped_without_its_metadata(tmp_path: Path) -> None:
    ops = FakeOps()
    service = RecordingService(DownDb(), ops, tmp_path)
    assert await service.start("conference", "bridge-1", parties(), conference_id=None) is None
    kinds = [k for k, _ in ops.log]
    assert kinds[:2] == ["play", "play"]
    assert ("play", "ch-b:sound:callctl/fr/recording-notice-conference") in ops.log
    assert kinds.index("record") > max(i for i, k in enumerate(kinds) if k == "notice_over")
    # The metadata could not be written: what Asterisk captured is stopped and deleted.
    assert kinds[-2:] == ["stop", "delete_stored"] and not ops.live and not ops.stored
    await service.close()


async def test_an_objection_throws_the_capture_away_even_with_the_store_down(tmp_path: Path) -> None:
    ops = FakeOps()
    service = RecordingService(DownDb(), ops, tmp_path)
    recording = CallRecording(service, "call-1", uuid.uuid4(), ("en", "fr"), "9", remote_is_caller=True)
    ops.live.add("callctl-x")
    recording.active = Active(uuid.uuid4(), "callctl-x", "call", "bridge-2")
    recording._remote = "caller-channel"
    await recording.hooks.on_digit("user-channel", "9")  # type: ignore[misc]
    assert recording.active is not None  # the user's keys never object
    await recording.hooks.on_digit("caller-channel", "9")  # type: ignore[misc]
    assert recording.active is None and recording.objected
    assert ("delete_stored", "callctl-x") in ops.log and not ops.stored and not ops.live
    assert not list(tmp_path.iterdir())  # noqa: ASYNC240 - nothing filed
    await recording.finish()  # nothing left to stop
    await service.close()


class MemoryDb:
    """Just enough of a store for filing: every statement succeeds."""

    async def execute(self, *args: object) -> str:
        return "UPDATE 1"


def reattached(bridge_id: str, source: str = "conference") -> Any:
    import datetime as dt

    from callctl.store.recordings import Recording

    return Recording(uuid.uuid4(), source, uuid.uuid4(), None, None, "callctl-old", bridge_id, "wav49", "recording",
                     dt.datetime(2026, 11, 23, 9, tzinfo=dt.UTC), None, None, None, None, None, "conference",
                     False, None, None)


class LeavingOps(FakeOps):
    """The old bridge holds its members for ``polls`` checks, then they are gone (Asterisk ends the
    recording itself once the bridge is empty)."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.members_for = polls
        self.live.add("callctl-old")

    async def bridge_channel_count(self, bridge_id: str) -> int | None:
        self.members_for -= 1
        if self.members_for < 0:
            self.stop_now()
            return 0
        return 1

    def stop_now(self) -> None:
        if "callctl-old" in self.live:
            self.live.discard("callctl-old")
            self.stored.add("callctl-old")


@pytest.mark.parametrize(("polls", "follows"), [(2, True), (0, False)])
async def test_a_reattached_conference_recording_follows_members_it_saw_leave(tmp_path: Path, polls: int,
                                                                             follows: bool) -> None:
    ops = LeavingOps(polls)
    service = RecordingService(MemoryDb(), ops, tmp_path, watch_poll_s=0)
    asked: list[uuid.UUID] = []

    async def start(conference_id: uuid.UUID) -> str:
        asked.append(conference_id)
        return "started"

    service.follow_rooms_with(start)
    row = reattached("bridge-old")
    await service._watch(row)
    assert (tmp_path / f"{row.id}.WAV").is_file()  # the old one is filed either way
    # Members seen in the old bridge, then gone: the new room is asked to record. A bridge found
    # empty at once (a reconnect re-attaching a row it could not file) is not followed.
    assert asked == ([row.conference_id] if follows else [])
    await service.close()
