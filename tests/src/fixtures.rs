//! Test tenants: a workspace on a given plan with one user per role, created
//! as superuser with unique names so tests can run in parallel.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

pub const ROLES: [&str; 4] = ["owner", "admin", "member", "viewer"];

#[derive(Debug, Clone)]
pub struct Tenant {
    pub workspace_id: Uuid,
    pub slug: String,
    /// role -> user id
    pub users: BTreeMap<&'static str, Uuid>,
}

impl Tenant {
    /// Verified-JWT claims for this tenant's user of `role`.
    pub fn claims(&self, role: &str) -> Value {
        json!({
            "role": "authenticated",
            "sub": self.users[role],
            "workspace_id": self.workspace_id,
            "workspace_role": role,
        })
    }
}

/// A workspace's counter for a quota key, as stored.
pub async fn quota_used(db: &Client, ws: Uuid, key: &str) -> i64 {
    db.query_one(
        "SELECT used FROM api.usage_quotas WHERE workspace_id = $1 AND quota_key = $2",
        &[&ws, &key],
    )
    .await
    .unwrap()
    .get(0)
}

/// A workspace on `plan` with an owner, admin, member and viewer.
pub async fn tenant(db: &Client, plan: &str) -> Tenant {
    let tag = Uuid::new_v4().simple().to_string()[..12].to_string();
    let slug = format!("t-{tag}");
    let mut users = BTreeMap::new();
    for role in ROLES {
        let id: Uuid = db
            .query_one(
                // Verified, as after sign-up: the email gate (sql/0011) wants a verified owner.
                "INSERT INTO api.users (email, full_name, email_verified_at) VALUES ($1, $2, now()) RETURNING id",
                &[
                    &format!("{role}-{tag}@example.test"),
                    &format!("{role} {tag}"),
                ],
            )
            .await
            .expect("insert user")
            .get(0);
        users.insert(role, id);
    }
    let workspace_id: Uuid = db
        .query_one(
            "INSERT INTO api.workspaces (name, slug, plan_id, owner_user_id)
             SELECT $1, $2, id, $3 FROM api.subscription_plans WHERE code = $4 RETURNING id",
            &[&format!("Workspace {tag}"), &slug, &users["owner"], &plan],
        )
        .await
        .unwrap_or_else(|e| panic!("insert workspace on plan {plan}: {e}"))
        .get(0);
    for role in ROLES {
        db.execute(
            "INSERT INTO api.workspace_members (workspace_id, user_id, role) VALUES ($1, $2, $3)",
            &[&workspace_id, &users[role], &role],
        )
        .await
        .expect("insert member");
    }
    db.execute("SELECT internal.sync_quotas($1)", &[&workspace_id])
        .await
        .expect("sync quotas");
    Tenant {
        workspace_id,
        slug,
        users,
    }
}

/// A published (but inactive) workflow in `t` with version 1: a manual
/// trigger alone.
pub async fn published_workflow(db: &Client, t: &Tenant, name: &str) -> Uuid {
    let id: Uuid = db
        .query_one(
            "INSERT INTO api.workflows (workspace_id, created_by, name, status, published_version, published_at)
             VALUES ($1, $2, $3, 'paused', 1, now()) RETURNING id",
            &[&t.workspace_id, &t.users["owner"], &name],
        )
        .await
        .expect("insert workflow")
        .get(0);
    db.execute(
        "INSERT INTO api.workflow_versions (workspace_id, workflow_id, version, graph)
         VALUES ($1, $2, 1, '{\"nodes\":[{\"id\":\"start\",\"type\":\"TRIGGER_MANUAL\"}],\"edges\":[]}')",
        &[&t.workspace_id, &id],
    )
    .await
    .expect("insert version");
    id
}

/// Ids of the rows [`populate`] created, for tests that aim at them.
#[derive(Debug, Clone)]
pub struct Populated {
    pub workflow_id: Uuid,
    pub lead_id: Uuid,
    pub lead_email: String,
    pub form_slug: String,
    pub inbound_token: String,
    pub execution_id: Uuid,
    pub api_key_id: Uuid,
    pub invitation_id: Uuid,
}

