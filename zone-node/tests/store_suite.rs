//! The store test suite: every test runs against SQLite and against PostgreSQL.
//!
//! `store_test_suite!` instantiates each test twice, in `mod sqlite` and `mod postgres`, in the
//! manner of quickwit's `metastore_test_suite!`. Each test gets its own database: a file in a
//! temporary directory, or a fresh `zt_<random>` PostgreSQL database created through the admin URL
//! in `ZONE_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and dropped
//! afterwards, even when the test panics. PostgreSQL is required: when it is unreachable the
//! PostgreSQL tests fail with a message saying so, they never skip.
//!
//! Tests that wait for the database clock poll it instead of trusting a sleep, and no assertion
//! depends on tight timing.
//!
//! Run with `cargo test -p zone-node --test store_suite`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use uuid::Uuid;
use zone_node::store::{AccountRow, Store, StoreError, TokenRow};

const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// One test's private database.
struct TestDb {
    backend: &'static str,
    url: String,
    /// Keeps the SQLite file's directory alive for the test.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the admin URL and the database to drop at the end.
    pg: Option<(String, String)>,
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        // A parent directory that does not exist yet: connect must create it.
        let url = format!("sqlite://{}/nested/data/zone.db", dir.path().display());
        TestDb { backend: "sqlite", url, _dir: Some(dir), pg: None }
    }

    async fn postgres() -> TestDb {
        let admin = std::env::var("ZONE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.into());
        let mut conn = match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => panic!(
                "PostgreSQL is required by the store suite and is unreachable at {} ({e}); \
                 start it or point ZONE_TEST_PG_URL at an admin URL",
                redact(&admin)
            ),
            Err(_) => panic!(
                "PostgreSQL is required by the store suite and did not answer within 5 s at {}; \
                 start it or point ZONE_TEST_PG_URL at an admin URL",
                redact(&admin)
            ),
        };
        let name = format!("zt_{}", Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
        let _ = conn.close().await;
        let url = with_database(&admin, &name);
        TestDb { backend: "postgres", url, _dir: None, pg: Some((admin, name)) }
    }

    /// A new store (its own pool) on this test's database.
    async fn connect(&self) -> Store {
        Store::connect(&self.url).await.unwrap_or_else(|e| panic!("connect {}: {e}", self.backend))
    }

    /// A new store with a small pool, for tests that simulate many nodes.
    async fn connect_small(&self, max_connections: u32) -> Store {
        Store::connect_with(&self.url, max_connections)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.backend))
    }
}

impl Drop for TestDb {
    /// Drops the PostgreSQL database, best effort. On a thread of its own with its own runtime:
    /// this runs inside the test's runtime, possibly while unwinding from a panic.
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    // FORCE: pools of the test may still be closing their connections.
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
                        eprintln!("could not drop test database {name}: {e}");
                    }
                }
            });
        })
        .join();
    }
}

/// `admin` with its database replaced by `name`, query string kept.
fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// The URL with any password replaced, for messages.
fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let Some(at) = url[start..].find('@').map(|i| start + i) else {
        return url.into();
    };
    match url[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
        None => url.into(),
    }
}

/// Instantiates every test once per backend.
macro_rules! store_test_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = super::TestDb::sqlite();
                    super::$test(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = super::TestDb::postgres().await;
                    super::$test(&db).await;
                }
            )*
        }
    };
}

store_test_suite!(
    migrations_are_idempotent,
    database_clock,
    zone_identity_is_stable,
    accounts_crud,
    account_delete_cascades_tokens,
    tokens_expire_by_the_database_clock,
    membership_join_heartbeat_transition,
    stale_nodes_are_evicted,
    jobs_run_in_order_and_only_for_their_owner,
    expired_lease_is_taken_over,
    one_running_job_per_queue_under_concurrency,
    probe_counters_are_atomic,
    db_queue_runners_serialise_across_nodes,
    hosts_crud_and_capability_round_trip,
    host_delete_refused_while_instances_remain,
    capability_filters_select_the_right_hosts,
    invalid_requirements_are_refused_and_change_nothing,
    concurrent_placements_never_overcommit,
    aggregate_matches_a_merge_in_rust,
    hosts_marked_down_by_missed_reports,
    generation_counts_up,
    instances_insert_update_remove_keep_capacity_and_generation,
    stale_instance_writes_are_detected,
    child_zones_crud_conflicts_and_generation,
    record_poll_transitions,
    record_poll_bumps_the_generation_once_under_concurrency,
    instance_routes_put_get_delete_and_cascade,
    child_passwords_are_stored_sealed,
);

fn account(username: &str, role: &str, client_id: Option<&str>) -> AccountRow {
    AccountRow {
        username: username.into(),
        password_hash: format!("$argon2id$v=19$fake-hash-of-{username}"),
        role: role.into(),
        client_id: client_id.map(Into::into),
        created_at_ms: 0,
    }
}

