//! What the quota functions run as, and what they read: no quota code runs
//! as a superuser, only the owner may call the Rust functions, and nothing a
//! caller puts in its temporary schema stands in for a relation they read.

use flowtrack_tests::{connect, fixtures, pgrst, Request};

/// Names the quota code reads (the catalogs the removed direct path looked
/// up, and the tables of the quota statements), each with what it really is.
const SHADOWED: [(&str, &str); 15] = [
    ("pg_trigger", "pg_catalog.pg_trigger"),
    ("pg_constraint", "pg_catalog.pg_constraint"),
    // (attmissingval is of a pseudo-type no view may have.)
    (
        "pg_attribute",
        "(SELECT attrelid, attname, attnum, atttypid, attidentity, attgenerated, attisdropped
            FROM pg_catalog.pg_attribute) a",
    ),
    ("pg_partitioned_table", "pg_catalog.pg_partitioned_table"),
    ("pg_opclass", "pg_catalog.pg_opclass"),
    ("pg_am", "pg_catalog.pg_am"),
    ("usage_quotas", "api.usage_quotas"),
    ("usage_events", "api.usage_events"),
    ("quota_keys", "api.quota_keys"),
    ("workspaces", "api.workspaces"),
    ("subscriptions", "api.subscriptions"),
    ("subscription_plans", "api.subscription_plans"),
    ("plan_limits", "api.plan_limits"),
    ("usage_idempotency", "internal.usage_idempotency"),
    ("usage_quota_history", "internal.usage_quota_history"),
];

#[tokio::test]
async fn a_callers_temporary_objects_never_stand_in_for_what_quota_code_reads() {
    // A fresh session: nothing cached from earlier calls. Its temporary
    // schema is what any role with TEMP could fill, as in the report: a
    // temporary view named like a catalog, calling a function that says who
    // ran it. Before the fix, api.record_usage ran it as the superuser.
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    let ws = t.workspace_id;
    // Take the lazy paths too: a period to open (ai_tokens), one that has
    // ended (api_calls).
    db.execute(
        "DELETE FROM api.usage_quotas WHERE workspace_id = $1 AND quota_key = 'ai_tokens'",
        &[&ws],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE api.usage_quotas SET period_start = now() - interval '40 days', period_end = now() - interval '10 days'
          WHERE workspace_id = $1 AND quota_key = 'api_calls'",
        &[&ws],
    )
    .await
    .unwrap();
    let mut shadows = String::from(
        "CREATE FUNCTION pg_temp.evil() RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'a pg_temp shadow was read, as %', current_user; END $$;",
    );
    for (name, real) in SHADOWED {
        shadows +=
            &format!("CREATE TEMP VIEW {name} AS SELECT * FROM {real} WHERE pg_temp.evil();");
    }
    db.batch_execute(&shadows).await.unwrap();

    let member = Request::with_claims(t.claims("member"))
        .method("POST")
        .path("/rpc/record_usage");
    let record = "SELECT * FROM api.record_usage('ai_tokens', 7, 'shadow-1')";
    let rows = pgrst(&mut db, &member, record, &[]).await.unwrap();
    assert_eq!(
        (rows[0]["used"].as_i64(), rows[0]["replayed"].as_bool()),
        (Some(7), Some(false))
    );
    let rows = pgrst(&mut db, &member, record, &[]).await.unwrap();
    assert_eq!(rows[0]["replayed"], true);
    let viewer = Request::with_claims(t.claims("viewer")).path("/rpc/check_quota");
    let rows = pgrst(
        &mut db,
        &viewer,
        "SELECT * FROM api.check_quota('ai_tokens', 1)",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(rows[0]["used"], 7);
    let rows = pgrst(
        &mut db,
        &viewer,
        "SELECT * FROM api.check_quota('api_calls', 1)",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        (rows[0]["used"].as_i64(), rows[0]["allowed"].as_bool()),
        (Some(0), Some(true))
    );
    // The lower layers, called directly in the same session.
    db.execute(
        "SELECT internal.consume_quota($1, 'executions_per_month', 1)",
        &[&ws],
    )
    .await
    .unwrap();
    db.execute(
        "SELECT * FROM internal.check_quota($1, 'executions_per_month')",
        &[&ws],
    )
    .await
    .unwrap();
    // The shadows were live all along: read by name, they fire.
    let err = db
        .query("SELECT count(*) FROM pg_trigger", &[])
        .await
        .unwrap_err();
    let message = err.as_db_error().map(|e| e.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.starts_with("a pg_temp shadow was read")),
        "{err:?}"
    );
}

