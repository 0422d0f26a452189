//! Ordered SQL migrations: `sql/NNNN_name.sql`, each applied in its own
//! transaction and recorded with its SHA-256 so a file changed after it was
//! applied is refused instead of silently diverging.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// One migration file on disk.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i32,
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
    pub checksum: String,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub applied: Vec<String>,
    pub already: usize,
}

#[derive(Debug)]
pub enum MigrateError {
    Io(PathBuf, std::io::Error),
    BadName(PathBuf),
    DuplicateVersion(i32),
    Changed {
        file: String,
        recorded: String,
        now: String,
    },
    Missing(String),
    Sql {
        file: String,
        line: Option<usize>,
        error: tokio_postgres::Error,
    },
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(p, e) => write!(f, "{}: {e}", p.display()),
            Self::BadName(p) => write!(f, "{}: migration files are named NNNN_name.sql", p.display()),
            Self::DuplicateVersion(v) => write!(f, "two migration files share version {v:04}"),
            Self::Changed { file, recorded, now } => write!(
                f,
                "{file} was changed after it was applied (recorded sha256 {recorded}, file now {now}); \
                 add a new migration instead of editing an applied one"
            ),
            Self::Missing(file) => write!(f, "{file} was applied but is no longer in the migrations directory"),
            Self::Sql { file, line, error } => {
                let db = error.as_db_error();
                write!(f, "{file}")?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                match db {
                    Some(db) => write!(f, ": {} ({})", db.message(), db.code().code())?,
                    None => write!(f, ": {error}")?,
                }
                if let Some(detail) = db.and_then(|d| d.detail()) {
                    write!(f, "\n  detail: {detail}")?;
                }
                if let Some(hint) = db.and_then(|d| d.hint()) {
                    write!(f, "\n  hint: {hint}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for MigrateError {}

fn parse_name(path: &Path) -> Option<(i32, String)> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".sql")?;
    let (num, name) = stem.split_once('_')?;
    let valid = num.len() == 4
        && num.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return None;
    }
    Some((num.parse().ok()?, name.to_string()))
}

/// The migrations in `dir`, in version order. Subdirectories and non-`.sql`
/// files are ignored; a `.sql` file with a malformed name is an error.
pub fn load(dir: &Path) -> Result<Vec<Migration>, MigrateError> {
    let entries = std::fs::read_dir(dir).map_err(|e| MigrateError::Io(dir.into(), e))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| MigrateError::Io(dir.into(), e))?.path();
        if !path.is_file() || path.extension().is_none_or(|e| e != "sql") {
            continue;
        }
        let (version, name) =
            parse_name(&path).ok_or_else(|| MigrateError::BadName(path.clone()))?;
        let sql = std::fs::read_to_string(&path).map_err(|e| MigrateError::Io(path.clone(), e))?;
        let checksum = hex(&Sha256::digest(sql.as_bytes()));
        out.push(Migration {
            version,
            name,
            path,
            sql,
            checksum,
        });
    }
    out.sort_by_key(|m| m.version);
    if let Some(w) = out.windows(2).find(|w| w[0].version == w[1].version) {
        return Err(MigrateError::DuplicateVersion(w[0].version));
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_label(m: &Migration) -> String {
    format!("{:04}_{}.sql", m.version, m.name)
}

/// The 1-based line of a 1-based character position in `sql`.
fn line_of(sql: &str, position: usize) -> usize {
    sql.chars()
        .take(position.saturating_sub(1))
        .filter(|&c| c == '\n')
        .count()
        + 1
}

const BOOKKEEPING: &str = "
CREATE SCHEMA IF NOT EXISTS flowtrack_meta;
COMMENT ON SCHEMA flowtrack_meta IS 'Migration bookkeeping; not reachable by API roles.';
CREATE TABLE IF NOT EXISTS flowtrack_meta.schema_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     NOT NULL
);
COMMENT ON TABLE flowtrack_meta.schema_migrations IS
  'One row per applied sql/NNNN_name.sql file, with the SHA-256 of its text.';
";

/// Apply every pending migration in `dir`. Holds an advisory lock so two
/// runners never interleave; ends with `NOTIFY pgrst, 'reload schema'` so the
/// API server picks up the new schema.
pub async fn run(client: &mut Client, dir: &Path) -> Result<Report, MigrateError> {
    let migrations = load(dir)?;
    let sql_err = |file: &str, error| MigrateError::Sql {
        file: file.into(),
        line: None,
        error,
    };
    client
        .batch_execute("SELECT pg_advisory_lock(hashtext('flowtrack.migrate'))")
        .await
        .map_err(|e| sql_err("(lock)", e))?;
    let result = apply(client, &migrations).await;
    let _ = client
        .batch_execute("SELECT pg_advisory_unlock(hashtext('flowtrack.migrate'))")
        .await;
    let report = result?;
    client
        .batch_execute("NOTIFY pgrst, 'reload schema'")
        .await
        .map_err(|e| sql_err("(notify)", e))?;
    Ok(report)
}