/// Waits until the database clock is past `ms` (bounded, so a broken clock fails the test).
async fn wait_for_db_clock(store: &Store, ms: i64) {
    for _ in 0..400 {
        if store.now_ms().await.unwrap() > ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("database clock never passed {ms}");
}

// --- the suite ---

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

async fn database_clock(db: &TestDb) {
    let store = db.connect().await;
    let a = store.now_ms().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = store.now_ms().await.unwrap();
    assert!(b >= a, "database clock went backwards: {a} then {b}");
    // The database runs on this machine: a loose sanity bound that catches unit mistakes
    // (seconds instead of milliseconds), not a timing assertion.
    let local = zone_node::time::local_now_ms();
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

async fn accounts_crud(db: &TestDb) {
    let store = db.connect().await;
    let before = store.now_ms().await.unwrap();
    let alice = store.account_create(&account("alice", "admin", None)).await.unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.role, "admin");
    assert_eq!(alice.client_id, None);
    assert!(alice.created_at_ms >= before, "created_at_ms comes from the database clock");
    assert_eq!(store.account_get("alice").await.unwrap(), Some(alice.clone()));

    let bob = store.account_create(&account("bob", "member", Some("client-1"))).await.unwrap();
    assert_eq!(bob.client_id.as_deref(), Some("client-1"));

    match store.account_create(&account("alice", "member", None)).await {
        Err(StoreError::Conflict(what)) => assert_eq!(what, "account alice"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The existing row is untouched.
    assert_eq!(store.account_get("alice").await.unwrap(), Some(alice.clone()));

    assert!(!store.account_create_if_absent(&account("alice", "member", None)).await.unwrap());
    assert!(store.account_create_if_absent(&account("carol", "member", Some("c3"))).await.unwrap());
    assert_eq!(store.account_get("alice").await.unwrap().unwrap().role, "admin");

    let names: Vec<String> = store.accounts().await.unwrap().into_iter().map(|a| a.username).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);

    assert!(store.account_delete("bob").await.unwrap());
    assert!(!store.account_delete("bob").await.unwrap());
    assert_eq!(store.account_get("bob").await.unwrap(), None);
    assert_eq!(store.account_get("nobody").await.unwrap(), None);
    assert_eq!(store.accounts().await.unwrap().len(), 2);

    // The hash never shows in debug output (logs).
    assert!(!format!("{alice:?}").contains("fake-hash"));
}

async fn account_delete_cascades_tokens(db: &TestDb) {
    let store = db.connect().await;
    store.account_create(&account("alice", "member", Some("c1"))).await.unwrap();
    store.account_create(&account("bob", "member", Some("c2"))).await.unwrap();
    store.token_insert("hash-a1", "alice", 60_000).await.unwrap();
    store.token_insert("hash-a2", "alice", 60_000).await.unwrap();
    store.token_insert("hash-b1", "bob", 60_000).await.unwrap();
    assert!(store.token_lookup("hash-a1").await.unwrap().is_some());

    assert!(store.account_delete("alice").await.unwrap());
    assert_eq!(store.token_lookup("hash-a1").await.unwrap(), None);
    assert_eq!(store.token_lookup("hash-a2").await.unwrap(), None);
    // Recreating the account does not bring the old tokens back: they were deleted, not hidden.
    store.account_create(&account("alice", "member", Some("c1"))).await.unwrap();
    assert_eq!(store.token_lookup("hash-a1").await.unwrap(), None);
    // Other accounts' tokens stay.
    assert_eq!(store.token_lookup("hash-b1").await.unwrap().unwrap().username, "bob");
}

async fn tokens_expire_by_the_database_clock(db: &TestDb) {
    let store = db.connect().await;
    store.account_create(&account("alice", "member", Some("c1"))).await.unwrap();

    let before = store.now_ms().await.unwrap();
    let expires = store.token_insert("hash-long", "alice", 3_600_000).await.unwrap();
    let after = store.now_ms().await.unwrap();
    assert!((before + 3_600_000..=after + 3_600_000).contains(&expires), "expiry {expires}");
    assert_eq!(
        store.token_lookup("hash-long").await.unwrap(),
        Some(TokenRow {
            username: "alice".into(),
            role: "member".into(),
            client_id: Some("c1".into()),
            expires_at_ms: expires,
            expired: false,
        })
    );

    let short = store.token_insert("hash-short", "alice", 100).await.unwrap();
    wait_for_db_clock(&store, short).await;
    let row = store.token_lookup("hash-short").await.unwrap().expect("expired tokens stay until purged");
    assert!(row.expired);
    assert_eq!(store.token_lookup("hash-unknown").await.unwrap(), None);

    assert_eq!(store.tokens_purge_expired().await.unwrap(), 1);
    assert_eq!(store.token_lookup("hash-short").await.unwrap(), None);
    assert!(!store.token_lookup("hash-long").await.unwrap().unwrap().expired);
    assert_eq!(store.tokens_purge_expired().await.unwrap(), 0);

    // A token for an account that does not exist is refused, and the error names no hash.
    let err = store.token_insert("hash-orphan", "nobody", 60_000).await.unwrap_err();
    assert!(!err.to_string().contains("hash-orphan"), "{err}");
}

async fn membership_join_heartbeat_transition(db: &TestDb) {
    let store = db.connect().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(store.node_join(a, "http://a", false).await.unwrap(), 1);
    assert_eq!(store.node_join(b, "http://b", true).await.unwrap(), 2);

    let m = store.membership().await.unwrap();
    assert_eq!(m.epoch, 2);
    assert_eq!(m.nodes.len(), 2);
    let node_a = m.nodes.iter().find(|n| n.id == a).unwrap();
    let node_b = m.nodes.iter().find(|n| n.id == b).unwrap();
    assert_eq!((node_a.state.as_str(), node_a.api_url.as_str()), ("joining", "http://a"));
    assert_eq!((node_b.state.as_str(), node_b.api_url.as_str()), ("alive", "http://b"));
    assert_eq!(node_a.heartbeat_ms, node_a.joined_at_ms);
    assert!(node_a.heartbeat_ms <= m.now_ms && node_b.heartbeat_ms <= m.now_ms);
    assert_eq!(node_a.applied_epoch, 0);

    // Heartbeats do not change membership, so they do not bump the epoch.
    assert!(store.node_heartbeat(a).await.unwrap());
    assert!(!store.node_heartbeat(Uuid::new_v4()).await.unwrap());
    let m2 = store.membership().await.unwrap();
    assert_eq!(m2.epoch, 2);
    let beat = m2.nodes.iter().find(|n| n.id == a).unwrap().heartbeat_ms;
    assert!(beat >= node_a.heartbeat_ms);

    assert!(store.node_transition(a, &["joining"], "alive").await.unwrap());
    assert_eq!(store.membership().await.unwrap().epoch, 3);
    // Not in a `from` state: nothing changes, the epoch stays.
    assert!(!store.node_transition(a, &["joining"], "alive").await.unwrap());
    assert!(!store.node_transition(a, &[], "leaving").await.unwrap());
    assert!(!store.node_transition(Uuid::new_v4(), &["alive"], "leaving").await.unwrap());
    assert_eq!(store.membership().await.unwrap().epoch, 3);

    store.node_ack_epoch(a, 3).await.unwrap();
    store.node_ack_epoch(a, 2).await.unwrap(); // never lowers
    let m3 = store.membership().await.unwrap();
    assert_eq!(m3.nodes.iter().find(|n| n.id == a).unwrap().applied_epoch, 3);

    // Leaving nodes still heartbeat; once left, the heartbeat says stop.
    assert!(store.node_transition(b, &["joining", "alive"], "leaving").await.unwrap());
    assert!(store.node_heartbeat(b).await.unwrap());
    assert!(store.node_transition(b, &["leaving"], "left").await.unwrap());
    assert!(!store.node_heartbeat(b).await.unwrap());
    assert_eq!(store.membership().await.unwrap().epoch, 5);

    // An unknown state is refused by the schema and changes nothing.
    assert!(store.node_transition(a, &["alive"], "bogus").await.is_err());
    let m4 = store.membership().await.unwrap();
    assert_eq!(m4.epoch, 5);
    assert_eq!(m4.nodes.iter().find(|n| n.id == a).unwrap().state, "alive");
}

async fn stale_nodes_are_evicted(db: &TestDb) {
    let store = db.connect().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    store.node_join(a, "http://a", true).await.unwrap();
    store.node_join(b, "http://b", true).await.unwrap();
    assert!(store.nodes_evict_stale(3_600_000).await.unwrap().is_empty());
    assert_eq!(store.membership().await.unwrap().epoch, 2);

    // a stops beating; b keeps going. Generous margins: a is 1.5 s stale, b fresh.
    let joined = store.now_ms().await.unwrap();
    wait_for_db_clock(&store, joined + 1_500).await;
    assert!(store.node_heartbeat(b).await.unwrap());
    assert_eq!(store.nodes_evict_stale(1_000).await.unwrap(), vec![a]);

    let m = store.membership().await.unwrap();
    assert_eq!(m.epoch, 3, "one bump for the eviction");
    assert_eq!(m.nodes.iter().find(|n| n.id == a).unwrap().state, "dead");
    assert_eq!(m.nodes.iter().find(|n| n.id == b).unwrap().state, "alive");

    // Nothing more to evict: no bump.
    assert!(store.nodes_evict_stale(60_000).await.unwrap().is_empty());
    assert_eq!(store.membership().await.unwrap().epoch, 3);

    // The evicted node learns it from its heartbeat, and the heartbeat does not revive it.
    assert!(!store.node_heartbeat(a).await.unwrap());
    let m = store.membership().await.unwrap();
    assert_eq!(m.nodes.iter().find(|n| n.id == a).unwrap().state, "dead");

    assert_eq!(store.nodes_purge(3_600_000).await.unwrap(), 0, "too recent to purge");
    assert_eq!(store.nodes_purge(0).await.unwrap(), 1);
    let m = store.membership().await.unwrap();
    assert_eq!(m.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![b]);
}

async fn jobs_run_in_order_and_only_for_their_owner(db: &TestDb) {
    let store = db.connect().await;
    let (n1, n2) = (Uuid::new_v4(), Uuid::new_v4());
    let j1 = store.job_enqueue("q", "p1").await.unwrap();
    let j2 = store.job_enqueue("q", "p2").await.unwrap();
    let j3 = store.job_enqueue("q", "p3").await.unwrap();
    let r1 = store.job_enqueue("r", "x").await.unwrap();
    assert!(j1 < j2 && j2 < j3);
    assert_eq!(store.job_queues_pending().await.unwrap(), ["q", "r"]);

    let now = store.now_ms().await.unwrap();
    let job = store.job_claim("q", n1, 60_000).await.unwrap().expect("a job to claim");
    assert_eq!((job.id, job.queue.as_str(), job.payload.as_str()), (j1, "q", "p1"));
    assert_eq!((job.state.as_str(), job.owner), ("running", Some(n1)));
    let lease = job.lease_until_ms.unwrap();
    assert!(lease >= now + 60_000);
    assert_eq!(job.result, None);
    assert_eq!(store.job_get(j1).await.unwrap(), Some(job.clone()));

    // One running job per queue, whoever asks.
    assert_eq!(store.job_claim("q", n2, 60_000).await.unwrap(), None);
    assert_eq!(store.job_claim("q", n1, 60_000).await.unwrap(), None);
    // Other queues run alongside.
    assert_eq!(store.job_claim("r", n2, 60_000).await.unwrap().unwrap().id, r1);

    // Only the owner renews or finishes.
    assert!(!store.job_renew(j1, n2, 60_000).await.unwrap());
    assert!(!store.job_finish(j1, n2, true, "stolen").await.unwrap());
    assert_eq!(store.job_get(j1).await.unwrap().unwrap().owner, Some(n1));
    assert!(store.job_renew(j1, n1, 120_000).await.unwrap());
    let renewed = store.job_get(j1).await.unwrap().unwrap();
    assert!(renewed.lease_until_ms.unwrap() > lease);

    assert!(store.job_finish(j1, n1, true, "ok-1").await.unwrap());
    let done = store.job_get(j1).await.unwrap().unwrap();
    assert_eq!((done.state.as_str(), done.result.as_deref(), done.lease_until_ms), ("done", Some("ok-1"), None));
    assert!(!store.job_finish(j1, n1, true, "again").await.unwrap());
    assert!(!store.job_renew(j1, n1, 60_000).await.unwrap());

    let job = store.job_claim("q", n2, 60_000).await.unwrap().unwrap();
    assert_eq!(job.id, j2);
    assert!(store.job_finish(j2, n2, false, "boom").await.unwrap());
    let failed = store.job_get(j2).await.unwrap().unwrap();
    assert_eq!((failed.state.as_str(), failed.result.as_deref()), ("failed", Some("boom")));

    assert_eq!(store.job_claim("q", n1, 60_000).await.unwrap().unwrap().id, j3);
    assert!(store.job_finish(j3, n1, true, "").await.unwrap());
    assert_eq!(store.job_claim("q", n1, 60_000).await.unwrap(), None);
    // r1 runs under a live lease: not pending.
    assert!(store.job_queues_pending().await.unwrap().is_empty());
    assert!(store.job_finish(r1, n2, true, "").await.unwrap());
    assert_eq!(store.job_get(i64::MAX).await.unwrap(), None);
}

async fn expired_lease_is_taken_over(db: &TestDb) {
    let store = db.connect().await;
    let (n1, n2) = (Uuid::new_v4(), Uuid::new_v4());
    let j1 = store.job_enqueue("q", "first").await.unwrap();
    let j2 = store.job_enqueue("q", "second").await.unwrap();

    // n1 claims with a lease and then stalls.
    let job = store.job_claim("q", n1, 2_000).await.unwrap().unwrap();
    assert_eq!(job.id, j1);
    assert_eq!(store.job_claim("q", n2, 60_000).await.unwrap(), None, "lease still live");

    wait_for_db_clock(&store, job.lease_until_ms.unwrap()).await;
    assert_eq!(store.job_queues_pending().await.unwrap(), ["q"], "a stuck job is claimable");

    // n2 takes over the same job, before the newer one.
    let taken = store.job_claim("q", n2, 60_000).await.unwrap().expect("takeover");
    assert_eq!((taken.id, taken.owner, taken.state.as_str()), (j1, Some(n2), "running"));

    // n1 wakes up: it no longer owns the job.
    assert!(!store.job_renew(j1, n1, 60_000).await.unwrap());
    assert!(!store.job_finish(j1, n1, true, "late").await.unwrap());
    assert_eq!(store.job_get(j1).await.unwrap().unwrap().owner, Some(n2));

    assert!(store.job_finish(j1, n2, true, "taken over").await.unwrap());
    assert_eq!(store.job_get(j1).await.unwrap().unwrap().result.as_deref(), Some("taken over"));
    assert_eq!(store.job_claim("q", n1, 60_000).await.unwrap().unwrap().id, j2);
}

async fn one_running_job_per_queue_under_concurrency(db: &TestDb) {
    const JOBS: usize = 50;
    const CLAIMERS: usize = 8;
    let setup = db.connect().await;
    let mut ids = Vec::new();
    for i in 0..JOBS {
        ids.push(setup.job_enqueue("serial", &format!("job-{i}")).await.unwrap());
    }

    let active = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..CLAIMERS {
        // Each claimer is a node: its own id and its own pool.
        let store = db.connect_small(2).await;
        let node = Uuid::new_v4();
        let (active, overlaps, finished, order) = (active.clone(), overlaps.clone(), finished.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let mut ran = 0usize;
            while finished.load(Ordering::SeqCst) < JOBS {
                let Some(job) = store.job_claim("serial", node, 30_000).await.unwrap() else {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    continue;
                };
                if active.fetch_add(1, Ordering::SeqCst) > 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                order.lock().unwrap().push(job.id);
                // Hold the job a moment so that a second runner, if any, would overlap.
                tokio::time::sleep(Duration::from_millis(2)).await;
                active.fetch_sub(1, Ordering::SeqCst);
                assert!(store.job_finish(job.id, node, true, "ok").await.unwrap());
                finished.fetch_add(1, Ordering::SeqCst);
                ran += 1;
            }
            store.close().await;
            ran
        }));
    }
    let all = futures::future::try_join_all(tasks);
    let ran = tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("50 jobs did not finish within 120 s")
        .expect("a claimer panicked");

    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two jobs of one queue ran at once");
    assert_eq!(ran.iter().sum::<usize>(), JOBS);
    assert_eq!(*order.lock().unwrap(), ids, "jobs ran out of FIFO order");
    for id in ids {
        assert_eq!(setup.job_get(id).await.unwrap().unwrap().state, "done");
    }
}

