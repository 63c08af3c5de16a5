//! Smoke tests of the harness itself: the services it needs, its databases, ports and prefixes, and
//! its process handling, run against a fake node (`tests/harness/fake_node.py`) so they hold whatever
//! state the real node is in.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::FutureExt;

use e2e::node::{default_binary_path, locate_binary};
use e2e::{
    free_port, poll_until, poll_until_detailed, unique_prefix, Cluster, ClusterOptions, NodeProcess, NodeSpec, TestDb,
};

const WAIT: Duration = Duration::from_secs(20);

fn fake_node() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("harness").join("fake_node.py")
}

/// Options for a cluster of fake nodes that find each other through a private directory.
fn fake_cluster_options(registry: &tempfile::TempDir) -> ClusterOptions {
    ClusterOptions {
        binary: Some(fake_node()),
        env: vec![("FAKE_NODE_REGISTRY".to_owned(), registry.path().display().to_string())],
        heartbeat_ms: 100,
        dead_after_ms: 1_000,
        ..ClusterOptions::default()
    }
}

fn fake_spec() -> NodeSpec {
    let mut spec = NodeSpec::new(format!("smoke-{}", e2e::net::short_id()));
    spec.binary = Some(fake_node());
    spec
}

#[tokio::test]
async fn services_are_available() {
    e2e::require_postgres().await;
    e2e::require_rabbitmq().await;
}

#[tokio::test]
async fn test_db_is_fresh_reachable_and_dropped() {
    let db = TestDb::create().await;
    assert!(db.name().starts_with("zt_"), "unexpected name {}", db.name());
    assert!(db.url().ends_with(&format!("/{}", db.name())), "url {} does not name {}", db.url(), db.name());

    let pool = db.pool().await;
    let current: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    assert_eq!(current, db.name());
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(tables, 0, "a fresh database has no tables");
    sqlx::query("CREATE TABLE t (x int)").execute(&pool).await.unwrap();
    // The pool stays open on purpose: dropping must end its connections (WITH (FORCE)).

    let name = db.name().to_owned();
    assert!(db.exists().await);
    db.drop_db().await;
    assert!(!e2e::db::database_exists(&name).await, "{name} still exists after drop_db");
    pool.close().await;
}

#[tokio::test]
async fn test_db_is_dropped_on_drop() {
    let db = TestDb::create().await;
    let name = db.name().to_owned();
    let other = TestDb::create().await;
    assert_ne!(name, other.name(), "two test databases share a name");
    drop(db);
    assert!(!e2e::db::database_exists(&name).await, "{name} still exists after the TestDb was dropped");
    assert!(other.exists().await, "dropping one TestDb dropped another");
}

#[test]
fn unique_prefixes_differ_and_are_queue_safe() {
    let prefixes: HashSet<String> = (0..1_000).map(|_| unique_prefix()).collect();
    assert_eq!(prefixes.len(), 1_000, "unique_prefix repeated itself");
    for p in &prefixes {
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "prefix {p:?} is not queue-name safe");
    }
}

#[test]
fn free_ports_bind_and_do_not_repeat() {
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    assert_eq!(ports.iter().collect::<HashSet<_>>().len(), ports.len(), "free_port repeated a port: {ports:?}");
    for port in ports {
        TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("free port {port} does not bind: {e}"));
    }
}

#[test]
fn missing_binary_message_says_how_to_build_it() {
    let missing = PathBuf::from("/nonexistent/zone-node");
    let from_env = locate_binary(Some(missing.as_os_str()), &default_binary_path()).unwrap_err();
    assert!(from_env.contains("/nonexistent/zone-node"), "{from_env}");
    assert!(from_env.contains("cargo build -p zone-node"), "{from_env}");
    assert!(from_env.contains("ZONE_NODE_BIN"), "{from_env}");

    let default = locate_binary(None, &missing).unwrap_err();
    assert!(default.contains("/nonexistent/zone-node") && default.contains("cargo build -p zone-node"), "{default}");
}

#[test]
#[should_panic(expected = "Build it first with `cargo build -p zone-node`")]
fn spawning_a_missing_binary_fails_clearly() {
    let mut spec = NodeSpec::new("missing");
    spec.binary = Some(PathBuf::from("/nonexistent/zone-node"));
    NodeProcess::spawn(spec);
}

#[tokio::test]
async fn poll_until_returns_the_value_or_the_last_observation() {
    let start = Instant::now();
    let value = poll_until(WAIT, Duration::from_millis(10), || async {
        (start.elapsed() > Duration::from_millis(50)).then_some(42)
    })
    .await
    .expect("the condition holds after 50 ms");
    assert_eq!(value, 42);
    assert!(poll_until(Duration::from_millis(50), Duration::from_millis(10), || async { false }).await.is_none());

    let mut attempts = 0;
    let err = poll_until_detailed(Duration::from_millis(200), Duration::from_millis(20), || {
        attempts += 1;
        let n = attempts;
        async move { Err::<(), _>(format!("attempt {n} saw 2 nodes")) }
    })
    .await
    .unwrap_err();
    assert!(err.attempts >= 2, "{err}");
    assert!(err.to_string().contains(&format!("attempt {} saw 2 nodes", err.attempts)), "{err}");
}

