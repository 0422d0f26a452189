//! What maintenance does to one parent: create a partition, rescue rows from
//! the default partition into a new one, drop or detach an expired one. Each
//! returns the row `run_maintenance` reports. They run as the parent's owner
//! (mod.rs), with every identifier quoted (naming.rs).

use pgrx::spi::SpiClient;

use super::bounds::Range;
use super::catalog::{self, Parent, Partition};
use super::naming::{ident, literal, partition, qualified};
use super::spi::exec;

/// One action taken: (partition, action, rows moved, detail).
pub type Done = (String, &'static str, i64, String);

/// Rows moved out of the default partition per statement.
const BATCH: i64 = 10_000;

fn stamp(us: i64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(us).expect("bounds are within chrono's range");
    t.format("%Y-%m-%d %H:%M:%S+00").to_string()
}

/// `[lo, hi)` as the timestamps a FOR VALUES clause takes.
fn for_values(r: Range) -> String {
    format!(
        "FOR VALUES FROM ({}) TO ({})",
        literal(&stamp(r.lo_micros())),
        literal(&stamp(r.hi_micros()))
    )
}

fn describe(r: Range) -> String {
    format!("[{}, {})", r.lo, r.hi)
}

/// A free name for the partition of `r` in the parent's partition schema.
fn free_name(client: &mut SpiClient<'_>, p: &Parent, r: Range) -> String {
    let suffix = p.interval.suffix(r.lo);
    (0..100)
        .map(|attempt| partition(&p.name, &suffix, attempt))
        .find(|name| !catalog::relation_exists(client, &p.partition_schema, name))
        .unwrap_or_else(|| partition(&p.name, &suffix, 100))
}

/// `WITH (...)` for a new partition: the configured storage parameters, else
/// those of the newest partition the parent has (partitioned tables cannot
/// carry storage parameters themselves).
fn with_clause(p: &Parent, existing: &[Partition]) -> String {
    let inherited;
    let options = match &p.storage_options {
        Some(o) => o,
        None => {
            inherited = existing
                .iter()
                .filter(|x| x.bound.is_some())
                .max_by_key(|x| x.bound.map(|b| b.lo))
                .map(|x| x.reloptions.clone())
                .unwrap_or_default();
            &inherited
        }
    };
    let pairs: Vec<String> = options
        .iter()
        .filter_map(|o| o.split_once('='))
        .map(|(k, v)| format!("{} = {}", ident(k), literal(v)))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!(" WITH ({})", pairs.join(", "))
    }
}

/// The parent's grants, repeated on a new partition: partitions do not
/// inherit privileges. (API roles still cannot reach it: they have no USAGE
/// on the partition schema.)
fn copy_grants(client: &mut SpiClient<'_>, p: &Parent, table: &str) {
    for (privilege, grantee, grantable) in catalog::grants(client, p.oid) {
        let to = if grantee.is_empty() {
            "PUBLIC".to_string()
        } else {
            ident(&grantee)
        };
        let option = if grantable { " WITH GRANT OPTION" } else { "" };
        exec(
            client,
            &format!("GRANT {privilege} ON TABLE {table} TO {to}{option}"),
            &[],
        );
    }
}

/// CREATE TABLE … PARTITION OF for range `r`. The caller has made sure the
/// default partition holds no row of `r` (rescue runs first, under a lock
/// that keeps new rows out).
pub fn create(client: &mut SpiClient<'_>, p: &Parent, existing: &[Partition], r: Range) -> Done {
    let name = free_name(client, p, r);
    let table = qualified(&p.partition_schema, &name);
    exec(
        client,
        &format!(
            "CREATE TABLE {table} PARTITION OF {} {}{}",
            qualified(&p.schema, &p.name),
            for_values(r),
            with_clause(p, existing)
        ),
        &[],
    );
    copy_grants(client, p, &table);
    (table, "create", 0, describe(r))
}

/// The DEFAULT partition, so an insert outside every range never fails.
pub fn create_default(client: &mut SpiClient<'_>, p: &Parent, existing: &[Partition]) -> Done {
    let name = (0..100)
        .map(|a| partition(&p.name, "default", a))
        .find(|n| !catalog::relation_exists(client, &p.partition_schema, n))
        .unwrap_or_else(|| partition(&p.name, "default", 100));
    let table = qualified(&p.partition_schema, &name);
    exec(
        client,
        &format!(
            "CREATE TABLE {table} PARTITION OF {} DEFAULT{}",
            qualified(&p.schema, &p.name),
            with_clause(p, existing)
        ),
        &[],
    );
    copy_grants(client, p, &table);
    (table, "create", 0, "DEFAULT".into())
}

