"""Progress bars for long CLI operations (deck imports, opt-out lists, exports, purges): drawn on a
terminal (stderr), silent when stderr is a pipe or a file, so scripts and cron mails stay clean."""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


def on_terminal(stream: TextIO | None = None) -> bool:
    """True when a person watches ``stream`` (stderr by default)."""
    stream = stream if stream is not None else sys.stderr
    return stream.isatty() and os.environ.get("TERM", "") != "dumb"


class ProgressBar:
    """``with ProgressBar("import rates.csv", total=n, unit="rows") as bar: bar.advance(k)``.

    ``total`` may be None (a spinner-like count) or an estimate updated later with ``bar.total(n)``."""

    def __init__(self, what: str, *, total: int | None = None, unit: str = "rows",
                 stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._what, self._total, self._unit = what, total, unit

    def __enter__(self) -> ProgressBar:
        if on_terminal(self._stream):
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn(self._unit), TimeElapsedColumn(),
                                      console=Console(file=self._stream), transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self._what, total=self._total)
        return self

    def advance(self, amount: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def update(self, completed: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed)

    def total(self, total: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            if exc_type is None and self._task is not None:
                task = self._progress.tasks[0]
                self._progress.update(self._task, total=task.completed)  # a finished bar reads 100 %
            self._progress.stop()
