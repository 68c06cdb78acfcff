"""Gates deciding, before a call leaves, whether it may: emergency calls per country, dialer compliance.

Pure rules live in ``emergency`` and ``compliance``; ``service.decide`` applies them (emergency first).
"""

from __future__ import annotations

from dataclasses import dataclass

from callctl.errors import GatingError as GatingError  # in the one tree (callctl.errors)

ALLOW = "allow"
DENY = "deny"


@dataclass(frozen=True)
class Verdict:
    """One rule's answer: ``decision`` is allow or deny; ``rule`` a stable slug; ``reason`` for humans."""

    decision: str
    rule: str
    reason: str

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOW
