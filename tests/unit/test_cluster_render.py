"""The Kamailio front door's configuration (kamailio/kamailio.cfg) as scripts/cluster.py renders it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scripts.cluster import KamailioInstance, main


def test_rendered_configuration_lists_the_nodes_and_passes_kamailio_s_own_check(tmp_path: Path) -> None:
    kam = KamailioInstance(tmp_path, ["10.0.0.11:5060", "10.0.0.12:5070"], listen_address="10.0.0.10",
                           listen_port=5060)
    kam.render()
    cfg = kam.config_file.read_text()
    assert "listen=udp:10.0.0.10:5060" in cfg and "@" not in cfg.replace("sip:dispatcher@10.0.0.10", "")
    nodes = [line.split()[1] for line in (tmp_path / "dispatcher.list").read_text().splitlines()
             if not line.startswith("#")]
    assert nodes == ["sip:10.0.0.11:5060", "sip:10.0.0.12:5070"]
    if shutil.which("kamailio"):  # scripts/system-deps.sh installs it; the check needs no network
        KamailioInstance(tmp_path / "local", ["127.0.0.1:5090"], listen_port=5999).check()


@pytest.mark.parametrize(("nodes", "message"), [
    ([], "needs at least one node"),
    (["10.0.0.11"], "node '10.0.0.11': expected host:port"),
    (["10.0.0.11:5060;transport=tcp"], "expected host:port"),
])
def test_bad_node_lists_are_refused_with_the_node_named(tmp_path: Path, nodes: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        KamailioInstance(tmp_path, nodes).render()
    assert message in str(info.value)


def test_render_command_names_a_bad_listen_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["render-kamailio", "--node", "10.0.0.11:5060", "--listen", "5060", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "--listen '5060': expected host:port" in capsys.readouterr().err
