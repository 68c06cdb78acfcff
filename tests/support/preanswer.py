"""A node for the pre-answer tests (wt-preanswer): its own Asterisk with CEL in the test's database, AMI on,
and optionally a cluster node's fallback (CALLCTL_ENGINE_DOWN = refuse: 503 before answering)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts.devstack import AsteriskInstance, ensure_root, free_port, free_port_pair, free_rtp_range

__all__ = ["RequestLog", "node_factory"]


@pytest.fixture
def node_factory(tmp_path: Path, database_url: str) -> Iterator[Callable[..., AsteriskInstance]]:
    started: list[AsteriskInstance] = []

    def make(*, refuse: bool = False) -> AsteriskInstance:
        ensure_root()
        rtp_start, rtp_end = free_rtp_range()
        inst = AsteriskInstance(f"test-{os.getpid()}-pa{len(started)}-{tmp_path.name[-12:]}", http_port=free_port(),
                                sip_port=free_port_pair(), rtp_start=rtp_start, rtp_end=rtp_end,
                                trunk_port=free_port_pair(), ami_port=free_port(), refuse_when_engine_down=refuse)
        inst.use_database(database_url)  # CEL rows in the test's database
        started.append(inst)
        inst.start()
        return inst

    yield make
    for inst in started:
        inst.stop()


class RequestLog:
    """The ARI REST requests Asterisk received, from its console (``ari set debug all on``), from now on."""

    def __init__(self, inst: AsteriskInstance) -> None:
        self.inst = inst
        self.console = inst.host_dir / "log" / "console.log"
        inst.rx("ari set debug all on")
        self.at = self.console.stat().st_size

    def close(self) -> None:
        self.inst.rx("ari set debug all off", check=False)

    def text(self) -> str:
        with self.console.open("rb") as f:
            f.seek(self.at)
            return f.read().decode(errors="replace")

    def requests(self) -> list[str]:
        """Each request's first lines (method and URI among them), in order."""
        text = self.text()
        found = []
        for m in re.finditer(r"<--- (ARI request received|Received ARI message)", text):
            end = text.find("<---", m.end())
            found.append(text[m.start():end if end >= 0 else len(text)])
        return found

    def about(self, channel_id: str) -> list[str]:
        return [r for r in self.requests() if channel_id in r]
