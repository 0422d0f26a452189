//! What the catalogs say: the managed parents with their settings, and each
//! parent's partitions with their bounds. Read-only.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::bounds::{Bound, Interval};
use super::spi::rows;

/// One row of `internal.partition_config`, joined to the parent's catalog
/// entry.
#[derive(Debug, Clone)]
pub struct Parent {
    pub oid: pg_sys::Oid,
    pub schema: String,
    pub name: String,
    pub owner: pg_sys::Oid,
    pub interval: Interval,
    pub premake: u32,
    /// `now - retention` in UTC calendar arithmetic, µs since the Unix epoch;
    /// None: keep everything.
    pub cutoff: Option<i64>,
    pub detach: bool,
    pub archive_schema: Option<String>,
    pub partition_schema: String,
    /// Storage parameters for new partitions (`name=value`); None: those of
    /// the newest existing partition.
    pub storage_options: Option<Vec<String>>,
    /// The partition key column.
    pub key: String,
}

const PARENTS: &str = "
SELECT c.oid::text, n.nspname::text, c.relname::text, c.relowner::text,
       p.partition_interval, p.premake::text,
       ((extract(epoch FROM (($1 AT TIME ZONE 'UTC') - p.retention) AT TIME ZONE 'UTC') * 1000000)::bigint)::text,
       p.retention_action, p.archive_schema::text, p.partition_schema::text,
       pg_catalog.array_to_string(p.storage_options, chr(1)),
       a.attname::text
  FROM internal.partition_config p
  JOIN pg_catalog.pg_class c ON c.oid = p.parent
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = c.oid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0]
 WHERE $2::oid IS NULL OR c.oid = $2::oid
 ORDER BY n.nspname, c.relname";

fn oid(s: &Option<String>) -> pg_sys::Oid {
    pg_sys::Oid::from(
        s.as_deref()
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0),
    )
}

/// The managed parents (or just `only`), in name order.
pub fn parents(
    client: &mut SpiClient<'_>,
    now: TimestampWithTimeZone,
    only: Option<pg_sys::Oid>,
) -> Vec<Parent> {
    let args: [DatumWithOid; 2] = [now.into(), only.into()];
    rows(client, PARENTS, &args, 12)
        .0
        .into_iter()
        .filter_map(|r| {
            let text = |i: usize| r[i].clone().unwrap_or_default();
            Some(Parent {
                oid: oid(&r[0]),
                schema: text(1),
                name: text(2),
                owner: oid(&r[3]),
                interval: Interval::parse(&text(4))?,
                premake: text(5).parse().ok()?,
                cutoff: r[6].as_deref().and_then(|s| s.parse().ok()),
                detach: text(7) == "detach",
                archive_schema: r[8].clone(),
                partition_schema: text(9),
                storage_options: r[10]
                    .as_deref()
                    .map(|s| s.split('\u{1}').map(str::to_string).collect()),
                key: text(11),
            })
        })
        .collect()
}

/// One partition of a parent.
#[derive(Debug, Clone)]
pub struct Partition {
    pub schema: String,
    pub name: String,
    /// None: the DEFAULT partition.
    pub bound: Option<Bound>,
    pub reloptions: Vec<String>,
}

// Range bounds as pg_get_expr prints them, in the session's time zone and
// DateStyle, which the cast back reads the same way; MINVALUE / MAXVALUE
// become the ends of bigint.
const PARTITIONS: &str = "
WITH p AS (
  SELECT n.nspname::text AS nsp, c.relname::text AS rel, c.reloptions,
         pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS expr
    FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE i.inhparent = $1
), b AS (
  SELECT p.*, pg_catalog.regexp_match(p.expr, '^FOR VALUES FROM \\((.*)\\) TO \\((.*)\\)$') AS m FROM p
)
SELECT nsp, rel, (expr = 'DEFAULT')::text,
       CASE WHEN m[1] = 'MINVALUE' THEN '-9223372036854775808'
            ELSE ((extract(epoch FROM pg_catalog.btrim(m[1], '''')::timestamptz) * 1000000)::bigint)::text END,
       CASE WHEN m[2] = 'MAXVALUE' THEN '9223372036854775807'
            ELSE ((extract(epoch FROM pg_catalog.btrim(m[2], '''')::timestamptz) * 1000000)::bigint)::text END,
       pg_catalog.array_to_string(reloptions, chr(1))
  FROM b";

/// The parent's partitions, the default one first, then by lower bound.
pub fn partitions(client: &mut SpiClient<'_>, parent: pg_sys::Oid) -> Vec<Partition> {
    let args: [DatumWithOid; 1] = [parent.into()];
    let mut parts: Vec<Partition> = rows(client, PARTITIONS, &args, 6)
        .0
        .into_iter()
        .map(|r| {
            let lo = r[3].as_deref().and_then(|s| s.parse().ok());
            let hi = r[4].as_deref().and_then(|s| s.parse().ok());
            Partition {
                schema: r[0].clone().unwrap_or_default(),
                name: r[1].clone().unwrap_or_default(),
                bound: match (r[2].as_deref(), lo, hi) {
                    (Some("false"), Some(lo), Some(hi)) => Some(Bound { lo, hi }),
                    _ => None,
                },
                reloptions: r[5]
                    .as_deref()
                    .map(|s| s.split('\u{1}').map(str::to_string).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    parts.sort_by_key(|p| p.bound.map(|b| (b.lo, b.hi)));
    parts
}

/// The parent's ACL as GRANT clauses: (privilege, grantee, grantable), the
/// owner's own entries left out (a new partition's owner has them already).
pub fn grants(client: &mut SpiClient<'_>, parent: pg_sys::Oid) -> Vec<(String, String, bool)> {
    let args: [DatumWithOid; 1] = [parent.into()];
    rows(
        client,
        "SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN NULL ELSE r.rolname::text END, a.is_grantable::text
           FROM pg_catalog.pg_class c,
                LATERAL pg_catalog.aclexplode(c.relacl) a
           LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
          WHERE c.oid = $1 AND a.grantee <> c.relowner
          ORDER BY 2, 1",
        &args,
        3,
    )
    .0
    .into_iter()
    .map(|r| {
        (
            r[0].clone().unwrap_or_default(),
            r[1].clone().unwrap_or_default(),
            r[2].as_deref() == Some("true"),
        )
    })
    .collect()
}

/// The parent's columns that hold data (not generated), in order.
pub fn columns(client: &mut SpiClient<'_>, parent: pg_sys::Oid) -> Vec<String> {
    let args: [DatumWithOid; 1] = [parent.into()];
    rows(
        client,
        "SELECT a.attname::text FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
          ORDER BY a.attnum",
        &args,
        1,
    )
    .0
    .into_iter()
    .filter_map(|mut r| r.pop().flatten())
    .collect()
}

/// Is `name` taken in schema `schema`?
pub fn relation_exists(client: &mut SpiClient<'_>, schema: &str, name: &str) -> bool {
    let args: [DatumWithOid; 2] = [schema.into(), name.into()];
    super::spi::one(
        client,
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = $1 AND c.relname = $2)::text",
        &args,
    )
    .as_deref()
        == Some("true")
}