#[tokio::test]
async fn no_quota_function_runs_as_a_superuser() {
    let db = connect().await;
    // The Rust functions run as their caller.
    let definer: Vec<String> = flowtrack_tests::column(
        &db,
        "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
          WHERE p.oid IN ('flowtrack.consume_quota(uuid, text, bigint, text)'::regprocedure,
                          'flowtrack.check_quota(uuid, text, bigint)'::regprocedure)
            AND p.prosecdef",
        &[],
    )
    .await;
    assert!(definer.is_empty(), "SECURITY DEFINER: {definer:?}");
    // No extension function runs as a superuser unless its comment says why.
    let unexplained: Vec<String> = flowtrack_tests::column(
        &db,
        "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
           JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
          WHERE p.pronamespace = 'flowtrack'::regnamespace AND p.prosecdef AND r.rolsuper
            AND coalesce(pg_catalog.obj_description(p.oid, 'pg_proc'), '') NOT ILIKE '%superuser%'",
        &[],
    )
    .await;
    assert!(unexplained.is_empty(), "run as superuser: {unexplained:?}");
    // The SQL wrappers are the trusted entry points: owned by flowtrack_owner,
    // which is no superuser, with pg_temp last in a pinned search_path and
    // the workspace override scoped to the call.
    let wrappers: Vec<String> = flowtrack_tests::column(
        &db,
        "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
           JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
          WHERE p.oid IN ('internal.consume_quota(uuid, text, bigint, text)'::regprocedure,
                          'internal.check_quota(uuid, text, bigint)'::regprocedure,
                          'internal.sync_quotas(uuid)'::regprocedure,
                          'internal.release_quota(uuid, text, bigint)'::regprocedure)
            AND p.prosecdef AND r.rolname = 'flowtrack_owner' AND NOT r.rolsuper
            AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)
            AND 'flowtrack.workspace_id=' = ANY (p.proconfig)
          ORDER BY 1",
        &[],
    )
    .await;
    assert_eq!(
        wrappers,
        [
            "internal.check_quota(uuid,text,bigint)",
            "internal.consume_quota(uuid,text,bigint,text)",
            "internal.release_quota(uuid,text,bigint)",
            "internal.sync_quotas(uuid)",
        ]
    );
}

#[tokio::test]
async fn only_the_owner_may_call_the_rust_quota_functions() {
    let db = connect().await;
    for function in [
        "flowtrack.consume_quota(uuid, text, bigint, text)",
        "flowtrack.check_quota(uuid, text, bigint)",
        "internal.consume_quota(uuid, text, bigint, text)",
        "internal.check_quota(uuid, text, bigint)",
    ] {
        let callers: Vec<String> = flowtrack_tests::column(
            &db,
            "SELECT r.rolname::text FROM pg_catalog.pg_roles r
              WHERE r.rolname IN ('anon', 'authenticated', 'authenticator', 'flowtrack_worker', 'flowtrack_owner')
                AND pg_catalog.has_function_privilege(r.oid, $1::text::regprocedure, 'EXECUTE')
              ORDER BY 1",
            &[&function],
        )
        .await;
        assert_eq!(callers, ["flowtrack_owner"], "{function}");
    }
}
