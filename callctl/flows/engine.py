"""The step interpreter: runs one call's flow on a ``CallPort``, one step at a time.

Every wait is bounded. ``CallHungUp`` (and ``ChannelGone``) propagate untouched: the supervisor
records them as the caller's hang-up. Any other failure of a step is logged as
``flow_step_failed``; the caller hears a short apology and the call is hung up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import deque
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass

import phonenumbers

from callctl.calls.port import CallPort
from callctl.calls.trace import CallTrace, TraceStep
from callctl.errors import CallEnded, ChannelGone
from callctl.flows import registry, switches
from callctl.flows.conditions import when_answer
from callctl.flows.model import (
    Answer,
    Branch,
    Collect,
    Custom,
    Dial,
    Dialplan,
    Flow,
    Goto,
    GotoFlow,
    HangUp,
    Menu,
    Play,
    Python,
    Route,
    SetVars,
    Step,
    When,
    fill_template,
)
from callctl.logging import get_logger

log = get_logger("callctl.flows")

APOLOGY_MEDIA = ("sound:something-terribly-wrong",)
MAX_STEPS = 1000  # a caller-driven loop (a menu's "repeat" key) ends here rather than forever
HISTORY_STEPS = 64  # the longest loop the step-limit message can name
ANSWER_TIMEOUT_S = 10.0
PLAY_TIMEOUT_S = 600.0  # a prompt that never reports its end
HANGUP_TIMEOUT_S = 10.0
SWITCH_TIMEOUT_S = 2.0
GUARD_S = 5.0  # added to a port call that has its own timeout
DIAL_TALK_MAX_S = 6 * 3600.0  # dial returns when the bridged call ends

Tracer = Callable[[str, str, str], None]  # (flow, step label, what happened and why)




@dataclass(frozen=True)
class FlowResult:
    """How a flow ended: ``outcome`` is hangup (the flow hung up), completed (ran off its end) or
    error (a step failed); ``last_step`` is the label of the last step run."""

    flow: str
    last_step: str | None
    outcome: str
    steps_run: int = 0
    error: str | None = None
    loop: str | None = None  # at the step limit: the steps that kept repeating, "'a' -> 'b' -> 'a'"


class _Jump(Exception):
    def __init__(self, flow: str) -> None:
        super().__init__(flow)
        self.flow = flow


class _Ended(Exception):
    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class FlowRun:
    """The state of one call's flow: implements ``registry.FlowContext`` for custom steps."""

    def __init__(self, plan: Dialplan, route: Route, call: CallPort, now: Callable[[], dt.datetime],
                 trace: Tracer | None, switch_reader: switches.SwitchReader | None = None,
                 record: CallTrace | None = None) -> None:
        self.plan = plan
        self.route = route
        self.call = call
        self.flow = route.flow
        self.variables: MutableMapping[str, str] = {
            "caller": call.caller, "called": route.number, "language": route.language, "country": route.country,
            "caller_country": country_of(call.caller), "visits": "0",
        }
        self._visits: dict[tuple[str, int], int] = {}
        self._now = now
        self._trace = trace
        self._switches = switch_reader
        self._notes: list[str] = []
        self._history: deque[tuple[str, int, str]] = deque(maxlen=2 * HISTORY_STEPS)  # (flow, index, label)
        self.answered = False
        self._record_to = record  # the call's trace, appended as each step ends (kept if the caller hangs up)
        self._keys: list[str] = []
        self._prompts: list[str] = []
        self._step_t0 = 0.0
        self._running = False

    # -- FlowContext ----------------------------------------------------------------------------

    async def play(self, items: Sequence[str], *, interruptible: bool = True) -> str | None:
        media: list[str] = []
        self._prompts.extend(items)
        for item in items:
            media.extend(fill_template(m, self.variables) for m in self.plan.media(item, self.route.language))
        if not media:
            return None
        async with asyncio.timeout(PLAY_TIMEOUT_S):
            digit = await self.call.play(media, interruptible=interruptible)
        self.note(f"played {' '.join(media)}" + (f" (interrupted by '{digit}')" if digit else ""))
        return digit

    def note(self, text: str) -> None:
        self._notes.append(text)

    # -- the interpreter ------------------------------------------------------------------------

    async def run(self) -> FlowResult:
        flow = self.plan.flows[self.route.flow]
        i, steps_run, last = 0, 0, None
        try:
            while True:
                if i >= len(flow.steps):
                    await self._hang_up("normal")
                    return FlowResult(flow.name, last, "completed", steps_run)
                if steps_run >= MAX_STEPS:
                    return await self._stop_at_limit(flow.name, last, steps_run)
                step = flow.steps[i]
                last = step.label
                steps_run += 1
                visits = self._visits[(flow.name, i)] = self._visits.get((flow.name, i), 0) + 1
                self.variables["visits"] = str(visits)
                self._notes = []
                self._begin(step)
                try:
                    target = await self._step(step)
                except _Jump as jump:
                    self._emit(flow, step, f"flow {jump.flow}")
                    flow, i = self.plan.flows[jump.flow], 0
                    self.flow = flow.name
                    continue
                except _Ended as ended:
                    self._emit(flow, step, f"hang up ({ended.cause})")
                    await self._hang_up(ended.cause)
                    return FlowResult(flow.name, last, "hangup", steps_run)
                self._emit(flow, step, target if target is not None else "next")
                i = flow.index_of(target) if target is not None else i + 1
        except (CallEnded, ChannelGone):
            if self._running:
                self._record(flow.name, flow.steps[i] if i < len(flow.steps) else None, "caller hung up")
            raise
        except Exception as exc:
            if self._trace is None:  # a simulation prints the failure in its trace, not a traceback
                log.error("flow_step_failed", flow=flow.name, step=last, error=f"{type(exc).__name__}: {exc}",
                          exc_info=True)
            self._notes.append(f"failed: {type(exc).__name__}: {exc}")
            if last is not None:
                self._trace_line(flow.name, last)
                self._record(flow.name, flow.steps[i] if i < len(flow.steps) else None,
                             f"error: {type(exc).__name__}")
            await self._apologise()
            return FlowResult(flow.name, last, "error", steps_run, error=f"{type(exc).__name__}: {exc}")

    def _begin(self, step: Step) -> None:
        self._running = True
        if self._record_to is not None:
            self._record_to.flow, self._record_to.current = self.flow, step.label
        self._keys = []
        self._prompts = []
        self._step_t0 = time.monotonic()

    async def _stop_at_limit(self, flow: str, last: str | None, steps_run: int) -> FlowResult:
        """A loop the caller keeps going (or a simulation with no keys left) ends here: one warning
        naming the loop, no traceback; the caller hears the apology like any failed flow."""
        loop = repeating_path(list(self._history))
        if self._trace is None:
            log.warning("flow_step_limit", flow=flow, step=last, steps=steps_run, loop=loop)
        await self._apologise()
        return FlowResult(flow, last, "error", steps_run,
                          error=f"step limit of {MAX_STEPS} reached, going round {loop}", loop=loop)

    def _emit(self, flow: Flow, step: Step, result: str) -> None:
        self._history.append((flow.name, step.index, step.label))
        if self._trace is None:
            log.debug("flow_step", flow=flow.name, step=step.label, kind=step.kind, notes=self._notes)
        self._trace_line(flow.name, step.label)
        self._record(flow.name, step, result)

    def _record(self, flow: str, step: Step | None, result: str) -> None:
        self._running = False
        if self._record_to is None or step is None:
            return
        keys = "".join(self._keys)
        if isinstance(step, Collect):  # collected digits are codes, PINs, order numbers: never kept
            keys = "*" * len(keys)
        self._record_to.steps.append(TraceStep(flow, step.label, step.kind, result,
                                               int((time.monotonic() - self._step_t0) * 1000), keys,
                                               tuple(self._prompts)))
        self._record_to.current = None

    def _trace_line(self, flow: str, label: str) -> None:
        if self._trace is not None:
            self._trace(flow, label, "; ".join(self._notes))

    async def _hang_up(self, cause: str) -> None:
        async with asyncio.timeout(HANGUP_TIMEOUT_S):
            await self.call.hang_up(cause)

    async def _apologise(self) -> None:
        try:
            if self.answered:
                async with asyncio.timeout(30.0):
                    await self.call.play(list(APOLOGY_MEDIA), interruptible=False)
            await self._hang_up("normal" if self.answered else "failure")
        except (CallEnded, ChannelGone):
            raise
        except Exception as exc:  # the call is ending anyway; the supervisor cleans up the channel
            log.warning("flow_apology_failed", flow=self.flow, error=f"{type(exc).__name__}: {exc}")

    async def _step(self, step: Step) -> str | None:
        """Run one step; return the step name to go to, or None for the next step."""
        if isinstance(step, Answer):
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await self.call.answer()
            self.answered = True
            self.note("answered")
            return None
        if isinstance(step, Play):
            await self.play(step.prompts, interruptible=step.interruptible)
            return None
        if isinstance(step, Menu):
            return await self._menu(step)
        if isinstance(step, Collect):
            return await self._collect(step)
        if isinstance(step, SetVars):
            for var, template in step.values.items():
                self.variables[var] = fill_template(template, self.variables)
            self.note(", ".join(f"{k} = '{self.variables[k]}'" for k in step.values))
            return None
        if isinstance(step, Goto):
            self.note(f"go to '{step.target}'")
            return step.target
        if isinstance(step, GotoFlow):
            self.note(f"continue in flow '{step.flow}'")
            raise _Jump(step.flow)
        if isinstance(step, HangUp):
            self.note(f"hang up ({step.cause})")
            raise _Ended(step.cause)
        if isinstance(step, Dial):
            return await self._dial(step)
        if isinstance(step, When):
            return await self._when(step)
        if isinstance(step, Branch):
            value = fill_template(step.value, self.variables)
            goto, why = step.choose(value)
            self.note(why + (f" -> '{goto}'" if goto else " -> next step"))
            return goto
        if isinstance(step, Python):
            return await self._python(step)
        if isinstance(step, Custom):
            return await self._custom(step)
        raise TypeError(f"no interpreter for step type {type(step).__name__}")

    async def _read(self, timeout_s: float) -> str | None:
        async with asyncio.timeout(timeout_s + GUARD_S):
            key = await self.call.read_digit(timeout_s)
        if key is not None:
            self._keys.append(key)
        return key

    async def _menu(self, step: Menu) -> str | None:
        for attempt in range(1, step.attempts + 1):
            await self.play(step.prompts)
            keys = await self._read(step.timeout_s)
            if keys is None:
                self.note(f"attempt {attempt}: no key within {step.timeout_s:g} s")
                await self.play(step.no_input)
                continue
            while keys not in step.options and any(k.startswith(keys) for k in step.options):
                more = await self._read(step.digit_timeout_s)
                if more is None:
                    break
                keys += more
            target = step.options.get(keys)
            if target is not None:
                self.note(f"key '{keys}' -> '{target}'")
                return target
            self.note(f"attempt {attempt}: key '{keys}' is not an option")
            self.call.clear_digits()
            await self.play(step.invalid)
        return self._failed(step.attempts, step.on_failure)

    def _failed(self, attempts: int, on_failure: str | None) -> str:
        if on_failure is None:
            self.note(f"{attempts} attempts failed: hang up")
            raise _Ended("normal")
        self.note(f"{attempts} attempts failed -> '{on_failure}'")
        return on_failure

    async def _collect(self, step: Collect) -> str | None:
        for attempt in range(1, step.attempts + 1):
            await self.play(step.prompts)
            digits, reason = await self._collect_once(step)
            if reason == "ok":
                self.variables[step.into] = digits
                self.note(f"{step.into} = '{digits}'")
                return None
            if reason == "no_input":
                self.note(f"attempt {attempt}: no digit within {step.timeout_s:g} s")
                await self.play(step.no_input)
            else:
                self.note(f"attempt {attempt}: '{digits}' refused ({reason})")
                self.call.clear_digits()
                await self.play(step.invalid)
        return self._failed(step.attempts, step.on_failure)

    async def _collect_once(self, step: Collect) -> tuple[str, str]:
        digits = ""
        while True:
            key = await self._read(step.timeout_s if not digits else step.digit_timeout_s)
            if key is None:
                if not digits:
                    return "", "no_input"
                if len(digits) >= step.min_digits:
                    return digits, "ok"
                return digits, f"fewer than {step.min_digits} digits"
            if step.terminator and key == step.terminator:
                if len(digits) < step.min_digits:
                    return digits + key, f"fewer than {step.min_digits} digits"
                return digits, "ok"
            if not key.isdigit():
                return digits + key, f"key '{key}' is not a digit"
            digits += key
            if len(digits) >= step.max_digits:
                if not step.terminator:
                    return digits, "ok"
                # "4 digits then #": take the # too, so it does not cut the next prompt short.
                key = await self._read(step.digit_timeout_s)
                if key is None or key == step.terminator:
                    return digits, "ok"
                return digits + key, f"more than {step.max_digits} digits"

    async def _dial(self, step: Dial) -> str | None:
        target = fill_template(step.target, self.variables)
        caller_id = fill_template(step.caller_id, self.variables) if step.caller_id else None
        async with asyncio.timeout(step.timeout_s + DIAL_TALK_MAX_S):
            outcome = await self.call.dial(target, timeout_s=step.timeout_s, caller_id=caller_id)
        self.variables["dial_status"] = outcome.status
        goto = step.branches.get(outcome.status)
        self.note(f"dialled {target}: {outcome.status}" + (f" -> '{goto}'" if goto else ""))
        return goto

    async def _when(self, step: When) -> str | None:
        switch = None
        if step.switch is not None:
            reader = self._switches if self._switches is not None else switches.bound()
            switch = await switches.read(self.plan.switches[step.switch], reader, SWITCH_TIMEOUT_S,
                                         quiet=self._trace is not None)
        inside, why = when_answer(step, self.plan, self.route.country, self._now(), switch)
        goto = step.then if inside else step.otherwise
        self.note(why + (f" -> '{goto}'" if goto else " -> next step"))
        return goto

    async def _python(self, step: Python) -> str | None:
        spec = registry.python_steps().get(step.function)
        if spec is None:
            raise LookupError(f"python step '{step.function}' is no longer registered")
        async with asyncio.timeout(spec.timeout_s):
            goto = await spec.fn(self, step.args)
        return self._checked_target(step, goto)

    async def _custom(self, step: Custom) -> str | None:
        spec = registry.step_types().get(step.type_name)
        if spec is None:
            raise LookupError(f"step type '{step.type_name}' is no longer registered")
        if spec.timeout_s is None:
            goto = await spec.run(self, step.config)
        else:
            async with asyncio.timeout(spec.timeout_s):
                goto = await spec.run(self, step.config)
        if spec.ends_flow:
            raise _Ended("normal")
        return self._checked_target(step, goto)

    def _checked_target(self, step: Step, goto: str | None) -> str | None:
        flow = self.plan.flows[self.flow]
        if goto is not None and not any(s.name == goto for s in flow.steps):
            raise LookupError(f"step '{step.label}' asked to go to unknown step '{goto}'")
        return goto


