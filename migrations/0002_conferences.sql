-- Dial-in conferences (BRIEF section 1): bookings, personal access codes, rejected attempts
-- (brute-force lockout and audit) and the participant timeline.
-- A booking keeps only subject, times and invitees' addresses: never the invitation itself.

CREATE TABLE IF NOT EXISTS conference (
    id                      uuid PRIMARY KEY,
    subject                 text NOT NULL,
    starts_at               timestamptz NOT NULL,
    ends_at                 timestamptz NOT NULL CHECK (ends_at > starts_at),
    organizer_email         text NOT NULL,
    ics_uid                 text UNIQUE,
    access_numbers          text[] NOT NULL,
    language                text NOT NULL DEFAULT 'en',
    max_members             integer NOT NULL DEFAULT 50 CHECK (max_members > 0),
    organizer_leave_policy  text NOT NULL DEFAULT 'end' CHECK (organizer_leave_policy IN ('end', 'continue')),
    organizer_leave_grace_s integer NOT NULL DEFAULT 60 CHECK (organizer_leave_grace_s >= 0),
    lead_s                  integer NOT NULL DEFAULT 900,
    grace_s                 integer NOT NULL DEFAULT 1800,
    started_at              timestamptz,
    ended_at                timestamptz,
    cancelled_at            timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS conference_code (
    code          text NOT NULL CHECK (code ~ '^[0-9]{4,16}$'),
    conference_id uuid NOT NULL REFERENCES conference (id) ON DELETE CASCADE,
    email         text NOT NULL,
    role          text NOT NULL CHECK (role IN ('organizer', 'participant')),
    issued_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
-- One live code per person and conference; a code string is never live twice at once.
CREATE UNIQUE INDEX IF NOT EXISTS conference_code_person_live
    ON conference_code (conference_id, email) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS conference_code_live ON conference_code (code) WHERE revoked_at IS NULL;

CREATE TABLE IF NOT EXISTS conference_attempt (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    caller        text NOT NULL,
    access_number text NOT NULL,
    reason        text NOT NULL,
    conference_id uuid
);
CREATE INDEX IF NOT EXISTS conference_attempt_caller ON conference_attempt (caller, at);
CREATE INDEX IF NOT EXISTS conference_attempt_number ON conference_attempt (access_number, at);

CREATE TABLE IF NOT EXISTS conference_event (
    id            bigserial PRIMARY KEY,
    conference_id uuid NOT NULL REFERENCES conference (id) ON DELETE CASCADE,
    person        text NOT NULL,
    role          text NOT NULL,
    what          text NOT NULL CHECK (what IN ('join', 'leave')),
    at            timestamptz NOT NULL,
    reason        text,
    leg_id        uuid
);
CREATE INDEX IF NOT EXISTS conference_event_conf ON conference_event (conference_id, at);
