//! No role can climb (issue 9, section 1).
//!
//! Two halves. The catalog lint states the rules every SECURITY DEFINER
//! function and every role must follow, for all functions at once, so a new
//! function that forgets one fails here. The attack then does what an
//! intruder with a database login would: shadow the catalogs and our own
//! relations with temporary views whose rows run an "evil" function, then
//! call every function the role may execute. Any time the evil function runs
//! as a role other than the attacker's own, the attack climbed.

use std::collections::BTreeSet;

use flowtrack_tests::fixtures::{self, Populated, Tenant};
use flowtrack_tests::notices::{connect_collecting, Notices};
use flowtrack_tests::{column, connect, connect_to};
use tokio_postgres::Client;

/// Roles that can log in, and the roles a login may become (PostgREST's).
const LOGIN_ROLES: [&str; 2] = ["authenticator", "flowtrack_worker"];
const API_ROLES: [&str; 2] = ["anon", "authenticated"];

/// Superuser-owned SECURITY DEFINER functions we accept, each with the
/// reason it must run as superuser. Empty: nothing FlowTrack ships needs it.
/// pg_cron's own functions are checked by pg_cron, not listed here: they
/// live in schema cron, which the lint leaves to the extension's authors.
const SUPERUSER_DEFINERS: [(&str, &str); 0] = [];

/// Schemas whose functions the lint and the attack cover.
const OUR_SCHEMAS: &str =
    "'api', 'auth', 'internal', 'partitions', 'flowtrack', 'maintenance', 'public'";

/// Asserts that `sql` (one text column, each row a violation) finds nothing.
async fn none(db: &Client, what: &str, sql: &str) {
    let found: Vec<String> = column(db, sql, &[]).await;
    assert!(found.is_empty(), "{what}:\n{}", found.join("\n"));
}

/// Exactly `pg_catalog, pg_temp`: pg_temp last, so a caller's temporary
/// objects are found after everything real, and nothing else, because every
/// body names the schema of what it touches (checked below), so no schema's
/// contents can redirect a name.
#[tokio::test]
async fn every_security_definer_pins_search_path_with_pg_temp_last() {
    let db = connect().await;
    none(
        &db,
        "SECURITY DEFINER functions whose search_path is not exactly pg_catalog, pg_temp",
        &format!(
            "SELECT p.oid::regprocedure::text || ' ' || coalesce(array_to_string(p.proconfig, ' '), '(no SET clause)')
               FROM pg_catalog.pg_proc p
              WHERE p.prosecdef AND p.pronamespace::regnamespace::text IN ({OUR_SCHEMAS})
                AND NOT ('search_path=pg_catalog, pg_temp' = ANY (coalesce(p.proconfig, '{{}}')))
              ORDER BY 1"
        ),
    )
    .await;
}

/// Any function with its own search_path must list pg_temp last too: an
/// invoker function called from a definer (a trigger, a helper) runs with
/// the definer's rights under the search_path it sets.
#[tokio::test]
async fn every_pinned_search_path_ends_in_pg_temp() {
    let db = connect().await;
    none(
        &db,
        "functions with a search_path that does not end in pg_temp",
        &format!(
            "SELECT p.oid::regprocedure::text || ' ' || c
               FROM pg_catalog.pg_proc p, unnest(p.proconfig) c
              WHERE p.pronamespace::regnamespace::text IN ({OUR_SCHEMAS})
                AND c LIKE 'search\\_path=%' AND c !~ '(^|[ ,=])pg_temp\"?$'
              ORDER BY 1"
        ),
    )
    .await;
}

#[tokio::test]
async fn no_security_definer_runs_as_superuser_unless_listed() {
    let db = connect().await;
    let found: Vec<String> = column(
        &db,
        &format!(
            "SELECT p.oid::regprocedure::text
               FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
              WHERE p.prosecdef AND r.rolsuper AND p.pronamespace::regnamespace::text IN ({OUR_SCHEMAS})
              ORDER BY 1"
        ),
        &[],
    )
    .await;
    let allowed: BTreeSet<&str> = SUPERUSER_DEFINERS.iter().map(|(f, _)| *f).collect();
    let bad: Vec<&String> = found
        .iter()
        .filter(|f| !allowed.contains(f.as_str()))
        .collect();
    assert!(
        bad.is_empty(),
        "SECURITY DEFINER functions owned by a superuser: {bad:?}"
    );
}

