-- Public forms and the lead activity log. A form submission at /p/{slug}
-- is the one write anonymous callers can make besides inbound webhooks.
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

-- Payload size limit for JSON that callers send (form answers, custom
-- fields, trigger payloads). Configurable per database:
--   ALTER DATABASE flowtrack SET flowtrack.max_payload_bytes = 131072;
CREATE FUNCTION internal.max_payload_bytes() RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('flowtrack.max_payload_bytes', true), '')::integer, 65536)
$$;
COMMENT ON FUNCTION internal.max_payload_bytes() IS
  'Largest JSON payload accepted from callers, in bytes (setting flowtrack.max_payload_bytes, default 65536).';

CREATE FUNCTION internal.check_payload_size(field text, payload jsonb) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    size integer := octet_length(payload::text);
BEGIN
    IF size > internal.max_payload_bytes() THEN
        RAISE EXCEPTION '%: payload of % bytes exceeds the limit of % bytes', field, size, internal.max_payload_bytes()
            USING ERRCODE = '54000', HINT = 'Send less data, or raise flowtrack.max_payload_bytes.';
    END IF;
END
$$;
COMMENT ON FUNCTION internal.check_payload_size(text, jsonb) IS
  'Raises 54000 (HTTP 413) naming the field when a JSON payload is over internal.max_payload_bytes().';

-- Nesting limit for the same JSON. The graph engine and the worker read
-- JSON with serde_json, which refuses a 128th level of nesting (54001,
-- "recursion limit exceeded"), so 127 levels is what they accept. FlowTrack
-- places a caller's document at most 4 levels down in what they read: the
-- execution context keeps the trigger payload as the trigger node's output
-- (context -> steps -> form -> lead -> custom_fields), a webhook job's
-- default body carries it (payload -> body -> trigger -> lead ->
-- custom_fields), and so does lead.status_changed (payload -> body -> data
-- -> lead -> custom_fields). So a caller's document may nest 127 - 4 = 123
-- levels, and everything accepted here can be run: a deeper answer no
-- longer poisons a lead so that every later execution for it fails.
-- tests/tests/ingress.rs holds both ends.
CREATE FUNCTION internal.max_json_depth() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 127 - 4
$$;
COMMENT ON FUNCTION internal.max_json_depth() IS
  'Deepest nesting accepted in JSON from callers (form answers, custom fields, webhook payloads): the 127 levels the engine and worker parse, less the 4 levels FlowTrack wraps around such a document.';

CREATE FUNCTION internal.json_depth(doc jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH RECURSIVE walk (v, depth) AS (
        SELECT doc, 1 WHERE jsonb_typeof(doc) IN ('object', 'array')
        UNION ALL
        SELECT c.v, w.depth + 1
          FROM walk w,
               LATERAL (SELECT e.value FROM jsonb_each(CASE WHEN jsonb_typeof(w.v) = 'object' THEN w.v END) e
                        UNION ALL
                        SELECT a.value FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w.v) = 'array' THEN w.v END) a) c (v)
         WHERE jsonb_typeof(c.v) IN ('object', 'array'))
    SELECT coalesce(max(depth), 0) FROM walk
$$;
COMMENT ON FUNCTION internal.json_depth(jsonb) IS
  'Levels of nesting of a JSON value: 0 for a scalar, 1 for a flat object or array. Used to word refusals; the check itself is internal.check_json_depth.';

