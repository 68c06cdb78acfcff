"""The one exception tree of callctl; foreign errors are translated into it at the adapters.

    CallctlError                     code
    ├── ConfigError                  config_invalid        bad settings file or environment
    ├── DialplanError                dialplan_invalid      operator YAML refused (carries every problem)
    ├── RenderError                  prompt_render_failed  a prompt could not be rendered (tool missing or failing)
    ├── StoreError                   store_error
    │   ├── StoreUnavailable         store_unavailable     PostgreSQL unreachable / connection lost
    │   └── MigrationError           migration_failed      a migration file failed to apply
    ├── AriError                     ari_error             Asterisk answered with an unexpected error
    │   ├── AriUnavailable           ari_unavailable       Asterisk unreachable / websocket lost
    │   ├── AriAuthError             ari_auth_failed       wrong ARI user or password
    │   └── ResourceGone             resource_gone         an Asterisk object no longer exists (404)
    │       ├── ChannelGone          channel_gone          a channel: never leaves the call port
    │       ├── BridgeGone           bridge_gone           a bridge (room, two-party call)
    │       ├── RecordingGone        recording_gone        a live or stored recording
    │       └── PlaybackGone         playback_gone         a playback that has finished
    ├── AmiError                     ami_error             Asterisk's manager interface refused or is unreachable
    ├── CallEnded                    call_ended            base of the "the call is over" outcomes
    │   └── CallHungUp               call_hung_up          the caller hung up: an outcome, not a crash
    ├── SpoolError                   spool_error           the local CDR spool cannot be written
    ├── LineError                    line_invalid          an account, user or number was refused
    ├── BookingError                 booking_invalid       a conference booking or invitation was refused
    ├── RecordingError               recording_error       a recording command cannot do what was asked
    └── GatingError                  gating_invalid        a gating input is unusable (account, opt-out file)

Each message says what happened, where, and what to do; ``code`` is a stable slug for logs and metrics.
"""

from __future__ import annotations


class CallctlError(Exception):
    code = "callctl_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(CallctlError):
    code = "config_invalid"


class DialplanError(CallctlError):
    """The dialplan was refused; ``problems`` holds every ``FILE:LINE:COL: message`` found."""

    code = "dialplan_invalid"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        head = problems[0] if problems else "dialplan invalid"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(head + more)


class StoreError(CallctlError):
    code = "store_error"


class StoreUnavailable(StoreError):
    code = "store_unavailable"


class MigrationError(StoreError):
    code = "migration_failed"


class AriError(CallctlError):
    code = "ari_error"


class AriUnavailable(AriError):
    code = "ari_unavailable"


class AriAuthError(AriError):
    code = "ari_auth_failed"


class ResourceGone(AriError):
    code = "resource_gone"


class ChannelGone(ResourceGone):
    """Raised by the ARI adapter for a channel only; the call port turns it into the end of the call."""

    code = "channel_gone"


class BridgeGone(ResourceGone):
    code = "bridge_gone"


class RecordingGone(ResourceGone):
    code = "recording_gone"


class PlaybackGone(ResourceGone):
    code = "playback_gone"


class AmiError(CallctlError):
    code = "ami_error"


class CallEnded(CallctlError):
    code = "call_ended"


class CallHungUp(CallEnded):
    code = "call_hung_up"


class SpoolError(CallctlError):
    code = "spool_error"


class RenderError(CallctlError):
    """A prompt could not be rendered (tool missing or failing)."""

    code = "prompt_render_failed"


class LineError(CallctlError):
    """An account, user or number was refused (bad option, unknown id, number taken)."""

    code = "line_invalid"


class BookingError(CallctlError):
    code = "booking_invalid"


class RecordingError(CallctlError):
    """A recording command cannot do what was asked (unknown id, tampered file, held...)."""

    code = "recording_error"


class GatingError(CallctlError):
    """A gating input is unusable (unknown account, bad opt-out file, ...)."""

    code = "gating_invalid"
