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
        TestDb {
            backend: "sqlite",
            url,
            _dir: Some(dir),
            pg: None,
        }
    }

    async fn postgres() -> TestDb {
        let admin =
            std::env::var("ZONE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.into());
        let mut conn =
            match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin)).await
            {
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
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
        let _ = conn.close().await;
        let url = with_database(&admin, &name);
        TestDb {
            backend: "postgres",
            url,
            _dir: None,
            pg: Some((admin, name)),
        }
    }

    /// A new store (its own pool) on this test's database.
    async fn connect(&self) -> Store {
        Store::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.backend))
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
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    // FORCE: pools of the test may still be closing their connections.
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
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
    assert!(
        (a - local).abs() < 600_000,
        "database clock {a} far from local clock {local}"
    );
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
    let alice = store
        .account_create(&account("alice", "admin", None))
        .await
        .unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.role, "admin");
    assert_eq!(alice.client_id, None);
    assert!(
        alice.created_at_ms >= before,
        "created_at_ms comes from the database clock"
    );
    assert_eq!(
        store.account_get("alice").await.unwrap(),
        Some(alice.clone())
    );

    let bob = store
        .account_create(&account("bob", "member", Some("client-1")))
        .await
        .unwrap();
    assert_eq!(bob.client_id.as_deref(), Some("client-1"));

    match store
        .account_create(&account("alice", "member", None))
        .await
    {
        Err(StoreError::Conflict(what)) => assert_eq!(what, "account alice"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The existing row is untouched.
    assert_eq!(
        store.account_get("alice").await.unwrap(),
        Some(alice.clone())
    );

    assert!(!store
        .account_create_if_absent(&account("alice", "member", None))
        .await
        .unwrap());
    assert!(store
        .account_create_if_absent(&account("carol", "member", Some("c3")))
        .await
        .unwrap());
    assert_eq!(
        store.account_get("alice").await.unwrap().unwrap().role,
        "admin"
    );

    let names: Vec<String> = store
        .accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.username)
        .collect();
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
    store
        .account_create(&account("alice", "member", Some("c1")))
        .await
        .unwrap();
    store
        .account_create(&account("bob", "member", Some("c2")))
        .await
        .unwrap();
    store
        .token_insert("hash-a1", "alice", 60_000)
        .await
        .unwrap();
    store
        .token_insert("hash-a2", "alice", 60_000)
        .await
        .unwrap();
    store.token_insert("hash-b1", "bob", 60_000).await.unwrap();
    assert!(store.token_lookup("hash-a1").await.unwrap().is_some());

    assert!(store.account_delete("alice").await.unwrap());
    assert_eq!(store.token_lookup("hash-a1").await.unwrap(), None);
    assert_eq!(store.token_lookup("hash-a2").await.unwrap(), None);
    // Recreating the account does not bring the old tokens back: they were deleted, not hidden.
    store
        .account_create(&account("alice", "member", Some("c1")))
        .await
        .unwrap();
    assert_eq!(store.token_lookup("hash-a1").await.unwrap(), None);
    // Other accounts' tokens stay.
    assert_eq!(
        store
            .token_lookup("hash-b1")
            .await
            .unwrap()
            .unwrap()
            .username,
        "bob"
    );
}

