"""The ``callctl`` command: every user-caused problem ends in one clear line and a non-zero exit."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from callctl import __version__, clitools
from callctl import logging as clog
from callctl.config import Settings, load_settings
from callctl.errors import CallctlError, ConfigError, DialplanError

# Feature packages that add commands; each has ``register(subparsers, common)``.
FEATURE_CLIS = ("callctl.store.cli", "callctl.flows.cli", "callctl.conference.cli", "callctl.lines.cli",
                "callctl.billing.cli", "callctl.privacy.cli", "callctl.gating.cli", "callctl.billing.minutes_cli",
                "callctl.recording.cli", "callctl.voicemail.cli", "callctl.fraud.cli", "callctl.trace.cli")


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from callctl import logging as clog
    from callctl.app import run_daemon_forever

    clog.configure(settings.log_level, batched=True)  # lines of one loop turn written together
    return run_daemon_forever(settings)


def _trace_paths(settings: Settings, since: dt.datetime) -> list[list[tuple[str, str]]]:
    """(flow, step) paths of the calls since ``since``, from the traces stored with their CDRs."""
    from callctl.store.db import run_with_pool
    from callctl.store.traces import step_paths_since

    return run_with_pool(settings.database_url, lambda pool: step_paths_since(pool, since))


async def _emergency_vars_of_account(pool: Any, settings: Settings, account_id: uuid.UUID) -> None:
    from callctl.gating.upkeep import refresh_account_endpoint_vars

    await refresh_account_endpoint_vars(pool, settings.dialplan_dir, account_id)


class _RecordingFiles:
    """Recording deletions as privacy commands ask for them, with the recording's own audit rules, run
    on ``node`` (Settings.node: another node's recording whose file is not here keeps its row)."""

    def __init__(self, node: str | None = None) -> None:
        self.node = node

    def describe(self, rec: Any, *, check: bool = True) -> dict[str, Any]:
        from callctl.recording import retention

        return retention.describe(rec, check=check)

    async def erase_person(self, db: Any, recs: list[Any], now: dt.datetime, *, dry_run: bool) -> dict[str, Any]:
        from callctl.recording import retention, rules

        return await retention.delete_all(db, recs, rules.RULE_PRIVACY_ERASE, now, node=self.node,
                                          dry_run=dry_run)

    async def erase_account(self, db: Any, account_id: uuid.UUID, now: dt.datetime, *,
                            dry_run: bool) -> dict[str, Any]:
        from callctl.recording import retention, rules

        return await retention.delete_account_calls(db, account_id, now, rules.RULE_ACCOUNT_GONE, node=self.node,
                                                    dry_run=dry_run)

    def export(self, rec: Any, dest: Path) -> Path:
        from callctl.recording import retention

        return retention.export(rec, dest)

    async def delete_on_request(self, db: Any, rec: Any, at: dt.datetime) -> dict[str, Any]:
        from callctl.recording import retention, rules

        return await retention.delete(db, rec, rules.RULE_ORGANIZER, at, node=self.node)


async def _fraud_screen(pool: Any, settings: Settings, account_id: uuid.UUID, country: str,
                        number: str) -> tuple[str, str] | None:
    from callctl.fraud.service import FraudService
    from callctl.fraud.settings import fraud_policy

    refusal = await FraudService(pool, fraud_policy(settings)).preview(account_id, country, number)
    return None if refusal is None else (refusal.rule, refusal.reason)


def load_checked_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """The settings, with the features' own settings checked too (the fraud screen's, issue 20):
    config knows no feature, so the root checks them, before any command or the daemon runs."""
    from callctl.fraud.settings import settings_problem

    settings = load_settings(path, env)
    problem = settings_problem(settings)
    if problem:
        raise ConfigError(problem)
    return settings


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's own --config must not reset one given before the subcommand.
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="settings file (default /etc/callctl/callctl.yaml, then ./callctl.yaml)")
    parser = argparse.ArgumentParser(prog="callctl", parents=[common],
                                     description="Call-control engine for Asterisk (ARI).")
    parser.add_argument("--version", action="version", version=f"callctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", parents=[common], help="run the daemon in the foreground",
                         description="Connect to Asterisk ARI and handle calls until SIGTERM.")
    run.set_defaults(func=_run)
    for name in FEATURE_CLIS:
        importlib.import_module(name).register(sub, common)
    parser.set_defaults(trace_paths=_trace_paths)  # `dialplan graph --calls`
    # Between features, wired here: a business line's phones or numbers changed -> gating writes the
    # account's emergency status on its endpoints again.
    clitools.on_account_phones_changed(_emergency_vars_of_account)
    # A person's or an account's data erased -> their recordings go, with the recording's audit.
    clitools.recordings.impl = _RecordingFiles()
    # `callctl gate` shows what the fraud screen would refuse, as the daemon would.
    clitools.on_outbound_screen(_fraud_screen)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv, 1):  # bytes that are not UTF-8 (surrogateescape) reach no store, no log
        if any("\ud800" <= ch <= "\udfff" for ch in arg):
            print(f"callctl: error: argument {i} ({arg.encode('utf-8', 'backslashreplace').decode()}) is not "
                  "UTF-8 text", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        settings = load_checked_settings(getattr(args, "config", None))
        clog.configure_command(settings.log_level)  # stdout is the command's answer (`run` logs there)
        clitools.recordings.impl = _RecordingFiles(settings.node)  # deletions know which node runs them
        return int(args.func(args, settings))
    except DialplanError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"callctl: dialplan refused: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    except CallctlError as exc:
        print(f"callctl: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
