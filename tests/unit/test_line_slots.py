"""Channel slots (callctl.lines.slots) around a fake store: PostgreSQL unreachable at a take or a release,
the reconciliation of a node's slots, the lease setting."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from callctl.config import load_settings
from callctl.errors import ConfigError, StoreUnavailable
from callctl.lines.slots import SharedChannelLimits, SlotStore


@dataclass(frozen=True)
class User:
    user_id: uuid.UUID = field(default_factory=uuid.uuid4)
    channel_limit: int = 1


class FakeSlots:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], uuid.UUID] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("PostgreSQL at 127.0.0.1:1 refused the connection")

    async def take(self, user: uuid.UUID, node: str, channel: str, limit: int, lease_s: float) -> bool:
        self._check()
        if (node, channel) in self.rows:
            return True
        if sum(1 for u in self.rows.values() if u == user) >= limit:
            return False
        self.rows[(node, channel)] = user
        return True

    async def release(self, node: str, channels: Sequence[str]) -> None:
        self._check()
        for channel in channels:
            self.rows.pop((node, channel), None)

    async def node_channels(self, node: str) -> list[str]:
        self._check()
        return [c for n, c in self.rows if n == node]

    async def heartbeat(self, node: str, lease_s: float) -> int:
        self._check()
        return 0

    def store(self) -> SlotStore:
        return SlotStore(self.take, self.release, self.node_channels, self.heartbeat)


def limits(fake: FakeSlots, up: set[str] | None = None, owned: set[str] | None = None) -> SharedChannelLimits:
    async def channel_up(channel: str) -> bool:
        return channel in (up or set())

    return SharedChannelLimits(fake.store(), "node1", lease_s=15, owned=lambda: owned or set(),
                               channel_up=channel_up)


async def test_the_count_is_the_stores_and_a_call_is_let_through_when_it_cannot_be_asked() -> None:
    fake, user = FakeSlots(), User()
    slots = limits(fake)
    assert await slots.take(user, "ch-1")
    assert not await slots.take(user, "ch-2")
    fake.down = True
    assert await slots.take(user, "ch-2")  # unchecked, never a cut call


async def test_a_release_that_failed_is_retried_at_the_next_heartbeat() -> None:
    fake, user = FakeSlots(), User()
    slots = limits(fake)
    assert await slots.take(user, "ch-1")
    fake.down = True
    await slots.release(user, "ch-1")
    await slots.beat()
    assert fake.rows  # still down: kept for later
    fake.down = False
    await slots.beat()
    assert fake.rows == {}


async def test_reconciling_frees_only_slots_whose_channel_is_gone_and_not_owned() -> None:
    fake, user = FakeSlots(), User(channel_limit=3)
    for channel in ("gone", "up", "owned"):
        assert await fake.take(user.user_id, "node1", channel, 3, 15)
    await fake.take(uuid.uuid4(), "node2", "elsewhere", 1, 15)
    assert await limits(fake, up={"up"}, owned={"owned"}).reconcile() == 1
    assert set(fake.rows) == {("node1", "up"), ("node1", "owned"), ("node2", "elsewhere")}


def test_a_lease_below_three_seconds_is_refused_naming_the_setting(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("node_lease_s: 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(f, {})
    assert "node_lease_s 1.0 must be at least 3 seconds" in str(info.value)
