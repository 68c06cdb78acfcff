-- Rules that hold across nodes (issue 18, docs/lines.md, docs/scaling.md "What survives a node"):
-- engines' heartbeats, SIP users' channel slots counted over all nodes, and the open-calls journal
-- kept in PostgreSQL rather than on one engine's disk.

-- One row per engine (its node: Settings.node). An engine renews heartbeat_at every few seconds;
-- rows of a node whose heartbeat is older than the lease are another node's to clean up.
CREATE TABLE engine_node (
    node_id      text        PRIMARY KEY CHECK (node_id <> ''),
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- A SIP user's calls in progress, on any node: one row per call (its first channel on its node's
-- Asterisk), taken by take_line_slot under the user's row lock, deleted when the call ends.
CREATE TABLE line_channel_slot (
    node_id    text        NOT NULL,
    channel_id text        NOT NULL,
    user_id    uuid        NOT NULL REFERENCES sip_user (id) ON DELETE CASCADE,
    taken_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, channel_id)
);
CREATE INDEX line_channel_slot_user ON line_channel_slot (user_id);

-- Take one of the user's p_limit slots for channel p_channel on node p_node; true when taken (or
-- already held by that channel: a resumed call takes its slot again). One statement for the caller,
-- serialised per user by the row lock on sip_user: each statement below runs after the lock with a
-- fresh snapshot (plpgsql, READ COMMITTED), so it sees the slot a concurrent take just committed --
-- which a single SQL statement (CTE ... FOR UPDATE, then count) would not. Slots of nodes whose
-- engine has not renewed its heartbeat for p_lease_s seconds are freed first; the taking node's own
-- heartbeat is renewed (a take is a sign of life).
CREATE FUNCTION take_line_slot(p_user uuid, p_node text, p_channel text, p_limit integer, p_lease_s double precision)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM sip_user WHERE id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO engine_node (node_id) VALUES (p_node)
        ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now();
    IF EXISTS (SELECT 1 FROM line_channel_slot WHERE node_id = p_node AND channel_id = p_channel) THEN
        RETURN true;
    END IF;
    DELETE FROM line_channel_slot s
     WHERE s.user_id = p_user
       AND NOT EXISTS (SELECT 1 FROM engine_node n
                        WHERE n.node_id = s.node_id
                          AND n.heartbeat_at > clock_timestamp() - make_interval(secs => p_lease_s));
    IF (SELECT count(*) FROM line_channel_slot WHERE user_id = p_user) >= p_limit THEN
        RETURN false;
    END IF;
    INSERT INTO line_channel_slot (node_id, channel_id, user_id) VALUES (p_node, p_channel, p_user);
    RETURN true;
END
$$;

-- Conference code lockout (docs/conferences.md): a wrong code is recorded and the failures of the
-- window counted under transaction advisory locks on the caller and on the access number, so two
-- wrong codes keyed at the same instant (on one node or two) see each other: the second counts both.
-- Always caller first, then number: no two attempts wait for each other in a cycle.
CREATE FUNCTION conference_code_attempt(p_caller text, p_number text, p_window_s double precision, p_wrong boolean,
                                        OUT by_caller bigint, OUT by_number bigint)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_wrong THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('conference-attempt-caller|' || p_caller, 18));
        PERFORM pg_advisory_xact_lock(hashtextextended('conference-attempt-number|' || p_number, 18));
        INSERT INTO conference_attempt (caller, access_number, reason) VALUES (p_caller, p_number, 'wrong_code');
    END IF;
    SELECT count(*) FILTER (WHERE caller = p_caller), count(*) FILTER (WHERE access_number = p_number)
      INTO by_caller, by_number
      FROM conference_attempt
     WHERE at > now() - make_interval(secs => p_window_s)
       AND (caller = p_caller OR access_number = p_number) AND reason IN ('wrong_code');
END
$$;

-- The open-calls journal's copy in PostgreSQL (callctl/cdr/journal.py, docs/scaling.md "What survives a
-- node"): a row per call an engine took, written shortly after the call starts (answer time and dialled
-- legs added), marked closed when its CDR is handed to the writer and deleted once that CDR is in the cdr
-- table. A row left by an engine whose disk was lost, or by a node gone for good, lets another engine
-- (or the next one) still write the call's CDR, marked incomplete.
CREATE TABLE open_call (
    leg_id     uuid        PRIMARY KEY,   -- the call's own leg (its call id)
    node_id    text        NOT NULL,
    started_at timestamptz NOT NULL,      -- with leg_id, the cdr table's key
    entry      jsonb       NOT NULL,      -- what the journal knows: channel, caller, called, answered_at, dialled
    closed_at  timestamptz,               -- its CDR was handed to the writer at this time
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX open_call_node ON open_call (node_id);
