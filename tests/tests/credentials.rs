//! Connections and their credentials: saved encrypted by owners and admins
//! only, invisible to other tenants, decrypted only by the worker, rotated to
//! a new key without loss, and absent in plaintext from a pg_dump.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use flowtrack_tests::fixtures::{self, Tenant};
use flowtrack_tests::{connect, pgrst, ApiError, Request};
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

fn post(t: &Tenant, role: &str, path: &str) -> Request {
    Request::with_claims(t.claims(role))
        .method("POST")
        .path(path)
}

/// A connection to `integration` created through the API by `t`'s owner.
async fn create_connection(db: &mut Client, t: &Tenant, integration: &str) -> Uuid {
    let name = format!(
        "{integration} {}",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let rows = pgrst(
        db,
        &post(t, "owner", "/connections"),
        "INSERT INTO api.connections (integration_id, name) VALUES ($1, $2) RETURNING *",
        &[&integration, &name],
    )
    .await
    .expect("the owner creates a connection");
    assert_eq!(rows[0]["workspace_id"], t.workspace_id.to_string());
    assert_eq!(rows[0]["created_by"], t.users["owner"].to_string());
    rows[0]["id"].as_str().unwrap().parse().unwrap()
}

async fn save_secret(
    db: &mut Client,
    t: &Tenant,
    role: &str,
    connection: Uuid,
    secret: &Value,
) -> Result<Vec<Value>, ApiError> {
    pgrst(
        db,
        &post(t, role, "/rpc/save_connection_secret"),
        "SELECT * FROM api.save_connection_secret($1, $2)",
        &[&connection, secret],
    )
    .await
}

/// A secret nobody could guess, so finding it anywhere is meaningful.
fn fresh_secret() -> (String, Value) {
    let token = format!("sk_live_{}", Uuid::new_v4().simple());
    (token.clone(), json!({"api_key": token}))
}

/// The credentials as the worker gets them: through a job of the
/// connection's workspace naming it, under that job's live lease.
async fn worker_reads(db: &mut Client, connection: Uuid) -> Result<Value, tokio_postgres::Error> {
    let ws: Uuid = db
        .query_one(
            "SELECT workspace_id FROM api.connections WHERE id = $1",
            &[&connection],
        )
        .await
        .unwrap()
        .get(0);
    let job: Uuid = db
        .query_one(
            "INSERT INTO internal.jobs (workspace_id, kind, payload, status, attempts, claims, locked_by, locked_until)
             VALUES ($1, 'http_request', jsonb_build_object('url', 'https://example.com/', 'connection_id', $2::uuid),
                     'running', 1, 1, 'credentials-test', now() + interval '1 minute')
             RETURNING id",
            &[&ws, &connection],
        )
        .await
        .unwrap()
        .get(0);
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL ROLE flowtrack_worker")
        .await
        .unwrap();
    let row = tx
        .query_one(
            "SELECT credentials FROM internal.job_connection($1, 1)",
            &[&job],
        )
        .await;
    match row {
        Ok(_) => tx.commit().await.unwrap(),
        Err(_) => tx.rollback().await.unwrap(),
    }
    db.execute("DELETE FROM internal.jobs WHERE id = $1", &[&job])
        .await
        .unwrap();
    Ok(row?.get(0))
}

fn sqlstate(e: &tokio_postgres::Error) -> &str {
    e.code().map(|c| c.code()).unwrap_or("none")
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

async fn stored(db: &Client, connection: Uuid) -> Option<(String, Vec<u8>)> {
    db.query_opt(
        "SELECT key_id, ciphertext FROM internal.connection_secrets WHERE connection_id = $1",
        &[&connection],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn owner_saves_a_secret_that_is_stored_encrypted_and_never_returned() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let conn = create_connection(&mut db, &t, "resend").await;
    let (token, secret) = fresh_secret();

    let rows = save_secret(&mut db, &t, "owner", conn, &secret)
        .await
        .expect("the owner saves credentials");
    let returned = rows[0].to_string();
    assert!(
        !returned.contains(&token),
        "the secret came back: {returned}"
    );
    assert_eq!(rows[0]["status"], "active");
    assert_eq!(rows[0]["test_status"], "pending");
    assert!(rows[0]["credentials_updated_at"].is_string());

    let (key_id, ciphertext) = stored(&db, conn).await.expect("a stored secret");
    let active: String = db
        .query_one("SELECT flowtrack.active_key_id()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(key_id, active, "new secrets use the active key");
    assert_eq!(ciphertext[0], 1, "format version byte");
    let plaintext_len: i32 = db
        .query_one("SELECT octet_length($1::jsonb::text)", &[&secret])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        ciphertext.len(),
        1 + 12 + plaintext_len as usize + 16,
        "version, nonce, ciphertext and tag"
    );
    assert!(!contains(&ciphertext, token.as_bytes()));
    assert_eq!(worker_reads(&mut db, conn).await.unwrap(), secret);

    // An admin replaces them; the worker sees the new ones.
    let (_, replacement) = fresh_secret();
    save_secret(&mut db, &t, "admin", conn, &replacement)
        .await
        .expect("admins manage credentials too");
    assert_eq!(worker_reads(&mut db, conn).await.unwrap(), replacement);
    let (_, again) = stored(&db, conn).await.unwrap();
    assert_ne!(again, ciphertext);
}

#[tokio::test]
async fn members_and_viewers_cannot_manage_credentials() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let conn = create_connection(&mut db, &t, "slack").await;
    let (_, secret) = fresh_secret();

    let err = save_secret(&mut db, &t, "member", conn, &secret)
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "42501"), "{err}");
    assert_eq!(
        err.message,
        "workspace_role: only owners and admins manage connection credentials"
    );
    assert!(err.hint.is_some());
    let err = save_secret(&mut db, &t, "viewer", conn, &secret)
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "42501"), "{err}");
    assert!(stored(&db, conn).await.is_none(), "nothing was stored");

    // Members see connections (to use them in workflows) but cannot create one.
    let seen = pgrst(
        &mut db,
        &Request::with_claims(t.claims("member")).path("/connections"),
        "SELECT id, name FROM api.connections WHERE id = $1",
        &[&conn],
    )
    .await
    .unwrap();
    assert_eq!(seen.len(), 1);
    let err = pgrst(
        &mut db,
        &post(&t, "member", "/connections"),
        "INSERT INTO api.connections (integration_id, name) VALUES ('gmail', 'mine') RETURNING id",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "42501"), "{err}");
}

