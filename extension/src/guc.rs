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
static WORKSPACE_ROLE: GucSetting<Option<OwnedCString>> =
    GucSetting::<Option<OwnedCString>>::new(None);

/// Define FlowTrack's own settings. They are user-settable on purpose:
/// SECURITY DEFINER functions owned by the non-superuser owner role scope
/// them with `SET flowtrack.workspace_id = ''` clauses, which Postgres only
/// allows for defined (not placeholder) user-settable parameters.
pub fn init() {
    GucRegistry::define_string_guc(
        c"flowtrack.workspace_id",
        c"Workspace a trusted FlowTrack entry point is acting for.",
        c"Set only inside SECURITY DEFINER functions (scoped by their SET clause); overrides the JWT workspace_id claim.",
        &WORKSPACE_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"flowtrack.workspace_role",
        c"Workspace role a trusted FlowTrack entry point is acting with.",
        c"Set only inside SECURITY DEFINER functions; overrides the JWT workspace_role claim.",
        &WORKSPACE_ROLE,
        GucContext::Userset,
        GucFlags::default(),
    );
}
