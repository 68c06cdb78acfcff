"""The open-calls journal: what a killed engine leaves for the next one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from callctl.cdr.journal import CallJournal

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


def test_open_answer_close_and_what_survives_a_restart(tmp_path: Path) -> None:
    j = CallJournal(tmp_path)
    j.opened("a", call="a", channel="c1", started_at=T0.isoformat())
    j.opened("b", call="b", channel="c2", started_at=T0.isoformat())
    j.answered("b", T0 + dt.timedelta(seconds=2))
    j.closed("a")
    j.close()  # no clean end for "b": the engine died
    with (tmp_path / "open-calls.jsonl").open("a") as f:
        f.write('{"op": "open", "leg": "torn')  # a torn last line
    again = CallJournal(tmp_path)
    assert list(again.pending) == ["b"]
    assert again.pending["b"]["answered_at"] == (T0 + dt.timedelta(seconds=2)).isoformat()
    assert again.previous_activity is not None
    again.opened("b", call="b")  # adopted: already open, not written twice
    again.closed("b")
    again.close()
    last = CallJournal(tmp_path)
    assert last.pending == {}
    last.close()
