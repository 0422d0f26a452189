//! Workflow graphs for tests: canvas nodes and edges, and workflows stored,
//! published and activated the way the API does it.

use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::{connect, fixtures::Tenant, pgrst, ApiError, Request};

/// A canvas node of type `t` with `config`.
pub fn node(id: &str, t: &str, config: Value) -> Value {
    json!({"id": id, "type": t, "position": {"x": 0, "y": 0}, "data": {"label": id, "config": config}})
}

/// A canvas edge from `s` to `t`.
pub fn edge(id: &str, s: &str, t: &str) -> Value {
    json!({"id": id, "source": s, "target": t})
}

/// A draft workflow of `flow` in `t` (stored as superuser).
pub async fn draft(db: &Client, t: &Tenant, flow: &Value) -> Uuid {
    let wf: Uuid = db
        .query_one(
            "INSERT INTO api.workflows (workspace_id, name) VALUES ($1, 'test graph') RETURNING id",
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
    wf
}

/// Publish `wf` as its owner would (POST /rpc/publish_workflow).
pub async fn publish(t: &Tenant, wf: Uuid) -> Result<Vec<Value>, ApiError> {
    let mut c = connect().await;
    let req = Request::with_claims(t.claims("owner")).method("POST");
    pgrst(
        &mut c,
        &req,
        "SELECT * FROM api.publish_workflow($1)",
        &[&wf],
    )
    .await
}

/// A workflow of `flow` in `t`, published and active.
pub async fn active(db: &Client, t: &Tenant, flow: &Value) -> Uuid {
    let wf = draft(db, t, flow).await;
    publish(t, wf).await.unwrap();
    db.execute(
        "UPDATE api.workflows SET status = 'active' WHERE id = $1",
        &[&wf],
    )
    .await
    .unwrap();
    wf
}
