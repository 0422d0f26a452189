//! Tenant and scope boundaries (issue 9, section 3): API-key scopes hold for
//! every table a request reaches, not just its path; no write answers
//! differently for another tenant's id than for a missing one; people join a
//! workspace only by accepting an invitation and are seen only by the
//! workspaces they joined; keys stay revoked and are touched only by their
//! holders; deleted users are refused; a workspace keeps its owner.

use flowtrack_tests::fixtures::{self, Tenant};
use flowtrack_tests::{column, connect, connect_authenticator, jwt, pgrst, ApiError, Request};
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

fn with_key(method: &str, path: &str, key: &str) -> Request {
    let mut r = Request::anon().method(method).path(path);
    r.headers = json!({ "x-api-key": key });
    r
}

/// A fresh API key of `t`'s workspace with `scopes`, made by its owner.
async fn key(api: &mut Client, t: &Tenant, scopes: &str) -> String {
    let owner = Request::with_claims(t.claims("owner"))
        .method("POST")
        .path("/rpc/create_api_key");
    let rows = pgrst(
        api,
        &owner,
        "SELECT key FROM api.create_api_key('test', $1::text::text[])",
        &[&scopes],
    )
    .await
    .unwrap_or_else(|e| panic!("create_api_key {scopes}: {e}"));
    rows[0]["key"].as_str().unwrap().to_string()
}

/// PostgREST's SQL for `GET /leads?select=email,workflow_executions(workflows(name,workflow_nodes(config)))`:
/// every embedded table is a correlated sub-select over its foreign key.
const EMBED_FROM_LEADS: &str = "
    SELECT l.email,
           coalesce((SELECT json_agg(json_build_object('workflows',
                         (SELECT json_build_object('name', w.name, 'workflow_nodes',
                                     coalesce((SELECT json_agg(json_build_object('config', n.config))
                                                 FROM api.workflow_nodes n
                                                WHERE n.workspace_id = w.workspace_id AND n.workflow_id = w.id), '[]'))
                            FROM api.workflows w
                           WHERE w.workspace_id = e.workspace_id AND w.id = e.workflow_id)))
                       FROM api.workflow_executions e
                      WHERE e.workspace_id = l.workspace_id AND e.lead_id = l.id), '[]') AS workflow_executions
      FROM api.leads l";

#[tokio::test]
async fn api_key_scopes_hold_across_embedding() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let p = fixtures::populate(&db, &t).await;
    let workflow_name = format!("secret-workflow-{}", t.slug);

    // The query is right: the owner's JWT sees the whole chain.
    let owner = Request::with_claims(t.claims("owner")).path("/leads");
    let rows = pgrst(&mut api, &owner, EMBED_FROM_LEADS, &[])
        .await
        .unwrap();
    assert!(
        Value::Array(rows).to_string().contains(&workflow_name),
        "the embedding reaches the workflow for a user"
    );

    // A leads:read key reads leads, and nothing the leads point to.
    let leads_ro = key(&mut api, &t, "{leads:read}").await;
    let rows = pgrst(
        &mut api,
        &with_key("GET", "/leads", &leads_ro),
        EMBED_FROM_LEADS,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["email"], p.lead_email.as_str());
    let text = Value::Array(rows).to_string();
    assert!(
        !text.contains(&workflow_name) && !text.contains("form_id"),
        "a leads:read key read workflows through embedding: {text}"
    );
    assert_eq!(
        text,
        json!([{"email": p.lead_email, "workflow_executions": []}]).to_string()
    );

    // forms -> workspaces(*), with a key that can read forms.
    let forms_key = key(&mut api, &t, "{forms:read,forms:write}").await;
    let rows = pgrst(
        &mut api,
        &with_key("GET", "/forms", &forms_key),
        "SELECT f.slug, (SELECT row_to_json(w) FROM api.workspaces w WHERE w.id = f.workspace_id) AS workspaces
           FROM api.forms f",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "the key reads its forms: {rows:?}");
    assert_eq!(rows[0]["workspaces"], Value::Null, "{rows:?}");

    // workflows -> users(email), the creator of each workflow.
    let wf_key = key(&mut api, &t, "{workflows:read}").await;
    let rows = pgrst(
        &mut api,
        &with_key("GET", "/workflows", &wf_key),
        "SELECT w.name, (SELECT row_to_json(u) FROM api.users u WHERE u.id = w.created_by) AS users FROM api.workflows w",
        &[],
    )
    .await
    .unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r["users"].is_null()),
        "a workflows key read users: {rows:?}"
    );

    // Writes too: a leads:write key cannot write workflows, whatever the path says.
    let leads_rw = key(&mut api, &t, "{leads:write}").await;
    let err = pgrst(
        &mut api,
        &with_key("POST", "/leads", &leads_rw),
        "INSERT INTO api.workflows (name) VALUES ('through a leads key') RETURNING id",
        &[],
    )
    .await
    .unwrap_err();
    // 42501 (an API-key request carries no JWT, so PostgREST answers 401).
    assert_eq!((err.status, err.code.as_str()), (401, "42501"), "{err}");
    assert!(err.message.contains("key_scope_insert"), "{err}");
    // ...while its own resource works, and write includes read.
    let rows = pgrst(
        &mut api,
        &with_key("POST", "/leads", &leads_rw),
        "INSERT INTO api.leads (email) VALUES ('by-key@lead.example') RETURNING email",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
}