-- jsonpath's .**{n} visits the items n levels below the root in C, without a
-- row per item; a container there means the document nests more than n.
CREATE FUNCTION internal.check_json_depth(field text, doc jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    max_depth constant integer := internal.max_json_depth();
    deepest text;
BEGIN
    IF doc IS NULL OR NOT jsonb_path_exists(
           doc, format('strict $.**{%s} ? (@.type() == "object" || @.type() == "array")', max_depth)::jsonpath) THEN
        RETURN;
    END IF;
    -- Name the member that is too deep, so the caller knows which answer to fix.
    IF jsonb_typeof(doc) = 'object' THEN
        SELECT e.key INTO deepest FROM jsonb_each(doc) e ORDER BY internal.json_depth(e.value) DESC, e.key LIMIT 1;
    END IF;
    RAISE EXCEPTION '%: nested % levels deep, more than the % accepted', field || coalesce('.' || deepest, ''),
          internal.json_depth(doc), max_depth
        USING ERRCODE = '54001',
              HINT = format('Flatten the value: JSON sent to FlowTrack nests at most %s levels, so that workflows can read it.', max_depth);
END
$$;
COMMENT ON FUNCTION internal.check_json_depth(text, jsonb) IS
  'Raises 54001 (HTTP 413) naming the field (and its deepest member) when a JSON document nests more than internal.max_json_depth() levels.';

CREATE TABLE api.forms (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL DEFAULT flowtrack.current_workspace_id()
                 REFERENCES api.workspaces (id) ON DELETE CASCADE,
    slug         text NOT NULL CONSTRAINT forms_slug_format CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    is_active    boolean NOT NULL DEFAULT true,
    settings     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    UNIQUE (workspace_id, id)
);
CREATE UNIQUE INDEX forms_workspace_slug ON api.forms (workspace_id, slug) WHERE deleted_at IS NULL;
COMMENT ON TABLE api.forms IS
  'Public lead-capture forms, addressed as /p/{workspace slug}/{form slug}. A TRIGGER_FORM node names the form slug in config.form_id.';
CREATE TRIGGER touch BEFORE UPDATE ON api.forms FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

CREATE TABLE api.form_fields (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL DEFAULT flowtrack.current_workspace_id(),
    form_id      uuid NOT NULL,
    field_key    text NOT NULL CONSTRAINT form_fields_key_format CHECK (field_key ~ '^[a-z][a-z0-9_]{0,62}$'),
    label        text NOT NULL CHECK (length(label) BETWEEN 1 AND 200),
    field_type   text NOT NULL DEFAULT 'text'
                 CHECK (field_type IN ('text', 'textarea', 'email', 'phone', 'number', 'url', 'date',
                                       'select', 'multiselect', 'checkbox')),
    required     boolean NOT NULL DEFAULT false,
    options      jsonb CHECK (options IS NULL OR jsonb_typeof(options) = 'array'),
    position     integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, form_id, field_key),  -- per tenant: see workflow_nodes
    CONSTRAINT form_fields_form_fk FOREIGN KEY (workspace_id, form_id)
        REFERENCES api.forms (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX form_fields_workspace_form ON api.form_fields (workspace_id, form_id, position);
COMMENT ON TABLE api.form_fields IS
  'The questions a form asks. email, first_name, last_name, phone and company fill lead columns; every other key lands in leads.custom_fields.';

CREATE TABLE api.lead_events (
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    workspace_id  uuid NOT NULL,
    lead_id       uuid NOT NULL,
    event_type    text NOT NULL CHECK (event_type IN ('FORM_SUBMITTED', 'WEBHOOK_RECEIVED', 'EMAIL_SENT', 'EMAIL_RECEIVED',
                                                      'STATUS_CHANGED', 'NOTE_ADDED', 'DEMO_BOOKED', 'WORKFLOW_ACTION')),
    source        text NOT NULL CHECK (source IN ('form', 'webhook', 'email_forward', 'manual', 'import', 'api', 'workflow')),
    payload       jsonb NOT NULL DEFAULT '{}',
    execution_id  uuid,
    actor_user_id uuid,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX lead_events_lead ON api.lead_events (workspace_id, lead_id, occurred_at DESC);
CREATE INDEX lead_events_type ON api.lead_events (workspace_id, event_type, occurred_at DESC);
COMMENT ON TABLE api.lead_events IS
  'Everything that happened to a lead, with where it came from (source). Partitioned monthly; leads.last_activity_at and last_email_sent_at are kept from it.';
-- Lead events: one year. The schema states no period; the lead itself keeps
-- what its timeline summarises (last_activity_at, last_email_sent_at, kept
-- by the triggers below), so expiring old events loses nothing a lead shows,
-- and a year matches the event retention of seeds 001 and 003.
SELECT internal.manage_partitions('api.lead_events', 'monthly', premake => 4, retention => interval '1 year');

-- Denormalised activity timestamps on leads, kept by statement-level
-- triggers so a bulk import is one UPDATE per lead, not per event.
CREATE FUNCTION internal.touch_lead_activity() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE api.leads l
       SET last_activity_at = greatest(l.last_activity_at, e.last_at),
           last_email_sent_at = coalesce(greatest(l.last_email_sent_at, e.last_email_at), l.last_email_sent_at)
      FROM (SELECT lead_id, workspace_id, max(occurred_at) AS last_at,
                   max(occurred_at) FILTER (WHERE event_type = 'EMAIL_SENT') AS last_email_at
              FROM new_rows GROUP BY lead_id, workspace_id) e
     WHERE l.id = e.lead_id AND l.workspace_id = e.workspace_id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.touch_lead_activity() IS 'AFTER INSERT on lead_events: moves leads.last_activity_at / last_email_sent_at forward.';
CREATE TRIGGER touch_activity AFTER INSERT ON api.lead_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION internal.touch_lead_activity();

-- Status changes are lead events too.
CREATE FUNCTION internal.log_lead_status() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO api.lead_events (workspace_id, lead_id, event_type, source, payload, actor_user_id)
    VALUES (NEW.workspace_id, NEW.id, 'STATUS_CHANGED',
            CASE WHEN flowtrack.current_user_id() IS NULL THEN 'workflow' ELSE 'manual' END,
            jsonb_build_object('from', OLD.status, 'to', NEW.status), flowtrack.current_user_id());
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.log_lead_status() IS 'AFTER UPDATE OF status on leads: records a STATUS_CHANGED lead event.';
CREATE TRIGGER log_status AFTER UPDATE OF status ON api.leads
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION internal.log_lead_status();

-- Leads' own JSON stays within the payload and nesting limits: a lead is
-- read into every execution that concerns it, so JSON the engine cannot
-- parse would fail all of them, whoever wrote it.
CREATE FUNCTION internal.check_lead_payload() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM internal.check_payload_size('custom_fields', NEW.custom_fields);
    PERFORM internal.check_json_depth('custom_fields', NEW.custom_fields);
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.check_lead_payload() IS
  'BEFORE INSERT/UPDATE on leads: refuses custom_fields over the payload limit (54000) or nested deeper than internal.max_json_depth() (54001).';
CREATE TRIGGER check_payload BEFORE INSERT OR UPDATE OF custom_fields ON api.leads
    FOR EACH ROW EXECUTE FUNCTION internal.check_lead_payload();

SELECT flowtrack.enable_tenant_isolation('api.forms'::regclass, ARRAY['owner', 'admin', 'member'], key_scope => 'forms');
SELECT flowtrack.enable_tenant_isolation('api.form_fields'::regclass, ARRAY['owner', 'admin', 'member'], key_scope => 'forms');
SELECT flowtrack.enable_tenant_isolation('api.lead_events'::regclass, ARRAY['owner', 'admin', 'member'], key_scope => 'leads');
GRANT SELECT, DELETE ON api.forms, api.form_fields TO authenticated;
SELECT internal.grant_client_writes(t) FROM unnest(ARRAY['api.forms', 'api.form_fields']::regclass[]) AS t;
GRANT SELECT ON api.lead_events TO authenticated;
GRANT INSERT (workspace_id, lead_id, event_type, source, payload) ON api.lead_events TO authenticated;

-- Public entry points know a workspace only by its slug (or a token), and
-- RLS hides every workspace from the owner role, so resolving it is the job
-- of a separate role that bypasses RLS and can do nothing else.
CREATE FUNCTION internal.workspace_by_slug(slug text) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT w.id FROM api.workspaces w WHERE w.slug = workspace_by_slug.slug AND w.deleted_at IS NULL
$$;
COMMENT ON FUNCTION internal.workspace_by_slug(text) IS
  'The live workspace with this slug, or NULL. Owned by flowtrack_resolver (BYPASSRLS, no other rights).';

-- The public entry point: POST /rpc/submit_form as anon.
CREATE FUNCTION api.submit_form(workspace_slug text, form_slug text, fields jsonb, submission_id text DEFAULT NULL)
RETURNS TABLE (submission text, accepted boolean, executions_started integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    f api.forms;
    field record;
    value jsonb;
    lead api.leads;
    sub_id text := coalesce(submit_form.submission_id, gen_random_uuid()::text);
    core constant text[] := ARRAY['email', 'first_name', 'last_name', 'phone', 'company'];
    -- Answers to questions the form does not declare are kept too.
    custom jsonb := fields - core;
    started integer := 0;
    wf record;
    ws uuid;
BEGIN
    PERFORM internal.check_payload_size('fields', fields);
    IF fields IS NULL OR jsonb_typeof(fields) <> 'object' THEN
        RAISE EXCEPTION 'fields: must be a JSON object of answers'
            USING ERRCODE = '22023', HINT = 'Send {"fields": {"email": "...", ...}}.';
    END IF;
    PERFORM internal.check_json_depth('fields', fields);
    -- RLS hides every form until we act for its workspace; the slug
    -- resolver is the one function that may look across tenants. One
    -- message for an unknown workspace and an unknown form leaks nothing.
    ws := internal.workspace_by_slug(workspace_slug);
    IF ws IS NOT NULL THEN
        PERFORM flowtrack.act_for(ws, 'member');
    END IF;
    SELECT fo.* INTO f FROM api.forms fo
     WHERE fo.workspace_id = ws AND fo.slug = form_slug
       AND fo.deleted_at IS NULL AND fo.is_active;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'form: no form "%" at "%"', form_slug, workspace_slug
            USING ERRCODE = 'PT404', HINT = 'Check the form address /p/{workspace}/{form}.';
    END IF;
    FOR field IN SELECT * FROM api.form_fields ff WHERE ff.form_id = f.id ORDER BY ff.position LOOP
        value := fields -> field.field_key;
        IF value IS NULL OR value = 'null' OR value = '""' THEN
            IF field.required THEN
                RAISE EXCEPTION '%: this field is required', field.field_key
                    USING ERRCODE = '23502', HINT = format('Fill in "%s".', field.label);
            END IF;
            CONTINUE;
        END IF;
        IF field.field_type = 'email' AND NOT (value #>> '{}') ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' THEN
            RAISE EXCEPTION '%: "%" is not a valid email address', field.field_key, value #>> '{}'
                USING ERRCODE = '23514', HINT = 'Use the form name@example.com.';
        ELSIF field.field_type = 'number' AND jsonb_typeof(value) <> 'number'
              AND NOT (value #>> '{}') ~ '^-?[0-9]+(\.[0-9]+)?$' THEN
            RAISE EXCEPTION '%: "%" is not a number', field.field_key, value #>> '{}'
                USING ERRCODE = '22P02', HINT = 'Send digits, e.g. 1500.';
        ELSIF field.field_type = 'select' AND field.options IS NOT NULL AND NOT field.options @> jsonb_build_array(value) THEN
            RAISE EXCEPTION '%: "%" is not one of the options', field.field_key, value #>> '{}'
                USING ERRCODE = '22023', HINT = format('Choose one of %s.', field.options);
        END IF;
        IF field.field_type = 'number' AND jsonb_typeof(value) = 'string' THEN
            value := to_jsonb((value #>> '{}')::numeric);
        END IF;
        IF NOT field.field_key = ANY (core) THEN
            custom := custom || jsonb_build_object(field.field_key, value);
        END IF;
    END LOOP;
    IF fields ->> 'email' IS NULL THEN
        RAISE EXCEPTION 'email: a form submission must include an email'
            USING ERRCODE = '23502', HINT = 'Add an email field to the form.';
    END IF;

    -- A submission proves nothing about who owns the email address, so it
    -- may create a lead but never rewrite one: for a lead that exists it
    -- only fills what is empty (a NULL or '' column, a custom field the lead
    -- lacks). Every answer is kept in the FORM_SUBMITTED event below, and
    -- the workflows this submission starts see them as trigger.fields.
    INSERT INTO api.leads AS l (workspace_id, email, first_name, last_name, phone, company, source, custom_fields)
    VALUES (f.workspace_id, fields ->> 'email', nullif(fields ->> 'first_name', ''), nullif(fields ->> 'last_name', ''),
            nullif(fields ->> 'phone', ''), nullif(fields ->> 'company', ''), 'form', custom)
    ON CONFLICT (workspace_id, email) WHERE deleted_at IS NULL DO UPDATE
       SET first_name = coalesce(nullif(l.first_name, ''), excluded.first_name),
           last_name = coalesce(nullif(l.last_name, ''), excluded.last_name),
           phone = coalesce(nullif(l.phone, ''), excluded.phone),
           company = coalesce(nullif(l.company, ''), excluded.company),
           custom_fields = excluded.custom_fields || l.custom_fields
    RETURNING l.* INTO lead;
    INSERT INTO api.lead_events (workspace_id, lead_id, event_type, source, payload)
    VALUES (f.workspace_id, lead.id, 'FORM_SUBMITTED', 'form',
            jsonb_build_object('form', f.slug, 'submission_id', sub_id, 'fields', fields));

    -- Every active workflow whose form trigger names this form runs once per submission.
    FOR wf IN SELECT DISTINCT w.id FROM api.workflows w
                JOIN api.workflow_nodes n ON n.workflow_id = w.id AND n.workspace_id = w.workspace_id
               WHERE w.workspace_id = f.workspace_id AND w.status = 'active' AND w.deleted_at IS NULL
                 AND n.node_type = 'TRIGGER_FORM' AND n.config ->> 'form_id' = f.slug LOOP
        PERFORM internal.start_execution(f.workspace_id, wf.id, 'form',
                                         jsonb_build_object('lead', to_jsonb(lead), 'form', f.slug, 'fields', fields),
                                         'form:' || sub_id, lead.id);
        started := started + 1;
    END LOOP;
    -- Nothing about the lead goes back to an anonymous caller.
    RETURN QUERY SELECT sub_id, true, started;
END
$$;
COMMENT ON FUNCTION api.submit_form(text, text, jsonb, text) IS
  'Public form submission (anon): validates the answers against the form''s fields (size, nesting, types), creates the lead for a new email or only fills the empty fields of an existing one (never overwrites), logs FORM_SUBMITTED with every answer and starts every active workflow triggered by this form. Idempotent per submission_id.';
GRANT EXECUTE ON FUNCTION api.submit_form(text, text, jsonb, text) TO anon, authenticated;

-- What /p/{workspace}/{form} renders: the form's name and its questions, and
-- nothing else (not its settings, ids or workspace). STABLE, so PostgREST
-- serves it over GET. Unknown workspace, unknown form, inactive or deleted
-- form: the same PT404, so a stranger learns nothing about which exists.
CREATE FUNCTION api.public_form(workspace_slug text, form_slug text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.workspace_by_slug(workspace_slug);
    f api.forms;
BEGIN
    IF ws IS NOT NULL THEN
        PERFORM flowtrack.act_for(ws, 'viewer');
    END IF;
    SELECT fo.* INTO f FROM api.forms fo
     WHERE fo.workspace_id = ws AND fo.slug = form_slug AND fo.deleted_at IS NULL AND fo.is_active;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'form: no form "%" at "%"', form_slug, workspace_slug
            USING ERRCODE = 'PT404', HINT = 'Check the form address /p/{workspace}/{form}.';
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'workspace_slug', workspace_slug, 'form_slug', f.slug, 'name', f.name,
        'fields', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                'key', ff.field_key, 'label', ff.label, 'type', ff.field_type,
                                'required', ff.required, 'options', ff.options) ORDER BY ff.position, ff.field_key)
                              FROM api.form_fields ff WHERE ff.workspace_id = ws AND ff.form_id = f.id), '[]'::jsonb));
END
$$;
COMMENT ON FUNCTION api.public_form(text, text) IS
  'Public (anon, GET /rpc/public_form?workspace_slug=&form_slug=): an active form''s name and its fields in order (key, label, type, required, options), which is what submit_form validates against. The same PT404 for an unknown workspace or form.';
GRANT EXECUTE ON FUNCTION api.public_form(text, text) TO anon, authenticated;

-- Ownership of the resolver goes to a role that bypasses RLS and holds
-- nothing but SELECT on workspaces (superuser only).
RESET ROLE;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'flowtrack_resolver') THEN
        CREATE ROLE flowtrack_resolver NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
END
$$;
COMMENT ON ROLE flowtrack_resolver IS
  'Owns the few lookups public entry points need across tenants (slug -> workspace). BYPASSRLS, no other privileges.';
GRANT USAGE ON SCHEMA api TO flowtrack_resolver;
GRANT SELECT (id, slug, deleted_at) ON api.workspaces TO flowtrack_resolver;
ALTER FUNCTION internal.workspace_by_slug(text) OWNER TO flowtrack_resolver;
GRANT USAGE ON SCHEMA internal TO flowtrack_resolver;
GRANT EXECUTE ON FUNCTION internal.workspace_by_slug(text) TO flowtrack_owner;
