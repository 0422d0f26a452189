//! The migration runner against a real database: ordered, idempotent,
//! checksummed, and refusing files changed after they were applied.

use flowtrack_tests::{connect, connect_to};
use flowtrack_worker::migrate::{self, MigrateError};

#[tokio::test]
async fn runner_applies_in_order_is_idempotent_and_rejects_tampering() {
    let admin = connect().await;
    let name = format!("ft_migrate_{}", std::process::id());
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = std::env::var("FLOWTRACK_TEST_DATABASE_URL")
        .unwrap()
        .replacen("/flowtrack?", &format!("/{name}?"), 1);
    let mut db = connect_to(&url).await;

    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0001_first.sql"), "CREATE TABLE t (id int);").unwrap();
    std::fs::write(dir.join("0002_second.sql"), "INSERT INTO t VALUES (1);").unwrap();

    let report = migrate::run(&mut db, &dir).await.unwrap();
    assert_eq!(report.applied.len(), 2);
    let again = migrate::run(&mut db, &dir).await.unwrap();
    assert_eq!((again.applied.len(), again.already), (0, 2));
    let n: i64 = db
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "a re-run must not apply anything twice");

    // A failing file rolls back alone and names its line.
    std::fs::write(
        dir.join("0003_broken.sql"),
        "INSERT INTO t VALUES (2);\nSELEC 1;",
    )
    .unwrap();
    let err = migrate::run(&mut db, &dir).await.unwrap_err();
    assert!(err.to_string().starts_with("0003_broken.sql:2:"), "{err}");
    let n: i64 = db
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the broken file's first statement was rolled back");
    std::fs::remove_file(dir.join("0003_broken.sql")).unwrap();

    // Editing an applied file is refused.
    std::fs::write(dir.join("0002_second.sql"), "INSERT INTO t VALUES (42);").unwrap();
    let err = migrate::run(&mut db, &dir).await.unwrap_err();
    assert!(matches!(err, MigrateError::Changed { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("0002_second.sql was changed after it was applied"));

    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test]
async fn project_migrations_are_all_applied_in_the_test_cluster() {
    let db = connect().await;
    let dir = std::env::var("FLOWTRACK_TEST_SQL_DIR").unwrap();
    let files = migrate::load(std::path::Path::new(&dir)).unwrap();
    let applied: i64 = db
        .query_one("SELECT count(*) FROM flowtrack_meta.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied as usize, files.len());
}
