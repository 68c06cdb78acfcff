"""The open-calls journal: which calls this engine has taken and not yet recorded.

A call that ends while no engine is connected (the engine killed, then the caller hangs up before
the next one resynchronises) leaves no trace in Asterisk. Each call is therefore written here when
it starts (and when it is answered) and struck out when its CDR is handed to the writer. At start,
the next engine reads the calls still open: those Asterisk no longer has are recorded with what is
known (start, answer) and an end bracketed by the last sign of life of the previous engine and
the moment of recovery.

Plain appends without fsync: the page cache survives the death of the process (kill -9, crash),
which is what this guards against; a machine crash is covered by Asterisk's own restart (every
call is gone then, and the open entries are recorded the same way).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from callctl.errors import SpoolError


class CallJournal:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "open-calls.jsonl"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.previous_activity = (dt.datetime.fromtimestamp(self.path.stat().st_mtime, dt.UTC)
                                      if self.path.exists() else None)
            self.pending = self._read()
            self._compact(self.pending)
            self._file = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise SpoolError(f"{self.path}: cannot use the open-calls journal: {exc.strerror}") from None

    def _read(self) -> dict[str, dict[str, Any]]:
        entries: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return entries
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a torn last line after a crash
            leg = item.get("leg")
            if not isinstance(leg, str):
                continue
            if item.get("op") == "open":
                entries[leg] = item
            elif item.get("op") == "answer" and leg in entries:
                entries[leg]["answered_at"] = item.get("at")
            elif item.get("op") == "dial" and leg in entries:
                entries[leg].setdefault("dialled", []).append(item.get("channel"))
            elif item.get("op") == "close":
                entries.pop(leg, None)
        return entries

    def _compact(self, keep: dict[str, dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            for entry in keep.values():
                out.write(json.dumps(entry) + "\n")
        os.replace(tmp, self.path)

    def _write(self, item: dict[str, Any]) -> None:
        try:
            self._file.write(json.dumps(item) + "\n")
            self._file.flush()
        except (OSError, ValueError):
            pass  # the journal is a safety net: a full disk must not stop calls (the spool says it loudly)

    def opened(self, leg: str, **facts: Any) -> None:
        if leg in self.pending:  # adopted after a restart: already open
            return
        self._write({"op": "open", "leg": leg, **facts})

    def answered(self, leg: str, at: dt.datetime) -> None:
        self._write({"op": "answer", "leg": leg, "at": at.isoformat()})

    def dialled(self, leg: str, channel: str) -> None:
        """The call is about to originate ``channel`` (a leg): a next engine can find the attempt."""
        self._write({"op": "dial", "leg": leg, "channel": channel})

    def closed(self, leg: str) -> None:
        self.pending.pop(leg, None)
        self._write({"op": "close", "leg": leg})

    def close(self) -> None:
        self._file.close()
