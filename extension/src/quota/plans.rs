//! Kept plans for the quota functions: each SQL text is parsed and planned
//! once per backend, then only executed. Two kinds:
//!
//! - read-write (`with_plan`), through pgrx, for `consume_quota`;
//! - read-only (`first_row_read_only`), for `check_quota`, which is STABLE:
//!   its statements run as a STABLE function's must, in the calling
//!   statement's snapshot, and PostgreSQL refuses any write they attempt.
//!   pgrx runs a statement read-only only while the transaction has written
//!   nothing, so these call SPI themselves.
//!
//! Every statement here names its relations with their schema, and runs
//! under `search_path = pg_catalog, pg_temp` (`with_catalog_search_path`),
//! so no object a caller put in its temporary schema can stand in for one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;
use std::ptr::NonNull;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::PgSqlErrorCode;

use crate::error::raise;

thread_local! {
    /// Read-write plans kept for the life of the backend, keyed by their SQL text.
    static PLANS: RefCell<HashMap<&'static str, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
    /// Read-only plans (SPI_keepplan), likewise.
    static READ_ONLY_PLANS: RefCell<HashMap<&'static str, NonNull<pg_sys::_SPI_plan>>> =
        RefCell::new(HashMap::new());
}

fn cannot_prepare(sql: &str, why: String) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        "quota: cannot prepare statement",
        Some(format!("{sql}: {why}")),
        "",
    )
}

/// Run `f` with the kept read-write plan for `sql`, preparing it on first use.
pub fn with_plan<'c, R>(
    client: &mut SpiClient<'c>,
    sql: &'static str,
    types: &[PgOid],
    f: impl FnOnce(&mut SpiClient<'c>, &OwnedPreparedStatement) -> R,
) -> R {
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        if !plans.contains_key(sql) {
            let plan = client
                .prepare_mut(sql, types)
                .unwrap_or_else(|e| cannot_prepare(sql, e.to_string()));
            plans.insert(sql, plan.keep());
        }
        f(client, &plans[sql])
    })
}

/// One row of a read-only statement's result, readable while SPI holds it.
pub struct Row {
    desc: pg_sys::TupleDesc,
    tuple: pg_sys::HeapTuple,
}

impl Row {
    /// Column `ordinal` (1-based) as `T`, None when NULL.
    pub fn get<T: FromDatum + IntoDatum>(&self, ordinal: i32) -> Option<T> {
        // SAFETY: desc and tuple come from SPI_tuptable of the statement just
        // run, inside the SPI connection that owns them; ordinal is checked
        // by SPI_getbinval (it raises for a column that does not exist).
        unsafe {
            let mut is_null = false;
            let datum = pg_sys::SPI_getbinval(self.tuple, self.desc, ordinal, &mut is_null);
            T::try_from_datum(datum, is_null, pg_sys::SPI_gettypeid(self.desc, ordinal))
                .unwrap_or_else(|e| {
                    raise(
                        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                        "quota: unexpected column type",
                        Some(e.to_string()),
                        "",
                    )
                })
        }
    }
}

/// Run the kept read-only plan for `sql` with `args` and hand its first row
/// (None when it returned none) to `read`. Must run inside an SPI connection
/// (`Spi::connect`), which owns the result until it closes.
pub fn first_row_read_only<R>(
    sql: &'static str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
    read: impl FnOnce(Option<&Row>) -> R,
) -> R {
    let plan = READ_ONLY_PLANS.with(|plans| plans.borrow().get(sql).copied());
    let plan = plan.unwrap_or_else(|| {
        let text = CString::new(sql).unwrap_or_else(|e| cannot_prepare(sql, e.to_string()));
        let mut oids: Vec<pg_sys::Oid> = types.iter().map(|t| t.value()).collect();
        // SAFETY: plain SPI calls inside the caller's SPI connection; both
        // raise on failure, which pgrx turns into a Rust panic and back.
        let plan = unsafe {
            let plan = pg_sys::SPI_prepare(text.as_ptr(), oids.len() as i32, oids.as_mut_ptr());
            if !plan.is_null() && pg_sys::SPI_keepplan(plan) != 0 {
                std::ptr::null_mut()
            } else {
                plan
            }
        };
        let plan = NonNull::new(plan).unwrap_or_else(|| {
            cannot_prepare(sql, format!("SPI error {}", unsafe { pg_sys::SPI_result }))
        });
        READ_ONLY_PLANS.with(|plans| plans.borrow_mut().insert(sql, plan));
        plan
    });
    let mut values: Vec<pg_sys::Datum> = args
        .iter()
        .map(|a| {
            a.datum()
                .map_or(pg_sys::Datum::from(0), |d| d.sans_lifetime())
        })
        .collect();
    let nulls: Vec<std::ffi::c_char> = args
        .iter()
        .map(|a| (if a.datum().is_some() { b' ' } else { b'n' }) as std::ffi::c_char)
        .collect();
    // SAFETY: a kept plan, arguments of the types it was prepared with;
    // read_only = true is what makes this safe to call from a STABLE
    // function. The result lives until the SPI connection closes, after
    // `read` returns.
    unsafe {
        let rc =
            pg_sys::SPI_execute_plan(plan.as_ptr(), values.as_mut_ptr(), nulls.as_ptr(), true, 1);
        if rc != pg_sys::SPI_OK_SELECT as i32 {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "quota: read-only statement failed",
                Some(format!("{sql}: SPI code {rc}")),
                "",
            );
        }
        let table = pg_sys::SPI_tuptable;
        let row = (pg_sys::SPI_processed > 0 && !table.is_null()).then(|| Row {
            desc: (*table).tupdesc,
            tuple: *(*table).vals,
        });
        read(row.as_ref())
    }
}

/// Run `f`, which runs SQL, with `search_path = pg_catalog, pg_temp`, as a
/// `SET search_path` clause on the function would (pg_temp last: left out,
/// PostgreSQL would search it first for relations), but without making every
/// call pay PostgreSQL 15's walk over all settings at a SET clause's exit
/// (~2% of a consume_quota call at 32 clients). On an error, the
/// (sub)transaction abort restores the setting, as it does for a SET clause.
pub fn with_catalog_search_path<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: plain calls into the GUC machinery, in a transaction.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        let result = f();
        pg_sys::AtEOXact_GUC(true, level);
        result
    }
}
