-- recording_request retired (branch wt-listen): `callctl conference record` has written conference_command
-- rows since 0026 (the room's owner claims and answers them, docs/recording.md), and nothing writes this
-- table any more; the engines stopped reading it with this change. An engine of an older release still
-- running during an upgrade logs `recording_requests_store_lost` once and keeps serving calls (its loop
-- only read this table). Re-runnable: IF EXISTS (its index goes with it).
DROP TABLE IF EXISTS recording_request;
