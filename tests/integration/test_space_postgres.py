"""The Online Space's HTTP server on a real PostgreSQL (rooms faked): links and sessions, CSRF,
roles, messages, documents, limits, expiry and re-issue, privacy (issue 19). The real call and the
real browser are in test_space_browser.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from callctl.conference.actions import Action, MemberView, RoomView
from callctl.conference.changes import ChangeFeed
from callctl.config import Settings
from callctl.store import conferences as conf_store
from callctl.store import privacy as privacy_store
from callctl.store import space as store
from callctl.web.server import SpaceServer
from scripts.devstack import REPO
from tests.integration.test_privacy_postgres import sql

pytestmark = pytest.mark.integration

ORG, P1, P2 = "org@example.com", "p1@example.com", "p2@example.com"
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class FakeRooms:
    def __init__(self) -> None:
        self.changes = ChangeFeed()
        self.acts: list[Action] = []
        self.live: RoomView | None = RoomView((MemberView(ORG, "organizer", dt.datetime.now(dt.UTC), False, False),),
                                              False, False, False)

    async def view(self, conference_id: uuid.UUID) -> RoomView | None:
        return self.live

    async def act(self, conference_id: uuid.UUID, action: Action) -> str:
        self.acts.append(action)
        return "done"


@dataclasses.dataclass
class Space:
    pool: Any
    server: SpaceServer
    rooms: FakeRooms
    conf: conf_store.Conference
    tokens: dict[str, str]
    http: TestServer

    def client(self) -> aiohttp.ClientSession:
        """A browser of its own (cookie jar); closing it leaves the server up."""
        return aiohttp.ClientSession(base_url=str(self.http.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True))


@pytest.fixture
async def space(database_url: str) -> AsyncIterator[Space]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    now = dt.datetime.now(dt.UTC)
    conf, _codes, _ = await conf_store.save_booking(
        pool, subject=EVIL, starts_at=now, ends_at=now + dt.timedelta(hours=1), organizer=ORG,
        participants=[P1, P2], access_numbers=["+33900000100"])
    tokens = await store.issue_links(pool, conf.id)
    rooms = FakeRooms()
    settings = Settings(space_listen="127.0.0.1:0", space_max_document_bytes=64 * 1024, space_max_documents=3)
    server = SpaceServer(settings, pool, rooms, guesses_per_10_min=5)
    http = TestServer(server.app())
    await http.start_server()
    try:
        yield Space(pool, server, rooms, conf, tokens, http)
    finally:
        await http.close()
        await pool.close()


async def login(space: Space, client: aiohttp.ClientSession, email: str) -> str:
    """Open the person's link; returns the page's CSRF token."""
    res = await client.get(f"/s/{space.tokens[email]}", allow_redirects=False)
    assert res.status == 303 and res.headers["Location"] == f"/c/{space.conf.id}/"  # the token leaves the URL
    cookie = res.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and f"Path=/c/{space.conf.id}/" in cookie
    page = await client.get(f"/c/{space.conf.id}/")
    assert page.status == 200
    text = await page.text()
    match = re.search(r'<meta name="csrf" content="([^"]+)">', text)
    assert match
    return match.group(1)


async def test_a_link_opens_a_session_and_the_token_is_stored_only_hashed(space: Space) -> None:
    async with space.client() as client:
        await login(space, client, ORG)
        page = await client.get(f"/c/{space.conf.id}/")
        assert page.headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'self'")
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["Referrer-Policy"] == "no-referrer"
        text = await page.text()
        assert "<script>alert" not in text and "&lt;script&gt;" in text  # the subject is escaped
        assert 'id="organizer-controls"' in text
    async with space.pool.acquire() as conn:
        dump = str([dict(r) for r in await conn.fetch("SELECT * FROM conference_link")])
        dump += str([dict(r) for r in await conn.fetch("SELECT * FROM conference_space_session")])
    assert not any(token in dump for token in space.tokens.values())


async def test_no_session_no_page_and_another_conferences_session_does_not_open_this_one(space: Space) -> None:
    async with space.client() as client:
        assert (await client.get(f"/c/{space.conf.id}/")).status == 401
        assert (await client.get(f"/c/{space.conf.id}/state")).status == 401
        await login(space, client, P1)
        other = uuid.uuid4()
        assert (await client.get(f"/c/{other}/")).status == 401


async def test_wrong_tokens_are_rate_limited_per_address(space: Space) -> None:
    async with space.client() as client:
        for i in range(5):
            res = await client.get(f"/s/{'A' * 31}{i}", allow_redirects=False)
            assert res.status == 404 and "not valid" in await res.text()
        res = await client.get(f"/s/{space.tokens[ORG]}", allow_redirects=False)
        assert res.status == 429  # even a right token, once the address guessed too often


async def test_a_reissued_link_gets_a_clear_page_and_its_session_ends(space: Space) -> None:
    async with space.client() as client:
        await login(space, client, P1)
        new = await store.issue_links(space.pool, space.conf.id, P1)
        res = await client.get(f"/c/{space.conf.id}/")
        assert res.status == 401  # the old session ended with its link
        res = await client.get(f"/s/{space.tokens[P1]}", allow_redirects=False)
        assert res.status == 410 and "replaced by a newer one" in await res.text()
        res = await client.get(f"/s/{new[P1]}", allow_redirects=False)
        assert res.status == 303
    async with space.client() as client:  # the others' links still open
        await login(space, client, P2)


async def test_a_cancelled_or_long_over_conference_no_longer_opens(space: Space) -> None:
    async with space.client() as client:
        await login(space, client, P1)
        await conf_store.cancel(space.pool, space.conf.id)
        res = await client.get(f"/c/{space.conf.id}/")
        assert res.status == 410 and "cancelled" in await res.text()
    async with space.pool.acquire() as conn:
        await conn.execute("UPDATE conference SET cancelled_at = NULL, starts_at = now() - interval '30 days', "
                           "ends_at = now() - interval '29 days'")
    async with space.client() as client:
        res = await client.get(f"/s/{space.tokens[P2]}", allow_redirects=False)
        assert res.status == 410 and "is over" in await res.text()


async def test_actions_need_the_csrf_token_and_organizer_actions_are_refused_to_participants(space: Space) -> None:
    url = f"/c/{space.conf.id}/action"
    async with space.client() as client:
        csrf = await login(space, client, P1)
        fetch = {"X-Requested-With": "fetch"}
        res = await client.post(url, data={"action": "mute", "target": P1}, headers=fetch)
        assert res.status == 403 and (await res.json())["result"] == "bad_csrf"
        res = await client.post(url, data={"action": "mute", "target": P1, "csrf": csrf},
                                headers={**fetch, "Origin": "https://evil.example"})
        assert res.status == 403  # another site's form, even with a stolen token
        for kind, target in (("lock", ""), ("end", ""), ("mute_all", ""), ("record", ""), ("remove", P2),
                             ("mute", P2), ("unmute", ORG)):
            res = await client.post(url, data={"action": kind, "target": target, "csrf": csrf}, headers=fetch)
            assert res.status == 403 and (await res.json())["result"] == "forbidden", kind
        assert space.rooms.acts == []  # none of it reached the room
        res = await client.post(url, data={"action": "mute", "csrf": csrf}, headers=fetch)
        assert res.status == 200
        assert space.rooms.acts == [Action("mute", P1, "participant", P1)]  # their own mute
    async with space.client() as client:
        csrf = await login(space, client, ORG)
        res = await client.post(url, data={"action": "lock", "csrf": csrf}, allow_redirects=False)
        assert res.status == 303  # a plain form (no script) comes back to the page
        assert space.rooms.acts[-1] == Action("lock", ORG, "organizer", ORG)


async def test_messages_are_stored_with_the_conference_and_delivered_live_as_text(space: Space) -> None:
    async with space.client() as client:
        csrf = await login(space, client, P1)
        events = await client.get(f"/c/{space.conf.id}/events")
        assert events.headers["Content-Type"] == "text/event-stream"
        first = await events.content.readuntil(b"\n\n")
        assert b'"members":[{"person":"org@example.com"' in first
        res = await client.post(f"/c/{space.conf.id}/messages", data={"body": EVIL, "csrf": csrf},
                                headers={"X-Requested-With": "fetch"})
        assert res.status == 200
        update = await events.content.readuntil(b"\n\n")  # pushed at once, not on the next poll
        assert b"alert" in update and b"<script>" in update  # JSON text: the page sets it as textContent
        events.close()
        res = await client.post(f"/c/{space.conf.id}/messages", data={"body": "x" * 2001, "csrf": csrf},
                                headers={"X-Requested-With": "fetch"})
        assert res.status == 400
    [msg] = await store.messages(space.pool, space.conf.id)
    assert (msg.author, msg.body) == (P1, EVIL)


async def test_live_pages_are_capped_per_person_and_in_all(space: Space) -> None:
    """A person's newest live page takes over from their oldest (told "moved", so it stops reconnecting);
    another person is not affected; past the daemon's bound a new page gets a 503."""
    space.server.streams_per_person = 2
    async with space.client() as p1, space.client() as p2:
        await login(space, p1, P1)
        csrf = await login(space, p2, P2)
        pages = []
        for _ in range(2):
            pages.append(await p1.get(f"/c/{space.conf.id}/events"))
            assert (await pages[-1].content.readuntil(b"\n\n")).startswith(b"data: ")
        other = await p2.get(f"/c/{space.conf.id}/events")
        assert (await other.content.readuntil(b"\n\n")).startswith(b"data: ")
        newest = await p1.get(f"/c/{space.conf.id}/events")
        assert (await newest.content.readuntil(b"\n\n")).startswith(b"data: ")
        assert await pages[0].content.readuntil(b"\n\n") == b"event: moved\ndata: {}\n\n"
        assert await pages[0].content.read() == b""  # ended by the server
        space.server.streams_total = 3  # p1's two pages and p2's one are open
        full = await p2.get(f"/c/{space.conf.id}/events")
        assert full.status == 503 and full.headers["Retry-After"] == "30"
        res = await p2.post(f"/c/{space.conf.id}/messages", data={"body": "still here?", "csrf": csrf},
                            headers={"X-Requested-With": "fetch"})
        assert res.status == 200
        for page in (pages[1], other, newest):  # the pages still open are still served
            assert b"still here?" in await page.content.readuntil(b"\n\n")
            page.close()


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


