//! Connecting, migrations, the database clock and the zone identity; URLs that are refused.

use std::time::Duration;

use uuid::Uuid;
use zone_node::{Store, StoreError};

use crate::TestDb;

store_test_suite!(
    migrations_are_idempotent,
    database_clock,
    zone_identity_is_stable,
    instance_times_stored_before_0012_are_filled_in,
);

async fn migrations_are_idempotent(db: &TestDb) {
    let first = db.connect().await;
    assert_eq!(first.backend(), db.backend);
    first.ping().await.unwrap();
    first.close().await;

    // Again on the same database: the migrations are recorded and not re-applied.
    let second = db.connect().await;
    second.ping().await.unwrap();
    // And a third pool while the second is open.
    let third = db.connect().await;
    third.ping().await.unwrap();
    let m = third.membership().await.unwrap();
    assert_eq!(m.epoch, 0);
    assert!(m.nodes.is_empty());
}

/// Migration 0012 adds the instances' times as text; a zone upgraded from before it gets them
/// from the milliseconds it stored, as the API writes them.
async fn instance_times_stored_before_0012_are_filled_in(db: &TestDb) {
    use sqlx::Connection;
    // 2025-12-04T08:21:37.024Z, and 5 ms later.
    const MS: i64 = 1_764_836_497_024;
    const INSERT: &str = "INSERT INTO instances (id, name, client_id, state, vcpus, memory_mb, disk_gb, \
        created_at_ms, updated_at_ms) VALUES ('i-1', 'vm', 'c1', 'running', 1, 512, 10, $1, $2)";
    // The schema as it was before, with an instance in it.
    match db.url.strip_prefix("sqlite://") {
        Some(path) => {
            let dir = std::path::Path::new(path).parent().expect("a file in a directory");
            std::fs::create_dir_all(dir).expect("create the database's directory");
            let mut c = sqlx::SqliteConnection::connect(&format!("{}?mode=rwc", db.url))
                .await
                .unwrap_or_else(|e| panic!("open the SQLite file {path}: {e}"));
            let migrated = sqlx::migrate!("../migrations/sqlite").run_to(11, &mut c).await;
            migrated.unwrap_or_else(|e| panic!("SQLite: migrate to 0011: {e}"));
            let inserted = sqlx::query(INSERT).bind(MS).bind(MS + 5).execute(&mut c).await;
            inserted.unwrap_or_else(|e| panic!("SQLite: insert an instance as of 0011: {e}"));
        }
        None => {
            // The test database exists already (TestDb made it): a failure here is PostgreSQL's.
            let mut c = sqlx::PgConnection::connect(&db.url)
                .await
                .unwrap_or_else(|e| panic!("connect to the test database: {e}"));
            let migrated = sqlx::migrate!("../migrations/postgres").run_to(11, &mut c).await;
            migrated.unwrap_or_else(|e| panic!("PostgreSQL: migrate to 0011: {e}"));
            let inserted = sqlx::query(INSERT).bind(MS).bind(MS + 5).execute(&mut c).await;
            inserted.unwrap_or_else(|e| panic!("PostgreSQL: insert an instance as of 0011: {e}"));
        }
    }
    // Connecting applies the rest.
    let store = db.connect().await;
    let zone = zone_node::PageZone { id: "z", name: "z" };
    let page = store
        .instances_page_json(None, None, None, 10, &zone)
        .await
        .unwrap_or_else(|e| panic!("{}: the page after migration 0012: {e}", db.backend));
    let page: serde_json::Value = serde_json::from_str(&page.instances).expect("a JSON array");
    assert_eq!(page[0]["created_at"], "2025-12-04T08:21:37.024Z", "{page}");
    assert_eq!(page[0]["updated_at"], "2025-12-04T08:21:37.029Z", "{page}");
}

async fn database_clock(db: &TestDb) {
    let store = db.connect().await;
    let a = store.now_ms().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = store.now_ms().await.unwrap();
    assert!(b >= a, "database clock went backwards: {a} then {b}");
    // The database runs on this machine: a loose sanity bound that catches unit mistakes
    // (seconds instead of milliseconds), not a timing assertion.
    let local = zone_node::local_now_ms();
    assert!((a - local).abs() < 600_000, "database clock {a} far from local clock {local}");
}

async fn zone_identity_is_stable(db: &TestDb) {
    // Nodes starting together on a fresh database all get the same identity.
    let stores = futures::future::join_all((0..4).map(|_| db.connect_small(2))).await;
    let rows = futures::future::join_all(stores.iter().map(|s| s.zone_identity("alpha"))).await;
    let first = rows[0].as_ref().unwrap().clone();
    for row in &rows {
        assert_eq!(row.as_ref().unwrap(), &first);
    }
    assert_eq!(first.name, "alpha");
    assert_eq!(first.id.get_version_num(), 4);
    for s in &stores {
        s.close().await;
    }

    // Across reconnects: same id and creation time; the name follows the configuration.
    let store = db.connect().await;
    let again = store.zone_identity("alpha").await.unwrap();
    assert_eq!(again, first);
    let renamed = store.zone_identity("beta").await.unwrap();
    assert_eq!(renamed.id, first.id);
    assert_eq!(renamed.created_at_ms, first.created_at_ms);
    assert_eq!(renamed.name, "beta");
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable_and_names_no_password() {
    // Port 1 on loopback: refused at once, nothing listens there.
    let err = Store::connect("postgres://zone:hunter2@127.0.0.1:1/zone").await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(msg.contains("127.0.0.1:1"), "the message names the host: {msg}");
    assert!(!msg.contains("hunter2"), "the message leaks the password: {msg}");
}

#[tokio::test]
async fn unsupported_urls_are_refused_without_echoing_them() {
    let err = Store::connect("mysql://root:hunter2@db/zone").await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    let zone = store.zone_identity("mem").await.unwrap();
    assert_eq!(store.zone_identity("mem").await.unwrap().id, zone.id);
    assert_eq!(store.node_join(Uuid::new_v4(), "http://m", true).await.unwrap(), 1);
}
