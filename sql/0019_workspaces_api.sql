-- Creating workspaces, and input checks that answer with the field, a
-- specific SQLSTATE and a hint instead of a bare constraint name.
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

CREATE FUNCTION internal.check_email() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.email IS NOT NULL AND NOT NEW.email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' THEN
        RAISE EXCEPTION 'email: "%" is not a valid email address', NEW.email
            USING ERRCODE = '23514', HINT = 'Use the form name@example.com.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.check_email() IS 'BEFORE INSERT/UPDATE: refuses a malformed email column with 23514, naming the field.';
CREATE TRIGGER check_email BEFORE INSERT OR UPDATE OF email ON api.users
    FOR EACH ROW EXECUTE FUNCTION internal.check_email();
CREATE TRIGGER check_email BEFORE INSERT OR UPDATE OF email ON api.leads
    FOR EACH ROW EXECUTE FUNCTION internal.check_email();

CREATE FUNCTION api.create_workspace(name text, slug text, plan text DEFAULT 'free')
RETURNS api.workspaces
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    me uuid := flowtrack.current_user_id();
    new_id uuid := gen_random_uuid();
    plan_row api.subscription_plans;
    ws api.workspaces;
BEGIN
    IF me IS NULL THEN
        RAISE EXCEPTION 'JWT: creating a workspace needs a signed-in user (sub claim)'
            USING ERRCODE = 'PT401', HINT = 'Sign in first.';
    END IF;
    -- The owner must be a live user (the hook refuses deleted ones too).
    IF NOT EXISTS (SELECT 1 FROM api.users u WHERE u.id = me AND u.deleted_at IS NULL) THEN
        RAISE EXCEPTION 'JWT: user % is not registered', me
            USING ERRCODE = 'PT403', HINT = 'Register with /rpc/register_user first.';
    END IF;
    SELECT * INTO plan_row FROM api.subscription_plans p WHERE p.code = create_workspace.plan AND p.is_public;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'plan: unknown plan "%"', plan
            USING ERRCODE = '22023',
                  HINT = 'Plans: ' || (SELECT string_agg(code, ', ' ORDER BY price_cents) FROM api.subscription_plans WHERE is_public);
    END IF;
    IF slug IS NULL OR NOT slug ~ '^[a-z0-9]([a-z0-9-]{1,61}[a-z0-9])?$' THEN
        RAISE EXCEPTION 'slug: "%" is not a valid workspace address', slug
            USING ERRCODE = '23514', HINT = '3-63 lowercase letters, digits and inner hyphens, e.g. acme-studio.';
    END IF;
    PERFORM flowtrack.act_for(new_id, 'owner');
    BEGIN
        INSERT INTO api.workspaces (id, name, slug, plan_id, owner_user_id)
        VALUES (new_id, create_workspace.name, create_workspace.slug, plan_row.id, me)
        RETURNING * INTO ws;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'slug: "%" is already taken', slug
            USING ERRCODE = '23505', HINT = 'Choose another workspace address.';
    END;
    INSERT INTO api.workspace_members (workspace_id, user_id, role) VALUES (ws.id, me, 'owner');
    INSERT INTO api.subscriptions (workspace_id, plan_id, status, anchor_at, current_period_start, current_period_end)
    SELECT ws.id, plan_row.id, CASE WHEN plan_row.price_cents = 0 THEN 'active' ELSE 'incomplete' END, now(), p.period_start, p.period_end
      FROM flowtrack.billing_period(now(), now()) p;
    PERFORM internal.sync_quotas(ws.id);
    RETURN ws;
END
$$;
COMMENT ON FUNCTION api.create_workspace(text, text, text) IS
  'Creates a workspace owned by the caller, on a public plan (free by default), with its subscription and quota rows. Sign in again to get a token for it.';
GRANT EXECUTE ON FUNCTION api.create_workspace(text, text, text) TO authenticated;

-- Users create themselves at sign-up through the identity provider's
-- webhook or this call; the id is the JWT subject.
CREATE FUNCTION api.register_user(email text, full_name text DEFAULT NULL)
RETURNS api.users
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    me uuid := flowtrack.current_user_id();
    u api.users;
BEGIN
    IF me IS NULL THEN
        RAISE EXCEPTION 'JWT: the sub claim must be the new user''s id (uuid)'
            USING ERRCODE = 'PT401', HINT = 'Register with the token your identity provider issued.';
    END IF;
    -- Emails are unique only once verified (api.users.users_verified_email),
    -- so whether another account uses this address never shows: the answer
    -- is the caller's own row either way (issue 9).
    INSERT INTO api.users (id, email, full_name) VALUES (me, register_user.email, register_user.full_name)
    ON CONFLICT (id) DO UPDATE SET full_name = coalesce(excluded.full_name, api.users.full_name)
    RETURNING * INTO u;
    RETURN u;
END
$$;
COMMENT ON FUNCTION api.register_user(text, text) IS
  'Registers the signed-in identity (JWT sub) as a FlowTrack user and returns its row. Idempotent per sub (a second call may only fill in full_name); says nothing about other accounts with the same email.';
GRANT EXECUTE ON FUNCTION api.register_user(text, text) TO authenticated;

-- Users are global rows, so the owner role gets explicit policies for the
-- two definer functions above (insert self, read self).
CREATE POLICY users_register_self ON api.users FOR INSERT TO flowtrack_owner
    WITH CHECK (id = (SELECT flowtrack.current_user_id()));
CREATE POLICY users_update_self_owner ON api.users FOR UPDATE TO flowtrack_owner
    USING (id = (SELECT flowtrack.current_user_id()));
