"""Organizer-paid dial-in on a real Asterisk (issue 10): SIPp callers on the freephone access number
draw the organizer's free-minutes pool by the second; an empty pool gives the local number; legs of
two conferences drain one pool together to exactly zero and are warned, then ended."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import REPO, AsteriskInstance
from tests.integration.test_conference import bridged_channels, cli, db
from tests.support import sipp
from tests.support.asterisk import wait_for

pytestmark = pytest.mark.integration

FREE = "+33800000102"  # dialplan/numbers.yaml: organizer-paid, demo account below
LOCAL = "+33900000100"
DEMO_ACCOUNT = "00000000-0000-4000-8000-000000000102"


def paid_dialplan(tmp_path: Path, account: uuid.UUID, **terms: object) -> Path:
    """The repository's dialplan with the demo freephone number paid by ``account`` on ``terms``."""
    target = tmp_path / "dialplan"
    shutil.copytree(REPO / "dialplan", target)
    numbers = target / "numbers.yaml"
    text = numbers.read_text()
    start = text.index("    organizer_paid:\n")
    end = text.index("\n\n", start)
    block = "".join(f"\n      {key}: {value}" for key, value in {"account": f'"{account}"', **terms}.items())
    text = text[:start] + "    organizer_paid:" + block + text[end:]
    numbers.write_text(text)
    return target


def account_with_pool(database_url: str, tmp_path: Path, minutes: int | None) -> uuid.UUID:
    account = uuid.uuid4()
    db(database_url, "INSERT INTO account (id, name, country, currency) VALUES ($1, 'org', 'FR', 'EUR')", account)
    if minutes is not None:
        db(database_url, "INSERT INTO minutes_pool (account_id, balance_s) VALUES ($1, $2)", account, minutes)
    return account


def book(database_url: str, tmp_path: Path, subject: str = "Weekly") -> dict[str, Any]:
    return cli(database_url, tmp_path, "create", "--subject", subject, "--start", dt.datetime.now(dt.UTC).isoformat(),
               "--duration", "60", "--organizer", f"org-{subject}@example.com", "--participant", "p@example.com",
               "--access-number", LOCAL, "--access-number", FREE)


def dial_free(asterisk: AsteriskInstance, code: str, then: list[tuple[str, object]],
              number: str) -> tuple[Any, Path]:
    return sipp.start_call(asterisk.sip_port, FREE, [("pause", 1200), ("dtmf", code + "#"), *then],
                           caller=number, bye_timeout_s=60)


