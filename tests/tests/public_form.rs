//! The public form definition (api.public_form): what /p/{workspace}/{form}
//! renders, to anonymous callers, and nothing else; one answer for every
//! form that is not there. Through the harness and over HTTP.

use flowtrack_tests::{connect, connect_authenticator, fixtures, pgrst, Request};
use serde_json::{json, Value};

const SQL: &str = "SELECT api.public_form($1, $2) AS public_form";

#[tokio::test]
async fn anonymous_visitors_read_an_active_forms_questions_and_nothing_else() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let p = fixtures::populate(&db, &t).await;
    db.execute(
        "INSERT INTO api.form_fields (workspace_id, form_id, field_key, label, field_type, required, options, position)
         SELECT workspace_id, id, 'size', 'Company size', 'select', false, '[\"1-10\", \"11-50\"]', 2
           FROM api.forms WHERE workspace_id = $1 AND slug = $2",
        &[&t.workspace_id, &p.form_slug],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE api.forms SET settings = '{\"notify\": \"owner@secret.example\"}' WHERE workspace_id = $1",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    let mut api = connect_authenticator().await;
    let anon = Request::anon().path("/rpc/public_form");
    let rows = pgrst(&mut api, &anon, SQL, &[&t.slug, &p.form_slug])
        .await
        .unwrap();
    let form = &rows[0]["public_form"];
    assert_eq!(
        *form,
        json!({
            "workspace_slug": t.slug, "form_slug": "contact", "name": "Contact",
            "fields": [
                {"key": "email", "label": "Email", "type": "email", "required": true, "options": null},
                {"key": "size", "label": "Company size", "type": "select", "required": false, "options": ["1-10", "11-50"]}
            ]
        })
    );
    let text = form.to_string();
    assert!(
        !text.contains("secret.example") && !text.contains(&t.workspace_id.to_string()),
        "{text}"
    );

    // Over HTTP, as the page would fetch it.
    let url = format!(
        "{}/rpc/public_form?workspace_slug={}&form_slug={}",
        flowtrack_tests::api_url(),
        t.slug,
        p.form_slug
    );
    let body: Value = ureq::get(&url)
        .call()
        .expect("GET /rpc/public_form")
        .into_json()
        .unwrap();
    assert_eq!(body, *form);
}

#[tokio::test]
async fn missing_inactive_and_foreign_forms_all_get_the_same_404() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let p = fixtures::populate(&db, &t).await;
    let other = fixtures::tenant(&db, "starter").await;
    db.execute(
        "INSERT INTO api.forms (workspace_id, slug, name, is_active) VALUES ($1, 'paused', 'Paused', false)",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    let mut api = connect_authenticator().await;
    let anon = Request::anon().path("/rpc/public_form");
    let mut seen = Vec::new();
    for (ws, form) in [
        ("no-such-workspace", p.form_slug.as_str()),
        (t.slug.as_str(), "no-such-form"),
        (t.slug.as_str(), "paused"),
        (other.slug.as_str(), p.form_slug.as_str()),
    ] {
        let err = pgrst(&mut api, &anon, SQL, &[&ws, &form])
            .await
            .unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (404, "PT404"),
            "{ws}/{form}: {err}"
        );
        assert_eq!(err.message, format!("form: no form \"{form}\" at \"{ws}\""));
        seen.push(err.hint);
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "one hint for every case: {seen:?}");
    // Soft-deleted forms are gone too.
    db.execute(
        "UPDATE api.forms SET deleted_at = now() WHERE workspace_id = $1 AND slug = $2",
        &[&t.workspace_id, &p.form_slug],
    )
    .await
    .unwrap();
    let err = pgrst(&mut api, &anon, SQL, &[&t.slug, &p.form_slug])
        .await
        .unwrap_err();
    assert_eq!(err.status, 404);
}