#[tokio::test]
async fn other_tenants_neither_see_nor_write_a_connection() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let other = fixtures::tenant(&db, "starter").await;
    let conn = create_connection(&mut db, &t, "gmail").await;
    let (token, secret) = fresh_secret();
    save_secret(&mut db, &t, "owner", conn, &secret)
        .await
        .unwrap();

    let seen = pgrst(
        &mut db,
        &Request::with_claims(other.claims("owner")).path("/connections"),
        "SELECT * FROM api.connections WHERE id = $1",
        &[&conn],
    )
    .await
    .unwrap();
    assert!(seen.is_empty(), "{seen:?}");

    let (_, theirs) = fresh_secret();
    let err = save_secret(&mut db, &other, "owner", conn, &theirs)
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (404, "PT404"), "{err}");
    assert!(err.message.starts_with("connection_id: no connection"));

    let renamed = pgrst(
        &mut db,
        &Request::with_claims(other.claims("owner")).method("PATCH"),
        "UPDATE api.connections SET name = 'pwned' WHERE id = $1 RETURNING id",
        &[&conn],
    )
    .await
    .unwrap();
    assert!(renamed.is_empty());
    assert_eq!(
        worker_reads(&mut db, conn).await.unwrap()["api_key"],
        token.as_str(),
        "the owner's credentials are untouched"
    );

    // Without a token the table is closed.
    let err = pgrst(
        &mut db,
        &Request::anon().path("/connections"),
        "SELECT * FROM api.connections",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (401, "42501"), "{err}");
}

