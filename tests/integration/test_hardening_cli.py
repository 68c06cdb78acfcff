"""Every `callctl` command run as a process on a real PostgreSQL: a command that prints JSON prints
only JSON on stdout (its log lines go to stderr), and what the gate and billing commands answer for
hostile or awkward input (issue 15)."""

from __future__ import annotations

import argparse
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from callctl.cli import build_parser
from scripts.devstack import REPO

pytestmark = pytest.mark.integration

# Commands whose answer on stdout is not JSON (text for people); they are still run below and must not
# carry log lines either.
TEXT_COMMANDS = {"run", "db migrate", "dialplan check", "dialplan simulate", "dialplan reload",
                 "dialplan render-prompts", "dialplan graph", "bill", "cdr retention", "conference list"}


def leaf_commands() -> Iterator[str]:
    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> Iterator[str]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, (*prefix, name))
                return
        yield " ".join(prefix)

    return walk(build_parser(), ())


def run_cli(database_url: str, *args: str, env_extra: dict[str, str] | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env["CALLCTL_DATABASE_URL"] = database_url
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "callctl", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120, input=stdin, errors="surrogateescape")


def only_json(res: subprocess.CompletedProcess[str], command: str) -> Any:
    """The one JSON document a command printed; fails if stdout holds anything else (a log line)."""
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"`callctl {command}` printed more than JSON on stdout (rc {res.returncode}):\n{res.stdout}"
                    f"\n--- stderr:\n{res.stderr}")