/// Every key of every scope resource, against every table that is not a
/// catalog: nothing outside the key's resource is readable or writable.
#[tokio::test]
async fn no_key_reaches_a_table_outside_its_scope() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    fixtures::populate(&db, &t).await;
    let scopes = db
        .query(
            "SELECT resource, tables FROM auth.api_key_scopes ORDER BY resource",
            &[],
        )
        .await
        .unwrap();
    // Tables under RLS that are not shared catalogs, with a column a member may update.
    let tables = db
        .query(
            "SELECT c.relname::text,
                    (SELECT a.attname::text FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                        AND a.attname NOT IN ('id', 'workspace_id')
                        AND has_column_privilege('authenticated', c.oid, a.attname, 'UPDATE')
                      ORDER BY a.attnum LIMIT 1)
               FROM pg_class c
              WHERE c.relnamespace = 'api'::regnamespace AND c.relkind IN ('r', 'p') AND c.relrowsecurity
                AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'catalog_read')
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    assert!(tables.len() >= 24, "found {} tenant tables", tables.len());
    let mut leaks = Vec::new();
    for s in &scopes {
        let (resource, own): (String, Vec<String>) = (s.get(0), s.get(1));
        let path = format!("/{}", own[0]);
        let read = key(&mut api, &t, &format!("{{{resource}:read}}")).await;
        let write = key(&mut api, &t, &format!("{{{resource}:write}}")).await;
        for row in &tables {
            let (table, updatable): (String, Option<String>) = (row.get(0), row.get(1));
            if own.contains(&table) {
                continue;
            }
            for k in [&read, &write] {
                if let Ok(rows) = pgrst(
                    &mut api,
                    &with_key("GET", &path, k),
                    &format!("SELECT count(*)::int AS n FROM api.{table}"),
                    &[],
                )
                .await
                {
                    if rows[0]["n"] != 0 {
                        leaks.push(format!(
                            "{resource} key read {} rows of {table}",
                            rows[0]["n"]
                        ));
                    }
                }
            }
            if let Some(c) = updatable {
                let patch = with_key("PATCH", &path, &write);
                let sql = format!("UPDATE api.{table} SET {c} = {c} RETURNING 1 AS one");
                if let Ok(rows) = pgrst(&mut api, &patch, &sql, &[]).await {
                    if !rows.is_empty() {
                        leaks.push(format!(
                            "{resource}:write key updated {} rows of {table}",
                            rows.len()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "keys outside their scope:\n{}",
        leaks.join("\n")
    );
}

/// The policies name the same resource for each table as auth.api_key_scopes
/// (which the path check uses), and every non-catalog table has them.
#[tokio::test]
async fn every_table_names_its_scope_resource_in_its_policies() {
    let db = connect().await;
    let bad: Vec<String> = column(
        &db,
        "WITH tenant AS (
             SELECT c.oid, c.relname::text AS tbl FROM pg_class c
              WHERE c.relnamespace = 'api'::regnamespace AND c.relkind IN ('r', 'p') AND c.relrowsecurity
                AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'catalog_read')),
         named AS (
             SELECT t.tbl, p.policyname,
                    substring(coalesce(p.qual, p.with_check) FROM 'key_scope_allows\\(''([a-z_]+)''') AS resource,
                    p.permissive, p.roles
               FROM tenant t LEFT JOIN pg_policies p ON p.schemaname = 'api' AND p.tablename = t.tbl
                                                    AND p.policyname LIKE 'key\\_scope\\_%'),
         listed AS (SELECT unnest(tables) AS tbl, resource FROM auth.api_key_scopes)
         SELECT t.tbl || ': ' || coalesce(string_agg(DISTINCT n.policyname || ' ' || n.permissive || ' ' || n.roles::text
                                                      || ' -> ' || coalesce(n.resource, 'none'), ', '), 'no key_scope policies')
                || ' (listed under ' || coalesce((SELECT string_agg(l.resource, ',') FROM listed l WHERE l.tbl = t.tbl), 'nothing') || ')'
           FROM tenant t LEFT JOIN named n ON n.tbl = t.tbl
          GROUP BY t.tbl
         HAVING count(n.policyname) <> 4
             OR bool_or(n.permissive <> 'RESTRICTIVE' OR n.roles <> '{authenticated}')
             OR count(DISTINCT coalesce(n.resource, '-')) <> 1
             OR max(coalesce(n.resource, '-')) <> coalesce((SELECT max(l.resource) FROM listed l WHERE l.tbl = t.tbl), '-')
          ORDER BY 1",
        &[],
    )
    .await;
    assert!(
        bad.is_empty(),
        "tables whose key scope policies are off:\n{}",
        bad.join("\n")
    );
}

fn outcome(r: &Result<Vec<Value>, ApiError>, ids: &[String]) -> String {
    match r {
        Ok(rows) => format!("ok {}", rows.len()),
        Err(e) => {
            let mut m = format!("{} {} {}", e.status, e.code, e.message);
            for id in ids {
                m = m.replace(id.as_str(), "<id>");
            }
            m
        }
    }
}

/// Issue 9: writing another tenant's id answered 23505, a random one 201; a
/// node_key on another tenant's workflow 23505 or 23503 by whether the key
/// existed there. For every tenant table and every uuid column a client may
/// write, the victim's value and a random one must get the same answer.
#[tokio::test]
async fn writes_answer_the_same_for_another_tenants_ids_as_for_missing_ones() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let victim = fixtures::tenant(&db, "pro").await;
    let me = fixtures::tenant(&db, "pro").await;
    fixtures::populate(&db, &victim).await;
    fixtures::populate(&db, &me).await;
    let tables = db
        .query(
            "SELECT c.relname::text, c.oid::regclass::text,
                    ARRAY(SELECT a.attname::text FROM pg_attribute a
                           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                             AND has_column_privilege('authenticated', c.oid, a.attname, 'INSERT') ORDER BY a.attnum),
                    ARRAY(SELECT a.attname::text FROM pg_attribute a
                           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'uuid'::regtype
                             AND a.attname <> 'workspace_id' ORDER BY a.attnum),
                    EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'id')
               FROM pg_class c
              WHERE c.relnamespace = 'api'::regnamespace AND c.relkind IN ('r', 'p')
                AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'workspace_id')
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let owner = Request::with_claims(me.claims("owner"));
    let (mut tried, mut oracles) = (0, Vec::new());
    for t in &tables {
        let (name, qualified, insertable, uuids, has_id): (
            String,
            String,
            Vec<String>,
            Vec<String>,
            bool,
        ) = (t.get(0), t.get(1), t.get(2), t.get(3), t.get(4));
        let row_of = |ws: Uuid| {
            let sql = format!("SELECT to_jsonb(x) FROM {qualified} x WHERE workspace_id = $1 ORDER BY to_jsonb(x)::text LIMIT 1");
            let db = &db;
            async move {
                db.query_opt(&sql, &[&ws])
                    .await
                    .unwrap()
                    .map(|r| r.get::<_, Value>(0))
            }
        };
        let (Some(theirs), Some(mine)) = (
            row_of(victim.workspace_id).await,
            row_of(me.workspace_id).await,
        ) else {
            continue;
        };
        let post = owner.clone().method("POST").path(&format!("/{name}"));
        let patch = owner.clone().method("PATCH").path(&format!("/{name}"));
        for col in &uuids {
            let Some(their_value) = theirs.get(col).and_then(Value::as_str).map(str::to_string)
            else {
                continue;
            };
            let random = Uuid::new_v4().to_string();
            let ids = [their_value.clone(), random.clone()];
            let mut answers = Vec::new();
            if insertable.contains(col) {
                let cols = insertable.join(", ");
                let insert = format!(
                    "INSERT INTO {qualified} ({cols}) SELECT {cols} FROM jsonb_populate_record(NULL::{qualified}, $1::text::jsonb) RETURNING 1 AS one"
                );
                for value in &ids {
                    let mut row = mine.clone();
                    row[col.as_str()] = json!(value);
                    if col != "id" && insertable.iter().any(|c| c == "id") {
                        row["id"] = json!(Uuid::new_v4());
                    }
                    tried += 1;
                    answers.push((
                        "INSERT",
                        outcome(
                            &pgrst(&mut api, &post, &insert, &[&row.to_string()]).await,
                            &ids,
                        ),
                    ));
                }
            }
            if has_id {
                let update = format!("UPDATE {qualified} SET {col} = $1::text::uuid WHERE id = $2::text::uuid RETURNING 1 AS one");
                let mine_id = mine["id"].as_str().unwrap().to_string();
                for value in &ids {
                    tried += 1;
                    answers.push((
                        "UPDATE",
                        outcome(
                            &pgrst(&mut api, &patch, &update, &[value, &mine_id]).await,
                            &ids,
                        ),
                    ));
                }
            }
            for pair in answers.chunks(2) {
                if let [(verb, theirs), (_, random)] = pair {
                    if theirs != random {
                        oracles.push(format!("{verb} {name}.{col}: another tenant's id -> {theirs}; a random id -> {random}"));
                    }
                }
            }
        }
    }
    assert!(tried > 20, "only {tried} writes tried");
    assert!(
        oracles.is_empty(),
        "existence oracles:\n{}",
        oracles.join("\n")
    );
}

/// The catalog rule behind the test above: a unique key on a tenant table
/// that a client can write must include workspace_id, or it answers for
/// other tenants' rows. So clients write no id, and child keys are per tenant.
#[tokio::test]
async fn client_writable_unique_keys_include_the_workspace() {
    let db = connect().await;
    let bad: Vec<String> = column(
        &db,
        "SELECT i.indexrelid::regclass::text || ' on ' || i.indrelid::regclass::text
           FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
          WHERE i.indisunique AND c.relnamespace = 'api'::regnamespace
            AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'workspace_id')
            AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attname = 'workspace_id' AND a.attnum = ANY (i.indkey))
            AND EXISTS (SELECT 1 FROM pg_attribute a
                         WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey)
                           AND (has_column_privilege('authenticated', c.oid, a.attname, 'INSERT')
                                OR has_column_privilege('authenticated', c.oid, a.attname, 'UPDATE')))
          ORDER BY 1",
        &[],
    )
    .await;
    assert!(
        bad.is_empty(),
        "unique keys clients can probe across tenants: {bad:#?}"
    );
    let ids: Vec<String> = column(
        &db,
        "SELECT c.relname::text FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'id'
          WHERE c.relnamespace = 'api'::regnamespace AND c.relkind IN ('r', 'p')
            AND (has_column_privilege('authenticated', c.oid, a.attname, 'INSERT')
                 OR has_column_privilege('authenticated', c.oid, a.attname, 'UPDATE'))
          ORDER BY 1",
        &[],
    )
    .await;
    assert!(ids.is_empty(), "tables where clients choose ids: {ids:?}");
}