def bill(database_url: str, account: uuid.UUID) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env["CALLCTL_DATABASE_URL"] = database_url
    res = subprocess.run([sys.executable, "-m", "callctl", "bill", "--account", str(account), "--month",
                          f"{dt.datetime.now(dt.UTC):%Y-%m}"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def holds(database_url: str) -> list[dict[str, Any]]:
    return db(database_url, "SELECT id, leg_id, person, held_s, used_s, settled_at FROM minutes_hold "
                            "ORDER BY created_at")


def timeline(database_url: str, tmp_path: Path, conference_id: str, leaves: int) -> list[dict[str, Any]]:
    """The conference's timeline once its ``leaves`` leave rows are written (one writer batches them)."""
    rows: list[dict[str, Any]] = []

    def written() -> bool:
        rows[:] = cli(database_url, tmp_path, "show", conference_id)["timeline"]
        return sum(e["what"] == "leave" for e in rows) >= leaves

    wait_for(written, 20, f"{leaves} leave row(s) in the timeline")
    return rows


def pool(database_url: str, account: uuid.UUID) -> dict[str, Any]:
    (row,) = db(database_url, "SELECT balance_s, reserved_s FROM minutes_pool WHERE account_id = $1", account)
    return row


def test_legs_on_the_free_number_draw_the_pool_by_the_second(daemon_factory: Any, asterisk: AsteriskInstance,
                                                              database_url: str, tmp_path: Path) -> None:
    account = account_with_pool(database_url, tmp_path, 600)
    conf = book(database_url, tmp_path)
    d = daemon_factory(dialplan_dir=str(paid_dialplan(tmp_path, account, hold=3, min_leg=2, warn_before=1)))
    d.wait_until_ready()
    calls = [dial_free(asterisk, conf["organizer"]["code"], [("pause", 7000), ("bye", None)], "33611000031"),
             dial_free(asterisk, conf["participants"][0]["code"], [("pause", 5000), ("bye", None)], "33611000032")]
    wait_for(lambda: 2 in bridged_channels(asterisk), 25, "both free-line callers in the bridge")
    for proc, work in calls:
        assert sipp.finish(proc, work).ok
    wait_for(lambda: len([h for h in holds(database_url) if h["settled_at"]]) == 2, 20, "both legs settled")
    rows = holds(database_url)
    shown = timeline(database_url, tmp_path, conf["id"], 2)
    for hold in rows:
        assert hold["held_s"] > 3  # held slice after slice while the leg stayed, not all at once
        events = {e["what"]: dt.datetime.fromisoformat(e["at"]) for e in shown if e["leg_id"] == str(hold["leg_id"])}
        in_room_s = (events["leave"] - events["join"]).total_seconds()
        assert abs(hold["used_s"] - in_room_s) <= 1  # drawn per second of presence, rounded up
    assert all(e["organizer_paid"] for e in shown)
    used = sum(h["used_s"] for h in rows)
    assert pool(database_url, account) == {"balance_s": 600 - used, "reserved_s": 0}
    ledger = db(database_url, "SELECT seconds FROM minutes_ledger WHERE account_id = $1 AND kind = 'leg'", account)
    assert sorted(-r["seconds"] for r in ledger) == sorted(h["used_s"] for h in rows)
    assert not d.tracebacks()


def test_an_empty_pool_refuses_the_leg_with_the_local_number(daemon_factory: Any, asterisk: AsteriskInstance,
                                                              database_url: str, tmp_path: Path) -> None:
    account = account_with_pool(database_url, tmp_path, 1)  # less than min_leg
    conf = book(database_url, tmp_path)
    d = daemon_factory(dialplan_dir=str(paid_dialplan(tmp_path, account, min_leg=2)), log_level="debug")
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, FREE, [("pause", 1200), ("dtmf", conf["participants"][0]["code"] + "#"),
                                                 ("wait_bye", None)], caller="33611000041", bye_timeout_s=40)
    assert result.ok, result.stderr
    refused = d.wait_for_log("conference_join_refused", reason="minutes_unavailable")
    assert refused["local_number_given"] is True
    step = d.wait_for_log("flow_step", step="2:conference")
    played = " ".join(step["notes"])
    assert "sound:callctl/en/minutes-unavailable digits:33900000100" in played
    assert [a["reason"] for a in db(database_url, "SELECT reason FROM conference_attempt")] == ["minutes_unavailable"]
    assert holds(database_url) == [] and pool(database_url, account) == {"balance_s": 1, "reserved_s": 0}
    assert bridged_channels(asterisk) == []  # never got into a room


def test_two_conferences_drain_one_pool_to_zero_then_their_legs_are_warned_and_ended(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    account = account_with_pool(database_url, tmp_path, 14)
    confs = [book(database_url, tmp_path, "Board"), book(database_url, tmp_path, "Sales")]
    d = daemon_factory(dialplan_dir=str(paid_dialplan(tmp_path, account, hold=3, min_leg=2, warn_before=2)))
    d.wait_until_ready()
    calls = [dial_free(asterisk, c["organizer"]["code"], [("wait_bye", None)], f"3361100005{i}")
             for i, c in enumerate(confs)]
    for proc, work in calls:  # the engine hangs them up: the pool paid for 14 s between them
        assert sipp.finish(proc, work).ok
    wait_for(lambda: len([h for h in holds(database_url) if h["settled_at"]]) == 2, 20, "both legs settled")
    rows = holds(database_url)
    assert sum(h["used_s"] for h in rows) == 14 and all(h["used_s"] == h["held_s"] for h in rows)
    assert pool(database_url, account) == {"balance_s": 0, "reserved_s": 0}
    assert len(d.events("minutes_leg_warned")) == 2 and len(d.events("minutes_leg_exhausted", policy="end")) == 2
    for conf in confs:
        shown = timeline(database_url, tmp_path, conf["id"], 1)
        assert [(e["what"], e["reason"]) for e in shown] == [("join", None), ("leave", "minutes_exhausted")]
    statement = bill(database_url, account)
    by_person = {h["person"]: h["used_s"] for h in rows}
    for subject in ("Board", "Sales"):  # one line per conference, with the seconds its leg drew
        (line,) = [x for x in statement.splitlines() if x.strip().startswith(subject)]
        assert f" 1 leg(s) {by_person[f'org-{subject.lower()}@example.com']:>8} s " in line
    assert "(14 s)" in statement.split("Pool drawn")[1].splitlines()[0]
    assert not d.tracebacks()


def test_with_the_move_policy_an_exhausted_leg_leaves_the_room_and_hears_the_local_number(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    account = account_with_pool(database_url, tmp_path, 4)
    conf = book(database_url, tmp_path)
    d = daemon_factory(dialplan_dir=str(paid_dialplan(tmp_path, account, hold=3, min_leg=2, warn_before=1,
                                                      when_exhausted="move")), log_level="debug")
    d.wait_until_ready()
    proc, work = dial_free(asterisk, conf["organizer"]["code"], [("pause", 12000), ("bye", None)], "33611000061")
    d.wait_for_log("minutes_leg_exhausted", policy="move")
    wait_for(lambda: bridged_channels(asterisk) in ([0], []), 10, "the leg out of the bridge, its call still up")
    assert sipp.finish(proc, work).ok  # the caller hung up after the message: the engine did not cut it
    finished = d.wait_for_log("call_finished")
    assert finished["ended_by"] == "caller"
    (hold,) = holds(database_url)
    assert hold["used_s"] == hold["held_s"] == 4  # the message after the room is not drawn from the pool
    shown = timeline(database_url, tmp_path, conf["id"], 1)
    assert [(e["what"], e["reason"]) for e in shown] == [("join", None), ("leave", "minutes_exhausted")]


def caller_limit_set(asterisk: AsteriskInstance) -> bool:
    """Whether the caller's channel has an absolute timeout (TIMEOUT(absolute)) set in Asterisk."""
    for line in asterisk.rx("core show channels concise", check=False).splitlines():
        name = line.split("!", 1)[0]
        if name.startswith("PJSIP/"):
            shown = asterisk.rx(f"core show channel {name}", check=False)
            return "Time to Hangup:" in shown and "Time to Hangup: 0\n" not in shown
    return False


def test_asterisk_ends_a_paid_leg_at_its_hold_when_the_engine_has_died(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    account = account_with_pool(database_url, tmp_path, 600)
    conf = book(database_url, tmp_path)
    d = daemon_factory(dialplan_dir=str(paid_dialplan(tmp_path, account, hold=4, min_leg=2, warn_before=1)))
    d.wait_until_ready()
    proc, work = dial_free(asterisk, conf["organizer"]["code"], [("wait_bye", None)], "33611000071")
    d.wait_for_log("conference_member_join")
    wait_for(lambda: holds(database_url), 10, "the leg's hold")
    # Killed once the engine has handed the hold to Asterisk (it does so just after the join).
    wait_for(lambda: caller_limit_set(asterisk), 10, "the leg's limit in Asterisk")
    limit_seen = dt.datetime.now()  # local time, as SIPp's trace
    assert d.proc is not None
    d.proc.kill()  # no engine left to end the leg: only the TIMEOUT(absolute) set on its channel can
    d.wait_exit(10)
    result = sipp.finish(proc, work)
    assert result.ok, result.stderr  # Asterisk hung up (a BYE to the caller), not SIPp's own timeout
    (hold,) = holds(database_url)
    # ... at the end of the hold plus Asterisk's 2 s grace, not later; and not before the hold's seconds.
    bye = result.first("UDP message received", "BYE")
    assert (bye - limit_seen).total_seconds() < hold["held_s"] + 2 + 1, (bye, limit_seen, hold["held_s"])
    assert result.talk_s() > hold["held_s"], (result.talk_s(), hold["held_s"])
    assert hold["settled_at"] is None  # left for the next start's sweep (store.settle_expired)
    assert pool(database_url, account) == {"balance_s": 600, "reserved_s": hold["held_s"]}
