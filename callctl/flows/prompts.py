"""Text prompts rendered to sound files Asterisk can play: espeak-ng speaks the text in the
prompt's language, sox converts it to 8 kHz mono 16-bit wav at
``SOUNDS_DIR/callctl/<lang>/<prompt>.wav`` (played as ``sound:callctl/<lang>/<prompt>``).

A ``.src`` file next to each wav keeps what it was made from, so unchanged prompts are skipped.
A text may say the objection key as ``{objection_key}`` (the recording_objection_key setting, in
words of its language); it is then rendered as ``<prompt>-key-<key>`` (callctl.recording.rules).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from callctl.errors import RenderError as RenderError  # in the one tree (callctl.errors)
from callctl.flows.model import Dialplan, fill_template, template_variables
from callctl.keys import DEFAULT_OBJECTION_KEY, keyed_prompt, spoken_key

ESPEAK = "/usr/bin/espeak-ng"
SOX = "/usr/bin/sox"
VOICES = {"en": "en-gb", "fr": "fr-fr"}
RENDER_TIMEOUT_S = 60.0
PARALLEL = 4


@dataclass(frozen=True)
class RenderJob:
    prompt: str
    language: str
    text: str

    def path(self, sounds_dir: Path) -> Path:
        return sounds_dir / "callctl" / self.language / f"{self.prompt}.wav"

    @property
    def source_id(self) -> str:
        voice = VOICES.get(self.language, self.language)
        return hashlib.sha256(f"{voice}\0{self.text}".encode()).hexdigest()


def render_jobs(plan: Dialplan, objection_key: str = DEFAULT_OBJECTION_KEY) -> list[RenderJob]:
    """Every (prompt, language) that is a text, in a stable order; parameters filled in."""
    jobs = []
    for name in sorted(plan.prompts):
        for language, version in sorted(plan.prompts[name].versions.items()):
            if version.text is None:
                continue
            used = set(template_variables(version.text))
            if used - {"objection_key"}:
                raise RenderError(f"prompt '{name}' ({language}): unknown parameter "
                                  f"{{{sorted(used - {'objection_key'})[0]}}} in its text (known: {{objection_key}})")
            if used:
                words = {"objection_key": spoken_key(objection_key, language)}
                jobs.append(RenderJob(keyed_prompt(name, objection_key), language, fill_template(version.text, words)))
            else:
                jobs.append(RenderJob(name, language, version.text))
    return jobs


async def render_prompts(plan: Dialplan, sounds_dir: Path, *, force: bool = False,
                         objection_key: str = DEFAULT_OBJECTION_KEY) -> tuple[int, int]:
    """Render every text prompt of ``plan``; returns (rendered, unchanged). RenderError on failure."""
    for tool in (ESPEAK, SOX):
        if not os.access(tool, os.X_OK):
            raise RenderError(f"{tool} is not installed (apt-get install espeak-ng sox)")
    jobs = render_jobs(plan, objection_key)
    todo = [j for j in jobs if force or not _up_to_date(j, sounds_dir)]
    gate = asyncio.Semaphore(PARALLEL)

    async def one(job: RenderJob) -> None:
        async with gate:
            await _render(job, sounds_dir)

    try:
        async with asyncio.TaskGroup() as group:
            for job in todo:
                group.create_task(one(job))
    except* RenderError as failed:
        raise failed.exceptions[0] from None
    return len(todo), len(jobs) - len(todo)


def _up_to_date(job: RenderJob, sounds_dir: Path) -> bool:
    wav = job.path(sounds_dir)
    src = wav.with_suffix(".src")
    try:
        return wav.stat().st_size > 44 and src.read_text(encoding="utf-8").strip() == job.source_id
    except OSError:
        return False


async def _render(job: RenderJob, sounds_dir: Path) -> None:
    wav = job.path(sounds_dir)
    wav.parent.mkdir(parents=True, exist_ok=True)
    raw = wav.with_name(f".{wav.stem}.raw.wav")
    tmp = wav.with_name(f".{wav.stem}.tmp.wav")
    voice = VOICES.get(job.language, job.language)
    try:
        # Text goes on stdin so a prompt starting with "-" is never read as an option.
        await _run([ESPEAK, "-v", voice, "-s", "150", "-w", str(raw), "--stdin"], job, stdin=job.text.encode())
        await _run([SOX, str(raw), "-r", "8000", "-c", "1", "-b", "16", str(tmp)], job)
        tmp.replace(wav)  # atomic: Asterisk never plays a half-written file
        wav.with_suffix(".src").write_text(job.source_id + "\n", encoding="utf-8")
    finally:
        for leftover in (raw, tmp):
            leftover.unlink(missing_ok=True)


async def _run(argv: list[str], job: RenderJob, stdin: bytes | None = None) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(RENDER_TIMEOUT_S):
            _, err = await proc.communicate(stdin)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RenderError(f"prompt '{job.prompt}' ({job.language}): {Path(argv[0]).name} took more than "
                          f"{RENDER_TIMEOUT_S:g} s") from None
    if proc.returncode != 0:
        detail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise RenderError(f"prompt '{job.prompt}' ({job.language}): {Path(argv[0]).name} failed "
                          f"(exit {proc.returncode}): {detail[0]}")
