-- Conference affinity across nodes (issue 18, docs/conferences.md "Several nodes"): which node's
-- engine holds a conference's room (its mixing bridge), under a lease. The owner renews it while the
-- room is open; another node takes the room over once expires_at has passed (owner engine or node
-- dead). Deleted by the owner when its room closes, and with its conference.
CREATE TABLE IF NOT EXISTS conference_owner (
    conference_id uuid PRIMARY KEY REFERENCES conference (id) ON DELETE CASCADE,
    node          text NOT NULL CHECK (node <> ''),
    taken_at      timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
