-- Audit log: who changed what, with the row before and after, written by
-- triggers so no code path can forget it. Partitioned monthly.
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

CREATE TABLE api.audit_logs (
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    workspace_id  uuid NOT NULL,
    actor_user_id uuid,
    actor_type    text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'system')),
    api_key_id    uuid,
    action        text NOT NULL,
    entity_type   text NOT NULL,
    entity_id     uuid,
    before        jsonb,
    after         jsonb,
    ip_address    inet,
    user_agent    text,
    request_path  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX audit_logs_workspace ON api.audit_logs (workspace_id, created_at DESC);
CREATE INDEX audit_logs_entity ON api.audit_logs (workspace_id, entity_type, entity_id);
COMMENT ON TABLE api.audit_logs IS
  'Append-only trail of changes to workflows, members, API keys, credentials, workspaces and billing: actor, action, before/after. Partitioned monthly; owners and admins read it.';
COMMENT ON COLUMN api.audit_logs.ip_address IS
  'The client''s address as internal.client_ip() reads it: NULL unless the request came through a proxy listed in internal.trusted_proxies.';
-- Audit: one year (seed 001).
SELECT internal.manage_partitions('api.audit_logs', 'monthly', premake => 4, retention => interval '1 year');
SELECT flowtrack.enable_tenant_isolation('api.audit_logs'::regclass, ARRAY['owner'], ARRAY['owner', 'admin']);
GRANT SELECT ON api.audit_logs TO authenticated;

-- The client address. PostgREST hands the database the request's headers,
-- not the address of the HTTP peer, and X-Forwarded-For is whatever the
-- client wrote, plus one entry per proxy that forwarded the request. An
-- entry can be believed only if a proxy we run wrote it: each proxy appends
-- the address it received the request from, so reading from the right, the
-- entries of our own proxies are skipped and the first address that is not
-- one of them is the client. With no proxy configured (the default, and
-- ./dev, where PostgREST listens directly) nothing in the header is trusted
-- and no address is recorded.
CREATE TABLE internal.trusted_proxies (
    network     cidr PRIMARY KEY,
    description text NOT NULL CHECK (length(description) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE internal.trusted_proxies IS
  'Networks of the reverse proxies in front of PostgREST whose X-Forwarded-For entries are believed (operators insert rows; empty: the header is ignored). Configure only when PostgREST is reachable through these proxies alone.';

CREATE FUNCTION internal.inet_or_null(address text) RETURNS inet
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN address::inet;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.inet_or_null(text) IS
  'address as inet, or NULL when it is not one (a header value must not make an audited write fail).';

CREATE FUNCTION internal.client_ip() RETURNS inet
LANGUAGE plpgsql STABLE AS $$
DECLARE
    hops text[] := string_to_array(nullif(current_setting('request.headers', true), '')::json ->> 'x-forwarded-for', ',');
    hop inet;
BEGIN
    IF hops IS NULL OR NOT EXISTS (SELECT 1 FROM internal.trusted_proxies) THEN
        RETURN NULL;
    END IF;
    FOR i IN REVERSE cardinality(hops)..1 LOOP
        hop := internal.inet_or_null(trim(hops[i]));
        IF hop IS NULL THEN
            RETURN NULL;  -- unreadable: nothing to the left of it can be placed
        END IF;
        IF NOT EXISTS (SELECT 1 FROM internal.trusted_proxies p WHERE hop <<= p.network) THEN
            RETURN hop;
        END IF;
    END LOOP;
    RETURN hop;  -- every entry is one of our proxies: the request came from inside
END
$$;
COMMENT ON FUNCTION internal.client_ip() IS
  'The request''s client address: the right-most X-Forwarded-For entry not in internal.trusted_proxies, or NULL when no proxy is configured or the header is missing or unreadable.';

-- TG_ARGV[0]: entity type; TG_ARGV[1..]: columns never copied into the log
-- (hashes, secrets). Changes to bookkeeping columns alone are not logged.
CREATE FUNCTION internal.audit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    hidden text[] := TG_ARGV[1:];
    noise constant text[] := ARRAY['updated_at', 'last_used_at', 'total_executions', 'last_executed_at'];
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) - hidden END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) - hidden END;
    row_data jsonb := coalesce(new_row, old_row);
    ws uuid := coalesce((row_data ->> 'workspace_id')::uuid, CASE WHEN TG_ARGV[0] = 'workspace' THEN (row_data ->> 'id')::uuid END);
    headers json := nullif(current_setting('request.headers', true), '')::json;
BEGIN
    IF TG_OP = 'UPDATE' AND old_row - noise = new_row - noise THEN
        RETURN NULL;
    END IF;
    PERFORM flowtrack.act_for(ws, 'owner');
    INSERT INTO api.audit_logs (workspace_id, actor_user_id, actor_type, api_key_id, action, entity_type, entity_id,
                                before, after, ip_address, user_agent, request_path)
    VALUES (ws, flowtrack.current_user_id(),
            CASE WHEN flowtrack.jwt_claim('api_key_id') IS NOT NULL THEN 'api_key'
                 WHEN flowtrack.current_user_id() IS NOT NULL THEN 'user' ELSE 'system' END,
            nullif(flowtrack.jwt_claim('api_key_id'), '')::uuid,
            TG_ARGV[0] || '.' || CASE TG_OP WHEN 'INSERT' THEN 'created' WHEN 'UPDATE' THEN 'updated' ELSE 'deleted' END,
            TG_ARGV[0], (row_data ->> 'id')::uuid, old_row, new_row,
            internal.client_ip(),
            left(headers ->> 'user-agent', 500), nullif(current_setting('request.path', true), ''));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.audit() IS
  'AFTER row trigger writing audit_logs: TG_ARGV[0] names the entity, further arguments name columns to leave out of before/after. The client address is internal.client_ip().';

CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON api.workflows
    FOR EACH ROW EXECUTE FUNCTION internal.audit('workflow');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON api.workspace_members
    FOR EACH ROW EXECUTE FUNCTION internal.audit('member');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON api.api_keys
    FOR EACH ROW EXECUTE FUNCTION internal.audit('api_key', 'key_hash');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON api.subscriptions
    FOR EACH ROW EXECUTE FUNCTION internal.audit('subscription');
CREATE TRIGGER audit AFTER UPDATE ON api.workspaces
    FOR EACH ROW EXECUTE FUNCTION internal.audit('workspace');
