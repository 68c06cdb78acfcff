"""`callctl db migrate`: bring the database schema up to date (safe to run twice, or twice at once)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from callctl.config import Settings
from callctl.store.db import describe_url
from callctl.store.migrate import default_directory, discover, migrate


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    db = sub.add_parser("db", parents=[common], help="database schema")
    dsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    mig = dsub.add_parser("migrate", parents=[common], help="apply pending schema migrations",
                          description="Apply migrations/NNNN_name.sql files not yet applied, in order, "
                                      "each in its own transaction, under an advisory lock.")
    mig.add_argument("--dir", type=Path, default=None, metavar="DIR",
                     help=f"migrations directory (default {default_directory()})")
    mig.set_defaults(func=_migrate)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    directory: Path = args.dir or default_directory()
    names = {m.version: m.path.name for m in discover(directory)}
    # StoreUnavailable / MigrationError reach callctl.cli.main: one line on stderr, exit 2.
    applied = asyncio.run(migrate(settings.database_url, directory))
    for version in applied:
        print(f"applied {names[version]}")
    print(f"{describe_url(settings.database_url)}: schema up to date "
          f"({len(names)} migration(s), {len(applied)} applied now)")
    return 0
