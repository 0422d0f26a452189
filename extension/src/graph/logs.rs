//! Execution logs: one `api.execution_logs` row per step event (started,
//! completed, failed, retrying, waiting), written in the transaction of the
//! event with ONE INSERT per transaction.
//!
//! The engine and the SQL around it only append lines to a per-backend
//! buffer (no SQL). Just before the transaction commits (the pre-commit
//! transaction callback, after every deferred trigger has run) the buffer is
//! written by one `INSERT ... SELECT FROM unnest(...)`, however many
//! executions, steps and workspaces the transaction advanced: an ingress, a
//! worker's batch of job reports, a pg_cron batch of due delays. Lines of a
//! subtransaction that rolls back are dropped with it (the subtransaction
//! callback); an aborted transaction drops them all, so a rolled-back
//! advance leaves no line.
//!
//! The INSERT runs at commit, as whoever commits (the API role, the
//! worker), so it switches to the role that recorded the lines (the table's
//! owner, inside the engine's SECURITY DEFINER entry points) for that one
//! statement, as a SECURITY DEFINER call would. One INSERT may hold lines of
//! several workspaces, which the per-workspace tenant policy (act_for) cannot
//! admit; the policy `engine_flush` on the table admits the owner's INSERT
//! while [`flushing`] is true, which only this module sets, around its own
//! statement.
//!
//! `flowtrack.execution_logs = off` (superuser-only) stops recording.

use std::cell::{Cell, RefCell};

use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};

use crate::error::raise;
use crate::graph::spi;

/// One line, as buffered until commit.
struct Line {
    workspace_id: String,
    execution_id: String,
    step_id: Option<String>,
    level: &'static str,
    message: String,
    data: Option<String>,
    duration_ms: Option<i64>,
    /// The subtransaction that recorded it: dropped if that one aborts.
    subxact: pg_sys::SubTransactionId,
}

thread_local! {
    static LINES: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
    /// The role that recorded this transaction's first line.
    static WRITER: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    /// True only around this module's own INSERT (the table's policy).
    static FLUSHING: Cell<bool> = const { Cell::new(false) };
    static HOOKED: Cell<bool> = const { Cell::new(false) };
}

/// Longest message kept: a line points at its step, it does not copy it.
const MAX_MESSAGE: usize = 200;

const INSERT_LOGS: &str = "INSERT INTO api.execution_logs
    (workspace_id, execution_id, step_id, created_at, duration_ms, seq, level, message, data)
  SELECT u.w::pg_catalog.uuid, u.e::pg_catalog.uuid, u.s::pg_catalog.uuid, t.at, u.ms, u.n::pg_catalog.int4,
         u.l, u.m, u.d::pg_catalog.jsonb
    FROM (SELECT pg_catalog.clock_timestamp() AS at) t,
         ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[]),
                    pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.text[]),
                    pg_catalog.unnest($5::pg_catalog.text[]), pg_catalog.unnest($6::pg_catalog.text[]),
                    pg_catalog.unnest($7::pg_catalog.int8[]))
         WITH ORDINALITY AS u (w, e, s, l, m, d, ms, n)";

/// Whether lines are recorded (`flowtrack.execution_logs`).
pub fn enabled() -> bool {
    crate::guc::execution_logs()
}

fn level_of(level: &str) -> &'static str {
    match level {
        "debug" => "debug",
        "info" => "info",
        "warn" => "warn",
        "error" => "error",
        other => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("level: \"{}\" is not a log level", other.escape_default()),
            None,
            "Use debug, info, warn or error.",
        ),
    }
}

fn short(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}…", &message[..i]),
        None => message.to_string(),
    }
}

/// Record a line for the end of this transaction.
#[allow(clippy::too_many_arguments)]
pub fn push(
    workspace_id: pgrx::Uuid,
    execution_id: pgrx::Uuid,
    step_id: Option<&str>,
    level: &'static str,
    message: &str,
    data: Option<String>,
    duration_ms: Option<i64>,
) {
    if !enabled() {
        return;
    }
    hook();
    // SAFETY: plain reads of the transaction state, inside a transaction.
    let (subxact, user) = unsafe { (pg_sys::GetCurrentSubTransactionId(), pg_sys::GetUserId()) };
    if WRITER.get().is_none() {
        WRITER.set(Some(user));
    }
    LINES.with_borrow_mut(|lines| {
        lines.push(Line {
            workspace_id: workspace_id.to_string(),
            execution_id: execution_id.to_string(),
            step_id: step_id.map(str::to_string),
            level,
            message: short(message),
            data,
            duration_ms,
            subxact,
        })
    });
}

fn hook() {
    if !HOOKED.get() {
        // SAFETY: registers 'static functions with no argument pointer, once
        // per backend.
        unsafe {
            pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
        }
        HOOKED.set(true);
    }
}

