//! Raising Postgres errors with a specific SQLSTATE, a message, a detail and a
//! hint. A Rust panic would surface as XX000 (HTTP 500), so every expected
//! failure goes through here instead.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Raise an ERROR; never returns.
pub fn raise(
    code: PgSqlErrorCode,
    message: impl Into<String>,
    detail: Option<String>,
    hint: &str,
) -> ! {
    let mut report = ErrorReport::new(code, message.into(), "flowtrack");
    if let Some(detail) = detail {
        report = report.set_detail(detail);
    }
    if !hint.is_empty() {
        report = report.set_hint(hint.to_string());
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}
