//! SPI with kept plans: each statement is prepared once per backend and
//! reused, so a call does no parsing or planning (the pattern of quota.rs).
//! Every column is read as text (the SQL casts), which keeps the Rust side
//! free of per-type plumbing; SPI errors become ERRORs naming the statement.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::PgOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::PgSqlErrorCode;

use crate::error::raise;

pub type Param<'a> = DatumWithOid<'a>;

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

fn failed(sql: &str, e: impl std::fmt::Display) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        "graph engine: a statement failed",
        Some(format!("{e}: {sql}")),
        "",
    )
}

fn collect(
    sql: &str,
    table: pgrx::spi::SpiTupleTable<'_>,
    ncols: usize,
) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::with_capacity(table.len());
    for row in table {
        let mut cols = Vec::with_capacity(ncols);
        for i in 1..=ncols {
            cols.push(row.get::<String>(i).unwrap_or_else(|e| failed(sql, e)));
        }
        out.push(cols);
    }
    out
}

/// Run `sql` (kept plan) and return up to `ncols` text columns of each row.
pub fn rows(
    client: &mut SpiClient<'_>,
    sql: &'static str,
    args: &[Param<'_>],
    ncols: usize,
) -> Vec<Vec<Option<String>>> {
    let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        if !plans.contains_key(sql) {
            let plan = client
                .prepare_mut(sql, &types)
                .unwrap_or_else(|e| failed(sql, e));
            plans.insert(sql, plan.keep());
        }
        let table = client
            .update(&plans[sql], None, args)
            .unwrap_or_else(|e| failed(sql, e));
        collect(sql, table, ncols)
    })
}

thread_local! {
    static READ_PLANS: RefCell<HashMap<&'static str, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Run a read-only `sql` (kept plan) as a read-only SPI query: unlike
/// [`rows`], it takes no transaction id and sees the calling statement's
/// snapshot, so a STABLE function may use it.
pub fn read(
    client: &SpiClient<'_>,
    sql: &'static str,
    args: &[Param<'_>],
    ncols: usize,
) -> Vec<Vec<Option<String>>> {
    let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
    READ_PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        if !plans.contains_key(sql) {
            let plan = client
                .prepare(sql, &types)
                .unwrap_or_else(|e| failed(sql, e));
            plans.insert(sql, plan.keep());
        }
        let table = client
            .select(&plans[sql], None, args)
            .unwrap_or_else(|e| failed(sql, e));
        collect(sql, table, ncols)
    })
}

/// Run `sql` (kept plan) for its effect.
pub fn exec(client: &mut SpiClient<'_>, sql: &'static str, args: &[Param<'_>]) {
    rows(client, sql, args, 0);
}

/// The first column of the first row, if any.
pub fn one(client: &mut SpiClient<'_>, sql: &'static str, args: &[Param<'_>]) -> Option<String> {
    rows(client, sql, args, 1)
        .into_iter()
        .next()
        .and_then(|mut r| r.pop().flatten())
}