async fn apply(client: &mut Client, migrations: &[Migration]) -> Result<Report, MigrateError> {
    client
        .batch_execute(BOOKKEEPING)
        .await
        .map_err(|e| MigrateError::Sql {
            file: "(bookkeeping)".into(),
            line: None,
            error: e,
        })?;
    let rows = client
        .query(
            "SELECT version, name, checksum FROM flowtrack_meta.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(|e| MigrateError::Sql {
            file: "(bookkeeping)".into(),
            line: None,
            error: e,
        })?;
    let mut report = Report::default();
    for row in &rows {
        let (version, name, recorded): (i32, String, String) = (row.get(0), row.get(1), row.get(2));
        let label = format!("{version:04}_{name}.sql");
        match migrations.iter().find(|m| m.version == version) {
            None => return Err(MigrateError::Missing(label)),
            Some(m) if m.checksum != recorded => {
                return Err(MigrateError::Changed {
                    file: label,
                    recorded,
                    now: m.checksum.clone(),
                })
            }
            Some(_) => report.already += 1,
        }
    }
    for m in migrations
        .iter()
        .filter(|m| !rows.iter().any(|r| r.get::<_, i32>(0) == m.version))
    {
        let label = file_label(m);
        let started = Instant::now();
        let tx = client.transaction().await.map_err(|e| MigrateError::Sql {
            file: label.clone(),
            line: None,
            error: e,
        })?;
        if let Err(error) = tx.batch_execute(&m.sql).await {
            let line = error.as_db_error().and_then(|d| match d.position() {
                Some(tokio_postgres::error::ErrorPosition::Original(p)) => {
                    Some(line_of(&m.sql, *p as usize))
                }
                _ => None,
            });
            return Err(MigrateError::Sql {
                file: label,
                line,
                error,
            });
        }
        let ms = started.elapsed().as_millis() as i32;
        // A file may have switched role (SET LOCAL ROLE flowtrack_owner);
        // bookkeeping is the migrating user's.
        tx.batch_execute("RESET ROLE")
            .await
            .map_err(|e| MigrateError::Sql {
                file: label.clone(),
                line: None,
                error: e,
            })?;
        tx.execute(
            "INSERT INTO flowtrack_meta.schema_migrations (version, name, checksum, duration_ms) VALUES ($1, $2, $3, $4)",
            &[&m.version, &m.name, &m.checksum, &ms],
        )
        .await
        .map_err(|e| MigrateError::Sql { file: label.clone(), line: None, error: e })?;
        tx.commit().await.map_err(|e| MigrateError::Sql {
            file: label.clone(),
            line: None,
            error: e,
        })?;
        report.applied.push(format!("{label} ({ms} ms)"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_numbered() {
        assert_eq!(
            parse_name(Path::new("sql/0001_roles.sql")),
            Some((1, "roles".into()))
        );
        assert_eq!(
            parse_name(Path::new("sql/0012_quota_v2.sql")),
            Some((12, "quota_v2".into()))
        );
        assert_eq!(parse_name(Path::new("sql/1_roles.sql")), None);
        assert_eq!(parse_name(Path::new("sql/0001-roles.sql")), None);
        assert_eq!(parse_name(Path::new("sql/0001_Roles.sql")), None);
        assert_eq!(parse_name(Path::new("sql/0001_.sql")), None);
    }

    #[test]
    fn error_positions_become_lines() {
        let sql = "SELECT 1;\nSELECT 2;\nSELEC 3;";
        assert_eq!(line_of(sql, 1), 1);
        assert_eq!(line_of(sql, 11), 2);
        assert_eq!(line_of(sql, 21), 3);
    }

    #[test]
    fn load_orders_and_rejects_duplicates() {
        let dir = std::env::temp_dir().join(format!("ft-migr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0002_b.sql"), "SELECT 2;").unwrap();
        std::fs::write(dir.join("0001_a.sql"), "SELECT 1;").unwrap();
        std::fs::write(dir.join("README.md"), "not a migration").unwrap();
        let got: Vec<i32> = load(&dir).unwrap().iter().map(|m| m.version).collect();
        assert_eq!(got, vec![1, 2]);
        std::fs::write(dir.join("0002_c.sql"), "SELECT 3;").unwrap();
        assert!(matches!(load(&dir), Err(MigrateError::DuplicateVersion(2))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