fn forget() {
    LINES.with_borrow_mut(Vec::clear);
    WRITER.set(None);
    FLUSHING.set(false);
}

/// Pre-commit (and pre-prepare): write the buffer. Commit, abort, prepare:
/// forget it (a failed write aborts, and the abort forgets).
#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PRE_PREPARE => flush(),
        XACT_EVENT_COMMIT | XACT_EVENT_ABORT | XACT_EVENT_PREPARE | XACT_EVENT_PARALLEL_ABORT => {
            forget()
        }
        _ => {}
    }
}

/// A subtransaction that aborts takes its lines (and its children's, which
/// have later ids) with it.
#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        LINES.with_borrow_mut(|lines| lines.retain(|l| l.subxact < my_subid));
    }
}

/// The INSERT's surroundings, undone however it ends: the writer's role,
/// the policy flag, and a snapshot (at pre-commit no statement or portal
/// holds one any more).
struct AsWriter {
    user: pg_sys::Oid,
    context: i32,
}

impl AsWriter {
    fn enter(writer: pg_sys::Oid) -> Self {
        let (mut user, mut context) = (pg_sys::Oid::INVALID, 0i32);
        // SAFETY: what a SECURITY DEFINER call does around its body; an
        // error in between is undone by AbortTransaction, which restores the
        // transaction's user and security context.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(
                writer,
                context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            );
        }
        FLUSHING.set(true);
        // SAFETY: inside the transaction, before it commits.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
        AsWriter { user, context }
    }
}

impl Drop for AsWriter {
    fn drop(&mut self) {
        FLUSHING.set(false);
        // SAFETY: restores what enter saved. After an error the abort that
        // follows releases the snapshot and restores the role itself.
        unsafe {
            if !std::thread::panicking() {
                pg_sys::PopActiveSnapshot();
            }
            pg_sys::SetUserIdAndSecContext(self.user, self.context)
        }
    }
}

fn flush() {
    let lines = LINES.take();
    let Some(writer) = WRITER.take() else {
        return;
    };
    if lines.is_empty() {
        return;
    }
    let mut ws = Vec::with_capacity(lines.len());
    let mut ex = Vec::with_capacity(lines.len());
    let mut st = Vec::with_capacity(lines.len());
    let mut lv = Vec::with_capacity(lines.len());
    let mut msg = Vec::with_capacity(lines.len());
    let mut data = Vec::with_capacity(lines.len());
    let mut ms = Vec::with_capacity(lines.len());
    for l in lines {
        ws.push(l.workspace_id);
        ex.push(l.execution_id);
        st.push(l.step_id);
        lv.push(l.level.to_string());
        msg.push(l.message);
        data.push(l.data);
        ms.push(l.duration_ms);
    }
    let _as = AsWriter::enter(writer);
    Spi::connect_mut(|client| {
        spi::exec(
            client,
            INSERT_LOGS,
            &[
                ws.into(),
                ex.into(),
                st.into(),
                lv.into(),
                msg.into(),
                data.into(),
                ms.into(),
            ],
        )
    });
}

/// True only while the engine writes this transaction's log lines: the
/// execution_logs policy that lets that one INSERT hold lines of several
/// workspaces.
#[pg_extern(stable, parallel_restricted)]
fn execution_logs_flushing() -> bool {
    FLUSHING.get()
}

/// Record a log line of an execution for this transaction's single INSERT
/// (SQL callers: job retries, steps failed by an error).
#[pg_extern(volatile, parallel_unsafe)]
fn log_execution_event(
    workspace_id: pgrx::Uuid,
    execution_id: pgrx::Uuid,
    step_id: Option<pgrx::Uuid>,
    level: &str,
    message: &str,
    data: default!(Option<pgrx::JsonB>, "NULL"),
    duration_ms: default!(Option<i64>, "NULL"),
) {
    let step = step_id.map(|s| s.to_string());
    push(
        workspace_id,
        execution_id,
        step.as_deref(),
        level_of(level),
        message,
        data.map(|d| d.0.to_string()),
        duration_ms,
    );
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.execution_logs_flushing() IS
  'True only while the engine writes this transaction''s execution log lines (one INSERT at commit); the execution_logs policy engine_flush admits that INSERT, which may hold several workspaces'' lines.';
COMMENT ON FUNCTION flowtrack.log_execution_event(uuid, uuid, uuid, text, text, jsonb, bigint) IS
  'Records an execution log line (level debug, info, warn or error; message cut to 200 characters) for the single INSERT this transaction makes at commit. Nothing when flowtrack.execution_logs is off.';
"#,
    name = "comments_logs",
    requires = [execution_logs_flushing, log_execution_event]
);
