-- Personal data (BRIEF section 6): the pseudonymisation secret, account suspensions (deleted one
-- month after suspension) and the audit trail of every export, erasure and purge.
-- The audit never holds an erased identifier in clear: only its pseudonym.

-- One row: the per-installation HMAC key behind every 'pseudo:' value. Losing it only means new
-- pseudonyms no longer match old ones; it never allows reversing a pseudonym.
CREATE TABLE IF NOT EXISTS privacy_secret (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    secret     bytea       NOT NULL CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- No foreign key to account: the suspension (and its purge date) outlives the purged account data.
CREATE TABLE IF NOT EXISTS account_suspension (
    account_id   uuid        PRIMARY KEY,
    suspended_at timestamptz NOT NULL,
    resumed_at   timestamptz,
    purged_at    timestamptz
);
CREATE INDEX IF NOT EXISTS account_suspension_due ON account_suspension (suspended_at)
    WHERE resumed_at IS NULL AND purged_at IS NULL;

CREATE TABLE IF NOT EXISTS privacy_audit (
    id      bigserial   PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    command text        NOT NULL,
    rule    text        NOT NULL,
    subject text        NOT NULL,
    dry_run boolean     NOT NULL,
    counts  jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS privacy_audit_at ON privacy_audit (at);
