"""`callctl privacy` and `callctl suspension` on a real PostgreSQL: export, erasure, purge, inventory."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callctl.privacy.rules import PSEUDO_PREFIX
from scripts.devstack import REPO
from tests.integration.test_conference import book

pytestmark = pytest.mark.integration

P1 = "p1@example.com"
P1_NUMBER = "+33612345678"
NOW = dt.datetime.now(dt.UTC)


def run_cli(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env.update(CALLCTL_DATABASE_URL=database_url, CALLCTL_OUTBOX_DIR=str(tmp_path / "outbox"),
               CALLCTL_SPOOL_DIR=str(tmp_path / "spool"))
    return subprocess.run([sys.executable, "-m", "callctl", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def cli(database_url: str, tmp_path: Path, *args: str) -> Any:
    res = run_cli(database_url, tmp_path, *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def sql(database_url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(database_url)
        try:
            return [dict(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def add_cdr(database_url: str, started_at: dt.datetime, from_number: str, to_number: str, *,
            account_id: str | None = None, person: str | None = None, conference_id: str | None = None) -> str:
    leg = str(uuid.uuid4())
    sql(database_url,
        "INSERT INTO cdr (leg_id, call_id, direction, from_number, to_number, started_at, ended_at, billed_s, "
        "disposition, hangup_reason, channel_id, account_id, conference_id, person, role, extra) "
        "VALUES ($1, $1, 'inbound', $2, $3, $4, $4::timestamptz + interval '60 s', 60, 'answered', 'normal', 'chan-1', "
        "$5, $6, $7, $8, $9::jsonb)",
        uuid.UUID(leg), from_number, to_number, started_at, account_id, conference_id, person,
        "participant" if person else None, json.dumps({"caller_raw": from_number}))
    return leg


def traces(database_url: str, needle: str) -> dict[str, int]:
    """Rows of every table (partitions included) whose text contains ``needle``."""
    tables = [r["relname"] for r in sql(
        database_url, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r'")]
    found = {}
    for table in tables:
        rows = sql(database_url, f'SELECT count(*) AS n FROM "{table}" t WHERE strpos(lower(t::text), lower($1)) > 0',
                   needle)
        if rows[0]["n"]:
            found[table] = rows[0]["n"]
    return found


def test_export_then_erase_of_a_participant_leaves_no_trace_outside_pseudonymised_cdrs(
        database_url: str, tmp_path: Path) -> None:
    conf = book(database_url, tmp_path)
    recent = add_cdr(database_url, NOW - dt.timedelta(days=3), P1_NUMBER, "+33900000100", person=P1,
                     conference_id=conf["id"])
    add_cdr(database_url, NOW - dt.timedelta(days=400), P1_NUMBER, "+33900000100", person=P1)
    sql(database_url, "INSERT INTO conference_attempt (caller, access_number, reason) VALUES ($1, '+33900000100', "
        "'wrong_code')", P1_NUMBER)
    sql(database_url, "INSERT INTO conference_event (conference_id, person, role, what, at) VALUES "
        "($1, $2, 'participant', 'join', now())", uuid.UUID(conf["id"]), P1)
    assert any(P1 in p.name for p in (tmp_path / "outbox").glob("*.eml"))

    by_mail = cli(database_url, tmp_path, "privacy", "export", "--email", P1.upper())
    codes = by_mail["database"]["conference_codes"]
    assert [c["role"] for c in codes] == ["participant"] and codes[0]["code"]
    assert len(by_mail["database"]["conference_events"]) == 1 and len(by_mail["database"]["cdrs"]) == 2
    assert by_mail["recordings"]["recordings"] == [] and by_mail["outbox_files"]
    out = tmp_path / "export.json"
    res = run_cli(database_url, tmp_path, "privacy", "export", "--number", P1_NUMBER, "--out", str(out))
    assert res.returncode == 0 and res.stdout == "", res.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    by_number = json.loads(out.read_text())
    assert len(by_number["database"]["conference_attempts"]) == 1 and len(by_number["database"]["cdrs"]) == 2

    dry = cli(database_url, tmp_path, "privacy", "erase", "--email", P1, "--dry-run")
    assert dry["counts"]["conference_code"] == 1 and dry["counts"]["cdr_deleted"] == 1
    assert traces(database_url, P1).keys() >= {"conference_code", "conference_event"}

    erased = cli(database_url, tmp_path, "privacy", "erase", "--email", P1)
    assert erased["counts"] == {"conference_attempt": 0, "conference_event": 1, "conference_code": 1,
                                "conference_link": 1, "conference_message": 0, "conference_document": 0,
                                "conference": 0, "cdr_pseudonymised": 1, "cdr_deleted": 1, "outbox_files": 1,
                                "recordings": 0, "recordings_held": 0, "recordings_on_other_node": 0}
    assert erased["needs_attention"] == []
    cli(database_url, tmp_path, "privacy", "erase", "--number", P1_NUMBER)

    assert traces(database_url, P1) == {}
    assert traces(database_url, P1_NUMBER) == {}
    assert not any(P1 in p.read_text() for p in (tmp_path / "outbox").glob("*.eml"))
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 3  # organizer and the two other participants
    [cdr] = sql(database_url, "SELECT * FROM cdr")
    assert str(cdr["leg_id"]) == recent and cdr["billed_s"] == 60 and cdr["to_number"] == "+33900000100"
    assert cdr["person"] == erased["subject"] and cdr["from_number"].startswith(PSEUDO_PREFIX)
    assert json.loads(cdr["extra"])["rating_prefix"] == {"from": "+33612", "to": "+33900"}
    audit = sql(database_url, "SELECT command, subject, dry_run FROM privacy_audit ORDER BY id")
    assert [(a["command"], a["dry_run"]) for a in audit] == [
        ("privacy erase --email", True), ("privacy erase --email", False), ("privacy erase --number", False)]
    assert audit[0]["subject"] == audit[1]["subject"] == cdr["person"]  # deterministic pseudonym
    # The other participants still have their codes.
    assert len(sql(database_url, "SELECT 1 FROM conference_code WHERE revoked_at IS NULL")) == 3


def test_erasing_the_organizer_deletes_the_whole_conference(database_url: str, tmp_path: Path) -> None:
    book(database_url, tmp_path, participants=2)
    erased = cli(database_url, tmp_path, "privacy", "erase", "--email", "org@example.com")
    assert erased["counts"]["conference"] == 1 and erased["counts"]["conference_code"] == 3
    assert sql(database_url, "SELECT 1 FROM conference") == []
    assert traces(database_url, "org@example.com") == {}
    assert list((tmp_path / "outbox").glob("*.eml")) == []  # every invitation named the organizer


def test_a_suspended_account_is_purged_after_a_month_and_not_before(database_url: str, tmp_path: Path) -> None:
    acc = cli(database_url, tmp_path, "account", "create", "--name", "Dupont SARL", "--country", "FR")
    user = cli(database_url, tmp_path, "user", "add", "--account", acc["id"], "--name", "Jeanne Dupont",
               "--number", "+33145678901", "--forward", "+33687654321")
    sql(database_url, "INSERT INTO credit_balance (account_id, currency, balance) VALUES ($1, 'EUR', 10)",
        uuid.UUID(acc["id"]))
    suspended_at = NOW - dt.timedelta(days=40)
    add_cdr(database_url, NOW - dt.timedelta(days=45), "+33145678901", "+33611223344", account_id=acc["id"])
    add_cdr(database_url, NOW - dt.timedelta(days=500), "+33145678901", "+33611223344", account_id=acc["id"])
    # The emergency location (and its copy on the SIP endpoint) goes with the rest ("Dupont" below).
    assert run_cli(database_url, tmp_path, "account", "emergency", acc["id"], "--enable", "--location",
                   "12 rue Dupont, 75002 Paris", "--verified").returncode == 0
    cli(database_url, tmp_path, "account", "suspend", acc["id"], "--now", suspended_at.isoformat())

    not_yet = (suspended_at + dt.timedelta(days=27)).isoformat()
    early = cli(database_url, tmp_path, "suspension", "purge", "--now", not_yet)
    assert early["purged"] == []
    dry = cli(database_url, tmp_path, "suspension", "purge", "--dry-run", "--now", NOW.isoformat())
    assert dry["purged"][0]["counts"]["sip_user"] == 1
    assert len(sql(database_url, "SELECT 1 FROM sip_user")) == 1

    done = cli(database_url, tmp_path, "suspension", "purge", "--now", NOW.isoformat())
    counts = done["purged"][0]["counts"]
    assert (counts["sip_user"], counts["did"], counts["ps_rows"], counts["credit"]) == (1, 1, 3, 1)
    assert (counts["cdr_pseudonymised"], counts["cdr_deleted"]) == (1, 1)
    for needle in ("+33145678901", "+33611223344", "+33687654321", "Dupont", user["sip_username"]):
        assert traces(database_url, needle) == {}, needle
    [cdr] = sql(database_url, "SELECT * FROM cdr")
    assert cdr["account_id"] == acc["id"] and cdr["billed_s"] == 60 and cdr["from_number"].startswith(PSEUDO_PREFIX)
    [susp] = sql(database_url, "SELECT purged_at FROM account_suspension")
    assert susp["purged_at"] is not None
    assert cli(database_url, tmp_path, "suspension", "purge", "--now", NOW.isoformat())["purged"] == []
    res = run_cli(database_url, tmp_path, "suspension", "resume", acc["id"])
    assert res.returncode == 2 and "purged" in res.stderr
    assert [a["command"] for a in sql(database_url, "SELECT command FROM privacy_audit ORDER BY id")] == [
        "suspension suspend", "suspension purge", "suspension purge"]


def test_a_resumed_account_is_not_purged(database_url: str, tmp_path: Path) -> None:
    acc = cli(database_url, tmp_path, "account", "create", "--name", "Acme", "--country", "FR")
    cli(database_url, tmp_path, "suspension", "suspend", acc["id"], "--now", (NOW - dt.timedelta(days=60)).isoformat())
    resumed = cli(database_url, tmp_path, "suspension", "resume", acc["id"])
    assert resumed["resumed_at"] is not None
    assert cli(database_url, tmp_path, "suspension", "purge")["purged"] == []


def test_inventory_counts_people_records_files_and_the_oldest_item(database_url: str, tmp_path: Path) -> None:
    book(database_url, tmp_path, participants=2)
    oldest = NOW - dt.timedelta(days=100)
    add_cdr(database_url, oldest, P1_NUMBER, "+33900000100", person=P1)
    add_cdr(database_url, NOW, "+33611111111", "+33900000100", person="p0@example.com")
    items = {i["item"]: i for i in cli(database_url, tmp_path, "privacy", "inventory")["items"]}
    assert (items["conference_organizer"]["people"], items["conference_organizer"]["records"]) == (1, 1)
    assert (items["conference_code"]["people"], items["conference_code"]["records"]) == (3, 3)
    assert (items["cdr_number"]["people"], items["cdr_number"]["records"]) == (3, 2)
    assert dt.datetime.fromisoformat(items["cdr_number"]["oldest"]) == oldest
    assert items["cdr_person"]["people"] == 2
    assert (items["outbox"]["files"], items["outbox"]["people"]) == (3, 3)
    assert items["recording"]["files"] == 0 and items["recording"]["directory"].endswith("recordings")
    assert items["account"]["records"] == 0


def test_erasing_a_number_reaches_dialer_records_exceptions_and_asterisk_events(database_url: str,
                                                                                  tmp_path: Path) -> None:
    number, acc = "+33612121212", str(uuid.uuid4())
    old, recent = NOW - dt.timedelta(days=40), NOW - dt.timedelta(days=2)
    for at in (old, recent):
        sql(database_url, "INSERT INTO gating_decision (account_id, decided_at, caller, callee, decision, rule, "
            "reason, emergency, automated) VALUES ($1, $2, '+33170000001', $3, 'allow', 'ok', 'ok', false, true)",
            uuid.UUID(acc), at, number)
    sql(database_url, "INSERT INTO account (id, name, country, currency, plan) VALUES ($1, 'acme', 'FR', 'EUR', "
        "'payg')", uuid.UUID(acc))
    sql(database_url, "INSERT INTO optout_exception (account_id, number, kind) VALUES ($1, $2, 'consent')",
        uuid.UUID(acc), number)
    sql(database_url, "INSERT INTO cel (eventtype, eventtime, cid_num, exten, channame) "
        "VALUES ('CHAN_START', now(), $1, '+33900000001', 'PJSIP/x-1')", number)
    items = {i["item"]: i for i in cli(database_url, tmp_path, "privacy", "inventory")["items"]}
    assert items["gating_decision"]["records"] == 2 and items["optout_exception"]["people"] == 1
    assert items["asterisk_cel"]["records"] == 1
    exported = tmp_path / "export.json"
    res = run_cli(database_url, tmp_path, "privacy", "export", "--number", number, "--out", str(exported))
    assert res.returncode == 0, res.stderr
    data = json.loads(exported.read_text())["database"]
    assert len(data["gating_decisions"]) == 2 and len(data["asterisk_channel_events"]) == 1

    erased = cli(database_url, tmp_path, "privacy", "erase", "--number", number)
    assert erased["counts"]["gating_decision_pseudonymised"] == 1  # the last 30 days still count for the cap
    assert erased["counts"]["optout_exception"] == 1 and erased["counts"]["asterisk_cel"] == 1
    left = sql(database_url, "SELECT callee, decided_at FROM gating_decision ORDER BY decided_at")
    assert left[0]["callee"].startswith(PSEUDO_PREFIX) and left[1]["callee"] == number
    assert not sql(database_url, "SELECT 1 FROM cel") and not sql(database_url, "SELECT 1 FROM optout_exception")
