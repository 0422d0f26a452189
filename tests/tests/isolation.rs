//! Tenant isolation under attack. Three populated workspaces; every table
//! and RPC in the exposed schema is attacked (select, insert, update, delete,
//! rpc) by the other tenants' users of every role, by anon, and with forged
//! claims. Nothing of the victim may be seen, and its data must be byte-for-
//! byte unchanged afterwards. Requests run through the PostgREST harness on
//! an `authenticator` connection, exactly as PostgREST would run them.

use flowtrack_tests::fixtures::{self, Populated, Tenant};
use flowtrack_tests::{column, connect, connect_authenticator, pgrst, Request};
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

/// An exposed relation and how to aim at the victim's rows in it.
#[derive(Debug)]
struct Target {
    table: String,
    /// SQL predicate selecting the victim's rows (with `$V` for the workspace id).
    victim_rows: String,
    insert_columns: Vec<String>,
    update_column: String,
}

async fn targets(db: &Client) -> Vec<Target> {
    let rows = db
        .query(
            "SELECT c.relname,
                    EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'workspace_id'),
                    ARRAY(SELECT a.attname::text FROM pg_attribute a
                           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                           ORDER BY a.attnum),
                    coalesce((SELECT a.attname::text FROM pg_attribute a
                               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                 AND a.attname NOT IN ('id', 'workspace_id')
                                 AND has_column_privilege('authenticated', c.oid, a.attname, 'UPDATE')
                               ORDER BY a.attnum LIMIT 1), 'workspace_id')
               FROM pg_class c
              WHERE c.relnamespace = 'api'::regnamespace AND c.relkind IN ('r', 'p', 'v')
              ORDER BY c.relname",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let table: String = r.get(0);
            let victim_rows = if r.get::<_, bool>(1) {
                "workspace_id = '$V'".to_string()
            } else if table == "workspaces" {
                "id = '$V'".to_string()
            } else if table == "users" {
                "id IN (SELECT user_id FROM api.workspace_members WHERE workspace_id = '$V')"
                    .to_string()
            } else {
                "true".to_string() // global catalogs: every row is "foreign" to a writer
            };
            Target {
                table,
                victim_rows,
                insert_columns: r.get(2),
                update_column: r.get(3),
            }
        })
        .collect()
}

/// A digest of everything the victim owns (as superuser, bypassing RLS).
async fn fingerprint(db: &Client, targets: &[Target], victim: Uuid) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in targets {
        let filter = t.victim_rows.replace("$V", &victim.to_string());
        // Global catalogs move legitimately (another tenant copying a
        // template bumps its popularity and updated_at).
        let moving = if t.victim_rows == "true" {
            " - 'popularity' - 'updated_at'"
        } else {
            ""
        };
        let sql = format!(
            // Daily stats are refreshed by pg_cron whenever it likes.
            "SELECT coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '-')
               FROM (SELECT to_jsonb(x) - 'refreshed_at'{moving} AS r FROM api.{} x WHERE {filter}) s",
            t.table
        );
        out.push((
            t.table.clone(),
            db.query_one(&sql, &[]).await.unwrap().get(0),
        ));
    }
    out
}

struct Attacker {
    name: String,
    req: Request,
}

fn attackers(victim: &Tenant, b: &Tenant, c: &Tenant, b_key: &str) -> Vec<Attacker> {
    let mut out: Vec<Attacker> = fixtures::ROLES
        .iter()
        .map(|role| Attacker {
            name: format!("tenant B {role}"),
            req: Request::with_claims(b.claims(role)),
        })
        .collect();
    out.push(Attacker {
        name: "tenant C member".into(),
        req: Request::with_claims(c.claims("member")),
    });
    out.push(Attacker {
        name: "anon".into(),
        req: Request::anon(),
    });
    // An API key of tenant B holding every scope (the hook turns it into claims).
    let mut keyed = Request::anon();
    keyed.headers = json!({"x-api-key": b_key});
    out.push(Attacker {
        name: "tenant B API key (every scope)".into(),
        req: keyed,
    });
    let forged = |name: &str, claims: Value| Attacker {
        name: format!("forged: {name}"),
        req: Request::with_claims(claims),
    };
    out.push(forged(
        "unknown workspace",
        json!({"role": "authenticated", "sub": b.users["owner"], "workspace_id": Uuid::new_v4(), "workspace_role": "owner"}),
    ));
    out.push(forged(
        "viewer claims owner",
        json!({"role": "authenticated", "sub": b.users["viewer"], "workspace_id": b.workspace_id, "workspace_role": "owner"}),
    ));
    out.push(forged(
        "member of B claims A",
        json!({"role": "authenticated", "sub": b.users["member"], "workspace_id": victim.workspace_id, "workspace_role": "member"}),
    ));
    out.push(forged(
        "owner of B claims A as owner",
        json!({"role": "authenticated", "sub": b.users["owner"], "workspace_id": victim.workspace_id, "workspace_role": "owner"}),
    ));
    out.push(forged(
        "no sub",
        json!({"role": "authenticated", "workspace_id": victim.workspace_id, "workspace_role": "owner"}),
    ));
    out.push(forged(
        "garbage sub",
        json!({"role": "authenticated", "sub": "root", "workspace_id": victim.workspace_id, "workspace_role": "owner"}),
    ));
    for role in [
        "flowtrack_owner",
        "flowtrack_worker",
        "postgres",
        "flowtrack_resolver",
    ] {
        out.push(forged(
            &format!("role {role}"),
            json!({"role": role, "sub": victim.users["owner"]}),
        ));
    }
    out
}

