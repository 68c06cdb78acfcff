"""DTMF keys that mean something across features (pure): the objection key of recorded line calls
(setting ``recording_objection_key``), how a key is named in sound files and how it is spoken.

Shared by the settings (which refuse a bad key), the prompts renderer and recording, so none of them
imports another's package."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# The objection key (setting recording_objection_key). The call notice's text says it through the
# prompt parameter {objection_key}; its sound is rendered per key (keyed_prompt), so a changed
# setting can never play a notice naming the old key (the file for the new key is rendered first).
DEFAULT_OBJECTION_KEY = "9"
OBJECTION_KEYS = "0123456789*#"
KEY_NAMES = {"*": "star", "#": "hash"}  # in file names
SPOKEN_KEYS = {"en": {"*": "star", "#": "hash"}, "fr": {"*": "étoile", "#": "dièse"}}
# Keys the engine reads from a party of a recorded line call for something else while it is being
# recorded. Call.dial hands every key of both sides to the recorder and nothing else reads them
# (the conference menu's * keys are not line calls, and conferences have no objection key), so
# none today: a feature that adds an in-call key (a transfer, a hang-up key) lists it here, and the
# settings then refuse it as the objection key.
KEYS_IN_RECORDED_CALLS: Mapping[str, str] = MappingProxyType({})


def objection_key_problem(key: str, in_use: Mapping[str, str] = KEYS_IN_RECORDED_CALLS) -> str | None:
    """What is wrong with ``key`` as the objection key (None: nothing)."""
    if len(key) != 1 or key not in OBJECTION_KEYS:
        return "must be one key: 0-9, * or #"
    if key in in_use:
        return f"is already used during a recorded call ({in_use[key]}): choose another"
    return None


def keyed_prompt(prompt: str, key: str) -> str:
    """The sound name of ``prompt`` rendered for objection key ``key`` (recording-notice-call-key-9)."""
    return f"{prompt}-key-{KEY_NAMES.get(key, key)}"


def spoken_key(key: str, language: str) -> str:
    """``key`` as the text-to-speech should say it in ``language`` ('#' -> 'hash', 'dièse'; English if unknown)."""
    return SPOKEN_KEYS.get(language, SPOKEN_KEYS["en"]).get(key, key)
