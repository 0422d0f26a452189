//! Partition management (issue 11): `flowtrack.run_maintenance(now, only)`
//! driven through time by its `now` argument, on real partitioned tables.
//! Each test makes its own parent in its own schema (partitions created in
//! that schema too) and passes `only`, so tests never touch each other's or
//! FlowTrack's own tables.

use flowtrack_tests::{column, connect};
use tokio_postgres::Client;

/// (partition, action, rows, detail) of one pass.
type Actions = Vec<(String, String, i64, String)>;

/// A fresh schema owned by flowtrack_owner with a parent `schema.table`
/// range-partitioned on `key`, registered directly in the config table (no
/// pass at registration: the tests choose `now`). Returns the parent as SQL.
async fn parent(
    db: &Client,
    schema: &str,
    table: &str,
    key: &str,
    config: &str, // extra columns: "partition_interval, premake, retention, retention_action, archive_schema"
) -> String {
    let (s, t, k) = (quote(schema), quote(table), quote(key));
    db.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {s} CASCADE;
         CREATE SCHEMA {s} AUTHORIZATION flowtrack_owner;
         SET ROLE flowtrack_owner;
         CREATE TABLE {s}.{t} (id bigint NOT NULL, {k} timestamptz NOT NULL, note text CHECK (note <> 'x'),
                               PRIMARY KEY (id, {k})) PARTITION BY RANGE ({k});
         CREATE INDEX ON {s}.{t} (note);
         GRANT SELECT ON {s}.{t} TO authenticated;
         RESET ROLE;
         INSERT INTO internal.partition_config
                (parent, partition_interval, premake, retention, retention_action, archive_schema, partition_schema)
         SELECT {}::regclass, c.*, {}
           FROM (VALUES ({config})) AS c;",
        literal(&format!("{s}.{t}")),
        literal(schema)
    ))
    .await
    .unwrap_or_else(|e| panic!("making {schema}.{table}: {e:?}"));
    format!("{s}.{t}")
}

