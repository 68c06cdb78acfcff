-- Money-losing gaps (docs/billing.md, docs/gating.md).
-- The channel a credit hold belongs to (the call's first channel: the SIP user's phone, or the channel
-- the engine originated), so the start-up sweep can tell a call still up from one that ended while no
-- engine was connected, and read what it really talked from Asterisk's channel events (cel).
ALTER TABLE credit_reservation ADD COLUMN IF NOT EXISTS channel_id text;
-- ... and the Asterisk that channel lives on (its entity id), so an engine never takes another node's
-- call for one that ended (several Asterisk nodes may share one database).
ALTER TABLE credit_reservation ADD COLUMN IF NOT EXISTS asterisk_id text;

-- Emergency calls Asterisk decided alone get CDRs too: the calling channel's uniqueid (written by
-- extensions.conf, to find its channel events) and when their CDRs were handed to the CDR writer.
ALTER TABLE asterisk_emergency_call ADD COLUMN IF NOT EXISTS uniqueid text;
ALTER TABLE asterisk_emergency_call ADD COLUMN IF NOT EXISTS cdr_at timestamptz;
CREATE INDEX IF NOT EXISTS asterisk_emergency_call_no_cdr ON asterisk_emergency_call (id) WHERE cdr_at IS NULL;
