//! FlowTrack's PostgreSQL extension.
//!
//! The extension owns functions, never tenant data: tables live in the ordered
//! migrations under `sql/`, so `pg_dump` keeps everything. Each module here is
//! one concern, exposed as a small set of SQL functions in the `flowtrack`
//! schema.

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod acting;
mod crypto;
mod error;
mod graph;
mod guc;
mod interrupts;
mod key_scope;
mod partitions;
mod quota;
mod schedule;
mod tenancy;
mod wake;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::init();
    wake::init();
}

/// The graph import cap (`flowtrack.max_import_bytes`), read through the
/// library so that a placeholder a caller set before it loaded is never
/// what counts.
#[pg_extern(stable, parallel_safe)]
fn max_import_bytes() -> i32 {
    guc::max_import_bytes()
}

/// The extension's build version, so operators can tell which binary a
/// database is running.
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

extension_sql!(
    r#"
COMMENT ON SCHEMA flowtrack IS
  'FlowTrack extension functions: tenancy helpers, crypto, graph engine, quotas. Owns no tenant data.';
COMMENT ON FUNCTION flowtrack.version() IS
  'Version of the loaded flowtrack extension binary.';
COMMENT ON FUNCTION flowtrack.max_import_bytes() IS
  'The graph import cap in bytes: the superuser-only setting flowtrack.max_import_bytes (default 2 MiB).';
"#,
    name = "comments_lib",
    requires = [version, max_import_bytes]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn version_is_callable_from_sql() {
        let v = Spi::get_one::<String>("SELECT flowtrack.version()").unwrap();
        assert_eq!(v.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // Wake-ups live in shared memory, which only a preloaded library gets.
        vec!["shared_preload_libraries = 'flowtrack'"]
    }
}
