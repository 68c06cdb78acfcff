"""The cluster's carrier token (docs/security.md, "Carriers behind Kamailio"): made once per cluster, rendered into
Kamailio's configuration and every node's pjsip_carrier.conf, readable by their owner only, a bad one named."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from scripts.cluster import KamailioInstance, carrier_token_file, main
from scripts.devstack import CARRIER_HEADER, AsteriskInstance, carrier_identify_conf, check_carrier_token

TOKEN = "0123456789abcdef0123456789abcdef"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_kamailio_removes_the_header_from_every_request_and_adds_the_token_for_carriers_only(tmp_path: Path) -> None:
    kam = KamailioInstance(tmp_path, ["10.0.0.11:5060"], carrier_token=TOKEN)
    kam.render()
    cfg = kam.config_file.read_text()
    assert f'remove_hf("{CARRIER_HEADER}");' in cfg
    # Twice: the carriers' new requests (route[CARRIER]) and Kamailio's own OPTIONS probes.
    assert cfg.count(f'append_hf("{CARRIER_HEADER}: {TOKEN}\\r\\n");') == 2
    assert mode(kam.config_file) == 0o600
    assert TOKEN not in repr(kam)
    if shutil.which("kamailio"):
        kam.check()


def test_a_node_behind_kamailio_identifies_its_carrier_by_the_header_alone(tmp_path: Path) -> None:
    node = AsteriskInstance("n1", root=tmp_path, carrier_token=TOKEN)
    node.install_conf()
    conf = (node.host_dir / "etc" / "pjsip_carrier.conf").read_text()
    assert f"match_header = {CARRIER_HEADER}: {TOKEN}\n" in conf and "identify_by = header\n" in conf
    assert "\nmatch =" not in conf  # an identify matches on any of its criteria: no address at all
    assert mode(node.host_dir / "etc" / "pjsip_carrier.conf") == 0o600
    assert "#include pjsip_carrier.conf" in (node.host_dir / "etc" / "pjsip.conf").read_text()
    single = AsteriskInstance("single", root=tmp_path)  # one node: peers on this host, by address
    single.install_conf()
    assert "match = 127.0.0.1\n" in (single.host_dir / "etc" / "pjsip_carrier.conf").read_text()


def test_the_token_is_made_once_and_kept(tmp_path: Path) -> None:
    token = carrier_token_file(tmp_path / "state" / "carrier-token")
    assert check_carrier_token(token, "t") == token and mode(tmp_path / "state" / "carrier-token") == 0o600
    assert carrier_token_file(tmp_path / "state" / "carrier-token") == token


@pytest.mark.parametrize("bad", ["short", "/0123456789abcdef.*/", "0123456789abcdef 0123", "jeton-à-accent-0123456"])
def test_a_bad_token_is_named_with_its_file(tmp_path: Path, bad: str) -> None:
    (tmp_path / "carrier-token").write_text(bad + "\n")
    with pytest.raises(ValueError) as info:
        carrier_token_file(tmp_path / "carrier-token")
    assert str(info.value).startswith(f"{tmp_path / 'carrier-token'}: the carrier token must be 16 to 128 letters")
    with pytest.raises(ValueError, match="carrier token must be"):
        carrier_identify_conf(bad)


def test_render_command_writes_the_nodes_file_with_kamailio_s_token(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render-kamailio", "--node", "10.0.0.11:5060", "--out", str(tmp_path), "--config", "/dev/null"]) == 0
    token = (tmp_path / "carrier-token").read_text().strip()
    assert f"match_header = {CARRIER_HEADER}: {token}\n" in (tmp_path / "pjsip_carrier.conf").read_text()
    assert f"{CARRIER_HEADER}: {token}" in (tmp_path / "kamailio.cfg").read_text()
    err = capsys.readouterr().err
    assert f"{tmp_path / 'pjsip_carrier.conf'} in its Asterisk configuration folder" in err and token not in err
    assert all(mode(tmp_path / name) == 0o600 for name in ("carrier-token", "pjsip_carrier.conf", "kamailio.cfg"))
    # Rendered again (another node added): the same token, so the nodes' files stay valid.
    assert main(["render-kamailio", "--node", "10.0.0.11:5060", "--node", "10.0.0.12:5060", "--out", str(tmp_path),
                 "--config", "/dev/null"]) == 0
    assert f"{CARRIER_HEADER}: {token}" in (tmp_path / "kamailio.cfg").read_text()


def test_render_command_names_a_bad_token_file_in_one_line(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "carrier-token").write_text("/.*/\n")
    with pytest.raises(SystemExit) as info:
        main(["render-kamailio", "--node", "10.0.0.11:5060", "--out", str(tmp_path), "--config", "/dev/null"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"{tmp_path / 'carrier-token'}: the carrier token must be 16 to 128 letters, digits, '-' or "
                        "'_' (found 4 characters)")
    assert not (tmp_path / "kamailio.cfg").exists()


def test_make_cluster_names_a_bad_token_file_in_one_line_before_starting_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import scripts.cluster

    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "carrier-token").write_text("too short\n")
    monkeypatch.chdir(tmp_path)  # no callctl.yaml here: the defaults
    monkeypatch.setattr(scripts.cluster, "kamailio_available", lambda: True)
    assert main(["run", "--state", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"make cluster: {tmp_path / 'state' / 'carrier-token'}: the carrier token must be 16 to 128 "
                   "letters, digits, '-' or '_' (found 9 characters)"], err
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["carrier-token"]  # nothing started
