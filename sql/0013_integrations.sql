-- Integrations: the global catalog of apps with their triggers and actions,
-- per-workspace connections to them, and the connections' credentials,
-- encrypted at rest (AES-256-GCM, extension/src/crypto.rs) in a table API
-- roles cannot reach. Keys live in the server-side key file named by
-- flowtrack.key_file, never in a table, so a dump holds only ciphertext.
-- Load the extension library so flowtrack.* settings are defined before
-- functions name them in SET clauses.
SELECT flowtrack.version();

-- CREATE EXTENSION (0001) made the crypto functions, and 0001 revoked EXECUTE
-- on every extension function from PUBLIC. Restated here for these three,
-- then granted to the owner alone: its SECURITY DEFINER functions below are
-- the only way in. API roles and the worker never execute them directly.
REVOKE EXECUTE ON FUNCTION flowtrack.encrypt_secret(text, text, text),
                           flowtrack.decrypt_secret(text, bytea, text),
                           flowtrack.active_key_id()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flowtrack.encrypt_secret(text, text, text),
                          flowtrack.decrypt_secret(text, bytea, text),
                          flowtrack.active_key_id()
    TO flowtrack_owner;

SET LOCAL ROLE flowtrack_owner;

-- ------------------------------------------------------------ catalog ----

CREATE TABLE api.integrations (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]{1,49}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    category    text NOT NULL
                CHECK (category IN ('communication', 'email', 'calendar', 'scheduling', 'crm', 'storage',
                                    'productivity', 'developer', 'payments', 'ai')),
    auth_type   text NOT NULL CHECK (auth_type IN ('oauth2', 'api_key', 'bearer', 'basic', 'smtp', 'none')),
    oauth_token_url text CHECK (oauth_token_url ~ '^https?://'),
    api_key_header  text CHECK (api_key_header ~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]{1,255}$'),
    api_key_prefix  text NOT NULL DEFAULT '' CHECK (length(api_key_prefix) <= 50),
    icon_url    text CHECK (icon_url ~ '^https://'),
    docs_url    text CHECK (docs_url ~ '^https://'),
    website_url text CHECK (website_url ~ '^https://'),
    is_active   boolean NOT NULL DEFAULT true,
    is_popular  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integrations_oauth_token_url CHECK ((auth_type = 'oauth2') = (oauth_token_url IS NOT NULL)),
    CONSTRAINT integrations_api_key_header CHECK (auth_type = 'api_key' OR api_key_header IS NULL)
);
CREATE INDEX integrations_category ON api.integrations (category) WHERE is_active;
COMMENT ON TABLE api.integrations IS
  'Catalog of apps FlowTrack connects to (Gmail, Slack, ...). Global, read by everyone, written only by migrations.';
COMMENT ON COLUMN api.integrations.id IS 'Stable slug, e.g. gmail; prefixes its triggers'' and actions'' ids.';
COMMENT ON COLUMN api.integrations.auth_type IS
  'How a connection authenticates, and so the shape of its credentials: oauth2 {access_token, refresh_token, client_id, client_secret}; api_key {api_key, header?}; bearer {token}; basic {username, password}; smtp {host, port, tls, username, password, from}; none.';
COMMENT ON COLUMN api.integrations.oauth_token_url IS
  'oauth2 only (and required there): the provider''s token endpoint, where the worker refreshes access tokens. From the catalog, never from a connection, so a tenant cannot point the refresh (and the client secret) elsewhere.';
COMMENT ON COLUMN api.integrations.api_key_header IS
  'api_key only: the header that carries the key (e.g. Authorization). NULL: the connection''s credentials name it ({"header": "X-Api-Key"}).';
COMMENT ON COLUMN api.integrations.api_key_prefix IS
  'Put before the key in its header, e.g. ''Bearer '' for APIs that take keys as bearer tokens.';
COMMENT ON COLUMN api.integrations.category IS 'Grouping for the app picker (email, scheduling, communication, developer, ...).';
COMMENT ON COLUMN api.integrations.icon_url IS 'HTTPS URL of the app''s icon; NULL lets the frontend use its bundled one.';
COMMENT ON COLUMN api.integrations.is_popular IS 'Shown first in the app picker.';
COMMENT ON COLUMN api.integrations.is_active IS 'false hides the app from new connections; existing connections keep working.';
CREATE TRIGGER touch BEFORE UPDATE ON api.integrations FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

CREATE TABLE api.integration_triggers (
    id               text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$'),
    integration_id   text NOT NULL REFERENCES api.integrations (id) ON DELETE CASCADE,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description      text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    type             text NOT NULL CHECK (type IN ('webhook', 'polling', 'schedule', 'manual')),
    config_schema    jsonb NOT NULL DEFAULT '{"type":"object"}' CHECK (jsonb_typeof(config_schema) = 'object'),
    output_schema    jsonb NOT NULL DEFAULT '{"type":"object"}' CHECK (jsonb_typeof(output_schema) = 'object'),
    polling_interval integer CHECK (polling_interval BETWEEN 60 AND 86400),
    is_active        boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integration_triggers_id_prefix CHECK (starts_with(id, integration_id || '.')),
    CONSTRAINT integration_triggers_polling_interval CHECK ((type = 'polling') = (polling_interval IS NOT NULL))
);
CREATE INDEX integration_triggers_integration_id ON api.integration_triggers (integration_id);
COMMENT ON TABLE api.integration_triggers IS
  'Events an integration can start a workflow with, e.g. gmail.new_email. Catalog: global, read-only for clients.';