/// The tenant override is honoured only when sealed by flowtrack.act_for,
/// and a sealed value must not outlive the call that made it: every caller
/// of act_for resets the setting in its header. Every definer an outside
/// role can call resets it too, so it starts from no override at all.
#[tokio::test]
async fn the_tenant_override_is_scoped_to_the_function_that_sets_it() {
    let db = connect().await;
    none(
        &db,
        "functions that call flowtrack.act_for without SET flowtrack.workspace_id = ''",
        &format!(
            "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
              WHERE p.prosrc LIKE '%flowtrack.act_for(%'
                AND p.pronamespace::regnamespace::text IN ({OUR_SCHEMAS})
                AND NOT ('flowtrack.workspace_id=' = ANY (coalesce(p.proconfig, '{{}}')))
              ORDER BY 1"
        ),
    )
    .await;
    none(
        &db,
        "SECURITY DEFINER entry points without SET flowtrack.workspace_id = ''",
        &format!(
            "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
              WHERE p.prosecdef AND p.pronamespace::regnamespace::text IN ({OUR_SCHEMAS})
                AND EXISTS (SELECT 1 FROM unnest(ARRAY['public', 'anon', 'authenticated', 'authenticator', 'flowtrack_worker']) r
                             WHERE CASE WHEN r = 'public' THEN EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                                                                       WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
                                        ELSE has_function_privilege(r, p.oid, 'EXECUTE') END)
                AND NOT ('flowtrack.workspace_id=' = ANY (coalesce(p.proconfig, '{{}}')))
              ORDER BY 1"
        ),
    )
    .await;
    let act_for_callers: Vec<String> = column(
        &db,
        "SELECT r.rolname::text FROM pg_catalog.pg_roles r
          WHERE has_function_privilege(r.oid, 'flowtrack.act_for(uuid, text)', 'EXECUTE')
            AND NOT r.rolsuper ORDER BY 1",
        &[],
    )
    .await;
    // flowtrack_maintenance is a member of the owner (sql/0090): it is the
    // owner's rights, reached only through the superuser's pg_cron jobs.
    assert_eq!(
        act_for_callers,
        ["flowtrack_maintenance", "flowtrack_owner"]
    );
}

/// PUBLIC executes nothing of ours: every function is granted to the roles
/// that need it.
#[tokio::test]
async fn public_executes_no_function_of_ours() {
    let db = connect().await;
    none(
        &db,
        "functions PUBLIC may execute",
        "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
          WHERE p.pronamespace::regnamespace::text IN ('api', 'auth', 'internal', 'partitions', 'flowtrack')
            AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                         WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
          ORDER BY 1",
    )
    .await;
}

