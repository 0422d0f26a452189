//! Running one statement through SPI and reading its rows as text. DDL and
//! per-parent statements differ every time, so nothing here is kept.

use pgrx::datum::DatumWithOid;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

use crate::error::raise;

/// Run `sql`; every row's first `ncols` columns as text. Returns the rows and
/// how many rows the statement processed.
pub fn rows(
    client: &mut SpiClient<'_>,
    sql: &str,
    args: &[DatumWithOid<'_>],
    ncols: usize,
) -> (Vec<Vec<Option<String>>>, u64) {
    let table = client.update(sql, None, args).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "partition maintenance: a statement failed",
            Some(format!("{sql}: {e}")),
            "",
        )
    });
    let processed = table.len() as u64;
    let mut out = Vec::new();
    for row in table {
        let cols = (1..=ncols)
            .map(|i| row.get::<String>(i).ok().flatten())
            .collect();
        out.push(cols);
    }
    (out, processed)
}

/// Run `sql` for its effect; how many rows it processed.
pub fn exec(client: &mut SpiClient<'_>, sql: &str, args: &[DatumWithOid<'_>]) -> u64 {
    rows(client, sql, args, 0).1
}

/// The first column of the first row, if any.
pub fn one(client: &mut SpiClient<'_>, sql: &str, args: &[DatumWithOid<'_>]) -> Option<String> {
    rows(client, sql, args, 1)
        .0
        .into_iter()
        .next()
        .and_then(|mut r| r.pop().flatten())
}