async fn tokens_expire_by_the_database_clock(db: &TestDb) {
    let store = db.connect().await;
    store
        .account_create(&account("alice", "member", Some("c1")))
        .await
        .unwrap();

    let before = store.now_ms().await.unwrap();
    let expires = store
        .token_insert("hash-long", "alice", 3_600_000)
        .await
        .unwrap();
    let after = store.now_ms().await.unwrap();
    assert!(
        (before + 3_600_000..=after + 3_600_000).contains(&expires),
        "expiry {expires}"
    );
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

    let short = store
        .token_insert("hash-short", "alice", 100)
        .await
        .unwrap();
    wait_for_db_clock(&store, short).await;
    let row = store
        .token_lookup("hash-short")
        .await
        .unwrap()
        .expect("expired tokens stay until purged");
    assert!(row.expired);
    assert_eq!(store.token_lookup("hash-unknown").await.unwrap(), None);

    assert_eq!(store.tokens_purge_expired().await.unwrap(), 1);
    assert_eq!(store.token_lookup("hash-short").await.unwrap(), None);
    assert!(
        !store
            .token_lookup("hash-long")
            .await
            .unwrap()
            .unwrap()
            .expired
    );
    assert_eq!(store.tokens_purge_expired().await.unwrap(), 0);

    // A token for an account that does not exist is refused, and the error names no hash.
    let err = store
        .token_insert("hash-orphan", "nobody", 60_000)
        .await
        .unwrap_err();
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
    assert_eq!(
        (node_a.state.as_str(), node_a.api_url.as_str()),
        ("joining", "http://a")
    );
    assert_eq!(
        (node_b.state.as_str(), node_b.api_url.as_str()),
        ("alive", "http://b")
    );
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

    assert!(store
        .node_transition(a, &["joining"], "alive")
        .await
        .unwrap());
    assert_eq!(store.membership().await.unwrap().epoch, 3);
    // Not in a `from` state: nothing changes, the epoch stays.
    assert!(!store
        .node_transition(a, &["joining"], "alive")
        .await
        .unwrap());
    assert!(!store.node_transition(a, &[], "leaving").await.unwrap());
    assert!(!store
        .node_transition(Uuid::new_v4(), &["alive"], "leaving")
        .await
        .unwrap());
    assert_eq!(store.membership().await.unwrap().epoch, 3);

    store.node_ack_epoch(a, 3).await.unwrap();
    store.node_ack_epoch(a, 2).await.unwrap(); // never lowers
    let m3 = store.membership().await.unwrap();
    assert_eq!(
        m3.nodes.iter().find(|n| n.id == a).unwrap().applied_epoch,
        3
    );

    // Leaving nodes still heartbeat; once left, the heartbeat says stop.
    assert!(store
        .node_transition(b, &["joining", "alive"], "leaving")
        .await
        .unwrap());
    assert!(store.node_heartbeat(b).await.unwrap());
    assert!(store
        .node_transition(b, &["leaving"], "left")
        .await
        .unwrap());
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

    assert_eq!(
        store.nodes_purge(3_600_000).await.unwrap(),
        0,
        "too recent to purge"
    );
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
    let job = store
        .job_claim("q", n1, 60_000)
        .await
        .unwrap()
        .expect("a job to claim");
    assert_eq!(
        (job.id, job.queue.as_str(), job.payload.as_str()),
        (j1, "q", "p1")
    );
    assert_eq!((job.state.as_str(), job.owner), ("running", Some(n1)));
    let lease = job.lease_until_ms.unwrap();
    assert!(lease >= now + 60_000);
    assert_eq!(job.result, None);
    assert_eq!(store.job_get(j1).await.unwrap(), Some(job.clone()));

    // One running job per queue, whoever asks.
    assert_eq!(store.job_claim("q", n2, 60_000).await.unwrap(), None);
    assert_eq!(store.job_claim("q", n1, 60_000).await.unwrap(), None);
    // Other queues run alongside.
    assert_eq!(
        store.job_claim("r", n2, 60_000).await.unwrap().unwrap().id,
        r1
    );

    // Only the owner renews or finishes.
    assert!(!store.job_renew(j1, n2, 60_000).await.unwrap());
    assert!(!store.job_finish(j1, n2, true, "stolen").await.unwrap());
    assert_eq!(store.job_get(j1).await.unwrap().unwrap().owner, Some(n1));
    assert!(store.job_renew(j1, n1, 120_000).await.unwrap());
    let renewed = store.job_get(j1).await.unwrap().unwrap();
    assert!(renewed.lease_until_ms.unwrap() > lease);

    assert!(store.job_finish(j1, n1, true, "ok-1").await.unwrap());
    let done = store.job_get(j1).await.unwrap().unwrap();
    assert_eq!(
        (
            done.state.as_str(),
            done.result.as_deref(),
            done.lease_until_ms
        ),
        ("done", Some("ok-1"), None)
    );
    assert!(!store.job_finish(j1, n1, true, "again").await.unwrap());
    assert!(!store.job_renew(j1, n1, 60_000).await.unwrap());

    let job = store.job_claim("q", n2, 60_000).await.unwrap().unwrap();
    assert_eq!(job.id, j2);
    assert!(store.job_finish(j2, n2, false, "boom").await.unwrap());
    let failed = store.job_get(j2).await.unwrap().unwrap();
    assert_eq!(
        (failed.state.as_str(), failed.result.as_deref()),
        ("failed", Some("boom"))
    );

    assert_eq!(
        store.job_claim("q", n1, 60_000).await.unwrap().unwrap().id,
        j3
    );
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
    assert_eq!(
        store.job_claim("q", n2, 60_000).await.unwrap(),
        None,
        "lease still live"
    );

    wait_for_db_clock(&store, job.lease_until_ms.unwrap()).await;
    assert_eq!(
        store.job_queues_pending().await.unwrap(),
        ["q"],
        "a stuck job is claimable"
    );

    // n2 takes over the same job, before the newer one.
    let taken = store
        .job_claim("q", n2, 60_000)
        .await
        .unwrap()
        .expect("takeover");
    assert_eq!(
        (taken.id, taken.owner, taken.state.as_str()),
        (j1, Some(n2), "running")
    );

    // n1 wakes up: it no longer owns the job.
    assert!(!store.job_renew(j1, n1, 60_000).await.unwrap());
    assert!(!store.job_finish(j1, n1, true, "late").await.unwrap());
    assert_eq!(store.job_get(j1).await.unwrap().unwrap().owner, Some(n2));

    assert!(store.job_finish(j1, n2, true, "taken over").await.unwrap());
    assert_eq!(
        store.job_get(j1).await.unwrap().unwrap().result.as_deref(),
        Some("taken over")
    );
    assert_eq!(
        store.job_claim("q", n1, 60_000).await.unwrap().unwrap().id,
        j2
    );
}