#[tokio::test]
async fn a_node_that_exits_fails_readiness_at_once() {
    let mut spec = NodeSpec::new("exits");
    spec.binary = Some(PathBuf::from("/bin/false"));
    let node = NodeProcess::spawn(spec);
    let start = Instant::now();
    let why = node.try_wait_ready(WAIT).await.unwrap_err();
    assert!(why.contains("exited with exit status: 1"), "{why}");
    assert!(start.elapsed() < WAIT / 2, "waited {:?} for a process that had exited", start.elapsed());
    let message = node.failure(&why);
    assert!(message.contains("e2e harness: start #1") && message.contains(&node.url()), "{message}");
}

#[tokio::test]
async fn node_process_lifecycle() {
    let node = NodeProcess::start(fake_spec()).await;
    let client = node.client().await;
    let zone = client.zone().await.unwrap();
    assert_eq!(zone.name, node.spec().zone_name);
    let first_id = node.node_id();
    assert_eq!(first_id, node.fetch_node_id().await.unwrap());
    assert!(node.log_tail(1000).contains("serving"), "{}", node.log_tail(1000));

    // Graceful stop: the fake exits 0 on SIGTERM.
    let status = node.terminate().await.expect("the node exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!node.is_running());

    node.restart().await;
    let second_id = node.node_id();
    assert_ne!(first_id, second_id, "a restarted node is a new process with a new id");
    assert!(node.log_tail(1000).contains("start #2"));

    let pid = node.pid().unwrap();
    node.kill9().await;
    assert!(!node.is_running());
    assert!(!PathBuf::from(format!("/proc/{pid}")).exists(), "pid {pid} survived kill9");
    node.restart().await;

    let pid = node.pid().unwrap();
    drop(node);
    assert!(!PathBuf::from(format!("/proc/{pid}")).exists(), "pid {pid} outlived its NodeProcess");
}

#[tokio::test]
async fn cluster_converges_evicts_and_grows() {
    let registry = tempfile::tempdir().unwrap();
    let mut zone = Cluster::start(3, fake_cluster_options(&registry)).await;
    for i in 0..3 {
        assert_eq!(zone.alive_count_seen_by(i).await, Some(3), "node {i}");
    }
    assert!(zone.db().unwrap().exists().await);

    zone.node(0).kill9().await;
    zone.wait_converged(WAIT).await;
    assert_eq!(zone.running(), vec![1, 2]);
    assert_eq!(zone.alive_count_seen_by(1).await, Some(2));

    let added = zone.add_node().await.node_id();
    assert_eq!(zone.node(3).node_id(), added);
    assert_eq!(zone.alive_count_seen_by(3).await, Some(3));

    // A killed node restarted in place rejoins with a new id.
    let old_id = zone.node(0).node_id();
    zone.node_mut(0).restart().await;
    zone.wait_for_alive(4, WAIT).await;
    assert_ne!(zone.node(0).node_id(), old_id);

    let db_name = zone.db().unwrap().name().to_owned();
    drop(zone);
    assert!(!e2e::db::database_exists(&db_name).await, "the cluster's database {db_name} outlived it");
}

#[tokio::test]
async fn cluster_wait_until_failure_names_the_condition_and_shows_logs() {
    let registry = tempfile::tempdir().unwrap();
    let zone = Cluster::start(1, fake_cluster_options(&registry)).await;
    let waited =
        std::panic::AssertUnwindSafe(zone.wait_until(Duration::from_millis(300), "the impossible happens", || async {
            Err::<(), _>("still possible")
        }))
        .catch_unwind()
        .await;
    let panic = waited.expect_err("wait_until must panic on timeout");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    for needle in [
        zone.name(),
        "waiting until the impossible happens",
        "last observation: still possible",
        "--- node 0",
        "serving",
    ] {
        assert!(message.contains(needle), "failure message lacks {needle:?}:\n{message}");
    }
}

#[tokio::test]
async fn run_to_exit_reports_code_and_output() {
    // A stand-in for a node that refuses a setting: names it on stderr and exits 2.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("refuses-settings");
    std::fs::write(&script, "#!/bin/sh\necho \"bad setting ZONE_SMOKE_MARKER=$ZONE_SMOKE_MARKER\" >&2\nexit 2\n")
        .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut spec = NodeSpec::embedded().with_env("ZONE_SMOKE_MARKER", "marker-42");
    spec.binary = Some(script);
    let output = spec.run_to_exit().await;
    assert_eq!(output.code, Some(2), "{output:?}");
    assert!(output.stderr.contains("ZONE_SMOKE_MARKER=marker-42"), "{output:?}");
}
