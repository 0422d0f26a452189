//! API-key scopes, enforced where each table is read and written.
//!
//! An API key arrives as claims the pre-request hook made from it
//! (sql/0017_api_keys.sql): `api_key_id` and `scopes`, e.g.
//! `["leads:read", "executions:write"]`. Checking the scopes against the
//! request path alone let embedding cross tables (`GET
//! /leads?select=*,workflow_executions(workflows(*))`, issue 9), so every
//! exposed table also carries four RESTRICTIVE policies for the API role that
//! name the table's scope resource: a key reads the table only with
//! `<resource>:read` or `<resource>:write`, and writes it only with
//! `<resource>:write`. A table with no resource (members, keys, billing,
//! users, ...) is closed to every key. Requests signed in with a user's JWT
//! carry no `api_key_id`, and the policies let them through unchanged.
//!
//! The policies apply to `authenticated` only: SECURITY DEFINER functions run
//! as the owner, so an RPC a key may call (its scope's `rpc_write` list) does
//! its whole job, confined to the tenant by the standard policies.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde_json::{Map, Value};

use crate::error::raise;
use crate::tenancy;

/// The policies' names, in the order they are created.
pub const POLICIES: [&str; 4] = [
    "key_scope_select",
    "key_scope_insert",
    "key_scope_update",
    "key_scope_delete",
];

/// Whether claims allow `access` ("read" or "write") to `resource`.
fn allows(claims: Option<&Map<String, Value>>, resource: Option<&str>, write: bool) -> bool {
    let Some(claims) = claims else {
        return true;
    };
    if matches!(claims.get("api_key_id"), None | Some(Value::Null)) {
        return true;
    }
    let Some(resource) = resource else {
        return false;
    };
    let held = |scope: String| {
        claims
            .get("scopes")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|v| v.as_str() == Some(scope.as_str())))
    };
    // Write includes read: a write returns and filters on what it touches.
    held(format!("{resource}:write")) || (!write && held(format!("{resource}:read")))
}

fn is_write(access: &str) -> bool {
    match access {
        "read" => false,
        "write" => true,
        other => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("access: unknown access \"{other}\""),
            None,
            "Access is read or write.",
        ),
    }
}

/// True for requests signed in as a user; for an API key, true only when its
/// scopes cover `access` to `resource` (NULL: a table no key may reach).
/// Call as `(SELECT ...)` so a policy evaluates it once per statement.
#[pg_extern(stable, parallel_safe)]
fn key_scope_allows(resource: Option<&str>, access: &str) -> bool {
    let write = is_write(access);
    allows(tenancy::claims().as_ref(), resource, write)
}

fn check_resource(resource: Option<&str>) {
    if let Some(r) = resource {
        let ok = r.starts_with(|c: char| c.is_ascii_lowercase())
            && r.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("key_scope: \"{r}\" is not a scope resource name"),
                None,
                "Resources are lowercase names from auth.api_key_scopes, e.g. leads; NULL closes the table to API keys.",
            );
        }
    }
}

/// The four restrictive policies for `table`, as SQL statements.
pub fn policy_statements(table: &str, resource: Option<&str>) -> Vec<String> {
    check_resource(resource);
    let res = resource.map_or_else(|| "NULL".to_string(), |r| format!("'{r}'"));
    let read = format!("(SELECT flowtrack.key_scope_allows({res}, 'read'))");
    let write = format!("(SELECT flowtrack.key_scope_allows({res}, 'write'))");
    let mut sql: Vec<String> = POLICIES
        .iter()
        .map(|name| format!("DROP POLICY IF EXISTS {name} ON {table}"))
        .collect();
    let head = |name: &str, cmd: &str| {
        format!("CREATE POLICY {name} ON {table} AS RESTRICTIVE FOR {cmd} TO authenticated")
    };
    sql.push(format!("{} USING ({read})", head(POLICIES[0], "SELECT")));
    sql.push(format!(
        "{} WITH CHECK ({write})",
        head(POLICIES[1], "INSERT")
    ));
    sql.push(format!(
        "{} USING ({write}) WITH CHECK ({write})",
        head(POLICIES[2], "UPDATE")
    ));
    sql.push(format!("{} USING ({write})", head(POLICIES[3], "DELETE")));
    sql
}

/// Install the API-key scope policies on a table that is not a standard
/// tenant table (those get them from `enable_tenant_isolation`). Idempotent.
#[pg_extern(volatile)]
fn enable_key_scope(tbl: pg_sys::Oid, key_scope: Option<&str>) {
    let table = tenancy::table_name(tbl);
    tenancy::run_all(&table, &policy_statements(&table, key_scope));
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.key_scope_allows(text, text) IS
  'True for user (JWT) requests; for an API key, true when its scopes cover access (read or write; write includes read) to resource. NULL resource: no key. Used by the restrictive key_scope_* policies as (SELECT ...).';
COMMENT ON FUNCTION flowtrack.enable_key_scope(oid, text) IS
  'Installs the four restrictive key_scope_* policies (for authenticated) on a table outside enable_tenant_isolation, e.g. api.users with NULL: no API key reaches it. Idempotent.';
"#,
    name = "comments_key_scope",
    requires = [key_scope_allows, enable_key_scope]
);

#[cfg(test)]
mod unit {
    use super::allows;
    use serde_json::{json, Value};

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn users_pass_keys_need_the_scope() {
        let user = claims(json!({"sub": "u", "workspace_id": "w"}));
        assert!(allows(Some(&user), Some("leads"), true));
        assert!(allows(Some(&user), None, true));
        assert!(allows(None, None, false));
        let key = claims(json!({"api_key_id": "k", "scopes": ["leads:read", "executions:write"]}));
        assert!(allows(Some(&key), Some("leads"), false));
        assert!(!allows(Some(&key), Some("leads"), true));
        assert!(
            allows(Some(&key), Some("executions"), false),
            "write includes read"
        );
        assert!(allows(Some(&key), Some("executions"), true));
        assert!(!allows(Some(&key), Some("workflows"), false));
        assert!(!allows(Some(&key), None, false), "no resource: no key");
        let nullkey = claims(json!({"api_key_id": null}));
        assert!(allows(Some(&nullkey), None, true));
        let garbled = claims(json!({"api_key_id": "k", "scopes": "leads:read"}));
        assert!(!allows(Some(&garbled), Some("leads"), false));
    }
}
