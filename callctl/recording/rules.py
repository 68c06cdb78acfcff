"""Pure recording rules: retention classes and ages, notice prompts, purge decisions, file facts.

BRIEF section 1: conference recordings are deleted at most 6 months after the conference.
BRIEF section 2: call recordings are archived 3 months; when an account's recording option or its
service ends, all of its call recordings are deleted. Nothing under legal hold is ever deleted.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass

from callctl.clock import add_months

# The objection key's facts live in callctl.keys (the settings and the prompts share them); these are
# the recording's names for them.
from callctl.keys import DEFAULT_OBJECTION_KEY as DEFAULT_OBJECTION_KEY
from callctl.keys import KEY_NAMES as KEY_NAMES
from callctl.keys import KEYS_IN_RECORDED_CALLS as KEYS_IN_RECORDED_CALLS
from callctl.keys import OBJECTION_KEYS as OBJECTION_KEYS
from callctl.keys import SPOKEN_KEYS as SPOKEN_KEYS
from callctl.keys import keyed_prompt as keyed_prompt
from callctl.keys import objection_key_problem as objection_key_problem
from callctl.keys import spoken_key as spoken_key

CONFERENCE = "conference"
CALL = "call"
VOICEMAIL = "voicemail"
# Voicemail messages are kept like call recordings (3 months), unless deleted sooner or held.
RETENTION_MONTHS = {CONFERENCE: 6, CALL: 3, VOICEMAIL: 3}

# Chosen by measurement (docs/recording.md): GSM 6.10 in a WAV container, ~5.9 MB per hour, read by
# sox and every desktop player. Asterisk's ARI format name and the file extension it writes.
FORMAT = "wav49"
EXTENSION = "WAV"

# Text prompts in dialplan/prompts.yaml, rendered per language by `callctl dialplan render-prompts`.
NOTICE_PROMPTS = {CONFERENCE: "recording-notice-conference", CALL: "recording-notice-call"}
LANGUAGES = ("en", "fr")

# Purge rules, as written in the audit.
RULE_AGE = "retention_age"
RULE_ACCOUNT_OPTION_OFF = "account_recording_off"
RULE_ACCOUNT_GONE = "account_service_ended"
RULE_ORGANIZER = "deleted_on_request"
RULE_OBJECTION = "objection"
RULE_PRIVACY_ERASE = "privacy_erase"


def notice_media(source: str, language: str, objection_key: str = DEFAULT_OBJECTION_KEY) -> tuple[str, str]:
    """(prompt id, media) of the recording notice for ``source`` in ``language`` (English if unknown).
    The call notice names ``objection_key``: its sound is the one rendered for that key."""
    lang = language if language in LANGUAGES else LANGUAGES[0]
    prompt = NOTICE_PROMPTS[source]
    if source == CALL:
        prompt = keyed_prompt(prompt, objection_key)
    return f"{prompt}:{lang}", f"sound:callctl/{lang}/{prompt}"


def delete_after(retention_class: str, ended_at: dt.datetime) -> dt.datetime:
    """The instant after which a recording of ``retention_class`` that ended at ``ended_at`` must be
    gone. A conference recording ends no later than its conference, so this is at most 6 months
    after the conference."""
    return add_months(ended_at, RETENTION_MONTHS[retention_class])


@dataclass(frozen=True)
class Candidate:
    """What purge knows about one recording."""

    id: str
    retention_class: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    legal_hold: bool
    account_recording: bool | None  # the account's option now; None: no such account any more


@dataclass(frozen=True)
class PurgeDecision:
    delete: bool
    rule: str
    held: bool = False


def purge_decision(c: Candidate, now: dt.datetime) -> PurgeDecision:
    """Whether purge deletes ``c`` now, and under which rule. A recording still in progress (no end)
    counts from its start, so a recording whose end was never seen cannot live for ever."""
    rule = ""
    if c.retention_class == CALL and c.account_recording is None:
        rule = RULE_ACCOUNT_GONE
    elif c.retention_class == CALL and c.account_recording is False:
        rule = RULE_ACCOUNT_OPTION_OFF
    elif now > delete_after(c.retention_class, c.ended_at or c.started_at):
        rule = RULE_AGE
    if not rule:
        return PurgeDecision(False, "")
    if c.legal_hold:
        return PurgeDecision(False, rule, held=True)
    return PurgeDecision(True, rule)


def recording_name(recording_id: str) -> str:
    """The name Asterisk records under (its spool), unique per recording."""
    return f"callctl-{recording_id}"


def wav_duration_ms(data: bytes) -> int | None:
    """Duration of a WAV file from its header (fmt + data chunks); None if it is not one.

    For GSM 6.10 (wav49) each 65-byte block holds 320 samples; for PCM, block_align bytes hold one
    sample frame. Asterisk leaves the data chunk size right once the recording is closed.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    rate = block_align = samples_per_block = 0
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if chunk == b"fmt " and len(body) >= 16:
            _fmt, _channels, rate, _byte_rate, block_align = struct.unpack("<HHIIH", body[:14])
            samples_per_block = struct.unpack("<H", body[18:20])[0] if len(body) >= 20 else 0
        elif chunk == b"data":
            if not rate or not block_align:
                return None
            size = min(size, len(data) - pos - 8)
            blocks = size // block_align
            samples = blocks * (samples_per_block or 1)
            return int(samples * 1000 / rate)
        pos += 8 + size + (size & 1)
    return None
