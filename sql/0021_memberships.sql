-- Membership by consent (issue 9). An owner could add any user id as a
-- member and then read that person's email and name. Now an owner or admin
-- invites an email address, the invitee accepts with the token while signed
-- in, and only then is a member; api.users shows co-members, so a person is
-- visible only to workspaces they joined. And a workspace always keeps its
-- owner: the owner can neither leave nor step down, only hand it over.
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

CREATE TABLE api.workspace_invitations (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES api.workspaces (id) ON DELETE CASCADE,
    email        citext NOT NULL
                 CONSTRAINT workspace_invitations_email_format CHECK (email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'),
    role         text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member', 'viewer')),
    token_hash   bytea NOT NULL UNIQUE,
    invited_by   uuid REFERENCES api.users (id) ON DELETE SET NULL,
    expires_at   timestamptz NOT NULL,
    accepted_at  timestamptz,
    accepted_by  uuid REFERENCES api.users (id) ON DELETE SET NULL,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workspace_invitations_one_outcome CHECK (accepted_at IS NULL OR revoked_at IS NULL)
);
-- One pending invitation per address and workspace: inviting again replaces it.
CREATE UNIQUE INDEX workspace_invitations_pending ON api.workspace_invitations (workspace_id, email)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;
CREATE INDEX workspace_invitations_workspace ON api.workspace_invitations (workspace_id, created_at DESC);
CREATE INDEX workspace_invitations_invited_by ON api.workspace_invitations (invited_by);
CREATE INDEX workspace_invitations_accepted_by ON api.workspace_invitations (accepted_by);
COMMENT ON TABLE api.workspace_invitations IS
  'Invitations to join a workspace: made by owners and admins (/rpc/invite_member), accepted by the invitee (/rpc/accept_invitation), or revoked. The token is shown once; only its SHA-256 is kept.';
COMMENT ON COLUMN api.workspace_invitations.email IS 'The invitee''s address; only a user registered with it may accept.';
COMMENT ON COLUMN api.workspace_invitations.role IS 'Role given on acceptance: admin, member or viewer (ownership moves only by transfer_ownership).';
COMMENT ON COLUMN api.workspace_invitations.token_hash IS 'SHA-256 of the invitation token; the token itself is stored nowhere.';

SELECT flowtrack.enable_tenant_isolation('api.workspace_invitations'::regclass,
                                         ARRAY['owner', 'admin'], ARRAY['owner', 'admin']);
-- Written only through the functions below; the hash is never read back.
GRANT SELECT (id, workspace_id, email, role, invited_by, expires_at, accepted_at, accepted_by, revoked_at, created_at)
   ON api.workspace_invitations TO authenticated;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON api.workspace_invitations
    FOR EACH ROW EXECUTE FUNCTION internal.audit('invitation', 'token_hash');

CREATE FUNCTION api.invite_member(email text, role text DEFAULT 'member', valid_for interval DEFAULT '7 days')
RETURNS TABLE (id uuid, token text, expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_workspace(true);
    my_role text := flowtrack.current_workspace_role();
    secret text := 'ftinv_' || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
BEGIN
    IF my_role NOT IN ('owner', 'admin') THEN
        RAISE EXCEPTION 'workspace_role: only owners and admins invite members'
            USING ERRCODE = '42501', HINT = 'Ask an owner or admin of the workspace to invite them.';
    END IF;
    IF invite_member.role IS NULL OR invite_member.role NOT IN ('admin', 'member', 'viewer') THEN
        RAISE EXCEPTION 'role: "%" cannot be given by invitation', invite_member.role
            USING ERRCODE = '22023', HINT = 'Invite as admin, member or viewer; the owner hands the workspace over with /rpc/transfer_ownership.';
    END IF;
    IF my_role = 'admin' AND invite_member.role = 'admin' THEN
        RAISE EXCEPTION 'role: only the owner invites admins'
            USING ERRCODE = '42501', HINT = 'Invite as member or viewer, or ask the owner.';
    END IF;
    IF invite_member.email IS NULL OR NOT invite_member.email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' THEN
        RAISE EXCEPTION 'email: "%" is not a valid email address', invite_member.email
            USING ERRCODE = '23514', HINT = 'Use the form name@example.com.';
    END IF;
    IF valid_for IS NULL OR valid_for < interval '1 hour' OR valid_for > interval '30 days' THEN
        RAISE EXCEPTION 'valid_for: an invitation lasts from 1 hour to 30 days, not %', valid_for
            USING ERRCODE = '22023', HINT = 'Omit it for 7 days.';
    END IF;
    -- Only this workspace's members are looked at: nothing about other accounts shows.
    -- (Addresses compare case-insensitively; citext's operators live in schema
    -- public, which this function's search_path leaves out, hence lower().)
    IF EXISTS (SELECT 1 FROM api.workspace_members m JOIN api.users u ON u.id = m.user_id
                WHERE m.workspace_id = ws AND lower(u.email::text) = lower(invite_member.email)) THEN
        RAISE EXCEPTION 'email: % is already a member of this workspace', invite_member.email
            USING ERRCODE = 'PT409', HINT = 'Change their role with PATCH /workspace_members instead.';
    END IF;
    UPDATE api.workspace_invitations i SET revoked_at = now()
     WHERE i.workspace_id = ws AND lower(i.email::text) = lower(invite_member.email)
       AND i.accepted_at IS NULL AND i.revoked_at IS NULL;
    INSERT INTO api.workspace_invitations AS i (workspace_id, email, role, token_hash, invited_by, expires_at)
    VALUES (ws, invite_member.email, invite_member.role, sha256(convert_to(secret, 'UTF8')),
            flowtrack.current_user_id(), now() + valid_for)
    RETURNING i.id, i.expires_at INTO id, expires_at;
    token := secret;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION api.invite_member(text, text, interval) IS
  'Owners and admins (admins up to member) invite an email address as admin, member or viewer. Returns the token, shown only here: send it to the invitee, who accepts with /rpc/accept_invitation. Replaces a pending invitation to the same address; never says whether the address has an account.';
GRANT EXECUTE ON FUNCTION api.invite_member(text, text, interval) TO authenticated;

-- The token is all the invitee has, and it names no workspace: the
-- resolver (BYPASSRLS, nothing else) finds which.
CREATE FUNCTION internal.invitation_by_token(token text) RETURNS TABLE (id uuid, workspace_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT i.id, i.workspace_id FROM api.workspace_invitations i
     WHERE i.token_hash = sha256(convert_to(invitation_by_token.token, 'UTF8'))
$$;
COMMENT ON FUNCTION internal.invitation_by_token(text) IS
  'The invitation with this token (by its hash), if any. Owned by flowtrack_resolver (BYPASSRLS).';

CREATE FUNCTION api.accept_invitation(token text)
RETURNS TABLE (workspace_id uuid, workspace_name text, role text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    me uuid := flowtrack.current_user_id();
    my_email text;
    hit record;
    inv api.workspace_invitations;
    ws_name text;
BEGIN
    IF me IS NULL THEN
        RAISE EXCEPTION 'JWT: accepting an invitation needs a signed-in user (sub claim)'
            USING ERRCODE = 'PT401', HINT = 'Sign in first.';
    END IF;
    SELECT u.email::text INTO my_email FROM api.users u WHERE u.id = me AND u.deleted_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'JWT: user % is not registered', me
            USING ERRCODE = 'PT403', HINT = 'Register with /rpc/register_user first.';
    END IF;
    SELECT * INTO hit FROM internal.invitation_by_token(accept_invitation.token);
    IF FOUND THEN
        PERFORM flowtrack.act_for(hit.workspace_id, 'owner');
        SELECT * INTO inv FROM api.workspace_invitations i WHERE i.id = hit.id FOR UPDATE;
        SELECT w.name INTO ws_name FROM api.workspaces w WHERE w.id = inv.workspace_id AND w.deleted_at IS NULL;
    END IF;
    -- Unknown, expired, revoked or used: one answer.
    IF inv.id IS NULL OR ws_name IS NULL OR inv.accepted_at IS NOT NULL OR inv.revoked_at IS NOT NULL
       OR inv.expires_at <= now() THEN
        RAISE EXCEPTION 'token: no pending invitation has this token'
            USING ERRCODE = 'PT404', HINT = 'Invitations end when they expire, are accepted or are revoked; ask for a new one.';
    END IF;
    IF lower(inv.email::text) <> lower(my_email) THEN
        RAISE EXCEPTION 'token: this invitation was sent to another email address'
            USING ERRCODE = 'PT403', HINT = 'Sign in with the account registered to the invited address.';
    END IF;
    IF EXISTS (SELECT 1 FROM api.workspace_members m WHERE m.workspace_id = inv.workspace_id AND m.user_id = me) THEN
        RAISE EXCEPTION 'token: you are already a member of this workspace'
            USING ERRCODE = 'PT409', HINT = 'Sign in to the workspace instead.';
    END IF;
    INSERT INTO api.workspace_members (workspace_id, user_id, role, invited_by)
    VALUES (inv.workspace_id, me, inv.role, inv.invited_by);
    UPDATE api.workspace_invitations i SET accepted_at = now(), accepted_by = me WHERE i.id = inv.id;
    RETURN QUERY SELECT inv.workspace_id, ws_name, inv.role;
END
$$;
COMMENT ON FUNCTION api.accept_invitation(text) IS
  'The signed-in, registered invitee joins the workspace with the invitation''s role. The account''s email must be the invited one (PT403). Unknown, expired, revoked and used tokens all get PT404. Sign in to the workspace afterwards for a token that names it.';
GRANT EXECUTE ON FUNCTION api.accept_invitation(text) TO authenticated;

CREATE FUNCTION api.revoke_invitation(invitation_id uuid)
RETURNS TABLE (id uuid, revoked_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_workspace(true);
    inv api.workspace_invitations;
BEGIN
    IF flowtrack.current_workspace_role() NOT IN ('owner', 'admin') THEN
        RAISE EXCEPTION 'workspace_role: only owners and admins manage invitations'
            USING ERRCODE = '42501', HINT = 'Ask an owner or admin of the workspace.';
    END IF;
    SELECT * INTO inv FROM api.workspace_invitations i
     WHERE i.id = invitation_id AND i.workspace_id = ws FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invitation_id: no invitation % in this workspace', invitation_id
            USING ERRCODE = 'PT404', HINT = 'List invitations with GET /workspace_invitations.';
    END IF;
    IF inv.accepted_at IS NOT NULL THEN
        RAISE EXCEPTION 'invitation_id: invitation % was already accepted', invitation_id
            USING ERRCODE = 'PT409', HINT = 'Remove the member with DELETE /workspace_members instead.';
    END IF;
    IF inv.revoked_at IS NULL THEN
        UPDATE api.workspace_invitations i SET revoked_at = now() WHERE i.id = inv.id
        RETURNING i.revoked_at INTO inv.revoked_at;
    END IF;
    RETURN QUERY SELECT inv.id, inv.revoked_at;
END
$$;
COMMENT ON FUNCTION api.revoke_invitation(uuid) IS
  'Owners and admins withdraw a pending invitation; its token stops working. Idempotent; PT409 once accepted.';
GRANT EXECUTE ON FUNCTION api.revoke_invitation(uuid) TO authenticated;

-- ------------------------------------------------------------- owner ----

CREATE FUNCTION api.transfer_ownership(new_owner uuid)
RETURNS TABLE (workspace_id uuid, owner_user_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_workspace(true);
    me uuid := flowtrack.current_user_id();
BEGIN
    IF flowtrack.current_workspace_role() <> 'owner' THEN
        RAISE EXCEPTION 'workspace_role: only the owner hands the workspace over'
            USING ERRCODE = '42501', HINT = 'Ask the owner.';
    END IF;
    IF new_owner IS NULL OR new_owner = me THEN
        RAISE EXCEPTION 'new_owner: name another member of the workspace'
            USING ERRCODE = '22023', HINT = 'Pass the user_id of a member (GET /workspace_members).';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM api.workspace_members m JOIN api.users u ON u.id = m.user_id AND u.deleted_at IS NULL
                    WHERE m.workspace_id = ws AND m.user_id = new_owner) THEN
        RAISE EXCEPTION 'new_owner: no member % in this workspace', new_owner
            USING ERRCODE = 'PT404', HINT = 'Invite them first (/rpc/invite_member); they become a member once they accept.';
    END IF;
    -- The workspace's owner_user_id moves first: the owner guard below
    -- follows it, so the old owner may step down and the new one step up.
    UPDATE api.workspaces w SET owner_user_id = new_owner WHERE w.id = ws;
    UPDATE api.workspace_members m SET role = 'admin' WHERE m.workspace_id = ws AND m.user_id = me;
    UPDATE api.workspace_members m SET role = 'owner' WHERE m.workspace_id = ws AND m.user_id = new_owner;
    RETURN QUERY SELECT ws, new_owner;
END
$$;
COMMENT ON FUNCTION api.transfer_ownership(uuid) IS
  'The owner hands the workspace to another member and becomes an admin. Both sign in again for tokens with their new roles; API keys the old owner made stop working (a key lives only while its creator owns the workspace).';
GRANT EXECUTE ON FUNCTION api.transfer_ownership(uuid) TO authenticated;

-- The owner row follows workspaces.owner_user_id: it cannot be deleted or
-- demoted (the only owner left a workspace nobody could manage, issue 9),
-- and nobody else becomes owner except through transfer_ownership.
CREATE FUNCTION internal.guard_workspace_owner() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    owner_id uuid;
BEGIN
    PERFORM flowtrack.act_for(OLD.workspace_id, 'viewer');
    SELECT w.owner_user_id INTO owner_id FROM api.workspaces w WHERE w.id = OLD.workspace_id;
    -- No workspace: it is being deleted, and its members with it.
    IF FOUND THEN
        IF OLD.user_id = owner_id AND (TG_OP = 'DELETE' OR NEW.role <> 'owner') THEN
            RAISE EXCEPTION 'role: the owner cannot leave the workspace or step down'
                USING ERRCODE = 'PT409', HINT = 'Hand the workspace over first with /rpc/transfer_ownership.';
        END IF;
        IF TG_OP = 'UPDATE' AND NEW.role = 'owner' AND NEW.user_id IS DISTINCT FROM owner_id THEN
            RAISE EXCEPTION 'role: a workspace has one owner, changed only by /rpc/transfer_ownership'
                USING ERRCODE = 'PT409', HINT = 'The owner hands the workspace over with /rpc/transfer_ownership.';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.guard_workspace_owner() IS
  'BEFORE UPDATE OF role / DELETE on workspace_members: the workspace owner''s row stays owner (PT409), and no other row becomes owner except through transfer_ownership.';
CREATE TRIGGER guard_owner BEFORE UPDATE OF role OR DELETE ON api.workspace_members
    FOR EACH ROW EXECUTE FUNCTION internal.guard_workspace_owner();

RESET ROLE;
GRANT SELECT (id, workspace_id, token_hash) ON api.workspace_invitations TO flowtrack_resolver;
ALTER FUNCTION internal.invitation_by_token(text) OWNER TO flowtrack_resolver;
GRANT EXECUTE ON FUNCTION internal.invitation_by_token(text) TO flowtrack_owner;