/// Forget the schema's parents, then drop it.
async fn drop_schema(db: &Client, schema: &str) {
    db.batch_execute(&format!(
        "DELETE FROM internal.partition_config c USING pg_class r
          WHERE r.oid = c.parent AND r.relnamespace = {}::regnamespace;
         DROP SCHEMA {} CASCADE",
        literal(&quote(schema)),
        quote(schema)
    ))
    .await
    .unwrap();
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn run(db: &Client, now: &str, parent: &str) -> Actions {
    db.query(
        &format!(
            "SELECT partition, action, rows, detail
               FROM flowtrack.run_maintenance({}::timestamptz, {}::regclass)",
            literal(now),
            literal(parent)
        ),
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("run_maintenance({now}, {parent}): {e:?}"))
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// The parent's partitions by name.
async fn partitions(db: &Client, parent: &str) -> Vec<String> {
    column(
        db,
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = $1::text::regclass ORDER BY 1",
        &[&parent],
    )
    .await
}

fn names(actions: &Actions, action: &str) -> Vec<String> {
    actions
        .iter()
        .filter(|a| a.1 == action)
        .map(|a| {
            let table = a.0.rsplit("\".\"").next().unwrap();
            table.trim_end_matches('"').replace("\"\"", "\"")
        })
        .collect()
}

#[tokio::test]
async fn month_and_year_boundaries_in_any_session_time_zone() {
    let db = connect().await;
    let p = parent(
        &db,
        "pt_months",
        "events",
        "at",
        "'monthly', 2, NULL::interval, 'drop', NULL::name",
    )
    .await;
    let first = run(&db, "2026-12-31 23:59:59.999999+00", &p).await;
    assert_eq!(
        names(&first, "create"),
        [
            "events_2026_12",
            "events_2027_01",
            "events_2027_02",
            "events_default"
        ]
    );
    // One microsecond later it is January: one more month ahead, nothing else.
    let next = run(&db, "2027-01-01 00:00:00+00", &p).await;
    assert_eq!(names(&next, "create"), ["events_2027_03"], "{next:?}");
    assert_eq!(next.len(), 1);
    // Boundaries are UTC months whatever the session's time zone, and the
    // bounds read back the same way in it: a pass in Auckland finds nothing.
    db.batch_execute("SET TimeZone = 'Pacific/Auckland'")
        .await
        .unwrap();
    assert!(run(&db, "2027-01-01 00:00:00+00", &p).await.is_empty());
    db.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let bound: String = db
        .query_one(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = 'pt_months.events_2027_01'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        bound,
        "FOR VALUES FROM ('2027-01-01 00:00:00+00') TO ('2027-02-01 00:00:00+00')"
    );
    // Rows at the edges land where they belong.
    db.batch_execute(
        "INSERT INTO pt_months.events VALUES (1, '2026-12-31 23:59:59.999999+00'), (2, '2027-01-01 00:00:00+00')",
    )
    .await
    .unwrap();
    let homes: Vec<String> = column(
        &db,
        "SELECT tableoid::regclass::text FROM pt_months.events ORDER BY id",
        &[],
    )
    .await;
    assert_eq!(
        homes,
        ["pt_months.events_2026_12", "pt_months.events_2027_01"]
    );
    drop_schema(&db, "pt_months").await;
}

#[tokio::test]
async fn daily_partitions_across_29_february_with_retention() {
    let db = connect().await;
    let p = parent(
        &db,
        "pt_leap",
        "events",
        "at",
        "'daily', 1, interval '2 days', 'drop', NULL::name",
    )
    .await;
    let a = run(&db, "2024-02-28 12:00:00+00", &p).await;
    assert_eq!(
        names(&a, "create"),
        ["events_2024_02_28", "events_2024_02_29", "events_default"]
    );
    let b = run(&db, "2024-02-29 00:00:00+00", &p).await;
    assert_eq!(names(&b, "create"), ["events_2024_03_01"]);
    db.batch_execute("INSERT INTO pt_leap.events VALUES (1, '2024-02-29 10:00+00')")
        .await
        .unwrap();
    // 2 March noon: the cutoff is 29 February noon, so 28 February (ending at
    // 29 February 00:00) goes and 29 February, which ends after it, stays.
    let c = run(&db, "2024-03-02 12:00:00+00", &p).await;
    assert_eq!(
        names(&c, "create"),
        ["events_2024_03_02", "events_2024_03_03"]
    );
    assert_eq!(names(&c, "drop"), ["events_2024_02_28"]);
    let d = run(&db, "2024-03-03 12:00:00+00", &p).await;
    assert_eq!(names(&d, "drop"), ["events_2024_02_29"]);
    assert_eq!(
        partitions(&db, &p).await,
        [
            "events_2024_03_01",
            "events_2024_03_02",
            "events_2024_03_03",
            "events_2024_03_04",
            "events_default"
        ]
    );
    // A year without 29 February goes from the 28th to 1 March.
    let q = parent(
        &db,
        "pt_noleap",
        "events",
        "at",
        "'daily', 1, NULL::interval, 'drop', NULL::name",
    )
    .await;
    let e = run(&db, "2023-02-28 08:00:00+00", &q).await;
    assert_eq!(
        names(&e, "create"),
        ["events_2023_02_28", "events_2023_03_01", "events_default"]
    );
    // Weekly: ISO weeks, Monday to Monday.
    let w = parent(
        &db,
        "pt_weeks",
        "events",
        "at",
        "'weekly', 1, NULL::interval, 'drop', NULL::name",
    )
    .await;
    let f = run(&db, "2024-02-29 08:00:00+00", &w).await;
    assert_eq!(
        names(&f, "create"),
        ["events_2024_02_26", "events_2024_03_04", "events_default"]
    );
    for s in ["pt_leap", "pt_noleap", "pt_weeks"] {
        drop_schema(&db, s).await;
    }
}

#[tokio::test]
async fn premake_keeps_inserts_out_of_the_default_partition() {
    let db = connect().await;
    let p = parent(
        &db,
        "pt_premake",
        "events",
        "at",
        "'monthly', 4, NULL::interval, 'drop', NULL::name",
    )
    .await;
    let a = run(&db, "2026-05-20 00:00:00+00", &p).await;
    assert_eq!(a.len(), 6, "current + 4 ahead + default: {a:?}");
    db.batch_execute("INSERT INTO pt_premake.events SELECT g, '2026-05-01'::timestamptz + g * interval '1 day' FROM generate_series(0, 150) g")
        .await
        .unwrap();
    let in_default: i64 = db
        .query_one("SELECT count(*) FROM pt_premake.events_default", &[])
        .await
        .unwrap()
        .get(0);
    // 1 May + 150 days = 28 September, inside the four months made ahead.
    assert_eq!(in_default, 0);
    // A month later exactly one more month appears; repeating is a no-op.
    assert_eq!(
        names(&run(&db, "2026-06-01 00:00:00+00", &p).await, "create"),
        ["events_2026_10"]
    );
    assert!(run(&db, "2026-06-01 00:00:00+00", &p).await.is_empty());
    assert!(run(&db, "2026-06-15 00:00:00+00", &p).await.is_empty());
    drop_schema(&db, "pt_premake").await;
}

#[tokio::test]
async fn drop_detach_and_archive_never_the_current_partition() {
    let db = connect().await;
    db.batch_execute(
        "DROP SCHEMA IF EXISTS pt_archive CASCADE; CREATE SCHEMA pt_archive AUTHORIZATION flowtrack_owner",
    )
    .await
    .unwrap();
    let dropper = parent(
        &db,
        "pt_drop",
        "events",
        "at",
        "'monthly', 0, interval '1 day', 'drop', NULL::name",
    )
    .await;
    let detacher = parent(
        &db,
        "pt_detach",
        "events",
        "at",
        "'monthly', 0, interval '1 day', 'detach', NULL::name",
    )
    .await;
    let archiver = parent(
        &db,
        "pt_arch",
        "events",
        "at",
        "'monthly', 0, interval '1 day', 'detach', 'pt_archive'::name",
    )
    .await;
    for p in [&dropper, &detacher, &archiver] {
        run(&db, "2026-01-15 00:00:00+00", p).await;
        db.batch_execute(&format!(
            "INSERT INTO {p} VALUES (1, '2026-01-20+00', 'january')"
        ))
        .await
        .unwrap();
        let feb = run(&db, "2026-02-01 00:00:00+00", p).await;
        // 1 February: the cutoff (31 January) is before January's end, so
        // January stays.
        assert_eq!(names(&feb, "create"), ["events_2026_02"], "{p}: {feb:?}");
        assert!(feb.iter().all(|a| a.1 == "create"), "{p}: {feb:?}");
    }
    let gone = run(&db, "2026-02-02 00:00:00+00", &dropper).await;
    assert_eq!(names(&gone, "drop"), ["events_2026_01"]);
    assert_eq!(
        partitions(&db, &dropper).await,
        ["events_2026_02", "events_default"]
    );
    let exists = |q: &'static str| {
        let db = &db;
        async move { db.query_one(q, &[]).await.unwrap().get::<_, bool>(0) }
    };
    assert!(!exists("SELECT to_regclass('pt_drop.events_2026_01') IS NOT NULL").await);

    let detached = run(&db, "2026-02-02 00:00:00+00", &detacher).await;
    assert_eq!(names(&detached, "detach"), ["events_2026_01"]);
    assert_eq!(
        partitions(&db, &detacher).await,
        ["events_2026_02", "events_default"]
    );
    let kept: String = db
        .query_one("SELECT note FROM pt_detach.events_2026_01", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, "january", "a detached partition keeps its rows");
    assert!(
        !exists(
            "SELECT relispartition FROM pg_class WHERE oid = 'pt_detach.events_2026_01'::regclass"
        )
        .await
    );

    let archived = run(&db, "2026-02-02 00:00:00+00", &archiver).await;
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert_eq!(archived[0].0, "\"pt_archive\".\"events_2026_01\"");
    assert_eq!(archived[0].1, "detach");
    let kept: String = db
        .query_one("SELECT note FROM pt_archive.events_2026_01", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, "january");
    assert!(!exists("SELECT to_regclass('pt_arch.events_2026_01') IS NOT NULL").await);

    // Repeating the pass changes nothing, for each action kind.
    for p in [&dropper, &detacher, &archiver] {
        assert!(
            run(&db, "2026-02-02 00:00:00+00", p).await.is_empty(),
            "{p}"
        );
    }
    // Far in the future with a day of retention: everything before the
    // current month goes, the current month (and the default) never.
    let late = run(&db, "2027-06-15 00:00:00+00", &dropper).await;
    assert_eq!(names(&late, "create"), ["events_2027_06"]);
    assert_eq!(names(&late, "drop"), ["events_2026_02"]);
    assert_eq!(
        partitions(&db, &dropper).await,
        ["events_2027_06", "events_default"]
    );
    for s in ["pt_drop", "pt_detach", "pt_arch", "pt_archive"] {
        drop_schema(&db, s).await;
    }
}

#[tokio::test]
async fn rows_in_the_default_partition_are_rescued_in_batches() {
    let db = connect().await;
    let p = parent(
        &db,
        "pt_rescue",
        "events",
        "at",
        "'monthly', 0, NULL::interval, 'drop', NULL::name",
    )
    .await;
    db.batch_execute("UPDATE internal.partition_config SET storage_options = '{fillfactor=70}' WHERE parent = 'pt_rescue.events'::regclass")
        .await
        .unwrap();
    run(&db, "2026-03-15 00:00:00+00", &p).await;
    // 25,000 January rows (more than two batches), 3 May rows (a month not
    // made yet), one March row (has a home): all but the last land in default.
    db.batch_execute(
        "INSERT INTO pt_rescue.events SELECT g, '2026-01-01'::timestamptz + (g % 30) * interval '1 day', 'jan' FROM generate_series(1, 25000) g;
         INSERT INTO pt_rescue.events VALUES (30001, '2026-05-02+00', 'may'), (30002, '2026-05-31 23:59+00', 'may'), (30003, '2026-05-01+00', 'may');
         INSERT INTO pt_rescue.events VALUES (40001, '2026-03-03+00', 'mar');",
    )
    .await
    .unwrap();
    let before: i64 = db
        .query_one("SELECT count(*) FROM pt_rescue.events_default", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, 25_003);
    let a = run(&db, "2026-03-15 00:00:00+00", &p).await;
    let rescued: Vec<(String, i64)> = a
        .iter()
        .filter(|x| x.1 == "rescue")
        .map(|x| (x.0.clone(), x.2))
        .collect();
    assert_eq!(
        rescued,
        [
            ("\"pt_rescue\".\"events_2026_01\"".to_string(), 25_000),
            ("\"pt_rescue\".\"events_2026_05\"".to_string(), 3)
        ],
        "{a:?}"
    );
    let counts: Vec<String> = column(
        &db,
        "SELECT tableoid::regclass::text || '=' || count(*) FROM pt_rescue.events GROUP BY tableoid ORDER BY 1",
        &[],
    )
    .await;
    assert_eq!(
        counts,
        [
            "pt_rescue.events_2026_01=25000",
            "pt_rescue.events_2026_03=1",
            "pt_rescue.events_2026_05=3"
        ]
    );
    // Rescued partitions are real partitions: the parent's indexes, owner,
    // grants and the configured storage options.
    for part in [
        "pt_rescue.events_2026_01",
        "pt_rescue.events_2026_05",
        "pt_rescue.events_2026_03",
    ] {
        let row = db
            .query_one(
                "SELECT (SELECT count(*) FROM pg_index WHERE indrelid = c.oid),
                        (SELECT count(*) FROM pg_index WHERE indrelid = 'pt_rescue.events'::regclass),
                        c.relowner::regrole::text,
                        has_table_privilege('authenticated', c.oid, 'SELECT'),
                        coalesce(c.reloptions::text, ''),
                        (SELECT count(*) FROM pg_constraint WHERE conrelid = c.oid AND contype = 'c')
                   FROM pg_class c WHERE c.oid = $1::text::regclass",
                &[&part],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            "{part}: indexes"
        );
        assert_eq!(row.get::<_, String>(2), "flowtrack_owner", "{part}");
        assert!(row.get::<_, bool>(3), "{part}: the parent's grants");
        assert_eq!(row.get::<_, String>(4), "{fillfactor=70}", "{part}");
        assert_eq!(
            row.get::<_, i64>(5),
            1,
            "{part}: the parent's CHECK, and no leftover range check"
        );
    }
    // Nothing left to do.
    assert!(run(&db, "2026-03-15 00:00:00+00", &p).await.is_empty());
    drop_schema(&db, "pt_rescue").await;
}

#[tokio::test]
async fn two_passes_at_once_take_turns() {
    let mut first = connect().await;
    let second = connect().await;
    let p = parent(
        &first,
        "pt_race",
        "events",
        "at",
        "'monthly', 3, NULL::interval, 'drop', NULL::name",
    )
    .await;
    let tx = first.transaction().await.unwrap();
    let a: Vec<String> = tx
        .query(
            &format!(
                "SELECT action FROM flowtrack.run_maintenance('2026-07-01+00', {}::regclass)",
                literal(&p)
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(a.len(), 5);
    let pid: i32 = second
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let pp = p.clone();
    let waiter = tokio::spawn(async move { run(&second, "2026-07-01 00:00:00+00", &pp).await });
    // The second pass waits on the advisory lock while the first is open.
    let observer = connect().await;
    let mut waited = false;
    for _ in 0..200 {
        let w: bool = observer
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted)",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if w {
            waited = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(waited, "the second pass should wait for the first");
    tx.commit().await.unwrap();
    let b = waiter.await.unwrap();
    assert!(b.is_empty(), "the second pass finds nothing left: {b:?}");
    assert_eq!(partitions(&first, &p).await.len(), 5);
    drop_schema(&first, "pt_race").await;
}

#[tokio::test]
async fn identifiers_that_need_quotes() {
    let db = connect().await;
    let schema = "Odd \"Schema\"; DROP";
    let table = "Events.Log'1";
    let p = parent(
        &db,
        schema,
        table,
        "At Time",
        "'monthly', 1, interval '1 month', 'drop', NULL::name",
    )
    .await;
    let a = run(&db, "2026-01-10 00:00:00+00", &p).await;
    assert_eq!(
        names(&a, "create"),
        [
            "Events.Log'1_2026_01",
            "Events.Log'1_2026_02",
            "Events.Log'1_default"
        ],
        "{a:?}"
    );
    db.batch_execute(&format!(
        "INSERT INTO {p} VALUES (1, '2025-11-03+00'), (2, '2026-01-11+00')"
    ))
    .await
    .unwrap();
    // November is rescued into its own partition, then dropped in the same
    // pass as past retention (December 10 cutoff).
    let b = run(&db, "2026-01-10 00:00:00+00", &p).await;
    let kinds: Vec<&str> = b.iter().map(|x| x.1.as_str()).collect();
    assert_eq!(kinds, ["rescue", "drop"], "{b:?}");
    assert_eq!(
        partitions(&db, &p).await,
        [
            "Events.Log'1_2026_01",
            "Events.Log'1_2026_02",
            "Events.Log'1_default"
        ]
    );
    assert!(run(&db, "2026-01-10 00:00:00+00", &p).await.is_empty());
    drop_schema(&db, schema).await;
}

#[tokio::test]
async fn flowtrack_tables_are_registered_as_the_seeds_say() {
    let db = connect().await;
    let rows: Vec<String> = column(
        &db,
        "SELECT parent::text || ' ' || partition_interval || ' ' || retention::text || ' ' || retention_action
           FROM internal.partition_config WHERE parent::text LIKE 'api.%' ORDER BY 1",
        &[],
    )
    .await;
    assert_eq!(
        rows,
        [
            "api.audit_logs monthly 1 year drop",
            "api.execution_logs monthly 90 days drop",
            "api.lead_events monthly 1 year drop",
            "api.usage_events monthly 2 years drop",
            "api.webhook_deliveries monthly 180 days drop",
        ]
    );
    // Registration made this month and four ahead, and a default partition.
    let made: Vec<i64> = column(
        &db,
        "SELECT count(*) FROM internal.partition_config c JOIN pg_inherits i ON i.inhparent = c.parent
          WHERE c.parent::text LIKE 'api.%' GROUP BY c.parent",
        &[],
    )
    .await;
    assert!(made.iter().all(|&n| n >= 6), "{made:?}");
    let old: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE proname = 'ensure_monthly_partitions'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(old, 0, "the PL/pgSQL predecessor is gone");
}

/// A real FlowTrack table (identity column, forced RLS on the parent): a
/// usage event from before the oldest partition lands in the default
/// partition and is rescued into a partition of its month.
#[tokio::test]
async fn a_usage_event_in_the_default_partition_is_rescued() {
    let db = connect().await;
    db.batch_execute(
        "INSERT INTO api.usage_events (workspace_id, quota_key, amount, period_start, occurred_at)
         VALUES (gen_random_uuid(), 'partitions-test', 7, now(), '2025-03-10 12:00+00')",
    )
    .await
    .unwrap();
    let home = || async {
        db.query_one(
            "SELECT tableoid::regclass::text FROM api.usage_events WHERE quota_key = 'partitions-test'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0)
    };
    assert_eq!(home().await, "partitions.usage_events_default");
    // 'now' is PostgreSQL's input for the current time: no time travel on a
    // shared table.
    let a = run(&db, "now", "api.usage_events").await;
    let rescued: Vec<_> = a.iter().filter(|x| x.1 == "rescue").collect();
    assert_eq!(rescued.len(), 1, "{a:?}");
    assert_eq!(rescued[0].2, 1);
    assert_eq!(home().await, "partitions.usage_events_2025_03");
    // A later pass at today's date leaves it (two years of retention).
    let b: i64 = db
        .query_one(
            "SELECT count(*) FROM flowtrack.run_maintenance(now(), 'api.usage_events'::regclass) WHERE action <> 'create'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(b, 0);
    assert_eq!(home().await, "partitions.usage_events_2025_03");
}

#[tokio::test]
async fn api_roles_cannot_reach_partitions() {
    let db = connect().await;
    let parts: Vec<String> = column(
        &db,
        "SELECT i.inhrelid::regclass::text FROM internal.partition_config c JOIN pg_inherits i ON i.inhparent = c.parent
          WHERE c.parent::text LIKE 'api.%' ORDER BY 1",
        &[],
    )
    .await;
    assert!(parts.len() >= 30, "{parts:?}");
    assert!(
        parts.iter().all(|p| p.starts_with("partitions.")),
        "{parts:?}"
    );
    for role in ["anon", "authenticated", "flowtrack_worker", "authenticator"] {
        let usage: bool = db
            .query_one(
                "SELECT has_schema_privilege($1, 'partitions', 'USAGE')",
                &[&role],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!usage, "{role} has USAGE on schema partitions");
        for part in &parts {
            let err = db
                .batch_execute(&format!(
                    "BEGIN; SET LOCAL ROLE {role}; SELECT 1 FROM {part} LIMIT 1"
                ))
                .await
                .expect_err(&format!("{role} read {part}"));
            db.batch_execute("ROLLBACK").await.unwrap();
            assert_eq!(
                err.code().map(|c| c.code()),
                Some("42501"),
                "{role} on {part}: {err:?}"
            );
        }
        // Nor may they run maintenance.
        let err = db
            .batch_execute(&format!(
                "BEGIN; SET LOCAL ROLE {role}; SELECT * FROM flowtrack.run_maintenance()"
            ))
            .await
            .expect_err(&format!("{role} ran maintenance"));
        db.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{role}: {err:?}"
        );
    }
}

#[tokio::test]
async fn the_owner_runs_it_and_registration_checks_the_parent() {
    let db = connect().await;
    db.batch_execute(
        "DROP SCHEMA IF EXISTS pt_reg CASCADE; CREATE SCHEMA pt_reg AUTHORIZATION flowtrack_owner;
         CREATE TABLE pt_reg.plain (at timestamptz);
         ALTER TABLE pt_reg.plain OWNER TO flowtrack_owner;
         CREATE TABLE pt_reg.by_date (at date) PARTITION BY RANGE (at);
         ALTER TABLE pt_reg.by_date OWNER TO flowtrack_owner;
         CREATE TABLE pt_reg.ok (at timestamptz NOT NULL) PARTITION BY RANGE (at);
         ALTER TABLE pt_reg.ok OWNER TO flowtrack_owner;",
    )
    .await
    .unwrap();
    for bad in ["pt_reg.plain", "pt_reg.by_date"] {
        let err = db
            .batch_execute(&format!(
                "BEGIN; SET LOCAL ROLE flowtrack_owner;
                 SELECT internal.manage_partitions('{bad}', 'monthly', 2, NULL)"
            ))
            .await
            .expect_err(bad);
        db.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("22023"),
            "{bad}: {err:?}"
        );
    }
    // As flowtrack_owner: registration runs a pass, which makes the current
    // month, two ahead and the default, owned by flowtrack_owner.
    db.batch_execute("BEGIN; SET LOCAL ROLE flowtrack_owner")
        .await
        .unwrap();
    let made: i64 = db
        .query_one(
            "SELECT internal.manage_partitions('pt_reg.ok', 'monthly', 2, interval '1 year', partition_schema => 'pt_reg')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    db.batch_execute("COMMIT").await.unwrap();
    assert_eq!(made, 4);
    let owners: Vec<String> = column(
        &db,
        "SELECT DISTINCT c.relowner::regrole::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'pt_reg.ok'::regclass",
        &[],
    )
    .await;
    assert_eq!(owners, ["flowtrack_owner"]);
    // Re-registering changes the settings and is otherwise a no-op.
    let again: i64 = db
        .query_one(
            "SELECT internal.manage_partitions('pt_reg.ok', 'monthly', 2, interval '2 years', partition_schema => 'pt_reg')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, 0);
    drop_schema(&db, "pt_reg").await;
}
