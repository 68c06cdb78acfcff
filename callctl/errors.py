"""The one exception tree of callctl; foreign errors are translated into it at the adapters.

    CallctlError                     code
    ├── ConfigError                  config_invalid        bad settings file or environment
    ├── DialplanError                dialplan_invalid      operator YAML refused (carries every problem)
    ├── StoreError                   store_error
    │   ├── StoreUnavailable         store_unavailable     PostgreSQL unreachable / connection lost
    │   └── MigrationError           migration_failed      a migration file failed to apply
    ├── AriError                     ari_error             Asterisk answered with an unexpected error
    │   ├── AriUnavailable           ari_unavailable       Asterisk unreachable / websocket lost
    │   ├── AriAuthError             ari_auth_failed       wrong ARI user or password
    │   └── ChannelGone              channel_gone          the channel no longer exists (404)
    ├── AmiError                     ami_error             Asterisk's manager interface refused or is unreachable
    ├── CallEnded                    call_ended            base of the "the call is over" outcomes
    │   └── CallHungUp               call_hung_up          the caller hung up: an outcome, not a crash
    └── SpoolError                   spool_error           the local CDR spool cannot be written

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


class ChannelGone(AriError):
    code = "channel_gone"


class AmiError(CallctlError):
    code = "ami_error"


class CallEnded(CallctlError):
    code = "call_ended"


class CallHungUp(CallEnded):
    code = "call_hung_up"


class SpoolError(CallctlError):
    code = "spool_error"
