-- API keys: long-lived credentials for scripts and integrations. Stored as
-- SHA-256 hashes and shown once. A request carrying `X-Api-Key` (and no JWT)
-- arrives as anon; the pre-request hook verifies the key, switches to the
-- authenticated role with the key's workspace, and allows only the paths
-- its scopes cover. The path is only the first gate: embedding crosses
-- tables, so every table's own policies check the scope too (the key_scope_*
-- policies that flowtrack.enable_tenant_isolation installs with the table's
-- resource named below; extension/src/key_scope.rs).
SELECT flowtrack.version();

-- anon may switch to authenticated (the hook does, for a valid key) but
-- inherits none of its privileges.
ALTER ROLE anon NOINHERIT;
GRANT authenticated TO anon;

SET LOCAL ROLE flowtrack_owner;

CREATE TABLE auth.api_key_scopes (
    resource    text PRIMARY KEY,
    tables      text[] NOT NULL,
    rpc_read    text[] NOT NULL DEFAULT '{}',
    rpc_write   text[] NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE auth.api_key_scopes IS
  'What each API-key scope resource covers: tables (GET needs resource:read or :write, other methods resource:write) and RPC paths. Each tenant table names the same resource in its key_scope_* policies (a test keeps the two equal); tables listed nowhere are closed to keys.';
INSERT INTO auth.api_key_scopes (resource, tables, rpc_read, rpc_write) VALUES
    ('workflows',  '{workflows,workflow_nodes,workflow_edges,workflow_versions,workflow_schedules}', '{}',
                   '{activate_workflow,deactivate_workflow,create_workflow_from_template}'),
    ('leads',      '{leads,lead_events}', '{}', '{}'),
    ('executions', '{workflow_executions,execution_steps,execution_logs}', '{}', '{start_execution}'),
    ('forms',      '{forms,form_fields}', '{}', '{}'),
    ('webhooks',   '{webhook_endpoints,webhook_deliveries,webhook_endpoint_events,inbound_webhooks}', '{}', '{}'),
    ('analytics',  '{workspace_daily_stats,usage_quotas,usage_events}', '{check_quota}', '{}'),
    ('templates',  '{workflow_templates}', '{search_templates}', '{}');
GRANT SELECT ON auth.api_key_scopes TO anon, authenticated;

CREATE FUNCTION auth.known_scopes() RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT array_agg(s) FROM auth.api_key_scopes, LATERAL unnest(ARRAY[resource || ':read', resource || ':write']) s
$$;
COMMENT ON FUNCTION auth.known_scopes() IS 'Every valid API-key scope: <resource>:read and <resource>:write.';

CREATE TABLE api.api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES api.workspaces (id) ON DELETE CASCADE,
    created_by   uuid REFERENCES api.users (id) ON DELETE SET NULL,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    scopes       text[] NOT NULL CHECK (cardinality(scopes) > 0),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_workspace_id ON api.api_keys (workspace_id);
CREATE INDEX api_keys_created_by ON api.api_keys (created_by);
COMMENT ON TABLE api.api_keys IS
  'API keys of a workspace. Only the SHA-256 of a key is stored; prefix (the first 12 characters) identifies it in lists.';
COMMENT ON COLUMN api.api_keys.scopes IS 'e.g. {leads:read,leads:write}; see auth.api_key_scopes. Keys never reach billing, members or keys.';

SELECT flowtrack.enable_tenant_isolation('api.api_keys'::regclass, ARRAY['owner'], ARRAY['owner']);
GRANT SELECT (id, workspace_id, created_by, name, prefix, scopes, last_used_at, expires_at, revoked_at, created_at),
      UPDATE (name, revoked_at), DELETE
   ON api.api_keys TO authenticated;

-- Revocation is one-way: PATCH {revoked_at: null} brought a revoked key back
-- to life (issue 9). It also takes effect now, whatever time was sent.
CREATE FUNCTION internal.keep_api_key_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        RAISE EXCEPTION 'revoked_at: API key % was revoked at % and stays revoked', OLD.id, OLD.revoked_at
            USING ERRCODE = 'PT409', HINT = 'Create a new key with /rpc/create_api_key.';
    END IF;
    IF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
        NEW.revoked_at := now();
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.keep_api_key_revoked() IS
  'BEFORE UPDATE OF revoked_at on api.api_keys: a revoked key stays revoked (PT409 on any change), and revocation is stamped with the server''s now().';
CREATE TRIGGER keep_revoked BEFORE UPDATE OF revoked_at ON api.api_keys
    FOR EACH ROW EXECUTE FUNCTION internal.keep_api_key_revoked();

CREATE FUNCTION api.create_api_key(name text, scopes text[], expires_at timestamptz DEFAULT NULL)
RETURNS TABLE (id uuid, key text, prefix text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_workspace(true);
    secret text := 'ft_' || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    bad text;
BEGIN
    IF flowtrack.current_workspace_role() <> 'owner' THEN
        RAISE EXCEPTION 'workspace_role: only the workspace owner manages API keys'
            USING ERRCODE = '42501', HINT = 'Ask the owner to create the key.';
    END IF;
    SELECT s INTO bad FROM unnest(scopes) s WHERE s <> ALL (auth.known_scopes()) LIMIT 1;
    IF bad IS NOT NULL OR cardinality(scopes) IS NULL THEN
        RAISE EXCEPTION 'scopes: unknown scope "%"', coalesce(bad, '(none given)')
            USING ERRCODE = '22023', HINT = 'Known scopes: ' || array_to_string(auth.known_scopes(), ', ');
    END IF;
    IF expires_at IS NOT NULL AND expires_at <= now() THEN
        RAISE EXCEPTION 'expires_at: must be in the future' USING ERRCODE = '22023', HINT = 'Omit it for a key that never expires.';
    END IF;
    INSERT INTO api.api_keys AS k (workspace_id, created_by, name, prefix, key_hash, scopes, expires_at)
    VALUES (ws, flowtrack.current_user_id(), create_api_key.name, left(secret, 12), sha256(convert_to(secret, 'UTF8')),
            create_api_key.scopes, create_api_key.expires_at)
    RETURNING k.id, left(secret, 12) INTO id, prefix;
    key := secret;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION api.create_api_key(text, text[], timestamptz) IS
  'Owner only: creates an API key with the given scopes and returns it. This is the only time the key is shown; only its hash is kept.';
GRANT EXECUTE ON FUNCTION api.create_api_key(text, text[], timestamptz) TO authenticated;

CREATE FUNCTION api.revoke_api_key(key_id uuid)
RETURNS TABLE (id uuid, revoked_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_workspace(true);
BEGIN
    IF flowtrack.current_workspace_role() <> 'owner' THEN
        RAISE EXCEPTION 'workspace_role: only the workspace owner manages API keys'
            USING ERRCODE = '42501', HINT = 'Ask the owner to revoke the key.';
    END IF;
    UPDATE api.api_keys k SET revoked_at = now()
     WHERE k.id = key_id AND k.workspace_id = ws AND k.revoked_at IS NULL;
    RETURN QUERY SELECT k.id, k.revoked_at FROM api.api_keys k WHERE k.id = key_id AND k.workspace_id = ws;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'key_id: no API key % in this workspace', key_id
            USING ERRCODE = 'PT404', HINT = 'List keys with GET /api_keys.';
    END IF;
END
$$;
COMMENT ON FUNCTION api.revoke_api_key(uuid) IS
  'Owner only: revokes an API key of the workspace for good (idempotent; a revoked key never comes back). PT404 for a key outside the workspace.';
GRANT EXECUTE ON FUNCTION api.revoke_api_key(uuid) TO authenticated;

-- Key lookup crosses tenants (the key is all we have), so the resolver owns it.
CREATE FUNCTION auth.api_key_claims(presented text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    SELECT jsonb_build_object(
               'role', 'authenticated',
               'sub', k.created_by,
               'workspace_id', k.workspace_id,
               'workspace_role', CASE WHEN EXISTS (SELECT 1 FROM unnest(k.scopes) s WHERE s LIKE '%:write')
                                      THEN 'member' ELSE 'viewer' END,
               'api_key_id', k.id,
               'scopes', to_jsonb(k.scopes))
      FROM api.api_keys k
     WHERE k.key_hash = sha256(convert_to(presented, 'UTF8'))
       AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
$$;
COMMENT ON FUNCTION auth.api_key_claims(text) IS
  'Claims for a valid, unrevoked, unexpired API key, or NULL. Keys act as member (any write scope) or viewer. Owned by flowtrack_resolver.';

-- Takes the key itself, not its id: with an id, anon could stamp any
-- tenant's key as used (issue 9). Only who holds a key can touch it.
CREATE FUNCTION auth.touch_api_key(presented text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    UPDATE api.api_keys SET last_used_at = now()
     WHERE key_hash = sha256(convert_to(presented, 'UTF8'))
       AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
       AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
$$;
COMMENT ON FUNCTION auth.touch_api_key(text) IS
  'Records that the presented (valid) key was used, at most once a minute to keep reads cheap. Takes the key, so only its holder can touch it. Owned by flowtrack_resolver.';

-- Is `path` with `method` covered by `scopes`? (Write includes read, as in
-- flowtrack.key_scope_allows.)
CREATE FUNCTION auth.scopes_allow(scopes text[], method text, path text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    WITH target AS (
        SELECT CASE WHEN path LIKE '/rpc/%' THEN split_part(path, '/', 3) ELSE split_part(path, '/', 2) END AS name,
               path LIKE '/rpc/%' AS is_rpc)
    SELECT EXISTS (
        SELECT 1 FROM auth.api_key_scopes s, target t
         WHERE (NOT t.is_rpc AND t.name = ANY (s.tables)
                AND ((s.resource || ':write') = ANY (scopes)
                     OR (method IN ('GET', 'HEAD') AND (s.resource || ':read') = ANY (scopes))))
            OR (t.is_rpc AND t.name = ANY (s.rpc_read)
                AND ((s.resource || ':read') = ANY (scopes) OR (s.resource || ':write') = ANY (scopes)))
            OR (t.is_rpc AND t.name = ANY (s.rpc_write) AND (s.resource || ':write') = ANY (scopes)))
$$;
COMMENT ON FUNCTION auth.scopes_allow(text[], text, text) IS
  'Whether API-key scopes cover an HTTP method on a PostgREST path (/table or /rpc/function).';

-- The hook grows API keys: verify the key, then become its claims.
CREATE OR REPLACE FUNCTION auth.check_request() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    presented text := nullif(current_setting('request.headers', true), '')::json ->> 'x-api-key';
    claims jsonb;
    scopes text[];
BEGIN
    IF presented IS NOT NULL AND current_user = 'anon' THEN
        claims := auth.api_key_claims(presented);
        IF claims IS NULL THEN
            RAISE EXCEPTION 'X-Api-Key: invalid, revoked or expired API key'
                USING ERRCODE = 'PT401', HINT = 'Create a new key with /rpc/create_api_key.';
        END IF;
        scopes := ARRAY(SELECT jsonb_array_elements_text(claims -> 'scopes'));
        IF NOT auth.scopes_allow(scopes, current_setting('request.method', true), current_setting('request.path', true)) THEN
            RAISE EXCEPTION 'X-Api-Key: this key''s scopes do not allow % %',
                  current_setting('request.method', true), current_setting('request.path', true)
                USING ERRCODE = 'PT403', HINT = 'Scopes held: ' || array_to_string(scopes, ', ');
        END IF;
        PERFORM set_config('request.jwt.claims', claims::text, true);
        PERFORM set_config('role', 'authenticated', true);
        IF current_setting('transaction_read_only') = 'off' THEN
            PERFORM auth.touch_api_key(presented);
        END IF;
    END IF;
    PERFORM auth.check_membership();
END
$$;
COMMENT ON FUNCTION auth.check_request() IS
  'PostgREST db-pre-request hook: turns a valid X-Api-Key into workspace claims limited to its scopes, then checks JWT membership.';
GRANT EXECUTE ON FUNCTION auth.api_key_claims(text),
                          auth.scopes_allow(text[], text, text), auth.touch_api_key(text), auth.known_scopes()
    TO anon, authenticated;

RESET ROLE;
GRANT USAGE ON SCHEMA auth TO flowtrack_resolver;
GRANT SELECT (id, workspace_id, created_by, key_hash, scopes, revoked_at, expires_at) ON api.api_keys TO flowtrack_resolver;
ALTER FUNCTION auth.api_key_claims(text) OWNER TO flowtrack_resolver;
GRANT UPDATE (last_used_at) ON api.api_keys TO flowtrack_resolver;
GRANT SELECT (id, last_used_at) ON api.api_keys TO flowtrack_resolver;
ALTER FUNCTION auth.touch_api_key(text) OWNER TO flowtrack_resolver;
GRANT EXECUTE ON FUNCTION auth.api_key_claims(text) TO anon, authenticated;
