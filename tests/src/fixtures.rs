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

/// A workspace on `plan` with an owner, admin, member and viewer.
pub async fn tenant(db: &Client, plan: &str) -> Tenant {
    let tag = Uuid::new_v4().simple().to_string()[..12].to_string();
    let slug = format!("t-{tag}");
    let mut users = BTreeMap::new();
    for role in ROLES {
        let id: Uuid = db
            .query_one(
                "INSERT INTO api.users (email, full_name) VALUES ($1, $2) RETURNING id",
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
