"""Asterisk's channel events (table cel, written by cel_pgsql) against callctl's CDRs: the channels
Asterisk ended that have no CDR (`callctl cdr reconcile`), and the events' retention."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from callctl.store.db import translated

_translated = translated("cel store")

CEL_RETENTION = dt.timedelta(days=35)  # enough to reconcile a month; the table holds phone numbers

# One row per PJSIP channel that ended in [since, until); anti-joined with the CDRs of legs started from
# a day before ``since`` (a CDR's channel_id is the Asterisk channel's uniqueid). eventtime is UTC.
_MISSING = """
WITH ended AS (
    SELECT uniqueid, min(linkedid) AS linkedid, min(channame) AS channel,
           min(eventtime) FILTER (WHERE eventtype = 'CHAN_START') AS started_at,
           max(eventtime) FILTER (WHERE eventtype = 'CHAN_END') AS ended_at,
           bool_or(eventtype = 'ANSWER') AS answered,
           min(context) FILTER (WHERE eventtype = 'CHAN_START') AS context,
           min(exten) FILTER (WHERE eventtype = 'CHAN_START') AS exten,
           min(cid_num) FILTER (WHERE eventtype = 'CHAN_START') AS caller,
           string_agg(DISTINCT appname, ',') FILTER (WHERE eventtype = 'APP_START') AS apps
    FROM cel
    WHERE eventtime >= $1::timestamp - interval '1 day' AND eventtime < $2::timestamp AND channame LIKE 'PJSIP/%'
    GROUP BY uniqueid
    HAVING max(eventtime) FILTER (WHERE eventtype = 'CHAN_END') >= $1::timestamp
)
SELECT e.*, (c.channel_id IS NOT NULL) AS has_cdr
FROM ended e
LEFT JOIN (SELECT DISTINCT channel_id FROM cdr
           WHERE started_at >= ($1::timestamp - interval '1 day') AT TIME ZONE 'UTC') c ON c.channel_id = e.uniqueid
ORDER BY e.ended_at, e.uniqueid
"""


@dataclasses.dataclass(frozen=True)
class EndedChannel:
    uniqueid: str
    linkedid: str | None
    channel: str
    started_at: dt.datetime | None
    ended_at: dt.datetime
    answered: bool
    context: str | None
    exten: str | None
    caller: str | None
    apps: str | None
    has_cdr: bool

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in ("started_at", "ended_at"):
            value = out[name]
            out[name] = None if value is None else value.isoformat(timespec="milliseconds")
        del out["has_cdr"]
        return out


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


@_translated
async def ended_channels(db: Any, since: dt.datetime, until: dt.datetime) -> list[EndedChannel]:
    """Every PJSIP channel Asterisk ended in [since, until), with whether callctl has its CDR."""
    rows = await db.fetch(_MISSING, _naive_utc(since), _naive_utc(until))
    return [EndedChannel(**{**dict(r), "started_at": r["started_at"] and r["started_at"].replace(tzinfo=dt.UTC),
                            "ended_at": r["ended_at"].replace(tzinfo=dt.UTC)}) for r in rows]


@_translated
async def purge(db: Any, before: dt.datetime, *, dry_run: bool) -> int:
    """Delete (or count) the channel events older than ``before``."""
    if dry_run:
        return int(await db.fetchval("SELECT count(*) FROM cel WHERE eventtime < $1", _naive_utc(before)))
    status: str = await db.execute("DELETE FROM cel WHERE eventtime < $1", _naive_utc(before))
    return int(status.rsplit(" ", 1)[-1])


@dataclasses.dataclass(frozen=True)
class ChannelTimes:
    """One ended channel as Asterisk recorded it (UTC): created, answered (None: never), ended."""

    started_at: dt.datetime | None
    answered_at: dt.datetime | None
    ended_at: dt.datetime


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else moment.replace(tzinfo=dt.UTC)


@_translated
async def ended_channel_times(db: Any, uniqueids: list[str]) -> dict[str, ChannelTimes]:
    """Start, answer and end of each of these channels that Asterisk has ended (CHAN_END recorded);
    channels still up, or with no events (CEL off, or dropped while PostgreSQL was down), are absent."""
    if not uniqueids:
        return {}
    rows = await db.fetch(
        "SELECT uniqueid, min(eventtime) FILTER (WHERE eventtype = 'CHAN_START') AS started_at, "
        "min(eventtime) FILTER (WHERE eventtype = 'ANSWER') AS answered_at, "
        "max(eventtime) FILTER (WHERE eventtype = 'CHAN_END') AS ended_at "
        "FROM cel WHERE uniqueid = ANY($1::text[]) GROUP BY uniqueid "
        "HAVING max(eventtime) FILTER (WHERE eventtype = 'CHAN_END') IS NOT NULL", uniqueids)
    return {r["uniqueid"]: ChannelTimes(_utc(r["started_at"]), _utc(r["answered_at"]),
                                        r["ended_at"].replace(tzinfo=dt.UTC)) for r in rows}


@_translated
async def answered_at(db: Any, uniqueid: str) -> dt.datetime | None:
    """When Asterisk answered this channel (None: not answered, or no events recorded)."""
    return _utc(await db.fetchval("SELECT min(eventtime) FROM cel WHERE uniqueid = $1 AND eventtype = 'ANSWER'",
                                  uniqueid))
