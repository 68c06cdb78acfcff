"""Toll fraud and SIP attacks: destination permissions, spend velocity limits, SIP brute-force blocking.

Pure rules live in ``rules`` (destinations, permissions, limits) and ``bruteforce`` (failure counting);
``service`` applies them to calls under a PostgreSQL lock per account; ``edge`` keeps Asterisk's SIP
ACL in step with the blocks. See docs/security.md.
"""

from __future__ import annotations

from callctl.errors import CallctlError


class FraudError(CallctlError):
    """A fraud setting was refused (bad country, bad limit, unknown account or address)."""

    code = "fraud_invalid"
