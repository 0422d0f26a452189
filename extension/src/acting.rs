//! The sealed tenant override: how trusted SECURITY DEFINER code acts for a
//! workspace it resolved itself (a public form by slug, the worker reporting
//! a job, a trigger counting a tenant's rows).
//!
//! The override travels in the `flowtrack.workspace_id` setting, because a
//! setting can be scoped to one function call (`SET flowtrack.workspace_id =
//! ''` in the function's header restores it on exit, also on error). But any
//! role can `set_config` a user-settable parameter, and an unsealed value let
//! a SQL-level caller act as any workspace (issue 9). So the value is sealed:
//! `<workspace uuid>/<role>/<tag>`, where the tag is an HMAC-SHA256 under a
//! random key that exists only in this backend's memory. Only
//! `flowtrack.act_for`, executable by the owner role alone, can produce a
//! valid tag; the readers ignore any value whose tag does not verify.
//!
//! The key never leaves the backend and dies with it, so a sealed value is
//! worthless in another session. Within a session, the header's reset keeps
//! a sealed value from outliving the call that made it (a catalog lint in
//! tests/tests/privileges.rs checks every caller of act_for has it).

use std::cell::OnceCell;

use hmac::{Hmac, Mac};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use sha2::Sha256;

use crate::error::raise;
use crate::guc;
use crate::tenancy::{self, ROLES};

/// The setting that carries the sealed override.
pub const SETTING: &str = "flowtrack.workspace_id";

thread_local! {
    /// This backend's sealing key, drawn on first use.
    static KEY: OnceCell<[u8; 32]> = const { OnceCell::new() };
}

/// This backend's sealing key.
fn key() -> [u8; 32] {
    KEY.with(|cell| {
        *cell.get_or_init(|| {
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).unwrap_or_else(|e| {
                raise(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    "act_for: no randomness for the sealing key",
                    Some(e.to_string()),
                    "The operating system's random source is unavailable.",
                )
            });
            k
        })
    })
}

/// The tag of `workspace/role` under `key`: the first 16 bytes of the
/// HMAC-SHA256, in hex.
fn tag(key: &[u8; 32], workspace: &str, role: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(workspace.as_bytes());
    mac.update(b"/");
    mac.update(role.as_bytes());
    let bytes = mac.finalize().into_bytes();
    bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// `ws/role/tag` for a workspace id and a role.
fn seal(key: &[u8; 32], workspace: &str, role: &str) -> String {
    format!("{workspace}/{role}/{}", tag(key, workspace, role))
}

/// The workspace and role of a sealed value, when its tag verifies.
fn open(key: &[u8; 32], value: &str) -> Option<(String, String)> {
    let mut parts = value.splitn(3, '/');
    let (ws, role, got) = (parts.next()?, parts.next()?, parts.next()?);
    if !ROLES.contains(&role) {
        return None;
    }
    let want = tag(key, ws, role);
    // Constant-time comparison: the tag is a secret-derived value.
    let same = want.len() == got.len()
        && want
            .bytes()
            .zip(got.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same.then(|| (ws.to_string(), role.to_string()))
}

/// The override in force, when one is set and genuine. A forged or stale
/// value counts as no override at all (the caller then acts on its claims).
pub fn current() -> Option<(String, String)> {
    // Read the setting first: a session that never acts for a workspace
    // never draws a key.
    let value = guc::get(SETTING)?;
    open(&key(), &value)
}

/// Act for workspace `ws` with `role` until the calling function returns.
/// Only for SECURITY DEFINER functions whose header resets the setting
/// (`SET flowtrack.workspace_id = ''`): without it the override would last
/// until the end of the transaction.
#[pg_extern(volatile, parallel_unsafe)]
fn act_for(ws: pgrx::Uuid, role: &str) {
    tenancy::check_roles("role", &[role]);
    let ws = ws.to_string();
    guc::set_local(SETTING, &seal(&key(), &ws, role));
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.act_for(uuid, text) IS
  'Trusted code acts for a workspace with a role until the calling function returns (its header must SET flowtrack.workspace_id = ''''). The value is sealed with a per-backend key: set by hand it is ignored. Executable by flowtrack_owner only.';
"#,
    name = "comments_acting",
    requires = [act_for]
);

// Pure tests: they pass a key, so nothing here reaches Postgres (the test
// binary cannot link what raise() calls).
#[cfg(test)]
mod unit {
    use super::{open, seal};

    const KEY: [u8; 32] = [7; 32];
    const WS: &str = "7a1c5a8e-0d1b-4a3e-9a59-1d2b3c4d5e6f";

    #[test]
    fn a_sealed_value_opens_to_what_was_sealed() {
        assert_eq!(
            open(&KEY, &seal(&KEY, WS, "member")),
            Some((WS.to_string(), "member".to_string()))
        );
    }

    #[test]
    fn tampering_with_any_part_breaks_the_seal() {
        let sealed = seal(&KEY, WS, "viewer");
        let tag = sealed.rsplit('/').next().unwrap();
        // Another workspace, a higher role, a bare id, a guessed tag, an
        // unknown role, another backend's key.
        for forged in [
            format!("00000000-0000-0000-0000-000000000002/viewer/{tag}"),
            format!("{WS}/owner/{tag}"),
            WS.to_string(),
            format!("{WS}/viewer/{}", "0".repeat(32)),
            format!("{WS}/root/{tag}"),
        ] {
            assert_eq!(open(&KEY, &forged), None, "{forged}");
        }
        assert_eq!(open(&[8; 32], &sealed), None);
    }
}