fn user_claims(user: Uuid) -> Value {
    json!({"role": "authenticated", "sub": user})
}

async fn email_of(db: &Client, user: Uuid) -> String {
    db.query_one("SELECT email::text FROM api.users WHERE id = $1", &[&user])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn members_join_only_by_accepting_an_invitation() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let elsewhere = fixtures::tenant(&db, "pro").await;
    let invitee = elsewhere.users["member"];
    let bystander = elsewhere.users["viewer"];
    let invitee_email = email_of(&db, invitee).await;
    let owner = Request::with_claims(t.claims("owner")).method("POST");
    let users_of = |req: Request| req.method("GET").path("/users");

    // An owner cannot add anyone by id, and so cannot see them either.
    let err = pgrst(
        &mut api,
        &owner.clone().path("/workspace_members"),
        "INSERT INTO api.workspace_members (workspace_id, user_id, role) VALUES ($1, $2, 'viewer') RETURNING id",
        &[&t.workspace_id, &invitee],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "42501"), "{err}");
    let seen = pgrst(
        &mut api,
        &users_of(owner.clone()),
        "SELECT id, email FROM api.users",
        &[],
    )
    .await
    .unwrap();
    assert!(
        !Value::Array(seen.clone())
            .to_string()
            .contains(&invitee_email),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 4, "the owner sees the four members: {seen:?}");

    // Members cannot invite; admins invite up to member; roles are checked.
    let invite = "SELECT id, token, expires_at FROM api.invite_member($1, $2)";
    let member = Request::with_claims(t.claims("member")).method("POST");
    let err = pgrst(&mut api, &member, invite, &[&invitee_email, &"viewer"])
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "42501"), "{err}");
    let admin = Request::with_claims(t.claims("admin")).method("POST");
    let err = pgrst(&mut api, &admin, invite, &[&invitee_email, &"admin"])
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "42501"), "{err}");
    let err = pgrst(&mut api, &owner, invite, &[&invitee_email, &"owner"])
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (400, "22023"), "{err}");
    // Inviting says nothing about whether the address has an account.
    let unknown = pgrst(
        &mut api,
        &admin,
        invite,
        &[&"nobody@nowhere.example", &"member"],
    )
    .await
    .unwrap();
    let known = pgrst(&mut api, &admin, invite, &[&invitee_email, &"member"])
        .await
        .unwrap();
    let keys = |r: &Value| r.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&unknown[0]), keys(&known[0]));
    let token = known[0]["token"].as_str().unwrap().to_string();
    // The hash is kept, never the token, and clients cannot read the hash.
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM api.workspace_invitations WHERE workspace_id = $1 AND token_hash = sha256(convert_to($2, 'UTF8'))",
            &[&t.workspace_id, &token],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
    let err = pgrst(
        &mut api,
        &owner.clone().method("GET"),
        "SELECT token_hash FROM api.workspace_invitations",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, "42501", "{err}");

    // Only the invited address accepts, signed in and registered.
    let accept = "SELECT * FROM api.accept_invitation($1)";
    let err = pgrst(
        &mut api,
        &Request::with_claims(user_claims(bystander)).method("POST"),
        accept,
        &[&token],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "PT403"), "{err}");
    let unregistered = Request::with_claims(user_claims(Uuid::new_v4())).method("POST");
    let err = pgrst(&mut api, &unregistered, accept, &[&token])
        .await
        .unwrap_err();
    assert_eq!(err.status, 403, "{err}");
    let seen = pgrst(
        &mut api,
        &users_of(owner.clone()),
        "SELECT email FROM api.users",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(seen.len(), 4, "not visible before accepting: {seen:?}");

    let joined = pgrst(
        &mut api,
        &Request::with_claims(user_claims(invitee)).method("POST"),
        accept,
        &[&token],
    )
    .await
    .unwrap();
    assert_eq!(joined[0]["workspace_id"], t.workspace_id.to_string());
    assert_eq!(joined[0]["role"], "member");
    let seen = pgrst(
        &mut api,
        &users_of(owner.clone()),
        "SELECT email FROM api.users",
        &[],
    )
    .await
    .unwrap();
    assert!(
        Value::Array(seen).to_string().contains(&invitee_email),
        "visible once a member"
    );
    // The new member's token for the workspace passes the hook.
    let as_member = json!({"role": "authenticated", "sub": invitee, "workspace_id": t.workspace_id, "workspace_role": "member"});
    pgrst(
        &mut api,
        &Request::with_claims(as_member).path("/leads"),
        "SELECT id FROM api.leads",
        &[],
    )
    .await
    .unwrap();

    // Used, unknown, revoked and expired tokens: one answer.
    let again = pgrst(
        &mut api,
        &Request::with_claims(user_claims(invitee)).method("POST"),
        accept,
        &[&token],
    )
    .await
    .unwrap_err();
    let bystander_email = email_of(&db, bystander).await;
    let revoked = pgrst(&mut api, &owner, invite, &[&bystander_email, &"viewer"])
        .await
        .unwrap();
    let revoked_token = revoked[0]["token"].as_str().unwrap().to_string();
    pgrst(
        &mut api,
        &admin,
        "SELECT * FROM api.revoke_invitation($1::text::uuid)",
        &[&revoked[0]["id"].as_str().unwrap()],
    )
    .await
    .unwrap();
    let expired = pgrst(&mut api, &owner, invite, &[&bystander_email, &"viewer"])
        .await
        .unwrap();
    db.execute(
        "UPDATE api.workspace_invitations SET expires_at = now() - interval '1 second' WHERE id = $1::text::uuid",
        &[&expired[0]["id"].as_str().unwrap()],
    )
    .await
    .unwrap();
    let as_bystander = Request::with_claims(user_claims(bystander)).method("POST");
    let answers = [
        again,
        pgrst(&mut api, &as_bystander, accept, &[&"ftinv_no-such-token"])
            .await
            .unwrap_err(),
        pgrst(&mut api, &as_bystander, accept, &[&revoked_token])
            .await
            .unwrap_err(),
        pgrst(
            &mut api,
            &as_bystander,
            accept,
            &[&expired[0]["token"].as_str().unwrap()],
        )
        .await
        .unwrap_err(),
    ];
    for a in &answers {
        assert_eq!(
            (a.status, a.code.as_str(), a.message.as_str()),
            (404, "PT404", answers[0].message.as_str()),
            "{a}"
        );
    }
    let members: i64 = db
        .query_one(
            "SELECT count(*) FROM api.workspace_members WHERE workspace_id = $1 AND user_id = $2",
            &[&t.workspace_id, &bystander],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(members, 0);
}

#[tokio::test]
async fn registering_says_nothing_about_other_accounts() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "free").await;
    let taken = email_of(&db, t.users["owner"]).await;
    let register = "SELECT * FROM api.register_user($1, 'Someone')";
    let mut answers = Vec::new();
    for email in [taken.as_str(), "fresh-address@nowhere.example"] {
        let sub = Uuid::new_v4();
        let req = Request::with_claims(user_claims(sub))
            .method("POST")
            .path("/rpc/register_user");
        let rows = pgrst(&mut api, &req, register, &[&email])
            .await
            .unwrap_or_else(|e| panic!("register {email}: {e}"));
        assert_eq!(rows[0]["id"], sub.to_string(), "the caller's own row");
        assert_eq!(rows[0]["email"], email);
        let mut shape = rows[0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>();
        shape.sort();
        answers.push(shape);
        // Idempotent for the same sub: the row stays the caller's.
        let again = pgrst(&mut api, &req, register, &[&email]).await.unwrap();
        assert_eq!(again[0]["id"], sub.to_string());
    }
    assert_eq!(answers[0], answers[1]);
    assert!(!answers.concat().is_empty());
}

