//! Resource embedding through the API server (issue 9, section 3).
//!
//! `GET /workspaces?select=*,workspace_members!workspace_members_workspace_id_fkey(*)`
//! answered 500 with 21000 ("more than one row returned by a subquery used
//! as an expression"). No policy was at fault: the partial unique index
//! "one owner per workspace" was keyed on exactly the foreign key's column,
//! the API server (postrust 3.1.0; it ignores the index's WHERE) took that
//! for a one-to-one relationship, and rendered the embed as a scalar
//! subquery. So the request goes through the real server here, and the
//! catalog rule below keeps any index from saying so again.

use flowtrack_tests::{column, connect, fixtures, jwt};
use serde_json::Value;

fn get(path: &str, token: &str) -> Result<Vec<Value>, String> {
    match ureq::get(&format!("{}{path}", flowtrack_tests::api_url()))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
    {
        Ok(resp) => Ok(resp.into_json().unwrap()),
        Err(ureq::Error::Status(code, resp)) => {
            Err(format!("HTTP {code}: {}", resp.into_string().unwrap()))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn workspaces_embed_all_their_members_and_subscriptions() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    // Two subscriptions: one canceled, one live (the other partial unique index).
    db.execute(
        "INSERT INTO api.subscriptions (workspace_id, plan_id, status, anchor_at, current_period_start, current_period_end)
         SELECT w.id, w.plan_id, s, now(), now() - interval '1 month', now()
           FROM api.workspaces w, unnest(ARRAY['canceled', 'active']) s WHERE w.id = $1",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    for role in ["owner", "member"] {
        let token = jwt::sign(&t.claims(role), &jwt::secret());
        let rows = get(
            "/workspaces?select=*,workspace_members!workspace_members_workspace_id_fkey(*)",
            &token,
        )
        .unwrap_or_else(|e| panic!("{role}: {e}"));
        assert_eq!(rows.len(), 1, "{role}: {rows:?}");
        let members = rows[0]["workspace_members"]
            .as_array()
            .unwrap_or_else(|| panic!("{role}: members must embed as a list: {rows:?}"));
        assert_eq!(members.len(), fixtures::ROLES.len(), "{role}: {members:?}");
    }
    let token = jwt::sign(&t.claims("owner"), &jwt::secret());
    let rows = get("/workspaces?select=id,subscriptions(status)", &token).unwrap();
    let subs = rows[0]["subscriptions"]
        .as_array()
        .unwrap_or_else(|| panic!("subscriptions must embed as a list: {rows:?}"));
    assert_eq!(subs.len(), 2, "{subs:?}");
}

/// A unique index keyed on exactly a foreign key's columns makes API servers
/// embed the relationship as one row. A real one-to-one is a non-partial
/// index; a partial one ("one owner", "one live subscription") is not.
#[tokio::test]
async fn no_partial_unique_index_makes_a_foreign_key_look_one_to_one() {
    let db = connect().await;
    let bad: Vec<String> = column(
        &db,
        "SELECT c.conrelid::regclass || ' ' || c.conname || ' by ' || i.indexrelid::regclass
           FROM pg_constraint c
           JOIN pg_index i ON i.indrelid = c.conrelid AND i.indisunique AND i.indpred IS NOT NULL
                          AND c.conkey::int[] @> i.indkey::int[]
          WHERE c.contype = 'f' AND c.connamespace = 'api'::regnamespace
          ORDER BY 1",
        &[],
    )
    .await;
    assert!(
        bad.is_empty(),
        "foreign keys a partial unique index makes look one-to-one: {bad:?}"
    );
}
