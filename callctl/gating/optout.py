"""The opposition list (BLOCTEL): file import into a new list version, switched live atomically."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from callctl.gating import GatingError
from callctl.numbers import e164_or_none
from callctl.progress import ProgressBar
from callctl.store import gating as store

BATCH = 50_000
# The French list's own shape: taken as is (phonenumbers costs ~25 µs a number, the list has millions).
_FR_E164 = re.compile(r"\+33[1-9][0-9]{8}")
_FR_NATIONAL = re.compile(r"^0[1-9][0-9]{8}$")
_DROP = str.maketrans("", "", " .-\t\r")


def normalise(raw: str, country: str = "FR") -> str | None:
    """E.164 of one list line, or None. Fast paths for the shapes the list uses, phonenumbers otherwise."""
    text = raw.translate(_DROP).strip()
    if not text:
        return None
    if _FR_E164.fullmatch(text):
        return text
    if country == "FR" and _FR_NATIONAL.match(text):
        return "+33" + text[1:]
    if text.isdigit() and text.startswith("33") and len(text) == 11:
        return "+" + text
    return e164_or_none(text, country)


def _batches(path: Path, country: str, progress: Callable[[int, int], None],
             counts: dict[str, int]) -> Iterator[list[str]]:
    batch: list[str] = []
    done = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            done += len(raw)
            number = normalise(raw.decode("utf-8", "replace"), country)
            if number is None:
                if raw.strip():
                    counts["rejected"] += 1
            else:
                batch.append(number)
            if len(batch) >= BATCH:
                yield batch
                batch = []
                progress(done, lineno)
            counts["lines"] = lineno
        if batch:
            yield batch
        progress(done, counts["lines"])


async def import_list(db: Any, path: Path, *, country: str = "FR",
                      progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Load ``path`` (one number a line) as a new list version and make it live in one transaction."""
    try:
        size = await asyncio.to_thread(os.path.getsize, path)
    except OSError as exc:
        raise GatingError(f"{path}: cannot read the opposition list: {exc.strerror}") from None
    counts = {"lines": 0, "rejected": 0}
    version = await store.begin_optout_version(db, str(path))
    # bytes read of the file; drawn on a terminal only (scripts and cron stay quiet)
    with ProgressBar(f"opposition list {path.name}", total=max(size, 1), unit="bytes") as bar:
        report = progress if progress is not None else (lambda done, lines: bar.update(done))
        try:
            for batch in _batches(path, country, report, counts):
                await store.load_optout_batch(db, version, batch)
            numbers = await store.activate_optout_version(db, version, counts["rejected"])
        except BaseException:
            await store.abandon_optout_version(db, version)
            raise
    return {"version": version, "lines": counts["lines"], "numbers": numbers, "rejected": counts["rejected"]}


async def import_exceptions(db: Any, account_id: uuid.UUID, path: Path, kind: str, *,
                            country: str = "FR") -> int:
    """Existing customers (or recorded consents) of one account: called even if on the list."""
    try:
        text = await asyncio.to_thread(path.read_text, "utf-8", "replace")
    except OSError as exc:
        raise GatingError(f"{path}: cannot read the {kind} file: {exc.strerror}") from None
    numbers = {n for n in (normalise(line, country) for line in text.splitlines()) if n is not None}
    return await store.add_exceptions(db, account_id, sorted(numbers), kind)
