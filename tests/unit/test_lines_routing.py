"""Business-line routing with a fake call (the real thing: tests/integration/test_lines_calls.py)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from callctl.calls.port import DialOutcome
from callctl.calls.result import CallResult
from callctl.lines.routing import LineLookups, LineService, endpoint_of


@dataclass(frozen=True)
class User:
    user_id: uuid.UUID = field(default_factory=uuid.uuid4)
    account_id: uuid.UUID = field(default_factory=uuid.uuid4)
    sip_username: str = "alice"
    forward_to: str | None = "+33611111111"
    country: str = "FR"
    numbers: tuple[str, ...] = ("+33170000001",)
    extra_channels: int = 0
    suspended: bool = False

    @property
    def channel_limit(self) -> int:
        return 1 + self.extra_channels


_CHANNELS = itertools.count(42)


class FakeCall:
    def __init__(self, called: str, outcomes: dict[str, str], hold: asyncio.Event | None = None) -> None:
        self.caller, self.called, self.language = "+33612345678", called, "en"
        self.channel_id = f"1700000000.{next(_CHANNELS)}"  # each call its own channel (its slot's key)
        self.call_id = "5f0c8a0e-7b55-4c1e-9a39-2d6f3c1b9e02"
        self.result = CallResult()
        self.dialled: list[tuple[str, str | None]] = []
        self.hung_up: str | None = None
        self.legs: list[Any] = []
        self.max_talk: list[float | None] = []
        self._outcomes = outcomes
        self._hold = hold

    async def answer(self) -> None:
        pass

    async def play(self, media: Any, *, interruptible: bool = True) -> str | None:
        return None

    async def dial(self, target: str, *, timeout_s: float, caller_id: str | None = None,
                   max_talk_s: float | None = None, headers: dict[str, str] | None = None,
                   hooks: Any = None, variables: dict[str, str] | None = None) -> DialOutcome:
        self.dialled.append((target, caller_id))
        self.max_talk.append(max_talk_s)
        if self._hold is not None:
            await self._hold.wait()
        return DialOutcome(self._outcomes.get(target.split("@")[0], "answered"))

    async def hang_up(self, cause: str = "normal") -> None:
        self.hung_up = cause


async def wait_until(condition: Any, timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling a fake's state with a deadline
            await asyncio.sleep(0.001)


def service(user: User) -> LineService:
    async def by_did(number: str) -> User | None:
        return user if number in user.numbers else None

    async def by_endpoint(name: str) -> User | None:
        return user if name == user.sip_username else None

    return LineService(LineLookups(by_did, by_endpoint))


async def test_outbound_national_number_goes_to_the_trunk_in_e164_with_the_users_did() -> None:
    user = User()
    call = FakeCall("0123456789", {})
    assert await service(user).outbound(call, "alice") == "dialled_answered"
    assert call.dialled == [("PJSIP/+33123456789@pstn", "+33170000001")]
    assert call.result.user_id == str(user.user_id)


async def test_two_simultaneous_calls_from_a_one_channel_user_one_is_refused_busy() -> None:
    user = User()
    svc = service(user)
    hold = asyncio.Event()
    first, second = FakeCall("0123456789", {}, hold), FakeCall("0123456780", {})
    task = asyncio.create_task(svc.outbound(first, "alice"))
    await wait_until(lambda: first.dialled)  # the first call holds the channel and is dialling
    assert await svc.outbound(second, "alice") == "channel_limit"
    assert second.hung_up == "busy" and second.result.extra["refused"] == "channel_limit"
    hold.set()
    assert await task == "dialled_answered"
    assert svc.limits.active(user.user_id) == 0


async def test_an_extra_channel_allows_the_second_call() -> None:
    user = User(extra_channels=1)
    svc = service(user)
    hold = asyncio.Event()
    first = FakeCall("0123456789", {}, hold)
    task = asyncio.create_task(svc.outbound(first, "alice"))
    await wait_until(lambda: first.dialled)  # the first call holds the channel and is dialling
    assert await svc.outbound(FakeCall("0123456780", {}), "alice") == "dialled_answered"
    hold.set()
    await task


async def test_inbound_no_answer_forwards_to_the_mobile_through_the_trunk() -> None:
    user = User()
    call = FakeCall("+33170000001", {"PJSIP/alice": "noanswer"})
    assert await service(user).inbound(call, user) == "forwarded"
    assert [t for t, _ in call.dialled] == ["PJSIP/alice", "PJSIP/+33611111111@pstn"]


async def test_inbound_without_forward_number_hears_a_message() -> None:
    user = User(forward_to=None)
    call = FakeCall("+33170000001", {"PJSIP/alice": "busy"})
    assert await service(user).inbound(call, user) == "unavailable_busy"
    assert call.hung_up == "normal"


def test_endpoint_of_channel_name() -> None:
    assert endpoint_of("PJSIP/alice-0000002a") == "alice"
    assert endpoint_of("PJSIP/u-acme-01-00000001") == "u-acme-01"
    assert endpoint_of("garbage") == ""


@dataclass(frozen=True)
class Auth:
    max_seconds: int
    reservation_id: uuid.UUID | None
    reason: str | None = None

    @property
    def allowed(self) -> bool:
        return self.max_seconds > 0


class FakeBilling:
    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.settled: list[tuple[uuid.UUID, int]] = []
        self.channels: list[str | None] = []

    async def authorize(self, account_id: uuid.UUID, from_e164: str, to_e164: str, *,
                        user_id: uuid.UUID | None = None, channel_id: str | None = None) -> Auth:
        self.channels.append(channel_id)
        if not self.seconds:
            return Auth(0, None, "prepaid credit 0 EUR does not pay for 1 s")
        return Auth(self.seconds, uuid.uuid4())

    async def finish(self, auth: Auth, billed_seconds: int) -> dict[str, Any]:
        assert auth.reservation_id is not None
        self.settled.append((auth.reservation_id, billed_seconds))
        return {"rating_prefix": "331", "cost": Decimal("0.0100")}


async def test_prepaid_limit_goes_to_the_dial_and_the_reservation_is_settled() -> None:
    user = User()
    billing = FakeBilling(seconds=42)
    svc = LineService(service(user)._lookups, billing=billing)
    call = FakeCall("0123456789", {})
    assert await svc.outbound(call, "alice") == "dialled_answered"
    assert call.max_talk == [42.0]
    assert len(billing.settled) == 1 and billing.channels == [call.channel_id]  # the hold names the call's channel
    # the cost is the dialled leg's `cost` column, not repeated on the call
    assert "cost" not in call.result.extra and call.result.rating.cost is None


async def test_no_credit_refuses_the_call_with_a_message_and_nothing_is_dialled() -> None:
    user = User()
    svc = LineService(service(user)._lookups, billing=FakeBilling(seconds=0))
    call = FakeCall("0123456789", {})
    assert await svc.outbound(call, "alice") == "not_authorised"
    assert call.dialled == [] and "does not pay" in call.result.extra["refused"]
    assert svc.limits.active(user.user_id) == 0


async def test_a_suspended_account_cannot_call_out_or_be_called() -> None:
    user = User(suspended=True)
    call = FakeCall("0123456789", {})
    assert await service(user).outbound(call, "alice") == "account_suspended"
    assert call.dialled == [] and call.hung_up == "rejected"
    inbound = FakeCall("+33170000001", {})
    assert await service(user).inbound(inbound, user) == "account_suspended"
