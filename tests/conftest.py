"""Shared fixtures: real PostgreSQL (tests.support.postgres) and real Asterisk + SIPp (tests.support.asterisk).

A test that takes one of the real-component fixtures must be marked ``integration`` (``-m "not
integration"`` has to leave no test that needs PostgreSQL or Asterisk): collection stops otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import sipp

pytest_plugins = ["tests.support.postgres", "tests.support.asterisk"]

REAL_COMPONENT_FIXTURES = frozenset({"postgres", "database_url", "asterisk", "daemon_factory"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items
                if REAL_COMPONENT_FIXTURES & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("integration") is None]
    if unmarked:
        raise pytest.UsageError("tests using PostgreSQL or Asterisk fixtures without @pytest.mark.integration: "
                                + ", ".join(unmarked))


@pytest.fixture(autouse=True)
def _reap_sipp() -> Iterator[None]:
    """Every SIPp a test started is stopped when the test ends, passed or failed."""
    yield
    sipp.reap()
