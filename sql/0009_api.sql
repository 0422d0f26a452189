-- The request hook PostgREST runs before every request, and the RPC surface
-- of the foundation: who am I, quota check and metering.
-- Load the extension library so flowtrack.* settings are defined before
-- functions name them in SET clauses.
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

-- PostgREST verifies the JWT signature; this verifies that what the token
-- claims is still true in the database: the user exists, belongs to the
-- claimed workspace, with the claimed role. Unknown workspace and
-- non-membership get the same answer, so nothing leaks about other tenants.
CREATE FUNCTION auth.check_membership()
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    role_claim text := flowtrack.jwt_claim('role');
    sub uuid := flowtrack.current_user_id();
    ws_claim text := flowtrack.jwt_claim('workspace_id');
    ws uuid := flowtrack.current_workspace_id();
    role_wanted text := flowtrack.jwt_claim('workspace_role');
BEGIN
    IF current_user = 'anon' OR role_claim IS NULL OR role_claim = 'anon' THEN
        RETURN;
    END IF;
    IF sub IS NULL THEN
        RAISE EXCEPTION 'JWT: the sub claim must be a user id (uuid)'
            USING ERRCODE = 'PT401', HINT = 'Sign in again to get a fresh token.';
    END IF;
    IF ws_claim IS NULL THEN
        -- No workspace to check membership in, but a deleted user is still
        -- refused: it could create workspaces (issue 9). A user not yet
        -- registered passes, to call register_user.
        IF EXISTS (SELECT 1 FROM api.users u WHERE u.id = sub AND u.deleted_at IS NOT NULL) THEN
            RAISE EXCEPTION 'JWT: this user account was deleted'
                USING ERRCODE = 'PT401', HINT = 'Sign in with an active account.';
        END IF;
        IF role_wanted IS NOT NULL THEN
            RAISE EXCEPTION 'JWT: workspace_role given without workspace_id'
                USING ERRCODE = 'PT403', HINT = 'A token names a workspace and the role held in it, or neither.';
        END IF;
        RETURN;
    END IF;
    IF ws IS NULL OR flowtrack.current_workspace_role() IS NULL THEN
        RAISE EXCEPTION 'JWT: workspace_id and workspace_role must be a uuid and one of owner, admin, member, viewer'
            USING ERRCODE = 'PT403', HINT = 'Sign in to the workspace again.';
    END IF;
    PERFORM flowtrack.act_for(ws, 'viewer');
    IF NOT EXISTS (
        SELECT 1
          FROM api.workspace_members m
          JOIN api.workspaces w ON w.id = m.workspace_id AND w.deleted_at IS NULL
          JOIN api.users u ON u.id = m.user_id AND u.deleted_at IS NULL
         WHERE m.workspace_id = ws AND m.user_id = sub
           -- An API key (0017) acts with less than its creator, who must still own the workspace.
           AND m.role = CASE WHEN flowtrack.jwt_claim('api_key_id') IS NULL THEN role_wanted ELSE 'owner' END) THEN
        RAISE EXCEPTION 'workspace_id: you are not a % of this workspace', role_wanted
            USING ERRCODE = 'PT403', HINT = 'Ask the workspace owner for access, or sign in to a workspace you belong to.';
    END IF;
END
$$;
COMMENT ON FUNCTION auth.check_membership() IS
  'Refuses JWT claims whose user is deleted (PT401, with or without a workspace) or whose workspace membership or role no longer hold (PT403). Called by auth.check_request.';

-- The PostgREST db-pre-request hook. An invoker function, so that a later
-- version may switch role (0017: API keys), which SECURITY DEFINER forbids.
CREATE FUNCTION auth.check_request()
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM auth.check_membership();
END
$$;
COMMENT ON FUNCTION auth.check_request() IS
  'PostgREST db-pre-request hook: checks that the JWT''s user, membership and role still hold.';
