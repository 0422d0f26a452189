-- Webhooks both ways. Inbound: a provider (Calendly, a form tool, anything)
-- posts to a secret token URL that triggers a workflow. Outbound: workspace
-- endpoints subscribed to events (lead.created, ...) get signed deliveries
-- through the worker, with retries and a delivery log.
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

CREATE TABLE api.inbound_webhooks (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id   uuid NOT NULL DEFAULT flowtrack.current_workspace_id(),
    workflow_id    uuid NOT NULL,
    provider       text NOT NULL DEFAULT 'generic' CHECK (provider IN ('generic', 'calendly', 'typeform', 'stripe')),
    token_hash     bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    token_prefix   text NOT NULL CHECK (token_prefix ~ '^[0-9a-f]{8}$'),
    is_active      boolean NOT NULL DEFAULT true,
    total_calls    bigint NOT NULL DEFAULT 0,
    last_called_at timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inbound_webhooks_workflow_fk FOREIGN KEY (workspace_id, workflow_id)
        REFERENCES api.workflows (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX inbound_webhooks_workspace_workflow ON api.inbound_webhooks (workspace_id, workflow_id);
COMMENT ON TABLE api.inbound_webhooks IS
  'Catch-hook URLs: POST /rpc/receive_webhook with the token starts the workflow. The 64-hex-digit token is the credential: only its SHA-256 is stored, and it is shown once, by create_inbound_webhook or rotate_inbound_webhook.';
COMMENT ON COLUMN api.inbound_webhooks.token_hash IS 'SHA-256 of the token (internal.inbound_token_hash); the token itself is never stored.';
COMMENT ON COLUMN api.inbound_webhooks.token_prefix IS 'The token''s first 8 hex digits, to tell URLs apart in lists.';
CREATE TRIGGER touch BEFORE UPDATE ON api.inbound_webhooks FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

CREATE TABLE api.webhook_endpoints (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL DEFAULT flowtrack.current_workspace_id()
                 REFERENCES api.workspaces (id) ON DELETE CASCADE,
    url          text NOT NULL CONSTRAINT webhook_endpoints_url_format CHECK (url ~ '^https?://[^\s/]+' AND length(url) <= 2000),
    events       text[] NOT NULL CONSTRAINT webhook_endpoints_events_known
                 CHECK (events <@ ARRAY['lead.created', 'lead.status_changed', 'execution.completed', 'execution.failed']
                        AND cardinality(events) > 0),
    description  text,
    is_active    boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    UNIQUE (workspace_id, id)
);
CREATE INDEX webhook_endpoints_events ON api.webhook_endpoints USING gin (events) WHERE is_active AND deleted_at IS NULL;
COMMENT ON TABLE api.webhook_endpoints IS 'Outgoing webhook subscriptions: which events to POST to which URL.';
CREATE TRIGGER touch BEFORE UPDATE ON api.webhook_endpoints FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

CREATE TABLE api.webhook_deliveries (
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    workspace_id    uuid NOT NULL,
    endpoint_id     uuid NOT NULL,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'retrying', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    response_status integer,
    response_body   text,
    duration_ms     integer,
    last_error      text,
    job_id          uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX webhook_deliveries_endpoint ON api.webhook_deliveries (workspace_id, endpoint_id, created_at DESC);
CREATE INDEX webhook_deliveries_job ON api.webhook_deliveries (job_id);
COMMENT ON TABLE api.webhook_deliveries IS
  'One row per event sent to an endpoint: HTTP status, response (first 2 KB), timing and attempts. Partitioned monthly.';
SELECT internal.ensure_monthly_partitions('api.webhook_deliveries'::regclass);

SELECT flowtrack.enable_tenant_isolation(t, ARRAY['owner', 'admin'], key_scope => 'webhooks')
  FROM unnest(ARRAY['api.inbound_webhooks', 'api.webhook_endpoints', 'api.webhook_deliveries']::regclass[]) AS t;
-- Rows are made only by create_inbound_webhook, the one place a token is
-- shown; owners and admins may switch a hook off or delete it.
GRANT SELECT, DELETE, UPDATE (is_active) ON api.inbound_webhooks TO authenticated;
GRANT SELECT, DELETE ON api.webhook_endpoints TO authenticated;
SELECT internal.grant_client_writes('api.webhook_endpoints');
GRANT SELECT ON api.webhook_deliveries TO authenticated;

-- Outbound: fan an event out to every subscribed endpoint of the workspace,
-- as deliveries plus jobs in the caller's transaction.
CREATE FUNCTION internal.emit_event(ws uuid, event_type text, data jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    ep record;
    job uuid;
    body jsonb;
    n integer := 0;
BEGIN
    PERFORM flowtrack.act_for(ws, 'owner');
    FOR ep IN SELECT e.id, e.url FROM api.webhook_endpoints e
               WHERE e.workspace_id = ws AND e.is_active AND e.deleted_at IS NULL
                 AND e.events @> ARRAY[event_type] LOOP
        body := jsonb_build_object('id', gen_random_uuid(), 'type', event_type, 'workspace_id', ws,
                                   'created_at', now(), 'data', data);
        job := internal.enqueue_job('webhook',
                   jsonb_build_object('url', ep.url, 'method', 'POST', 'body', body,
                                      'headers', jsonb_build_object('X-FlowTrack-Event', event_type,
                                                                    'X-FlowTrack-Delivery', body ->> 'id')),
                   ws);
        INSERT INTO api.webhook_deliveries (id, workspace_id, endpoint_id, event_type, payload, job_id)
        VALUES ((body ->> 'id')::uuid, ws, ep.id, event_type, body, job);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION internal.emit_event(uuid, text, jsonb) IS
  'Queues a delivery of event_type to every active endpoint of the workspace subscribed to it. Returns how many.';

CREATE FUNCTION internal.emit_lead_created() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM internal.emit_event(n.workspace_id, 'lead.created', to_jsonb(n)) FROM new_rows n;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.emit_lead_created() IS 'AFTER INSERT on leads: emits lead.created to subscribed endpoints.';
CREATE TRIGGER emit_created AFTER INSERT ON api.leads
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION internal.emit_lead_created();

CREATE FUNCTION internal.emit_lead_status_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM internal.emit_event(NEW.workspace_id, 'lead.status_changed',
                                jsonb_build_object('lead', to_jsonb(NEW), 'from', OLD.status, 'to', NEW.status));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.emit_lead_status_changed() IS 'AFTER UPDATE OF status on leads: emits lead.status_changed.';
CREATE TRIGGER emit_status_changed AFTER UPDATE OF status ON api.leads
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION internal.emit_lead_status_changed();

-- The queue reports each attempt of a webhook job; the delivery row follows.
CREATE FUNCTION internal.record_delivery(job_id uuid, ws uuid, outcome text, attempts integer, result jsonb, error text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
BEGIN
    PERFORM flowtrack.act_for(ws, 'owner');
    UPDATE api.webhook_deliveries d
       SET status = outcome,
           attempts = record_delivery.attempts,
           response_status = (result ->> 'status')::integer,
           response_body = pg_catalog.left(result ->> 'body', 2048),
           duration_ms = (result ->> 'duration_ms')::integer,
           last_error = error,
           delivered_at = CASE WHEN outcome = 'succeeded' THEN pg_catalog.now() END
     WHERE d.job_id = record_delivery.job_id AND d.workspace_id = ws;
END
$$;
COMMENT ON FUNCTION internal.record_delivery(uuid, uuid, text, integer, jsonb, text) IS
  'Called by the queue after each attempt of a webhook job (outcome succeeded, retrying or failed): copies status, response excerpt, duration and error into webhook_deliveries.';
REVOKE ALL ON FUNCTION internal.record_delivery(uuid, uuid, text, integer, jsonb, text) FROM PUBLIC;

-- Inbound tokens. A token starts workflows, which a viewer may not do
-- (issue 9), and anyone who can read it can: so it is kept like an API key,
-- as a hash, and shown once to the owner or admin who makes or rotates it.
CREATE FUNCTION internal.inbound_token_hash(token text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.sha256(pg_catalog.convert_to(token, 'UTF8'))
$$;
COMMENT ON FUNCTION internal.inbound_token_hash(text) IS 'SHA-256 of an inbound webhook token, as stored in api.inbound_webhooks.token_hash.';

CREATE FUNCTION internal.new_inbound_token() RETURNS text
LANGUAGE sql VOLATILE AS $$
    -- Two random UUIDs: 244 random bits, as 64 hex digits.
    SELECT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
$$;
COMMENT ON FUNCTION internal.new_inbound_token() IS 'A fresh inbound webhook token: 64 hex digits, 244 of their bits random.';

-- Owners and admins (the write roles of inbound_webhooks) manage hooks.
CREATE FUNCTION internal.require_hook_manager() RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
DECLARE
    ws uuid := internal.require_workspace(true);
BEGIN
    IF flowtrack.current_workspace_role() NOT IN ('owner', 'admin') THEN
        RAISE EXCEPTION 'workspace_role: only owners and admins manage inbound webhooks'
            USING ERRCODE = '42501', HINT = 'Ask an owner or admin for the webhook URL.';
    END IF;
    RETURN ws;
END
$$;
COMMENT ON FUNCTION internal.require_hook_manager() IS 'The caller''s workspace when the caller is its owner or an admin; else 42501 (or PT403 without a workspace).';

CREATE FUNCTION api.create_inbound_webhook(workflow_id uuid, provider text DEFAULT 'generic')
RETURNS TABLE (id uuid, token text, token_prefix text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_hook_manager();
    secret text := internal.new_inbound_token();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM api.workflows w
                    WHERE w.id = create_inbound_webhook.workflow_id AND w.workspace_id = ws AND w.deleted_at IS NULL) THEN
        RAISE EXCEPTION 'workflow_id: no workflow % in this workspace', workflow_id
            USING ERRCODE = 'PT404', HINT = 'List workflows with GET /workflows.';
    END IF;
    IF provider IS NULL OR provider NOT IN ('generic', 'calendly', 'typeform', 'stripe') THEN
        RAISE EXCEPTION 'provider: unknown provider "%"', provider
            USING ERRCODE = '22023', HINT = 'Providers: generic, calendly, typeform, stripe.';
    END IF;
    INSERT INTO api.inbound_webhooks AS h (workspace_id, workflow_id, provider, token_hash, token_prefix)
    VALUES (ws, create_inbound_webhook.workflow_id, create_inbound_webhook.provider,
            internal.inbound_token_hash(secret), left(secret, 8))
    RETURNING h.id, h.token_prefix INTO id, token_prefix;
    token := secret;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION api.create_inbound_webhook(uuid, text) IS
  'Owners and admins: a catch-hook URL token for a workflow of the caller''s workspace. This is the only time the token is shown; only its hash is kept.';
GRANT EXECUTE ON FUNCTION api.create_inbound_webhook(uuid, text) TO authenticated;

CREATE FUNCTION api.rotate_inbound_webhook(webhook_id uuid)
RETURNS TABLE (id uuid, token text, token_prefix text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_hook_manager();
    secret text := internal.new_inbound_token();
BEGIN
    UPDATE api.inbound_webhooks h
       SET token_hash = internal.inbound_token_hash(secret), token_prefix = left(secret, 8)
     WHERE h.id = rotate_inbound_webhook.webhook_id AND h.workspace_id = ws
    RETURNING h.id, h.token_prefix INTO id, token_prefix;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook_id: no inbound webhook % in this workspace', webhook_id
            USING ERRCODE = 'PT404', HINT = 'List them with GET /inbound_webhooks.';
    END IF;
    token := secret;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION api.rotate_inbound_webhook(uuid) IS
  'Owners and admins: replaces an inbound webhook''s token and shows the new one once. The old URL stops working at once.';
GRANT EXECUTE ON FUNCTION api.rotate_inbound_webhook(uuid) TO authenticated;

-- Inbound: POST /rpc/receive_webhook as anon.
CREATE FUNCTION internal.inbound_webhook_by_token(token text) RETURNS TABLE (id uuid, workspace_id uuid, workflow_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT h.id, h.workspace_id, h.workflow_id FROM api.inbound_webhooks h
     WHERE h.token_hash = internal.inbound_token_hash(inbound_webhook_by_token.token) AND h.is_active
$$;
COMMENT ON FUNCTION internal.inbound_webhook_by_token(text) IS
  'The active inbound webhook with this token, if any. Owned by flowtrack_resolver (BYPASSRLS).';

CREATE FUNCTION api.receive_webhook(token text, payload jsonb DEFAULT '{}', event_id text DEFAULT NULL)
RETURNS TABLE (accepted boolean, execution_id uuid, duplicate boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    hook record;
    lead_id uuid;
    started record;
    lead_email text := coalesce(payload ->> 'email', payload #>> '{payload,email}', payload #>> '{invitee,email}');
BEGIN
    PERFORM internal.check_payload_size('payload', payload);
    PERFORM internal.check_json_depth('payload', payload);
    SELECT * INTO hook FROM internal.inbound_webhook_by_token(token);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'token: no active webhook has this token'
            USING ERRCODE = 'PT404', HINT = 'The token may have been rotated: ask the workspace for the current URL.';
    END IF;
    PERFORM flowtrack.act_for(hook.workspace_id, 'member');
    UPDATE api.inbound_webhooks SET total_calls = total_calls + 1, last_called_at = now() WHERE id = hook.id;
    IF lead_email IS NOT NULL THEN
        SELECT l.id INTO lead_id FROM api.leads l
         WHERE l.workspace_id = hook.workspace_id AND l.email = lead_email AND l.deleted_at IS NULL;
        IF lead_id IS NOT NULL THEN
            INSERT INTO api.lead_events (workspace_id, lead_id, event_type, source, payload)
            VALUES (hook.workspace_id, lead_id, 'WEBHOOK_RECEIVED', 'webhook', payload);
        END IF;
    END IF;
    SELECT * INTO started FROM internal.start_execution(
        hook.workspace_id, hook.workflow_id, 'webhook', payload,
        'webhook:' || coalesce(event_id, payload ->> 'event_id', payload ->> 'id', md5(payload::text)), lead_id);
    RETURN QUERY SELECT true, started.execution_id, NOT started.created;
END
$$;
COMMENT ON FUNCTION api.receive_webhook(text, jsonb, text) IS
  'Inbound provider webhook (anon): starts the hook''s workflow with the payload, once per event id (event_id, payload.event_id, payload.id or the payload hash). Links the lead by email when it exists.';
GRANT EXECUTE ON FUNCTION api.receive_webhook(text, jsonb, text) TO anon, authenticated;

RESET ROLE;
GRANT SELECT (id, workspace_id, workflow_id, token_hash, is_active) ON api.inbound_webhooks TO flowtrack_resolver;
ALTER FUNCTION internal.inbound_webhook_by_token(text) OWNER TO flowtrack_resolver;
GRANT EXECUTE ON FUNCTION internal.inbound_token_hash(text) TO flowtrack_resolver;
GRANT EXECUTE ON FUNCTION internal.inbound_webhook_by_token(text) TO flowtrack_owner;
SELECT cron.schedule('flowtrack-partitions', '17 3 * * *',
    $$SELECT internal.ensure_monthly_partitions(p::regclass)
        FROM unnest(ARRAY['api.usage_events', 'api.execution_logs', 'api.lead_events', 'api.webhook_deliveries']) AS p$$);
