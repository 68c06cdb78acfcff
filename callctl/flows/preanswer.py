"""Which called numbers Asterisk answers itself before ``Stasis()`` (pure): the exact numbers of the
dialplan whose flow starts with ``answer``, and the Asterisk globals that say so (extensions.conf
``[callctl-preanswer]``, docs/architecture.md "Answered by Asterisk").

The numbers are spread over at most 100 globals by their last two digits, each "TOKEN-NUMBER-NUMBER..."
(FIELDNUM finds a number in it): Asterisk keeps its globals in a list it walks on every lookup, so one
global per number would slow every ${CALLCTL_APP} of every call on a node with 10,000 numbers."""

from __future__ import annotations

from callctl.flows.model import Answer, Dialplan

# The generation of the published set: a number is pre-answered while its bucket starts with the same
# token. Empty (or unset) turns pre-answering off on the node (engine stopping, or not yet published).
GENERATION_GLOBAL = "CALLCTL_PREANSWER"
# On a cluster node (CALLCTL_ENGINE_DOWN = refuse): the engine's AMI login, whose live session proves the
# engine process is there (AMI_CLIENT(user,sessions)); empty, and a cluster node never pre-answers.
AMI_GLOBAL = "CALLCTL_PREANSWER_AMI"
NUMBER_PREFIX = "CALLCTL_PA_"


def number_key(number: str) -> str | None:
    """The key of an E.164 number in the globals ("+33900000001" -> "33900000001"); None for anything
    else (the dialplan looks the called number up by its digits)."""
    digits = number.removeprefix("+")
    return digits if number.startswith("+") and digits.isdigit() and len(digits) >= 2 else None


def bucket_name(key: str) -> str:
    """The global holding ``key``: CALLCTL_PA_ and its last two digits."""
    return NUMBER_PREFIX + key[-2:]


def buckets(keys: frozenset[str], token: str) -> dict[str, str]:
    """Each non-empty bucket's global and value, "TOKEN-KEY-KEY..." (the token starts with a letter, so it
    is never taken for a number)."""
    grouped: dict[str, list[str]] = {}
    for key in sorted(keys):
        grouped.setdefault(bucket_name(key), []).append(key)
    return {name: "-".join([token, *members]) for name, members in sorted(grouped.items())}


def starts_with_answer(plan: Dialplan, flow: str) -> bool:
    found = plan.flows.get(flow)
    return found is not None and bool(found.steps) and isinstance(found.steps[0], Answer)


def preanswered_numbers(plan: Dialplan) -> frozenset[str]:
    """The keys of the numbers Asterisk may answer before the engine sees the call: exact numbers only
    (a pattern's numbers are not listed: their calls are answered by the engine as before), whose flow's
    first step is ``answer`` (a flow that starts with a rejection, early media, a switch or a dial is
    left to the engine)."""
    keys: set[str] = set()
    seen: set[str] = set()
    for entry in plan.numbers:
        if entry.number is None or entry.number in seen:
            continue
        seen.add(entry.number)  # the first entry of a number is the one the router takes (Dialplan.route)
        key = number_key(entry.number)
        if key is not None and starts_with_answer(plan, entry.flow):
            keys.add(key)
    return frozenset(keys)
