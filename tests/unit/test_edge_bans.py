"""SIP brute force at Kamailio (docs/security.md, "Behind Kamailio"): the template filled from the engines'
own settings, the engines' trusted networks with the proxy's address, the bans read from `kamcmd`."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import shutil
from pathlib import Path

import pytest

from callctl.fraud import FraudError
from callctl.fraud.bruteforce import BlockPolicy
from callctl.fraud.kamailio import ban_key, edge_bans, parse_dump
from scripts.cluster import KamailioInstance, main, trusted_with


def test_thresholds_and_trusted_networks_are_rendered_from_the_engines_settings(tmp_path: Path) -> None:
    guard = BlockPolicy(failures=3, window_s=30.5, block_s=120, max_block_s=3600,
                        trusted=(ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("2001:db8::/32")))
    kam = KamailioInstance(tmp_path, ["10.0.0.11:5060"], guard=guard, flood_requests=50)
    kam.render()
    cfg = kam.config_file.read_text()
    assert 'is_in_subnet("$si", "10.1.0.0/16")' in cfg and 'is_in_subnet("$si", "2001:db8::/32")' in cfg
    assert "authfail=>size=12;autoexpire=31;" in cfg  # the window in whole seconds, rounded up
    assert "$var(slots) = 2;" in cfg and "$var(ban_s) = 120;" in cfg and "ipban=>size=10;autoexpire=3600;" in cfg
    assert 'modparam("pike", "reqs_density_per_unit", 50)' in cfg
    if shutil.which("kamailio"):
        kam.check()


def test_one_failure_bans_at_once_and_no_trusted_network_still_renders(tmp_path: Path) -> None:
    kam = KamailioInstance(tmp_path, ["10.0.0.11:5060"], guard=BlockPolicy(failures=1, trusted=()))
    kam.render()
    cfg = kam.config_file.read_text()
    assert "$var(slots) = 0;" in cfg and "# (no trusted network)" in cfg
    if shutil.which("kamailio"):
        kam.check()


@pytest.mark.parametrize(("networks", "proxy", "expected"), [
    ("127.0.0.1/32,::1/128", "10.0.0.10", "127.0.0.1/32,::1/128,10.0.0.10/32"),
    ("10.0.0.10/32, 192.0.2.0/24", "10.0.0.10", "10.0.0.10/32,192.0.2.0/24"),
    ("", "2001:db8::5", "2001:db8::5/128"),
])
def test_engines_behind_kamailio_trust_its_address_once(networks: str, proxy: str, expected: str) -> None:
    assert trusted_with(networks, proxy) == expected


def test_render_command_refuses_bad_blocking_settings_in_one_line(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    settings = tmp_path / "callctl.yaml"
    settings.write_text("sip_block_failures: 0\n")
    with pytest.raises(SystemExit) as info:
        main(["render-kamailio", "--node", "10.0.0.11:5060", "--out", str(tmp_path / "out"),
              "--config", str(settings)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "sip_block_failures must be at least 1" in err and err.count("\n") <= 2


def test_render_command_says_what_the_engines_must_trust(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLCTL_SIP_BLOCK_FAILURES", "7")
    monkeypatch.setenv("CALLCTL_SIP_TRUSTED_NETWORKS", "192.0.2.0/24")
    assert main(["render-kamailio", "--node", "10.0.0.11:5060", "--listen", "10.0.0.10:5060",
                 "--out", str(tmp_path), "--config", "/dev/null"]) == 0
    assert "sip_trusted_networks must include 10.0.0.10" in capsys.readouterr().err
    cfg = (tmp_path / "kamailio.cfg").read_text()
    assert 'is_in_subnet("$si", "192.0.2.0/24")' in cfg and "after 7 failed authentications" in cfg


def test_bans_are_read_from_the_dump_and_ended_ones_left_out() -> None:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    dump = ("{\n\tentry: 784\n\tsize: 2\n\tslot: {\n"
            f"\t\t{{\n\t\t\tname: 203.0.113.7\n\t\t\tvalue: {now + 600}\n\t\t\ttype: int\n\t\t}}\n"
            f"\t\t{{\n\t\t\tname: 2001:db8::7\n\t\t\tvalue: {now - 5}\n\t\t\ttype: int\n\t\t}}\n\t}}\n}}\n")
    [ban] = parse_dump(dump)
    assert ban.address == "203.0.113.7" and ban.to_json()["where"] == "kamailio"
    assert parse_dump("") == []


def test_a_bad_address_to_lift_is_named() -> None:
    assert ban_key(" 2001:DB8::7 ") == "2001:db8::7"
    with pytest.raises(FraudError, match=r"'203\.0\.113\.999' is not an IP address"):
        ban_key("203.0.113.999")


@pytest.mark.parametrize("ctl", ["unix:/nonexistent/kamailio_ctl", "tcp:127.0.0.1:1"])
def test_an_unreachable_kamailio_is_named_in_one_line(ctl: str) -> None:
    with pytest.raises(FraudError) as info:
        asyncio.run(edge_bans(ctl))
    assert info.value.message.startswith(f"kamailio_ctl {ctl}: cannot reach Kamailio's ctl socket")
    assert "\n" not in info.value.message


def test_the_cluster_banner_says_who_bans_and_how_to_lift(tmp_path: Path) -> None:
    from scripts.cluster import _cluster_lines

    kam = KamailioInstance(tmp_path, ["127.0.1.1:6160"], guard=BlockPolicy(failures=5, window_s=60, block_s=900))
    text = _cluster_lines(kam, [], [])
    assert "Kamailio bans an address after 5 failed authentications in 60 s (900 s" in text
    assert "callctl fraud unblock IP" in text
    assert "not from a SIP user is accepted only from 127.0.0.0/8 (403 from anywhere else" in text


def test_carriers_are_accepted_only_from_their_networks_the_loopback_by_default(tmp_path: Path) -> None:
    kam = KamailioInstance(tmp_path / "default", ["10.0.0.11:5060"])
    kam.render()
    cfg = kam.config_file.read_text()
    assert ('route[CARRIER] {\n\t$var(carrier) = 0;\n\tif (is_in_subnet("$si", "127.0.0.0/8")) {\n'
            '\t\t$var(carrier) = 1;\n\t}') in cfg
    assert 'remove_hf("P-Asserted-Identity");' in cfg  # a SIP user's request from elsewhere asserts nothing
    assert 'sl_send_reply("403", "Forbidden (Not A Carrier)");' in cfg
    mine = KamailioInstance(tmp_path / "mine", ["10.0.0.11:5060"],
                            carrier_networks=("198.51.100.7", " 203.0.113.0/28", "2001:db8::1/64"))
    mine.render()
    cfg = mine.config_file.read_text()
    for net in ("198.51.100.7/32", "203.0.113.0/28", "2001:db8::/64"):
        assert f'if (is_in_subnet("$si", "{net}")) {{\n\t\t$var(carrier) = 1;' in cfg
    assert "127.0.0.0/8" not in cfg
    none = KamailioInstance(tmp_path / "none", ["10.0.0.11:5060"], carrier_networks=())
    none.render()
    assert "# (no carrier network: only SIP users and the nodes)" in none.config_file.read_text()
    if shutil.which("kamailio"):
        for k in (kam, mine, none):
            k.check()


def test_render_command_takes_the_carriers_networks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render-kamailio", "--node", "10.0.0.11:5060", "--out", str(tmp_path / "a"), "--config", "/dev/null",
                 "--carrier-network", "198.51.100.7", "--carrier-network", "203.0.113.0/28"]) == 0
    cfg = (tmp_path / "a" / "kamailio.cfg").read_text()
    assert 'is_in_subnet("$si", "198.51.100.7/32")' in cfg and 'is_in_subnet("$si", "203.0.113.0/28")' in cfg
    assert "Carriers accepted only from" not in capsys.readouterr().err
    assert main(["render-kamailio", "--node", "10.0.0.11:5060", "--out", str(tmp_path / "b"),
                 "--config", "/dev/null"]) == 0
    assert "Carriers accepted only from 127.0.0.0/8 (this host)" in capsys.readouterr().err


def test_render_command_names_a_bad_carrier_network_in_one_line(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["render-kamailio", "--node", "10.0.0.11:5060", "--out", str(tmp_path), "--config", "/dev/null",
              "--carrier-network", "198.51.100.300"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("carrier network '198.51.100.300': not an IP address or network "
                        "(e.g. 198.51.100.7 or 198.51.100.0/28)")
    assert not (tmp_path / "kamailio.cfg").exists()


def test_make_cluster_names_a_broken_settings_file_in_one_line_before_starting_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import scripts.cluster

    (tmp_path / "callctl.yaml").write_text("sip_block_failures: [oops\n")  # as the engines find it: ./callctl.yaml
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scripts.cluster, "kamailio_available", lambda: True)
    assert main(["run", "--state", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("make cluster: ") and "callctl.yaml" in err[0], err
    assert not (tmp_path / "state").exists()  # nothing started
