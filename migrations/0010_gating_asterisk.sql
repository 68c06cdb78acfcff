-- Emergency calls Asterisk decided alone while the engine was unavailable (docs/gating.md): written by
-- extensions.conf through realtime (REALTIME_STORE, extconfig.conf family callctl_emergency); the
-- engine copies them into gating_decision each time it (re)connects to Asterisk and marks them
-- imported. Text columns: Asterisk writes strings, a bad value must never lose the row.
CREATE TABLE IF NOT EXISTS asterisk_emergency_call (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    account_id  text,
    endpoint    text,
    caller      text,
    callee      text,
    decision    text,
    rule        text,
    imported_at timestamptz
);
CREATE INDEX IF NOT EXISTS asterisk_emergency_call_pending ON asterisk_emergency_call (id) WHERE imported_at IS NULL;
