-- Invalidation of the engines' caches of per-account facts (issue 17, callctl/store/facts.py): every
-- change to a fact the FastAGI gate reads on each call (the account's country, its dialer profile, its
-- destination permissions, its suspension) notifies channel 'callctl_account_facts' with the account id,
-- at commit, whoever wrote it (the CLI, an engine, psql). TRUNCATE notifies '*' (forget every account).
-- An engine that cannot hear these notifications stops serving from its cache (reads PostgreSQL).

-- The trigger's argument names the column holding the account id ('id' in account, else 'account_id').
CREATE OR REPLACE FUNCTION callctl_account_facts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('callctl_account_facts', '*');
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('callctl_account_facts', to_jsonb(OLD) ->> TG_ARGV[0]);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('callctl_account_facts', to_jsonb(NEW) ->> TG_ARGV[0]);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER account_facts_changed AFTER INSERT OR UPDATE OR DELETE ON account
    FOR EACH ROW EXECUTE FUNCTION callctl_account_facts_changed('id');
CREATE TRIGGER account_facts_truncated AFTER TRUNCATE ON account
    FOR EACH STATEMENT EXECUTE FUNCTION callctl_account_facts_changed('id');

CREATE TRIGGER account_facts_changed AFTER INSERT OR UPDATE OR DELETE ON account_dialer
    FOR EACH ROW EXECUTE FUNCTION callctl_account_facts_changed('account_id');
CREATE TRIGGER account_facts_truncated AFTER TRUNCATE ON account_dialer
    FOR EACH STATEMENT EXECUTE FUNCTION callctl_account_facts_changed('account_id');

CREATE TRIGGER account_facts_changed AFTER INSERT OR UPDATE OR DELETE ON fraud_permission
    FOR EACH ROW EXECUTE FUNCTION callctl_account_facts_changed('account_id');
CREATE TRIGGER account_facts_truncated AFTER TRUNCATE ON fraud_permission
    FOR EACH STATEMENT EXECUTE FUNCTION callctl_account_facts_changed('account_id');

CREATE TRIGGER account_facts_changed AFTER INSERT OR UPDATE OR DELETE ON fraud_hold
    FOR EACH ROW EXECUTE FUNCTION callctl_account_facts_changed('account_id');
CREATE TRIGGER account_facts_truncated AFTER TRUNCATE ON fraud_hold
    FOR EACH STATEMENT EXECUTE FUNCTION callctl_account_facts_changed('account_id');
