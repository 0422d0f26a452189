//! Wake-ups without NOTIFY (docs/ARCHITECTURE.md, "Wake-ups").
//!
//! An idle worker parks: it publishes its PGPROC number in a shared-memory
//! slot, re-checks the queue with a fresh snapshot, and sleeps on its own
//! process latch until an enqueuer marks its slot woken or the timeout (the
//! polling fallback) runs out. An enqueuing transaction only flags itself;
//! after it commits (its rows visible), it marks every parked, not yet woken
//! slot and sets those backends' latches. Nobody parked, or everybody
//! already woken: the commit reads a few cache lines and writes nothing.
//!
//! `shmem.rs` holds the slots (plain atomics), `latch.rs` the Postgres
//! calls, `model.rs` the exhaustive check that no wake-up is lost.

mod latch;
#[cfg(test)]
mod model;
mod shmem;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, pg_sys, PGRXSharedMemory, PgAtomic, PgSqlErrorCode};

use crate::error::raise;
use shmem::{Counters, Wake, WakeShared, SLOTS};

// SAFETY: the name is ours alone in the shared-memory index.
static WAKE: PgAtomic<WakeShared> = unsafe { PgAtomic::new(c"flowtrack wake-ups") };

// SAFETY: WakeShared is atomics only (no pointers, no heap), valid at the
// same address in every process that maps the segment.
unsafe impl PGRXSharedMemory for WakeShared {}

/// Set in the postmaster when shared memory was requested, inherited by
/// every backend it forks. Unset (flowtrack not in shared_preload_libraries):
/// waits poll and commits wake nobody.
static ENABLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The slot this backend is parked in.
    static MY_SLOT: Cell<Option<usize>> = const { Cell::new(None) };
    /// This transaction made work due (wake_on_commit or the trigger ran).
    static WAKE_DUE: Cell<bool> = const { Cell::new(false) };
    /// The transaction-end and exit callbacks are registered.
    static HOOKED: Cell<bool> = const { Cell::new(false) };
}

/// From `_PG_init`: asks for shared memory when preloaded; loaded any other
/// way (CREATE EXTENSION, LOAD) there is none and wake-ups fall back to
/// polling.
// pg_shmem_init! branches on pgrx's pg13..pg18 features, which this crate
// (pg15 only) does not declare.
#[allow(unexpected_cfgs)]
pub fn init() {
    if latch::preloading() {
        pg_shmem_init!(WAKE = WakeShared::new());
        ENABLED.store(true, Relaxed);
    }
}

fn shared() -> Option<&'static WakeShared> {
    ENABLED.load(Relaxed).then(|| WAKE.get())
}

/// Registers, once per backend, what ends a parking and what sends a
/// commit's wake-up.
fn hook() {
    if !HOOKED.get() {
        latch::register_xact_end(on_xact_end);
        latch::register_exit(on_exit);
        HOOKED.set(true);
    }
}

/// At the end of every transaction: a commit that made work due wakes the
/// parked workers (this runs after ProcArrayEndTransaction, so its rows are
/// visible to any snapshot taken from now on); any end unparks this
/// backend, so a worker that errored or left its slot behind is never
/// parked past its transaction. Atomics and SetLatch only: never raises.
#[pg_guard]
unsafe extern "C-unwind" fn on_xact_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    if !matches!(
        event,
        XACT_EVENT_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PREPARE
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_PARALLEL_ABORT
    ) {
        return;
    }
    if WAKE_DUE.replace(false) && event == XACT_EVENT_COMMIT {
        wake_parked();
    }
    unpark_self();
}

/// At backend exit (FATAL, terminate, disconnect): free our slot.
#[pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, _arg: pg_sys::Datum) {
    unpark_self();
}

fn unpark_self() {
    if let (Some(slot), Some(shared)) = (MY_SLOT.take(), shared()) {
        shared.slots.unpark(slot);
    }
}

