"""What a call did, step by step, as it runs (pure): kept on the call's result, stored in its CDR's
``extra.trace``, read by ``callctl call show``; the step running now feeds ``callctl calls``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class TraceStep:
    """One step a call took, as stored with its CDR (``extra.trace``) and shown by ``callctl call show``.

    ``keys`` are the keys the step read: menu choices as pressed, digits collected into a variable
    masked (one ``*`` per key: codes, PINs and order numbers are not kept); keys read by custom steps
    (conference codes) are never seen here. ``prompts`` are the prompt names and media templates as
    written (``digits:{code}``, never the filled value)."""

    flow: str
    step: str
    kind: str
    result: str
    ms: int
    keys: str = ""
    prompts: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"flow": self.flow, "step": self.step, "kind": self.kind,
                                  "result": self.result, "ms": self.ms}
        if self.keys:
            out["keys"] = self.keys
        if self.prompts:
            out["prompts"] = list(self.prompts)
        return out


@dataclass
class CallTrace:
    """A call's trace as it runs: the steps taken so far and the step running now (``callctl calls``).
    Owned by the call's task; others only read it."""

    steps: list[TraceStep] = field(default_factory=list)
    flow: str | None = None
    current: str | None = None

    def as_json(self) -> list[dict[str, object]]:
        return [s.as_json() for s in self.steps]


class Running(Protocol):
    """What ``in_progress`` reads of a call (``calls.call.Call``)."""

    @property
    def call_id(self) -> str: ...
    @property
    def caller(self) -> str: ...
    @property
    def called(self) -> str: ...
    @property
    def result(self) -> Any: ...  # calls.result.CallResult (which holds this module's CallTrace)
    @property
    def lifecycle(self) -> Any: ...  # calls.lifecycle.Lifecycle


def in_progress(calls: Iterable[Running], now: dt.datetime, *, mask: Callable[[str], str]) -> list[dict[str, object]]:
    """One row per call in progress (``callctl calls``): caller masked with ``mask``, the number
    called, its flow and the step running now, ringing/answered, seconds since it arrived."""
    rows: list[dict[str, object]] = []
    for call in calls:
        trace: CallTrace = call.result.trace
        rows.append({"call_id": str(call.call_id), "caller": mask(call.caller or ""), "called": call.called,
                     "flow": trace.flow or call.result.flow, "step": trace.current,
                     "state": call.lifecycle.state,
                     "duration_s": round((now - call.lifecycle.started_at).total_seconds(), 1)})
    return rows
