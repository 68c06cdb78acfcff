"""`callctl cdr reconcile` on a real Asterisk writing its channel events (cel_pgsql) into the test's
database: a call the engine handled has its CDR; a call Asterisk answered alone while the engine was
stopped (the fallback announcement) is listed as a call without a CDR."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance
from tests.integration.test_daemon import WELCOME, wait_for_cdrs
from tests.integration.test_lines_calls import asterisk  # noqa: F401 (realtime instance: CEL in the database)
from tests.integration.test_lines_cli import db, run_cli
from tests.support import sipp
from tests.support.asterisk import wait_for

pytestmark = pytest.mark.integration


def test_reconcile_lists_the_call_asterisk_ended_without_a_cdr(daemon_factory: Any, asterisk: AsteriskInstance,  # noqa: F811
                                                              database_url: str) -> None:
    since = dt.datetime.now(dt.UTC)
    d = daemon_factory()
    d.wait_until_ready()
    assert sipp.call(asterisk.sip_port, WELCOME, [("wait_bye", None)], caller="0612345678").ok
    [handled] = wait_for_cdrs(database_url, 1)
    d.stop()
    assert sipp.call(asterisk.sip_port, WELCOME, [("wait_bye", None)], caller="0698765432").ok  # fallback
    wait_for(lambda: len(db(database_url, "SELECT DISTINCT uniqueid FROM cel WHERE eventtype = 'CHAN_END'")) >= 2,
             10, "Asterisk's channel events of both calls")

    res = run_cli(database_url, "cdr", "reconcile", "--since", since.isoformat(),
                  "--until", (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat())
    assert res.returncode == 1, res.stderr  # 1: some calls have no CDR
    report = json.loads(res.stdout)
    assert report["channels_ended"] == 2 and report["with_cdr"] == 1
    [missing] = report["without_cdr"]
    assert missing["uniqueid"] != handled["channel_id"] and missing["exten"] == WELCOME
    assert missing["caller"] == "0698765432" and missing["answered"] is True
    assert missing["channel"].startswith("PJSIP/")

    # Nothing ended in a window before the calls: clean, exit 0.
    res = run_cli(database_url, "cdr", "reconcile", "--since", (since - dt.timedelta(hours=1)).isoformat(),
                  "--until", since.isoformat())
    assert res.returncode == 0 and json.loads(res.stdout)["channels_ended"] == 0, res.stdout + res.stderr
    res = run_cli(database_url, "cdr", "reconcile", "--since", "yesterday")
    assert res.returncode == 2 and "ISO 8601" in res.stderr
