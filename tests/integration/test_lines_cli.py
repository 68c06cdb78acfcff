"""`callctl account|user|number` on a real PostgreSQL: what the commands print and what they store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from callctl.store import lines as store
from scripts.devstack import REPO

pytestmark = pytest.mark.integration


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env["CALLCTL_DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "-m", "callctl", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def cli(database_url: str, *args: str) -> dict[str, Any]:
    res = run_cli(database_url, *args)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def db(database_url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(database_url)
        try:
            return [dict(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def lookup(database_url: str, fn: Any, key: str) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(database_url)
        try:
            return await fn(conn, key)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_account_create_defaults_currency_by_country_and_show_lists_users(database_url: str) -> None:
    acc = cli(database_url, "account", "create", "--name", "Zurich GmbH", "--country", "ch", "--extra-channels", "1")
    assert (acc["country"], acc["currency"], acc["plan"], acc["extra_channels"], acc["recording"]) == \
        ("CH", "CHF", "payg", 1, False)
    user = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Anna", "--number", "044 668 18 00")
    shown = cli(database_url, "account", "show", acc["id"])
    assert shown["id"] == acc["id"] and [u["id"] for u in shown["users"]] == [user["id"]]
    assert shown["users"][0]["numbers"] == ["+41446681800"]


def test_user_add_writes_the_realtime_pjsip_rows_and_remove_deletes_them(database_url: str) -> None:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR", "--recording")
    user = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Bob", "--number", "01 23 45 67 89",
               "--number", "+33987654321", "--forward", "06 12 34 56 78")
    name = user["sip_username"]
    assert user["numbers"] == ["+33123456789", "+33987654321"] and user["forward_to"] == "+33612345678"
    assert len(user["sip_password"]) >= 24
    [ep] = db(database_url, "SELECT * FROM ps_endpoints WHERE id = $1", name)
    assert (ep["context"], ep["disallow"], ep["allow"], ep["dtmf_mode"], ep["direct_media"], ep["rtp_symmetric"],
            ep["force_rport"], ep["rewrite_contact"], ep["auth"], ep["aors"]) == \
        ("from-users", "all", "opus,speex,alaw,ulaw", "rfc4733", "no", "yes", "yes", "yes", name, name)
    [auth] = db(database_url, "SELECT * FROM ps_auths WHERE id = $1", name)
    assert (auth["auth_type"], auth["username"], auth["password"]) == ("userpass", name, user["sip_password"])
    [aor] = db(database_url, "SELECT * FROM ps_aors WHERE id = $1", name)
    assert (aor["max_contacts"], aor["remove_existing"]) == (1, "yes")

    line = lookup(database_url, store.user_for_did, "+33987654321")
    assert line == lookup(database_url, store.user_for_endpoint, name)
    assert (str(line.user_id), line.country, line.currency, line.recording, line.forward_to, line.numbers) == \
        (user["id"], "FR", "EUR", True, "+33612345678", ("+33123456789", "+33987654321"))

    removed = cli(database_url, "user", "remove", user["id"])
    assert removed["removed"] is True and removed["numbers_freed"] == ["+33123456789", "+33987654321"]
    for table in ("ps_endpoints", "ps_auths", "ps_aors"):
        assert db(database_url, f"SELECT id FROM {table} WHERE id = $1", name) == []
    assert lookup(database_url, store.user_for_did, "+33987654321") is None
    assert lookup(database_url, store.user_for_endpoint, name) is None
    again = run_cli(database_url, "user", "remove", user["id"])
    assert again.returncode == 2 and "already removed" in again.stderr


def test_a_number_belongs_to_one_user_until_that_user_is_removed(database_url: str) -> None:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "GB")
    assert acc["currency"] == "GBP"
    first = cli(database_url, "user", "add", "--account", acc["id"], "--name", "One", "--number", "020 7946 0000")
    second = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Two")
    taken = run_cli(database_url, "number", "assign", "+442079460000", "--user", second["id"])
    assert taken.returncode == 2 and "already assigned" in taken.stderr
    cli(database_url, "user", "remove", first["id"])
    assigned = cli(database_url, "number", "assign", "020 7946 0000", "--user", second["id"])
    assert assigned == {"number": "+442079460000", "user_id": second["id"], "numbers": ["+442079460000"]}


def test_bad_input_ends_in_one_clear_line(database_url: str) -> None:
    cases = [
        (("account", "create", "--name", "X", "--country", "ZZ"), "ISO 3166"),
        (("account", "create", "--name", "X", "--country", "FR", "--currency", "USD"), "not offered"),
        (("account", "show", "00000000-0000-0000-0000-000000000000"), "no account"),
        (("user", "add", "--account", "00000000-0000-0000-0000-000000000000", "--name", "A"), "no account"),
    ]
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")
    cases.append((("user", "add", "--account", acc["id"], "--name", "A", "--number", "12"), "E.164"))
    for args, message in cases:
        res = run_cli(database_url, *args)
        assert res.returncode == 2, (args, res.stderr)
        assert message in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert db(database_url, "SELECT count(*) AS n FROM sip_user") == [{"n": 0}]