/// Strings that only the victim's data contains.
fn markers(victim: &Tenant, populated: &Populated) -> Vec<String> {
    let mut m = vec![
        victim.workspace_id.to_string(),
        populated.lead_email.clone(),
        format!("secret-workflow-{}", victim.slug),
        populated.inbound_token.clone(),
        populated.workflow_id.to_string(),
        populated.lead_id.to_string(),
        populated.execution_id.to_string(),
        populated.api_key_id.to_string(),
        populated.invitation_id.to_string(),
    ];
    m.extend(victim.users.values().map(Uuid::to_string));
    m
}

/// Arguments for an RPC aimed at the victim, by parameter name.
fn rpc_argument(name: &str, victim: &Tenant, populated: &Populated) -> Option<String> {
    Some(match name {
        "workflow_id" => populated.workflow_id.to_string(),
        "workspace_slug" | "slug" => victim.slug.clone(),
        "form_slug" => populated.form_slug.clone(),
        "token" => populated.inbound_token.clone(),
        "quota_key" => "executions_per_month".into(),
        "template_slug" => "lead-capture-welcome".into(),
        "fields" | "payload" => json!({"email": "intruder@evil.example"}).to_string(),
        "amount" => "1".into(),
        "name" => "attack".into(),
        "scopes" => "{leads:read}".into(),
        "email" => "intruder@evil.example".into(),
        "new_owner" => victim.users["member"].to_string(),
        "invitation_id" => populated.invitation_id.to_string(),
        "key_id" => populated.api_key_id.to_string(),
        "role" => "viewer".into(),
        "idempotency_key" | "submission_id" | "event_id" => "attack".into(),
        _ => return None,
    })
}

/// Public entry points whose job is to write into the workspace they are
/// addressed to; tested on their own in `public_entry_points_*` below.
const PUBLIC_WRITES: [&str; 2] = ["submit_form", "receive_webhook"];