COMMENT ON COLUMN api.integration_triggers.id IS 'integration_id.event, e.g. gmail.new_email; the node type a workflow stores.';
COMMENT ON COLUMN api.integration_triggers.type IS
  'webhook: the app calls us; polling: the worker asks every polling_interval seconds; schedule: time-based; manual: started by a person.';
COMMENT ON COLUMN api.integration_triggers.config_schema IS 'JSON Schema of the trigger node''s configuration.';
COMMENT ON COLUMN api.integration_triggers.output_schema IS 'JSON Schema of the payload the trigger starts an execution with.';
COMMENT ON COLUMN api.integration_triggers.polling_interval IS 'Seconds between polls (60 to 86400); set exactly for polling triggers.';
CREATE TRIGGER touch BEFORE UPDATE ON api.integration_triggers FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

CREATE TABLE api.integration_actions (
    id             text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$'),
    integration_id text NOT NULL REFERENCES api.integrations (id) ON DELETE CASCADE,
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description    text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    input_schema   jsonb NOT NULL DEFAULT '{"type":"object"}' CHECK (jsonb_typeof(input_schema) = 'object'),
    output_schema  jsonb NOT NULL DEFAULT '{"type":"object"}' CHECK (jsonb_typeof(output_schema) = 'object'),
    is_active      boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integration_actions_id_prefix CHECK (starts_with(id, integration_id || '.'))
);
CREATE INDEX integration_actions_integration_id ON api.integration_actions (integration_id);
COMMENT ON TABLE api.integration_actions IS
  'Things an integration can do as a workflow step, e.g. gmail.send_email. Catalog: global, read-only for clients.';
COMMENT ON COLUMN api.integration_actions.id IS 'integration_id.verb, e.g. gmail.send_email; the node type a workflow stores.';
COMMENT ON COLUMN api.integration_actions.input_schema IS 'JSON Schema of the action node''s input (after template expansion).';
COMMENT ON COLUMN api.integration_actions.output_schema IS 'JSON Schema of what the action returns to later steps.';
CREATE TRIGGER touch BEFORE UPDATE ON api.integration_actions FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

-- icon_url stays NULL until the frontend's asset host serves the icons.
INSERT INTO api.integrations (id, name, description, category, auth_type, oauth_token_url, api_key_header, api_key_prefix,
                              docs_url, website_url, is_popular) VALUES
    ('gmail', 'Gmail', 'Send email from and watch the inbox of a Google account.', 'email', 'oauth2',
     'https://oauth2.googleapis.com/token', NULL, '',
     'https://developers.google.com/gmail/api/reference/rest', 'https://mail.google.com', true),
    ('outlook', 'Outlook', 'Send email from and watch the inbox of a Microsoft 365 or Outlook.com account.', 'email', 'oauth2',
     'https://login.microsoftonline.com/common/oauth2/v2.0/token', NULL, '',
     'https://learn.microsoft.com/en-us/graph/api/resources/mail-api-overview', 'https://outlook.live.com', true),
    ('calendly', 'Calendly', 'React to booked and canceled meetings.', 'scheduling', 'oauth2',
     'https://auth.calendly.com/oauth/token', NULL, '',
     'https://developer.calendly.com/api-docs', 'https://calendly.com', true),
    ('slack', 'Slack', 'Post messages to channels and react to new ones.', 'communication', 'oauth2',
     'https://slack.com/api/oauth.v2.access', NULL, '',
     'https://api.slack.com/methods', 'https://slack.com', true),
    ('resend', 'Resend', 'Transactional email through the Resend API.', 'email', 'api_key',
     NULL, 'Authorization', 'Bearer ',
     'https://resend.com/docs/api-reference/emails/send-email', 'https://resend.com', false),
    ('smtp', 'SMTP', 'Send workflow email through your own mail server, from addresses you list on the connection.', 'email', 'smtp',
     NULL, NULL, '', NULL, NULL, true),
    ('webhook', 'Webhook', 'Start a workflow when any app POSTs JSON to a FlowTrack URL.', 'developer', 'none',
     NULL, NULL, '', NULL, NULL, true),
    ('http', 'HTTP request', 'Call any HTTP API from a workflow.', 'developer', 'none',
     NULL, NULL, '', NULL, NULL, false),
    ('http_bearer', 'HTTP API (bearer token)', 'Call an API that takes Authorization: Bearer <token>.', 'developer', 'bearer',
     NULL, NULL, '', NULL, NULL, false),
    ('http_basic', 'HTTP API (basic auth)', 'Call an API that takes a username and password (HTTP basic).', 'developer', 'basic',
     NULL, NULL, '', NULL, NULL, false),
    ('http_api_key', 'HTTP API (API-key header)', 'Call an API that takes a key in a header you name ({"header": "X-Api-Key", "api_key": "..."}).',
     'developer', 'api_key', NULL, NULL, '', NULL, NULL, false);