#[tokio::test]
async fn only_the_worker_can_decrypt() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let conn = create_connection(&mut db, &t, "resend").await;
    let (_, secret) = fresh_secret();
    save_secret(&mut db, &t, "owner", conn, &secret)
        .await
        .unwrap();
    let (key_id, ciphertext) = stored(&db, conn).await.unwrap();
    assert_eq!(worker_reads(&mut db, conn).await.unwrap(), secret);

    let owner = Request::with_claims(t.claims("owner")).method("POST");
    let attempts: [(&str, &[&(dyn tokio_postgres::types::ToSql + Sync)]); 4] = [
        ("SELECT * FROM internal.job_connection($1, 1)", &[&conn]),
        (
            "SELECT key_id, ciphertext FROM internal.connection_secrets",
            &[],
        ),
        (
            "SELECT flowtrack.decrypt_secret($1, $2, 'connection:' || $3::uuid::text)",
            &[&key_id, &ciphertext, &conn],
        ),
        ("SELECT * FROM flowtrack.encrypt_secret('x', 'y')", &[]),
    ];
    for (sql, params) in attempts {
        let err = pgrst(&mut db, &owner, sql, params).await.unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (403, "42501"),
            "{sql}: {err}"
        );
        let err = pgrst(&mut db, &Request::anon().method("POST"), sql, params)
            .await
            .unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (401, "42501"),
            "{sql}: {err}"
        );
    }

    // The worker decrypts one connection at a time, never the table or the key.
    for sql in [
        "SELECT count(*) FROM internal.connection_secrets",
        "SELECT flowtrack.decrypt_secret('k', '\\x00', 'a')",
    ] {
        let tx = db.transaction().await.unwrap();
        tx.batch_execute("SET LOCAL ROLE flowtrack_worker")
            .await
            .unwrap();
        let err = tx.query_one(sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err:?}");
    }
}

#[tokio::test]
async fn bad_input_names_the_field_and_hints() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let conn = create_connection(&mut db, &t, "resend").await;
    for bad in [json!([1, 2]), json!({}), json!("sk_live_x")] {
        let err = save_secret(&mut db, &t, "owner", conn, &bad)
            .await
            .unwrap_err();
        assert_eq!((err.status, err.code.as_str()), (400, "22023"), "{err}");
        assert_eq!(err.message, "secret: must be a non-empty JSON object");
        assert!(err.hint.as_deref().unwrap().contains("api_key"));
    }
    let huge = json!({"blob": "x".repeat(70_000)});
    let err = save_secret(&mut db, &t, "owner", conn, &huge)
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (413, "54000"), "{err}");
    assert!(err.message.starts_with("secret:"));

    let (_, secret) = fresh_secret();
    let err = save_secret(&mut db, &t, "owner", Uuid::new_v4(), &secret)
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (404, "PT404"), "{err}");

    let err = pgrst(
        &mut db,
        &post(&t, "owner", "/connections"),
        "INSERT INTO api.connections (integration_id, name) VALUES ('myspace', 'old times') RETURNING id",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (409, "23503"), "{err}");
    assert_eq!(err.message, "integration_id: no integration \"myspace\"");
    assert!(err.hint.is_some());

    // The worker is told precisely why it gets nothing.
    let bare = create_connection(&mut db, &t, "resend").await;
    let err = worker_reads(&mut db, bare).await.unwrap_err();
    assert_eq!(sqlstate(&err), "PT404", "{err:?}");
}

#[tokio::test]
async fn disabling_blocks_and_soft_deleting_destroys_credentials() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let conn = create_connection(&mut db, &t, "calendly").await;
    let (_, secret) = fresh_secret();
    save_secret(&mut db, &t, "owner", conn, &secret)
        .await
        .unwrap();

    let patch = Request::with_claims(t.claims("admin")).method("PATCH");
    pgrst(
        &mut db,
        &patch,
        "UPDATE api.connections SET status = 'disabled' WHERE id = $1 RETURNING id",
        &[&conn],
    )
    .await
    .unwrap();
    let err = worker_reads(&mut db, conn).await.unwrap_err();
    assert_eq!(sqlstate(&err), "PT409", "{err:?}");
    // Saving new credentials keeps a disabled connection disabled.
    let rows = save_secret(&mut db, &t, "owner", conn, &secret)
        .await
        .unwrap();
    assert_eq!(rows[0]["status"], "disabled");

    let rows = pgrst(
        &mut db,
        &patch,
        "UPDATE api.connections SET deleted_at = now() WHERE id = $1 RETURNING credentials_updated_at",
        &[&conn],
    )
    .await
    .unwrap();
    assert!(rows[0]["credentials_updated_at"].is_null());
    assert!(
        stored(&db, conn).await.is_none(),
        "soft delete destroys the secret"
    );
    let err = worker_reads(&mut db, conn).await.unwrap_err();
    assert_eq!(sqlstate(&err), "PT404", "{err:?}");
}

/// A key file made by this test, removed when the test ends.
struct TempKeyFile(PathBuf);

impl Drop for TempKeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn server_key_file(db: &Client) -> PathBuf {
    let path: String = db
        .query_one("SELECT current_setting('flowtrack.key_file')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!path.is_empty(), "./dev sets flowtrack.key_file");
    PathBuf::from(path)
}

/// The server's key file with a new key `id` on top, written where the
/// server can read it (owned like the original, mode 0600).
fn key_file_with_new_key(server_file: &Path, id: &str) -> TempKeyFile {
    let original = std::fs::read_to_string(server_file).unwrap();
    let meta = std::fs::metadata(server_file).unwrap();
    // Two v4 UUIDs: 244 random bits, plenty for a key that lives one test.
    let mut key = Uuid::new_v4().into_bytes().to_vec();
    key.extend_from_slice(Uuid::new_v4().as_bytes());
    use base64::Engine;
    let line = format!(
        "{id}={}\n",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    let path = std::env::temp_dir().join(format!("flowtrack-rotate-{}.keys", Uuid::new_v4()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    f.write_all(format!("{line}{original}").as_bytes()).unwrap();
    std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid())).unwrap();
    TempKeyFile(path)
}

#[tokio::test]
async fn rotation_re_encrypts_under_the_new_key_and_keeps_the_plaintext() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let a = create_connection(&mut db, &t, "gmail").await;
    let b = create_connection(&mut db, &t, "slack").await;
    let (_, secret_a) = fresh_secret();
    let (_, secret_b) = fresh_secret();
    save_secret(&mut db, &t, "owner", a, &secret_a)
        .await
        .unwrap();
    save_secret(&mut db, &t, "owner", b, &secret_b)
        .await
        .unwrap();
    let (old_key, old_a) = stored(&db, a).await.unwrap();

    // A new key is rolled in at the top of (this session's copy of) the key
    // file. Only this tenant's rows move, so parallel tests keep theirs.
    let new_key = format!("rot-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let file = key_file_with_new_key(&server_key_file(&db).await, &new_key);
    db.execute(
        "SELECT set_config('flowtrack.key_file', $1, false)",
        &[&file.0.to_str().unwrap()],
    )
    .await
    .unwrap();
    let rotate = "SELECT internal.rotate_secrets(NULL, $1)";
    let n: i64 = db
        .query_one(rotate, &[&t.workspace_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "both connections re-encrypted");
    let n: i64 = db
        .query_one(rotate, &[&t.workspace_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing is left under an older key");
    let (key_a, new_a) = stored(&db, a).await.unwrap();
    assert_eq!(key_a, new_key);
    assert_ne!(new_a, old_a);
    assert_eq!(worker_reads(&mut db, a).await.unwrap(), secret_a);
    assert_eq!(worker_reads(&mut db, b).await.unwrap(), secret_b);

    // The rows really are under the new key: without it they do not decrypt.
    db.batch_execute("RESET flowtrack.key_file").await.unwrap();
    let err = worker_reads(&mut db, a).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42704", "{err:?}");
    assert!(message(&err).contains(&new_key), "{err:?}");

    // An unknown target is refused before any row changes.
    let err = db
        .query_one("SELECT internal.rotate_secrets('no-such-key')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42704", "{err:?}");

    // Back to the server's key, explicitly named.
    db.execute(
        "SELECT set_config('flowtrack.key_file', $1, false)",
        &[&file.0.to_str().unwrap()],
    )
    .await
    .unwrap();
    let n: i64 = db
        .query_one(
            "SELECT internal.rotate_secrets($1, $2)",
            &[&old_key, &t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    db.batch_execute("RESET flowtrack.key_file").await.unwrap();
    assert_eq!(worker_reads(&mut db, a).await.unwrap(), secret_a);
    assert_eq!(worker_reads(&mut db, b).await.unwrap(), secret_b);

    // Rotation is the operator's: no API role or the worker may run it.
    let err = pgrst(
        &mut db,
        &post(&t, "owner", "/rpc/rotate_secrets"),
        "SELECT internal.rotate_secrets()",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, "42501", "{err}");
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL ROLE flowtrack_worker")
        .await
        .unwrap();
    let err = tx
        .query_one("SELECT internal.rotate_secrets()", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
}

#[tokio::test]
async fn tenants_cannot_repoint_or_read_the_key_file_setting() {
    // A fresh session: the library is preloaded (the wake-ups' shared
    // memory), so the setting is the real SUSET one from the first statement.
    let db = connect().await;
    let server_file = server_key_file(&db).await;
    let db = connect().await;
    db.batch_execute("SET ROLE authenticated").await.unwrap();
    let err = db
        .batch_execute("SET flowtrack.key_file = '/tmp/attacker.keys'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    let err = db
        .query_one("SELECT current_setting('flowtrack.key_file')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "42501",
        "hidden from non-superusers: {err:?}"
    );
    let err = db
        .batch_execute("ALTER ROLE authenticated SET flowtrack.key_file = '/tmp/attacker.keys'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    db.batch_execute("RESET ROLE").await.unwrap();
    assert_eq!(server_key_file(&db).await, server_file);
}

#[tokio::test]
async fn pg_dump_holds_neither_plaintext_secrets_nor_keys() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let conn = create_connection(&mut db, &t, "resend").await;
    let (token, secret) = fresh_secret();
    save_secret(&mut db, &t, "owner", conn, &secret)
        .await
        .unwrap();
    let key_file = std::fs::read_to_string(server_key_file(&db).await).unwrap();

    let url = std::env::var("FLOWTRACK_TEST_DATABASE_URL").unwrap();
    let pg_dump = std::env::var("FLOWTRACK_TEST_PG_BIN")
        .map(|bin| PathBuf::from(bin).join("pg_dump"))
        .unwrap_or_else(|_| PathBuf::from("pg_dump"));
    let out = std::process::Command::new(&pg_dump)
        .arg("--dbname")
        .arg(&url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", pg_dump.display()));
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = out.stdout;

    // The dump is complete: it has the connection and its ciphertext row.
    let dump_text = String::from_utf8_lossy(&dump);
    let row = dump_text
        .lines()
        .skip_while(|l| !l.starts_with("COPY internal.connection_secrets "))
        .take_while(|l| *l != "\\.")
        .find(|l| l.starts_with(&format!("{conn}\t{}\t", t.workspace_id)))
        .expect("the connection's row of internal.connection_secrets is in the dump");
    assert!(row.contains("\t\\\\x01"), "a version-1 ciphertext: {row}");

    assert!(
        !contains(&dump, token.as_bytes()),
        "plaintext secret in pg_dump"
    );
    assert!(!contains(&dump, hex(token.as_bytes()).as_bytes()));
    let mut keys = 0;
    for line in key_file.lines().filter(|l| !l.starts_with('#')) {
        if let Some((_, key)) = line.split_once('=') {
            keys += 1;
            assert!(
                !contains(&dump, key.trim().as_bytes()),
                "key material in pg_dump"
            );
        }
    }
    assert!(keys >= 1);
}

#[tokio::test]
async fn catalog_is_public_and_consistent() {
    let mut db = connect().await;
    let rows = pgrst(
        &mut db,
        &Request::anon().path("/integrations"),
        "SELECT i.id, i.auth_type,
                (SELECT count(*) FROM api.integration_triggers tr WHERE tr.integration_id = i.id) AS triggers,
                (SELECT count(*) FROM api.integration_actions a WHERE a.integration_id = i.id) AS actions
           FROM api.integrations i ORDER BY i.id",
        &[],
    )
    .await
    .unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    for id in [
        "calendly", "gmail", "http", "outlook", "resend", "slack", "webhook",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(rows
        .iter()
        .all(|r| r["triggers"].as_i64().unwrap() + r["actions"].as_i64().unwrap() > 0));
    let resend = rows.iter().find(|r| r["id"] == "resend").unwrap();
    assert_eq!(resend["auth_type"], "api_key");

    // Every schema is an object schema; polling triggers say how often.
    let bad: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM api.integration_triggers
                      WHERE config_schema->>'type' <> 'object' OR output_schema->>'type' <> 'object'
                         OR (type = 'polling') <> (polling_interval IS NOT NULL))
                  + (SELECT count(*) FROM api.integration_actions
                      WHERE input_schema->>'type' <> 'object' OR output_schema->>'type' <> 'object')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bad, 0);

    // Clients cannot write the catalog.
    let t = fixtures::tenant(&db, "starter").await;
    let err = pgrst(
        &mut db,
        &post(&t, "owner", "/integrations"),
        "INSERT INTO api.integrations (id, name, category, auth_type) VALUES ('evil', 'Evil', 'ai', 'none') RETURNING id",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "42501"), "{err}");
}

#[tokio::test]
async fn http_round_trip_saves_credentials_through_the_api_server() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let base = flowtrack_tests::api_url();

    // The catalog is readable without a token.
    let catalog: Vec<Value> = ureq::get(&format!("{base}/integrations?select=id&order=id"))
        .call()
        .expect("GET /integrations")
        .into_json()
        .unwrap();
    assert!(catalog.iter().any(|r| r["id"] == "gmail"), "{catalog:?}");

    let token = flowtrack_tests::jwt::sign(&t.claims("owner"), &flowtrack_tests::jwt::secret());
    let auth = format!("Bearer {token}");
    let created: Vec<Value> = ureq::post(&format!("{base}/connections"))
        .set("Authorization", &auth)
        .set("Prefer", "return=representation")
        .send_json(json!({"integration_id": "resend", "name": "Resend over HTTP"}))
        .expect("POST /connections")
        .into_json()
        .unwrap();
    let conn: Uuid = created[0]["id"].as_str().unwrap().parse().unwrap();

    let (api_key, secret) = fresh_secret();
    let resp = ureq::post(&format!("{base}/rpc/save_connection_secret"))
        .set("Authorization", &auth)
        .send_json(json!({"connection_id": conn, "secret": secret}))
        .expect("POST /rpc/save_connection_secret");
    let body = resp.into_string().unwrap();
    assert!(
        !body.contains(&api_key),
        "the secret came back over HTTP: {body}"
    );
    assert!(body.contains(&conn.to_string()), "{body}");
    assert!(stored(&db, conn).await.is_some());

    // A member is refused with the 42501 error body. PostgREST answers 403
    // (pinned by the harness tests above); postrust 3.1.0, the local stand-in,
    // answers 401 for every 42501, so the status is checked loosely here.
    let member = flowtrack_tests::jwt::sign(&t.claims("member"), &flowtrack_tests::jwt::secret());
    match ureq::post(&format!("{base}/rpc/save_connection_secret"))
        .set("Authorization", &format!("Bearer {member}"))
        .send_json(json!({"connection_id": conn, "secret": secret}))
    {
        Err(ureq::Error::Status(status @ (401 | 403), r)) => {
            let body: Value = r.into_json().unwrap();
            assert_eq!(body["code"], "42501", "HTTP {status}: {body}");
            assert_eq!(
                body["message"],
                "workspace_role: only owners and admins manage connection credentials"
            );
            assert!(body["hint"].is_string(), "{body}");
        }
        other => panic!("expected HTTP 403 (or postrust's 401) for a member, got {other:?}"),
    }
}