class _Daemon(http.server.BaseHTTPRequestHandler):
    """A stand-in for the daemon's loopback HTTP (`originate` asks it)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"originated": False, "decision": "deny", "rule": "canvassing_hours"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # GET /calls: the calls in progress
        body = json.dumps({"calls": [], "dialplan_version": "test"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def daemon_http() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Daemon)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(600)  # some 50 Python processes (about 2 minutes; 5 on a saturated machine)
def test_every_json_command_prints_only_json_on_stdout_and_logs_on_stderr(database_url: str, tmp_path: Path,
                                                                          daemon_http: str) -> None:
    seen: set[str] = set()
    outbox = {"CALLCTL_OUTBOX_DIR": str(tmp_path / "outbox")}

    def check_json(command: str, res: subprocess.CompletedProcess[str], ok: bool) -> Any:
        if not ok:  # an error: one line on stderr, nothing on stdout
            assert res.returncode != 0 and res.stdout == "", (command, res.stdout, res.stderr)
            assert "callctl: error:" in res.stderr, (command, res.stderr)
            return None
        assert res.returncode in (0, 1), (command, res.returncode, res.stderr)
        return only_json(res, command)

    def json_cmd(command: str, *args: str, ok: bool = True, **kw: Any) -> Any:
        seen.add(command)
        return check_json(command, run_cli(database_url, *command.split(), *args, **kw), ok)

    def json_cmds(*jobs: tuple[Any, ...]) -> None:
        """Independent commands, a few at a time (each is a Python process)."""
        def one(job: tuple[Any, ...]) -> None:
            command, args, ok, env = (*job, True, None)[:4] if len(job) == 2 else (*job, None)[:4]
            json_cmd(command, *args, ok=ok, env_extra=env)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(one, jobs))

    def text_cmd(command: str, *args: str) -> None:
        seen.add(command)
        res = run_cli(database_url, *command.split(), *args)
        assert '"event"' not in res.stdout and '"level"' not in res.stdout, (command, res.stdout)

    acc = json_cmd("account create", "--name", "Acme", "--country", "FR")["id"]
    user = json_cmd("user add", "--account", acc, "--name", "Anna", "--number", "+33123456789")["id"]
    deck = tmp_path / "deck.csv"
    deck.write_text("prefix,destination,zone,rate_per_minute,currency\n33,France,1,0.02,EUR\n")
    json_cmd("rates import", str(deck), "--deck", "std", "--effective", "2020-01-01T00:00:00+00:00")
    conf = json_cmd("conference create", "--subject", "Board", "--start", "2030-01-07T10:00:00+00:00",
                    "--duration", "60", "--organizer", "boss@example.com", "--participant", "ann@example.com",
                    "--access-number", "+33187654321", env_extra=outbox)
    conf_id = conf["id"] if "id" in conf else conf["conference"]["id"]

    # The gate logs `emergency_call_refused` for a refused 112: on stderr, never before the JSON.
    res = run_cli(database_url, "gate", "--account", acc, "--from", "+33123456789", "--to", "112")
    seen.add("gate")
    assert only_json(res, "gate")["rule"] == "emergency_not_enabled"
    assert "emergency_call_refused" in res.stderr

    optout_file = tmp_path / "optout.txt"
    optout_file.write_text("0612345678\n")
    ics = tmp_path / "invite.ics"
    ics.write_text("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\nUID:1@example.com\r\n"
                   "DTSTART:20300108T100000Z\r\nDTEND:20300108T110000Z\r\nSUMMARY:Weekly\r\n"
                   "ORGANIZER:mailto:boss@example.com\r\nATTENDEE:mailto:ann@example.com\r\n"
                   "END:VEVENT\r\nEND:VCALENDAR\r\n")
    missing = "00000000-0000-0000-0000-000000000000"
    json_cmds(
        ("number assign", ("--user", user, "+33123456780")),
        ("account show", (acc,)),
        ("account emergency", (acc, "--disable")),
        ("emergency show", (acc,)),
        ("dialer set", (acc, "--no-automated")),
        ("account recording", (acc, "--enable")),
        ("rate", ("--account", acc, "--from", "+33123456789", "--to", "+33123456780", "--seconds", "60")),
        ("credit add", ("--account", acc, "10")),
        ("fairuse report", ()),
        ("cdr reconcile", ("--since", "2020-01-01T00:00:00+00:00")),
        ("compliance report", ("--account", acc, "--month", "2026-01")),
        ("optout import", (str(optout_file),)),
        ("minutes add", ("--account", acc, "100")),
        ("originate", ("--account", acc, "--from", "+33123456789", "--to", "+33612345678", "--flow", "main"),
         True, {"CALLCTL_HTTP_LISTEN": daemon_http}),
        ("conference show", (conf_id,)),
        ("conference record", (conf_id, "--stop"), False),  # no call in the room: one error line
        ("conference book", (str(ics), "--access-number", "+33187654321"), True, outbox),
        ("privacy inventory", ()),
        ("privacy export", ("--number", "+33123456789")),
        ("privacy erase", ("--number", "+33123456789", "--dry-run")),
        ("suspension purge", ("--dry-run",)),
        ("recordings list", ()),
        ("recordings purge", ("--dry-run",)),
        ("recordings show", (missing,), False),
        ("recordings export", (missing, str(tmp_path)), False),
        ("recordings delete", (missing,), False),
        ("recordings hold", (missing,), False),
        ("recordings release", (missing,), False),
        ("voicemail list", ()),
        ("voicemail export", (missing, str(tmp_path)), False),
        ("voicemail delete", (missing,), False),
        ("dialplan switch", ("--dir", str(REPO / "dialplan"))),
        ("fraud show", (acc,)),
        ("fraud permissions", (acc, "--premium", "--by", "test")),
        ("fraud limits", (acc, "--hour", "50", "--by", "test")),
        ("fraud encryption", (user, "--offer", "--by", "test")),
        ("fraud blocks", ()),
        ("fraud unblock", ("203.0.113.9", "--by", "test"), False),
        ("fraud release", (acc, "--by", "test"), False),
        ("call show", (missing, "--json"), False),
        ("calls", ("--json",), True, {"CALLCTL_HTTP_LISTEN": daemon_http}),
    )
    json_cmds(("emergency set", (acc, "--disable")), ("credit show", ("--account", acc)),
              ("minutes show", ("--account", acc)), ("conference reissue", (conf_id,), True, outbox),
              ("conference link", (conf_id, "--email", "ann@example.com"), True, outbox))
    json_cmd("conference cancel", conf_id)
    json_cmd("suspension suspend", acc)
    json_cmd("suspension resume", acc)
    json_cmd("account suspend", acc)
    json_cmd("account resume", acc)
    json_cmd("user remove", user)

    text_cmd("bill", "--account", acc, "--month", "2026-01")
    text_cmd("cdr retention", "--dry-run")
    text_cmd("conference list")
    text_cmd("db migrate")
    text_cmd("dialplan check", str(REPO / "dialplan"))
    text_cmd("dialplan simulate", "--to", "+33100000000", str(REPO / "dialplan"))
    text_cmd("dialplan graph", str(REPO / "dialplan"))  # DOT on stdout
    seen.update({"run", "dialplan reload", "dialplan render-prompts"})  # a daemon / audio tools: not here

    every = set(leaf_commands())
    assert every - seen == set(), f"commands not run by this test: {sorted(every - seen)}"


@pytest.mark.parametrize("args", [("emergency", "set", "00000000-0000-0000-0000-000000000001", "--enable",
                                   "--location", "12 rue \udcff"),
                                  ("gate", "--account", "00000000-0000-0000-0000-000000000001", "--from",
                                   "+33123456789\udcfe", "--to", "112"),
                                  ("minutes", "add", "--account", "00000000-0000-0000-0000-000000000001",
                                   "--note", "\udce9t\udce9", "10")])
def test_an_argument_that_is_not_utf8_is_one_clear_line_not_a_traceback(database_url: str,
                                                                        args: tuple[str, ...]) -> None:
    made = run_cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")
    account = json.loads(made.stdout)["id"]
    res = run_cli(database_url, *(account if a.startswith("00000000-") else a for a in args))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("callctl: error: argument ") and "is not UTF-8 text" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
