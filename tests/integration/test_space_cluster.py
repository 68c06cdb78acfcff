"""The Online Space and the conference commands act on the room wherever it lives in the cluster (issue 18,
docs/scaling.md "The Online Space and commands across nodes"). Two real nodes on one PostgreSQL: the room
is held by node B (its organizer called B); a person whose page is served by node A sees B's room live
and steers it from a real browser; `callctl conference record` works whichever node holds the room; node
B's engine killed: a command gets a clear answer at once (nothing applied, never applied later), then the
room's new owner serves. The engines live for the module; the test that kills one runs last."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.integration.test_conference import ACCESS, book, db
from tests.integration.test_conference_affinity import room_channels
from tests.integration.test_space_browser import browser, click, members, token_of, until
from tests.support import sipp
from tests.support.affinity_nodes import LEASE_S, Node, affinity_nodes, cluster_database, node_engines
from tests.support.asterisk import REPO, Daemon, wait_for

pytestmark = pytest.mark.integration
__all__ = ["affinity_nodes", "browser", "cluster_database", "node_engines"]  # fixtures, imported for this module


def staying_caller(node: Node, code: str, number: str) -> tuple[subprocess.Popen[str], Path]:
    """A caller on ``node`` who keys CODE# and stays until the engine hangs up."""
    return sipp.start_call(node.asterisk.sip_port, ACCESS, [("pause", 1200), ("dtmf", code + "#"), ("wait_bye", None)],
                           caller=number, bye_timeout_s=50, timeout_s=55, remote_ip=node.sip_ip)


def space_of(engine: Daemon) -> str:
    return "http://" + engine.env["CALLCTL_SPACE_LISTEN"]


