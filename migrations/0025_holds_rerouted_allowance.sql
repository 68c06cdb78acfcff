-- Credit holds across engines and nodes (issue 18, docs/billing.md "Holds"):
--
-- A call an engine restart routes again (its first attempt was still ringing) finds the dead engine's
-- open hold on the same caller channel and settles it before taking its own: looked up by channel.
CREATE INDEX IF NOT EXISTS credit_reservation_open_channel ON credit_reservation (channel_id)
    WHERE settled_at IS NULL;

-- Trial allowances (the plan's included seconds per user) are held per call like prepaid credit, in the
-- same table and by the same sweep: a hold of ``kind`` 'allowance' holds seconds of ``user_id``'s
-- allowance (amount 0, no money moves), taken under the user's row lock so that parallel calls of one
-- user, on one node or several, never get more than is left between them.
ALTER TABLE credit_reservation ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'credit'
    CHECK (kind IN ('credit', 'allowance'));
ALTER TABLE credit_reservation ADD COLUMN IF NOT EXISTS user_id uuid;
CREATE INDEX IF NOT EXISTS credit_reservation_allowance ON credit_reservation (user_id, created_at)
    WHERE kind = 'allowance';