INSERT INTO api.integration_triggers (id, integration_id, name, description, type, polling_interval, config_schema, output_schema) VALUES
    ('gmail.new_email', 'gmail', 'New email', 'A new message arrives in the inbox (optionally matching a Gmail search query).',
     'polling', 300,
     '{"type":"object","additionalProperties":false,
       "properties":{"query":{"type":"string","maxLength":500,"description":"Gmail search, e.g. from:boss@example.com"},
                     "label_ids":{"type":"array","items":{"type":"string"},"default":["INBOX"]}}}',
     '{"type":"object","required":["message_id","from","subject"],
       "properties":{"message_id":{"type":"string"},"thread_id":{"type":"string"},"from":{"type":"string"},
                     "to":{"type":"array","items":{"type":"string"}},"subject":{"type":"string"},
                     "snippet":{"type":"string"},"received_at":{"type":"string","format":"date-time"}}}'),
    ('outlook.new_email', 'outlook', 'New email', 'A new message arrives in a mail folder.',
     'polling', 300,
     '{"type":"object","additionalProperties":false,
       "properties":{"folder":{"type":"string","default":"inbox"},
                     "from":{"type":"string","format":"email","description":"Only messages from this sender"}}}',
     '{"type":"object","required":["message_id","from","subject"],
       "properties":{"message_id":{"type":"string"},"conversation_id":{"type":"string"},"from":{"type":"string"},
                     "subject":{"type":"string"},"body_preview":{"type":"string"},
                     "received_at":{"type":"string","format":"date-time"}}}'),
    ('calendly.invitee_created', 'calendly', 'Meeting booked', 'Someone books a meeting (Calendly invitee.created webhook).',
     'webhook', NULL,
     '{"type":"object","additionalProperties":false,
       "properties":{"event_type_uri":{"type":"string","format":"uri","description":"Only this event type; all when empty"}}}',
     '{"type":"object","required":["invitee_email","start_time"],
       "properties":{"invitee_name":{"type":"string"},"invitee_email":{"type":"string","format":"email"},
                     "event_type":{"type":"string"},"start_time":{"type":"string","format":"date-time"},
                     "end_time":{"type":"string","format":"date-time"},"cancel_url":{"type":"string","format":"uri"},
                     "reschedule_url":{"type":"string","format":"uri"},"questions_and_answers":{"type":"array"}}}'),
    ('calendly.invitee_canceled', 'calendly', 'Meeting canceled', 'A booked meeting is canceled (Calendly invitee.canceled webhook).',
     'webhook', NULL,
     '{"type":"object","additionalProperties":false,
       "properties":{"event_type_uri":{"type":"string","format":"uri"}}}',
     '{"type":"object","required":["invitee_email"],
       "properties":{"invitee_email":{"type":"string","format":"email"},"canceled_by":{"type":"string"},
                     "reason":{"type":"string"},"start_time":{"type":"string","format":"date-time"}}}'),
    ('slack.new_message', 'slack', 'New channel message', 'A message is posted in a channel the app was added to (Events API).',
     'webhook', NULL,
     '{"type":"object","required":["channel_id"],"additionalProperties":false,
       "properties":{"channel_id":{"type":"string","pattern":"^[CG][A-Z0-9]+$"}}}',
     '{"type":"object","required":["channel_id","text","ts"],
       "properties":{"channel_id":{"type":"string"},"user_id":{"type":"string"},"text":{"type":"string"},
                     "ts":{"type":"string"},"thread_ts":{"type":"string"}}}'),
    ('webhook.catch_hook', 'webhook', 'Catch webhook', 'Any JSON POSTed to the workflow''s webhook URL.',
     'webhook', NULL,
     '{"type":"object","additionalProperties":false,
       "properties":{"secret_header":{"type":"string","description":"Header that must carry the shared secret"}}}',
     '{"type":"object","required":["body"],
       "properties":{"body":{},"headers":{"type":"object","additionalProperties":{"type":"string"}},
                     "query":{"type":"object"},"received_at":{"type":"string","format":"date-time"}}}');