async fn key_used(db: &Client, id: Uuid) -> bool {
    db.query_one(
        "SELECT last_used_at IS NOT NULL FROM api.api_keys WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn touch_api_key_needs_the_key_itself() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let victim = fixtures::tenant(&db, "pro").await;
    let attacker = fixtures::tenant(&db, "pro").await;
    let p = fixtures::populate(&db, &victim).await;
    assert!(!key_used(&db, p.api_key_id).await);
    for req in [
        Request::anon().method("POST"),
        Request::with_claims(attacker.claims("owner")).method("POST"),
    ] {
        let _ = pgrst(
            &mut api,
            &req,
            "SELECT auth.touch_api_key($1) AS r",
            &[&p.api_key_id],
        )
        .await;
        let _ = pgrst(
            &mut api,
            &req,
            "SELECT auth.touch_api_key($1::text) AS r",
            &[&p.api_key_id.to_string()],
        )
        .await;
    }
    assert!(
        !key_used(&db, p.api_key_id).await,
        "anyone stamped another tenant's key"
    );
    // Its holder's writes do (the populated key's secret is its workspace id).
    let holder = key(&mut api, &attacker, "{leads:write}").await;
    pgrst(
        &mut api,
        &with_key("POST", "/leads", &holder),
        "INSERT INTO api.leads (email) VALUES ('touch@lead.example') RETURNING id",
        &[],
    )
    .await
    .unwrap();
    let touched: i64 = db
        .query_one(
            "SELECT count(*) FROM api.api_keys WHERE key_hash = sha256(convert_to($1, 'UTF8')) AND last_used_at IS NOT NULL",
            &[&holder],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(touched, 1);
}

#[tokio::test]
async fn revoked_keys_stay_revoked() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let owner = Request::with_claims(t.claims("owner"))
        .method("PATCH")
        .path("/api_keys");
    let secret = key(&mut api, &t, "{leads:read}").await;
    let id: Uuid = db
        .query_one(
            "SELECT id FROM api.api_keys WHERE key_hash = sha256(convert_to($1, 'UTF8'))",
            &[&secret],
        )
        .await
        .unwrap()
        .get(0);
    // Revoked through PATCH, with a made-up time: it takes effect now.
    let rows = pgrst(
        &mut api,
        &owner,
        "UPDATE api.api_keys SET revoked_at = '2999-01-01' WHERE id = $1 RETURNING revoked_at <= now() AS now",
        &[&id],
    )
    .await
    .unwrap();
    assert_eq!(rows[0]["now"], true);
    for sql in [
        "UPDATE api.api_keys SET revoked_at = NULL WHERE id = $1 RETURNING id",
        "UPDATE api.api_keys SET revoked_at = now() + interval '1 day' WHERE id = $1 RETURNING id",
    ] {
        let err = pgrst(&mut api, &owner, sql, &[&id]).await.unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (409, "PT409"),
            "{sql}: {err}"
        );
        assert!(
            err.message.starts_with("revoked_at") && err.hint.is_some(),
            "{err:?}"
        );
    }
    let err = pgrst(
        &mut api,
        &with_key("GET", "/leads", &secret),
        "SELECT id FROM api.leads",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.status, 401, "the key stays dead");
    // The RPC: owner only, idempotent, PT404 outside the workspace.
    let rpc = Request::with_claims(t.claims("owner"))
        .method("POST")
        .path("/rpc/revoke_api_key");
    let other = key(&mut api, &t, "{leads:read}").await;
    let other_id: Uuid = db
        .query_one(
            "SELECT id FROM api.api_keys WHERE key_hash = sha256(convert_to($1, 'UTF8'))",
            &[&other],
        )
        .await
        .unwrap()
        .get(0);
    let err = pgrst(
        &mut api,
        &Request::with_claims(t.claims("admin")).method("POST"),
        "SELECT * FROM api.revoke_api_key($1)",
        &[&other_id],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, "42501");
    let first = pgrst(
        &mut api,
        &rpc,
        "SELECT * FROM api.revoke_api_key($1)",
        &[&other_id],
    )
    .await
    .unwrap();
    let second = pgrst(
        &mut api,
        &rpc,
        "SELECT * FROM api.revoke_api_key($1)",
        &[&other_id],
    )
    .await
    .unwrap();
    assert_eq!(first, second);
    let err = pgrst(
        &mut api,
        &rpc,
        "SELECT * FROM api.revoke_api_key($1)",
        &[&Uuid::new_v4()],
    )
    .await
    .unwrap_err();
    assert_eq!(err.status, 404);
}

