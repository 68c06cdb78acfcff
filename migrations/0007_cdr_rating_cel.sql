-- Rating results on the CDR (BRIEF section 4): what the engine charged for a leg when it ended, so a
-- statement reads the charge instead of re-rating it, and a pseudonymised leg (privacy erase) keeps
-- what billing needs. NULL on legs nobody rated at call end (statements rate those from the deck).
-- ALTER on the partitioned table reaches every partition, present and future.
ALTER TABLE cdr ADD COLUMN IF NOT EXISTS rating_deck     text;
ALTER TABLE cdr ADD COLUMN IF NOT EXISTS rating_prefix   text;
ALTER TABLE cdr ADD COLUMN IF NOT EXISTS rate_per_minute numeric;
ALTER TABLE cdr ADD COLUMN IF NOT EXISTS cost            numeric(16, 4);
ALTER TABLE cdr ADD COLUMN IF NOT EXISTS currency        text;
ALTER TABLE cdr ADD COLUMN IF NOT EXISTS included        boolean;

-- Asterisk's own channel events (cel_pgsql, asterisk-conf/cel.conf), for `callctl cdr reconcile`:
-- every PJSIP channel Asterisk ended should have a CDR. Column names are the ones cel_pgsql fills;
-- eventtime is written in UTC (usegmtime). Kept 35 days (`callctl cdr retention`): it holds numbers.
CREATE TABLE IF NOT EXISTS cel (
    id          bigserial PRIMARY KEY,
    eventtype   text      NOT NULL,
    eventtime   timestamp NOT NULL,
    cid_name    text,
    cid_num     text,
    cid_ani     text,
    cid_rdnis   text,
    cid_dnid    text,
    exten       text,
    context     text,
    channame    text,
    appname     text,
    appdata     text,
    amaflags    integer,
    accountcode text,
    uniqueid    text,
    linkedid    text,
    peer        text,
    userdeftype text,
    extra       text
);
CREATE INDEX IF NOT EXISTS cel_time ON cel (eventtime);
CREATE INDEX IF NOT EXISTS cel_uniqueid ON cel (uniqueid);
