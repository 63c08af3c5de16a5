//! The store test suite: every test runs against SQLite and against PostgreSQL.
//!
//! `store_test_suite!` instantiates each test twice, in `<area>::sqlite` and `<area>::postgres`, in
//! the manner of quickwit's `metastore_test_suite!`; the areas are split in files as quickwit splits
//! its `src/tests/`. Each test gets its own database: a file in a temporary directory, or a fresh
//! `zt_<random>` PostgreSQL database from `test_support::TestDb` (created through the admin URL in
//! `ZONE_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`) and dropped afterwards,
//! even when the test panics. PostgreSQL is required: when it is unreachable the PostgreSQL tests fail
//! with a message saying so, they never skip.
//!
//! Tests that wait for the database clock poll it instead of trusting a sleep, and no assertion
//! depends on tight timing.
//!
//! Run with `cargo test -p zone-node --test store` (one area: `cargo test -p zone-node --test store
//! hosts::`, one backend: `... sqlite::`).
//!
//! # Layout
//! - this file: the per-backend macro, [`TestDb`] and the fixtures several areas share
//! - `connect`: connecting, migrations, the database clock, the zone identity, refused URLs
//! - `accounts`: accounts and bearer tokens
//! - `nodes`: membership rows and eviction
//! - `probe`: diagnostic concurrency counters
//! - `hosts`: hosts, capabilities, the aggregate, missed reports, the zone generation
//! - `aggregate`: the maintained aggregate against a full recomputation after random changes
//! - `placement`: capability filters in SQL and placements under concurrency
//! - `instances`: instances, optimistic updates, capacity given back
//! - `batch`: multi-creates: room for all or none, a batch's rows in one transaction
//! - `zones`: child zones (federation) and the instance mapping

use std::time::Duration;

use api::{Requirement, Resources};
use sqlx::{Connection, PgConnection};
use zone_node::NewHost;
use zone_node::Store;
use zone_node::{validate_host, validate_requirements, Filter};

/// Instantiates every test once per backend, in `mod sqlite` and `mod postgres` of the calling area.
macro_rules! store_test_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = crate::TestDb::sqlite();
                    super::$test(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = crate::TestDb::postgres().await;
                    super::$test(&db).await;
                }
            )*
        }
    };
}

mod accounts;
mod aggregate;
mod batch;
mod connect;
mod hosts;
mod instances;
mod nodes;
mod placement;
mod probe;
mod zones;

/// One test's private database.
pub(crate) struct TestDb {
    backend: &'static str,
    url: String,
    /// Keeps the SQLite file's directory alive for the test.
    _dir: Option<tempfile::TempDir>,
    /// Keeps the PostgreSQL database for the test; dropping it drops the database.
    _pg: Option<test_support::TestDb>,
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        // A parent directory that does not exist yet: connect must create it.
        let url = format!("sqlite://{}/nested/data/zone.db", dir.path().display());
        TestDb { backend: "sqlite", url, _dir: Some(dir), _pg: None }
    }

    /// A fresh PostgreSQL database; panics, saying how to start PostgreSQL, when it is unreachable.
    async fn postgres() -> TestDb {
        let pg = test_support::TestDb::create().await;
        TestDb { backend: "postgres", url: pg.url().to_owned(), _dir: None, _pg: Some(pg) }
    }

    /// A new store (its own pool) on this test's database.
    async fn connect(&self) -> Store {
        Store::connect(&self.url).await.unwrap_or_else(|e| panic!("connect {}: {e}", self.backend))
    }

    /// `n` stores with small pools of their own: `n` "nodes" of one zone.
    async fn connect_nodes(&self, n: usize) -> Vec<Store> {
        let mut stores = Vec::with_capacity(n);
        for _ in 0..n {
            stores.push(self.connect_small(5).await);
        }
        stores
    }

    /// A new store with a small pool, for tests that simulate many nodes.
    async fn connect_small(&self, max_connections: u32) -> Store {
        Store::connect_with(&self.url, max_connections)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.backend))
    }
}

/// Waits until the database clock is past `ms` (bounded, so a broken clock fails the test).
pub(crate) async fn wait_for_db_clock(store: &Store, ms: i64) {
    for _ in 0..400 {
        if store.now_ms().await.unwrap() > ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("database clock never passed {ms}");
}

pub(crate) fn res(vcpus: i64, memory_mb: i64, disk_gb: i64) -> Resources {
    Resources { vcpus, memory_mb, disk_gb }
}

/// A validated host registration from JSON capabilities.
pub(crate) fn new_host(name: &str, caps: serde_json::Value, resources: Resources) -> NewHost {
    let reg = api::HostRegister {
        name: name.into(),
        agent_url: format!("http://agent/{name}"),
        capabilities: serde_json::from_value(caps).expect("capabilities are an object"),
        resources,
        agent_token: None,
    };
    validate_host(&reg).expect("valid host")
}

/// Filters from JSON requirements.
pub(crate) fn filters(reqs: serde_json::Value) -> Vec<Filter> {
    let reqs: Vec<Requirement> = serde_json::from_value(reqs).expect("requirements parse");
    validate_requirements(&reqs).expect("requirements are valid")
}

/// Runs a statement outside the store (for rows this suite's API does not create).
pub(crate) async fn exec_raw(db: &TestDb, sql: &str) {
    if db.backend == "sqlite" {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
        let _ = conn.close().await;
    } else {
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
        let _ = conn.close().await;
    }
}

/// The capability pools of the concurrency test: each host draws from them, and so do requests.
pub(crate) const HYPERVISORS: [&str; 3] = ["kvm", "xen", "esx"];

pub(crate) const OSES: [&str; 2] = ["linux", "windows"];