INSERT INTO api.integration_actions (id, integration_id, name, description, input_schema, output_schema) VALUES
    ('gmail.send_email', 'gmail', 'Send email', 'Sends a message from the connected Gmail account.',
     '{"type":"object","required":["to","subject"],"additionalProperties":false,
       "properties":{"to":{"type":"array","items":{"type":"string","format":"email"},"minItems":1,"maxItems":50},
                     "cc":{"type":"array","items":{"type":"string","format":"email"}},
                     "bcc":{"type":"array","items":{"type":"string","format":"email"}},
                     "subject":{"type":"string","minLength":1,"maxLength":998},
                     "body_text":{"type":"string"},"body_html":{"type":"string"},
                     "reply_to_message_id":{"type":"string"}},
       "anyOf":[{"required":["body_text"]},{"required":["body_html"]}]}',
     '{"type":"object","required":["message_id"],
       "properties":{"message_id":{"type":"string"},"thread_id":{"type":"string"}}}'),
    ('outlook.send_email', 'outlook', 'Send email', 'Sends a message from the connected Outlook account (Graph sendMail).',
     '{"type":"object","required":["to","subject","body"],"additionalProperties":false,
       "properties":{"to":{"type":"array","items":{"type":"string","format":"email"},"minItems":1,"maxItems":50},
                     "cc":{"type":"array","items":{"type":"string","format":"email"}},
                     "subject":{"type":"string","minLength":1,"maxLength":255},
                     "body":{"type":"string"},"body_type":{"enum":["text","html"],"default":"html"},
                     "save_to_sent_items":{"type":"boolean","default":true}}}',
     '{"type":"object","properties":{"accepted":{"type":"boolean"}}}'),
    ('calendly.create_scheduling_link', 'calendly', 'Create scheduling link', 'Creates a single-use booking link for an event type.',
     '{"type":"object","required":["event_type_uri"],"additionalProperties":false,
       "properties":{"event_type_uri":{"type":"string","format":"uri"},
                     "max_event_count":{"type":"integer","minimum":1,"default":1}}}',
     '{"type":"object","required":["booking_url"],
       "properties":{"booking_url":{"type":"string","format":"uri"},"owner":{"type":"string"}}}'),
    ('slack.send_message', 'slack', 'Send channel message', 'Posts a message to a channel (chat.postMessage).',
     '{"type":"object","required":["channel_id","text"],"additionalProperties":false,
       "properties":{"channel_id":{"type":"string","pattern":"^[CGD][A-Z0-9]+$"},
                     "text":{"type":"string","minLength":1,"maxLength":40000},
                     "thread_ts":{"type":"string"},"unfurl_links":{"type":"boolean","default":true}}}',
     '{"type":"object","required":["ts"],"properties":{"channel_id":{"type":"string"},"ts":{"type":"string"}}}'),
    ('resend.send_email', 'resend', 'Send email', 'Sends a transactional email through Resend (POST /emails).',
     '{"type":"object","required":["from","to","subject"],"additionalProperties":false,
       "properties":{"from":{"type":"string","description":"Sender on a verified domain, e.g. Acme <hi@acme.com>"},
                     "to":{"type":"array","items":{"type":"string","format":"email"},"minItems":1,"maxItems":50},
                     "subject":{"type":"string","minLength":1},"html":{"type":"string"},"text":{"type":"string"},
                     "reply_to":{"type":"string","format":"email"},
                     "tags":{"type":"array","items":{"type":"object","required":["name","value"],
                             "properties":{"name":{"type":"string"},"value":{"type":"string"}}}}},
       "anyOf":[{"required":["html"]},{"required":["text"]}]}',
     '{"type":"object","required":["id"],"properties":{"id":{"type":"string"}}}'),
    ('http.request', 'http', 'HTTP request', 'Calls a URL and returns the status, headers and body.',
     '{"type":"object","required":["url"],"additionalProperties":false,
       "properties":{"url":{"type":"string","format":"uri","pattern":"^https?://"},
                     "method":{"enum":["GET","POST","PUT","PATCH","DELETE"],"default":"POST"},
                     "headers":{"type":"object","additionalProperties":{"type":"string"}},
                     "body":{},"timeout_ms":{"type":"integer","minimum":100,"maximum":30000,"default":10000}}}',
     '{"type":"object","required":["status"],
       "properties":{"status":{"type":"integer"},"headers":{"type":"object"},"body":{}}}');

-- The generic HTTP integrations do what http.request does, authenticated by
-- their connection; smtp sends the email steps.
INSERT INTO api.integration_actions (id, integration_id, name, description, input_schema, output_schema)
SELECT i || '.request', i, a.name, a.description || ' Authenticated by the connection.', a.input_schema, a.output_schema
  FROM api.integration_actions a, unnest(ARRAY['http_bearer', 'http_basic', 'http_api_key']) AS i
 WHERE a.id = 'http.request';
INSERT INTO api.integration_actions (id, integration_id, name, description, input_schema, output_schema) VALUES
    ('smtp.send_email', 'smtp', 'Send email', 'Sends a message through the workspace''s mail server, from an address its connection lists.',
     '{"type":"object","required":["to","subject"],"additionalProperties":false,
       "properties":{"to":{"type":"string","description":"Comma-separated addresses; each counts one email send"},
                     "subject":{"type":"string","minLength":1,"maxLength":998},
                     "body":{"type":"string"},"html":{"type":"string"},
                     "from":{"type":"string","description":"An address the connection lists (or one at a listed @domain)"},
                     "reply_to":{"type":"string","format":"email"}}}',
     '{"type":"object","properties":{"transport":{"type":"string"},"code":{"type":"string"},"recipients":{"type":"integer"}}}');

-- Catalogs are public reads; RLS is still on so every exposed table has it.
-- Enabled after the seed rows: FORCE RLS with a read-only policy leaves even
-- the owner unable to insert.
SELECT internal.enable_catalog_read(t)
  FROM unnest(ARRAY['api.integrations', 'api.integration_triggers', 'api.integration_actions']::regclass[]) AS t;
GRANT SELECT ON api.integrations, api.integration_triggers, api.integration_actions TO anon, authenticated;

-- -------------------------------------------------------- connections ----

CREATE TABLE api.connections (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id           uuid NOT NULL DEFAULT flowtrack.current_workspace_id()
                           REFERENCES api.workspaces (id) ON DELETE CASCADE,
    integration_id         text NOT NULL REFERENCES api.integrations (id),
    name                   text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status                 text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'expired', 'error', 'disabled')),
    last_tested_at         timestamptz,
    test_status            text NOT NULL DEFAULT 'pending' CHECK (test_status IN ('pending', 'success', 'failed')),
    expires_at             timestamptz,
    scopes                 text[] NOT NULL DEFAULT '{}',
    credentials_updated_at timestamptz,
    created_by             uuid DEFAULT flowtrack.current_user_id() REFERENCES api.users (id) ON DELETE SET NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    last_error             text CHECK (length(last_error) <= 2000),
    deleted_at             timestamptz
);
CREATE UNIQUE INDEX connections_workspace_name ON api.connections (workspace_id, name) WHERE deleted_at IS NULL;
CREATE INDEX connections_workspace_integration ON api.connections (workspace_id, integration_id);
CREATE INDEX connections_integration_id ON api.connections (integration_id);
CREATE INDEX connections_created_by ON api.connections (created_by);
COMMENT ON TABLE api.connections IS
  'A workspace''s account at an integration (e.g. its Gmail). Holds no secret: credentials are encrypted in internal.connection_secrets, written with save_connection_secret and readable only by the worker. Everyone in the workspace reads connections (to pick one in a workflow); only owners and admins create, change or delete them, because whoever manages a connection decides which outside account the whole workspace acts as.';