GRANT EXECUTE ON FUNCTION auth.check_request(), auth.check_membership() TO anon, authenticated;

CREATE FUNCTION api.me()
RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'user_id', flowtrack.current_user_id(),
        'workspace_id', flowtrack.current_workspace_id(),
        'workspace_role', flowtrack.current_workspace_role(),
        'workspace', (SELECT json_build_object('id', w.id, 'name', w.name, 'slug', w.slug)
                        FROM api.workspaces w WHERE w.id = flowtrack.current_workspace_id()))
$$;
COMMENT ON FUNCTION api.me() IS 'Who the caller is: user id, workspace and role, as the database sees them.';
GRANT EXECUTE ON FUNCTION api.me() TO authenticated;

CREATE FUNCTION internal.require_workspace(write boolean DEFAULT false)
RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
DECLARE
    ws uuid := flowtrack.current_workspace_id();
BEGIN
    IF ws IS NULL THEN
        RAISE EXCEPTION 'workspace_id: this call needs a token for a workspace'
            USING ERRCODE = 'PT403', HINT = 'Use a JWT that carries workspace_id and workspace_role.';
    END IF;
    IF write AND coalesce(flowtrack.current_workspace_role(), '') NOT IN ('owner', 'admin', 'member') THEN
        RAISE EXCEPTION 'workspace_role: viewers cannot change anything'
            USING ERRCODE = '42501', HINT = 'Ask an owner or admin for the member role.';
    END IF;
    RETURN ws;
END
$$;
COMMENT ON FUNCTION internal.require_workspace(boolean) IS 'The caller''s workspace, or PT403; with write, also refuses viewers (42501).';