/// No login role, and no role a login becomes, may create anything: not
/// temporary objects (what made shadowing possible), not schemas, not
/// objects in any schema. Default privileges give PUBLIC no EXECUTE.
#[tokio::test]
async fn no_role_we_hand_out_can_create_anything() {
    let db = connect().await;
    let mut bad = Vec::new();
    for role in LOGIN_ROLES
        .iter()
        .chain(API_ROLES.iter())
        .chain(["flowtrack_resolver"].iter())
    {
        let rows = db
            .query(
                "SELECT 'TEMP on the database' WHERE has_database_privilege($1, current_database(), 'TEMP')
                 UNION ALL
                 SELECT 'CREATE on the database' WHERE has_database_privilege($1, current_database(), 'CREATE')
                 UNION ALL
                 SELECT 'CREATE on schema ' || n.nspname FROM pg_catalog.pg_namespace n
                  WHERE has_schema_privilege($1, n.oid, 'CREATE')",
                &[role],
            )
            .await
            .unwrap();
        bad.extend(
            rows.iter()
                .map(|r| format!("{role}: {}", r.get::<_, String>(0))),
        );
    }
    assert!(bad.is_empty(), "{bad:#?}");
    // Every schema a pinned search_path names is writable by its owner only.
    none(
        &db,
        "roles that may create objects in a schema some search_path names",
        "WITH pinned AS (
             SELECT DISTINCT trim(both ' \"' FROM s) AS nspname
               FROM pg_catalog.pg_proc p, unnest(p.proconfig) c,
                    unnest(string_to_array(substr(c, length('search_path=') + 1), ',')) s
              WHERE c LIKE 'search\\_path=%')
         SELECT n.nspname || ': ' || r.rolname
           FROM pinned JOIN pg_catalog.pg_namespace n USING (nspname), pg_catalog.pg_roles r
          WHERE NOT r.rolsuper AND r.oid <> n.nspowner AND has_schema_privilege(r.oid, n.oid, 'CREATE')
            AND r.rolname NOT LIKE 'pg\\_%'
          ORDER BY 1",
    )
    .await;
    none(
        &db,
        "default privileges that give PUBLIC EXECUTE",
        "SELECT pg_get_userbyid(d.defaclrole)::text FROM pg_catalog.pg_default_acl d
          WHERE d.defaclobjtype = 'f'
            AND EXISTS (SELECT 1 FROM aclexplode(d.defaclacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')",
    )
    .await;
}

/// The intruder's kit: `pg_temp.evil()` reports the role it runs as; a
/// temporary view named after every catalog and every relation of ours
/// calls it per row, and temporary domains shadow common type names. Run
/// as the login role.
const SHADOW: &str = r#"
CREATE FUNCTION pg_temp.evil() RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    RAISE NOTICE 'EVIL ran as %', current_user;
    RETURN true;
END $f$;
CREATE FUNCTION pg_temp.evil_value(anyelement) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    RAISE NOTICE 'EVIL ran as %', current_user;
    RETURN true;
END $f$;
DO $do$
DECLARE
    r record;
BEGIN
    -- Every column but pseudo-typed ones (pg_attribute.attmissingval), which
    -- a view cannot have.
    FOR r IN SELECT c.relname, n.nspname,
                    (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
                       FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND t.typtype <> 'p') AS cols
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname IN ('pg_catalog', 'information_schema', 'api', 'auth', 'internal', 'partitions', 'flowtrack', 'cron', 'public')
                AND c.relkind IN ('r', 'v', 'p', 'm', 'f')
    LOOP
        BEGIN
            IF pg_catalog.has_table_privilege(pg_catalog.format('%I.%I', r.nspname, r.relname), 'SELECT') THEN
                EXECUTE pg_catalog.format('CREATE TEMP VIEW %I AS SELECT %s FROM %I.%I WHERE pg_temp.evil()',
                                          r.relname, r.cols, r.nspname, r.relname);
            ELSE
                EXECUTE pg_catalog.format('CREATE TEMP VIEW %I AS SELECT 1 AS x WHERE pg_temp.evil()', r.relname);
            END IF;
        EXCEPTION WHEN duplicate_table OR insufficient_privilege OR feature_not_supported THEN
            NULL; -- one name in two schemas; a view it may not build
        END;
    END LOOP;
    FOR r IN SELECT unnest(ARRAY['text', 'uuid', 'jsonb', 'json', 'timestamptz', 'numeric', 'citext', 'name']) AS t LOOP
        BEGIN
            EXECUTE pg_catalog.format('CREATE DOMAIN pg_temp.%I AS pg_catalog.text CHECK (pg_temp.evil_value(VALUE))', r.t);
        EXCEPTION WHEN duplicate_object OR insufficient_privilege THEN
            NULL;
        END;
    END LOOP;
END
$do$;
"#;

/// A sample value per argument type, as SQL; NULL for what we cannot guess.
fn sample(arg_type: &str, ids: &[String; 2], pick: usize) -> String {
    match arg_type {
        "uuid" => format!("'{}'::uuid", ids[pick % 2]),
        "text" | "character varying" | "citext" => "'x'".into(),
        "jsonb" | "json" => "'{}'".into(),
        "bigint" | "integer" | "smallint" | "numeric" => "1".into(),
        "boolean" => "false".into(),
        "text[]" => "'{leads:read}'".into(),
        "timestamp with time zone" => "now()".into(),
        "interval" => "'1 second'".into(),
        "oid" | "regclass" => "'api.leads'::regclass".into(),
        _ => format!("NULL::{arg_type}"),
    }
}

/// Calls the issue's reproduction and every function the current role may
/// execute, each in a savepoint, and returns "call: notice" for every time
/// the evil function ran as a role not in `allowed`.
async fn call_everything(
    db: &Client,
    notices: &Notices,
    allowed: &[&str],
    calls_first: &[String],
    ids: &[String; 2],
) -> (Vec<String>, usize) {
    let rows = db
        .query(
            &format!(
                "SELECT p.oid::regprocedure::text, p.proname::text, p.pronamespace::regnamespace::text,
                        ARRAY(SELECT pg_catalog.format_type(t, NULL) FROM unnest(p.proargtypes) t),
                        p.proretset
                   FROM pg_catalog.pg_proc p
                  WHERE p.pronamespace::regnamespace::text IN ({OUR_SCHEMAS})
                    AND p.prokind = 'f' AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')
                    AND p.prorettype <> 'pg_catalog.trigger'::pg_catalog.regtype
                  ORDER BY 1"
            ),
            &[],
        )
        .await
        .unwrap();
    let mut calls: Vec<String> = calls_first.to_vec();
    for r in &rows {
        let (name, schema, args): (String, String, Vec<String>) = (r.get(1), r.get(2), r.get(3));
        for pick in 0..3 {
            let list: Vec<String> = args
                .iter()
                .map(|t| {
                    if pick == 2 {
                        format!("NULL::{t}")
                    } else {
                        sample(t, ids, pick)
                    }
                })
                .collect();
            calls.push(format!(
                "SELECT * FROM {}.{}({})",
                quote(&schema),
                quote(&name),
                list.join(", ")
            ));
        }
    }
    let mut climbed = Vec::new();
    notices.take();
    for call in &calls {
        db.batch_execute("SAVEPOINT call").await.unwrap();
        let _ = db.batch_execute(call).await;
        db.batch_execute("ROLLBACK TO SAVEPOINT call")
            .await
            .unwrap();
        for notice in notices.take() {
            if let Some(ran_as) = notice.message.strip_prefix("EVIL ran as ") {
                if !allowed.contains(&ran_as) {
                    climbed.push(format!("{call}: {}", notice.message));
                }
            }
        }
    }
    (climbed, calls.len())
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The issue's reproduction and the calls a real intruder would try first,
/// with real ids of the attacker's own tenant.
fn realistic_calls(t: &Tenant, p: &Populated) -> Vec<String> {
    vec![
        "SELECT * FROM api.record_usage('ai_tokens', 1)".into(),
        "SELECT * FROM api.check_quota('leads')".into(),
        format!(
            "SELECT * FROM api.submit_form('{}', '{}', '{{\"email\":\"x@example.com\"}}')",
            t.slug, p.form_slug
        ),
        format!(
            "SELECT * FROM api.receive_webhook('{}', '{{}}')",
            p.inbound_token
        ),
        format!(
            "SELECT * FROM api.start_execution('{}', '{{}}')",
            p.workflow_id
        ),
        format!("SELECT * FROM api.activate_workflow('{}')", p.workflow_id),
        format!("SELECT * FROM api.deactivate_workflow('{}')", p.workflow_id),
        format!("SELECT * FROM api.validate_workflow('{}')", p.workflow_id),
        format!("SELECT * FROM api.explain_execution('{}')", p.execution_id),
        "SELECT * FROM api.create_api_key('k', '{leads:read}')".into(),
        "SELECT * FROM api.create_workspace('Evil', 'evil-ws-shadow')".into(),
        format!("SELECT * FROM api.leads WHERE id = '{}'", p.lead_id),
        "INSERT INTO api.leads (email) VALUES ('shadow@example.com')".into(),
        "SELECT * FROM internal.claim_jobs('w', 10)".into(),
    ]
}

/// Section 1 of issue 9: with TEMP granted back (as if a future migration
/// slipped), every login shadows every catalog and relation and calls
/// everything it may; nothing may run as any other role. Runs in one
/// superuser transaction that is rolled back, so the grant never commits.
#[tokio::test]
async fn shadowing_catalogs_and_relations_runs_nothing_as_another_role() {
    let setup = connect().await;
    let t = fixtures::tenant(&setup, "pro").await;
    let p = fixtures::populate(&setup, &t).await;
    let url = std::env::var("FLOWTRACK_TEST_DATABASE_URL").unwrap();
    let mut report = Vec::new();
    let mut total = 0;
    for login in LOGIN_ROLES {
        let (db, notices) = connect_collecting(&url).await;
        db.batch_execute(&format!(
            "BEGIN; SELECT set_config('search_path', 'api, public', true);
             GRANT TEMPORARY ON DATABASE {} TO {login}; SET LOCAL ROLE {login};",
            quote(&column::<String>(&db, "SELECT current_database()::text", &[]).await[0])
        ))
        .await
        .unwrap();
        db.batch_execute(SHADOW)
            .await
            .unwrap_or_else(|e| panic!("shadowing as {login}: {:?}", e.as_db_error()));
        let becomes: Vec<&str> = if login == "authenticator" {
            vec!["authenticator", "anon", "authenticated"]
        } else {
            vec![login]
        };
        for role in becomes {
            let claims = if role == "authenticated" {
                t.claims("owner").to_string()
            } else {
                serde_json::json!({"role": role}).to_string()
            };
            db.query(
                "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
                &[&role, &claims],
            )
            .await
            .unwrap();
            let ids = [t.workspace_id.to_string(), p.workflow_id.to_string()];
            let (climbed, n) = call_everything(
                &db,
                &notices,
                &[login, role],
                &realistic_calls(&t, &p),
                &ids,
            )
            .await;
            total += n;
            report.extend(
                climbed
                    .into_iter()
                    .map(|c| format!("{login} as {role}: {c}")),
            );
            // Back to the login for the next role, as PostgREST does.
            db.query("SELECT set_config('role', $1, true)", &[&login])
                .await
                .unwrap();
        }
        db.batch_execute("ROLLBACK").await.unwrap();
    }
    assert!(total > 100, "only {total} calls were tried");
    assert!(
        report.is_empty(),
        "{} calls ran the intruder's code as another role:\n{}",
        report.len(),
        report.join("\n")
    );
}

/// The first line of defence, on real logins: no login and no role
/// PostgREST switches to may create a temporary object.
#[tokio::test]
async fn logins_cannot_create_temporary_objects() {
    let su = std::env::var("FLOWTRACK_TEST_DATABASE_URL").unwrap();
    let api = std::env::var("FLOWTRACK_TEST_API_DB_URL").unwrap();
    // The worker logs in over the same socket as the superuser (trust auth
    // there), so its URL is the superuser's with the user swapped.
    let worker = su.replace("user=postgres", "user=flowtrack_worker");
    assert_ne!(worker, su, "superuser URL has no user=postgres: {su}");
    for (url, roles) in [
        (api.as_str(), vec!["authenticator", "anon", "authenticated"]),
        (worker.as_str(), vec!["flowtrack_worker"]),
    ] {
        let db = connect_to(url).await;
        for role in roles {
            db.batch_execute(&format!("SET ROLE {role}")).await.unwrap();
            for ddl in [
                "CREATE TEMP TABLE shadow (x int)",
                "CREATE TEMP VIEW pg_trigger AS SELECT 1 AS x",
                "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                "CREATE TABLE public.shadow (x int)",
                "CREATE SCHEMA shadow",
            ] {
                let err = db
                    .batch_execute(ddl)
                    .await
                    .expect_err(&format!("{role} may run {ddl}"));
                let code = err.code().map(|c| c.code().to_string());
                assert_eq!(code.as_deref(), Some("42501"), "{role}: {ddl}: {err}");
            }
            db.batch_execute("RESET ROLE").await.unwrap();
        }
    }
}

/// What the roles that face strangers may execute, pinned: a new grant to
/// anon or the worker must be added here on purpose (and to SECURITY.md).
#[tokio::test]
async fn anon_and_worker_execute_exactly_their_entry_points() {
    let db = connect().await;
    for (role, expected) in [
        ("anon", ANON_EXECUTES.as_slice()),
        ("flowtrack_worker", WORKER_EXECUTES.as_slice()),
    ] {
        let got: Vec<String> = column(
            &db,
            &format!(
                "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
                  WHERE p.pronamespace::regnamespace::text IN ({OUR_SCHEMAS})
                    AND has_function_privilege($1, p.oid, 'EXECUTE')
                  ORDER BY 1"
            ),
            &[&role],
        )
        .await;
        assert_eq!(got, expected, "{role} may execute");
    }
}

/// The hook and what it calls, the public entry points, the claim readers.
const ANON_EXECUTES: [&str; 16] = [
    "api.public_form(text,text)",
    "api.receive_webhook(text,jsonb,text)",
    "api.search_templates(text,text)",
    "api.submit_form(text,text,jsonb,text)",
    "auth.api_key_claims(text)",
    "auth.check_membership()",
    "auth.check_request()",
    "auth.known_scopes()",
    "auth.scopes_allow(text[],text,text)",
    "auth.touch_api_key(text)",
    "flowtrack.current_user_id()",
    "flowtrack.current_workspace_id()",
    "flowtrack.current_workspace_role()",
    "flowtrack.jwt_claim(text)",
    "flowtrack.key_scope_allows(text,text)",
    "flowtrack.version()",
];
/// The queue, the step reports, a leased job's connection (its credentials,
/// refreshed tokens and failure), the signing secrets of a leased webhook
/// delivery, the claim readers, the tick that releases due delays and
/// schedules.
const WORKER_EXECUTES: [&str; 19] = [
    "flowtrack.current_user_id()",
    "flowtrack.current_workspace_id()",
    "flowtrack.current_workspace_role()",
    "flowtrack.jwt_claim(text)",
    "flowtrack.key_scope_allows(text,text)",
    "flowtrack.version()",
    "internal.claim_jobs(text,integer,integer)",
    "internal.complete_jobs(text,uuid[],integer[],jsonb[])",
    "internal.complete_step(uuid,jsonb)",
    "internal.fail_connection(uuid,integer,text)",
    "internal.fail_jobs(text,uuid[],integer[],text[],boolean[],jsonb[])",
    "internal.fail_step(uuid,text)",
    "internal.heartbeat_jobs(text,uuid[],integer[])",
    "internal.job_connection(uuid,integer,boolean)",
    "internal.queue_status()",
    "internal.release_due_work(integer)",
    "internal.release_jobs(text,uuid[],integer[])",
    "internal.store_connection_tokens(uuid,integer,jsonb,timestamp with time zone,timestamp with time zone)",
    "internal.webhook_signing_secrets(uuid,integer)",
];

/// Bodies name what they touch: every PL/pgSQL and SQL function of ours
/// resolves all its relations, types and functions with `search_path =
/// pg_catalog, pg_temp` alone, so no search_path, pinned or inherited, can
/// redirect it. PL/pgSQL is checked statically by plpgsql_check (trigger
/// functions against their table and transition tables), SQL bodies by the
/// SQL validator. All in a transaction that is rolled back: the test cluster
/// keeps no trace of plpgsql_check.
#[tokio::test]
async fn every_function_body_is_schema_qualified() {
    let mut db = connect().await;
    let tx = db.transaction().await.unwrap();
    tx.batch_execute(
        "CREATE EXTENSION plpgsql_check SCHEMA public;
         DO $$
         DECLARE r record;
         BEGIN
             FOR r IN SELECT p.oid::regprocedure AS f FROM pg_catalog.pg_proc p
                       WHERE p.pronamespace::regnamespace::text IN ('api', 'auth', 'internal', 'partitions')
                         AND p.prolang IN (SELECT oid FROM pg_catalog.pg_language WHERE lanname IN ('plpgsql', 'sql'))
             LOOP
                 EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', r.f);
             END LOOP;
         END $$;
         SET LOCAL search_path = pg_catalog, pg_temp;",
    )
    .await
    .unwrap();
    // Only resolution failures count: a check that stops on a function's
    // own RAISE (plpgsql_check pre-evaluates some expressions) is not one.
    let unresolved: Vec<String> = tx
        .query(
            "SELECT p.oid::regprocedure::text || ' line ' || coalesce(r.lineno::text, '?') || ': ' || r.message
               FROM pg_catalog.pg_proc p
               JOIN pg_catalog.pg_language l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
               LEFT JOIN LATERAL (SELECT t.tgrelid, t.tgoldtable, t.tgnewtable FROM pg_catalog.pg_trigger t
                                   WHERE t.tgfoid = p.oid LIMIT 1) t ON true,
               LATERAL public.plpgsql_check_function_tb(p.oid, coalesce(t.tgrelid, 0),
                         oldtable => t.tgoldtable, newtable => t.tgnewtable,
                         fatal_errors => false, other_warnings => false,
                         performance_warnings => false, extra_warnings => false) r
              WHERE p.pronamespace::regnamespace::text IN ('api', 'auth', 'internal', 'partitions')
                AND r.level = 'error' AND r.sqlstate IN ('42P01', '42883', '42704', '42703', '42P02', '3F000')
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut failures = unresolved;
    let sql_functions: Vec<(u32, String)> = tx
        .query(
            "SELECT p.oid, p.oid::regprocedure::text FROM pg_catalog.pg_proc p
              WHERE p.pronamespace::regnamespace::text IN ('api', 'auth', 'internal', 'partitions')
                AND p.prolang = (SELECT oid FROM pg_catalog.pg_language WHERE lanname = 'sql')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        sql_functions.len() > 10,
        "found {} SQL functions",
        sql_functions.len()
    );
    for (oid, name) in sql_functions {
        tx.batch_execute("SAVEPOINT v").await.unwrap();
        if let Err(e) = tx
            .execute("SELECT pg_catalog.fmgr_sql_validator($1)", &[&oid])
            .await
        {
            failures.push(format!(
                "{name}: {}",
                e.as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string())
            ));
        }
        tx.batch_execute("ROLLBACK TO SAVEPOINT v").await.unwrap();
    }
    tx.rollback().await.unwrap();
    assert!(
        failures.is_empty(),
        "function bodies that need a search_path to resolve a name:\n{}",
        failures.join("\n")
    );
}

/// Limits on the work a caller may cause are superuser-only settings: a
/// caller's SET is refused once the library is loaded, and a placeholder it
/// set before the library loaded is discarded when it loads.
#[tokio::test]
async fn callers_cannot_raise_the_import_cap() {
    let db = flowtrack_tests::connect_authenticator().await;
    // A fresh session: the library is preloaded (the wake-ups' shared
    // memory), so the setting is the real SUSET one from the first statement.
    let err = db
        .batch_execute("SET flowtrack.max_import_bytes = '999999999'")
        .await
        .expect_err("the login role raised the import cap");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    db.batch_execute("SET ROLE authenticated").await.unwrap();
    let setting: Vec<String> = column(
        &db,
        "SELECT current_setting('flowtrack.max_import_bytes')",
        &[],
    )
    .await;
    assert_eq!(setting, ["2097152"]);
    let err = db
        .batch_execute("SET flowtrack.max_import_bytes = '999999999'")
        .await
        .expect_err("a caller raised the import cap");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
}

/// Issue 9, section 3: any SQL-level caller could `set_config` the tenant
/// override and read and update another tenant's leads, even as a viewer
/// claiming owner. Now a hand-set value, bare or in the sealed format, is
/// ignored and the caller stays in its own workspace with its own role.
#[tokio::test]
async fn a_hand_set_tenant_override_reaches_no_other_tenant() {
    let setup = connect().await;
    let (mine, victim) = (
        fixtures::tenant(&setup, "pro").await,
        fixtures::tenant(&setup, "pro").await,
    );
    fixtures::populate(&setup, &victim).await;
    let v = victim.workspace_id.to_string();
    let db = flowtrack_tests::connect_authenticator().await;
    for forged in [
        v.clone(),
        format!("{v}/owner/{}", "0".repeat(32)),
        format!("{v}/owner"),
    ] {
        db.batch_execute("BEGIN").await.unwrap();
        db.query(
            "SELECT set_config('role', 'authenticated', true),
                    set_config('request.jwt.claims', $1, true),
                    set_config('flowtrack.workspace_id', $2, true),
                    set_config('flowtrack.workspace_role', 'owner', true)",
            &[&mine.claims("viewer").to_string(), &forged],
        )
        .await
        .unwrap();
        let seen: Vec<i64> = column(
            &db,
            "SELECT count(*) FROM api.leads WHERE workspace_id = $1",
            &[&victim.workspace_id],
        )
        .await;
        assert_eq!(seen, [0], "read the victim's leads with override {forged}");
        let changed = db
            .execute(
                "UPDATE api.leads SET first_name = 'pwned' WHERE workspace_id = $1",
                &[&victim.workspace_id],
            )
            .await;
        // A viewer may not update at all (42501), or the update matches no row.
        assert!(
            matches!(changed, Ok(0)) || changed.is_err(),
            "updated the victim's leads with override {forged}: {changed:?}"
        );
        db.batch_execute("ROLLBACK").await.unwrap();
    }
    let untouched: Vec<i64> = column(
        &setup,
        "SELECT count(*) FROM api.leads WHERE workspace_id = $1 AND first_name = 'pwned'",
        &[&victim.workspace_id],
    )
    .await;
    assert_eq!(untouched, [0]);
}
