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
SELECT internal.ensure_monthly_partitions('api.audit_logs'::regclass);
SELECT flowtrack.enable_tenant_isolation('api.audit_logs'::regclass, ARRAY['owner'], ARRAY['owner', 'admin']);
GRANT SELECT ON api.audit_logs TO authenticated;

-- TG_ARGV[0]: entity type; TG_ARGV[1..]: columns never copied into the log
-- (hashes, secrets). Changes to bookkeeping columns alone are not logged.
CREATE FUNCTION internal.audit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, api, internal, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    hidden text[] := TG_ARGV[1:];
    noise constant text[] := ARRAY['updated_at', 'last_used_at', 'total_executions', 'last_executed_at'];
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) - hidden END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) - hidden END;
    row_data jsonb := coalesce(new_row, old_row);
    ws uuid := coalesce((row_data ->> 'workspace_id')::uuid, CASE WHEN TG_ARGV[0] = 'workspace' THEN (row_data ->> 'id')::uuid END);
    headers json := nullif(current_setting('request.headers', true), '')::json;
    ip text := trim(split_part(headers ->> 'x-forwarded-for', ',', 1));
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
            CASE WHEN ip ~ '^[0-9a-fA-F:.]+$' THEN ip::inet END,
            left(headers ->> 'user-agent', 500), nullif(current_setting('request.path', true), ''));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.audit() IS
  'AFTER row trigger writing audit_logs: TG_ARGV[0] names the entity, further arguments name columns to leave out of before/after.';

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

RESET ROLE;
SELECT cron.schedule('flowtrack-partitions', '17 3 * * *',
    $$SELECT internal.ensure_monthly_partitions(p::regclass)
        FROM unnest(ARRAY['api.usage_events', 'api.execution_logs', 'api.lead_events',
                          'api.webhook_deliveries', 'api.audit_logs']) AS p$$);