/// An enqueuer's wake-up, after its commit: mark every parked worker that
/// is not yet woken, then set its latch. In that order: the worker's wait
/// loop trusts the mark, not the latch, so a latch set that some other
/// wait in the worker consumed loses nothing.
fn wake_parked() {
    let Some(shared) = shared() else { return };
    let (mut parked, mut woke) = (0u64, 0u64);
    for slot in 0..SLOTS {
        match shared.slots.wake(slot) {
            Wake::Free => {}
            Wake::AlreadyWoken => parked += 1,
            Wake::Woke(procno) => {
                parked += 1;
                woke += 1;
                latch::set(procno);
            }
        }
    }
    let counters = &shared.counters;
    if woke > 0 {
        Counters::bump(&counters.wakes, woke);
    } else if parked > 0 {
        Counters::bump(&counters.coalesced, 1);
    }
}

/// Park this backend: publish it as an idle worker that the next commit
/// with work due must wake. Call it BEFORE re-checking for work, in the
/// same transaction as the re-check and the wait (see worker_wait).
#[pg_extern(volatile, parallel_unsafe)]
fn worker_park() -> bool {
    if latch::uses_transaction_snapshot() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
            "worker_park: the re-check after parking needs a fresh snapshot, and this transaction reads through one",
            None,
            "Park in a READ COMMITTED transaction (the default).",
        );
    }
    let Some(shared) = shared() else {
        return false;
    };
    hook();
    unpark_self();
    match shared.slots.park(latch::my_procno()) {
        Some(slot) => {
            MY_SLOT.set(Some(slot));
            Counters::bump(&shared.counters.parks, 1);
            true
        }
        None => {
            Counters::bump(&shared.counters.overflows, 1);
            false
        }
    }
}

/// Sleep until an enqueuer's commit wakes this parked backend (true) or
/// `timeout_ms` passes (false), then unpark. Serves query cancel and
/// termination while it sleeps.
#[pg_extern(volatile, parallel_unsafe)]
fn worker_wait(timeout_ms: i32) -> bool {
    let Ok(ms) = u64::try_from(timeout_ms) else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("timeout_ms: must be 0 or more milliseconds, got {timeout_ms}"),
            None,
            "Pass how long to wait for a wake-up before polling again, in milliseconds.",
        )
    };
    let deadline = Instant::now() + Duration::from_millis(ms);
    let woken = loop {
        if let (Some(slot), Some(shared)) = (MY_SLOT.get(), shared()) {
            if shared.slots.is_woken(slot) {
                break true;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        latch::sleep(left);
    };
    if let (false, Some(shared)) = (woken, shared()) {
        Counters::bump(&shared.counters.timeouts, 1);
    }
    unpark_self();
    woken
}

/// Stop being parked (the re-check found work).
#[pg_extern(volatile, parallel_unsafe)]
fn worker_unpark() {
    unpark_self();
}

/// Mark this transaction as having made work due: when it commits, parked
/// workers are woken. Idempotent within a transaction; nothing on abort.
#[pg_extern(volatile, parallel_unsafe)]
fn wake_on_commit() {
    if shared().is_some() {
        hook();
        WAKE_DUE.set(true);
    }
}

/// wake_on_commit as a trigger, for AFTER ... FOR EACH STATEMENT on the
/// queue table: every enqueue wakes the parked workers once it commits.
#[pg_trigger]
fn wake_workers<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    if !matches!(trigger.when()?, PgTriggerWhen::After) {
        raise(
            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "wake_workers: must run AFTER the change",
            None,
            "Create it as AFTER INSERT ... FOR EACH STATEMENT EXECUTE FUNCTION flowtrack.wake_workers().",
        );
    }
    wake_on_commit();
    Ok(None)
}

/// What wake-ups are doing, for metrics and for tests.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe)]
fn wake_stats() -> TableIterator<
    'static,
    (
        name!(enabled, bool),
        name!(parked, i32),
        name!(woken, i32),
        name!(parks, i64),
        name!(wakes, i64),
        name!(coalesced, i64),
        name!(timeouts, i64),
        name!(overflows, i64),
    ),
> {
    let row = match shared() {
        None => (false, 0, 0, 0, 0, 0, 0, 0),
        Some(shared) => {
            let (parked, woken) = shared.slots.counts();
            let c = &shared.counters;
            let n = |a: &std::sync::atomic::AtomicU64| {
                i64::try_from(a.load(Relaxed)).unwrap_or(i64::MAX)
            };
            (
                true,
                i32::try_from(parked).unwrap_or(i32::MAX),
                i32::try_from(woken).unwrap_or(i32::MAX),
                n(&c.parks),
                n(&c.wakes),
                n(&c.coalesced),
                n(&c.timeouts),
                n(&c.overflows),
            )
        }
    };
    TableIterator::once(row)
}

