"""Pure privacy rules: pseudonyms, retention dates, rating prefixes, and the inventory docs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from callctl.privacy.inventory import ITEMS, markdown_table
from callctl.privacy.rules import add_months, billing_cutoff, is_pseudonym, pseudonym, purge_due, rating_prefix
from callctl.store.privacy import _CENSUS

DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / "privacy.md"
UTC = dt.UTC


def test_pseudonym_is_deterministic_per_secret_and_hides_the_value() -> None:
    key = b"k" * 32
    one = pseudonym(key, "Alice@Example.com")
    assert one == pseudonym(key, "alice@example.com ") and is_pseudonym(one)
    assert "alice" not in one and one != pseudonym(b"j" * 32, "alice@example.com")
    assert pseudonym(key, "+33612345678") != pseudonym(key, "+33612345679")


def test_add_months_clamps_to_the_end_of_a_shorter_month() -> None:
    assert add_months(dt.datetime(2026, 1, 31, 12, tzinfo=UTC), 1) == dt.datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert add_months(dt.datetime(2026, 3, 15, tzinfo=UTC), -12) == dt.datetime(2025, 3, 15, tzinfo=UTC)
    assert add_months(dt.datetime(2026, 12, 5, tzinfo=UTC), 1) == dt.datetime(2027, 1, 5, tzinfo=UTC)


def test_a_suspension_is_due_for_purge_only_after_a_full_month() -> None:
    at = dt.datetime(2026, 5, 10, 9, tzinfo=UTC)
    assert not purge_due(at, dt.datetime(2026, 6, 10, 9, tzinfo=UTC))
    assert purge_due(at, dt.datetime(2026, 6, 10, 9, 0, 1, tzinfo=UTC))


def test_billing_cutoff_is_twelve_months_back() -> None:
    assert billing_cutoff(dt.datetime(2026, 11, 23, tzinfo=UTC)) == dt.datetime(2025, 11, 23, tzinfo=UTC)


def test_rating_prefix_keeps_country_and_first_digits_only() -> None:
    assert rating_prefix("+33612345678") == "+33612"
    assert rating_prefix("u-1234") == ""


def test_every_database_item_has_a_census_and_keys_are_unique() -> None:
    keys = [i.key for i in ITEMS]
    assert len(keys) == len(set(keys))
    assert set(_CENSUS) == {i.key for i in ITEMS if i.kind == "table"}


def test_docs_privacy_md_carries_the_generated_inventory() -> None:
    text = DOCS.read_text()
    between = text.split("<!-- inventory:begin -->\n", 1)[1].split("<!-- inventory:end -->", 1)[0]
    assert between == markdown_table(), "paste `markdown_table()` from callctl/privacy/inventory.py into docs"
