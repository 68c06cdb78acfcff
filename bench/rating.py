"""Rating throughput on a 100,000-prefix deck, single core (CPU time of this process, so a busy shared
machine counts less against it): longest-prefix match + cost (Decimal), then
the full per-call rating (`rate_call`: deck in force, match, the plan's inclusion, cost, explanation).

    .venv/bin/python -m bench.rating
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from decimal import Decimal

from callctl.billing.plans import load_plans
from callctl.billing.rating import Deck, Rate, call_cost
from callctl.billing.statements import rate_call

CALLER = "+33123456789"
GOAL_PER_S = 100_000  # issue 17


def main() -> None:
    rng = random.Random(8)
    rates = {}
    while len(rates) < 100_000:
        prefix = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(rng.randint(1, 7)))
        rates[prefix] = Rate(prefix, f"dest {prefix}", rng.choice("123"), Decimal(rng.randint(1, 500)) / 1000, "EUR")
    at = dt.datetime.now(dt.UTC)
    deck = Deck("bench", at - dt.timedelta(days=1), rates)
    numbers = ["+" + str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(10))
               for _ in range(200_000)]
    durations = [rng.randint(0, 3600) for _ in numbers]
    start = time.process_time()
    matched = 0
    for number, seconds in zip(numbers, durations, strict=True):
        rate = deck.match(number)
        if rate is not None:
            call_cost(rate, seconds)
            matched += 1
    elapsed = time.process_time() - start
    print(f"{len(numbers)} ratings ({matched} matched) on a {len(rates)}-prefix deck in {elapsed:.2f} s: "
          f"{len(numbers) / elapsed:,.0f} ratings/s (single core)")

    plans = load_plans()
    decks = [deck]
    verdicts: list[str] = []
    for name in ("payg", "unlimited"):
        plan = plans.get(name)
        start = time.process_time()
        included = 0
        for number, seconds in zip(numbers, durations, strict=True):
            included += rate_call(decks, plan, CALLER, number, seconds, at, currency="EUR").included
        elapsed = time.process_time() - start
        per_s = len(numbers) / elapsed
        print(f"{len(numbers)} full per-call ratings (rate_call, plan {name}, {included} included) in "
              f"{elapsed:.2f} s: {per_s:,.0f} rate_call/s (single core)")
        verdicts.append(f"GOAL full per-call rating >= {GOAL_PER_S:,}/s on one core, plan {name}: {per_s:,.0f}  "
                        f"{'PASS' if per_s >= GOAL_PER_S else 'FAIL'}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
