-- The engines' in-memory copy of the conference lockout's failures (issue 17, callctl/store/lockout.py):
-- every wrong code recorded, whoever records it (conference_code_attempt on any node, the attempts an
-- engine kept while PostgreSQL was unreachable, psql), notifies channel 'callctl_conference_failure' at
-- commit with its id, caller, access number and time (epoch seconds). Deleting or truncating attempts
-- notifies '*' (engines read the window again). An engine that cannot hear these notifications reads
-- PostgreSQL for every lockout check, as before.
CREATE OR REPLACE FUNCTION callctl_conference_failure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.reason = 'wrong_code' THEN
            PERFORM pg_notify('callctl_conference_failure',
                              json_build_array(NEW.id, NEW.caller, NEW.access_number,
                                               extract(epoch FROM NEW.at))::text);
        END IF;
        RETURN NULL;
    END IF;
    PERFORM pg_notify('callctl_conference_failure', '*');
    RETURN NULL;
END $$;

CREATE TRIGGER conference_failure_added AFTER INSERT ON conference_attempt
    FOR EACH ROW EXECUTE FUNCTION callctl_conference_failure();
CREATE TRIGGER conference_failure_removed AFTER UPDATE OR DELETE OR TRUNCATE ON conference_attempt
    FOR EACH STATEMENT EXECUTE FUNCTION callctl_conference_failure();
