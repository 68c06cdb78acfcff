-- The deck's premium flag (docs/billing.md): a premium-rate number is never included in a plan,
-- whatever the zone of its row. Rows imported before this column get the flag the tariff implied
-- (not billed per second: a per-call charge or 60 s increments), which is what rating used then.
ALTER TABLE rate ADD COLUMN IF NOT EXISTS premium boolean NOT NULL DEFAULT false;
UPDATE rate SET premium = true WHERE NOT premium AND (per_call > 0 OR increment_s >= 60);
