-- Commands to a conference room wherever it lives in the cluster (issue 18, docs/scaling.md "The Online
-- Space and commands across nodes"). A node that does not hold the room (the Online Space page of a person
-- whose request reached it, or `callctl conference record`) writes a command row addressed to the room's
-- owner (the conference_owner lease holder at that moment) and NOTIFYs it; the owner claims the row
-- (taken_at, one statement: claimed once, never applied twice), applies it in its room and writes the
-- result. A command nobody claimed before expires_at is answered 'owner_unreachable' by its sender in the
-- same kind of statement, so a late owner never applies it.
CREATE TABLE IF NOT EXISTS conference_command (
    id            bigserial PRIMARY KEY,
    conference_id uuid NOT NULL REFERENCES conference (id) ON DELETE CASCADE,
    node          text NOT NULL,  -- the owner it is addressed to
    source        text NOT NULL CHECK (source IN ('space', 'cli')),
    kind          text NOT NULL,
    by_person     text,
    role          text,
    target        text,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,  -- to be claimed before then, or never
    taken_at      timestamptz,
    done_at       timestamptz,
    result        text
);
CREATE INDEX IF NOT EXISTS conference_command_pending ON conference_command (node) WHERE taken_at IS NULL;
CREATE INDEX IF NOT EXISTS conference_command_requested ON conference_command (requested_at);

-- What the owner's room looks like (members, mute, lock, recording) for the Online Space pages served
-- by other nodes: written by the owner at each change of its room, shown only while its lease runs.
CREATE TABLE IF NOT EXISTS conference_live (
    conference_id uuid PRIMARY KEY REFERENCES conference (id) ON DELETE CASCADE,
    node          text NOT NULL,
    seq           bigint NOT NULL,  -- the owner's change counter: an older write never replaces a newer one
    view          jsonb NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
