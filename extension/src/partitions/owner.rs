//! Whose rights maintenance uses. `run_maintenance` is SECURITY INVOKER and
//! does each parent's work as that parent's owner, the way VACUUM and
//! REFRESH MATERIALIZED VIEW do: the user id switches to the owner inside a
//! security-restricted operation, and only a caller who already has the
//! owner's privileges gets that far. So pg_cron's superuser job creates and
//! drops FlowTrack's partitions as `flowtrack_owner`, never as a superuser,
//! and new partitions belong to the parent's owner.

use pgrx::prelude::*;

/// May the current user act for `owner` (is it the owner, a member of it,
/// or a superuser)?
pub fn may_act_for(owner: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups in a transaction.
    unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), owner) }
}

/// Run `f` as `owner`. An error inside aborts the (sub)transaction, which
/// restores the user id and security context, as for any SECURITY DEFINER
/// function.
pub fn as_owner<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let mut saved_user = pg_sys::Oid::INVALID;
    let mut saved_context = 0;
    // SAFETY: the same calls PostgreSQL makes around maintenance commands.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
    }
    let result = f();
    // SAFETY: restores what was saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
    result
}
