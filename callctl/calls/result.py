"""What the handler of a call says about it, for its CDR (pure): typed tags, free-form extras, the
rating of a leg the call charged, and one ``on_end`` hook run once the call's end is known."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from callctl.calls.lifecycle import Lifecycle
from callctl.calls.trace import CallTrace
from callctl.ids import ChannelId

# The end of a call the handler charged itself (an originated call): its billed seconds -> the CDR's
# rating columns. Run by the supervisor once Asterisk has reported the end, so the debit and the CDR
# use the same seconds.
OnEnd = Callable[[int], Awaitable[Mapping[str, Any]]]


@dataclass
class Rating:
    """The rating columns of a CDR (set on a leg when the engine charged it; None: not rated here)."""

    rating_deck: str | None = None
    rating_prefix: str | None = None
    rate_per_minute: Decimal | None = None
    cost: Decimal | None = None
    currency: str | None = None
    included: bool | None = None

    def update(self, columns: Mapping[str, Any]) -> None:
        """Take the columns billing returned (``billing.service.PrepaidBilling.finish``); unknown keys are refused."""
        for name, value in columns.items():
            if not hasattr(self, name):
                raise ValueError(f"unknown rating column {name!r}")
            setattr(self, name, value)

    def columns(self) -> dict[str, Any]:
        return {name: value for name, value in vars(self).items() if value is not None}


@dataclass
class CallResult:
    """Tags the handler of a call sets as it goes; the supervisor turns them into the call's CDR."""

    flow: str | None = None
    dialplan_version: str | None = None
    direction: str = "inbound"
    disposition: str | None = None  # None: the lifecycle's (ANSWERED, BUSY...); e.g. EMERGENCY_REFUSED
    account_id: str | None = None
    user_id: str | None = None
    conference_id: str | None = None
    person: str | None = None
    role: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # goes to the CDR's ``extra`` as is
    rating: Rating = field(default_factory=Rating)
    on_end: OnEnd | None = None
    trace: CallTrace = field(default_factory=CallTrace)  # the flow's steps (CDR extra.trace)


@dataclass
class OutboundLeg:
    """A leg the call dialled: its own lifecycle and, at the end of the call, its own CDR."""

    channel_id: ChannelId
    target: str
    lifecycle: Lifecycle
    caller_id: str | None = None
    rating: Rating = field(default_factory=Rating)  # set when a feature charged this leg


@dataclass(frozen=True)
class EndedCall:
    """A call whose CDR has been handed to the writer (told to ``CallEnds`` listeners)."""

    channel_id: str
    billed_s: int
    adopted: bool  # taken over at a resync: a previous engine may hold credit for it