def callctl(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env["CALLCTL_DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "-m", "callctl", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=90)


class Page:
    """A person's session on one node's Online Space, driven over HTTP as the page's script does."""

    def __init__(self, base: str, link: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        with self.opener.open(f"{base}/s/{token_of(link)}", timeout=10) as resp:
            self.path = resp.geturl().removeprefix(base)  # /c/<id>/ after the redirect
            html = resp.read().decode()
        self.csrf = html.split('name="csrf" content="', 1)[1].split('"', 1)[0]

    def state(self) -> dict[str, Any]:
        with self.opener.open(f"{self.base}{self.path}state", timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def act(self, action: str, target: str = "") -> tuple[int, str]:
        body = urllib.parse.urlencode({"action": action, "target": target, "csrf": self.csrf}).encode()
        req = urllib.request.Request(f"{self.base}{self.path}action", data=body,
                                     headers={"X-Requested-With": "fetch"})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())["result"]
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())["result"]


def test_organizer_page_on_the_other_node_shows_and_steers_the_owners_room(
        browser: webdriver.Chrome, affinity_nodes: dict[str, Node], node_engines: dict[str, Daemon],
        cluster_database: str, tmp_path: Path) -> None:
    database_url = cluster_database
    conf = book(database_url, tmp_path, participants=2)
    a, b = node_engines["a"], node_engines["b"]
    p0, p1 = conf["participants"]
    legs = [staying_caller(affinity_nodes["b"], conf["organizer"]["code"], "33611000201")]
    b.wait_for_log("conference_member_join", conference_id=conf["id"], role="organizer")
    legs.append(staying_caller(affinity_nodes["a"], p0["code"], "33611000202"))  # hopped to B's room
    wait_for(lambda: [r for r in room_channels(affinity_nodes["b"]) if len(r) == 2], 20,
             "the organizer and the hopped participant in node B's bridge")
    assert room_channels(affinity_nodes["a"]) == []

    # The organizer's page is served by node A, which holds no room: it shows B's room, live.
    browser.get(f"{space_of(a)}/s/{token_of(conf['organizer']['link'])}")
    until(browser, "both members listed from node B's room", lambda d: len(members(d)) == 2, 20)
    assert "muted" not in members(browser)[p0["email"]]
    # Steering from node A's page: B's room applies it (B's log), A's page shows it.
    click(browser, f'li.member[data-person="{p0["email"]}"] button[data-action="mute"]')
    until(browser, "p0 shown muted", lambda d: "muted" in members(d)[p0["email"]])
    applied = b.wait_for_log("conference_command_applied", conference_id=conf["id"], command="mute")
    assert applied["result"] == "done" and applied["source"] == "space"
    b.wait_for_log("conference_member_muted", conference_id=conf["id"], muted=True)
    assert a.events("conference_command_forwarded", conference_id=conf["id"], owner="b")
    click(browser, '#organizer-controls form[data-toggle="unlock"] button')
    until(browser, "the room shown locked", lambda d: "locked" in d.find_element(By.ID, "room-state").text)
    # Locked on B: a participant calling node A now is refused by B's room.
    late = staying_caller(affinity_nodes["a"], p1["code"], "33611000203")
    assert sipp.finish(*late).ok
    refused = wait_for(lambda: db(database_url, "SELECT reason FROM conference_attempt WHERE conference_id = "
                                                "$1::text::uuid AND reason = 'locked'", conf["id"]), 20,
                       "the late participant refused (locked)")
    assert refused
    assert len(members(browser)) == 2

    # Recording, from a page on node A (plain HTTP this time) and from the command line: B records.
    page = Page(space_of(a), conf["organizer"]["link"])
    assert page.act("record") == (200, "done")
    b.wait_for_log("recording_started", 30, conference_id=conf["id"])
    # Node B publishes its room's state for other nodes at most every 250 ms (remote.PUBLISH_EVERY_S).
    wait_for(lambda: page.state()["recording"] is True, 10, "node A's view of the room recording")
    stop = callctl(database_url, "conference", "record", conf["id"], "--stop")
    assert stop.returncode == 0 and json.loads(stop.stdout)["recording"] == "stopped", stop.stderr
    until(browser, "the recording shown stopped", lambda d: "recorded" not in d.find_element(By.ID, "room-state").text)
    wait_for(lambda: page.state()["recording"] is False, 10, "node A's view of the recording stopped")
    # Each command was applied once, by the owner.
    rows = db(database_url, "SELECT node, kind, result FROM conference_command WHERE conference_id = "
                            "$1::text::uuid ORDER BY id", conf["id"])
    assert [(r["node"], r["kind"], r["result"]) for r in rows] == [
        ("b", "mute", "done"), ("b", "lock", "done"), ("b", "record", "done"), ("b", "stop_recording", "stopped")]
    # A participant's page on node A may mute only themself, even through the forwarding.
    p0_page = Page(space_of(a), p0["link"])
    assert p0_page.act("unlock") == (403, "forbidden")
    assert p0_page.act("unmute", p0["email"]) == (200, "done")
    # The organizer ends the call from node A: B's room hangs everyone up.
    assert page.act("end") == (200, "done")
    for proc, work in legs:
        assert sipp.finish(proc, work).ok
    until(browser, "the page shows nobody in the call", lambda d: len(members(d)) == 0, 20)
    assert not a.tracebacks() and not b.tracebacks()


def test_no_live_room_anywhere_the_command_line_says_so_at_once(
        node_engines: dict[str, Daemon], cluster_database: str, tmp_path: Path) -> None:
    conf = book(cluster_database, tmp_path, participants=1)
    refused = callctl(cluster_database, "conference", "record", conf["id"], "--start")
    assert refused.returncode != 0 and "no live room" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    page = Page(space_of(node_engines["a"]), conf["organizer"]["link"])
    assert page.act("lock") == (409, "no_live_room")
    assert page.state()["live"] is False


def test_owner_engine_killed_a_command_is_refused_clearly_then_the_new_owner_serves(
        affinity_nodes: dict[str, Node], node_engines: dict[str, Daemon], cluster_database: str,
        tmp_path: Path) -> None:
    # Kills node B's engine: the last test of the module.
    database_url = cluster_database
    conf = book(database_url, tmp_path, participants=1)
    a, b = node_engines["a"], node_engines["b"]
    first = sipp.start_call(affinity_nodes["b"].asterisk.sip_port, ACCESS,
                            [("pause", 1200), ("dtmf", conf["organizer"]["code"] + "#"), ("pause", 3000),
                             ("bye", None)], caller="33611000211", remote_ip=affinity_nodes["b"].sip_ip)
    b.wait_for_log("conference_member_join", conference_id=conf["id"], role="organizer")
    page = Page(space_of(a), conf["organizer"]["link"])
    wait_for(lambda: page.state()["live"], 10, "node B's room shown on node A")
    b.signal(signal.SIGKILL)
    b.wait_exit(10)
    # B's lease still runs (for up to LEASE_S after its last renewal; made a few seconds here, so that a
    # busy machine cannot let it run out before the page asks): the command is addressed to B, nobody
    # claims it.
    db(database_url, "UPDATE conference_owner SET expires_at = now() + interval '6 s' "
                     "WHERE conference_id = $1::text::uuid AND node = 'b' RETURNING node", conf["id"])
    status, result = page.act("lock")
    assert (status, result) == (503, "owner_unreachable")
    [row] = db(database_url, "SELECT node, taken_at, result FROM conference_command WHERE conference_id = "
                             "$1::text::uuid", conf["id"])
    assert row["node"] == "b" and row["taken_at"] is None and row["result"] == "owner_unreachable"
    sipp.finish(*first)  # node B's Asterisk ends the call without its engine
    wait_for(lambda: not page.state()["live"], LEASE_S + 15, "the dead owner's room no longer shown")
    # The organizer calls node A: A takes the room over, and the same page steers it there.
    again = staying_caller(affinity_nodes["a"], conf["organizer"]["code"], "33611000211")
    a.wait_for_log("conference_member_join", conference_id=conf["id"], role="organizer")
    assert page.act("lock") == (200, "done")
    assert page.state()["locked"] is True
    assert page.act("end") == (200, "done")
    assert sipp.finish(*again).ok
    # The command B never claimed stays unapplied: B's room is gone and A never saw it.
    assert [r["result"] for r in db(database_url, "SELECT result FROM conference_command WHERE conference_id = "
                                                  "$1::text::uuid ORDER BY id", conf["id"])] == ["owner_unreachable"]
    assert not a.tracebacks()
