-- Leads (contacts) with pipeline status and custom fields. Storing leads is a
-- gauge quota: inserts count against the plan's `leads` limit, soft deletes
-- and deletes give the slot back. The rest of the leads module (field data,
-- lead events) arrives with the data-model work.
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

CREATE TABLE api.leads (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id       uuid NOT NULL DEFAULT flowtrack.current_workspace_id()
                       REFERENCES api.workspaces (id) ON DELETE CASCADE,
    email              citext CONSTRAINT leads_email_format CHECK (email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'),
    first_name         text CHECK (length(first_name) <= 100),
    last_name          text CHECK (length(last_name) <= 100),
    phone              text CHECK (length(phone) <= 50),
    company            text CHECK (length(company) <= 200),
    status             text NOT NULL DEFAULT 'NEW'
                       CHECK (status IN ('NEW', 'CONTACTED', 'QUALIFIED', 'BOOKED', 'WON', 'LOST', 'ARCHIVED')),
    source             text NOT NULL DEFAULT 'manual'
                       CHECK (source IN ('form', 'webhook', 'email_forward', 'manual', 'import', 'api')),
    custom_fields      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom_fields) = 'object'),
    score              integer NOT NULL DEFAULT 0,
    tags               text[] NOT NULL DEFAULT '{}',
    last_activity_at   timestamptz,
    last_email_sent_at timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz,
    UNIQUE (workspace_id, id)
);
CREATE UNIQUE INDEX leads_workspace_email ON api.leads (workspace_id, email) WHERE deleted_at IS NULL;
-- The daily-stats rollup reads the leads created since its watermark.
CREATE INDEX leads_created_at ON api.leads (created_at);
CREATE INDEX leads_workspace_status ON api.leads (workspace_id, status) WHERE deleted_at IS NULL;
CREATE INDEX leads_custom_fields ON api.leads USING gin (custom_fields jsonb_path_ops) WHERE deleted_at IS NULL;
CREATE INDEX leads_tags ON api.leads USING gin (tags) WHERE deleted_at IS NULL;
COMMENT ON TABLE api.leads IS
  'Contacts and prospects. status is the pipeline (Kanban) column; custom form answers live in custom_fields (JSONB, GIN-indexed).';
CREATE TRIGGER touch BEFORE UPDATE ON api.leads FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

CREATE FUNCTION internal.adjust_leads_quota(ws uuid, delta bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF delta > 0 THEN
        PERFORM internal.consume_quota(ws, 'leads', delta);
    ELSIF delta < 0 THEN
        PERFORM internal.release_quota(ws, 'leads', -delta);
    END IF;
END
$$;
COMMENT ON FUNCTION internal.adjust_leads_quota(uuid, bigint) IS
  'Moves the leads gauge by delta; growth over the plan raises PT429 and aborts the statement.';

-- Deleted means deleted now. The leads gauge counts rows whose deleted_at
-- is NULL, so a lead inserted (or updated) with a deleted_at in the future
-- would sit uncounted while a client could still read it as "not deleted
-- yet": the plan's leads limit bypassed. clock_timestamp(), not now(), so a
-- client that stamps deletions with its own clock is not refused for the
-- time its request took.
CREATE FUNCTION internal.check_lead_deleted_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted_at > clock_timestamp() THEN
        RAISE EXCEPTION 'deleted_at: % is in the future', NEW.deleted_at
            USING ERRCODE = '23514',
                  HINT = 'A lead is deleted now or not at all: send "now" to soft-delete it, null to restore it.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.check_lead_deleted_at() IS
  'BEFORE INSERT/UPDATE OF deleted_at on leads: refuses a deletion time in the future (23514), which the leads quota would not count.';
CREATE TRIGGER check_deleted_at BEFORE INSERT OR UPDATE OF deleted_at ON api.leads
    FOR EACH ROW WHEN (NEW.deleted_at IS NOT NULL) EXECUTE FUNCTION internal.check_lead_deleted_at();

-- Statement-level triggers with transition tables, so a bulk insert of n
-- leads is one quota update of n. One function per event because a
-- transition table exists only for the events that define it.
CREATE FUNCTION internal.count_inserted_leads() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM internal.adjust_leads_quota(workspace_id, count(*))
       FROM new_rows WHERE deleted_at IS NULL GROUP BY workspace_id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.count_inserted_leads() IS 'AFTER INSERT: counts new leads against the leads quota.';

CREATE FUNCTION internal.count_updated_leads() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM internal.adjust_leads_quota(n.workspace_id, sum(CASE WHEN o.deleted_at IS NULL THEN -1 ELSE 1 END))
       FROM old_rows o JOIN new_rows n ON n.id = o.id
      WHERE (o.deleted_at IS NULL) <> (n.deleted_at IS NULL)
      GROUP BY n.workspace_id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.count_updated_leads() IS 'AFTER UPDATE: soft delete frees a leads slot, undelete takes one.';

CREATE FUNCTION internal.count_deleted_leads() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM internal.adjust_leads_quota(workspace_id, -count(*))
       FROM old_rows WHERE deleted_at IS NULL GROUP BY workspace_id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.count_deleted_leads() IS 'AFTER DELETE: frees the slots of deleted leads.';

CREATE TRIGGER count_inserted AFTER INSERT ON api.leads
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION internal.count_inserted_leads();
CREATE TRIGGER count_updated AFTER UPDATE ON api.leads
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION internal.count_updated_leads();
CREATE TRIGGER count_deleted AFTER DELETE ON api.leads
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION internal.count_deleted_leads();

SELECT flowtrack.enable_tenant_isolation('api.leads'::regclass, key_scope => 'leads');
GRANT SELECT, DELETE ON api.leads TO authenticated;
SELECT internal.grant_client_writes('api.leads');
