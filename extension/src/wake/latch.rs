//! The Postgres side of wake-ups: this backend's PGPROC number, setting
//! another backend's process latch, and sleeping on our own. Every `unsafe`
//! here is a read of a backend global or a call Postgres documents as safe
//! from any backend.

use std::time::Duration;

use pgrx::pg_sys;

/// This backend's PGPROC number (its index in `ProcGlobal->allProcs`).
pub fn my_procno() -> u32 {
    // SAFETY: MyProc is set by InitProcess before any SQL function can run
    // and stays valid for the backend's life; pgprocno is written once there.
    let procno = unsafe { (*pg_sys::MyProc).pgprocno };
    u32::try_from(procno).unwrap_or(u32::MAX)
}

/// Sets the process latch of the backend with PGPROC number `procno`.
/// Never raises: called from a commit callback.
pub fn set(procno: u32) {
    // SAFETY: ProcGlobal and its allProcs array live in shared memory for
    // the life of the cluster (a crash restart reinitialises both, and our
    // slots with them), and allProcCount bounds the array. Every PGPROC's
    // procLatch is a shared latch initialised at startup, and SetLatch is
    // documented safe on any shared latch from any process; if the backend
    // that parked has exited, the latch is disowned and SetLatch does
    // nothing, and if a new backend took the PGPROC it sees one spurious
    // wake-up, which every latch user must tolerate.
    unsafe {
        let global = pg_sys::ProcGlobal;
        if global.is_null() || procno >= (*global).allProcCount {
            return;
        }
        let proc = (*global).allProcs.add(procno as usize);
        pg_sys::SetLatch(&raw mut (*proc).procLatch);
    }
}

/// Sleeps on this backend's latch for at most `left`, then resets it and
/// serves interrupts, so a query cancel, `statement_timeout` or termination
/// raises here. Returns early, for the caller to re-check, whenever the
/// latch is set (a wake-up, a signal, or a stale set). Exits the process if
/// the postmaster dies.
pub fn sleep(left: Duration) {
    let ms = libc_long(left.as_millis().max(1));
    // SAFETY: MyLatch is this backend's own latch, set up before any SQL
    // runs; WaitLatch and ResetLatch on it are what pg_sleep() does.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

fn libc_long(ms: u128) -> std::ffi::c_long {
    std::ffi::c_long::try_from(ms).unwrap_or(std::ffi::c_long::MAX)
}

/// Whether this transaction reads through one snapshot (REPEATABLE READ or
/// SERIALIZABLE), under which a worker's re-check after parking would
/// never see a later commit.
pub fn uses_transaction_snapshot() -> bool {
    // SAFETY: a plain read of a backend-local global.
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// Whether this library is being loaded by shared_preload_libraries, the
/// only time it may ask for shared memory.
pub fn preloading() -> bool {
    // SAFETY: a plain read of a process-local global.
    unsafe { pg_sys::process_shared_preload_libraries_in_progress }
}

/// Runs `on_xact_end` at the end of every transaction of this backend from
/// now on (commit, abort, prepare). Called once per backend.
pub fn register_xact_end(
    on_xact_end: unsafe extern "C-unwind" fn(pg_sys::XactEvent::Type, *mut std::ffi::c_void),
) {
    // SAFETY: registers a 'static function with no argument pointer.
    unsafe { pg_sys::RegisterXactCallback(Some(on_xact_end), std::ptr::null_mut()) }
}

/// Runs `on_exit` when this backend exits, before shared memory is
/// detached. Called once per backend.
pub fn register_exit(on_exit: unsafe extern "C-unwind" fn(i32, pg_sys::Datum)) {
    // SAFETY: registers a 'static function with no argument.
    unsafe { pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(0)) }
}
