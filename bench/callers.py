"""SIPp load callers for the conference benchmark: each call dials an access number, keys its own
access code (one CSV line per call) and ``#`` as RFC 4733 events, stays in the room, hangs up.

SIPp cannot choose a capture file per call, so the scenario holds one capture per (position, digit)
and plays the one whose digit the CSV line names (``condexec``). Callers send no speech: only DTMF
(Asterisk still sends every member the room's mix). The moment ``#`` starts is logged per call.
"""

from __future__ import annotations

import csv
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scripts.devstack import free_port_pair
from tests.support.dtmf import SPACING_MS, TONE_MS, write_pcap
from tests.support.sipp import _BYE, _invite

CALLER_FIELD = "[field1]"


def scenario(work: Path, code_length: int, lead_ms: int, hold_ms: int) -> Path:
    """Write the scenario and its captures into ``work``; returns the scenario path. ``code_length``
    0: the caller keys nothing and hangs up after ``hold_ms`` (the memory figure's idle callers)."""
    parts = [_invite(CALLER_FIELD, None, 200), f'  <pause milliseconds="{lead_ms}"/>\n']
    if not code_length:
        return _write(work, [*parts, f'  <pause milliseconds="{hold_ms}"/>\n', _BYE.format(caller=CALLER_FIELD,
                                                                                           cseq=2)])
    for pos in range(code_length):
        tests = "".join(f'    <test assign_to="is{d}" variable="digit" compare="equal" value="{d}"/>\n'
                        for d in range(10))
        parts.append(f'  <nop><action>\n    <assignstr assign_to="key" value="[field{pos + 2}]"/>\n'
                     f'    <todouble assign_to="digit" variable="key"/>\n{tests}  </action></nop>\n')
        for d in range(10):
            pcap = work / f"pos{pos}-{d}.pcap"
            write_pcap(pcap, str(d), part=pos)
            parts.append(f'  <nop condexec="is{d}"><action><exec play_pcap_audio="{pcap}"/></action></nop>\n')
        parts.append(f'  <pause milliseconds="{SPACING_MS}"/>\n')
    hash_pcap = work / "hash.pcap"
    write_pcap(hash_pcap, "#", part=code_length)
    parts.append('  <nop><action>\n    <gettimeofday assign_to="sec,usec"/>\n'
                 f'    <log message="hash {CALLER_FIELD} [$sec] [$usec]"/>\n'
                 f'    <exec play_pcap_audio="{hash_pcap}"/>\n  </action></nop>\n')
    parts.append(f'  <pause milliseconds="{SPACING_MS + hold_ms}"/>\n')
    parts.append(_BYE.format(caller=CALLER_FIELD, cseq=2))
    return _write(work, parts)


def _write(work: Path, parts: list[str]) -> Path:
    path = work / "scenario.xml"
    path.write_text('<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="callctl bench caller">\n'
                    + "".join(parts) + "</scenario>\n")
    return path


def write_codes(path: Path, codes: list[str], caller_base: int) -> None:
    """One line per call: code, a caller number of its own, then the code's digits one per field."""
    with path.open("w") as f:
        f.write("SEQUENTIAL\n")
        for i, code in enumerate(codes):
            f.write(";".join([code, str(caller_base + i), *code]) + ";\n")


def hash_end_offset_s() -> float:
    """From the logged start of the ``#`` capture to its end event (when Asterisk sees the digit)."""
    return TONE_MS / 1000


@dataclass
class SippRun:
    calls: int
    successful: int
    failed: int
    hash_at: dict[str, float]  # caller number -> wall-clock time the '#' started
    returncode: int
    stderr: str


def run(sip_port: int, number: str, scenario_path: Path, codes_csv: Path, work: Path, *, calls: int, rate: float,
        timeout_s: float, media_port: int) -> SippRun:
    """Run SIPp to the end (bounded by ``calls`` and ``timeout_s``)."""
    for name in ("stats.csv", "log.txt", "errors.txt"):
        (work / name).unlink(missing_ok=True)
    cmd = ["sipp", f"127.0.0.1:{sip_port}", "-sf", str(scenario_path), "-inf", str(codes_csv), "-s", number,
           "-i", "127.0.0.1", "-p", str(free_port_pair()), "-m", str(calls), "-r", str(rate),
           "-l", str(calls), "-nostdin", "-timeout", f"{int(timeout_s)}s", "-timeout_error",
           "-trace_stat", "-stf", str(work / "stats.csv"), "-fd", "3600",
           "-trace_logs", "-log_file", str(work / "log.txt"), "-trace_err", "-error_file", str(work / "errors.txt"),
           "-max_recv_loops", "1000", "-mp", str(media_port)]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, errors="replace", timeout=timeout_s + 60)
    successful = failed = 0
    stats = work / "stats.csv"
    if stats.exists():
        rows = list(csv.reader(stats.read_text().splitlines(), delimiter=";"))
        if len(rows) > 1:
            head, last = rows[0], rows[-1]
            successful = int(last[head.index("SuccessfulCall(C)")])
            failed = int(last[head.index("FailedCall(C)")])
    hash_at: dict[str, float] = {}
    log = work / "log.txt"
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            bits = line.split()
            if len(bits) >= 4 and bits[-4] == "hash":
                hash_at[bits[-3]] = float(bits[-2]) + float(bits[-1]) / 1e6
    errors = (work / "errors.txt").read_text(errors="replace") if (work / "errors.txt").exists() else ""
    return SippRun(calls, successful, failed, hash_at, proc.returncode, (proc.stderr + errors)[-2000:])
