"""A room's lease as members join (issue 17): a lease this node took or renewed less than half a lease ago
answers a member's join without a statement; another node's lease, a release, a renewal that lost it, or
half a lease gone by send the next join to PostgreSQL again."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from callctl.conference import affinity
from callctl.store import conferences as store


class FakeLeases:
    def __init__(self) -> None:
        self.owner: dict[uuid.UUID, str] = {}
        self.claims = 0
        self.renew_keeps = True

    async def claim_room(self, _pool: Any, conference_id: uuid.UUID, node: str, lease_s: float) -> store.Owner:
        self.claims += 1
        holder = self.owner.setdefault(conference_id, node)
        return store.Owner(holder, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lease_s))

    async def release_room(self, _pool: Any, conference_id: uuid.UUID, node: str) -> None:
        if self.owner.get(conference_id) == node:
            del self.owner[conference_id]

    async def renew_rooms(self, _pool: Any, rooms: Sequence[uuid.UUID], node: str, _lease_s: float) -> set[uuid.UUID]:
        return {r for r in rooms if self.renew_keeps and self.owner.get(r) == node}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLeases:
    fake = FakeLeases()
    for name in ("claim_room", "release_room", "renew_rooms"):
        monkeypatch.setattr(affinity.store, name, getattr(fake, name))
    return fake


async def test_members_joining_a_room_whose_lease_is_fresh_ask_postgresql_nothing(fake: FakeLeases) -> None:
    room, other = uuid.uuid4(), uuid.uuid4()
    leases = affinity.RoomLeases(None, "a", 30.0, lambda: [room])
    assert [await leases.claim(room) for _ in range(10)] == ["a"] * 10
    assert fake.claims == 1
    fake.owner[other] = "b"  # another node's room: asked every time (it may expire and move here)
    assert [await leases.claim(other) for _ in range(3)] == ["b"] * 3
    assert fake.claims == 4


async def test_a_released_or_lost_lease_or_half_a_lease_gone_by_sends_the_next_join_to_postgresql(
        fake: FakeLeases, monkeypatch: pytest.MonkeyPatch) -> None:
    room = uuid.uuid4()
    leases = affinity.RoomLeases(None, "a", 0.3, lambda: [room])
    await leases.claim(room)
    await leases.release(room)
    await leases.claim(room)
    assert fake.claims == 2
    # A renewal that does not keep the lease (another node took it over after an outage).
    fake.renew_keeps = False
    monkeypatch.setattr(affinity.asyncio, "sleep", _no_wait_once())
    with pytest.raises(_Stop):
        await leases.renew_forever()
    await leases.claim(room)
    assert fake.claims == 3
    # Half a lease after it was confirmed, the next join asks again.
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "time", lambda: 1e9)
    await leases.claim(room)
    assert fake.claims == 4


class _Stop(Exception):
    pass


def _no_wait_once() -> Any:
    calls = 0

    async def sleep(_s: float) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise _Stop

    return sleep