#[tokio::test]
async fn attack_suite_finds_no_leaks() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let victim = fixtures::tenant(&db, "pro").await;
    let b = fixtures::tenant(&db, "pro").await;
    let c = fixtures::tenant(&db, "starter").await;
    let populated = fixtures::populate(&db, &victim).await;
    fixtures::populate(&db, &b).await;
    fixtures::populate(&db, &c).await;
    let b_key = format!("ft_every_scope_{}", b.workspace_id);
    db.execute(
        "INSERT INTO api.api_keys (workspace_id, created_by, name, prefix, key_hash, scopes)
         VALUES ($1, $2, 'every scope', left($3, 12), sha256(convert_to($3, 'UTF8')), auth.known_scopes())",
        &[&b.workspace_id, &b.users["owner"], &b_key],
    )
    .await
    .unwrap();

    let targets = targets(&db).await;
    assert!(
        targets.len() >= 25,
        "expected the whole data model in api, found {}",
        targets.len()
    );
    let before = fingerprint(&db, &targets, victim.workspace_id).await;
    let markers = markers(&victim, &populated);
    let rpcs = db
        .query(
            "SELECT p.proname::text, coalesce(p.proargnames[1:p.pronargs], '{}')::text[],
                    ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t)
               FROM pg_proc p WHERE p.pronamespace = 'api'::regnamespace ORDER BY 1",
            &[],
        )
        .await
        .unwrap();

    let (mut attacks, mut leaks) = (0usize, Vec::<String>::new());
    let leaked = |text: &str| markers.iter().find(|m| text.contains(m.as_str())).cloned();
    for attacker in attackers(&victim, &b, &c, &b_key) {
        for t in &targets {
            let victim_rows = t
                .victim_rows
                .replace("$V", &victim.workspace_id.to_string());
            // SELECT: nothing of the victim may come back.
            let get = attacker
                .req
                .clone()
                .method("GET")
                .path(&format!("/{}", t.table));
            attacks += 1;
            if let Ok(rows) = pgrst(
                &mut api,
                &get,
                &format!("SELECT to_jsonb(x)::text AS r FROM api.{} x", t.table),
                &[],
            )
            .await
            {
                if let Some(m) = leaked(&Value::Array(rows).to_string()) {
                    leaks.push(format!("{}: SELECT {} saw {m}", attacker.name, t.table));
                }
            }
            // INSERT: a copy of a victim row (fresh id) must not land.
            let template: Option<Value> = db
                .query_opt(
                    &format!(
                        "SELECT to_jsonb(x) FROM api.{} x WHERE {victim_rows} LIMIT 1",
                        t.table
                    ),
                    &[],
                )
                .await
                .unwrap()
                .map(|r| r.get(0));
            let mut row = template.unwrap_or_else(|| json!({"workspace_id": victim.workspace_id}));
            if row.get("id").is_some() {
                row["id"] = json!(Uuid::new_v4());
            }
            let cols = t.insert_columns.join(", ");
            let post = attacker
                .req
                .clone()
                .method("POST")
                .path(&format!("/{}", t.table));
            let insert = format!(
                "INSERT INTO api.{t} ({cols}) SELECT {cols} FROM jsonb_populate_record(NULL::api.{t}, $1::text::jsonb) RETURNING 1 AS one",
                t = t.table
            );
            attacks += 1;
            if let Ok(rows) = pgrst(&mut api, &post, &insert, &[&row.to_string()]).await {
                if !rows.is_empty() {
                    leaks.push(format!(
                        "{}: INSERT into {} succeeded",
                        attacker.name, t.table
                    ));
                }
            }
            // UPDATE and DELETE of the victim's rows must touch nothing.
            for (method, sql) in [
                (
                    "PATCH",
                    format!(
                        "UPDATE api.{t} SET {c} = {c} WHERE {victim_rows} RETURNING 1 AS one",
                        t = t.table,
                        c = t.update_column
                    ),
                ),
                (
                    "DELETE",
                    format!(
                        "DELETE FROM api.{t} WHERE {victim_rows} RETURNING 1 AS one",
                        t = t.table
                    ),
                ),
            ] {
                attacks += 1;
                let req = attacker
                    .req
                    .clone()
                    .method(method)
                    .path(&format!("/{}", t.table));
                if let Ok(rows) = pgrst(&mut api, &req, &sql, &[]).await {
                    if !rows.is_empty() {
                        leaks.push(format!(
                            "{}: {method} {} touched {} rows",
                            attacker.name,
                            t.table,
                            rows.len()
                        ));
                    }
                }
            }
        }
        // RPC: every exposed function, aimed at the victim's ids and slugs.
        for r in &rpcs {
            let (name, arg_names, arg_types): (String, Vec<String>, Vec<String>) =
                (r.get(0), r.get(1), r.get(2));
            if PUBLIC_WRITES.contains(&name.as_str()) {
                continue;
            }
            let mut params = Vec::new();
            let mut named = Vec::new();
            for (arg, ty) in arg_names.iter().zip(&arg_types) {
                if let Some(v) = rpc_argument(arg, &victim, &populated) {
                    params.push(v);
                    named.push(format!("{arg} => ${}::text::{ty}", params.len()));
                }
            }
            let sql = format!(
                "SELECT to_jsonb(x)::text AS r FROM api.{name}({}) x",
                named.join(", ")
            );
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let req = attacker
                .req
                .clone()
                .method("POST")
                .path(&format!("/rpc/{name}"));
            attacks += 1;
            if let Ok(rows) = pgrst(&mut api, &req, &sql, &refs).await {
                if let Some(m) = leaked(&Value::Array(rows).to_string()) {
                    leaks.push(format!("{}: rpc {name} returned {m}", attacker.name));
                }
            }
        }
    }

    let after = fingerprint(&db, &targets, victim.workspace_id).await;
    for ((table, a), (_, b)) in before.iter().zip(&after) {
        if a != b {
            leaks.push(format!("victim's {table} changed during the attacks"));
        }
    }
    println!("{attacks} attacks, {} leaks", leaks.len());
    assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
    assert!(attacks > 1_000, "the suite must actually attack: {attacks}");
}