/// Move the default partition's rows of range `r` into a new partition.
///
/// PostgreSQL refuses both CREATE TABLE … PARTITION OF and ATTACH PARTITION
/// while the default partition holds a row of the new range, so the rows
/// leave first: a plain table shaped like the parent (LIKE: columns, NOT
/// NULL and CHECK constraints, defaults, storage) is filled by
/// `DELETE … RETURNING` from the default partition, BATCH rows per
/// statement; then it gets a CHECK constraint equal to the range (so ATTACH
/// need not scan it), is attached (which builds the parent's indexes on it
/// and clones its foreign keys and row triggers), and the CHECK goes. Rows
/// never leave the parent's reach longer than this transaction, which holds
/// the parent in SHARE ROW EXCLUSIVE mode so no new row lands in the default
/// partition meanwhile. Works on PostgreSQL 15, where neither
/// DETACH … CONCURRENTLY (not in a transaction block) nor SPLIT PARTITION
/// (17) is available.
pub fn rescue(
    client: &mut SpiClient<'_>,
    p: &Parent,
    default: &Partition,
    existing: &[Partition],
    r: Range,
) -> Done {
    let name = free_name(client, p, r);
    let table = qualified(&p.partition_schema, &name);
    let parent = qualified(&p.schema, &p.name);
    let source = qualified(&default.schema, &default.name);
    exec(
        client,
        &format!(
            "CREATE TABLE {table} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
             INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMPRESSION){}",
            with_clause(p, existing)
        ),
        &[],
    );
    let cols = catalog::columns(client, p.oid)
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let key = ident(&p.key);
    let (lo, hi) = (
        literal(&stamp(r.lo_micros())),
        literal(&stamp(r.hi_micros())),
    );
    let in_range = format!("{key} >= {lo}::timestamptz AND {key} < {hi}::timestamptz");
    let step = format!(
        "WITH moved AS (DELETE FROM {source} WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM {source} WHERE {in_range} LIMIT {BATCH})) RETURNING {cols})
         INSERT INTO {table} ({cols}) SELECT {cols} FROM moved"
    );
    let mut moved = 0i64;
    loop {
        crate::interrupts::check();
        let n = exec(client, &step, &[]) as i64;
        moved += n;
        if n < BATCH {
            break;
        }
    }
    exec(
        client,
        &format!(
            "ALTER TABLE {table} ADD CONSTRAINT flowtrack_range CHECK ({key} IS NOT NULL AND {in_range})"
        ),
        &[],
    );
    exec(
        client,
        &format!(
            "ALTER TABLE {parent} ATTACH PARTITION {table} {}",
            for_values(r)
        ),
        &[],
    );
    exec(
        client,
        &format!("ALTER TABLE {table} DROP CONSTRAINT flowtrack_range"),
        &[],
    );
    copy_grants(client, p, &table);
    (
        table,
        "rescue",
        moved,
        format!("{} rows moved from {source}", moved) + &format!(" into {}", describe(r)),
    )
}

/// Drop or detach an expired partition (detached ones go to the archive
/// schema when one is set and has no table of that name).
pub fn expire(client: &mut SpiClient<'_>, p: &Parent, part: &Partition) -> Done {
    let table = qualified(&part.schema, &part.name);
    let bound = part.bound.expect("only bounded partitions expire");
    let span = format!(
        "[{}, {})",
        super::bounds::day_of_micros(bound.lo).map_or("-".into(), |d| d.to_string()),
        super::bounds::day_of_micros(bound.hi).map_or("-".into(), |d| d.to_string())
    );
    if !p.detach {
        exec(client, &format!("DROP TABLE {table}"), &[]);
        return (table, "drop", 0, span);
    }
    exec(
        client,
        &format!(
            "ALTER TABLE {} DETACH PARTITION {table}",
            qualified(&p.schema, &p.name)
        ),
        &[],
    );
    let Some(archive) = &p.archive_schema else {
        return (table, "detach", 0, span);
    };
    if catalog::relation_exists(client, archive, &part.name) {
        return (
            table,
            "detach",
            0,
            format!("{span}; left in place: {archive} already has a table of that name"),
        );
    }
    exec(
        client,
        &format!("ALTER TABLE {table} SET SCHEMA {}", ident(archive)),
        &[],
    );
    (
        qualified(archive, &part.name),
        "detach",
        0,
        format!("{span}; archived from {table}"),
    )
}
