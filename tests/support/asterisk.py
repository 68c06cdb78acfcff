"""Fixtures for real-component tests: an Asterisk 22 instance (session) and callctl daemons.

The daemon runs as a real ``callctl run`` subprocess; its JSON log lines are collected so tests can
wait for a named event with a deadline instead of sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import REPO, AsteriskInstance, ensure_root, free_port, free_port_pair
from tests.support.waiting import wait_for as wait_for  # the tests' one poll-with-a-deadline


def session_rtp_range() -> tuple[int, int]:
    """The session Asterisk's RTP ports: 30000-30999, split between pytest-xdist workers (gw0..gw3 get
    250 ports each; the test modules' own instances use 31000-31999, the free ports above 32768)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return 30000, 30999
    index = int(worker[2:]) % 4
    return 30000 + 250 * index, 30000 + 250 * index + 249


@pytest.fixture(scope="session")
def asterisk() -> Iterator[AsteriskInstance]:
    ensure_root()
    rtp_start, rtp_end = session_rtp_range()
    inst = AsteriskInstance(f"test-{os.getpid()}", http_port=free_port(), sip_port=free_port_pair(),
                            rtp_start=rtp_start, rtp_end=rtp_end, trunk_port=free_port_pair())
    inst.start()
    render_prompts(inst)
    try:
        yield inst
    finally:
        inst.stop()


def render_prompts(inst: AsteriskInstance, dialplan: Path = REPO / "dialplan", *,
                   objection_key: str = "9") -> None:
    """Text prompts into the instance's sounds (the call notice for ``objection_key``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env["CALLCTL_RECORDING_OBJECTION_KEY"] = objection_key
    subprocess.run([sys.executable, "-m", "callctl", "dialplan", "render-prompts", str(dialplan),
                    "--out", str(inst.sounds_dir)], check=True, capture_output=True, env=env)


class Daemon:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.stderr: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.http = env["CALLCTL_HTTP_LISTEN"]

    def start(self) -> Daemon:
        self.proc = subprocess.Popen([sys.executable, "-m", "callctl", "run"], env=self.env, cwd=self.workdir,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for reader in self._readers:
            reader.start()
        return self

    def close_pipes(self) -> None:
        """After the process ended: let the readers reach EOF, then close the pipes."""
        for reader in getattr(self, "_readers", []):
            reader.join(timeout=5)
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()

    def _read(self, stream: Any, is_stdout: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            if not is_stdout:
                self.stderr.append(line)
                continue
            self.raw.append(line)
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"event": "_unparsed", "text": line})

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in list(self.lines) if e.get("event") == name
                and all(e.get(k) == v for k, v in match.items())]

    def wait_for_log(self, name: str, timeout_s: float = 20, **match: Any) -> dict[str, Any]:
        found = wait_for(lambda: self.events(name, **match), timeout_s,
                         f"log event {name} {match or ''}; last lines: {self.raw[-5:]} stderr: {self.stderr[-5:]}")
        return dict(found[-1])

    def wait_until_ready(self, timeout_s: float = 30) -> None:
        self.wait_for_log("ari_connected", timeout_s)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.http}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def tracebacks(self) -> list[str]:
        return [line for line in self.raw + self.stderr if "Traceback" in line]


def engine_env(asterisk: AsteriskInstance, database_url: str, workdir: Path, **overrides: str) -> dict[str, str]:
    """A test engine's environment on ``asterisk``: its own free ports and folders under ``workdir``;
    ``overrides`` by setting name (``node_id="a"`` -> CALLCTL_NODE_ID). The one place tests build it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env.update({
        "CALLCTL_DATABASE_URL": database_url,
        "CALLCTL_ARI_URL": asterisk.ari_url,
        "CALLCTL_ARI_USER": asterisk.ari_user,
        "CALLCTL_ARI_PASSWORD": asterisk.ari_password,
        "CALLCTL_ARI_APP": asterisk.ari_app,
        "CALLCTL_DIALPLAN_DIR": str(REPO / "dialplan"),
        "CALLCTL_SPOOL_DIR": str(workdir / "spool"),
        "CALLCTL_RUNTIME_DIR": str(workdir / "run"),
        "CALLCTL_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "CALLCTL_AGI_LISTEN": f"127.0.0.1:{free_port()}",
        "CALLCTL_SPACE_LISTEN": f"127.0.0.1:{free_port()}",  # the Online Space: its own port per daemon
        "CALLCTL_SHUTDOWN_GRACE_S": "20",
        "CALLCTL_RECONNECT_MAX_S": "2",
        "CALLCTL_ARI_HEARTBEAT_S": "2",
        "CALLCTL_LOG_LEVEL": "info",
    })
    env.update({f"CALLCTL_{k.upper()}": v for k, v in overrides.items()})
    return env


@pytest.fixture
def daemon_factory(tmp_path: Path, asterisk: AsteriskInstance,
                   database_url: str) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(start: bool = True, **overrides: str) -> Daemon:
        url = overrides.pop("database_url", database_url)  # e.g. the database behind a cuttable proxy
        env = engine_env(asterisk, url, tmp_path, **overrides)
        d = Daemon(env, tmp_path)
        started.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in started:
        d.stop()
        d.close_pipes()
        # Shown by pytest only when the test failed.
        print(f"--- daemon log ({len(d.raw)} lines, last 80) ---", *d.raw[-80:], *d.stderr[-20:], sep="\n")
