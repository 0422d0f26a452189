//! Reading configuration parameters (GUCs) without a round trip through SPI.
//! PostgREST passes the verified JWT claims as the `request.jwt.claims` GUC,
//! and these readers are on the path of every row-level-security check.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

/// The current value of a GUC, or `None` when it is unset or empty.
pub fn get(name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    // SAFETY: GetConfigOption returns a pointer into GUC storage that stays
    // valid until the next GUC change; we copy it out immediately.
    let ptr = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    if ptr.is_null() {
        return None;
    }
    let value = unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned();
    (!value.is_empty()).then_some(value)
}

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString as OwnedCString;

static WORKSPACE_ID: GucSetting<Option<OwnedCString>> =
    GucSetting::<Option<OwnedCString>>::new(None);
static KEY_FILE: GucSetting<Option<OwnedCString>> = GucSetting::<Option<OwnedCString>>::new(None);
static ACTIVE_KEY_ID: GucSetting<Option<OwnedCString>> =
    GucSetting::<Option<OwnedCString>>::new(None);
static MAX_IMPORT_BYTES: GucSetting<i32> = GucSetting::<i32>::new(2 * 1024 * 1024);
static EXECUTION_LOGS: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `flowtrack.execution_logs`: whether the engine records execution log
/// lines (graph/logs.rs).
pub fn execution_logs() -> bool {
    EXECUTION_LOGS.get()
}

/// `flowtrack.max_import_bytes`: the largest graph import accepted.
pub fn max_import_bytes() -> i32 {
    MAX_IMPORT_BYTES.get()
}

fn non_empty(setting: &GucSetting<Option<OwnedCString>>) -> Option<String> {
    let value = setting.get()?.to_string_lossy().into_owned();
    (!value.is_empty()).then_some(value)
}

/// `flowtrack.key_file`: path of the key file that encrypts secrets at rest.
pub fn key_file() -> Option<String> {
    non_empty(&KEY_FILE)
}

/// `flowtrack.active_key_id`: the key new encryptions use, when not the
/// key file's first.
pub fn active_key_id() -> Option<String> {
    non_empty(&ACTIVE_KEY_ID)
}

/// Set a GUC for the rest of the transaction, as `set_config(name, value,
/// true)` does; a function whose header names the setting restores it on
/// exit.
pub fn set_local(name: &str, value: &str) {
    let (Ok(name), Ok(value)) = (CString::new(name), CString::new(value)) else {
        return;
    };
    // SAFETY: a plain call into the GUC machinery, inside a transaction.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
}

/// Define FlowTrack's own settings. The tenant override is user-settable on
/// purpose: SECURITY DEFINER functions owned by the non-superuser owner role
/// scope it with a `SET flowtrack.workspace_id = ''` clause, which Postgres
/// only allows for defined (not placeholder) user-settable parameters. Being
/// user-settable, its value is sealed (acting.rs): one set by hand is
/// ignored.
///
/// The key settings are the opposite: superuser-only (SUSET), so only
/// postgresql.conf, ALTER SYSTEM or a superuser session can point the
/// database at a key file or pick the active key. A non-superuser cannot SET
/// them, name them in a function's SET clause or ALTER ROLE them, and a
/// placeholder value a non-superuser set before the library loaded is
/// discarded when it loads (Postgres 15 records who set a placeholder).
/// SUPERUSER_ONLY also hides their values from non-superusers' SHOW.
pub fn init() {
    GucRegistry::define_string_guc(
        c"flowtrack.workspace_id",
        c"Workspace and role a trusted FlowTrack entry point is acting for (sealed).",
        c"Written only by flowtrack.act_for inside SECURITY DEFINER functions; a value set by hand does not verify and is ignored.",
        &WORKSPACE_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
    // A cap on work a caller may cause: superuser-only, like the key
    // settings, so a caller cannot raise it with SET before an import.
    GucRegistry::define_int_guc(
        c"flowtrack.max_import_bytes",
        c"Largest graph import (React Flow canvas or n8n export) accepted, in bytes of JSON text.",
        c"Every import path checks it (internal.check_import_size). Set in postgresql.conf or with ALTER DATABASE ... SET as superuser.",
        &MAX_IMPORT_BYTES,
        1024,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    // An operator's switch, superuser-only like the cap above: a tenant or
    // the worker must not be able to turn its own logging off.
    GucRegistry::define_bool_guc(
        c"flowtrack.execution_logs",
        c"Whether the graph engine writes api.execution_logs lines (step started, completed, failed, retrying).",
        c"On by default. Off (postgresql.conf, ALTER DATABASE/ROLE ... SET as superuser) sheds the log's one INSERT per advancing transaction, e.g. for a bulk backfill; steps and executions are written either way.",
        &EXECUTION_LOGS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"flowtrack.key_file",
        c"Key file that encrypts FlowTrack secrets at rest.",
        c"Absolute path readable only by the server's OS user; lines key_id=base64(32 bytes). The first key (or flowtrack.active_key_id) encrypts, every key decrypts.",
        &KEY_FILE,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"flowtrack.active_key_id",
        c"Key id new encryptions use; empty means the key file's first key.",
        c"Must name a key in flowtrack.key_file. Set it to roll a new key in before re-encrypting with internal.rotate_secrets.",
        &ACTIVE_KEY_ID,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY,
    );
}
