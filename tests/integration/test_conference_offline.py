"""PostgreSQL unreachable while callers dial into an open conference (issue 18): they still get in from
the codes the engine keeps in memory, and their attempts are written once the database is back."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance
from tests.integration.test_conference import book, bridged_channels, caller, db
from tests.support import sipp
from tests.support.proxy import CuttableProxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REFUSED = ("127.0.0.1", 1)  # nothing listens there: a database that is down


@pytest.fixture
def db_proxy(database_url: str) -> Iterator[tuple[CuttableProxy, str]]:
    """A proxy in front of the test's database, and the database URL through it."""
    parts = urllib.parse.urlsplit(database_url)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    yield proxy, urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    proxy.close()


def test_callers_to_an_open_conference_get_in_while_postgresql_is_down(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path,
        db_proxy: tuple[CuttableProxy, str]) -> None:
    proxy, proxied_url = db_proxy
    conf = book(database_url, tmp_path, participants=1)
    d = daemon_factory(database_url=proxied_url)
    d.wait_until_ready()
    d.wait_for_log("conference_codes_cached")
    upstream = proxy.upstream
    proxy.upstream = REFUSED  # PostgreSQL down: open connections cut, new ones refused
    proxy.cut()
    org = caller(asterisk, conf["organizer"]["code"], [("pause", 4000), ("bye", None)], "33611000031")
    wrong = caller(asterisk, "99999999", [("pause", 2500), ("bye", None)], "33611000032")
    part = caller(asterisk, conf["participants"][0]["code"], [("pause", 3000), ("bye", None)], "33611000033",
                  lead_ms=1500)
    try:
        wait_for(lambda: 2 in bridged_channels(asterisk), 20,
                 "the organizer and the participant in one bridge, with the database down")
    finally:  # the callers hang up after their pause, whatever happened
        results = [sipp.finish(proc, work) for proc, work in (org, wrong, part)]
    assert d.events("conference_code_from_memory")
    assert all(r.ok for r in results), [r.stderr for r in results]
    proxy.upstream = upstream  # back
    d.wait_for_log("conference_attempts_written_after_outage", timeout_s=20)
    attempts = db(database_url, "SELECT reason, caller FROM conference_attempt")
    assert [(a["reason"], a["caller"]) for a in attempts] == [("wrong_code", "+33611000032")]
    joins = wait_for(lambda: [r for r in db(database_url, "SELECT person, what FROM conference_event "
                                                          "WHERE conference_id = $1::uuid", conf["id"])
                              if r["what"] == "join"], 30, "the joins written once the database is back")
    assert {j["person"] for j in joins} == {"org@example.com", "p0@example.com"}
    assert not d.events("call_finished", outcome="store_unavailable")
