//! Workflow versions: diff between any two (or against the draft) and
//! rollback, which publishes an old graph as a new head and never edits
//! history. Through the PostgREST harness.

use flowtrack_tests::{connect, connect_authenticator, fixtures, pgrst, Request};
use serde_json::{json, Value};
use uuid::Uuid;

fn canvas(status: &str, extra: bool) -> Value {
    let mut nodes = vec![
        json!({"id": "f", "type": "TRIGGER_FORM", "position": {"x": 10.5, "y": -3}, "width": 180, "selected": true,
               "data": {"label": "Form", "config": {"form_id": "contact"}, "color": "teal"}}),
        json!({"id": "m", "type": "ACTION_UPDATE_LEAD", "position": {"x": 400, "y": 0},
               "data": {"config": {"status": status}}, "zIndex": 3}),
    ];
    let mut edges = vec![
        json!({"id": "e1", "source": "f", "target": "m", "animated": true,
                                "condition": {"op": "exists", "path": "lead.email"}}),
    ];
    if extra {
        nodes.push(
            json!({"id": "w", "type": "LOGIC_DELAY", "position": {"x": 600, "y": 0},
                          "data": {"label": "Wait", "config": {"days": 1}}}),
        );
        edges.push(json!({"id": "e2", "source": "m", "target": "w"}));
    }
    json!({"nodes": nodes, "edges": edges, "viewport": {"x": 1, "y": 2, "zoom": 1}})
}

async fn call(
    api: &mut tokio_postgres::Client,
    who: &Request,
    sql: &str,
    p: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<Value> {
    pgrst(api, who, sql, p)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn diff_names_what_changed_and_rollback_republishes_without_editing_history() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let member = Request::with_claims(t.claims("member")).method("POST");
    let wf: Uuid = db
        .query_one(
            "INSERT INTO api.workflows (workspace_id, name) VALUES ($1, 'versions') RETURNING id",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    let import = "SELECT * FROM api.import_react_flow($1, $2::text::jsonb)";
    let publish = "SELECT * FROM api.publish_workflow($1)";
    let v1 = canvas("QUALIFIED", false);
    call(&mut api, &member, import, &[&wf, &v1.to_string()]).await;
    call(&mut api, &member, publish, &[&wf]).await;
    call(
        &mut api,
        &member,
        import,
        &[&wf, &canvas("CONTACTED", true).to_string()],
    )
    .await;
    call(&mut api, &member, publish, &[&wf]).await;

    let diff = "SELECT kind, key, change, fields FROM api.diff_workflow_versions($1, $2, $3)";
    let rows = call(&mut api, &member, diff, &[&wf, &1i32, &2i32]).await;
    assert_eq!(
        Value::Array(rows),
        json!([
            {"kind": "node", "key": "m", "change": "changed", "fields": ["data"]},
            {"kind": "node", "key": "w", "change": "added", "fields": null},
            {"kind": "edge", "key": "e2", "change": "added", "fields": null}
        ])
    );
    let back = call(&mut api, &member, diff, &[&wf, &2i32, &1i32]).await;
    assert_eq!(back.iter().filter(|r| r["change"] == "removed").count(), 2);
    let to_draft = call(&mut api, &member, diff, &[&wf, &2i32, &None::<i32>]).await;
    assert!(to_draft.is_empty(), "the draft is version 2: {to_draft:?}");

    let graphs_before: Vec<Value> = db
        .query(
            "SELECT graph FROM api.workflow_versions WHERE workflow_id = $1 ORDER BY version",
            &[&wf],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let rolled = call(
        &mut api,
        &member,
        "SELECT * FROM api.rollback_workflow($1, 1)",
        &[&wf],
    )
    .await;
    assert_eq!(rolled[0], json!({"version": 3, "rolled_back_to": 1}));
    let rows = db
        .query("SELECT version, graph, change_note FROM api.workflow_versions WHERE workflow_id = $1 ORDER BY version", &[&wf])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for (i, g) in graphs_before.iter().enumerate() {
        assert_eq!(
            rows[i].get::<_, Value>(1),
            *g,
            "version {} is untouched",
            i + 1
        );
    }
    assert_eq!(
        rows[2].get::<_, Value>(1),
        graphs_before[0],
        "version 3 is version 1's graph"
    );
    assert_eq!(rows[2].get::<_, String>(2), "Rollback to version 1");
    let published: i32 = db
        .query_one(
            "SELECT published_version FROM api.workflows WHERE id = $1",
            &[&wf],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, 3);
    // The draft is version 1's canvas again, exactly as it was imported.
    let exported = call(
        &mut api,
        &member,
        "SELECT api.export_react_flow($1) AS flow",
        &[&wf],
    )
    .await;
    let mut want = v1.clone();
    want["viewport"] = canvas("CONTACTED", true)["viewport"].clone();
    assert_eq!(exported[0]["flow"], want);
    assert!(call(&mut api, &member, diff, &[&wf, &1i32, &None::<i32>])
        .await
        .is_empty());
}

#[tokio::test]
async fn rollback_refuses_viewers_unknown_and_current_versions_without_writing() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let other = fixtures::tenant(&db, "pro").await;
    let member = Request::with_claims(t.claims("member")).method("POST");
    let viewer = Request::with_claims(t.claims("viewer")).method("POST");
    let stranger = Request::with_claims(other.claims("owner")).method("POST");
    let wf: Uuid = db
        .query_one(
            "INSERT INTO api.workflows (workspace_id, name) VALUES ($1, 'guarded') RETURNING id",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    call(
        &mut api,
        &member,
        "SELECT * FROM api.import_react_flow($1, $2::text::jsonb)",
        &[&wf, &canvas("QUALIFIED", false).to_string()],
    )
    .await;
    call(
        &mut api,
        &member,
        "SELECT * FROM api.publish_workflow($1)",
        &[&wf],
    )
    .await;
    call(
        &mut api,
        &member,
        "SELECT * FROM api.publish_workflow($1)",
        &[&wf],
    )
    .await;
    let rollback = "SELECT * FROM api.rollback_workflow($1, $2)";
    let cases: [(&Request, i32, u16, &str, &str); 4] = [
        (&viewer, 1, 403, "42501", ""),
        (&member, 9, 404, "PT404", "to_version"),
        (&member, 2, 409, "PT409", "to_version"),
        (&stranger, 1, 404, "PT404", "workflow_id"),
    ];
    for (who, version, status, code, field) in cases {
        let err = pgrst(&mut api, who, rollback, &[&wf, &version])
            .await
            .unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (status, code),
            "{version}: {err}"
        );
        assert!(err.message.starts_with(field), "{err}");
        assert!(err.hint.is_some(), "{err}");
    }
    let versions: i64 = db
        .query_one(
            "SELECT count(*) FROM api.workflow_versions WHERE workflow_id = $1",
            &[&wf],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 2, "nothing written");
    let err = pgrst(
        &mut api,
        &member,
        "SELECT * FROM api.diff_workflow_versions($1, 1, 7)",
        &[&wf],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (404, "PT404"));
    assert!(err.message.starts_with("to_version"), "{err}");
}