async fn one_running_job_per_queue_under_concurrency(db: &TestDb) {
    const JOBS: usize = 50;
    const CLAIMERS: usize = 8;
    let setup = db.connect().await;
    let mut ids = Vec::new();
    for i in 0..JOBS {
        ids.push(
            setup
                .job_enqueue("serial", &format!("job-{i}"))
                .await
                .unwrap(),
        );
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
        let (active, overlaps, finished, order) = (
            active.clone(),
            overlaps.clone(),
            finished.clone(),
            order.clone(),
        );
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

    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two jobs of one queue ran at once"
    );
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
    let results = tokio::time::timeout(
        Duration::from_secs(60),
        futures::future::try_join_all(tasks),
    )
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
    assert_eq!(
        store.probe_exit("res-3").await.unwrap(),
        1,
        "an exit without an enter still counts"
    );

    let stats = store.probe_stats().await.unwrap();
    let by_id = |id: &str| stats.iter().find(|r| r.resource_id == id).unwrap().clone();
    let r1 = by_id("res-1");
    assert_eq!(
        (r1.active, r1.max_active, r1.completed),
        (0, TASKS as i64, TASKS as i64)
    );
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
    let err = Store::connect("postgres://zone:hunter2@127.0.0.1:1/zone")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        msg.contains("127.0.0.1:1"),
        "the message names the host: {msg}"
    );
    assert!(
        !msg.contains("hunter2"),
        "the message leaks the password: {msg}"
    );
}

#[tokio::test]
async fn unsupported_urls_are_refused_without_echoing_them() {
    let err = Store::connect("mysql://root:hunter2@db/zone")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    let zone = store.zone_identity("mem").await.unwrap();
    assert_eq!(store.zone_identity("mem").await.unwrap().id, zone.id);
    assert_eq!(
        store
            .node_join(Uuid::new_v4(), "http://m", true)
            .await
            .unwrap(),
        1
    );
}

#[test]
fn test_helpers() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "zt_x"),
        "postgres://postgres@127.0.0.1:5432/zt_x"
    );
    assert_eq!(
        with_database("postgres://h:5432?sslmode=disable", "zt_x"),
        "postgres://h:5432/zt_x?sslmode=disable"
    );
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
                        if job.payload == "fail" { Err("agent refused".to_string()) } else { Ok(format!("done {}", job.payload)) }
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
