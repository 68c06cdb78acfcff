-- Day/night switches of the dialplan (issue 23): the current state of each switch an operator has
-- flipped (`callctl dialplan switch NAME on|off`), and every flip with who and when. A switch never
-- flipped has no row: the dialplan's `default` applies.
CREATE TABLE dialplan_switches (
    name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    is_on      boolean NOT NULL,
    changed_by text NOT NULL CHECK (length(changed_by) BETWEEN 1 AND 200),
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dialplan_switch_log (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    is_on      boolean NOT NULL,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    reason     text CHECK (reason IS NULL OR length(reason) <= 500)
);
CREATE INDEX dialplan_switch_log_name ON dialplan_switch_log (name, changed_at);