extension_sql!(
    r#"
REVOKE EXECUTE ON FUNCTION flowtrack.worker_park(), flowtrack.worker_wait(integer), flowtrack.worker_unpark(),
                           flowtrack.wake_on_commit(), flowtrack.wake_workers(), flowtrack.wake_stats()
    FROM PUBLIC;
COMMENT ON FUNCTION flowtrack.worker_park() IS
  'An idle worker publishes itself in shared memory so the next commit with work due wakes it; call before re-checking the queue, in the same READ COMMITTED transaction. False: no slot (not preloaded, or all taken), so the wait polls.';
COMMENT ON FUNCTION flowtrack.worker_wait(integer) IS
  'Sleeps on this backend''s latch until a commit wakes it (true) or timeout_ms passes (false, the polling fallback), then unparks. Cancel and terminate work while it sleeps.';
COMMENT ON FUNCTION flowtrack.worker_unpark() IS
  'Stops being parked, for a worker whose re-check found work. Transaction end and backend exit unpark too.';
COMMENT ON FUNCTION flowtrack.wake_on_commit() IS
  'Marks this transaction as making work due: after it commits, parked workers are woken (no NOTIFY, no commit serialisation). Nothing on rollback; a no-op without shared memory.';
COMMENT ON FUNCTION flowtrack.wake_workers() IS
  'Trigger form of wake_on_commit, for AFTER INSERT ... FOR EACH STATEMENT on the queue table.';
COMMENT ON FUNCTION flowtrack.wake_stats() IS
  'Wake-up state: enabled (flowtrack preloaded), parked and woken backends now, and counters since startup: parks, wakes sent, coalesced commits (every parked worker already woken), wait timeouts, parks that found no free slot.';
"#,
    name = "comments_wake",
    requires = [
        worker_park,
        worker_wait,
        worker_unpark,
        wake_on_commit,
        wake_workers,
        wake_stats
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use std::time::{Duration, Instant};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Stats {
        enabled: bool,
        parked: i32,
        woken: i32,
        parks: i64,
        wakes: i64,
        coalesced: i64,
        timeouts: i64,
    }

    fn stats() -> Stats {
        Spi::connect(|client| {
            let row = client
                .select(
                    "SELECT enabled, parked, woken, parks, wakes, coalesced, timeouts FROM flowtrack.wake_stats()",
                    None,
                    &[],
                )?
                .first();
            Ok::<_, pgrx::spi::Error>(Stats {
                enabled: row.get(1)?.unwrap(),
                parked: row.get(2)?.unwrap(),
                woken: row.get(3)?.unwrap(),
                parks: row.get(4)?.unwrap(),
                wakes: row.get(5)?.unwrap(),
                coalesced: row.get(6)?.unwrap(),
                timeouts: row.get(7)?.unwrap(),
            })
        })
        .unwrap()
    }

    fn one(sql: &str) -> Option<bool> {
        Spi::get_one::<bool>(sql).unwrap()
    }

    /// pg_tests run side by side, and a wake-up wakes every parked backend:
    /// the tests that park or wake take turns (the lock goes with the test's
    /// transaction, which is rolled back).
    fn take_turns() {
        Spi::run("SELECT pg_advisory_xact_lock(7406111)").unwrap();
    }

    /// The test cluster preloads flowtrack (pg_test::postgresql_conf_options).
    #[pg_test]
    fn shared_memory_is_there_when_preloaded() {
        assert!(stats().enabled, "flowtrack.wake_stats() says not preloaded");
    }

    #[pg_test]
    fn park_and_unpark_keep_the_books() {
        take_turns();
        let before = stats();
        assert_eq!(one("SELECT flowtrack.worker_park()"), Some(true));
        let parked = stats();
        assert_eq!(parked.parked, before.parked + 1, "one more parked backend");
        assert_eq!(parked.parks, before.parks + 1, "one more park counted");
        // Parking again re-publishes in place of the old slot.
        assert_eq!(one("SELECT flowtrack.worker_park()"), Some(true));
        assert_eq!(stats().parked, before.parked + 1);
        Spi::run("SELECT flowtrack.worker_unpark()").unwrap();
        assert_eq!(stats().parked, before.parked);
        // Unparking twice is harmless.
        Spi::run("SELECT flowtrack.worker_unpark()").unwrap();
        assert_eq!(stats().parked, before.parked);
    }

    #[pg_test]
    fn a_wait_nobody_wakes_times_out_and_unparks() {
        take_turns();
        let before = stats();
        assert_eq!(one("SELECT flowtrack.worker_park()"), Some(true));
        let started = Instant::now();
        assert_eq!(one("SELECT flowtrack.worker_wait(150)"), Some(false));
        assert!(started.elapsed() >= Duration::from_millis(150));
        let after = stats();
        assert_eq!(after.parked, before.parked, "the wait unparked");
        assert_eq!(
            after.timeouts,
            before.timeouts + 1,
            "the timeout was counted"
        );
        // Not parked at all: a plain sleep that times out.
        assert_eq!(one("SELECT flowtrack.worker_wait(0)"), Some(false));
        assert_eq!(one("SELECT flowtrack.worker_wait(20)"), Some(false));
    }

    /// The commit callback's wake-up, called directly (pg_tests roll back,
    /// so no commit of theirs ever runs it): it marks this parked backend
    /// and sets its latch, and the wait returns at once.
    #[pg_test]
    fn a_wake_marks_the_parked_backend_and_the_wait_returns_at_once() {
        take_turns();
        let before = stats();
        assert_eq!(one("SELECT flowtrack.worker_park()"), Some(true));
        super::wake_parked();
        let woken = stats();
        assert_eq!(woken.woken, before.woken + 1, "our slot is marked woken");
        assert_eq!(woken.wakes, before.wakes + 1, "one wake sent");
        let started = Instant::now();
        assert_eq!(one("SELECT flowtrack.worker_wait(60000)"), Some(true));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(stats().parked, before.parked, "the wait unparked");
        // A second wake-up while already woken writes nothing: coalesced.
        assert_eq!(one("SELECT flowtrack.worker_park()"), Some(true));
        super::wake_parked();
        let once = stats();
        super::wake_parked();
        let twice = stats();
        assert_eq!(twice.wakes, once.wakes, "no second wake sent");
        assert_eq!(twice.coalesced, once.coalesced + 1, "counted as coalesced");
        Spi::run("SELECT flowtrack.worker_unpark()").unwrap();
    }

    #[pg_test]
    fn wake_on_commit_without_parked_workers_sends_nothing() {
        take_turns();
        Spi::run("SELECT flowtrack.wake_on_commit(), flowtrack.wake_on_commit()").unwrap();
        assert!(super::WAKE_DUE.get(), "the transaction is flagged");
        let before = stats();
        assert_eq!(before.parked, 0, "no test parks outside its turn");
        super::wake_parked();
        let after = stats();
        assert_eq!(after, before, "nothing sent, nothing coalesced");
    }

    #[pg_test(error = "timeout_ms: must be 0 or more milliseconds, got -1")]
    fn a_negative_timeout_is_refused() {
        Spi::run("SELECT flowtrack.worker_wait(-1)").unwrap();
    }

    #[pg_test]
    fn the_trigger_flags_the_transaction_after_an_insert() {
        Spi::run(
            "CREATE TEMP TABLE wake_probe (x int);
             CREATE TRIGGER wake AFTER INSERT ON wake_probe FOR EACH STATEMENT EXECUTE FUNCTION flowtrack.wake_workers();
             INSERT INTO wake_probe VALUES (1);",
        )
        .unwrap();
        assert!(super::WAKE_DUE.get());
    }

    #[pg_test(error = "wake_workers: must run AFTER the change")]
    fn the_trigger_refuses_to_run_before_the_change() {
        Spi::run(
            "CREATE TEMP TABLE wake_probe_before (x int);
             CREATE TRIGGER wake BEFORE INSERT ON wake_probe_before FOR EACH ROW EXECUTE FUNCTION flowtrack.wake_workers();
             INSERT INTO wake_probe_before VALUES (1);",
        )
        .unwrap();
    }
}
