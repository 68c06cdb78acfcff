-- The conference Online Space (issue 19, docs/conferences.md): personal links, browser sessions,
-- chat messages and shared documents. Everything belongs to its conference (ON DELETE CASCADE):
-- it is kept and erased with it (docs/privacy.md). Tokens are stored only as SHA-256 hashes.

CREATE TABLE IF NOT EXISTS conference_link (
    token_hash     bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    conference_id  uuid NOT NULL REFERENCES conference (id) ON DELETE CASCADE,
    email          text NOT NULL,
    role           text NOT NULL CHECK (role IN ('organizer', 'participant')),
    issued_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    last_opened_at timestamptz
);
-- One live link per person and conference.
CREATE UNIQUE INDEX IF NOT EXISTS conference_link_person_live
    ON conference_link (conference_id, email) WHERE revoked_at IS NULL;

CREATE TABLE IF NOT EXISTS conference_space_session (
    id_hash        bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    link_hash      bytea NOT NULL REFERENCES conference_link (token_hash) ON DELETE CASCADE,
    csrf           text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS conference_space_session_link ON conference_space_session (link_hash);

CREATE TABLE IF NOT EXISTS conference_message (
    id            bigserial PRIMARY KEY,
    conference_id uuid NOT NULL REFERENCES conference (id) ON DELETE CASCADE,
    author        text NOT NULL,
    role          text NOT NULL,
    body          text NOT NULL CHECK (length(body) BETWEEN 1 AND 4000),
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS conference_message_conf ON conference_message (conference_id, id);

CREATE TABLE IF NOT EXISTS conference_document (
    id            uuid PRIMARY KEY,
    conference_id uuid NOT NULL REFERENCES conference (id) ON DELETE CASCADE,
    uploaded_by   text NOT NULL,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    media_type    text NOT NULL,
    size          integer NOT NULL CHECK (size > 0),
    sha256        text NOT NULL,
    content       bytea NOT NULL,
    uploaded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS conference_document_conf ON conference_document (conference_id, uploaded_at);
