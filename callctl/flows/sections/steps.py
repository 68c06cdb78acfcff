"""Parsers of the built-in step types: each reads the YAML under its key into a frozen step.

A parser is ``fn(reader, base) -> Step | None``: ``base`` holds the name, position and index;
problems go to ``reader.error`` and the parser returns None when the step cannot be built.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from callctl.countries import TimeWindow
from callctl.flows import registry
from callctl.flows.model import (
    DIAL_STATUSES,
    HANGUP_CAUSES,
    Answer,
    Branch,
    Collect,
    Dial,
    Goto,
    GotoFlow,
    HangUp,
    Menu,
    Play,
    Python,
    SetVars,
    Step,
    When,
    template_variables,
)
from callctl.flows.reader import DTMF, NAME_RE, StepReader, known, valid_tz
from callctl.flows.sections.calendars import parse_dates
from callctl.flows.sections.times import window
from callctl.flows.yamlsafe import Node


def _no_options(r: StepReader) -> None:
    if not r.node.is_null:
        r.error(f"'{r.kind}' takes no options (write '- {r.kind}')")


def answer_step(r: StepReader, base: dict[str, Any]) -> Step:
    _no_options(r)
    return Answer(**base)


def play_step(r: StepReader, base: dict[str, Any]) -> Step | None:
    if r.node.kind == "map":
        opts = r.mapping(("prompt", "interruptible"), ("prompt",))
        if opts is None:
            return None
        prompts = r.prompts(opts.get("prompt"))
        interruptible = r.boolean(opts.get("interruptible"), "interruptible", True)
    else:
        if r.node.is_null:
            r.error("'play' needs a prompt (- play: welcome)")
            return None
        prompts, interruptible = r.prompts(r.node), True
    return Play(**base, prompts=prompts, interruptible=interruptible) if prompts else None


def collect_step(r: StepReader, base: dict[str, Any]) -> Step | None:
    opts = r.mapping(("into", "prompt", "digits", "min_digits", "max_digits", "terminator", "timeout",
                      "digit_timeout", "attempts", "invalid", "no_input", "on_failure"), ("into",))
    if opts is None:
        return None
    into = r.variable(opts.get("into"), "into")
    exact = r.integer(opts.get("digits"), "digits", 0, 1, 64)
    if exact and ("min_digits" in opts or "max_digits" in opts):
        r.error("use 'digits' or 'min_digits'/'max_digits', not both", opts["digits"])
    low = r.integer(opts.get("min_digits"), "min_digits", exact or 1, 0, 64)
    high = r.integer(opts.get("max_digits"), "max_digits", exact or max(low, 20), 1, 64)
    if low > high:
        r.error(f"min_digits {low} is more than max_digits {high}", opts.get("min_digits"))
    terminator = "#"
    if "terminator" in opts:
        tnode = opts["terminator"]
        terminator = "" if tnode.is_null or tnode.text.lower() == "none" else tnode.text
        if terminator and (len(terminator) != 1 or terminator not in DTMF or terminator.isdigit()):
            r.error(f"terminator '{terminator}' must be one of * # A B C D, or none", tnode)
            terminator = "#"
    step = Collect(**base, into=into or "", prompts=r.prompts(opts.get("prompt")), min_digits=low,
                   max_digits=high, terminator=terminator,
                   timeout_s=r.seconds(opts.get("timeout"), "timeout", 5.0),
                   digit_timeout_s=r.seconds(opts.get("digit_timeout"), "digit_timeout", 3.0),
                   attempts=r.integer(opts.get("attempts"), "attempts", 3, 1, 10),
                   invalid=r.prompts(opts.get("invalid"), "invalid prompt"),
                   no_input=r.prompts(opts.get("no_input"), "no_input prompt"),
                   on_failure=r.target(opts.get("on_failure"), "on_failure goes to"))
    return step if into else None


def menu_step(r: StepReader, base: dict[str, Any]) -> Step | None:
    opts = r.mapping(("prompt", "options", "timeout", "digit_timeout", "attempts", "invalid", "no_input",
                      "on_failure"), ("prompt", "options"))
    if opts is None:
        return None
    options: dict[str, str] = {}
    onode = opts.get("options")
    if onode is not None and onode.kind != "map":
        r.error("menu options map keys to steps (1: sales)", onode)
    elif onode is not None:
        keys: dict[str, Node] = {}
        for key, (key_node, target_node) in onode.entries.items():
            if not key or any(ch not in DTMF for ch in key):
                r.error(f"menu key '{key}' must be keys of the phone (0-9 * # A-D; quote \"*\" and \"#\")",
                        key_node)
                continue
            target = r.target(target_node, f"routes '{key}' to")
            keys[key] = key_node
            if target is not None:
                options[key] = target
        for key, key_node in keys.items():
            for other in keys:
                if other != key and key.startswith(other):
                    r.error(f"menu key '{key}' can never be chosen: '{other}' is chosen as soon as it is "
                            "pressed", key_node)
    step = Menu(**base, prompts=r.prompts(opts.get("prompt")), options=MappingProxyType(options),
                timeout_s=r.seconds(opts.get("timeout"), "timeout", 5.0),
                digit_timeout_s=r.seconds(opts.get("digit_timeout"), "digit_timeout", 3.0),
                attempts=r.integer(opts.get("attempts"), "attempts", 3, 1, 10),
                invalid=r.prompts(opts.get("invalid"), "invalid prompt"),
                no_input=r.prompts(opts.get("no_input"), "no_input prompt"),
                on_failure=r.target(opts.get("on_failure"), "on_failure goes to"))
    return step if options else None


def set_step(r: StepReader, base: dict[str, Any]) -> Step | None:
    if r.node.kind != "map" or not r.node.entries:
        r.error("'set' maps variable names to values (- set: {team: sales})")
        return None
    values: dict[str, str] = {}
    for var, (key_node, value_node) in r.node.entries.items():
        if r.variable(key_node, "variable") is None:
            continue
        value = "" if value_node.is_null else r.template(value_node, f"value of '{var}'")
        if value is not None:
            values[var] = value
    return SetVars(**base, values=MappingProxyType(values))


def goto_step(r: StepReader, base: dict[str, Any]) -> Step | None:
    target = r.target(r.node, "goes to")
    return Goto(**base, target=target) if target else None


def flow_step(r: StepReader, base: dict[str, Any]) -> Step | None:
    flow = r.flow_ref(r.node, "flow")
    return GotoFlow(**base, flow=flow) if flow else None


def hangup_step(r: StepReader, base: dict[str, Any]) -> Step | None:
    cause = "normal" if r.node.is_null else r.text(r.node, "hangup cause")
    if cause is not None and cause not in HANGUP_CAUSES:
        r.error(f"unknown hangup cause '{cause}' (known: {', '.join(HANGUP_CAUSES)})")
        return None
    return HangUp(**base, cause=cause or "normal")


def dial_step(r: StepReader, base: dict[str, Any]) -> Step | None:
    opts = r.mapping(("user", "trunk", "number", "to", "timeout", "caller_id", *DIAL_STATUSES))
    if opts is None:
        return None
    target: str | None = None
    if "user" in opts and not {"trunk", "number", "to"} & opts.keys():
        user = r.template(opts["user"], "user")
        target = f"PJSIP/{user}" if user else None
    elif {"trunk", "number"} <= opts.keys() and not {"user", "to"} & opts.keys():
        trunk = r.text(opts["trunk"], "trunk", pattern=NAME_RE, hint=" (letters, digits, - and _)")
        if trunk is not None:
            r.refs_trunk(opts["trunk"], trunk)
        number = r.template(opts["number"], "number")
        if number is not None and template_variables(number):
            literal = number.split("{", 1)[0]
            if literal and not literal.startswith("+"):
                r.error(f"number '{number}' must be E.164: start it with + and the country code "
                        "(\"+44{code}\"), or use a variable that holds the whole number (\"{caller}\")",
                        opts["number"])
                number = None
        elif number is not None:
            r.refs_dial_number(opts["number"], number)
        target = f"PJSIP/{number}@{trunk}" if trunk and number else None
    elif "to" in opts and not {"user", "trunk", "number"} & opts.keys():
        target = r.template(opts["to"], "to")
        if target is not None and "/" not in target:
            r.error(f"'to: {target}' must be an Asterisk dial string like PJSIP/alice", opts["to"])
            target = None
        elif target is not None and (via := re.fullmatch(r"PJSIP/([^@{}]+)@([A-Za-z0-9_-]+)", target)):
            # "PJSIP/+33123456789@pstn": the same checks as trunk + number.
            r.refs_trunk(opts["to"], via.group(2))
            if via.group(1)[:1] in "+0123456789":
                r.refs_dial_number(opts["to"], via.group(1))
    else:
        r.error("'dial' needs either 'user: NAME' (a SIP user), 'trunk: NAME' with 'number: ...', "
                "or 'to: PJSIP/...'")
    caller_id = r.template(opts.get("caller_id"), "caller_id")
    branches: dict[str, str] = {}
    for status in DIAL_STATUSES:
        goto = r.target(opts.get(status), f"on {status} goes to")
        if goto is not None:
            branches[status] = goto
    timeout_s = r.seconds(opts.get("timeout"), "timeout", 30.0, high=600.0)
    if target is None:
        return None
    return Dial(**base, target=target, timeout_s=timeout_s, caller_id=caller_id,
                branches=MappingProxyType(branches))


def python_step(r: StepReader, base: dict[str, Any]) -> Step | None:
    args: dict[str, Any] = {}
    if r.node.kind == "map":
        opts = r.mapping(("function", "args"), ("function",))
        if opts is None:
            return None
        fnode = opts.get("function")
        if "args" in opts:
            plain = opts["args"].plain()
            if not isinstance(plain, dict):
                r.error("python args must be a mapping (args: {key: value})", opts["args"])
            else:
                args = plain
    else:
        fnode = r.node
    function = r.text(fnode, "python step")
    if function is None or fnode is None:
        return None
    registered = registry.python_steps()
    if function not in registered:
        r.error(f"unknown python step '{function}' (known: {known(registered)})", fnode)
        return None
    return Python(**base, function=function, args=MappingProxyType(args))


def when_step(r: StepReader, base: dict[str, Any]) -> Step | None:
    opts = r.mapping(("window", "days", "hours", "timezone", "calendar", "dates", "closed_on", "switch", "then",
                      "else"))
    if opts is None:
        return None
    days_hours: TimeWindow | None = None
    window_name = ""
    if "window" in opts:
        window_name = r.text(opts["window"], "window") or ""
        if window_name != "canvassing":
            r.error(f"unknown window '{window_name}' (known: canvassing, from the country table)", opts["window"])
        if "days" in opts or "hours" in opts:
            r.error("give either 'window' or 'days'/'hours', not both", opts["window"])
    elif "days" in opts or "hours" in opts:
        days_hours = window(r, r.node, opts.get("days"), opts.get("hours"))
        window_name = "days/hours"
    elif not {"calendar", "dates", "closed_on", "switch"} & opts.keys():
        r.error("'when' needs a condition: 'days'/'hours', 'window: canvassing', 'calendar', 'dates', "
                "'closed_on' or 'switch'")
    tz = r.text(opts.get("timezone"), "timezone")
    if tz is not None and not valid_tz(tz):
        r.error(f"timezone '{tz}' is unknown (e.g. Europe/Paris)", opts["timezone"])
    calendars = _calendar_refs(r, opts.get("calendar"), "calendar")
    closed_on = _calendar_refs(r, opts.get("closed_on"), "closed_on")
    switch = r.text(opts.get("switch"), "switch")
    if switch is not None and "switch" in opts:
        r.refs_switch(opts["switch"], switch)
    then = r.target(opts.get("then"), "then goes to")
    otherwise = r.target(opts.get("else"), "else goes to")
    if "then" not in opts and "else" not in opts:
        r.error("'when' needs 'then' and/or 'else' (a step to go to)")
    return When(**base, window=days_hours, window_name=window_name, timezone=tz, then=then, otherwise=otherwise,
                calendars=calendars, dates=parse_dates(r, opts.get("dates")), closed_on=closed_on, switch=switch)


def branch_step(r: StepReader, base: dict[str, Any]) -> Step | None:
    opts = r.mapping(("value", "equals", "prefix", "at_least", "else"), ("value",))
    if opts is None:
        return None
    value = r.template(opts.get("value"), "value")
    cases: dict[str, dict[str, str]] = {"equals": {}, "prefix": {}, "at_least": {}}
    for kind, example in (("equals", "{FR: french, BE: french}"), ("prefix", '{"+336": mobile}'),
                          ("at_least", "{3: give-up}")):
        node = opts.get(kind)
        if node is None:
            continue
        if node.kind != "map" or not node.entries:
            r.error(f"branch '{kind}' maps values to steps ({kind}: {example})", node)
            continue
        for key, (key_node, target_node) in node.entries.items():
            if kind == "at_least" and not key.isdigit():
                r.error(f"branch at_least '{key}' must be a whole number (at_least: {{3: give-up}})", key_node)
                continue
            target = r.target(target_node, f"on '{key}' goes to")
            if target is not None:
                cases[kind][key] = target
    if not {"equals", "prefix", "at_least"} & opts.keys():
        r.error("'branch' needs cases: equals, prefix and/or at_least (each maps values to steps)")
    otherwise = r.target(opts.get("else"), "else goes to")
    if value is None:
        return None
    at_least = tuple(sorted(((int(k), t) for k, t in cases["at_least"].items()), reverse=True))
    return Branch(**base, value=value, equals=MappingProxyType(cases["equals"]),
                  prefix=MappingProxyType(cases["prefix"]), at_least=at_least, otherwise=otherwise)


def _calendar_refs(r: StepReader, node: Node | None, what: str) -> tuple[str, ...]:
    """Calendar names (checked once every file is read); ``holidays`` is built in."""
    if node is None:
        return ()
    out: list[str] = []
    for item in node.items if node.kind == "seq" else [node]:
        name = r.text(item, what)
        if name is not None:
            r.refs_calendar(item, name)
            out.append(name)
    return tuple(out)


PARSERS: dict[str, Callable[[StepReader, dict[str, Any]], Step | None]] = {
    "answer": answer_step,
    "play": play_step,
    "collect": collect_step,
    "menu": menu_step,
    "set": set_step,
    "goto": goto_step,
    "flow": flow_step,
    "hangup": hangup_step,
    "dial": dial_step,
    "python": python_step,
    "when": when_step,
    "branch": branch_step,
}
