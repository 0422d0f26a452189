-- Credentials changes are audited like the rest (the secret itself never is:
-- it lives in internal.connection_secrets, which has no audit trigger).
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON api.connections
    FOR EACH ROW EXECUTE FUNCTION internal.audit('connection');
