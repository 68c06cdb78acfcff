"""Gates deciding, before a call leaves, whether it may: emergency calls per country, dialer compliance.

Pure rules live in ``emergency`` and ``compliance``; ``service.decide`` applies them (emergency first).
"""

from __future__ import annotations

from dataclasses import dataclass

from callctl.errors import CallctlError

ALLOW = "allow"
DENY = "deny"


class GatingError(CallctlError):
    """A gating input is unusable (unknown account, bad opt-out file, ...)."""

    code = "gating_invalid"


@dataclass(frozen=True)
class Verdict:
    """One rule's answer: ``decision`` is allow or deny; ``rule`` a stable slug; ``reason`` for humans."""

    decision: str
    rule: str
    reason: str

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOW
