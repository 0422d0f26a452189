//! Tenant isolation helpers.
//!
//! Every tenant table carries a `workspace_id`, and row-level security compares
//! it with the caller's workspace. The caller's workspace and role come from
//! the verified JWT claims PostgREST puts in `request.jwt.claims`
//! (`workspace_id`, `workspace_role`, `sub`). Trusted SECURITY DEFINER entry
//! points that act for a tenant they resolved themselves (a public form by
//! slug, the worker reporting a job) instead call `flowtrack.act_for`, whose
//! sealed override wins over the claims for the duration of the function
//! (acting.rs); an override set by hand is ignored.
//!
//! Policies call the readers as `(SELECT flowtrack.current_workspace_id())` so
//! the planner runs them once per statement as an InitPlan, not once per row.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde_json::Value;

use crate::acting;
use crate::error::raise;
use crate::guc;
use crate::key_scope;

/// Workspace roles, from most to least privileged.
pub const ROLES: [&str; 4] = ["owner", "admin", "member", "viewer"];

/// The verified JWT claims as a JSON object, when they are one.
pub(crate) fn claims() -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_str::<Value>(&guc::get("request.jwt.claims")?) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn claim_text(name: &str) -> Option<String> {
    match claims()?.remove(name)? {
        Value::String(s) => Some(s),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn parse_uuid(s: &str) -> Option<pgrx::Uuid> {
    uuid::Uuid::parse_str(s)
        .ok()
        .map(|u| pgrx::Uuid::from_bytes(*u.as_bytes()))
}

/// One claim from `request.jwt.claims` as text (strings unquoted, other JSON
/// values in their JSON spelling); NULL when absent or the claims are not JSON.
#[pg_extern(stable, parallel_safe)]
fn jwt_claim(name: &str) -> Option<String> {
    claim_text(name)
}

/// The caller's user id: the `sub` claim when it is a UUID, otherwise NULL.
#[pg_extern(stable, parallel_safe)]
fn current_user_id() -> Option<pgrx::Uuid> {
    parse_uuid(&claim_text("sub")?)
}

/// The workspace the caller acts in, or NULL (which matches no row).
#[pg_extern(stable, parallel_safe)]
fn current_workspace_id() -> Option<pgrx::Uuid> {
    match acting::current() {
        Some((ws, _)) => parse_uuid(&ws),
        None => parse_uuid(&claim_text("workspace_id")?),
    }
}

/// The caller's role in that workspace (owner, admin, member or viewer), or
/// NULL when absent or not one of those.
#[pg_extern(stable, parallel_safe)]
fn current_workspace_role() -> Option<String> {
    let raw = match acting::current() {
        Some((_, role)) => role,
        None => claim_text("workspace_role")?,
    };
    ROLES.contains(&raw.as_str()).then_some(raw)
}

/// Refuses (22023, naming `field`) any role that is not a workspace role.
pub(crate) fn check_roles(field: &str, roles: &[impl AsRef<str>]) {
    if let Some(bad) = roles.iter().map(AsRef::as_ref).find(|r| !ROLES.contains(r)) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{field}: unknown workspace role \"{bad}\""),
            None,
            "Roles are owner, admin, member and viewer.",
        );
    }
}

fn sql_array(roles: &[String]) -> String {
    let quoted: Vec<String> = roles.iter().map(|r| format!("'{r}'")).collect();
    format!("ARRAY[{}]::text[]", quoted.join(","))
}

/// The standard policy set for a tenant table, as SQL statements.
fn policy_statements(
    table: &str,
    column: &str,
    read_roles: &[String],
    write_roles: &[String],
) -> Vec<String> {
    let col = pgrx::spi::quote_identifier(column);
    let tenant = format!("{col} = (SELECT flowtrack.current_workspace_id())");
    let role = "(SELECT flowtrack.current_workspace_role())";
    let can_read = format!("{tenant} AND {role} = ANY ({})", sql_array(read_roles));
    let can_write = format!("{tenant} AND {role} = ANY ({})", sql_array(write_roles));
    let mut sql = vec![
        format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"),
        format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"),
    ];
    for name in [
        "tenant_select",
        "tenant_insert",
        "tenant_update",
        "tenant_delete",
    ] {
        sql.push(format!("DROP POLICY IF EXISTS {name} ON {table}"));
    }
    sql.push(format!(
        "CREATE POLICY tenant_select ON {table} FOR SELECT USING ({can_read})"
    ));
    sql.push(format!(
        "CREATE POLICY tenant_insert ON {table} FOR INSERT WITH CHECK ({can_write})"
    ));
    sql.push(format!(
        "CREATE POLICY tenant_update ON {table} FOR UPDATE USING ({can_write}) WITH CHECK ({can_write})"
    ));
    sql.push(format!(
        "CREATE POLICY tenant_delete ON {table} FOR DELETE USING ({can_write})"
    ));
    sql
}

/// A table's name as SQL (`api.leads`), or an error naming the oid.
pub(crate) fn table_name(tbl: pg_sys::Oid) -> String {
    Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[tbl.into()])
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("tbl: no table with oid {}", u32::from(tbl)),
                None,
                "Pass the table as a regclass, e.g. 'api.leads'::regclass.",
            )
        })
}

/// Run policy DDL for `table`, turning a failure into an error that names
/// the statement.
pub(crate) fn run_all(table: &str, statements: &[String]) {
    for stmt in statements {
        if let Err(e) = Spi::run(stmt) {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("policies on {table} failed"),
                Some(format!("{stmt}: {e}")),
                "",
            );
        }
    }
}

/// Install the standard tenant policies on `tbl`: rows are visible to
/// `read_roles` and writable by `write_roles` of the row's workspace, and
/// nobody else, the table owner included (FORCE ROW LEVEL SECURITY). An API
/// key reaches the table only when its scopes cover `key_scope`, the table's
/// resource in auth.api_key_scopes (NULL: no key at all; key_scope.rs).
/// Idempotent: re-running replaces the policies.
#[pg_extern(volatile)]
fn enable_tenant_isolation(
    tbl: pg_sys::Oid,
    write_roles: default!(Vec<String>, "ARRAY['owner','admin','member']"),
    read_roles: default!(Vec<String>, "ARRAY['owner','admin','member','viewer']"),
    tenant_column: default!(&str, "'workspace_id'"),
    key_scope: default!(Option<&str>, "NULL"),
) {
    check_roles("write_roles", &write_roles);
    check_roles("read_roles", &read_roles);
    let table = table_name(tbl);
    let has_column = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $2 AND NOT attisdropped)",
        &[tbl.into(), tenant_column.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !has_column {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!("tenant_column: table {table} has no column \"{tenant_column}\""),
            None,
            "Tenant tables carry the owning workspace in a workspace_id column.",
        );
    }
    let mut statements = policy_statements(&table, tenant_column, &read_roles, &write_roles);
    statements.extend(key_scope::policy_statements(&table, key_scope));
    run_all(&table, &statements);
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.jwt_claim(text) IS
  'One claim of the verified JWT (request.jwt.claims) as text; NULL when absent.';
COMMENT ON FUNCTION flowtrack.current_user_id() IS
  'The caller''s user id (JWT sub claim) when it is a UUID, else NULL.';
COMMENT ON FUNCTION flowtrack.current_workspace_id() IS
  'Workspace the caller acts in: the sealed override of flowtrack.act_for when a trusted entry point set one, else the JWT workspace_id claim. Call as (SELECT ...) in policies.';
COMMENT ON FUNCTION flowtrack.current_workspace_role() IS
  'Caller''s workspace role (owner/admin/member/viewer) from the sealed override of flowtrack.act_for, else the JWT workspace_role claim; NULL if absent or unknown.';
COMMENT ON FUNCTION flowtrack.enable_tenant_isolation(oid, text[], text[], text, text) IS
  'Installs FORCE RLS, the four standard tenant policies and the four restrictive API-key scope policies (key_scope: the table''s resource; NULL closes it to keys) on a table (pass it as ''schema.table''::regclass). Idempotent.';
"#,
    name = "comments_tenancy",
    requires = [
        jwt_claim,
        current_user_id,
        current_workspace_id,
        current_workspace_role,
        enable_tenant_isolation
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn set_claims(json: &str) {
        Spi::run(&format!(
            "SELECT set_config('request.jwt.claims', '{json}', true)"
        ))
        .unwrap();
    }

    #[pg_test]
    fn claims_are_read_from_request_jwt_claims() {
        let ws = "7a1c5a8e-0d1b-4a3e-9a59-1d2b3c4d5e6f";
        set_claims(&format!(
            r#"{{"sub":"{ws}","workspace_id":"{ws}","workspace_role":"viewer","n":3}}"#
        ));
        let got = Spi::get_one::<String>("SELECT flowtrack.current_workspace_id()::text").unwrap();
        assert_eq!(got.as_deref(), Some(ws));
        let role = Spi::get_one::<String>("SELECT flowtrack.current_workspace_role()").unwrap();
        assert_eq!(role.as_deref(), Some("viewer"));
        let n = Spi::get_one::<String>("SELECT flowtrack.jwt_claim('n')").unwrap();
        assert_eq!(n.as_deref(), Some("3"));
    }

    #[pg_test]
    fn forged_or_garbage_claims_yield_null() {
        set_claims(r#"{"workspace_id":"not-a-uuid","workspace_role":"superadmin"}"#);
        assert_eq!(
            Spi::get_one::<pgrx::Uuid>("SELECT flowtrack.current_workspace_id()").unwrap(),
            None
        );
        assert_eq!(
            Spi::get_one::<String>("SELECT flowtrack.current_workspace_role()").unwrap(),
            None
        );
        set_claims("garbage");
        assert_eq!(
            Spi::get_one::<pgrx::Uuid>("SELECT flowtrack.current_user_id()").unwrap(),
            None
        );
    }

    #[pg_test]
    fn trusted_override_wins_over_claims() {
        set_claims(
            r#"{"workspace_id":"00000000-0000-0000-0000-000000000001","workspace_role":"viewer"}"#,
        );
        Spi::run("SELECT flowtrack.act_for('00000000-0000-0000-0000-000000000002', 'member')")
            .unwrap();
        let got = Spi::get_one::<String>("SELECT flowtrack.current_workspace_id()::text").unwrap();
        assert_eq!(got.as_deref(), Some("00000000-0000-0000-0000-000000000002"));
        let role = Spi::get_one::<String>("SELECT flowtrack.current_workspace_role()").unwrap();
        assert_eq!(role.as_deref(), Some("member"));
    }

    /// Issue 9: any role could set the override by hand and act as another
    /// tenant. A hand-set value, bare or copied from a sealed one with
    /// another workspace or role, is ignored: the claims decide.
    #[pg_test]
    fn a_hand_set_override_is_ignored() {
        set_claims(
            r#"{"workspace_id":"00000000-0000-0000-0000-000000000001","workspace_role":"viewer"}"#,
        );
        Spi::run("SELECT flowtrack.act_for('00000000-0000-0000-0000-000000000003', 'viewer')")
            .unwrap();
        let sealed =
            Spi::get_one::<String>("SELECT current_setting('flowtrack.workspace_id')").unwrap();
        let tag = sealed.unwrap().rsplit('/').next().unwrap().to_string();
        for forged in [
            "00000000-0000-0000-0000-000000000002".to_string(),
            format!("00000000-0000-0000-0000-000000000002/viewer/{tag}"),
            format!("00000000-0000-0000-0000-000000000003/owner/{tag}"),
        ] {
            Spi::run(&format!(
                "SELECT set_config('flowtrack.workspace_id', '{forged}', true)"
            ))
            .unwrap();
            let got =
                Spi::get_one::<String>("SELECT flowtrack.current_workspace_id()::text").unwrap();
            assert_eq!(got.as_deref(), Some("00000000-0000-0000-0000-000000000001"));
            let role = Spi::get_one::<String>("SELECT flowtrack.current_workspace_role()").unwrap();
            assert_eq!(role.as_deref(), Some("viewer"));
        }
    }

    #[pg_test(error = "role: unknown workspace role \"root\"")]
    fn act_for_refuses_unknown_roles() {
        Spi::run("SELECT flowtrack.act_for(gen_random_uuid(), 'root')").unwrap();
    }

    /// The API-key policies name `authenticated`, which the migrations
    /// create; the extension's own test cluster has no such role.
    fn ensure_api_role() {
        Spi::run(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') \
             THEN CREATE ROLE authenticated NOLOGIN; END IF; END $$",
        )
        .unwrap();
    }

    #[pg_test]
    fn enable_tenant_isolation_installs_tenant_and_key_scope_policies() {
        ensure_api_role();
        Spi::run("CREATE TABLE t_iso (id int, workspace_id uuid)").unwrap();
        Spi::run("SELECT flowtrack.enable_tenant_isolation('t_iso'::regclass)").unwrap();
        Spi::run(
            "SELECT flowtrack.enable_tenant_isolation('t_iso'::regclass, ARRAY['owner'], key_scope => 'leads')",
        )
        .unwrap();
        let n = Spi::get_one::<i64>("SELECT count(*) FROM pg_policies WHERE tablename = 't_iso'")
            .unwrap();
        assert_eq!(n, Some(8));
        let restrictive = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_policies WHERE tablename = 't_iso' AND permissive = 'RESTRICTIVE'
                AND roles = '{authenticated}' AND coalesce(qual, with_check) LIKE '%key_scope_allows(''leads''%'",
        )
        .unwrap();
        assert_eq!(restrictive, Some(4));
        let forced = Spi::get_one::<bool>(
            "SELECT relforcerowsecurity FROM pg_class WHERE relname = 't_iso'",
        )
        .unwrap();
        assert_eq!(forced, Some(true));
    }

    #[pg_test]
    fn key_scope_allows_reads_the_key_claims() {
        set_claims(r#"{"sub":"7a1c5a8e-0d1b-4a3e-9a59-1d2b3c4d5e6f"}"#);
        let user =
            Spi::get_one::<bool>("SELECT flowtrack.key_scope_allows(NULL, 'write')").unwrap();
        assert_eq!(
            user,
            Some(true),
            "a signed-in user is not limited by scopes"
        );
        set_claims(r#"{"api_key_id":"k","scopes":["forms:read"]}"#);
        for (sql, want) in [
            ("SELECT flowtrack.key_scope_allows('forms', 'read')", true),
            ("SELECT flowtrack.key_scope_allows('forms', 'write')", false),
            (
                "SELECT flowtrack.key_scope_allows('workflows', 'read')",
                false,
            ),
            ("SELECT flowtrack.key_scope_allows(NULL, 'read')", false),
        ] {
            assert_eq!(Spi::get_one::<bool>(sql).unwrap(), Some(want), "{sql}");
        }
    }

    #[pg_test(error = "key_scope: \"Leads!\" is not a scope resource name")]
    fn enable_key_scope_rejects_bad_resource_names() {
        ensure_api_role();
        Spi::run("CREATE TABLE t_badscope (workspace_id uuid)").unwrap();
        Spi::run("SELECT flowtrack.enable_key_scope('t_badscope'::regclass, 'Leads!')").unwrap();
    }

    #[pg_test(error = "tenant_column: table t_nocol has no column \"workspace_id\"")]
    fn enable_tenant_isolation_names_missing_column() {
        Spi::run("CREATE TABLE t_nocol (id int)").unwrap();
        Spi::run("SELECT flowtrack.enable_tenant_isolation('t_nocol'::regclass)").unwrap();
    }

    #[pg_test(error = "write_roles: unknown workspace role \"root\"")]
    fn enable_tenant_isolation_rejects_unknown_roles() {
        Spi::run("CREATE TABLE t_roles (workspace_id uuid)").unwrap();
        Spi::run("SELECT flowtrack.enable_tenant_isolation('t_roles'::regclass, ARRAY['root'])")
            .unwrap();
    }
}
