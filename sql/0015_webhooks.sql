-- Webhooks both ways. Inbound: a provider (Calendly, a form tool, anything)
-- posts to a secret token URL that triggers a workflow. Outbound: workspace
-- endpoints subscribed to events (lead.created, lead.status_changed,
-- execution.completed, execution.failed) get deliveries through the worker,
-- signed per the Standard Webhooks spec with the endpoint's own secret
-- (encrypted at rest, shown once, rotated with an overlap), retried by the
-- queue, logged in webhook_deliveries, and an endpoint that keeps failing is
-- switched off.
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
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id         uuid NOT NULL DEFAULT flowtrack.current_workspace_id()
                         REFERENCES api.workspaces (id) ON DELETE CASCADE,
    url                  text NOT NULL CONSTRAINT webhook_endpoints_url_format CHECK (url ~ '^https?://[^\s/]+' AND length(url) <= 2000),
    events               text[] NOT NULL CONSTRAINT webhook_endpoints_events_known
                         CHECK (events <@ ARRAY['lead.created', 'lead.status_changed', 'execution.completed', 'execution.failed']
                                AND cardinality(events) > 0),
    description          text CHECK (length(description) <= 500),
    is_active            boolean NOT NULL DEFAULT true,
    timeout_ms           integer NOT NULL DEFAULT 10000 CHECK (timeout_ms BETWEEN 1000 AND 30000),
    failure_threshold    integer NOT NULL DEFAULT 10 CHECK (failure_threshold BETWEEN 1 AND 1000),
    consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    disabled_at          timestamptz,
    disabled_reason      text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    deleted_at           timestamptz,
    UNIQUE (workspace_id, id)
);
-- Every event of a workspace (a lead insert, a finished execution) asks this
-- index whether anyone listens: one probe by workspace, whatever the number
-- of endpoints in other workspaces (a GIN index on events answered with
-- every workspace's subscribers to that event, filtered afterwards).
CREATE INDEX webhook_endpoints_listening ON api.webhook_endpoints (workspace_id) WHERE is_active AND deleted_at IS NULL;
COMMENT ON TABLE api.webhook_endpoints IS
  'Outgoing webhook subscriptions: which events to POST to which URL, signed per the Standard Webhooks spec with the endpoint''s own secret. Made by api.create_webhook_endpoint, the one place the secret is shown (no direct INSERT: such a row would have a secret nobody saw). The secret itself lives encrypted in internal.webhook_secrets.';
COMMENT ON COLUMN api.webhook_endpoints.url IS 'Where deliveries are POSTed. Typed by the tenant: the worker''s HTTP module refuses private and loopback addresses.';
COMMENT ON COLUMN api.webhook_endpoints.events IS 'Event types this endpoint receives: lead.created, lead.status_changed, execution.completed, execution.failed.';
COMMENT ON COLUMN api.webhook_endpoints.is_active IS
  'false: no new deliveries, and queued ones fail. Set false by an owner or admin, or by FlowTrack after failure_threshold consecutive failed deliveries; set true (or call enable_webhook_endpoint) to resume, which resets consecutive_failures.';
COMMENT ON COLUMN api.webhook_endpoints.timeout_ms IS 'Each delivery attempt gives up after this long (1 to 30 s) and counts as failed.';
COMMENT ON COLUMN api.webhook_endpoints.failure_threshold IS 'Consecutive failed deliveries (each after all its retries) that disable the endpoint.';
COMMENT ON COLUMN api.webhook_endpoints.consecutive_failures IS 'Failed deliveries since the last successful one or re-enable. Written by FlowTrack only.';
COMMENT ON COLUMN api.webhook_endpoints.disabled_at IS 'When is_active last became false; NULL while active.';
COMMENT ON COLUMN api.webhook_endpoints.disabled_reason IS 'Why the endpoint was disabled (by a person, or the failures that disabled it); NULL while active.';
COMMENT ON COLUMN api.webhook_endpoints.deleted_at IS 'Soft delete. Setting it destroys the endpoint''s secrets at once.';
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
    finished_at     timestamptz,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX webhook_deliveries_endpoint ON api.webhook_deliveries (workspace_id, endpoint_id, created_at DESC);
CREATE INDEX webhook_deliveries_job ON api.webhook_deliveries (job_id);
-- The daily-stats rollup reads the deliveries that ended since its watermark.
CREATE INDEX webhook_deliveries_finished ON api.webhook_deliveries (finished_at) WHERE finished_at IS NOT NULL;
COMMENT ON COLUMN api.webhook_deliveries.finished_at IS 'When the delivery ended: succeeded, or failed for good (not set while retrying).';
COMMENT ON TABLE api.webhook_deliveries IS
  'One row per event sent to an endpoint, updated after every attempt by internal.record_delivery: status, attempts, the last HTTP status, response (first 2 KB), duration and error. id is the webhook-id header, the same on every attempt. Partitioned monthly.';
-- Deliveries: 180 days. The schema states no period; this is the longest an
-- execution is kept (failed runs, seed 002), so a kept execution always
-- still shows its deliveries.
SELECT internal.manage_partitions('api.webhook_deliveries', 'monthly', premake => 4, retention => interval '180 days');

CREATE TABLE api.webhook_endpoint_events (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id  uuid NOT NULL,
    endpoint_id   uuid NOT NULL,
    event         text NOT NULL CHECK (event IN ('created', 'secret_rotated', 'disabled', 'enabled')),
    reason        text,
    actor_user_id uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoint_events_endpoint_fk FOREIGN KEY (workspace_id, endpoint_id)
        REFERENCES api.webhook_endpoints (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_endpoint_events_endpoint ON api.webhook_endpoint_events (workspace_id, endpoint_id, created_at DESC);
COMMENT ON TABLE api.webhook_endpoint_events IS
  'The life of an endpoint: created, secret rotations, disabled (by a person or after failure_threshold consecutive failed deliveries, with the reason) and re-enabled. Written by FlowTrack only. Not lead_events: those are about leads.';
COMMENT ON COLUMN api.webhook_endpoint_events.actor_user_id IS 'The user who acted; NULL when FlowTrack did (auto-disable).';

SELECT flowtrack.enable_tenant_isolation(t, ARRAY['owner', 'admin'], key_scope => 'webhooks')
  FROM unnest(ARRAY['api.inbound_webhooks', 'api.webhook_endpoints', 'api.webhook_deliveries',
                    'api.webhook_endpoint_events']::regclass[]) AS t;
-- Rows are made only by create_inbound_webhook and create_webhook_endpoint,
-- the one place a token or a secret is shown; owners and admins may switch a
-- hook off, change an endpoint's target and limits, or delete either.
GRANT SELECT, DELETE, UPDATE (is_active) ON api.inbound_webhooks TO authenticated;
GRANT SELECT, DELETE ON api.webhook_endpoints TO authenticated;
GRANT UPDATE (url, events, description, is_active, timeout_ms, failure_threshold, deleted_at)
    ON api.webhook_endpoints TO authenticated;
GRANT SELECT ON api.webhook_deliveries, api.webhook_endpoint_events TO authenticated;

-- Signing secrets. Standard Webhooks signs with HMAC-SHA256 under a secret
-- both sides hold, so unlike a token it cannot be kept as a hash: it is
-- encrypted with the extension's AES-256-GCM, like connection credentials,
-- in a table no API role and not the worker can read.
CREATE TABLE internal.webhook_secrets (
    endpoint_id  uuid NOT NULL REFERENCES api.webhook_endpoints (id) ON DELETE CASCADE,
    generation   integer NOT NULL CHECK (generation > 0),
    workspace_id uuid NOT NULL REFERENCES api.workspaces (id) ON DELETE CASCADE,
    key_id       text NOT NULL,
    ciphertext   bytea NOT NULL CHECK (octet_length(ciphertext) >= 29),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    PRIMARY KEY (endpoint_id, generation)
);
CREATE INDEX webhook_secrets_workspace_id ON internal.webhook_secrets (workspace_id);
CREATE INDEX webhook_secrets_key_id ON internal.webhook_secrets (key_id);
REVOKE ALL ON internal.webhook_secrets FROM PUBLIC;
COMMENT ON TABLE internal.webhook_secrets IS
  'Signing secrets of api.webhook_endpoints, AES-256-GCM encrypted by flowtrack.encrypt_secret with aad internal.webhook_secret_aad(endpoint, generation). One row per generation: the current one (expires_at NULL) and, during a rotation''s overlap, the previous ones. No API role or the worker reads the table; the worker gets plaintext only through internal.webhook_signing_secrets, under a live lease.';
COMMENT ON COLUMN internal.webhook_secrets.generation IS '1 at creation, one more per rotation; part of the aad.';
COMMENT ON COLUMN internal.webhook_secrets.ciphertext IS
  'version byte (1) || 12-byte random nonce || AES-256-GCM ciphertext and tag of the secret''s base64 text (the part after whsec_).';
COMMENT ON COLUMN internal.webhook_secrets.expires_at IS 'NULL for the current secret; set by a rotation to the end of its overlap, after which nothing signs with it.';

CREATE FUNCTION internal.webhook_secret_aad(endpoint_id uuid, generation integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'webhook_secret:' || endpoint_id::text || ':' || generation::text
$$;
COMMENT ON FUNCTION internal.webhook_secret_aad(uuid, integer) IS
  'Associated data binding a webhook secret''s ciphertext to its endpoint and generation: copied to another row, it never decrypts.';

CREATE FUNCTION internal.new_webhook_secret() RETURNS text
LANGUAGE sql VOLATILE AS $$
    -- 32 bytes: SHA-256 over three random UUIDs (366 random bits).
    SELECT pg_catalog.encode(pg_catalog.sha256(pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
                                               || pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
                                               || pg_catalog.uuid_send(pg_catalog.gen_random_uuid())), 'base64')
$$;
COMMENT ON FUNCTION internal.new_webhook_secret() IS
  'A fresh signing secret: base64 of 32 random-looking bytes (the whsec_ prefix is added when it is shown or used).';

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

-- Owners and admins (the write roles of the webhook tables) manage hooks,
-- inbound and outgoing.
CREATE FUNCTION internal.require_hook_manager() RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
DECLARE
    ws uuid := internal.require_workspace(true);
BEGIN
    IF flowtrack.current_workspace_role() NOT IN ('owner', 'admin') THEN
        RAISE EXCEPTION 'workspace_role: only owners and admins manage webhooks'
            USING ERRCODE = '42501', HINT = 'Ask an owner or admin of the workspace.';
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

-- ------------------------------------------------------------ outbound ----

-- Clear refusals for what the CHECK constraints hold, on every write path
-- (create_webhook_endpoint and PATCH alike).
CREATE FUNCTION internal.check_webhook_endpoint() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    known constant text[] := ARRAY['lead.created', 'lead.status_changed', 'execution.completed', 'execution.failed'];
    unknown text;
BEGIN
    IF NEW.url IS NULL OR NEW.url !~ '^https?://[^\s/]+' THEN
        RAISE EXCEPTION 'url: must be an http:// or https:// URL'
            USING ERRCODE = '22023', HINT = 'For example https://example.com/hooks/flowtrack.';
    END IF;
    IF pg_catalog.length(NEW.url) > 2000 THEN
        RAISE EXCEPTION 'url: at most 2000 characters'
            USING ERRCODE = '22001', HINT = 'Use a shorter URL; put parameters in the receiver''s configuration.';
    END IF;
    IF NEW.events IS NULL OR pg_catalog.cardinality(NEW.events) = 0 THEN
        RAISE EXCEPTION 'events: name at least one event'
            USING ERRCODE = '22023', HINT = 'Events: ' || pg_catalog.array_to_string(known, ', ') || '.';
    END IF;
    SELECT e INTO unknown FROM pg_catalog.unnest(NEW.events) e WHERE e IS NULL OR e <> ALL (known) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'events: unknown event "%"', unknown
            USING ERRCODE = '22023', HINT = 'Events: ' || pg_catalog.array_to_string(known, ', ') || '.';
    END IF;
    IF pg_catalog.length(NEW.description) > 500 THEN
        RAISE EXCEPTION 'description: at most 500 characters'
            USING ERRCODE = '22001', HINT = 'Keep the description short.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.check_webhook_endpoint() IS
  'BEFORE INSERT/UPDATE on webhook_endpoints: url, events and description refused with the field named (22023, 22001) instead of a bare CHECK violation.';
CREATE TRIGGER check_fields BEFORE INSERT OR UPDATE OF url, events, description ON api.webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION internal.check_webhook_endpoint();

-- is_active has one meaning whoever flips it: false stamps when and why,
-- true starts counting failures afresh.
CREATE FUNCTION internal.webhook_endpoint_switched() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.is_active THEN
        NEW.consecutive_failures := 0;
        NEW.disabled_at := NULL;
        NEW.disabled_reason := NULL;
    ELSE
        NEW.disabled_at := pg_catalog.now();
        NEW.disabled_reason := coalesce(NEW.disabled_reason, 'disabled by an owner or admin');
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.webhook_endpoint_switched() IS
  'BEFORE UPDATE OF is_active on webhook_endpoints when it changes: re-enabling resets consecutive_failures and clears disabled_at/reason; disabling stamps them (the reason given by record_delivery, else "disabled by an owner or admin").';
CREATE TRIGGER switched BEFORE UPDATE OF is_active ON api.webhook_endpoints
    FOR EACH ROW WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active)
    EXECUTE FUNCTION internal.webhook_endpoint_switched();

CREATE FUNCTION internal.log_webhook_endpoint_switch() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
BEGIN
    PERFORM flowtrack.act_for(NEW.workspace_id, 'owner');
    INSERT INTO api.webhook_endpoint_events (workspace_id, endpoint_id, event, reason, actor_user_id)
    VALUES (NEW.workspace_id, NEW.id, CASE WHEN NEW.is_active THEN 'enabled' ELSE 'disabled' END,
            NEW.disabled_reason, flowtrack.current_user_id());
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.log_webhook_endpoint_switch() IS
  'AFTER UPDATE OF is_active on webhook_endpoints when it changes: records an enabled or disabled event with the reason and the acting user (NULL for FlowTrack itself).';
CREATE TRIGGER log_switch AFTER UPDATE OF is_active ON api.webhook_endpoints
    FOR EACH ROW WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active)
    EXECUTE FUNCTION internal.log_webhook_endpoint_switch();

-- Soft-deleting an endpoint destroys its secrets in the same statement.
CREATE FUNCTION internal.forget_webhook_secrets() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM internal.webhook_secrets s WHERE s.endpoint_id = NEW.id;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.forget_webhook_secrets() IS
  'BEFORE UPDATE on webhook_endpoints when deleted_at is set: deletes the endpoint''s encrypted secrets.';
CREATE TRIGGER forget_secrets BEFORE UPDATE OF deleted_at ON api.webhook_endpoints
    FOR EACH ROW WHEN (NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL)
    EXECUTE FUNCTION internal.forget_webhook_secrets();

-- Seals a secret as the given generation of an endpoint's.
CREATE FUNCTION internal.store_webhook_secret(endpoint_id uuid, workspace_id uuid, generation integer, secret text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    sealed record;
BEGIN
    SELECT * INTO sealed
      FROM flowtrack.encrypt_secret(secret, internal.webhook_secret_aad(endpoint_id, generation));
    INSERT INTO internal.webhook_secrets (endpoint_id, generation, workspace_id, key_id, ciphertext)
    VALUES (store_webhook_secret.endpoint_id, store_webhook_secret.generation, store_webhook_secret.workspace_id,
            sealed.key_id, sealed.ciphertext);
END
$$;
COMMENT ON FUNCTION internal.store_webhook_secret(uuid, uuid, integer, text) IS
  'Encrypts secret (base64, without whsec_) and stores it as generation of the endpoint''s secrets. Called by the definers that show it.';

CREATE FUNCTION api.create_webhook_endpoint(url text, events text[], description text DEFAULT NULL)
RETURNS TABLE (id uuid, secret text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_hook_manager();
    key text := internal.new_webhook_secret();
BEGIN
    INSERT INTO api.webhook_endpoints AS e (workspace_id, url, events, description)
    VALUES (ws, create_webhook_endpoint.url, create_webhook_endpoint.events, create_webhook_endpoint.description)
    RETURNING e.id INTO id;
    PERFORM internal.store_webhook_secret(id, ws, 1, key);
    INSERT INTO api.webhook_endpoint_events (workspace_id, endpoint_id, event, actor_user_id)
    VALUES (ws, id, 'created', flowtrack.current_user_id());
    secret := 'whsec_' || key;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION api.create_webhook_endpoint(text, text[], text) IS
  'Owners and admins: a new outgoing webhook endpoint of the caller''s workspace, and its signing secret (whsec_ + base64, the Standard Webhooks format). This is the only time the secret is shown: it is stored encrypted and no API role can read it back; rotate_webhook_secret makes a new one.';
GRANT EXECUTE ON FUNCTION api.create_webhook_endpoint(text, text[], text) TO authenticated;

CREATE FUNCTION api.rotate_webhook_secret(endpoint_id uuid, overlap interval DEFAULT '24 hours')
RETURNS TABLE (id uuid, secret text, previous_valid_until timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_hook_manager();
    key text := internal.new_webhook_secret();
    next_generation integer;
BEGIN
    IF overlap IS NULL OR overlap < interval '0' OR overlap > interval '7 days' THEN
        RAISE EXCEPTION 'overlap: must be between 0 and 7 days'
            USING ERRCODE = '22023',
                  HINT = 'How long the old secret keeps signing next to the new one, e.g. ''24 hours''; 0 drops it at once.';
    END IF;
    -- The row lock makes concurrent rotations of one endpoint take turns.
    PERFORM 1 FROM api.webhook_endpoints e
      WHERE e.id = rotate_webhook_secret.endpoint_id AND e.workspace_id = ws AND e.deleted_at IS NULL
        FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint_id: no webhook endpoint % in this workspace', endpoint_id
            USING ERRCODE = 'PT404', HINT = 'List endpoints with GET /webhook_endpoints.';
    END IF;
    DELETE FROM internal.webhook_secrets s
     WHERE s.endpoint_id = rotate_webhook_secret.endpoint_id AND s.expires_at <= pg_catalog.now();
    previous_valid_until := pg_catalog.now() + overlap;
    UPDATE internal.webhook_secrets s
       SET expires_at = previous_valid_until
     WHERE s.endpoint_id = rotate_webhook_secret.endpoint_id
       AND (s.expires_at IS NULL OR s.expires_at > previous_valid_until);
    SELECT coalesce(pg_catalog.max(s.generation), 0) + 1 INTO next_generation
      FROM internal.webhook_secrets s WHERE s.endpoint_id = rotate_webhook_secret.endpoint_id;
    PERFORM internal.store_webhook_secret(rotate_webhook_secret.endpoint_id, ws, next_generation, key);
    INSERT INTO api.webhook_endpoint_events (workspace_id, endpoint_id, event, reason, actor_user_id)
    VALUES (ws, rotate_webhook_secret.endpoint_id, 'secret_rotated',
            pg_catalog.format('generation %s; the previous secret signs until %s', next_generation, previous_valid_until),
            flowtrack.current_user_id());
    id := rotate_webhook_secret.endpoint_id;
    secret := 'whsec_' || key;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION api.rotate_webhook_secret(uuid, interval) IS
  'Owners and admins: a new signing secret for an endpoint, shown this once. Until previous_valid_until (now + overlap, at most 7 days; 0 drops it at once) deliveries carry a signature under each secret still valid, so receivers switch without a gap; after it only the new one signs.';
GRANT EXECUTE ON FUNCTION api.rotate_webhook_secret(uuid, interval) TO authenticated;

CREATE FUNCTION api.enable_webhook_endpoint(endpoint_id uuid)
RETURNS api.webhook_endpoints
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_hook_manager();
    ep api.webhook_endpoints;
BEGIN
    UPDATE api.webhook_endpoints e SET is_active = true
     WHERE e.id = enable_webhook_endpoint.endpoint_id AND e.workspace_id = ws AND e.deleted_at IS NULL
    RETURNING e.* INTO ep;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint_id: no webhook endpoint % in this workspace', endpoint_id
            USING ERRCODE = 'PT404', HINT = 'List endpoints with GET /webhook_endpoints.';
    END IF;
    RETURN ep;
END
$$;
COMMENT ON FUNCTION api.enable_webhook_endpoint(uuid) IS
  'Owners and admins: re-enables an endpoint (after an auto-disable, say), resetting its consecutive failures; recorded as an enabled event. New events are delivered again; deliveries that failed while it was off are not resent.';
GRANT EXECUTE ON FUNCTION api.enable_webhook_endpoint(uuid) TO authenticated;

-- Fan an event out to every subscribed endpoint of the workspace, as
-- deliveries plus jobs in the caller's transaction. With no endpoint
-- listening this is one probe of webhook_endpoints_listening.
CREATE FUNCTION internal.emit_event(ws uuid, event_type text, data jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    ep record;
    delivery uuid;
    body jsonb;
    n integer := 0;
BEGIN
    PERFORM flowtrack.act_for(ws, 'owner');
    FOR ep IN SELECT e.id, e.url, e.timeout_ms FROM api.webhook_endpoints e
               WHERE e.workspace_id = ws AND e.is_active AND e.deleted_at IS NULL
                 AND e.events @> ARRAY[event_type] LOOP
        delivery := pg_catalog.gen_random_uuid();
        -- Standard Webhooks' payload shape: type, timestamp, data.
        body := pg_catalog.jsonb_build_object('id', delivery, 'type', event_type, 'timestamp', pg_catalog.now(),
                                              'workspace_id', ws, 'data', data);
        INSERT INTO api.webhook_deliveries (id, workspace_id, endpoint_id, event_type, payload, job_id)
        VALUES (delivery, ws, ep.id, event_type, body,
                internal.enqueue_job('webhook',
                    pg_catalog.jsonb_build_object('endpoint_id', ep.id, 'delivery_id', delivery, 'url', ep.url,
                                                  'timeout_ms', ep.timeout_ms, 'body', body),
                    ws));
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION internal.emit_event(uuid, text, jsonb) IS
  'Queues a delivery of event_type to every active endpoint of the workspace subscribed to it: a webhook_deliveries row (its id is the webhook-id) and a webhook job carrying the endpoint, URL, timeout and body. Returns how many.';

CREATE FUNCTION internal.emit_lead_created() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM internal.emit_event(n.workspace_id, 'lead.created', pg_catalog.to_jsonb(n)) FROM new_rows n;
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
                                pg_catalog.jsonb_build_object('lead', pg_catalog.to_jsonb(NEW), 'from', OLD.status,
                                                              'to', NEW.status));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.emit_lead_status_changed() IS 'AFTER UPDATE OF status on leads: emits lead.status_changed.';
CREATE TRIGGER emit_status_changed AFTER UPDATE OF status ON api.leads
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION internal.emit_lead_status_changed();

-- A row trigger whose WHEN clause only lets through the update that ends an
-- execution: the engine rewrites status on every advance, and a statement
-- trigger would need transition tables, which PostgreSQL refuses with a
-- column list, so it would capture every update of every execution.
CREATE FUNCTION internal.emit_execution_finished() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM internal.emit_event(NEW.workspace_id, 'execution.' || NEW.status,
        pg_catalog.jsonb_build_object('execution_id', NEW.id, 'workflow_id', NEW.workflow_id, 'version', NEW.version,
                                      'status', NEW.status, 'trigger_type', NEW.trigger_type, 'lead_id', NEW.lead_id,
                                      'step_count', NEW.step_count, 'error', NEW.error,
                                      'started_at', NEW.started_at, 'completed_at', NEW.completed_at));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.emit_execution_finished() IS
  'AFTER UPDATE OF status on workflow_executions when it becomes completed or failed: emits execution.completed or execution.failed (ids, status, error, timing; not the context).';
CREATE TRIGGER emit_finished AFTER UPDATE OF status ON api.workflow_executions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('completed', 'failed'))
    EXECUTE FUNCTION internal.emit_execution_finished();

-- The worker's only way to a plaintext signing secret: for the webhook job
-- it holds a live lease on, the secrets of that job's endpoint.
CREATE FUNCTION internal.webhook_signing_secrets(job_id uuid, fence integer) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    job record;
    endpoint uuid;
    ep record;
    secrets text[];
BEGIN
    SELECT j.workspace_id, j.payload INTO job FROM internal.jobs j
     WHERE j.id = webhook_signing_secrets.job_id AND j.kind = 'webhook' AND j.status = 'running'
       AND j.claims = webhook_signing_secrets.fence AND j.locked_until > pg_catalog.now();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job_id: no live lease on webhook job % under fence %', job_id, fence
            USING ERRCODE = 'PT409', HINT = 'The lease expired or the job was claimed again: stop working on it.';
    END IF;
    endpoint := (job.payload ->> 'endpoint_id')::uuid;
    IF endpoint IS NULL OR job.workspace_id IS NULL THEN
        RAISE EXCEPTION 'job_id: webhook job % is not an endpoint delivery', job_id
            USING ERRCODE = '22023', HINT = 'Only deliveries queued by internal.emit_event are signed.';
    END IF;
    PERFORM flowtrack.act_for(job.workspace_id, 'owner');
    SELECT e.is_active, e.deleted_at INTO ep FROM api.webhook_endpoints e
     WHERE e.id = endpoint AND e.workspace_id = job.workspace_id;
    IF NOT FOUND OR ep.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'endpoint_id: webhook endpoint % was deleted', endpoint
            USING ERRCODE = 'PT404', HINT = 'Deliveries to a deleted endpoint are not sent.';
    END IF;
    IF NOT ep.is_active THEN
        RAISE EXCEPTION 'endpoint_id: webhook endpoint % is disabled', endpoint
            USING ERRCODE = 'PT409', HINT = 'An owner or admin re-enables it with enable_webhook_endpoint.';
    END IF;
    SELECT pg_catalog.array_agg('whsec_' || flowtrack.decrypt_secret(s.key_id, s.ciphertext,
                                                                      internal.webhook_secret_aad(s.endpoint_id, s.generation))
                                ORDER BY s.generation DESC)
      INTO secrets
      FROM internal.webhook_secrets s
     WHERE s.endpoint_id = endpoint AND (s.expires_at IS NULL OR s.expires_at > pg_catalog.now());
    IF secrets IS NULL THEN
        RAISE EXCEPTION 'endpoint_id: webhook endpoint % has no signing secret', endpoint
            USING ERRCODE = 'PT409', HINT = 'An owner or admin makes one with rotate_webhook_secret.';
    END IF;
    RETURN secrets;
END
$$;
COMMENT ON FUNCTION internal.webhook_signing_secrets(uuid, integer) IS
  'For the worker holding the live lease (job_id, fence) on a webhook delivery: the endpoint''s valid signing secrets (whsec_...), newest first; more than one during a rotation''s overlap. PT409 without a live lease or when the endpoint is disabled, PT404 when it was deleted. Executable only by flowtrack_worker.';
REVOKE EXECUTE ON FUNCTION internal.webhook_signing_secrets(uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION internal.webhook_signing_secrets(uuid, integer) TO flowtrack_worker;

-- The queue reports every webhook-kind outcome here, in the transaction
-- that settles the job: the delivery row follows the job, and an endpoint
-- that keeps failing is switched off.
CREATE FUNCTION internal.record_delivery(job_id uuid, ws uuid, outcome text, attempts integer, result jsonb, error text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' SET enable_nestloop = on AS $$
DECLARE
    endpoint uuid;
    failures integer;
BEGIN
    IF outcome IS NULL OR outcome NOT IN ('succeeded', 'retrying', 'failed') THEN
        RAISE EXCEPTION 'outcome: must be succeeded, retrying or failed, not %', coalesce(outcome, 'NULL')
            USING ERRCODE = '22023', HINT = 'The queue passes the job''s new state.';
    END IF;
    IF ws IS NULL THEN
        RETURN;  -- deliveries always belong to a workspace; this job is not one
    END IF;
    PERFORM flowtrack.act_for(ws, 'owner');
    UPDATE api.webhook_deliveries d
       SET status = outcome,
           attempts = record_delivery.attempts,
           response_status = CASE WHEN pg_catalog.jsonb_typeof(result -> 'status') = 'number'
                                  THEN (result ->> 'status')::numeric::integer END,
           response_body = pg_catalog.left(result ->> 'body', 2048),
           duration_ms = CASE WHEN pg_catalog.jsonb_typeof(result -> 'duration_ms') = 'number'
                              THEN least((result ->> 'duration_ms')::numeric, 2147483647)::integer END,
           last_error = pg_catalog.left(error, 2000),
           delivered_at = CASE WHEN outcome = 'succeeded' THEN pg_catalog.now() END,
           finished_at = CASE WHEN outcome <> 'retrying' THEN pg_catalog.now() END
     WHERE d.job_id = record_delivery.job_id AND d.workspace_id = ws
    RETURNING d.endpoint_id INTO endpoint;
    IF endpoint IS NULL OR outcome = 'retrying' THEN
        RETURN;  -- a workflow step's webhook, or an attempt that will be retried
    END IF;
    IF outcome = 'succeeded' THEN
        -- Written only when there is something to reset: a healthy endpoint's
        -- row is not rewritten (and locked) by every delivery.
        UPDATE api.webhook_endpoints e SET consecutive_failures = 0
         WHERE e.id = endpoint AND e.workspace_id = ws AND e.consecutive_failures > 0;
        RETURN;
    END IF;
    UPDATE api.webhook_endpoints e SET consecutive_failures = e.consecutive_failures + 1
     WHERE e.id = endpoint AND e.workspace_id = ws
    RETURNING e.consecutive_failures INTO failures;
    UPDATE api.webhook_endpoints e
       SET is_active = false,
           disabled_reason = pg_catalog.format('%s consecutive failed deliveries; the last: %s',
                                               failures, coalesce(pg_catalog.left(error, 500), 'no error reported'))
     WHERE e.id = endpoint AND e.workspace_id = ws AND e.is_active AND failures >= e.failure_threshold;
END
$$;
COMMENT ON FUNCTION internal.record_delivery(uuid, uuid, text, integer, jsonb, text) IS
  'Called by the queue for every webhook-kind job outcome (succeeded, retrying, failed = dead): copies status, attempts, the HTTP status, response excerpt (2 KB), duration and error into the job''s webhook_deliveries row. A success resets the endpoint''s consecutive failures; a failed delivery counts one, and at failure_threshold disables the endpoint (recorded as a disabled event). A no-op for webhook jobs that are not deliveries (workflow steps).';
REVOKE EXECUTE ON FUNCTION internal.record_delivery(uuid, uuid, text, integer, jsonb, text) FROM PUBLIC;

-- Key rotation for the operator, as internal.rotate_secrets is for
-- connection credentials: once both return 0 the old key can leave the key
-- file. Not SECURITY DEFINER and granted to nobody: superuser only.
CREATE FUNCTION internal.rotate_webhook_secret_keys(new_key_id text DEFAULT NULL, workspace_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target text := coalesce(new_key_id, flowtrack.active_key_id());
    n bigint;
BEGIN
    IF new_key_id IS NOT NULL THEN
        -- Refuse an unknown key before touching any row (42704 from the extension).
        PERFORM flowtrack.encrypt_secret('probe', 'rotate_webhook_secret_keys', new_key_id);
    END IF;
    UPDATE internal.webhook_secrets s
       SET (key_id, ciphertext) =
           (SELECT e.key_id, e.ciphertext
              FROM flowtrack.encrypt_secret(
                       flowtrack.decrypt_secret(s.key_id, s.ciphertext, internal.webhook_secret_aad(s.endpoint_id, s.generation)),
                       internal.webhook_secret_aad(s.endpoint_id, s.generation), target) e)
     WHERE s.key_id <> target
       AND (rotate_webhook_secret_keys.workspace_id IS NULL OR s.workspace_id = rotate_webhook_secret_keys.workspace_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION internal.rotate_webhook_secret_keys(text, uuid) IS
  'Operator (superuser) only: re-encrypts every webhook signing secret not yet under new_key_id (default: the active key), optionally one workspace''s, and returns how many. The secrets themselves do not change; receivers notice nothing.';
REVOKE EXECUTE ON FUNCTION internal.rotate_webhook_secret_keys(text, uuid) FROM PUBLIC;
RESET ROLE;
GRANT SELECT (id, workspace_id, workflow_id, token_hash, is_active) ON api.inbound_webhooks TO flowtrack_resolver;
ALTER FUNCTION internal.inbound_webhook_by_token(text) OWNER TO flowtrack_resolver;
GRANT EXECUTE ON FUNCTION internal.inbound_token_hash(text) TO flowtrack_resolver;
GRANT EXECUTE ON FUNCTION internal.inbound_webhook_by_token(text) TO flowtrack_owner;
