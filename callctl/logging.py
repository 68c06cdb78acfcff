"""structlog set-up: JSON lines on stdout for journald, readable lines on a terminal."""

from __future__ import annotations

import datetime as dt
import json as stdlib_json
import logging
import sys
from typing import Any

import orjson
import structlog


def _iso_utc_ms(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    event_dict["ts"] = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return event_dict


def _dumps(obj: Any, **kw: Any) -> str:
    """orjson (several times faster than json.dumps: every log line goes through it); what it
    refuses (an int beyond 64 bits) goes through the stdlib, so a log call never raises."""
    default = kw.get("default")
    try:
        return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return stdlib_json.dumps(obj, default=default if default is not None else repr)


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog once for the process. ``json`` defaults to "stdout is not a TTY".

    Loggers are cached on first use and levels below ``level`` are filtered by the bound logger's
    class itself (its methods for them do nothing), so a filtered-out call costs one method call."""
    if json is None:
        json = not sys.stdout.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _iso_utc_ms,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
    ]
    renderer: Any = structlog.processors.JSONRenderer(serializer=_dumps) if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries that use stdlib logging (aiohttp, asyncpg, asyncio's own reports) only speak up for
    # warnings, on stderr, rendered like every other line: JSON for journald, nothing in plain text.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