async def upload(client: aiohttp.ClientSession, space: Space, csrf: str, name: str, content: bytes) -> Any:
    form = aiohttp.FormData()
    form.add_field("csrf", csrf)
    form.add_field("file", content, filename=name, content_type="application/octet-stream")
    return await client.post(f"/c/{space.conf.id}/documents", data=form, headers={"X-Requested-With": "fetch"})


async def test_documents_checked_on_content_limited_and_downloaded_only_by_members(space: Space) -> None:
    async with space.client() as client:
        csrf = await login(space, client, P1)
        assert (await upload(client, space, csrf, f"../../{EVIL}.pdf", PDF)).status == 200
        assert (await upload(client, space, csrf, "report.pdf", b"MZ\x90\x00exe")).status == 415
        assert (await upload(client, space, csrf, "big.txt", b"a" * (64 * 1024 + 1))).status == 413
        assert (await upload(client, space, "wrong", "x.pdf", PDF)).status == 403
        [doc] = await store.documents(space.pool, space.conf.id)
        assert "/" not in doc.name and doc.name.endswith(".pdf") and doc.uploaded_by == P1
        assert (await upload(client, space, csrf, "b.txt", b"notes")).status == 200
        assert (await upload(client, space, csrf, "c.txt", b"notes")).status == 200
        res = await upload(client, space, csrf, "d.txt", b"notes")
        assert res.status == 409 and (await res.json())["result"] == "too_many_docs"  # 3 per conference here
    async with space.client() as client:
        await login(space, client, P2)
        res = await client.get(f"/c/{space.conf.id}/documents/{doc.id}")
        assert res.status == 200 and await res.read() == PDF
        assert res.headers["Content-Disposition"].startswith("attachment;")
        assert res.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in res.headers["Content-Security-Policy"]
    async with space.client() as outsider:
        assert (await outsider.get(f"/c/{space.conf.id}/documents/{doc.id}")).status == 401
        # A member of another conference, asking through their own conference's path: not there.
        now = dt.datetime.now(dt.UTC)
        other, _, _ = await conf_store.save_booking(space.pool, subject="Other", starts_at=now,
                                                    ends_at=now + dt.timedelta(hours=1), organizer="x@example.com",
                                                    participants=["y@example.com"], access_numbers=["+33900000100"])
        token = (await store.issue_links(space.pool, other.id, "y@example.com"))["y@example.com"]
        assert (await outsider.get(f"/s/{token}", allow_redirects=False)).status == 303
        assert (await outsider.get(f"/c/{other.id}/documents/{doc.id}")).status == 404
        assert (await outsider.get(f"/c/{space.conf.id}/documents/{doc.id}")).status == 401


