-- Voicemail (issue 23): a message is a recording like the others (source and retention class
-- 'voicemail': same files, sha256, legal hold, purge audit, privacy erase), plus the facts of the
-- message: its box, who left it for which number, and its delivery by e-mail to the box's owner.
ALTER TABLE recording DROP CONSTRAINT IF EXISTS recording_source_check;
ALTER TABLE recording ADD CONSTRAINT recording_source_check
    CHECK (source IN ('conference', 'call', 'voicemail'));
ALTER TABLE recording DROP CONSTRAINT IF EXISTS recording_retention_class_check;
ALTER TABLE recording ADD CONSTRAINT recording_retention_class_check
    CHECK (retention_class IN ('conference', 'call', 'voicemail'));

CREATE TABLE voicemail_message (
    recording_id uuid PRIMARY KEY REFERENCES recording (id) ON DELETE CASCADE,
    box          text NOT NULL CHECK (box ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    caller       text NOT NULL,
    called       text NOT NULL,
    email_to     text,
    emailed_at   timestamptz,
    email_error  text
);
CREATE INDEX voicemail_message_box ON voicemail_message (box);
