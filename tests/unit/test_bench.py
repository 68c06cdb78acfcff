"""The benchmark's own arithmetic and generated files (bench/): verdicts, ratios, the native dialplan,
the SIPp caller script, and the devstack hook that adds them to the benchmark's Asterisk."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from bench import callers, native
from bench.figures import CallTimes, Step, goals, parse_cel, pct, ratios, saturation, sustained_rate, timings
from scripts.devstack import AsteriskInstance


def step(impl: str, rate: float, *, failed: int = 0, joined: int | None = None, engine: float = 1.0,
         asterisk: float = 10.0) -> Step:
    calls = 10
    return Step(impl, rate, calls, calls - failed, failed, calls if joined is None else joined, 30.0,
                asterisk_cpu_s=asterisk, engine_cpu_s=engine, postgres_cpu_s=0.0, sipp_cpu_s=0.0)


def test_the_cel_log_gives_each_caller_the_first_time_of_each_event() -> None:
    lines = ["CHAN_START,100.5,33611000001,", "ANSWER,100.502,33611000001,", "BRIDGE_ENTER,104.0,33611000001,",
             "BRIDGE_ENTER,109.0,33611000001,", "HANGUP,110.0,33611000001,", "garbage", "ANSWER,notatime,1,"]
    calls = parse_cel(lines)
    assert calls == {"33611000001": CallTimes(start=100.5, answer=100.502, join=104.0, hangup=110.0)}
    answer, join, joined = timings(calls, {"33611000001": 103.8}, ["33611000001", "33611000002"])
    assert [round(a, 3) for a in answer] == [2.0] and [round(j, 3) for j in join] == [200.0] and joined == 1


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert pct(values, 50) == 50.0 and pct(values, 99) == 99.0 and pct(values, 100) == 100.0
    assert pct([7.0], 99) == 7.0 and pct([], 50) is None


def test_a_step_with_a_failed_or_unjoined_call_is_not_sustained() -> None:
    assert step("native", 2).ok
    assert not step("native", 2, failed=1).ok
    assert not step("native", 2, joined=9).ok


def test_the_sustained_rate_stops_at_the_first_failing_step() -> None:
    steps = [step("native", 2), step("native", 4), step("native", 8, failed=1), step("native", 12),
             step("callctl", 2, failed=1)]
    assert sustained_rate(steps, "native") == 4
    assert sustained_rate(steps, "callctl") == 0


def test_ratios_compare_cpu_at_the_busiest_clean_step_and_the_sustained_rates() -> None:
    steps = [step("native", 2), step("native", 4), step("callctl", 2, engine=2.0, asterisk=10.0),
             step("callctl", 4, engine=1.0, asterisk=10.0), step("callctl", 8, failed=2, engine=9.0)]
    r = ratios(steps)
    assert r.cpu_step_rate == 4 and r.cpu is not None and abs(r.cpu - 0.1) < 1e-9
    assert r.rate == 1.0
    assert ratios([step("callctl", 2, failed=1)]).rate is None


def test_the_native_dialplan_maps_each_code_to_its_room_behind_its_own_access_number() -> None:
    conf = native.extra_conf({"12345678": "room0", "87654321": "room1"})
    text = conf["extensions.conf"]
    assert f"exten => {native.NATIVE_ACCESS},1,Goto(bench-native,s,1)" in text
    assert "[from-callers](+)" in text  # appended to the context of asterisk-conf/, not a second one
    assert "exten => 12345678,1,ConfBridge(room0)" in text and "exten => 87654321,1,ConfBridge(room1)" in text
    assert "Read(CODE,conf-getpin,,,1,10)" in text
    assert "announce_only_user = no" in conf["confbridge.conf"]
    assert "BRIDGE_ENTER" in conf["cel.conf"] and native.CEL_FILE in conf["cel_custom.conf"]


def test_the_caller_script_plays_each_digit_of_its_own_code(tmp_path: Path) -> None:
    path = callers.scenario(tmp_path, 8, 1200, 5000)
    root = ET.parse(path).getroot()
    plays = [n for n in root.iter("nop") if n.get("condexec")]
    assert len(plays) == 80 and all(Path(p.find("action/exec").get("play_pcap_audio")).exists()  # type: ignore
                                    for p in plays)
    assert any("hash [field1]" in (log.get("message") or "") for log in root.iter("log"))
    callers.write_codes(tmp_path / "codes.csv", ["12345678", "23456789"], 33611000000)
    assert (tmp_path / "codes.csv").read_text().splitlines() == [
        "SEQUENTIAL", "12345678;33611000000;1;2;3;4;5;6;7;8;", "23456789;33611000001;2;3;4;5;6;7;8;9;"]


def test_extra_conf_is_appended_to_a_file_of_asterisk_conf_or_written_alone(tmp_path: Path) -> None:
    inst = AsteriskInstance("unit", root=tmp_path,
                            extra_conf={"extensions.conf": "\n; extra\n", "confbridge.conf": "x\n"})
    inst.install_conf()
    etc = inst.host_dir / "etc"
    extensions = (etc / "extensions.conf").read_text()
    assert extensions.startswith("; Every call goes to the engine") and extensions.endswith("\n; extra\n")
    assert (etc / "confbridge.conf").read_text() == "x\n"  # not in asterisk-conf/: written alone


def _timed(s: Step, answer: float, join: float, lag: float | None = None, load: float = 0.5) -> Step:
    s.answer_ms, s.join_ms = [answer] * 100, [join] * 100
    s.lag_ms = [] if lag is None else [lag] * 100
    s.load_avg = (load, load, load)
    return s


def test_goals_compare_callctl_with_native_at_each_rate_native_sustains() -> None:
    steps = [_timed(step("native", 8, engine=0.0), 2.0, 180.0),
             _timed(step("callctl", 8, engine=0.05), 9.0, 185.0, 5.0),
             _timed(step("native", 16, engine=0.0), 2.5, 182.0),
             _timed(step("callctl", 16, engine=0.05), 30.0, 200.0, 20.0)]
    verdicts = {g.name: g for g in goals(steps)}
    assert verdicts["engine CPU per call / Asterisk's"].ok is True  # 0.05 s / 1.0 s
    answer = verdicts["added answer latency p99"]
    assert answer.ok is False and answer.measured.startswith("+27.5 ms (worst, at 16/s)")
    assert verdicts["added #->join latency p99"].ok is False
    assert verdicts["event-loop lag p99"].ok is False and "20 ms" in verdicts["event-loop lag p99"].measured
    assert not saturation(steps)


def test_a_rate_where_callctl_failed_but_native_did_not_fails_the_latency_goals() -> None:
    steps = [_timed(step("native", 8, engine=0.0), 2.0, 180.0), _timed(step("callctl", 8, failed=1), 3.0, 181.0, 1.0)]
    verdicts = {g.name: g for g in goals(steps)}
    assert verdicts["added answer latency p99"].ok is False
    assert "callctl failed or did not run at 8/s" in verdicts["added answer latency p99"].measured


def test_saturation_is_said_when_the_native_tails_grow_or_the_load_passes_the_cpus() -> None:
    steps = [_timed(step("native", 8, engine=0.0), 2.0, 180.0), _timed(step("native", 16, engine=0.0), 40.0, 400.0),
             _timed(step("native", 20, engine=0.0), 2.0, 180.0, load=100.0)]
    notes = saturation(steps)
    assert notes[0].startswith("16/s: machine saturated: native answer p99 40.0 ms") and "#->join" in notes[0]
    assert notes[1].startswith("20/s: machine saturated: load average 100.0")
