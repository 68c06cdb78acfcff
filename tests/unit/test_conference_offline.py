"""The codes kept for a database outage (callctl.conference.offline) around a fake store."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from callctl.conference import offline
from callctl.errors import StoreUnavailable
from callctl.store.conferences import CodeMatch, Conference

NOW = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
ACCESS = "+33900000100"


def match(access: str = ACCESS) -> CodeMatch:
    conf = Conference(uuid.uuid4(), "Weekly", NOW, NOW + dt.timedelta(hours=1), "org@example.com", (access,), "en",
                      50, "end", 60, 900, 1800, None, None, None, None)
    return CodeMatch(conf, "p0@example.com", "participant")


class FakeStore:
    def __init__(self) -> None:
        self.down = False
        self.codes: list[tuple[str, CodeMatch]] = []
        self.written: list[Any] = []

    async def codes_near(self, pool: Any, now: dt.datetime, horizon_s: float) -> list[tuple[str, CodeMatch]]:
        if self.down:
            raise StoreUnavailable("PostgreSQL at 127.0.0.1:1 refused the connection")
        return list(self.codes)

    async def record_attempts(self, pool: Any, rows: list[Any]) -> None:
        if self.down:
            raise StoreUnavailable("PostgreSQL at 127.0.0.1:1 refused the connection")
        self.written += rows


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    store = FakeStore()
    monkeypatch.setattr(offline.store, "codes_near", store.codes_near)
    monkeypatch.setattr(offline.store, "record_attempts", store.record_attempts)
    return store


async def test_codes_are_found_only_on_their_own_access_number_and_kept_through_an_outage(fake: FakeStore) -> None:
    codes = offline.OfflineCodes(None, clock=lambda: NOW)
    assert not codes.ready
    fake.codes = [("12345678", match())]
    await codes.refresh()
    fake.down = True
    await codes.refresh()  # the outage keeps the last copy
    assert codes.ready and codes.find("12345678", ACCESS) is not None
    assert codes.find("12345678", "+33900000999") is None and codes.find("87654321", ACCESS) is None


async def test_wrong_codes_are_counted_in_memory_and_written_with_their_time_when_the_database_is_back(
        fake: FakeStore) -> None:
    now = [NOW]
    codes = offline.OfflineCodes(None, clock=lambda: now[0])
    await codes.refresh()
    fake.down = True
    assert codes.wrong_code("+33611000001", ACCESS, 600) == (1, 1)
    now[0] += dt.timedelta(seconds=10)
    assert codes.wrong_code("+33611000002", ACCESS, 600) == (1, 2)
    assert codes.failures("+33611000001", ACCESS, 5) == (0, 1)  # the window slides
    await codes.refresh()
    assert fake.written == []
    fake.down = False
    await codes.refresh()
    assert [(c, reason, at) for c, _n, reason, _conf, at in fake.written] == [
        ("+33611000001", "wrong_code", NOW), ("+33611000002", "wrong_code", NOW + dt.timedelta(seconds=10))]
    assert codes.failures("+33611000001", ACCESS, 600) == (0, 0)  # the database counts them from now on