async def test_uploads_are_rate_limited_per_person(space: Space) -> None:
    space.server.uploads.limit = 2
    async with space.client() as client:
        csrf = await login(space, client, P1)
        assert (await upload(client, space, csrf, "a.txt", b"a")).status == 200
        assert (await upload(client, space, csrf, "b.txt", b"b")).status == 200
        assert (await upload(client, space, csrf, "c.txt", b"c")).status == 429


async def test_space_data_is_in_the_privacy_census_export_and_erase(space: Space, tmp_path: Path) -> None:
    async with space.client() as client:
        csrf = await login(space, client, P1)
        await client.post(f"/c/{space.conf.id}/messages", data={"body": "hello", "csrf": csrf})
        await upload(client, space, csrf, "notes.txt", b"notes")
    census = await privacy_store.census(space.pool)
    assert census["conference_link"].records == 3 and census["conference_message"].records == 1
    assert census["conference_document"].records == 1
    rows = await privacy_store.collect(space.pool, email=P1)
    assert [m["body"] for m in rows["conference_messages"]] == ["hello"]
    assert [d["name"] for d in rows["conference_documents"]] == ["notes.txt"]
    assert rows["conference_space_links"][0]["last_opened_at"] is not None
    counts, _ = await privacy_store.erase_person(space.pool, email=P1, number=None, key=b"k" * 32,
                                                 cutoff=dt.datetime.now(dt.UTC), dry_run=False)
    assert (counts["conference_link"], counts["conference_message"], counts["conference_document"]) == (1, 1, 1)
    # Erasing the organizer takes the whole conference's space with it.
    counts, _ = await privacy_store.erase_person(space.pool, email=ORG, number=None, key=b"k" * 32,
                                                 cutoff=dt.datetime.now(dt.UTC), dry_run=False)
    async with space.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM conference_link") == 0
        assert await conn.fetchval("SELECT count(*) FROM conference_space_session") == 0


