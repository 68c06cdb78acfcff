"""The ``conference`` flow step: ask for a personal code and put the caller in their conference.

    - conference:            # every option may be left out
        attempts: 3          # code entries per call
        max_digits: 16
        first_digit_timeout: 10
        digit_timeout: 5
        prompts:             # prompt names or media per situation (defaults: stock prompts)
          ask: conf_enter_code
          too_early: conf_too_early

After the step, ``{conference_outcome}`` holds what happened (joined then left: conference_left;
no_valid_code, locked_out, too_early, over, locked, full, in_use, store_unavailable, and on an
organizer-paid number minutes_unavailable: docs/minutes.md).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from callctl.conference.minutes import PaidLine
from callctl.conference.service import ConferenceService, EntryOptions, EntryPrompts
from callctl.flows.registry import FlowContext, register_step_type
from callctl.freeminutes import MeterTerms

_service: ConferenceService | None = None


def bind(service: ConferenceService | None) -> None:
    """Called by the daemon once its conference service exists (None to unbind at shutdown)."""
    global _service
    _service = service


def parse(reader: Any) -> EntryOptions:
    node = reader.node
    if node.kind == "scalar" and node.is_null:
        return EntryOptions()
    opts = reader.mapping(["attempts", "max_digits", "first_digit_timeout", "digit_timeout", "prompts"])
    if opts is None:
        return EntryOptions()
    prompts: dict[str, tuple[str, ...]] = {}
    if "prompts" in opts:
        fields = [f.name for f in dataclasses.fields(EntryPrompts)]
        mapping = reader.mapping(fields, node=opts["prompts"]) or {}
        for key, value in mapping.items():
            prompts[key] = reader.prompts(value, f"conference prompt '{key}'")
    return EntryOptions(
        attempts=reader.integer(opts.get("attempts"), "attempts", 3, 1, 10),
        max_digits=reader.integer(opts.get("max_digits"), "max_digits", 16, 4, 32),
        first_digit_timeout_s=reader.seconds(opts.get("first_digit_timeout"), "first_digit_timeout", 10.0),
        digit_timeout_s=reader.seconds(opts.get("digit_timeout"), "digit_timeout", 5.0),
        prompts=EntryPrompts(**prompts),
    )


async def run(ctx: FlowContext, opts: EntryOptions) -> str | None:
    if _service is None:
        ctx.note("conference: would ask for a personal access code and join its conference (no service here)")
        if ctx.route.organizer_paid is not None:
            ctx.note(f"conference: organizer-paid number: the leg would draw the free-minutes pool of account "
                     f"{ctx.route.organizer_paid.account} while in the room")
        ctx.variables["conference_outcome"] = "simulated"
        return None
    outcome = await _service.enter(ctx.call, ctx.route.number, opts, paid=paid_line(ctx), prompts=ctx.play)
    ctx.variables["conference_outcome"] = outcome
    ctx.note(f"conference: {outcome}")
    return None


register_step_type("conference", parse, run)


# Prompts of organizer-paid lines (issue 10): names looked up in the dialplan, stock media otherwise.
MINUTES_PROMPTS = {"minutes-unavailable": ("sound:ss-noservice",), "minutes-warning": ("sound:beep",),
                   "minutes-exhausted": ("sound:ss-noservice",)}


def paid_line(ctx: FlowContext) -> PaidLine | None:
    """The organizer-paid terms of the number called (numbers.yaml ``organizer_paid``), or None."""
    paid = ctx.route.organizer_paid
    if paid is None:
        return None

    def media(name: str) -> tuple[str, ...]:
        try:
            return tuple(ctx.plan.media(name, ctx.route.language))
        except KeyError:  # not in prompts.yaml, or not in this number's language
            return MINUTES_PROMPTS[name]

    return PaidLine(
        account_id=uuid.UUID(paid.account),
        terms=MeterTerms(hold_s=paid.hold_s, min_leg_s=paid.min_leg_s, warn_before_s=paid.warn_before_s,
                         when_exhausted=paid.when_exhausted),
        local_number=paid.local_number,
        paid_numbers=frozenset(e.number for e in ctx.plan.numbers if e.organizer_paid is not None and e.number),
        unavailable=media("minutes-unavailable"), warning=media("minutes-warning"),
        exhausted=media("minutes-exhausted"))
