//! Seed 000's gate: no outgoing email before the workspace owner's address
//! is verified (internal.require_verified_sender), and the identity
//! provider's hook that verifies it (internal.mark_email_verified).

use flowtrack_tests::graphs::{edge, node};
use flowtrack_tests::{connect, connect_authenticator, fixtures, pgrst, Request};
use serde_json::json;
use uuid::Uuid;

async fn count(db: &tokio_postgres::Client, sql: &str, ws: Uuid) -> i64 {
    db.query_one(sql, &[&ws]).await.unwrap().get(0)
}

#[tokio::test]
async fn an_unverified_owner_sends_nothing_until_the_provider_verifies_the_address() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let owner = t.users["owner"];
    db.batch_execute(&format!(
        "INSERT INTO api.forms (workspace_id, slug, name) VALUES ('{ws}', 'contact', 'Contact');
         INSERT INTO api.form_fields (workspace_id, form_id, field_key, label, field_type)
         SELECT '{ws}', id, 'email', 'Email', 'email' FROM api.forms WHERE workspace_id = '{ws}';",
        ws = t.workspace_id
    ))
    .await
    .unwrap();
    let wf = fixtures::active_workflow(
        &db,
        &t,
        json!({"nodes": [node("form", "TRIGGER_FORM", json!({"form_id": "contact"})),
                         node("mail", "ACTION_SEND_EMAIL", json!({"to": "{{lead.email}}", "subject": "Thanks"}))],
               "edges": [edge("e1", "form", "mail")]}),
    )
    .await;
    db.execute(
        "UPDATE api.users SET email_verified_at = NULL WHERE id = $1",
        &[&owner],
    )
    .await
    .unwrap();

    // A visitor's submission is refused whole, without the reason.
    let anon = Request::anon().method("POST").path("/rpc/submit_form");
    let submit = "SELECT * FROM api.submit_form($1, 'contact', $2::text::jsonb, $3)";
    let fields = json!({"email": "visitor@x.example"}).to_string();
    let err = pgrst(&mut api, &anon, submit, &[&t.slug, &fields, &"s1"])
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "PT403"), "{err}");
    assert!(
        !err.message.contains("verified"),
        "a visitor learns no reason: {err}"
    );
    // The owner starting it by hand is told why, and how to fix it.
    let me = Request::with_claims(t.claims("owner")).method("POST");
    let err = pgrst(
        &mut api,
        &me,
        "SELECT * FROM api.start_execution($1, '{}', 'by-hand')",
        &[&wf],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "PT403"), "{err}");
    assert!(
        err.message.starts_with("email: ") && err.message.contains("verified"),
        "{err}"
    );
    assert!(
        err.hint
            .as_deref()
            .unwrap_or("")
            .contains("verification link"),
        "{err}"
    );
    for table in ["api.leads", "api.workflow_executions", "internal.jobs"] {
        let n = count(
            &db,
            &format!("SELECT count(*) FROM {table} WHERE workspace_id = $1"),
            t.workspace_id,
        )
        .await;
        assert_eq!(n, 0, "{table}: nothing is written");
    }
    assert_eq!(
        fixtures::quota_used(&db, t.workspace_id, "email_sends_per_month").await,
        0
    );

    // The hook ignores a stale address, then verifies the current one.
    let email: String = db
        .query_one("SELECT email::text FROM api.users WHERE id = $1", &[&owner])
        .await
        .unwrap()
        .get(0);
    let stale: bool = db
        .query_one(
            "SELECT internal.mark_email_verified($1, 'old@x.example')",
            &[&owner],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!stale);
    let done: bool = db
        .query_one(
            "SELECT internal.mark_email_verified($1, $2)",
            &[&owner, &email.to_uppercase()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(done, "addresses compare case-insensitively");
    pgrst(&mut api, &anon, submit, &[&t.slug, &fields, &"s2"])
        .await
        .unwrap();
    let jobs = count(
        &db,
        "SELECT count(*) FROM internal.jobs WHERE workspace_id = $1 AND kind = 'email'",
        t.workspace_id,
    )
    .await;
    assert_eq!(jobs, 1);

    // One account per verified address.
    let twin: Uuid = db
        .query_one(
            "INSERT INTO api.users (email) VALUES ($1) RETURNING id",
            &[&email],
        )
        .await
        .unwrap()
        .get(0);
    let err = db
        .query_one(
            "SELECT internal.mark_email_verified($1, $2)",
            &[&twin, &email],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
}
