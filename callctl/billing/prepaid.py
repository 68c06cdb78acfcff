"""Prepaid credit (pure): the longest call a balance can pay for at a rate, never costing more than it."""

from __future__ import annotations

from decimal import Decimal

from callctl.billing.rating import Rate, call_cost

MAX_CALL_S = 4 * 3600  # one authorisation never reserves more than this, so one call cannot lock a balance


def max_authorised_seconds(balance: Decimal, rate: Rate, *, cap_s: int = MAX_CALL_S) -> int:
    """The largest duration n <= cap_s with call_cost(rate, n) <= balance (0: not even the first block).

    Cost never decreases with duration, so a binary search finds it. A duration that ends inside a
    block is authorised only if the whole block is paid for.
    """
    if balance <= 0 or call_cost(rate, 1) > balance:
        return 0
    lo, hi = 1, cap_s  # call_cost(lo) <= balance holds
    if call_cost(rate, hi) <= balance:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if call_cost(rate, mid) <= balance:
            lo = mid
        else:
            hi = mid
    return lo


def reservation_amount(rate: Rate, seconds: int) -> Decimal:
    """What to hold on the balance for an authorised duration: its full cost."""
    return call_cost(rate, seconds)
