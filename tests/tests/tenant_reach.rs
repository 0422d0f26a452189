//! What a member can move beyond their own rows (issue 9, section 3): the
//! plan's limits, which every write must pass, and the template ranking,
//! which every tenant sees.

use flowtrack_tests::fixtures::{self, quota_used};
use flowtrack_tests::{connect, connect_authenticator, pgrst, Request};
use uuid::Uuid;

/// Issue 9: a lead inserted with deleted_at in the future was not counted
/// by the leads gauge, yet read as "not deleted yet": the plan's leads
/// limit bypassed. A lead is deleted now or not at all.
#[tokio::test]
async fn leads_cannot_be_deleted_in_the_future() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "free").await;
    let member = Request::with_claims(t.claims("member"))
        .method("POST")
        .path("/leads");
    let before = quota_used(&db, t.workspace_id, "leads").await;
    for when in ["now() + interval '1 day'", "'infinity'"] {
        let err = pgrst(
            &mut api,
            &member,
            &format!(
                "INSERT INTO api.leads (email, deleted_at) VALUES ('later@lead.example', {when}) RETURNING id"
            ),
            &[],
        )
        .await
        .unwrap_err();
        assert_eq!((err.status, err.code.as_str()), (400, "23514"), "{err:?}");
        assert!(err.message.starts_with("deleted_at"), "{err:?}");
        assert!(err.hint.is_some());
    }
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM api.leads WHERE workspace_id = $1",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "nothing was written");

    // A live lead cannot be given a future deletion either; now works and
    // frees its slot.
    let rows = pgrst(
        &mut api,
        &member,
        "INSERT INTO api.leads (email) VALUES ('live@lead.example') RETURNING id",
        &[],
    )
    .await
    .unwrap();
    let id: Uuid = rows[0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(quota_used(&db, t.workspace_id, "leads").await, before + 1);
    let patch = Request::with_claims(t.claims("member"))
        .method("PATCH")
        .path("/leads");
    let err = pgrst(
        &mut api,
        &patch,
        "UPDATE api.leads SET deleted_at = now() + interval '1 year' WHERE id = $1 RETURNING id",
        &[&id],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, "23514", "{err:?}");
    assert_eq!(quota_used(&db, t.workspace_id, "leads").await, before + 1);
    pgrst(
        &mut api,
        &patch,
        "UPDATE api.leads SET deleted_at = 'now' WHERE id = $1 RETURNING id",
        &[&id],
    )
    .await
    .unwrap();
    assert_eq!(quota_used(&db, t.workspace_id, "leads").await, before);
}

/// Issue 9: every copy of a template bumped its popularity, so one member
/// could push a template up the ranking every tenant sees. Each workspace
/// counts once.
#[tokio::test]
async fn a_workspace_moves_a_template_popularity_once() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    // A template of this test's own, so that nothing else moves it meanwhile.
    let slug = format!("reach-{}", &Uuid::new_v4().simple().to_string()[..12]);
    db.execute(
        "INSERT INTO api.workflow_templates (slug, name, category, graph)
         VALUES ($1, 'Reach test', 'custom', '{\"nodes\": [{\"id\": \"s\", \"type\": \"TRIGGER_MANUAL\"}], \"edges\": []}')",
        &[&slug],
    )
    .await
    .unwrap();
    let popularity = || {
        let (db, slug) = (&db, &slug);
        async move {
            db.query_one(
                "SELECT popularity FROM api.workflow_templates WHERE slug = $1",
                &[slug],
            )
            .await
            .unwrap()
            .get::<_, i32>(0)
        }
    };
    let a = fixtures::tenant(&db, "pro").await;
    let b = fixtures::tenant(&db, "pro").await;
    for (t, role) in [(&a, "member"), (&a, "member"), (&a, "admin"), (&b, "owner")] {
        let req = Request::with_claims(t.claims(role))
            .method("POST")
            .path("/rpc/create_workflow_from_template");
        pgrst(
            &mut api,
            &req,
            "SELECT api.create_workflow_from_template($1) AS id",
            &[&slug],
        )
        .await
        .unwrap();
    }
    let copies: i64 = db
        .query_one(
            "SELECT count(*) FROM api.workflows WHERE workspace_id IN ($1, $2) AND name = 'Reach test'",
            &[&a.workspace_id, &b.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(copies, 4, "every call still makes its workflow");
    assert_eq!(popularity().await, 2, "two workspaces, two uses");
}
