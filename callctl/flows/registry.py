"""Extension points of the flow language: new step types and named Python steps.

Feature packages (conference, recording, gating) register here at import time, before the
dialplan is loaded, so the loader validates their YAML and the engine runs them.

A step type is ``parse_fn(reader) -> config`` (validate the step's YAML with the reader's helpers,
return any frozen config; report problems with ``reader.error``) plus ``async run_fn(ctx, config)
-> str | None`` (do the work; return a step name to jump to, or None for the next step).
A Python step is ``async fn(ctx, args) -> str | None`` registered with ``@register_python_step``.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from callctl.calls.port import CallPort
    from callctl.flows.model import Dialplan, Route
    from callctl.flows.reader import StepReader


class FlowContext(Protocol):
    """What a running step sees: the call, the route, the dialplan it started with, variables."""

    call: CallPort
    plan: Dialplan
    route: Route
    flow: str
    variables: MutableMapping[str, str]

    async def play(self, items: Sequence[str], *, interruptible: bool = True) -> str | None:
        """Play prompt names or media URIs in the call's language ("{var}" filled in)."""

    def note(self, text: str) -> None:
        """Say why the step did what it did (printed by ``dialplan simulate``, logged at debug)."""


ParseFn = Callable[["StepReader"], Any]
RunFn = Callable[[FlowContext, Any], Awaitable[str | None]]
PythonStepFn = Callable[[FlowContext, Mapping[str, Any]], Awaitable[str | None]]


@dataclass(frozen=True)
class StepType:
    name: str
    parse: ParseFn
    run: RunFn
    ends_flow: bool = False
    timeout_s: float | None = None
    stores: tuple[str, ...] = ()


@dataclass(frozen=True)
class PythonStep:
    name: str
    fn: PythonStepFn
    timeout_s: float


# Feature modules that register step types. ``load_dialplan`` imports them first, so the daemon,
# the command line, gating and tests all read the same language (the sample dialplan uses them).
STEP_MODULES = ("callctl.conference.steps", "callctl.voicemail.steps")


def import_step_modules() -> None:
    """Import the feature modules of ``STEP_MODULES`` (each registers its step types once)."""
    for module in STEP_MODULES:
        importlib.import_module(module)


_STEP_TYPES: dict[str, StepType] = {}
_PYTHON_STEPS: dict[str, PythonStep] = {}
RESERVED = frozenset({"answer", "play", "collect", "menu", "set", "goto", "flow", "hangup", "dial",
                      "python", "when", "branch", "name"})


def register_step_type(name: str, parse_fn: ParseFn, run_fn: RunFn, *, ends_flow: bool = False,
                       timeout_s: float | None = None, stores: Sequence[str] = ()) -> None:
    """Add a step type ``name`` to the language. ``ends_flow``: the step never continues to the
    next one (like hangup). ``timeout_s``: a bound on the whole step (None: the step bounds itself).
    ``stores``: variables the step sets, so flows may use them as ``{name}`` after it."""
    if name in RESERVED:
        raise ValueError(f"step type '{name}' is built in")
    if name in _STEP_TYPES and _STEP_TYPES[name].run is not run_fn:
        raise ValueError(f"step type '{name}' is already registered")
    _STEP_TYPES[name] = StepType(name, parse_fn, run_fn, ends_flow, timeout_s, tuple(stores))


def register_python_step(name: str, *, timeout_s: float = 60.0) -> Callable[[PythonStepFn], PythonStepFn]:
    """Decorator: make ``async fn(ctx, args)`` callable from a flow as ``- python: name``."""

    def decorate(fn: PythonStepFn) -> PythonStepFn:
        if name in _PYTHON_STEPS and _PYTHON_STEPS[name].fn is not fn:
            raise ValueError(f"python step '{name}' is already registered")
        _PYTHON_STEPS[name] = PythonStep(name, fn, timeout_s)
        return fn

    return decorate


def step_types() -> Mapping[str, StepType]:
    return dict(_STEP_TYPES)


def python_steps() -> Mapping[str, PythonStep]:
    return dict(_PYTHON_STEPS)


def unregister(name: str) -> None:
    """Remove a step type or python step (tests)."""
    _STEP_TYPES.pop(name, None)
    _PYTHON_STEPS.pop(name, None)


# -- built-in python steps ----------------------------------------------------------------------


@register_python_step("say_caller_number", timeout_s=60.0)
async def say_caller_number(ctx: FlowContext, args: Mapping[str, Any]) -> str | None:
    """Read the caller's number back digit by digit (an example of a Python step)."""
    digits = "".join(ch for ch in ctx.call.caller if ch.isdigit())
    if not digits:
        ctx.note("caller number unknown: nothing to say")
        return None
    ctx.note(f"saying the caller's number ({len(digits)} digits)")
    interruptible = str(args.get("interruptible", "true")).lower() not in ("false", "no", "off")
    await ctx.play([f"digits:{digits}"], interruptible=interruptible)
    return None