COMMENT ON COLUMN api.connections.integration_id IS 'The app this connection signs in to (api.integrations.id).';
COMMENT ON COLUMN api.connections.created_by IS 'The user who created the connection (from the JWT sub claim).';
COMMENT ON COLUMN api.connections.last_tested_at IS 'When the credentials were last tested against the app.';
COMMENT ON COLUMN api.connections.status IS
  'active; expired (OAuth tokens lapsed, re-authorise); error (the last use failed); disabled (turned off by an owner or admin).';
COMMENT ON COLUMN api.connections.test_status IS 'Outcome of the last credential test: pending (never tested, or credentials changed since), success, failed.';
COMMENT ON COLUMN api.connections.expires_at IS 'When the current credentials (e.g. an OAuth access token) stop working, if known.';
COMMENT ON COLUMN api.connections.scopes IS 'OAuth scopes granted to this connection.';
COMMENT ON COLUMN api.connections.credentials_updated_at IS 'When credentials were last saved; NULL when none are stored. The credentials themselves never come back.';
COMMENT ON COLUMN api.connections.last_error IS
  'Why the worker last set status to error (e.g. the OAuth provider refused the refresh token); cleared when new credentials or tokens are stored. Never holds a secret.';
COMMENT ON COLUMN api.connections.deleted_at IS 'Soft delete. Setting it destroys the stored credentials at once.';
CREATE TRIGGER touch BEFORE UPDATE ON api.connections FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

-- A friendlier refusal than the bare foreign-key error, and no new
-- connections to an app taken out of the catalog.
CREATE FUNCTION internal.check_connection_integration() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    active boolean;
BEGIN
    SELECT i.is_active INTO active FROM api.integrations i WHERE i.id = NEW.integration_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'integration_id: no integration "%"', NEW.integration_id
            USING ERRCODE = '23503', HINT = 'List the catalog with GET /integrations; ids look like gmail or slack.';
    END IF;
    IF NOT active AND (TG_OP = 'INSERT' OR NEW.integration_id IS DISTINCT FROM OLD.integration_id) THEN
        RAISE EXCEPTION 'integration_id: integration "%" no longer accepts new connections', NEW.integration_id
            USING ERRCODE = '22023', HINT = 'Pick an integration with is_active = true.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.check_connection_integration() IS
  'BEFORE INSERT/UPDATE OF integration_id on api.connections: the integration must exist (23503) and be active (22023).';
CREATE TRIGGER check_integration BEFORE INSERT OR UPDATE OF integration_id ON api.connections
    FOR EACH ROW EXECUTE FUNCTION internal.check_connection_integration();

SELECT flowtrack.enable_tenant_isolation('api.connections'::regclass, ARRAY['owner', 'admin']);
GRANT SELECT, DELETE ON api.connections TO authenticated;
GRANT INSERT (workspace_id, integration_id, name, scopes, expires_at) ON api.connections TO authenticated;
GRANT UPDATE (name, status, scopes, expires_at, deleted_at) ON api.connections TO authenticated;

-- ------------------------------------------------------------ secrets ----