#[tokio::test]
async fn every_exposed_table_has_forced_rls_and_every_object_a_comment() {
    let db = connect().await;
    let no_rls: Vec<String> = column(
        &db,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'api' AND c.relkind IN ('r', 'p') AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
        &[],
    )
    .await;
    assert!(
        no_rls.is_empty(),
        "exposed tables without forced RLS: {no_rls:?}"
    );
    let uncommented: Vec<String> = column(
        &db,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname IN ('api', 'auth', 'internal') AND c.relkind IN ('r', 'p')
                AND obj_description(c.oid, 'pg_class') IS NULL
             UNION ALL
             SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname IN ('api', 'auth', 'internal', 'flowtrack') AND obj_description(p.oid, 'pg_proc') IS NULL",
        &[],
    )
    .await;
    assert!(
        uncommented.is_empty(),
        "objects without COMMENT ON: {uncommented:?}"
    );
    // Partitions and internals are out of the API roles' reach.
    for schema in ["internal", "partitions", "flowtrack_meta"] {
        for role in ["anon", "authenticated"] {
            let usage: bool = db
                .query_one(
                    "SELECT has_schema_privilege($1, $2, 'USAGE')",
                    &[&role, &schema],
                )
                .await
                .unwrap()
                .get(0);
            assert!(!usage, "{role} must not reach schema {schema}");
        }
    }
}

#[tokio::test]
async fn viewers_only_read_and_members_cannot_touch_billing_members_or_keys() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    fixtures::populate(&db, &t).await;
    let targets = targets(&db).await;
    let ws = t.workspace_id.to_string();
    let viewer = Request::with_claims(t.claims("viewer"));
    let member = Request::with_claims(t.claims("member"));
    let before = fingerprint(&db, &targets, t.workspace_id).await;
    // Everyone may edit their own profile, so users is not in this check.
    for tgt in targets.iter().filter(|t| t.table != "users") {
        let own = tgt.victim_rows.replace("$V", &ws);
        let sql = format!(
            "UPDATE api.{} SET {c} = {c} WHERE {own} RETURNING 1 AS one",
            tgt.table,
            c = tgt.update_column
        );
        let del = format!(
            "DELETE FROM api.{} WHERE {own} RETURNING 1 AS one",
            tgt.table
        );
        for (req, q) in [
            (viewer.clone().method("PATCH"), &sql),
            (viewer.clone().method("DELETE"), &del),
        ] {
            if let Ok(rows) = pgrst(&mut api, &req, q, &[]).await {
                assert!(rows.is_empty(), "viewer changed {}", tgt.table);
            }
        }
        let billing = [
            "subscriptions",
            "usage_quotas",
            "usage_events",
            "workspace_members",
            "api_keys",
            "audit_logs",
        ];
        if billing.contains(&tgt.table.as_str()) {
            for (req, q) in [
                (member.clone().method("PATCH"), &sql),
                (member.clone().method("DELETE"), &del),
            ] {
                if let Ok(rows) = pgrst(&mut api, &req, q, &[]).await {
                    assert!(rows.is_empty(), "member changed {}", tgt.table);
                }
            }
        }
    }
    assert_eq!(
        before,
        fingerprint(&db, &targets, t.workspace_id).await,
        "nothing changed"
    );
    // Viewers cannot start anything either, and members cannot mint API keys.
    let wf = fixtures::published_workflow(&db, &t, "viewer target").await;
    let err = pgrst(
        &mut api,
        &viewer.clone().method("POST"),
        "SELECT * FROM api.activate_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap_err();
    assert_eq!(err.status, 403, "{err}");
    let err = pgrst(
        &mut api,
        &member.clone().method("POST"),
        "SELECT * FROM api.create_api_key('k', '{leads:read}')",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "42501"), "{err}");
    // But a member does the everyday work.
    let rows = pgrst(
        &mut api,
        &member.clone().method("POST"),
        "INSERT INTO api.leads (email) VALUES ('new@lead.example') RETURNING id",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
}