def run_cli(database_url: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    full.update(CALLCTL_DATABASE_URL=database_url, CALLCTL_OUTBOX_DIR=str(tmp_path / "outbox"),
                CALLCTL_SPACE_PUBLIC_URL="https://space.example.com", **env)
    return subprocess.run([sys.executable, "-m", "callctl", "conference", *args], env=full, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def run_json(database_url: str, tmp_path: Path, *args: str) -> Any:
    res = run_cli(database_url, tmp_path, *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_booking_prints_and_mails_each_persons_link_and_link_reissues_one(database_url: str, tmp_path: Path) -> None:
    start = dt.datetime.now(dt.UTC).isoformat()
    conf = run_json(database_url, tmp_path, "create", "--subject", "Weekly", "--start", start, "--duration", "60",
                    "--organizer", ORG, "--participant", P1, "--access-number", "+33900000100")
    org_link, p1_link = conf["organizer"]["link"], conf["participants"][0]["link"]
    assert org_link.startswith("https://space.example.com/s/") and org_link != p1_link
    mails = {m.name.rsplit("-", 1)[1]: m.read_text() for m in (tmp_path / "outbox").glob("*.eml")}
    assert p1_link in mails[f"{P1}.eml"] and org_link not in mails[f"{P1}.eml"]
    assert org_link in mails[f"{ORG}.eml"]

    shown = run_json(database_url, tmp_path, "link", conf["id"], "--email", P1)
    assert shown["state"] == "open" and "link" not in shown and shown["last_opened_at"] is None
    assert p1_link.rsplit("/", 1)[1] not in json.dumps(shown)
    again = run_json(database_url, tmp_path, "link", conf["id"], "--email", P1.upper(), "--reissue")
    assert again["link"] != p1_link and again["state"] == "open" and len(again["messages"]) == 1
    assert again["link"] in Path(again["messages"][0]).read_text()
    hashes = sql(database_url, "SELECT email, revoked_at FROM conference_link ORDER BY issued_at")
    assert [(h["email"], h["revoked_at"] is None) for h in hashes] == [(ORG, True), (P1, False), (P1, True)]

    # reissue (codes and links), then cancel: every link stops opening.
    out = run_json(database_url, tmp_path, "reissue", conf["id"], "--person", ORG)
    assert out["codes"][0]["link"] != org_link
    run_json(database_url, tmp_path, "cancel", conf["id"])
    assert not sql(database_url, "SELECT 1 FROM conference_link WHERE revoked_at IS NULL")
    assert run_json(database_url, tmp_path, "link", conf["id"], "--email", P1)["state"] == "cancelled"


def test_link_command_refuses_bad_input_with_one_clear_line(database_url: str, tmp_path: Path) -> None:
    start = dt.datetime.now(dt.UTC).isoformat()
    conf = run_json(database_url, tmp_path, "create", "--subject", "Weekly", "--start", start, "--duration", "60",
                    "--organizer", ORG, "--participant", P1, "--access-number", "+33900000100")
    res = run_cli(database_url, tmp_path, "link", conf["id"], "--email", "stranger@example.com")
    assert res.returncode != 0 and "stranger@example.com is not invited" in res.stderr
    res = run_cli(database_url, tmp_path, "link", str(uuid.uuid4()), "--email", P1)
    assert res.returncode != 0 and "no conference" in res.stderr
    res = run_cli(database_url, tmp_path, "link", conf["id"], "--email", P1, CALLCTL_SPACE_LISTEN="")
    assert res.returncode != 0 and "Online Space is off" in res.stderr
    # With the space off, bookings carry no link.
    off = run_cli(database_url, tmp_path, "create", "--subject", "W", "--start", start, "--duration", "60",
                  "--organizer", ORG, "--participant", P2, "--access-number", "+33900000100", CALLCTL_SPACE_LISTEN="")
    assert off.returncode == 0 and "link" not in json.loads(off.stdout)["organizer"]