def repeating_path(history: Sequence[tuple[str, int, str]]) -> str:
    """The shortest cycle at the end of ``history`` (flow, step index, label) as
    "'a' -> 'b' -> 'a' in flow 'f'", from its step written first; the last steps run when no
    cycle shows within the history."""
    period = next((p for p in range(1, len(history) // 2 + 1) if history[-p:] == history[-2 * p:-p]), 0)
    if period == 0:
        tail = list(history[-HISTORY_STEPS:])
        return "no repeating path (last steps: " + " -> ".join(f"'{label}'" for _, _, label in tail) + ")"
    cycle = list(history[-period:])
    start = min(range(period), key=lambda n: (cycle[n][1], cycle[n][0]))
    cycle = cycle[start:] + cycle[:start]
    flows = list(dict.fromkeys(f for f, _, _ in cycle))
    if len(flows) == 1:
        return " -> ".join(f"'{label}'" for _, _, label in [*cycle, cycle[0]]) + f" in flow '{flows[0]}'"
    return " -> ".join(f"flow '{f}' '{label}'" for f, _, label in [*cycle, cycle[0]])


def country_of(number: str) -> str:
    """ISO code of an E.164 caller number ("+33..." -> "FR"); "" when unknown or withheld."""
    if not number.startswith("+"):
        return ""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return ""
    return str(region) if region and region != phonenumbers.UNKNOWN_REGION else ""


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def run_flow(plan: Dialplan, route: Route, call: CallPort, *, now: Callable[[], dt.datetime] = _utc_now,
                   trace: Tracer | None = None, switch_reader: switches.SwitchReader | None = None,
                   record: CallTrace | None = None) -> FlowResult:
    """Run ``route.flow`` of ``plan`` on ``call``. ``now`` (aware datetimes) drives ``when`` steps;
    ``trace`` receives one line per step (the simulator prints them); ``switch_reader`` answers
    ``when: {switch: ...}`` (default: the one the daemon bound); ``record`` receives one
    ``TraceStep`` per step as it ends, the one cut short by a hang-up or an error included, and
    names the step running now."""
    return await FlowRun(plan, route, call, now, trace, switch_reader, record).run()