/// One row (at least) in every tenant table of `t`'s workspace, written as
/// superuser: an active workflow with a form trigger, a form, a lead with
/// events, an execution (of that lead) with a step and a log line, webhooks
/// both ways, an API key, a pending invitation, usage, daily stats and
/// (through triggers) audit entries.
pub async fn populate(db: &Client, t: &Tenant) -> Populated {
    let ws = t.workspace_id;
    let workflow_id = published_workflow(db, t, &format!("secret-workflow-{}", t.slug)).await;
    let form_slug = "contact".to_string();
    let lead_email = format!("lead@{}.example", t.slug);
    // Only the token's hash is stored, so the fixture picks the token.
    let inbound_token = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let script = format!(
        "
        UPDATE api.workflows SET status = 'active' WHERE id = '{workflow_id}';
        INSERT INTO api.workflow_nodes (workspace_id, workflow_id, node_key, node_type, config)
        VALUES ('{ws}', '{workflow_id}', 'form', 'TRIGGER_FORM', '{{\"form_id\":\"contact\"}}'),
               ('{ws}', '{workflow_id}', 'mail', 'ACTION_SEND_EMAIL', '{{}}');
        INSERT INTO api.workflow_edges (workspace_id, workflow_id, edge_key, source_key, target_key)
        VALUES ('{ws}', '{workflow_id}', 'e1', 'form', 'mail');
        INSERT INTO api.forms (workspace_id, slug, name) VALUES ('{ws}', 'contact', 'Contact');
        INSERT INTO api.form_fields (workspace_id, form_id, field_key, label, field_type, required)
        SELECT '{ws}', id, 'email', 'Email', 'email', true FROM api.forms WHERE workspace_id = '{ws}';
        INSERT INTO api.leads (workspace_id, email, first_name, custom_fields)
        VALUES ('{ws}', '{lead_email}', 'Secret', '{{\"budget\": 5000}}');
        INSERT INTO api.lead_events (workspace_id, lead_id, event_type, source)
        SELECT '{ws}', id, 'NOTE_ADDED', 'manual' FROM api.leads WHERE workspace_id = '{ws}';
        INSERT INTO api.connections (workspace_id, integration_id, name) VALUES ('{ws}', 'gmail', 'Mail');
        INSERT INTO api.webhook_endpoints (workspace_id, url, events) VALUES ('{ws}', 'https://hooks.example/{ws}', '{{lead.created}}');
        INSERT INTO api.inbound_webhooks (workspace_id, workflow_id, token_hash, token_prefix)
        VALUES ('{ws}', '{workflow_id}', internal.inbound_token_hash('{inbound_token}'), left('{inbound_token}', 8));
        SELECT internal.emit_event('{ws}', 'lead.created', '{{\"x\":1}}');
        SELECT internal.start_execution('{ws}', '{workflow_id}', 'manual', '{{}}', 'populate',
                                        (SELECT id FROM api.leads WHERE workspace_id = '{ws}'));
        INSERT INTO api.execution_steps (workspace_id, execution_id, node_key, node_type)
        SELECT '{ws}', id, 'form', 'TRIGGER_FORM' FROM api.workflow_executions WHERE workspace_id = '{ws}';
        INSERT INTO api.execution_logs (workspace_id, execution_id, message)
        SELECT '{ws}', id, 'started' FROM api.workflow_executions WHERE workspace_id = '{ws}';
        INSERT INTO api.api_keys (workspace_id, created_by, name, prefix, key_hash, scopes)
        VALUES ('{ws}', '{owner}', 'ci', 'ft_populated', sha256(convert_to('{ws}', 'UTF8')), '{{leads:read}}');
        INSERT INTO api.workspace_invitations (workspace_id, email, role, token_hash, invited_by, expires_at)
        VALUES ('{ws}', 'invitee@{tag}.example', 'member', sha256(convert_to('invite-{ws}', 'UTF8')), '{owner}', now() + interval '7 days');
        SELECT internal.consume_quota('{ws}', 'ai_tokens', 10);
        INSERT INTO api.workspace_daily_stats (workspace_id, day, leads_created) VALUES ('{ws}', current_date, 1)
            ON CONFLICT (workspace_id, day) DO UPDATE SET leads_created = excluded.leads_created;
        INSERT INTO api.subscriptions (workspace_id, plan_id, stripe_customer_id)
        SELECT '{ws}', plan_id, 'cus_{tag}' FROM api.workspaces WHERE id = '{ws}';
        UPDATE api.workspaces SET name = name || ' (populated)' WHERE id = '{ws}';
        ",
        owner = t.users["owner"],
        tag = &t.slug[2..],
    );
    db.batch_execute(&script)
        .await
        .unwrap_or_else(|e| panic!("populate {}: {e:?}", t.slug));
    let row = db
        .query_one(
            "SELECT l.id, e.id, k.id, i.id
               FROM api.leads l, api.workflow_executions e, api.api_keys k, api.workspace_invitations i
              WHERE l.workspace_id = $1 AND e.workspace_id = $1 AND k.workspace_id = $1 AND i.workspace_id = $1",
            &[&ws],
        )
        .await
        .expect("populated rows");
    Populated {
        workflow_id,
        lead_id: row.get(0),
        lead_email,
        form_slug,
        inbound_token,
        execution_id: row.get(1),
        api_key_id: row.get(2),
        invitation_id: row.get(3),
    }
}

