-- Money-losing gaps (docs/billing.md, docs/gating.md).
-- The channel a credit hold belongs to (the call's first channel: the SIP user's phone, or the channel
-- the engine originated), so the start-up sweep can tell a call still up from one that ended while no
-- engine was connected, and read what it really talked from Asterisk's channel events (cel).
ALTER TABLE credit_reservation ADD COLUMN IF NOT EXISTS channel_id text;