CREATE TABLE internal.connection_secrets (
    connection_id uuid PRIMARY KEY REFERENCES api.connections (id) ON DELETE CASCADE,
    workspace_id  uuid NOT NULL REFERENCES api.workspaces (id) ON DELETE CASCADE,
    key_id        text NOT NULL,
    ciphertext    bytea NOT NULL CHECK (octet_length(ciphertext) >= 29),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX connection_secrets_workspace_id ON internal.connection_secrets (workspace_id);
CREATE INDEX connection_secrets_key_id ON internal.connection_secrets (key_id);
REVOKE ALL ON internal.connection_secrets FROM PUBLIC;
COMMENT ON TABLE internal.connection_secrets IS
  'Credentials of api.connections, AES-256-GCM encrypted by flowtrack.encrypt_secret with aad ''connection:'' || connection_id. No API role or the worker can read the table; the worker decrypts only the connection of a job it holds the lease of, through internal.job_connection.';
COMMENT ON COLUMN internal.connection_secrets.key_id IS
  'Id of the key (a line of the flowtrack.key_file key file) that encrypted this row; internal.rotate_secrets moves rows to another key.';
COMMENT ON COLUMN internal.connection_secrets.ciphertext IS
  'version byte (1) || 12-byte random nonce || AES-256-GCM ciphertext and 16-byte tag of the credentials JSON.';

CREATE FUNCTION internal.connection_secret_aad(connection_id uuid) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'connection:' || connection_id::text
$$;
COMMENT ON FUNCTION internal.connection_secret_aad(uuid) IS
  'Associated data that binds a connection''s ciphertext to that connection, so a ciphertext copied to another row never decrypts.';

-- Soft-deleting a connection destroys its credentials in the same statement.
CREATE FUNCTION internal.forget_connection_secret() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM internal.connection_secrets s WHERE s.connection_id = NEW.id;
    NEW.credentials_updated_at := NULL;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.forget_connection_secret() IS
  'BEFORE UPDATE on api.connections when deleted_at is set: deletes the connection''s encrypted credentials.';
CREATE TRIGGER forget_secret BEFORE UPDATE OF deleted_at ON api.connections
    FOR EACH ROW WHEN (NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL)
    EXECUTE FUNCTION internal.forget_connection_secret();

CREATE FUNCTION api.save_connection_secret(connection_id uuid, secret jsonb)
RETURNS api.connections
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_workspace(true);
    c api.connections;
    sealed record;
BEGIN
    IF NOT coalesce(flowtrack.current_workspace_role() IN ('owner', 'admin'), false) THEN
        RAISE EXCEPTION 'workspace_role: only owners and admins manage connection credentials'
            USING ERRCODE = '42501', HINT = 'Ask an owner or admin of the workspace to connect the account.';
    END IF;
    IF secret IS NULL OR jsonb_typeof(secret) <> 'object' OR secret = '{}' THEN
        RAISE EXCEPTION 'secret: must be a non-empty JSON object'
            USING ERRCODE = '22023',
                  HINT = 'Pass the credentials as an object, e.g. {"api_key": "..."} or {"access_token": "...", "refresh_token": "..."}.';
    END IF;
    IF octet_length(secret::text) > 65536 THEN
        RAISE EXCEPTION 'secret: at most 64 KiB of JSON'
            USING ERRCODE = '54000', DETAIL = format('got %s bytes', octet_length(secret::text)),
                  HINT = 'Store credentials only, not payloads.';
    END IF;
    -- RLS confines the lookup to the caller's workspace too; another
    -- tenant's connection is simply not found.
    SELECT * INTO c FROM api.connections x
     WHERE x.id = save_connection_secret.connection_id AND x.workspace_id = ws AND x.deleted_at IS NULL
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'connection_id: no connection % in this workspace', connection_id
            USING ERRCODE = 'PT404', HINT = 'List connections with GET /connections.';
    END IF;
    SELECT * INTO sealed FROM flowtrack.encrypt_secret(secret::text, internal.connection_secret_aad(c.id));
    INSERT INTO internal.connection_secrets AS s (connection_id, workspace_id, key_id, ciphertext)
    VALUES (c.id, c.workspace_id, sealed.key_id, sealed.ciphertext)
    ON CONFLICT ON CONSTRAINT connection_secrets_pkey
    DO UPDATE SET key_id = EXCLUDED.key_id, ciphertext = EXCLUDED.ciphertext, updated_at = now();
    UPDATE api.connections x
       SET credentials_updated_at = now(), test_status = 'pending', last_error = NULL,
           status = CASE WHEN x.status = 'disabled' THEN 'disabled' ELSE 'active' END
     WHERE x.id = c.id
    RETURNING * INTO c;
    RETURN c;
END
$$;
COMMENT ON FUNCTION api.save_connection_secret(uuid, jsonb) IS
  'Stores (or replaces) a connection''s credentials, encrypted at rest. Owners and admins only (42501 otherwise); PT404 for a connection outside the caller''s workspace. Returns the connection, never the secret; status becomes active (unless disabled) and test_status pending.';
GRANT EXECUTE ON FUNCTION api.save_connection_secret(uuid, jsonb) TO authenticated;

-- ---------------------------------------------- the worker's credentials ----
-- The worker decrypts only under a live lease: each function takes the job
-- and the lease's fence, and reaches only the connection that job names (or,
-- for an email job naming none, its workspace's one SMTP connection). A
-- connection of another workspace is "not found", exactly like a missing one.

-- The job, if (job_id, fence) is its live lease. Owner-only helper of the
-- definers below.
CREATE FUNCTION internal.leased_job(job_id uuid, fence integer)
RETURNS internal.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j internal.jobs;
BEGIN
    SELECT * INTO j FROM internal.jobs x
     WHERE x.id = leased_job.job_id AND x.status = 'running' AND x.claims = leased_job.fence
       AND x.locked_until > pg_catalog.now();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job: no live lease on job % under fence %', job_id, fence
            USING ERRCODE = 'PT409', HINT = 'The lease expired or the job was claimed again: stop working on it.';
    END IF;
    IF j.workspace_id IS NULL THEN
        RAISE EXCEPTION 'job: job % belongs to no workspace, so it has no connections', job_id
            USING ERRCODE = 'PT404', HINT = 'Only workspace jobs use connections.';
    END IF;
    RETURN j;
END
$$;
COMMENT ON FUNCTION internal.leased_job(uuid, integer) IS
  'The running job whose lease (job_id, fence) is live; PT409 otherwise. Helper of the worker''s credential functions (granted to nobody).';
REVOKE EXECUTE ON FUNCTION internal.leased_job(uuid, integer) FROM PUBLIC;

-- The connection a leased job uses, locked when asked. The caller acts for
-- the job's workspace (api.connections is under FORCE RLS).
CREATE FUNCTION internal.job_connection_row(j internal.jobs, for_update boolean)
RETURNS api.connections
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    named text := j.payload ->> 'connection_id';
    c api.connections;
    n bigint;
BEGIN
    IF named IS NOT NULL THEN
        IF named !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
            RAISE EXCEPTION 'connection_id: "%" is not a connection id', left(named, 100)
                USING ERRCODE = '22P02', HINT = 'Pick a connection of this workspace (GET /connections); ids are UUIDs.';
        END IF;
        SELECT * INTO c FROM api.connections x
         WHERE x.id = named::uuid AND x.workspace_id = j.workspace_id AND x.deleted_at IS NULL;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'connection_id: no connection % in this workspace', named
                USING ERRCODE = 'PT404', HINT = 'List the workspace''s connections with GET /connections.';
        END IF;
    ELSIF j.kind = 'email' THEN
        -- The workspace's SMTP connection, when it has exactly one in use.
        SELECT count(*) INTO n FROM api.connections x
         WHERE x.workspace_id = j.workspace_id AND x.integration_id = 'smtp'
           AND x.deleted_at IS NULL AND x.status <> 'disabled';
        IF n = 0 THEN
            RETURN NULL;
        ELSIF n > 1 THEN
            RAISE EXCEPTION 'connection_id: this workspace has % SMTP connections; the step must name one', n
                USING ERRCODE = 'PT409', HINT = 'Set connection_id in the email step''s config.';
        END IF;
        SELECT * INTO c FROM api.connections x
         WHERE x.workspace_id = j.workspace_id AND x.integration_id = 'smtp'
           AND x.deleted_at IS NULL AND x.status <> 'disabled';
    ELSE
        RETURN NULL;
    END IF;
    IF for_update THEN
        SELECT * INTO c FROM api.connections x WHERE x.id = c.id FOR UPDATE;
    END IF;
    RETURN c;
END
$$;
COMMENT ON FUNCTION internal.job_connection_row(internal.jobs, boolean) IS
  'The connection a job uses: payload.connection_id within the job''s workspace (PT404 otherwise, whether or not it exists elsewhere), or for an email job the workspace''s single SMTP connection in use (NULL without one, PT409 with several). for_update: lock it FOR UPDATE. Helper (granted to nobody).';
REVOKE EXECUTE ON FUNCTION internal.job_connection_row(internal.jobs, boolean) FROM PUBLIC;

-- The worker's only way to a plaintext credential.
CREATE FUNCTION internal.job_connection(job_id uuid, fence integer, for_update boolean DEFAULT false)
RETURNS TABLE (connection_id uuid, integration_id text, auth_type text, credentials jsonb, expires_at timestamptz,
               oauth_token_url text, api_key_header text, api_key_prefix text, credentials_version timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    j internal.jobs := internal.leased_job(job_id, fence);
    c api.connections;
    i api.integrations;
    s internal.connection_secrets;
BEGIN
    -- A lock needs the writers' policy; reading needs any member's.
    PERFORM flowtrack.act_for(j.workspace_id, CASE WHEN for_update THEN 'admin' ELSE 'viewer' END);
    c := internal.job_connection_row(j, for_update);
    IF c.id IS NULL THEN
        RETURN;
    END IF;
    IF c.status IN ('disabled', 'expired') THEN
        RAISE EXCEPTION 'connection_id: connection % is %', c.id, c.status
            USING ERRCODE = 'PT409',
                  HINT = CASE c.status WHEN 'disabled' THEN 'An owner or admin re-enables it by setting status to active.'
                                       ELSE 'An owner or admin reconnects the account (save_connection_secret).' END;
    END IF;
    SELECT * INTO i FROM api.integrations x WHERE x.id = c.integration_id;
    IF i.auth_type <> 'none' THEN
        SELECT * INTO s FROM internal.connection_secrets x WHERE x.connection_id = c.id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'connection_id: connection % has no stored credentials', c.id
                USING ERRCODE = 'PT404', HINT = 'An owner or admin saves them with save_connection_secret.';
        END IF;
    END IF;
    connection_id := c.id;
    integration_id := c.integration_id;
    auth_type := i.auth_type;
    credentials := CASE WHEN s.ciphertext IS NOT NULL THEN
        flowtrack.decrypt_secret(s.key_id, s.ciphertext, internal.connection_secret_aad(c.id))::jsonb END;
    expires_at := c.expires_at;
    oauth_token_url := i.oauth_token_url;
    api_key_header := i.api_key_header;
    api_key_prefix := i.api_key_prefix;
    credentials_version := s.updated_at;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION internal.job_connection(uuid, integer, boolean) IS
  'For the worker holding the live lease (job_id, fence): the decrypted credentials of the connection the job uses, with the catalog''s auth type, OAuth token URL and API-key header. No row when the job uses none. PT409 without the lease or for a disabled or expired connection; PT404 for a connection outside the job''s workspace (as for a missing one) or without credentials. for_update: locked FOR UPDATE until the caller''s transaction ends, so token refreshes of one connection take turns. credentials_version is the compare-and-set token of store_connection_tokens.';
REVOKE EXECUTE ON FUNCTION internal.job_connection(uuid, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION internal.job_connection(uuid, integer, boolean) TO flowtrack_worker;

-- Refreshed OAuth tokens, stored encrypted. Only token fields change: the
-- worker cannot rewrite a connection's client secret or anything else.
CREATE FUNCTION internal.store_connection_tokens(job_id uuid, fence integer, tokens jsonb,
                                                 expires_at timestamptz, previous timestamptz)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    j internal.jobs := internal.leased_job(job_id, fence);
    c api.connections;
    s internal.connection_secrets;
    fresh jsonb;
    sealed record;
BEGIN
    IF tokens IS NULL OR jsonb_typeof(tokens -> 'access_token') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'tokens: access_token must be a string'
            USING ERRCODE = '22023', HINT = 'Pass the token endpoint''s answer: {"access_token": "...", "refresh_token": "..."}.';
    END IF;
    PERFORM flowtrack.act_for(j.workspace_id, 'admin');
    c := internal.job_connection_row(j, true);
    IF c.id IS NULL THEN
        RAISE EXCEPTION 'connection_id: job % uses no connection', job_id
            USING ERRCODE = 'PT404', HINT = 'Only jobs naming an OAuth connection store tokens.';
    END IF;
    SELECT * INTO s FROM internal.connection_secrets x WHERE x.connection_id = c.id FOR UPDATE;
    -- Compare and set: another refresh stored first, keep its tokens.
    IF NOT FOUND OR s.updated_at IS DISTINCT FROM previous THEN
        RETURN false;
    END IF;
    SELECT coalesce(pg_catalog.jsonb_object_agg(t.key, t.value), '{}'::jsonb) INTO fresh
      FROM pg_catalog.jsonb_each(tokens) t
     WHERE t.key IN ('access_token', 'refresh_token', 'token_type', 'scope')
       AND pg_catalog.jsonb_typeof(t.value) = 'string';
    fresh := flowtrack.decrypt_secret(s.key_id, s.ciphertext, internal.connection_secret_aad(c.id))::jsonb || fresh;
    SELECT * INTO sealed FROM flowtrack.encrypt_secret(fresh::text, internal.connection_secret_aad(c.id));
    UPDATE internal.connection_secrets x
       SET key_id = sealed.key_id, ciphertext = sealed.ciphertext, updated_at = pg_catalog.clock_timestamp()
     WHERE x.connection_id = c.id;
    UPDATE api.connections x
       SET expires_at = store_connection_tokens.expires_at, last_error = NULL,
           status = CASE WHEN x.status = 'error' THEN 'active' ELSE x.status END
     WHERE x.id = c.id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION internal.store_connection_tokens(uuid, integer, jsonb, timestamptz, timestamptz) IS
  'For the worker holding the live lease: merges refreshed OAuth tokens (access_token, refresh_token, token_type, scope; nothing else) into the job''s connection''s encrypted credentials and sets its expires_at, clearing an error status. previous is the credentials_version the refresh started from: when another refresh stored since, nothing changes and it returns false.';
REVOKE EXECUTE ON FUNCTION internal.store_connection_tokens(uuid, integer, jsonb, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION internal.store_connection_tokens(uuid, integer, jsonb, timestamptz, timestamptz) TO flowtrack_worker;

CREATE FUNCTION internal.fail_connection(job_id uuid, fence integer, reason text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    j internal.jobs := internal.leased_job(job_id, fence);
    c api.connections;
BEGIN
    PERFORM flowtrack.act_for(j.workspace_id, 'admin');
    c := internal.job_connection_row(j, true);
    IF c.id IS NULL THEN
        RAISE EXCEPTION 'connection_id: job % uses no connection', job_id
            USING ERRCODE = 'PT404', HINT = 'Only jobs naming a connection can fail it.';
    END IF;
    UPDATE api.connections x
       SET status = CASE WHEN x.status = 'disabled' THEN 'disabled' ELSE 'error' END,
           last_error = left(coalesce(reason, 'unknown error'), 2000)
     WHERE x.id = c.id;
END
$$;
COMMENT ON FUNCTION internal.fail_connection(uuid, integer, text) IS
  'For the worker holding the live lease: sets the job''s connection to status error with the reason (e.g. the OAuth provider refused the refresh token), so owners see it must be reconnected. A disabled connection stays disabled.';
REVOKE EXECUTE ON FUNCTION internal.fail_connection(uuid, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION internal.fail_connection(uuid, integer, text) TO flowtrack_worker;

-- Rotation: roll a new key in at the top of the key file (or name it in
-- flowtrack.active_key_id), reload, run this, and once it returns 0 the old
-- key can leave the file. Not SECURITY DEFINER and granted to nobody: only a
-- superuser (the operator) runs it.
CREATE FUNCTION internal.rotate_secrets(new_key_id text DEFAULT NULL, workspace_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target text := coalesce(new_key_id, flowtrack.active_key_id());
    n bigint;
BEGIN
    IF new_key_id IS NOT NULL THEN
        -- Refuse an unknown key before touching any row (42704 from the extension).
        PERFORM flowtrack.encrypt_secret('probe', 'rotate_secrets', new_key_id);
    END IF;
    UPDATE internal.connection_secrets s
       SET (key_id, ciphertext, updated_at) =
           (SELECT e.key_id, e.ciphertext, now()
              FROM flowtrack.encrypt_secret(
                       flowtrack.decrypt_secret(s.key_id, s.ciphertext, internal.connection_secret_aad(s.connection_id)),
                       internal.connection_secret_aad(s.connection_id), target) e)
     WHERE s.key_id <> target
       AND (rotate_secrets.workspace_id IS NULL OR s.workspace_id = rotate_secrets.workspace_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION internal.rotate_secrets(text, uuid) IS
  'Operator (superuser) only: re-encrypts every stored credential not yet under new_key_id (default: the active key), optionally only one workspace''s, and returns how many rows it re-encrypted. 0 means no row needs an older key any more.';
REVOKE EXECUTE ON FUNCTION internal.rotate_secrets(text, uuid) FROM PUBLIC;