async fn probe_counters_are_atomic(db: &TestDb) {
    const TASKS: usize = 20;
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(db.connect_small(5).await);
    }
    // Every task enters, then waits until all have entered, then exits: the true maximum of
    // concurrent workers is exactly TASKS, whatever the scheduling.
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let store = stores[i % stores.len()].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let active = store.probe_enter("res-1").await.unwrap();
            barrier.wait().await;
            let completed = store.probe_exit("res-1").await.unwrap();
            (active, completed)
        }));
    }
    let results = tokio::time::timeout(Duration::from_secs(60), futures::future::try_join_all(tasks))
        .await
        .expect("probe tasks did not finish within 60 s")
        .unwrap();
    let actives: BTreeSet<i64> = results.iter().map(|r| r.0).collect();
    let completed: BTreeSet<i64> = results.iter().map(|r| r.1).collect();
    let expected: BTreeSet<i64> = (1..=TASKS as i64).collect();
    assert_eq!(actives, expected, "every enter saw a distinct count");
    assert_eq!(completed, expected, "every exit saw a distinct count");

    let store = &stores[0];
    for _ in 0..5 {
        assert_eq!(store.probe_enter("res-2").await.unwrap(), 1);
        store.probe_exit("res-2").await.unwrap();
    }
    assert_eq!(store.probe_exit("res-3").await.unwrap(), 1, "an exit without an enter still counts");

    let stats = store.probe_stats().await.unwrap();
    let by_id = |id: &str| stats.iter().find(|r| r.resource_id == id).unwrap().clone();
    let r1 = by_id("res-1");
    assert_eq!((r1.active, r1.max_active, r1.completed), (0, TASKS as i64, TASKS as i64));
    let r2 = by_id("res-2");
    assert_eq!((r2.active, r2.max_active, r2.completed), (0, 1, 5));
    let r3 = by_id("res-3");
    assert_eq!((r3.active, r3.completed), (-1, 1));
    assert_eq!(stats.len(), 3);
}

// --- outside the suite: connection handling ---

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

#[test]
fn test_helpers() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "zt_x"),
        "postgres://postgres@127.0.0.1:5432/zt_x"
    );
    assert_eq!(with_database("postgres://h:5432?sslmode=disable", "zt_x"), "postgres://h:5432/zt_x?sslmode=disable");
    assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
}