CREATE FUNCTION api.check_quota(quota_key text, amount bigint DEFAULT 1)
RETURNS TABLE (allowed boolean, used bigint, limit_value bigint, remaining bigint, resets_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    SELECT * FROM internal.check_quota(internal.require_workspace(), quota_key, amount)
$$;
COMMENT ON FUNCTION api.check_quota(text, bigint) IS
  'Read-only: would amount more of quota_key be allowed for the caller''s workspace? With used, limit, remaining and resets_at.';
GRANT EXECUTE ON FUNCTION api.check_quota(text, bigint) TO authenticated;

CREATE FUNCTION api.record_usage(quota_key text, amount bigint DEFAULT 1, idempotency_key text DEFAULT NULL)
RETURNS TABLE (used bigint, limit_value bigint, remaining bigint, resets_at timestamptz, replayed boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_workspace(true);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM api.quota_keys k WHERE k.key = record_usage.quota_key AND k.kind = 'metered') THEN
        RAISE EXCEPTION 'quota_key: "%" is not a metered key clients may report', quota_key
            USING ERRCODE = '22023', HINT = 'Clients report metered keys (ai_tokens, api_calls); FlowTrack counts the rest itself.';
    END IF;
    RETURN QUERY SELECT q.used, q.limit_value, q.remaining, q.resets_at, q.replayed
                   FROM internal.consume_quota(ws, quota_key, amount, idempotency_key) q;
END
$$;
COMMENT ON FUNCTION api.record_usage(text, bigint, text) IS
  'Reports metered usage (ai_tokens, api_calls) for the caller''s workspace. Same idempotency_key counts once.';
GRANT EXECUTE ON FUNCTION api.record_usage(text, bigint, text) TO authenticated;

CREATE FUNCTION internal.lock_workflow(workflow_id uuid)
RETURNS api.workflows
LANGUAGE plpgsql AS $$
DECLARE
    w api.workflows;
BEGIN
    SELECT * INTO w FROM api.workflows
     WHERE id = workflow_id AND workspace_id = internal.require_workspace(true) AND deleted_at IS NULL
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow_id: no workflow % in this workspace', workflow_id
            USING ERRCODE = 'PT404', HINT = 'List workflows with GET /workflows.';
    END IF;
    RETURN w;
END
$$;
COMMENT ON FUNCTION internal.lock_workflow(uuid) IS 'The caller''s workflow, row-locked; PT404 when it is not in the caller''s workspace.';

-- The workflows gauge counts workflows that are active and not deleted, and
-- only these triggers move it: activating, pausing, archiving, deleting,
-- soft-deleting or restoring, by RPC or by a client's PATCH of deleted_at.
-- Row triggers limited to the two columns, so the per-execution counter
-- updates of a workflow row never fire them.
CREATE FUNCTION internal.count_workflow_slot() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    was boolean := TG_OP <> 'INSERT' AND OLD.status = 'active' AND OLD.deleted_at IS NULL;
    is_now boolean := TG_OP <> 'DELETE' AND NEW.status = 'active' AND NEW.deleted_at IS NULL;
BEGIN
    IF is_now AND NOT was THEN
        PERFORM internal.consume_quota(NEW.workspace_id, 'workflows', 1);
    ELSIF was AND NOT is_now THEN
        PERFORM internal.release_quota(OLD.workspace_id, 'workflows', 1);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.count_workflow_slot() IS
  'AFTER INSERT/UPDATE OF status, deleted_at/DELETE on workflows: takes a workflows slot when a workflow becomes active and not deleted (PT429 over the plan), gives it back when it stops being so (paused, archived, deleted, soft-deleted).';
CREATE TRIGGER workflows_slot AFTER INSERT OR UPDATE OF status, deleted_at OR DELETE ON api.workflows
    FOR EACH ROW EXECUTE FUNCTION internal.count_workflow_slot();

CREATE FUNCTION api.archive_workflow(workflow_id uuid)
RETURNS api.workflows
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    w api.workflows := internal.lock_workflow(workflow_id);
BEGIN
    UPDATE api.workflows x SET status = 'archived' WHERE x.id = w.id RETURNING * INTO w;  -- frees an active slot
    RETURN w;
END
$$;
COMMENT ON FUNCTION api.archive_workflow(uuid) IS
  'Archives a workflow (kept for history, never triggered); an active one frees its slot. Activate it again to bring it back. Idempotent; viewers are refused.';
GRANT EXECUTE ON FUNCTION api.archive_workflow(uuid) TO authenticated;

CREATE FUNCTION api.activate_workflow(workflow_id uuid)
RETURNS api.workflows
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    w api.workflows := internal.lock_workflow(workflow_id);
BEGIN
    IF w.status = 'active' THEN
        RETURN w;
    END IF;
    IF w.published_version IS NULL THEN
        RAISE EXCEPTION 'workflow_id: workflow % has no published version', workflow_id
            USING ERRCODE = 'PT409', HINT = 'Publish the workflow before activating it.';
    END IF;
    -- The slot is taken by the workflows_slot trigger (PT429 when none is left).
    UPDATE api.workflows SET status = 'active' WHERE id = w.id RETURNING * INTO w;
    RETURN w;
END
$$;
COMMENT ON FUNCTION api.activate_workflow(uuid) IS
  'Turns a published workflow on. Takes one active-workflow slot of the plan; HTTP 429 (PT429) when none is left. Idempotent.';
GRANT EXECUTE ON FUNCTION api.activate_workflow(uuid) TO authenticated;

CREATE FUNCTION api.deactivate_workflow(workflow_id uuid)
RETURNS api.workflows
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    w api.workflows := internal.lock_workflow(workflow_id);
BEGIN
    IF w.status <> 'active' THEN
        RETURN w;
    END IF;
    UPDATE api.workflows SET status = 'paused' WHERE id = w.id RETURNING * INTO w;  -- frees the slot (workflows_slot)
    RETURN w;
END
$$;
COMMENT ON FUNCTION api.deactivate_workflow(uuid) IS 'Pauses an active workflow and frees its active-workflow slot. Idempotent.';
GRANT EXECUTE ON FUNCTION api.deactivate_workflow(uuid) TO authenticated;