#[tokio::test]
async fn deleted_users_are_refused_with_or_without_a_workspace() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let gone = t.users["admin"];
    db.execute(
        "UPDATE api.users SET deleted_at = now() WHERE id = $1",
        &[&gone],
    )
    .await
    .unwrap();
    let slug = format!("ghost-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let no_ws = Request::with_claims(user_claims(gone))
        .method("POST")
        .path("/rpc/create_workspace");
    let err = pgrst(
        &mut api,
        &no_ws,
        "SELECT id FROM api.create_workspace('Ghost', $1)",
        &[&slug],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (401, "PT401"), "{err}");
    let err = pgrst(
        &mut api,
        &no_ws,
        "SELECT id FROM api.register_user('ghost@example.test')",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.status, 401, "{err}");
    let err = pgrst(
        &mut api,
        &Request::with_claims(t.claims("admin")),
        "SELECT id FROM api.leads",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.status, 403, "{err}");
    let made: i64 = db
        .query_one(
            "SELECT count(*) FROM api.workspaces WHERE slug = $1",
            &[&slug],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(made, 0);
}

#[tokio::test]
async fn a_workspace_keeps_its_owner_until_handed_over() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let owner = Request::with_claims(t.claims("owner"))
        .method("PATCH")
        .path("/workspace_members");
    let (me, heir) = (t.users["owner"], t.users["admin"]);
    for sql in [
        "DELETE FROM api.workspace_members WHERE user_id = $1 RETURNING id",
        "UPDATE api.workspace_members SET role = 'admin' WHERE user_id = $1 RETURNING id",
    ] {
        let err = pgrst(&mut api, &owner, sql, &[&me]).await.unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (409, "PT409"),
            "{sql}: {err}"
        );
        assert!(
            err.hint
                .as_deref()
                .unwrap_or("")
                .contains("transfer_ownership"),
            "{err:?}"
        );
    }
    let err = pgrst(
        &mut api,
        &owner,
        "UPDATE api.workspace_members SET role = 'owner' WHERE user_id = $1 RETURNING id",
        &[&heir],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (409, "PT409"), "{err}");

    // Handing over: only the owner, only to a member.
    let rpc = "SELECT * FROM api.transfer_ownership($1)";
    let err = pgrst(
        &mut api,
        &Request::with_claims(t.claims("admin")).method("POST"),
        rpc,
        &[&heir],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, "42501");
    let stranger = fixtures::tenant(&db, "free").await.users["member"];
    let err = pgrst(&mut api, &owner.clone().method("POST"), rpc, &[&stranger])
        .await
        .unwrap_err();
    assert_eq!(err.status, 404, "{err}");
    let rows = pgrst(&mut api, &owner.clone().method("POST"), rpc, &[&heir])
        .await
        .unwrap();
    assert_eq!(rows[0]["owner_user_id"], heir.to_string());
    let roles: Vec<String> = column(
        &db,
        "SELECT role FROM api.workspace_members WHERE workspace_id = $1 AND user_id = ANY ($2) ORDER BY user_id = $3",
        &[&t.workspace_id, &vec![me, heir], &heir],
    )
    .await;
    assert_eq!(roles, ["admin", "owner"]);
    // The old owner's token is stale; the new owner's works and may remove them.
    let err = pgrst(
        &mut api,
        &Request::with_claims(t.claims("owner")),
        "SELECT id FROM api.leads",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.status, 403);
    let new_owner = json!({"role": "authenticated", "sub": heir, "workspace_id": t.workspace_id, "workspace_role": "owner"});
    let rows = pgrst(
        &mut api,
        &Request::with_claims(new_owner).method("DELETE"),
        "DELETE FROM api.workspace_members WHERE user_id = $1 RETURNING id",
        &[&me],
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    // Deleting the workspace still takes its members with it.
    db.execute(
        "DELETE FROM api.workspaces WHERE id = $1",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
}

/// Over real HTTP: the issue's request, with the key in the X-Api-Key header.
#[tokio::test]
async fn http_embedding_with_a_leads_key_stops_at_leads() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let p = fixtures::populate(&db, &t).await;
    let leads_ro = key(&mut api, &t, "{leads:read}").await;
    let base = flowtrack_tests::api_url();
    let url = format!(
        "{base}/leads?select=email,workflow_executions(workflows(name,workflow_nodes(config)))"
    );
    // The owner's JWT reaches the workflow: the request is right.
    let token = jwt::sign(&t.claims("owner"), &jwt::secret());
    let body = ureq::get(&url)
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("GET as owner")
        .into_string()
        .unwrap();
    assert!(
        body.contains(&format!("secret-workflow-{}", t.slug)),
        "{body}"
    );
    let body = ureq::get(&url)
        .set("X-Api-Key", &leads_ro)
        .call()
        .expect("GET with the key")
        .into_string()
        .unwrap();
    assert!(body.contains(&p.lead_email), "{body}");
    assert!(
        !body.contains("secret-workflow") && !body.contains("form_id"),
        "the key read workflows: {body}"
    );
}