/// A lease as the worker holds one: the job and its fencing token.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    pub id: Uuid,
    pub fence: i32,
}

/// Play the worker's claim for one workspace only (tests run in parallel and
/// must not take each other's jobs): lease its due jobs exactly as
/// `internal.claim_due` does, as superuser.
pub async fn lease_jobs(db: &Client, ws: Uuid) -> Vec<Lease> {
    db.query(
        "UPDATE internal.jobs j
            SET status = 'running', attempts = j.attempts + 1, claims = j.claims + 1, locked_by = 'test-worker',
                locked_until = now() + make_interval(secs => k.lease_seconds)
           FROM internal.job_kinds k
          WHERE j.workspace_id = $1 AND j.status = 'queued' AND j.run_at <= now() AND k.kind = j.kind
         RETURNING j.id, j.claims",
        &[&ws],
    )
    .await
    .expect("lease the workspace's jobs")
    .iter()
    .map(|r| Lease {
        id: r.get(0),
        fence: r.get(1),
    })
    .collect()
}

/// Report leases done through the worker's own function; returns each outcome.
pub async fn complete_jobs(db: &Client, leases: &[Lease], result: Value) -> Vec<String> {
    let ids: Vec<Uuid> = leases.iter().map(|l| l.id).collect();
    let fences: Vec<i32> = leases.iter().map(|l| l.fence).collect();
    let results = vec![result; leases.len()];
    db.query(
        "SELECT outcome FROM internal.complete_jobs('test-worker', $1, $2, $3)",
        &[&ids, &fences, &results],
    )
    .await
    .expect("complete_jobs")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Report leases failed (`retry` as the worker would judge it); returns each outcome.
pub async fn fail_jobs(
    db: &Client,
    leases: &[Lease],
    error: &str,
    retry: bool,
    result: Value,
) -> Vec<String> {
    let ids: Vec<Uuid> = leases.iter().map(|l| l.id).collect();
    let fences: Vec<i32> = leases.iter().map(|l| l.fence).collect();
    let errors = vec![error.to_string(); leases.len()];
    let retries = vec![retry; leases.len()];
    let results = vec![result; leases.len()];
    db.query(
        "SELECT outcome FROM internal.fail_jobs('test-worker', $1, $2, $3, $4, $5)",
        &[&ids, &fences, &errors, &retries, &results],
    )
    .await
    .expect("fail_jobs")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Tests that claim through `internal.claim_jobs` take every workspace's
/// due jobs: push the queued jobs and running leases of every workspace not
/// in `mine` an hour ahead, so a claim sees only the caller's jobs and no
/// other lease expires under it.
pub async fn quiet_others(db: &Client, mine: &[Uuid]) {
    db.execute(
        "UPDATE internal.jobs SET run_at = now() + interval '1 hour'
          WHERE status = 'queued' AND (workspace_id IS NULL OR workspace_id <> ALL ($1))",
        &[&mine],
    )
    .await
    .expect("push other workspaces' queued jobs ahead");
    db.execute(
        "UPDATE internal.jobs SET locked_until = now() + interval '1 hour'
          WHERE status = 'running' AND (workspace_id IS NULL OR workspace_id <> ALL ($1))",
        &[&mine],
    )
    .await
    .expect("push other workspaces' leases ahead");
}

/// A workflow holding `flow` (React Flow JSON), published by its owner
/// through the API and active.
pub async fn active_workflow(db: &Client, t: &Tenant, flow: Value) -> Uuid {
    let wf: Uuid = db
        .query_one(
            "INSERT INTO api.workflows (workspace_id, name) VALUES ($1, 'engine') RETURNING id",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    db.execute(
        "SELECT internal.store_flow(w, $2::text::jsonb) FROM api.workflows w WHERE id = $1",
        &[&wf, &flow.to_string()],
    )
    .await
    .unwrap();
    let mut c = crate::connect().await;
    let req = crate::Request::with_claims(t.claims("owner")).method("POST");
    crate::pgrst(
        &mut c,
        &req,
        "SELECT * FROM api.publish_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE api.workflows SET status = 'active' WHERE id = $1",
        &[&wf],
    )
    .await
    .unwrap();
    wf
}
