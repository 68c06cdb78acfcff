"""Rating throughput on a 100,000-prefix deck, single core: longest-prefix match + cost (Decimal).

    .venv/bin/python bench/rating.py
"""

from __future__ import annotations

import datetime as dt
import random
import time
from decimal import Decimal

from callctl.billing.rating import Deck, Rate, call_cost


def main() -> None:
    rng = random.Random(8)
    rates = {}
    while len(rates) < 100_000:
        prefix = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(rng.randint(1, 7)))
        rates[prefix] = Rate(prefix, f"dest {prefix}", "3", Decimal(rng.randint(1, 500)) / 1000, "EUR")
    deck = Deck("bench", dt.datetime.now(dt.UTC), rates)
    numbers = ["+" + str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(10))
               for _ in range(200_000)]
    durations = [rng.randint(0, 3600) for _ in numbers]
    start = time.perf_counter()
    matched = 0
    for number, seconds in zip(numbers, durations, strict=True):
        rate = deck.match(number)
        if rate is not None:
            call_cost(rate, seconds)
            matched += 1
    elapsed = time.perf_counter() - start
    print(f"{len(numbers)} ratings ({matched} matched) on a {len(rates)}-prefix deck in {elapsed:.2f} s: "
          f"{len(numbers) / elapsed:,.0f} ratings/s (single core)")


if __name__ == "__main__":
    main()