/// The database-backed work queue as nodes run it: three runners (three "nodes", each with its
/// own pool) on one queue run its jobs one at a time, in order, recording each job's outcome.
async fn db_queue_runners_serialise_across_nodes(db: &TestDb) {
    use zone_node::workqueue::DbQueue;
    const JOBS: usize = 20;
    let setup = DbQueue::new(db.connect().await, Uuid::new_v4());
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let payload = if i == 7 { "fail".to_string() } else { format!("job-{i}") };
        ids.push(setup.enqueue("vr-create", &payload).await.unwrap());
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let active = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut runners = Vec::new();
    for _ in 0..3 {
        let queue = DbQueue::new(db.connect_small(2).await, Uuid::new_v4());
        let (stop, active, overlaps, order) = (stop.clone(), active.clone(), overlaps.clone(), order.clone());
        runners.push(tokio::spawn(async move {
            queue
                .run("vr-create", stop, |job| {
                    let (active, overlaps, order) = (active.clone(), overlaps.clone(), order.clone());
                    async move {
                        if active.fetch_add(1, Ordering::SeqCst) > 0 {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        order.lock().unwrap().push(job.id);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        active.fetch_sub(1, Ordering::SeqCst);
                        if job.payload == "fail" {
                            Err("agent refused".to_string())
                        } else {
                            Ok(format!("done {}", job.payload))
                        }
                    }
                })
                .await
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let last = setup.job(*ids.last().unwrap()).await.unwrap().unwrap();
        if last.state == "done" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the queue did not drain in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    for r in runners {
        r.await.unwrap();
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two jobs of one queue ran at once");
    assert_eq!(*order.lock().unwrap(), ids, "jobs ran out of order (or one ran twice)");
    for (i, id) in ids.iter().enumerate() {
        let job = setup.job(*id).await.unwrap().unwrap();
        if i == 7 {
            assert_eq!((job.state.as_str(), job.result.as_deref()), ("failed", Some("agent refused")));
        } else {
            assert_eq!(job.state, "done");
            assert_eq!(job.result, Some(format!("done job-{i}")));
        }
    }
}

// --- zone resources: hosts, the scheduler, the aggregate ---

use std::collections::BTreeMap;

use api::{AggregateEntry, CapabilityValue, Requirement, Resources};
use zone_node::scheduler::{validate_host, validate_requirements, Filter};
use zone_node::store::{HostRow, NewHost};

fn res(vcpus: i64, memory_mb: i64, disk_gb: i64) -> Resources {
    Resources { vcpus, memory_mb, disk_gb }
}

/// A validated host registration from JSON capabilities.
fn new_host(name: &str, caps: serde_json::Value, resources: Resources) -> NewHost {
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
fn filters(reqs: serde_json::Value) -> Vec<Filter> {
    let reqs: Vec<Requirement> = serde_json::from_value(reqs).expect("requirements parse");
    validate_requirements(&reqs).expect("requirements are valid")
}

/// Runs a statement outside the store (for rows this suite's API does not create).
async fn exec_raw(db: &TestDb, sql: &str) {
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

async fn hosts_crud_and_capability_round_trip(db: &TestDb) {
    let store = db.connect().await;
    let before = store.now_ms().await.unwrap();
    let spec = new_host(
        "h1",
        serde_json::json!({"free-disk": 500, "load": 0.25, "can-run-windows": true,
                           "accept-migrations": false, "hypervisor": "kvm", "os": "1.0"}),
        res(16, 65536, 1000),
    );
    let h1 = store.host_create(&spec).await.unwrap();
    assert_eq!(h1.state, "up");
    assert_eq!(h1.total, res(16, 65536, 1000));
    assert_eq!(h1.used, res(0, 0, 0));
    assert!(h1.created_at_ms >= before && h1.last_report_ms >= before);

    // Types are preserved through the (string, float, type) tuple: "1.0" stays a string,
    // 500 a float, false a bool.
    let got = store.host_get(h1.id).await.unwrap().unwrap();
    assert_eq!(got, h1);
    let caps = &got.capabilities;
    assert_eq!(caps["free-disk"], CapabilityValue::Float(500.0));
    assert_eq!(caps["load"], CapabilityValue::Float(0.25));
    assert_eq!(caps["can-run-windows"], CapabilityValue::Bool(true));
    assert_eq!(caps["accept-migrations"], CapabilityValue::Bool(false));
    assert_eq!(caps["hypervisor"], CapabilityValue::String("kvm".into()));
    assert_eq!(caps["os"], CapabilityValue::String("1.0".into()));
    let json = serde_json::to_value(got.to_api()).unwrap();
    assert_eq!(json["capabilities"]["free-disk"], serde_json::json!({"type": "float", "value": 500.0}));
    assert_eq!(json["capabilities"]["can-run-windows"], serde_json::json!({"type": "bool", "value": true}));
    assert_eq!(json["capabilities"]["os"], serde_json::json!({"type": "string", "value": "1.0"}));

    // Names are unique; the failed insert leaves nothing behind (one transaction).
    match store.host_create(&new_host("h1", serde_json::json!({"x": 1}), res(1, 1, 1))).await {
        Err(StoreError::Conflict(what)) => assert_eq!(what, "host h1"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let h2 = store.host_create(&new_host("h2", serde_json::json!({}), res(4, 4096, 100))).await.unwrap();
    let all = store.hosts().await.unwrap();
    assert_eq!(all.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["h1", "h2"]);
    assert_eq!(all[0], h1);
    assert!(all[1].capabilities.is_empty());

    // Replacing the set removes what is absent and bumps the version.
    let mut new_caps = BTreeMap::new();
    new_caps.insert("hypervisor".to_string(), CapabilityValue::String("xen".into()));
    new_caps.insert("free-disk".to_string(), CapabilityValue::Float(12.5));
    assert!(store.host_set_capabilities(h1.id, &new_caps).await.unwrap());
    let got = store.host_get(h1.id).await.unwrap().unwrap();
    assert_eq!(got.capabilities, new_caps);
    assert!(got.version > h1.version);
    assert!(!store.host_set_capabilities(Uuid::new_v4(), &new_caps).await.unwrap());
    // Unchanged keys stay, a key may change type, and an empty set removes every capability.
    let mut retyped = new_caps.clone();
    retyped.insert("hypervisor".to_string(), CapabilityValue::Float(3.0));
    assert!(store.host_set_capabilities(h1.id, &retyped).await.unwrap());
    assert_eq!(store.host_get(h1.id).await.unwrap().unwrap().capabilities, retyped);
    assert!(store.host_set_capabilities(h1.id, &BTreeMap::new()).await.unwrap());
    assert!(store.host_get(h1.id).await.unwrap().unwrap().capabilities.is_empty());

    // A report with capabilities replaces them too.
    let mut reported = BTreeMap::new();
    reported.insert("free-ram".to_string(), CapabilityValue::Float(2048.0));
    assert_eq!(store.host_report(h2.id, Some(&reported)).await.unwrap(), Some(false));
    assert_eq!(store.host_get(h2.id).await.unwrap().unwrap().capabilities, reported);
    assert_eq!(store.host_report(Uuid::new_v4(), None).await.unwrap(), None);

    // Reservations and releases; a release never goes below zero.
    assert!(store.reserve(h2.id, &res(4, 1000, 10)).await.unwrap());
    assert!(!store.reserve(h2.id, &res(1, 0, 0)).await.unwrap(), "vcpus are full");
    assert!(!store.reserve(Uuid::new_v4(), &res(0, 0, 0)).await.unwrap());
    assert_eq!(store.host_get(h2.id).await.unwrap().unwrap().used, res(4, 1000, 10));
    assert!(!store.release(h2.id, &res(5, 0, 0)).await.unwrap());
    assert!(store.release(h2.id, &res(4, 1000, 10)).await.unwrap());
    assert_eq!(store.host_get(h2.id).await.unwrap().unwrap().used, res(0, 0, 0));

    // Delete cascades to the capabilities.
    assert!(store.host_delete(h1.id).await.unwrap());
    assert!(!store.host_delete(h1.id).await.unwrap());
    assert_eq!(store.host_get(h1.id).await.unwrap(), None);
    assert!(store
        .candidates(&filters(serde_json::json!([{"key": "hypervisor", "op": "exists"}])), &res(0, 0, 0), 10)
        .await
        .unwrap()
        .is_empty());
    // The name is free again.
    store.host_create(&spec).await.unwrap();
}

async fn host_delete_refused_while_instances_remain(db: &TestDb) {
    let store = db.connect().await;
    let h = store.host_create(&new_host("busy", serde_json::json!({}), res(4, 4096, 100))).await.unwrap();
    exec_raw(
        db,
        &format!(
            "INSERT INTO instances (id, name, client_id, state, host_id, vcpus, memory_mb, disk_gb, \
             created_at_ms, updated_at_ms) VALUES ('i-1', 'vm', 'c1', 'running', '{}', 1, 512, 10, 0, 0)",
            h.id
        ),
    )
    .await;
    match store.host_delete(h.id).await {
        Err(StoreError::InUse(msg)) => {
            assert!(msg.contains(&h.id.to_string()) && msg.contains("1 instance"), "{msg}")
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(store.host_get(h.id).await.unwrap().is_some());
    exec_raw(db, "DELETE FROM instances WHERE id = 'i-1'").await;
    assert!(store.host_delete(h.id).await.unwrap());
}

async fn capability_filters_select_the_right_hosts(db: &TestDb) {
    let store = db.connect().await;
    let specs = [
        ("a", serde_json::json!({"speed": 2, "win": true, "hv": "kvm", "gpu": "t4"})),
        ("b", serde_json::json!({"speed": 3, "win": false, "hv": "xen"})),
        ("c", serde_json::json!({"speed": 4.5, "hv": "kvm"})),
        ("d", serde_json::json!({"speed": "fast", "win": true})),
        ("e", serde_json::json!({})),
    ];
    let mut names = BTreeMap::new();
    let mut rows: Vec<HostRow> = Vec::new();
    for (name, caps) in specs {
        let h = store.host_create(&new_host(name, caps, res(8, 8192, 100))).await.unwrap();
        names.insert(h.id, name);
        rows.push(h);
    }
    let cases: Vec<(serde_json::Value, &[&str])> = vec![
        // float
        (serde_json::json!({"key": "speed", "op": "eq", "value": 3}), &["b"]),
        (serde_json::json!({"key": "speed", "op": "ne", "value": 3}), &["a", "c", "d"]),
        (serde_json::json!({"key": "speed", "op": "lt", "value": 3}), &["a"]),
        (serde_json::json!({"key": "speed", "op": "le", "value": 3}), &["a", "b"]),
        (serde_json::json!({"key": "speed", "op": "gt", "value": 3}), &["c"]),
        (serde_json::json!({"key": "speed", "op": "ge", "value": 3}), &["b", "c"]),
        (serde_json::json!({"key": "speed", "op": "in", "value": [2, 4.5, 7]}), &["a", "c"]),
        (serde_json::json!({"key": "speed", "op": "exists"}), &["a", "b", "c", "d"]),
        // bool
        (serde_json::json!({"key": "win", "op": "eq", "value": true}), &["a", "d"]),
        (serde_json::json!({"key": "win", "op": "eq", "value": false}), &["b"]),
        (serde_json::json!({"key": "win", "op": "ne", "value": true}), &["b"]),
        (serde_json::json!({"key": "win", "op": "in", "value": [false]}), &["b"]),
        (serde_json::json!({"key": "win", "op": "exists", "value": null}), &["a", "b", "d"]),
        // a bool is not the number 1, and a range never matches a bool or a string
        (serde_json::json!({"key": "win", "op": "eq", "value": 1}), &[]),
        (serde_json::json!({"key": "win", "op": "ge", "value": 0}), &[]),
        // string
        (serde_json::json!({"key": "hv", "op": "eq", "value": "kvm"}), &["a", "c"]),
        (serde_json::json!({"key": "hv", "op": "ne", "value": "kvm"}), &["b"]),
        (serde_json::json!({"key": "hv", "op": "in", "value": ["xen", "esx"]}), &["b"]),
        (serde_json::json!({"key": "hv", "op": "exists"}), &["a", "b", "c"]),
        (serde_json::json!({"key": "speed", "op": "eq", "value": "fast"}), &["d"]),
        (serde_json::json!({"key": "gpu", "op": "lt", "value": 5}), &[]),
        (serde_json::json!({"key": "nothing", "op": "exists"}), &[]),
        // values are bound, never spliced into the SQL
        (serde_json::json!({"key": "hv", "op": "eq", "value": "kvm' OR '1'='1"}), &[]),
    ];
    for (req, expected) in cases {
        let f = filters(serde_json::json!([req.clone()]));
        let ids = store.candidates(&f, &res(0, 0, 0), 100).await.unwrap();
        let mut got: Vec<&str> = ids.iter().map(|id| names[id]).collect();
        got.sort();
        assert_eq!(got, expected, "{req}");
        // The Rust reference semantics agree with the SQL.
        let mut reference: Vec<&str> =
            rows.iter().filter(|h| f.iter().all(|f| f.matches(&h.capabilities))).map(|h| h.name.as_str()).collect();
        reference.sort();
        assert_eq!(reference, expected, "reference semantics of {req}");
    }
    // Several filters are a conjunction.
    let f = filters(serde_json::json!([
        {"key": "hv", "op": "eq", "value": "kvm"},
        {"key": "speed", "op": "ge", "value": 1},
        {"key": "win", "op": "exists"}
    ]));
    let ids = store.candidates(&f, &res(0, 0, 0), 100).await.unwrap();
    assert_eq!(ids.iter().map(|id| names[id]).collect::<Vec<_>>(), ["a"]);
    // No filter: every up host with room, and the limit holds.
    assert_eq!(store.candidates(&[], &res(0, 0, 0), 100).await.unwrap().len(), 5);
    assert_eq!(store.candidates(&[], &res(0, 0, 0), 2).await.unwrap().len(), 2);
    assert!(store.candidates(&[], &res(9, 0, 0), 100).await.unwrap().is_empty());

    // Weighing: the host with the most free capacity comes first.
    let a = rows[0].id;
    assert!(store.reserve(rows[1].id, &res(4, 4096, 0)).await.unwrap());
    assert!(store.reserve(rows[2].id, &res(2, 2048, 0)).await.unwrap());
    assert!(store.reserve(rows[3].id, &res(1, 1024, 0)).await.unwrap());
    assert!(store.reserve(rows[4].id, &res(1, 1024, 0)).await.unwrap());
    assert_eq!(store.candidates(&[], &res(0, 0, 0), 1).await.unwrap(), [a]);
    assert_eq!(store.place(&[], &res(1, 1, 1)).await.unwrap(), Some(a));
}

async fn invalid_requirements_are_refused_and_change_nothing(db: &TestDb) {
    let store = db.connect().await;
    let h = store.host_create(&new_host("h", serde_json::json!({"speed": 3}), res(8, 8192, 100))).await.unwrap();
    // An unknown op is a serde error.
    let err =
        serde_json::from_value::<Vec<Requirement>>(serde_json::json!([{"key": "speed", "op": "between", "value": 1}]))
            .unwrap_err();
    assert!(err.to_string().contains("unknown variant"), "{err}");
    let cases = [
        (serde_json::json!([{"key": "speed", "op": "ge", "value": "3"}]), "requirements[0]", "a number"),
        (
            serde_json::json!([{"key": "speed", "op": "exists"}, {"key": "speed", "op": "lt", "value": true}]),
            "requirements[1]",
            "a number",
        ),
        (serde_json::json!([{"key": "speed", "op": "in", "value": []}]), "requirements[0]", "non-empty"),
        (serde_json::json!([{"key": "speed", "op": "in", "value": [1, "x"]}]), "requirements[0]", "one type"),
        (serde_json::json!([{"key": "speed", "op": "in", "value": [[1]]}]), "requirements[0]", "array"),
        (serde_json::json!([{"key": "speed", "op": "exists", "value": 1}]), "requirements[0]", "no value"),
        (serde_json::json!([{"key": "bad key!", "op": "exists"}]), "requirements[0]", "key must match"),
        (serde_json::json!([{"key": "", "op": "exists"}]), "requirements[0]", "key must match"),
        (serde_json::json!([{"key": "speed", "op": "eq"}]), "requirements[0]", "needs a value"),
    ];
    for (body, index, what) in cases {
        let reqs: Vec<Requirement> = serde_json::from_value(body.clone()).unwrap();
        let err = validate_requirements(&reqs).unwrap_err();
        assert_eq!(err.code(), api::ErrorCode::InvalidRequirements);
        let msg = err.to_string();
        assert!(msg.contains(index) && msg.contains(what), "{body}: {msg}");
    }
    for r in [res(-1, 1, 1), res(1, -1, 1), res(1, 1, -1), res(1 << 40, 1, 1), res(1, i64::MAX, 1)] {
        let err = zone_node::scheduler::validate_resources(&r).unwrap_err();
        assert_eq!(err.code(), api::ErrorCode::InvalidResources, "{r:?}");
    }
    // A host registration with a non-scalar capability or a bad key is refused too.
    for caps in [serde_json::json!({"x": [1]}), serde_json::json!({"x": null}), serde_json::json!({"a b": 1})] {
        let reg = api::HostRegister {
            name: "x".into(),
            agent_url: "http://x".into(),
            capabilities: serde_json::from_value(caps).unwrap(),
            resources: res(1, 1, 1),
            agent_token: None,
        };
        assert!(validate_host(&reg).is_err());
    }
    // Nothing changed.
    assert_eq!(store.hosts().await.unwrap(), [h]);
}

/// The capability pools of the concurrency test: each host draws from them, and so do requests.
const HYPERVISORS: [&str; 3] = ["kvm", "xen", "esx"];
const OSES: [&str; 2] = ["linux", "windows"];

fn random_requirement(rng: &mut impl rand::Rng) -> serde_json::Value {
    use serde_json::json;
    match rng.gen_range(0..10) {
        0 => json!({"key": "hypervisor", "op": "eq", "value": HYPERVISORS[rng.gen_range(0..3)]}),
        1 => json!({"key": "hypervisor", "op": "ne", "value": HYPERVISORS[rng.gen_range(0..3)]}),
        2 => json!({"key": "os", "op": "in", "value": [OSES[rng.gen_range(0..2)]]}),
        3 => json!({"key": "can-run-windows", "op": "eq", "value": rng.gen_bool(0.5)}),
        4 => json!({"key": "free-disk", "op": "ge", "value": rng.gen_range(0..1000)}),
        5 => json!({"key": "free-disk", "op": "lt", "value": rng.gen_range(200..1200)}),
        6 => json!({"key": "average-load", "op": "le", "value": rng.gen_range(0..10) as f64 / 10.0}),
        7 => json!({"key": "average-load", "op": "gt", "value": rng.gen_range(0..10) as f64 / 10.0}),
        8 => json!({"key": "ssd", "op": "exists"}),
        _ => json!({"key": "rack", "op": "in", "value": [rng.gen_range(0..5), rng.gen_range(0..5)]}),
    }
}

async fn concurrent_placements_never_overcommit(db: &TestDb) {
    use rand::{Rng, SeedableRng};
    const HOSTS: usize = 50;
    const PLACEMENTS: usize = 1000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let setup = db.connect().await;
    for i in 0..HOSTS {
        let mut caps = serde_json::json!({
            "hypervisor": HYPERVISORS[i % 3],
            "os": OSES[i % 2],
            "can-run-windows": i % 2 == 1,
            "free-disk": rng.gen_range(100..1100),
            "average-load": rng.gen_range(0..10) as f64 / 10.0,
            "rack": (i % 5) as f64,
        });
        if i % 4 == 0 {
            caps["ssd"] = serde_json::json!(true);
        }
        let total = res(rng.gen_range(8..33), rng.gen_range(16..65) * 1024, rng.gen_range(200..1000));
        setup.host_create(&new_host(&format!("host-{i:02}"), caps, total)).await.unwrap();
    }
    let requests: Vec<(Vec<Filter>, Resources)> = (0..PLACEMENTS)
        .map(|_| {
            let n = rng.gen_range(0..3);
            let reqs = serde_json::Value::Array((0..n).map(|_| random_requirement(&mut rng)).collect());
            let want = res(rng.gen_range(1..5), rng.gen_range(1..9) * 512, rng.gen_range(5..60));
            (filters(reqs), want)
        })
        .collect();

    // Four "nodes", each with its own pool, placing all at once.
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(db.connect_small(5).await);
    }
    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, (f, want))| {
            let store = stores[i % stores.len()].clone();
            tokio::spawn(async move { store.place(&f, &want).await })
        })
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(180), futures::future::try_join_all(tasks))
        .await
        .expect("1,000 placements did not finish within 180 s")
        .expect("a placement task panicked");

    let hosts: BTreeMap<Uuid, HostRow> = setup.hosts().await.unwrap().into_iter().map(|h| (h.id, h)).collect();
    let mut reserved: BTreeMap<Uuid, Resources> = BTreeMap::new();
    let mut placed = 0;
    for ((f, want), result) in requests.iter().zip(results) {
        match result.expect("placement failed with a store error") {
            Some(id) => {
                placed += 1;
                let host = &hosts[&id];
                for filter in f {
                    assert!(
                        filter.matches(&host.capabilities),
                        "{} placed on {} which fails {filter:?}",
                        placed,
                        host.name
                    );
                }
                let r = reserved.entry(id).or_default();
                r.vcpus += want.vcpus;
                r.memory_mb += want.memory_mb;
                r.disk_gb += want.disk_gb;
            }
            None => {
                // Capacity only shrank during the run: a refusal must still be right at the end.
                let fits = hosts.values().any(|h| {
                    f.iter().all(|f| f.matches(&h.capabilities))
                        && h.total.vcpus - h.used.vcpus >= want.vcpus
                        && h.total.memory_mb - h.used.memory_mb >= want.memory_mb
                        && h.total.disk_gb - h.used.disk_gb >= want.disk_gb
                });
                assert!(!fits, "a placement was refused although a host fits: {f:?} {want:?}");
            }
        }
    }
    eprintln!("{}: {placed} of {PLACEMENTS} placements succeeded on {} hosts", db.backend, reserved.len());
    assert!(placed > 100, "only {placed} of {PLACEMENTS} placements succeeded");
    for h in hosts.values() {
        assert!(
            h.used.vcpus <= h.total.vcpus && h.used.memory_mb <= h.total.memory_mb && h.used.disk_gb <= h.total.disk_gb,
            "{} is over capacity: {:?} of {:?}",
            h.name,
            h.used,
            h.total
        );
        assert_eq!(
            h.used,
            reserved.get(&h.id).copied().unwrap_or_default(),
            "{}: used differs from the sum of its reservations",
            h.name
        );
    }
    for s in &stores {
        s.close().await;
    }
}

async fn aggregate_matches_a_merge_in_rust(db: &TestDb) {
    use rand::{Rng, SeedableRng};
    let store = db.connect().await;
    assert!(store.aggregate().await.unwrap().is_empty());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..30 {
        let mut caps = serde_json::json!({
            "free-disk": rng.gen_range(0..1000),
            "average-load": rng.gen_range(0..100) as f64 / 4.0,
            "can-run-windows": rng.gen_bool(0.3),
            "hypervisor": HYPERVISORS[rng.gen_range(0..3)],
        });
        if i % 3 == 0 {
            caps["accept-migrations"] = serde_json::json!(true);
        }
        // 100 distinct values: the string set is bounded.
        caps["serial"] = serde_json::json!(format!("s{:03}", i * 7 % 100 + 100 * (i % 4)));
        store.host_create(&new_host(&format!("h{i}"), caps, res(1, 1, 1))).await.unwrap();
    }
    // A down host is left out.
    let down = store
        .host_create(&new_host("down", serde_json::json!({"free-disk": 99999, "zzz": "only-here"}), res(1, 1, 1)))
        .await
        .unwrap();
    exec_raw(db, &format!("UPDATE hosts SET state = 'down' WHERE id = '{}'", down.id)).await;

    let aggregate = store.aggregate().await.unwrap();
    let mut expected = api::Aggregate::new();
    for h in store.hosts().await.unwrap().iter().filter(|h| h.state == "up") {
        for (key, value) in &h.capabilities {
            let one = AggregateEntry::of(value);
            match expected.get_mut(key) {
                Some(e) => e.merge(&one),
                None => {
                    expected.insert(key.clone(), one);
                }
            }
        }
    }
    assert_eq!(aggregate.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    assert!(!aggregate.contains_key("zzz"));
    for (key, want) in &expected {
        let got = &aggregate[key];
        match (got, want) {
            (
                AggregateEntry::Float { min, max, sum, count },
                AggregateEntry::Float { min: m2, max: x2, sum: s2, count: c2 },
            ) => {
                assert_eq!((min, max, count), (m2, x2, c2), "{key}");
                assert!((sum - s2).abs() < 1e-6, "{key}: sum {sum} vs {s2}");
            }
            _ => assert_eq!(got, want, "{key}"),
        }
    }
    match &aggregate["accept-migrations"] {
        AggregateEntry::Bool { any, all, count } => assert_eq!((*any, *all, *count), (true, true, 10)),
        other => panic!("{other:?}"),
    }
    match &aggregate["serial"] {
        AggregateEntry::String { values, count, truncated } => {
            assert_eq!(*count, 30);
            assert!(values.len() <= api::AGGREGATE_MAX_VALUES);
            assert!(values.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
            assert!(!*truncated, "30 hosts give at most 30 values");
        }
        other => panic!("{other:?}"),
    }
    match &aggregate["free-disk"] {
        AggregateEntry::Float { max, count, .. } => {
            assert!(*max < 99999.0);
            assert_eq!(*count, 30);
        }
        other => panic!("{other:?}"),
    }
    // The JSON shape of the design.
    let json = serde_json::to_value(&aggregate).unwrap();
    assert_eq!(json["hypervisor"]["type"], "string");
    assert!(json["free-disk"]["min"].is_number() && json["free-disk"]["sum"].is_number());
    assert!(json["can-run-windows"]["any"].is_boolean());
}

async fn hosts_marked_down_by_missed_reports(db: &TestDb) {
    const INTERVAL_MS: i64 = 1_000;
    const MAX_MISSED: i64 = 2;
    let store = db.connect().await;
    let quiet =
        store.host_create(&new_host("quiet", serde_json::json!({"hv": "kvm"}), res(4, 4096, 100))).await.unwrap();
    let chatty =
        store.host_create(&new_host("chatty", serde_json::json!({"hv": "kvm"}), res(4, 4096, 100))).await.unwrap();
    // Nobody is late yet.
    assert!(store.hosts_mark_down(INTERVAL_MS, MAX_MISSED).await.unwrap().is_empty());

    // Let the database clock pass two intervals; only `chatty` reports meanwhile.
    wait_for_db_clock(&store, quiet.last_report_ms + INTERVAL_MS * MAX_MISSED + 100).await;
    assert_eq!(store.host_report(chatty.id, None).await.unwrap(), Some(false));
    let down = store.hosts_mark_down(INTERVAL_MS, MAX_MISSED).await.unwrap();
    assert_eq!(down, [quiet.id]);
    let q = store.host_get(quiet.id).await.unwrap().unwrap();
    assert_eq!(q.state, "down");
    assert!(q.missed_reports >= MAX_MISSED, "{}", q.missed_reports);
    let c = store.host_get(chatty.id).await.unwrap().unwrap();
    assert_eq!((c.state.as_str(), c.missed_reports), ("up", 0));
    // Marked once: the next sweep does not report it again.
    assert!(!store.hosts_mark_down(INTERVAL_MS, MAX_MISSED).await.unwrap().contains(&quiet.id));

    // A down host takes no placement.
    let f = filters(serde_json::json!([{"key": "hv", "op": "eq", "value": "kvm"}]));
    assert_eq!(store.candidates(&f, &res(1, 1, 1), 10).await.unwrap(), [chatty.id]);
    assert!(!store.reserve(quiet.id, &res(1, 1, 1)).await.unwrap());

    // Reporting brings it back up, and says so once.
    assert_eq!(store.host_report(quiet.id, None).await.unwrap(), Some(true));
    assert_eq!(store.host_report(quiet.id, None).await.unwrap(), Some(false));
    let q = store.host_get(quiet.id).await.unwrap().unwrap();
    assert_eq!((q.state.as_str(), q.missed_reports), ("up", 0));
    assert!(q.last_report_ms > quiet.last_report_ms);
    assert!(store.reserve(quiet.id, &res(1, 1, 1)).await.unwrap());
}

async fn generation_counts_up(db: &TestDb) {
    let store = db.connect().await;
    assert_eq!(store.generation().await.unwrap(), 0);
    // Concurrent bumps from two pools: none lost.
    let other = db.connect_small(2).await;
    let bumps = futures::future::try_join_all((0..20).map(|i| {
        if i % 2 == 0 {
            store.bump_generation()
        } else {
            other.bump_generation()
        }
    }))
    .await
    .unwrap();
    let distinct: BTreeSet<i64> = bumps.into_iter().collect();
    assert_eq!(distinct, (1..=20).collect());
    assert_eq!(store.generation().await.unwrap(), 20);
}

/// Places and inserts an instance of `r` on one of the store's hosts.
async fn placed_instance(store: &Store, client: &str, r: Resources) -> zone_node::store::InstanceRow {
    let host = store.place(&[], &r).await.unwrap().expect("a host with room");
    let new = zone_node::store::NewInstance {
        id: Uuid::new_v4(),
        name: "vm".into(),
        client_id: client.into(),
        host_id: host,
        resources: r,
        requirements: vec![api::Requirement { key: "hypervisor".into(), op: api::Op::Exists, value: None }],
        task_node: Uuid::new_v4(),
    };
    store.instance_insert(&new).await.unwrap()
}

async fn instances_insert_update_remove_keep_capacity_and_generation(db: &TestDb) {
    use zone_node::store::InstanceChange;
    let store = db.connect().await;
    let a =
        store.host_create(&new_host("a", serde_json::json!({"hypervisor": "kvm"}), res(8, 8192, 100))).await.unwrap();
    let g0 = store.generation().await.unwrap();
    let r = res(2, 1024, 10);
    let i = placed_instance(&store, "c1", r).await;
    assert_eq!(i.state, "building");
    assert_eq!(i.task.as_deref(), Some("create"));
    assert_eq!(i.host_id, Some(a.id));
    assert_eq!(i.host_state.as_deref(), Some("up"));
    assert_eq!(i.requirements.len(), 1, "requirements round-trip");
    assert_eq!(store.generation().await.unwrap(), g0 + 1, "insert bumps the generation");
    assert_eq!(store.host_get(a.id).await.unwrap().unwrap().used, r);
    assert_eq!(store.instances_in_task().await.unwrap(), vec![(i.id, i.task_node.unwrap())]);

    // Running, then migrating to b (b reserved first), then moved: a released, b holds it.
    let running = InstanceChange { state: "running".into(), ..Default::default() };
    let i = store.instance_update(i.id, i.version, &running).await.unwrap().expect("fresh version");
    assert_eq!((i.state.as_str(), i.task.as_deref(), i.task_node), ("running", None, None));
    assert!(store.instances_in_task().await.unwrap().is_empty());
    let b =
        store.host_create(&new_host("b", serde_json::json!({"hypervisor": "kvm"}), res(8, 8192, 100))).await.unwrap();
    assert!(store.reserve(b.id, &r).await.unwrap());
    let g1 = store.generation().await.unwrap();
    let moved = InstanceChange { state: "running".into(), move_to: Some(b.id), ..Default::default() };
    let i = store.instance_update(i.id, i.version, &moved).await.unwrap().unwrap();
    assert_eq!(i.host_id, Some(b.id));
    assert_eq!(store.host_get(a.id).await.unwrap().unwrap().used, res(0, 0, 0), "source released");
    assert_eq!(store.host_get(b.id).await.unwrap().unwrap().used, r, "target keeps the reservation");
    assert_eq!(store.generation().await.unwrap(), g1 + 1, "a move bumps the generation");

    // Pages by id, filtered by client.
    let j = placed_instance(&store, "c2", r).await;
    let all = store.instances_page(None, None, 10).await.unwrap();
    let mut ids = vec![i.id, j.id];
    ids.sort();
    assert_eq!(all.iter().map(|x| x.id).collect::<Vec<_>>(), ids);
    let c2 = store.instances_page(Some("c2"), None, 10).await.unwrap();
    assert_eq!(c2.iter().map(|x| x.id).collect::<Vec<_>>(), vec![j.id]);
    let after_first = store.instances_page(None, Some(&ids[0].to_string()), 10).await.unwrap();
    assert_eq!(after_first.iter().map(|x| x.id).collect::<Vec<_>>(), vec![ids[1]]);

    // Remove gives everything back and bumps the generation; a stale remove does nothing.
    assert!(!store.instance_remove(i.id, i.version - 1).await.unwrap());
    let g2 = store.generation().await.unwrap();
    assert!(store.instance_remove(i.id, i.version).await.unwrap());
    assert!(store.instance_get(i.id).await.unwrap().is_none());
    assert_eq!(store.host_get(b.id).await.unwrap().unwrap().used, res(0, 0, 0));
    assert_eq!(store.generation().await.unwrap(), g2 + 1);
    // A down host shows through the join.
    exec_raw(db, &format!("UPDATE hosts SET state = 'down' WHERE id = '{}'", j.host_id.unwrap())).await;
    assert_eq!(store.instance_get(j.id).await.unwrap().unwrap().host_state.as_deref(), Some("down"));
}

async fn stale_instance_writes_are_detected(db: &TestDb) {
    use zone_node::store::InstanceChange;
    let store = db.connect().await;
    store.host_create(&new_host("a", serde_json::json!({"hypervisor": "kvm"}), res(8, 8192, 100))).await.unwrap();
    let i = placed_instance(&store, "c1", res(1, 1, 1)).await;
    // Two writers read the same version; only one write lands, the other is told it is stale.
    let other = db.connect_small(2).await;
    let w1 = InstanceChange { state: "running".into(), ..Default::default() };
    let w2 = InstanceChange { state: "error".into(), error_reason: Some("x".into()), ..Default::default() };
    let (r1, r2) =
        tokio::join!(store.instance_update(i.id, i.version, &w1), other.instance_update(i.id, i.version, &w2));
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert!(r1.is_some() != r2.is_some(), "exactly one of two writes on one version lands: {r1:?} {r2:?}");
    let now = store.instance_get(i.id).await.unwrap().unwrap();
    assert_eq!(now.version, i.version + 1);
    // Re-applying the lost write on the fresh version succeeds: nothing is silently lost.
    let lost = if r1.is_none() { w1 } else { w2 };
    let after = store.instance_update(i.id, now.version, &lost).await.unwrap().expect("fresh version");
    assert_eq!(after.state, lost.state);
    assert_eq!(after.version, i.version + 2);
}

// ---------------------------------------------------------------------------------------------
// federation: child zones and the instance mapping

use api::{SubtreeEntry, ZoneStatus};
use zone_node::secrets::SecretKey;
use zone_node::store::{ChildSnapshot, ChildZoneEdit, ChildZoneRow, NewChildZone, PollOutcome, PollRecord};

/// A child's answer: one float capability, a generation, a subtree of one zone below it.
fn snapshot(generation: i64, free_disk: f64) -> ChildSnapshot {
    let mut capabilities = api::Aggregate::new();
    capabilities
        .insert("free-disk".into(), AggregateEntry::Float { min: free_disk, max: free_disk, sum: free_disk, count: 1 });
    capabilities
        .insert("hypervisor".into(), AggregateEntry::String { values: vec!["kvm".into()], count: 1, truncated: false });
    let subtree =
        vec![SubtreeEntry { id: Uuid::new_v4().to_string(), name: "huddle-1".into(), path: vec!["huddle-1".into()] }];
    ChildSnapshot { capabilities, generation, subtree }
}

fn new_child(key: &SecretKey, name: &str, first_answer: Option<ChildSnapshot>) -> NewChildZone {
    let id = Uuid::new_v4();
    NewChildZone {
        id,
        name: name.into(),
        api_url: format!("http://{name}.example:8080"),
        username: "admin".into(),
        password_sealed: key.seal(id, &format!("pw-of-{name}")).unwrap(),
        weight_offset: 0.5,
        weight_scale: 2.0,
        disabled: false,
        first_answer,
    }
}

fn answered(s: ChildSnapshot) -> PollRecord {
    PollRecord { outcome: PollOutcome::Answered(s), failure_threshold: 3 }
}

fn failed(error: &str, failure_threshold: u32) -> PollRecord {
    PollRecord { outcome: PollOutcome::Failed(error.into()), failure_threshold }
}

/// Reads one text value outside the store (what is really in a column).
async fn fetch_raw_text(db: &TestDb, sql: &str) -> String {
    if db.backend == "sqlite" {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap();
        let _ = conn.close().await;
        v
    } else {
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap();
        let _ = conn.close().await;
        v
    }
}

async fn child_zones_crud_conflicts_and_generation(db: &TestDb) {
    let store = db.connect().await;
    let key = SecretKey::generate().unwrap();
    let before = store.now_ms().await.unwrap();
    let g0 = store.generation().await.unwrap();

    // dc2 first, so that listing by name is not just insertion order.
    let first = snapshot(7, 500.0);
    let dc2 = store.child_zone_insert(&new_child(&key, "dc2", Some(first.clone()))).await.unwrap();
    assert_eq!(store.generation().await.unwrap(), g0 + 1, "adding a child changes the subtree");
    assert_eq!((dc2.status, dc2.disabled, dc2.consecutive_failures), (ZoneStatus::Online, false, 0));
    assert!(dc2.last_seen_ms.is_some_and(|t| t >= before), "answered at zone-add: seen now");
    assert_eq!((dc2.generation, &dc2.capabilities, &dc2.subtree), (7, &first.capabilities, &first.subtree));
    assert_eq!((dc2.weight_offset, dc2.weight_scale, dc2.version), (0.5, 2.0, 0));
    assert!(dc2.created_at_ms >= before && dc2.updated_at_ms >= dc2.created_at_ms);
    let dc1 = store.child_zone_insert(&new_child(&key, "dc1", None)).await.unwrap();
    assert_eq!((dc1.status, dc1.last_seen_ms, dc1.generation), (ZoneStatus::Offline, None, 0));
    assert!(dc1.capabilities.is_empty() && dc1.subtree.is_empty());
    assert_eq!(store.generation().await.unwrap(), g0 + 2);

    // The API view: capabilities only in detail, never the credentials.
    let brief = dc2.to_api(false);
    assert_eq!((brief.status, brief.capabilities.as_ref(), brief.generation), (ZoneStatus::Online, None, 7));
    assert!(brief.last_seen.as_deref().is_some_and(|t| t.ends_with('Z')), "{:?}", brief.last_seen);
    assert_eq!(dc2.to_api(true).capabilities.as_ref(), Some(&first.capabilities));
    let json = serde_json::to_string(&dc2.to_api(true)).unwrap();
    assert!(!json.contains(&dc2.password_sealed) && !json.contains("username"), "{json}");

    // A taken name, or a zone that is already a child: conflicts that say which, and no bump.
    let mut same_name = new_child(&key, "dc1", None);
    let err = store.child_zone_insert(&same_name).await.unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("named dc1")), "{err}");
    same_name.name = "dc9".into();
    same_name.id = dc2.id;
    let err = store.child_zone_insert(&same_name).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Conflict(_)), "{msg}");
    assert!(msg.contains(&dc2.id.to_string()) && msg.contains("dc2"), "{msg}");
    assert_eq!(store.generation().await.unwrap(), g0 + 2, "a refused insert bumps nothing");

    let all = store.child_zones().await.unwrap();
    assert_eq!(all.iter().map(|z| z.name.as_str()).collect::<Vec<_>>(), ["dc1", "dc2"]);
    assert_eq!(store.child_zone_get(dc2.id).await.unwrap().as_ref(), Some(&dc2));
    assert!(store.child_zone_get(Uuid::new_v4()).await.unwrap().is_none());

    // Update: absent fields stay, version grows, no bump without a change of `disabled`.
    let edit = ChildZoneEdit { name: Some("dc1-east".into()), weight_scale: Some(3.0), ..Default::default() };
    let dc1e = store.child_zone_update(dc1.id, &edit).await.unwrap().expect("dc1 exists");
    assert_eq!((dc1e.name.as_str(), dc1e.weight_scale, dc1e.weight_offset), ("dc1-east", 3.0, 0.5));
    assert_eq!(
        (&dc1e.api_url, &dc1e.username, &dc1e.password_sealed),
        (&dc1.api_url, &dc1.username, &dc1.password_sealed)
    );
    assert_eq!(dc1e.version, dc1.version + 1);
    assert_eq!(store.generation().await.unwrap(), g0 + 2);
    let resealed = key.seal(dc1.id, "new-pw").unwrap();
    let edit = ChildZoneEdit { password_sealed: Some(resealed.clone()), ..Default::default() };
    let dc1e = store.child_zone_update(dc1.id, &edit).await.unwrap().unwrap();
    assert_eq!(key.open(dc1.id, &dc1e.name, &dc1e.password_sealed).unwrap().expose(), "new-pw");
    assert_eq!(dc1e.version, dc1.version + 2);

    // Renaming onto another child's name is a conflict naming it, and changes nothing.
    let rename = ChildZoneEdit { name: Some("dc2".into()), ..Default::default() };
    let err = store.child_zone_update(dc1.id, &rename).await.unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("named dc2")), "{err}");
    assert_eq!(store.child_zone_get(dc1.id).await.unwrap().unwrap(), dc1e);

    // Disabling and enabling bump the generation; disabling a disabled child does not.
    let disable = ChildZoneEdit { disabled: Some(true), ..Default::default() };
    let off = store.child_zone_update(dc2.id, &disable).await.unwrap().unwrap();
    assert!(off.disabled && !off.routable());
    assert_eq!(
        (off.status, off.effective_status(), off.to_api(false).status),
        (ZoneStatus::Online, ZoneStatus::Disabled, ZoneStatus::Disabled)
    );
    assert_eq!(store.generation().await.unwrap(), g0 + 3);
    let again = store.child_zone_update(dc2.id, &disable).await.unwrap().unwrap();
    assert_eq!(again.version, off.version + 1);
    assert_eq!(store.generation().await.unwrap(), g0 + 3, "no change of disabled, no bump");
    let enable = ChildZoneEdit { disabled: Some(false), ..Default::default() };
    let on = store.child_zone_update(dc2.id, &enable).await.unwrap().unwrap();
    assert!(!on.disabled && on.routable() && on.to_api(false).status == ZoneStatus::Online);
    assert_eq!(store.generation().await.unwrap(), g0 + 4);
    assert!(store.child_zone_update(Uuid::new_v4(), &disable).await.unwrap().is_none());
    assert_eq!(store.generation().await.unwrap(), g0 + 4, "an unknown child bumps nothing");

    // Delete: once, with a bump.
    assert!(store.child_zone_delete(dc1.id).await.unwrap());
    assert_eq!(store.generation().await.unwrap(), g0 + 5);
    assert!(store.child_zone_get(dc1.id).await.unwrap().is_none());
    assert!(!store.child_zone_delete(dc1.id).await.unwrap());
    assert_eq!(store.generation().await.unwrap(), g0 + 5);
    assert_eq!(store.child_zones().await.unwrap().len(), 1);
    // The name is free again.
    store.child_zone_insert(&new_child(&key, "dc1", None)).await.unwrap();
}

async fn record_poll_transitions(db: &TestDb) {
    let store = db.connect().await;
    let key = SecretKey::generate().unwrap();
    let child = store.child_zone_insert(&new_child(&key, "dc1", Some(snapshot(1, 100.0)))).await.unwrap();
    let g = store.generation().await.unwrap();

    // Below the threshold an online child stays online; the error is kept; nothing bumps.
    for n in 1..=2u32 {
        let a = store.child_zone_record_poll(child.id, &failed("timed out after 1000 ms", 3)).await.unwrap().unwrap();
        assert!(!a.status_changed && !a.generation_changed && !a.bumped_generation());
        assert_eq!((a.row.status, a.row.consecutive_failures), (ZoneStatus::Online, n));
        assert_eq!(a.row.last_error.as_deref(), Some("timed out after 1000 ms"));
        assert_eq!(a.row.last_seen_ms, child.last_seen_ms, "a failure is not a sighting");
        assert_eq!(a.row.version, child.version, "polls are not configuration changes");
    }
    assert_eq!(store.generation().await.unwrap(), g);
    // At the threshold it goes offline, once.
    let a = store.child_zone_record_poll(child.id, &failed("connection refused", 3)).await.unwrap().unwrap();
    assert!(a.status_changed && !a.generation_changed);
    assert_eq!((a.row.status, a.row.consecutive_failures), (ZoneStatus::Offline, 3));
    assert_eq!(a.row.last_error.as_deref(), Some("connection refused"));
    assert_eq!(a.row.capabilities, child.capabilities, "the last good answer is kept");
    assert_eq!(store.generation().await.unwrap(), g + 1);
    let a = store.child_zone_record_poll(child.id, &failed("connection refused", 3)).await.unwrap().unwrap();
    assert!(!a.status_changed);
    assert_eq!((a.row.status, a.row.consecutive_failures), (ZoneStatus::Offline, 4));
    assert_eq!(store.generation().await.unwrap(), g + 1);

    // A good answer brings it back at once and clears the error; same generation: one bump for
    // the status alone.
    let now = store.now_ms().await.unwrap();
    let a = store.child_zone_record_poll(child.id, &answered(snapshot(1, 80.0))).await.unwrap().unwrap();
    assert!(a.status_changed && !a.generation_changed);
    assert_eq!((a.row.status, a.row.consecutive_failures, a.row.last_error.as_deref()), (ZoneStatus::Online, 0, None));
    assert!(a.row.last_seen_ms.is_some_and(|t| t >= now), "last seen by the database clock");
    assert_eq!(a.row.capabilities, snapshot(1, 80.0).capabilities, "the new aggregate is stored");
    assert_eq!(store.generation().await.unwrap(), g + 2);

    // A new generation from the child: detected, one bump; the same answer again: nothing.
    let a = store.child_zone_record_poll(child.id, &answered(snapshot(2, 80.0))).await.unwrap().unwrap();
    assert!(!a.status_changed && a.generation_changed && a.bumped_generation());
    assert_eq!(a.row.generation, 2);
    assert_eq!(store.generation().await.unwrap(), g + 3);
    let a = store.child_zone_record_poll(child.id, &answered(snapshot(2, 80.0))).await.unwrap().unwrap();
    assert!(!a.status_changed && !a.generation_changed);
    assert_eq!(store.generation().await.unwrap(), g + 3);
    // A lower generation (a child restored from a backup) differs too.
    let a = store.child_zone_record_poll(child.id, &answered(snapshot(1, 80.0))).await.unwrap().unwrap();
    assert!(a.generation_changed);
    assert_eq!(store.generation().await.unwrap(), g + 4);

    // Back online with a new generation at once: both flags, one bump.
    for _ in 0..3 {
        store.child_zone_record_poll(child.id, &failed("down", 3)).await.unwrap().unwrap();
    }
    assert_eq!(store.generation().await.unwrap(), g + 5);
    let a = store.child_zone_record_poll(child.id, &answered(snapshot(9, 80.0))).await.unwrap().unwrap();
    assert!(a.status_changed && a.generation_changed);
    assert_eq!(store.generation().await.unwrap(), g + 6, "two changes in one poll, one bump");

    // Threshold 1: the first failure is enough. A child never seen stays offline, silently.
    let a = store.child_zone_record_poll(child.id, &failed("down", 1)).await.unwrap().unwrap();
    assert!(a.status_changed && a.row.status == ZoneStatus::Offline);
    let never = store.child_zone_insert(&new_child(&key, "dc2", None)).await.unwrap();
    let g = store.generation().await.unwrap();
    let a = store.child_zone_record_poll(never.id, &failed("down", 1)).await.unwrap().unwrap();
    assert!(!a.status_changed && a.row.status == ZoneStatus::Offline && a.row.consecutive_failures == 1);
    assert_eq!(store.generation().await.unwrap(), g);
    // A disabled child is still polled and recorded.
    store.child_zone_update(never.id, &ChildZoneEdit { disabled: Some(true), ..Default::default() }).await.unwrap();
    let a = store.child_zone_record_poll(never.id, &answered(snapshot(4, 1.0))).await.unwrap().unwrap();
    assert!(a.status_changed && a.row.status == ZoneStatus::Online && a.row.effective_status() == ZoneStatus::Disabled);

    // An unknown (or deleted) child: None, nothing written.
    let g = store.generation().await.unwrap();
    assert!(store.child_zone_record_poll(Uuid::new_v4(), &answered(snapshot(1, 1.0))).await.unwrap().is_none());
    assert!(store.child_zone_record_poll(Uuid::new_v4(), &failed("x", 1)).await.unwrap().is_none());
    assert_eq!(store.generation().await.unwrap(), g);
}

async fn record_poll_bumps_the_generation_once_under_concurrency(db: &TestDb) {
    const ROUNDS: i64 = 8;
    const WRITERS: usize = 6;
    let key = SecretKey::generate().unwrap();
    // Two "nodes", each with its own pool, recording the same poll results at the same moment.
    let nodes = [db.connect().await, db.connect_small(4).await];
    let child = nodes[0].child_zone_insert(&new_child(&key, "dc1", None)).await.unwrap();
    let g0 = nodes[0].generation().await.unwrap();
    let mut expected = g0;
    for round in 1..=ROUNDS {
        // The same answer (a new generation; the first one also brings the child online) applied
        // WRITERS times at once: exactly one writer sees each change, and the zone generation
        // moves by exactly one.
        let record = answered(snapshot(round, 10.0));
        let applied =
            futures::future::try_join_all((0..WRITERS).map(|w| nodes[w % 2].child_zone_record_poll(child.id, &record)))
                .await
                .unwrap();
        let applied: Vec<_> = applied.into_iter().map(|a| a.expect("the child exists")).collect();
        let generation_changes = applied.iter().filter(|a| a.generation_changed).count();
        let status_changes = applied.iter().filter(|a| a.status_changed).count();
        assert_eq!(generation_changes, 1, "round {round}: {applied:?}");
        assert_eq!(status_changes, usize::from(round == 1), "round {round}: {applied:?}");
        assert_eq!(applied.iter().filter(|a| a.bumped_generation()).count(), 1);
        expected += 1;
        assert_eq!(nodes[1].generation().await.unwrap(), expected, "round {round}");
        let row = nodes[0].child_zone_get(child.id).await.unwrap().unwrap();
        assert_eq!((row.generation, row.status), (round, ZoneStatus::Online));
    }
    // Failures recorded at once: each is counted, and the one that crosses the threshold is the
    // only one that takes the child offline and bumps.
    let record = failed("timed out", 3);
    let applied =
        futures::future::try_join_all((0..WRITERS).map(|w| nodes[w % 2].child_zone_record_poll(child.id, &record)))
            .await
            .unwrap();
    let applied: Vec<_> = applied.into_iter().map(|a| a.unwrap()).collect();
    assert_eq!(applied.iter().filter(|a| a.status_changed).count(), 1, "{applied:?}");
    let row = nodes[0].child_zone_get(child.id).await.unwrap().unwrap();
    assert_eq!((row.status, row.consecutive_failures), (ZoneStatus::Offline, WRITERS as u32));
    assert_eq!(nodes[0].generation().await.unwrap(), expected + 1);
}

async fn instance_routes_put_get_delete_and_cascade(db: &TestDb) {
    let store = db.connect().await;
    let key = SecretKey::generate().unwrap();
    let a = store.child_zone_insert(&new_child(&key, "a", None)).await.unwrap();
    let b = store.child_zone_insert(&new_child(&key, "b", None)).await.unwrap();
    let (i1, i2, i3, i4) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    assert!(store.instance_route_get(i1).await.unwrap().is_none());
    assert!(store.instance_route_put(i1, a.id, "c1").await.unwrap());
    assert_eq!(store.instance_route_get(i1).await.unwrap(), Some((a.id, "c1".into())));
    // Upsert: the instance moved to b.
    assert!(store.instance_route_put(i1, b.id, "c1").await.unwrap());
    assert_eq!(store.instance_route_get(i1).await.unwrap(), Some((b.id, "c1".into())));
    assert!(store.instance_route_put(i2, a.id, "c2").await.unwrap());
    assert!(store.instance_route_put(i4, a.id, "c1").await.unwrap());
    // A route to a child that does not exist is refused, and nothing is written.
    assert!(!store.instance_route_put(i3, Uuid::new_v4(), "c1").await.unwrap());
    assert!(store.instance_route_get(i3).await.unwrap().is_none());

    let mut c1 = vec![a.id, b.id];
    c1.sort();
    assert_eq!(store.instance_route_children_of_client("c1").await.unwrap(), c1);
    assert_eq!(store.instance_route_children_of_client("c2").await.unwrap(), [a.id]);
    assert!(store.instance_route_children_of_client("nobody").await.unwrap().is_empty());

    assert!(store.instance_route_delete(i2).await.unwrap());
    assert!(!store.instance_route_delete(i2).await.unwrap());
    assert!(store.instance_route_get(i2).await.unwrap().is_none());

    // Deleting a child deletes its routes, and only its routes.
    assert!(store.child_zone_delete(a.id).await.unwrap());
    assert!(store.instance_route_get(i4).await.unwrap().is_none());
    assert_eq!(store.instance_route_get(i1).await.unwrap(), Some((b.id, "c1".into())));
    assert_eq!(store.instance_route_children_of_client("c1").await.unwrap(), [b.id]);
}

async fn child_passwords_are_stored_sealed(db: &TestDb) {
    let store = db.connect().await;
    let key = SecretKey::generate().unwrap();
    let dc1 = store.child_zone_insert(&new_child(&key, "dc1", None)).await.unwrap();
    let dc2 = store.child_zone_insert(&new_child(&key, "dc2", None)).await.unwrap();

    // What is really in the column: the sealed form, not the password.
    let stored = fetch_raw_text(db, &format!("SELECT password_sealed FROM child_zones WHERE id = '{}'", dc1.id)).await;
    assert!(!stored.contains("pw-of-dc1"), "{stored}");
    assert!(stored.starts_with(&format!("v1:{}:", key.id())), "{stored}");
    assert_eq!(stored, dc1.password_sealed);
    assert_eq!(key.open(dc1.id, "dc1", &stored).unwrap().expose(), "pw-of-dc1");
    assert!(!format!("{dc1:?}").contains(&stored), "the sealed password reaches Debug output");

    // Copied into another child's row, it does not open there (the child id is bound to it).
    exec_raw(db, &format!("UPDATE child_zones SET password_sealed = '{stored}' WHERE id = '{}'", dc2.id)).await;
    let moved: ChildZoneRow = store.child_zone_get(dc2.id).await.unwrap().unwrap();
    assert!(key.open(moved.id, "dc2", &moved.password_sealed).is_err());
    // Another node with another key cannot open it, and says which keys.
    let other = SecretKey::generate().unwrap();
    let err = other.open(dc1.id, "dc1", &stored).unwrap_err().to_string();
    assert!(err.contains(key.id()) && err.contains(other.id()), "{err}");
}
