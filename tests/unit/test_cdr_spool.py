"""The local CDR spool: durable appends, acknowledged prefix, replay after a crash, clear errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import os
import uuid
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from callctl.cdr import copyline
from callctl.cdr.record import CdrRecord, leg_id_for
from callctl.cdr.spool import ACK_FILE, Position, Spool
from callctl.errors import SpoolError

T0 = dt.datetime(2026, 3, 14, 9, 26, 53, 589000, tzinfo=dt.UTC)


def record(i: int, **overrides: object) -> CdrRecord:
    started = T0 + dt.timedelta(seconds=i)
    fields: dict[str, object] = dict(
        leg_id=leg_id_for("test-asterisk", f"chan-{i}", started.isoformat()), call_id=uuid.uuid4(),
        direction="inbound", from_number="+33612345678", to_number="+33900000001", started_at=started,
        answered_at=started + dt.timedelta(seconds=2), ended_at=started + dt.timedelta(seconds=63, milliseconds=1),
        disposition="ANSWERED", hangup_cause=16, hangup_reason="normal", channel_id=f"chan-{i}",
        extra={"i": i, "note": "é"})
    fields.update(overrides)
    return CdrRecord(**fields)  # type: ignore[arg-type]


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("cdr-*.copy"))


def test_appended_records_are_replayed_by_the_next_instance_in_order(tmp_path: Path) -> None:
    first = Spool.open(tmp_path, exclusive=False)
    records = [record(i) for i in range(5)]
    positions = first.append(records[:2]) + first.append(records[2:])
    assert positions == sorted(positions) and len(set(positions)) == 5
    # no close(): as after kill -9
    replayed = Spool.open(tmp_path, exclusive=False).replay()
    assert [r for _, r, _ in replayed] == records


def test_acknowledged_records_are_not_replayed_and_full_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, segment_max_bytes=1500, exclusive=False)  # a few records per segment
    records = [record(i) for i in range(20)]
    positions = [spool.append([r])[0] for r in records]
    assert len(segments(tmp_path)) > 3
    spool.ack(positions[11])
    assert all(int(name[4:16]) >= positions[11].segment for name in segments(tmp_path))
    replayed = Spool.open(tmp_path, exclusive=False).replay()
    assert [r for _, r, _ in replayed] == records[12:]


def test_clean_close_with_everything_acknowledged_leaves_an_empty_spool(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, exclusive=False)
    positions = spool.append([record(1), record(2)])
    spool.ack(positions[-1])
    spool.close(all_acked=True)
    assert segments(tmp_path) == [] and not (tmp_path / ACK_FILE).exists()
    assert Spool.open(tmp_path, exclusive=False).replay() == []


def test_segment_numbers_are_never_reused_under_an_old_ack(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, segment_max_bytes=1, exclusive=False)  # one record per segment
    for i in range(3):
        spool.ack(spool.append([record(i)])[0])
    assert segments(tmp_path) == []
    assert (tmp_path / ACK_FILE).exists()
    again = Spool.open(tmp_path, exclusive=False)
    again.append([record(99)])
    assert [r.channel_id for _, r, _ in Spool.open(tmp_path, exclusive=False).replay()] == ["chan-99"]


def test_torn_last_line_after_kill_is_skipped_with_file_and_line(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, exclusive=False)
    spool.append([record(1), record(2)])
    [name] = segments(tmp_path)
    with open(tmp_path / name, "ab") as f:
        f.write(copyline.encode(record(3))[:-5])  # the process died in the middle of this write
    with capture_logs() as logs:
        replayed = Spool.open(tmp_path, exclusive=False).replay()
    assert [r.channel_id for _, r, _ in replayed] == ["chan-1", "chan-2"]
    [warning] = [e for e in logs if e["event"] == "cdr_spool_line_skipped"]
    assert warning["where"] == f"{tmp_path / name}:3" and warning["reason"] == "torn last line"


def test_replayed_positions_can_be_acknowledged(tmp_path: Path) -> None:
    Spool.open(tmp_path, exclusive=False).append([record(i) for i in range(4)])
    second = Spool.open(tmp_path, exclusive=False)
    replayed = second.replay()
    second.ack(replayed[1][0])
    second.append([record(9)])
    replayed = Spool.open(tmp_path, exclusive=False).replay()
    assert [r.channel_id for _, r, _ in replayed] == ["chan-2", "chan-3", "chan-9"]


def test_spool_dir_that_cannot_be_created_names_the_path_and_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(SpoolError) as err:
        Spool.open(blocker / "spool")
    assert str(blocker / "spool") in err.value.message
    assert "Not a directory (ENOTDIR)" in err.value.message and "CALLCTL_SPOOL_DIR" in err.value.message


def test_unwritable_spool_dir_names_the_path_and_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def refuse(path: object, flags: int, *args: object) -> int:
        if str(path).startswith(str(tmp_path)) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refuse)  # we run as root: chmod would not stop us
    with pytest.raises(SpoolError) as err:
        Spool.open(tmp_path)
    assert err.value.message.startswith(f"CDR spool {tmp_path}: cannot write there: Permission denied (EACCES)")


def test_full_disk_raises_spool_error_and_leaves_no_partial_line(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool.open(tmp_path, exclusive=False)
    spool.append([record(1)])
    real_write = os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(SpoolError) as err:
        spool.append([record(2), record(3)])
    assert "No space left on device (ENOSPC)" in err.value.message and str(tmp_path) in err.value.message
    monkeypatch.setattr(os, "write", real_write)
    spool.append([record(4)])
    with capture_logs() as logs:
        replayed = Spool.open(tmp_path, exclusive=False).replay()
    assert [r.channel_id for _, r, _ in replayed] == ["chan-1", "chan-4"]
    assert not [e for e in logs if e["event"] == "cdr_spool_line_skipped"]


def test_positions_order_by_segment_then_line() -> None:
    assert Position(1, 99) < Position(2, 0) < Position(2, 1)


def test_rejected_records_are_kept_aside(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, exclusive=False)
    spool.reject(record(7), "invalid byte sequence")
    text = (tmp_path / "rejected.jsonl").read_text()
    assert "chan-7" in text and "invalid byte sequence" in text
    assert Spool.open(tmp_path, exclusive=False).replay() == []


def test_a_second_process_on_the_same_spool_dir_is_refused(tmp_path: Path) -> None:
    first = Spool.open(tmp_path)
    with pytest.raises(SpoolError, match="in use by another process"):
        Spool.open(tmp_path)
    first.close(all_acked=False)
    Spool.open(tmp_path).close(all_acked=False)


# A line exactly as the JSON-lines spool (before the COPY format) wrote it: orjson of the dataclass.
OLD_FORMAT_LINE = (
    b'{"leg_id":"5f0c3b4e-9a51-4d0e-8c1a-2b7e6f1d9a30","call_id":"dddcb155-c488-4793-8c77-1247f773d3cc",'
    b'"direction":"outbound","from_number":"+33612345678","to_number":"+442079460000",'
    b'"started_at":"2026-03-14T09:26:53.589000+00:00","answered_at":"2026-03-14T09:26:55.589000+00:00",'
    b'"ended_at":"2026-03-14T09:27:56.590000+00:00","disposition":"ANSWERED","hangup_cause":16,'
    b'"hangup_reason":"normal","channel_id":"chan-old","account_id":"acct-1","user_id":null,"flow":"outbound",'
    b'"dialplan_version":"v7","conference_id":null,"person":"Zo\xc3\xab\\t\\"the\\" caller\\n\\\\","role":null,'
    b'"extra":{"trunk":"ovh","note":"\xc3\xa9\\u0000"},"rating_deck":"uk","rating_prefix":"4420",'
    b'"rate_per_minute":"0.03","cost":"0.0305","currency":"GBP","included":false}\n')


def old_format(records: list[CdrRecord]) -> bytes:
    """Lines as the JSON-lines spool wrote them (its append, verbatim)."""
    options = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
    return b"".join(orjson.dumps(r, default=str, option=options) for r in records)


def test_a_json_lines_segment_left_by_the_previous_version_is_replayed_as_copy_lines(tmp_path: Path) -> None:
    records = [record(i, person=f"a\tb\\{i}") for i in range(4)]
    (tmp_path / "cdr-000000000007.jsonl").write_bytes(OLD_FORMAT_LINE + old_format(records))
    (tmp_path / ACK_FILE).write_text('{"segment": 7, "lines": 2}')  # the old line and records[0] are stored
    spool = Spool.open(tmp_path, exclusive=False)
    replayed = spool.replay()
    assert [(p.segment, p.line) for p, _, _ in replayed] == [(7, 2), (7, 3), (7, 4)]
    assert [r for _, r, _ in replayed] == records[1:]
    assert [line for _, _, line in replayed] == [copyline.encode(r) for r in records[1:]]
    [new] = spool.append([record(9)])
    assert new.segment == 8 and segments(tmp_path) == ["cdr-000000000008.copy"]
    spool.ack(replayed[-1][0])
    assert not (tmp_path / "cdr-000000000007.jsonl").exists()
    assert [r.channel_id for _, r, _ in Spool.open(tmp_path, exclusive=False).replay()] == ["chan-9"]


def test_the_old_format_line_decodes_to_the_record_it_held(tmp_path: Path) -> None:
    (tmp_path / "cdr-000000000001.jsonl").write_bytes(OLD_FORMAT_LINE)
    [(_, r, line)] = Spool.open(tmp_path, exclusive=False).replay()
    assert r.person == 'Zoë\t"the" caller\n\\' and r.cost == Decimal("0.0305") and r.included is False
    assert r.extra == {"trunk": "ovh", "note": "é\x00"} and r.user_id is None
    assert copyline.decode(line) == dataclasses.replace(r, extra={"trunk": "ovh", "note": "é\ufffd"})


def test_a_copy_line_cut_after_its_last_tab_is_skipped_though_it_decodes(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, exclusive=False)
    spool.append([record(1)])
    cut = copyline.encode(record(2, cost=Decimal("0.0305")))[:-3]  # "...\t0.03": still a number
    copyline.decode(cut)
    [name] = segments(tmp_path)
    with open(tmp_path / name, "ab") as f:
        f.write(cut)
    with capture_logs() as logs:
        replayed = Spool.open(tmp_path, exclusive=False).replay()
    assert [r.channel_id for _, r, _ in replayed] == ["chan-1"]
    assert [e["reason"] for e in logs if e["event"] == "cdr_spool_line_skipped"] == ["torn last line"]
