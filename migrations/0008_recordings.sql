-- Recordings (BRIEF sections 1 and 2, issue 7): conference recordings on the organizer's request,
-- automatic recordings of business-line calls; the notice each party heard, objections, legal
-- holds, the purge audit, and requests from the command line to the running engine.
-- No foreign keys to conference/account: a recording's retention and its audit outlive both.

CREATE TABLE IF NOT EXISTS recording (
    id              uuid        PRIMARY KEY,
    source          text        NOT NULL CHECK (source IN ('conference', 'call')),
    conference_id   uuid,
    call_id         uuid,
    account_id      uuid,
    asterisk_name   text        NOT NULL UNIQUE,
    bridge_id       text        NOT NULL,
    format          text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('recording', 'stored', 'discarded', 'failed')),
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    duration_ms     bigint      CHECK (duration_ms >= 0),
    size_bytes      bigint      CHECK (size_bytes >= 0),
    sha256          text        CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    location        text,
    retention_class text        NOT NULL CHECK (retention_class IN ('conference', 'call')),
    legal_hold      boolean     NOT NULL DEFAULT false,
    hold_reason     text,
    error           text,
    CHECK ((source = 'conference') = (conference_id IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS recording_conference ON recording (conference_id);
CREATE INDEX IF NOT EXISTS recording_account ON recording (account_id);

-- Who heard the recording notice (prompt, language, when), and who objected.
CREATE TABLE IF NOT EXISTS recording_notice (
    id           bigserial   PRIMARY KEY,
    recording_id uuid        NOT NULL REFERENCES recording (id) ON DELETE CASCADE,
    party        text        NOT NULL,
    leg_id       text,
    prompt       text        NOT NULL,
    language     text        NOT NULL,
    heard_at     timestamptz NOT NULL,
    objected_at  timestamptz,
    objection_key text
);
CREATE INDEX IF NOT EXISTS recording_notice_recording ON recording_notice (recording_id);

-- Append-only proof of deletion: what was deleted, when, by which rule (no foreign key: it
-- outlives the row it describes).
CREATE TABLE IF NOT EXISTS recording_audit (
    id           bigserial   PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    recording_id uuid        NOT NULL,
    action       text        NOT NULL,
    rule         text        NOT NULL,
    detail       jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS recording_audit_recording ON recording_audit (recording_id);

-- `callctl conference record ID --start|--stop` asks the running engine (the room's owner).
CREATE TABLE IF NOT EXISTS recording_request (
    id            bigserial   PRIMARY KEY,
    conference_id uuid        NOT NULL,
    action        text        NOT NULL CHECK (action IN ('start', 'stop')),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    done_at       timestamptz,
    result        text
);
CREATE INDEX IF NOT EXISTS recording_request_pending ON recording_request (requested_at) WHERE done_at IS NULL;
