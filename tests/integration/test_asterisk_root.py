"""The test/dev Asterisk root (scripts/asterisk-root.sh): names Asterisk resolves are answered by the
chroot's own /etc/hosts, so a call makes no DNS lookup (it asked for this machine's name and
A.ROOT-SERVERS.NET on every call before)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from scripts.devstack import REPO, AsteriskInstance
from tests.support import sipp

pytestmark = pytest.mark.integration

SCRIPT = REPO / "scripts" / "asterisk-root.sh"


def cached_root(tmp_path: Path) -> Path:
    """What the script takes for a root it built earlier (without the minute of debootstrap)."""
    root = tmp_path / "root"
    (root / "usr/sbin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr/sbin/asterisk").write_text("#!/bin/sh\n")
    (root / "usr/sbin/asterisk").chmod(0o755)
    (root / ".callctl-ready").write_text("Asterisk 22 (stub)\n")
    return root


def test_a_cached_root_gets_a_hosts_file_with_this_machines_name_once(tmp_path: Path) -> None:
    root = cached_root(tmp_path)
    run = subprocess.run([str(SCRIPT), str(root)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "reusing cached root" in run.stdout, run.stderr
    hosts = (root / "etc/hosts").read_text().splitlines()
    entries = {tuple(line.split()) for line in hosts if line and not line.startswith("#")}
    name = socket.gethostname()
    assert ("127.0.0.1", "localhost") in entries and ("::1", name) in entries
    [v4] = [e[0] for e in entries if e[1:] == (name,) and ":" not in e[0]]
    assert v4.startswith("127.") or v4 in {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
    # Unchanged on the next run (not rewritten), replaced when stale (e.g. the machine was renamed).
    before = os.stat(root / "etc/hosts").st_mtime_ns
    assert subprocess.run([str(SCRIPT), str(root)], capture_output=True, timeout=60).returncode == 0
    assert os.stat(root / "etc/hosts").st_mtime_ns == before
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n10.9.9.9 old-name\n")
    assert subprocess.run([str(SCRIPT), str(root)], capture_output=True, timeout=60).returncode == 0
    assert (root / "etc/hosts").read_text().splitlines() == hosts
    assert not list((root / "etc").glob("hosts.*"))  # written atomically, nothing left over


def test_a_call_makes_asterisk_look_up_no_name(asterisk: AsteriskInstance) -> None:
    log = asterisk.host_dir / "log" / "messages.log"
    seen = log.read_text(errors="replace").count("Unable to lookup")
    # No engine connected: the call ends in the fallback announcement (RTP, a bridge-less channel).
    result = sipp.call(asterisk.sip_port, "+33900000001", [("wait_bye", None)])
    assert result.ok, result.stderr
    assert (asterisk.root / "etc/hosts").is_file()
    assert log.read_text(errors="replace").count("Unable to lookup") == seen
