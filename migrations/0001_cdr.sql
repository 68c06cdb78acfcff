-- Call detail records (BRIEF section 4): one row per call leg, the proof of use, kept 12 months.
-- Partitioned by month of started_at (UTC) so a month is dropped in one statement; a DEFAULT
-- partition catches any month not created yet, so an insert never fails for want of a partition.
-- Idempotence: leg_id is deterministic and started_at is fixed for a leg, so a replayed record
-- hits the primary key and INSERT .. ON CONFLICT DO NOTHING skips it.

CREATE TABLE cdr (
    leg_id           uuid        NOT NULL,
    call_id          uuid        NOT NULL,
    direction        text        NOT NULL,
    from_number      text        NOT NULL,
    to_number        text        NOT NULL,
    started_at       timestamptz NOT NULL,
    answered_at      timestamptz,
    ended_at         timestamptz NOT NULL,
    billed_s         integer     NOT NULL,
    disposition      text        NOT NULL,
    hangup_cause     integer,
    hangup_reason    text        NOT NULL,
    channel_id       text        NOT NULL,
    account_id       text,
    user_id          text,
    flow             text,
    dialplan_version text,
    conference_id    text,
    person           text,
    role             text,
    extra            jsonb       NOT NULL DEFAULT '{}',
    written_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (leg_id, started_at)
) PARTITION BY RANGE (started_at);

CREATE TABLE cdr_default PARTITION OF cdr DEFAULT;

CREATE INDEX cdr_call ON cdr (call_id);
CREATE INDEX cdr_account_started ON cdr (account_id, started_at) WHERE account_id IS NOT NULL;
CREATE INDEX cdr_conference ON cdr (conference_id) WHERE conference_id IS NOT NULL;

-- The partition for the UTC month containing `at`, created if missing. Rows of that month that
-- already landed in the DEFAULT partition are moved into it in the same transaction (ATTACH would
-- refuse otherwise). Inserts into cdr wait while it runs; two callers are serialised.
CREATE FUNCTION cdr_ensure_partition(at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    lo   timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi   timestamptz := (date_trunc('month', at AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
    part text        := 'cdr_' || to_char(at AT TIME ZONE 'UTC', 'YYYY"m"MM');
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    LOCK TABLE cdr IN SHARE ROW EXCLUSIVE MODE;
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE cdr INCLUDING DEFAULTS)', part);
    EXECUTE format('WITH moved AS (DELETE FROM cdr_default WHERE started_at >= %L AND started_at < %L RETURNING *) '
                   'INSERT INTO %I SELECT * FROM moved', lo, hi, part);
    EXECUTE format('ALTER TABLE cdr ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    RETURN part;
END
$$;

SELECT cdr_ensure_partition(now());
SELECT cdr_ensure_partition(now() + interval '1 month');
