//! A zone of several real `zone-node` processes on PostgreSQL and RabbitMQ: membership, the ring,
//! eviction after `kill -9`, and a fourth node joining while work runs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use api::ErrorCode;
use e2e::{Cluster, ClusterOptions};
use uuid::Uuid;

fn random_resources(n: usize) -> Vec<String> {
    (0..n).map(|_| Uuid::new_v4().to_string()).collect()
}

/// Asks every node of the zone for the owners of `resources`; panics unless all agree.
async fn agreed_owners(zone: &Cluster, resources: &[String]) -> Vec<String> {
    let mut answers = Vec::new();
    for node in zone.nodes() {
        let client = node.client().await;
        answers.push(client.owners(resources.to_vec()).await.expect("owners"));
    }
    let first = &answers[0];
    for other in &answers[1..] {
        assert_eq!(other.ring_epoch, first.ring_epoch, "nodes answered from different ring epochs");
        let disagreements = first.owners.iter().zip(&other.owners).filter(|(a, b)| a != b).count();
        assert_eq!(
            disagreements, 0,
            "node {} and node {} disagree on {disagreements} owners",
            first.node_id, other.node_id
        );
    }
    first.owners.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_one_zone_and_agree_on_owners() {
    let zone = Cluster::start(3, ClusterOptions::default()).await;
    let ids: Vec<String> = zone.nodes().iter().map(|n| n.node_id()).collect();
    for node in zone.nodes() {
        let info = node.client().await.zone().await.expect("zone");
        let mut alive: Vec<String> = info.nodes.iter().filter(|n| n.state == "alive").map(|n| n.id.clone()).collect();
        alive.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(alive, expected, "{} lists other nodes", node.url());
    }
    let resources = random_resources(10_000);
    let owners = agreed_owners(&zone, &resources).await;
    let mut share: HashMap<&str, usize> = HashMap::new();
    for o in &owners {
        *share.entry(o.as_str()).or_default() += 1;
    }
    assert_eq!(share.len(), 3, "every node owns part of the ring: {share:?}");
    for (node, n) in &share {
        assert!(*n > 2000, "node {node} owns only {n} of 10000");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_is_evicted_its_calls_fail_and_survivors_take_over() {
    let options = ClusterOptions::default();
    let (heartbeat, dead_after) =
        (Duration::from_millis(options.heartbeat_ms), Duration::from_millis(options.dead_after_ms));
    let mut zone = Cluster::start(3, options).await;
    let victim = zone.node(2).node_id();
    let admin0 = zone.node(0).client().await;

    // Resources the victim owns.
    let resources = random_resources(300);
    let owners = agreed_owners(&zone, &resources).await;
    let victims: Vec<String> =
        resources.iter().zip(&owners).filter(|(_, o)| **o == victim).map(|(r, _)| r.clone()).collect();
    assert!(victims.len() > 30, "victim owns {} of 300", victims.len());

    // A call waiting on the victim when it dies.
    let waiting = {
        let client = admin0.clone();
        let resource = victims[0].clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = client.probe(&resource, 9_000).await;
            (result, started.elapsed())
        })
    };
    // Kill only once the probe runs on the victim (its row says so), not after a guessed delay.
    zone.wait_until(Duration::from_secs(10), "the probe runs on the victim", || async {
        zone.probe_stats().await.iter().any(|s| s.resource_id == victims[0] && s.active == 1)
    })
    .await;

    let killed_at = Instant::now();
    zone.node_mut(2).kill9().await;

    // Survivors evict it within the timeout plus one tick, with slack for a loaded 2-core machine
    // (a bound on the order of the timeout, not a benchmark: docs/benchmarks.md §2 measures it).
    let limit = dead_after + heartbeat + Duration::from_secs(5);
    let mut evicted_after = None;
    while killed_at.elapsed() < limit + Duration::from_secs(5) {
        let info = admin0.zone().await.expect("zone");
        if info.nodes.iter().any(|n| n.id == victim && n.state == "dead") {
            evicted_after = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let evicted_after = evicted_after.expect("victim never evicted");
    assert!(evicted_after <= limit, "evicted after {evicted_after:?}, limit {limit:?}");

    // The waiting call failed with node_unavailable at eviction, not at its deadline.
    let (result, took) = waiting.await.expect("join");
    let error = result.expect_err("the probe on a killed node cannot succeed");
    assert_eq!(error.code(), Some(ErrorCode::NodeUnavailable), "{error}");
    assert!(took < Duration::from_secs(9), "the call waited {took:?}, as long as its hold");

    // The victim's share is now served by the survivors, through either survivor.
    let survivors = [zone.node(0).node_id(), zone.node(1).node_id()];
    for (i, resource) in victims.iter().take(20).enumerate() {
        let client = zone.node(i % 2).client().await;
        let done = e2e::poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
            let client = client.clone();
            let resource = resource.clone();
            async move { client.probe(&resource, 0).await.ok() }
        })
        .await
        .unwrap_or_else(|| panic!("resource {resource} of the dead node never served"));
        assert!(survivors.contains(&done.node_id), "served by {}", done.node_id);
    }

    // Restarted, it rejoins (as a new node id) and the zone has three alive nodes again.
    zone.node_mut(2).restart().await;
    zone.wait_for_alive(3, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_node_takes_a_quarter_and_no_resource_runs_twice() {
    let mut zone = Cluster::start(3, ClusterOptions::default()).await;
    let resources = random_resources(10_000);
    let before = agreed_owners(&zone, &resources).await;

    // Keep probes running on 64 resources through all three APIs while the fourth node joins.
    let hot: Vec<String> = resources[..64].to_vec();
    let probes = ProbeLoops::start(&zone, &hot, 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fourth = zone.add_node().await.node_id();
    zone.wait_for_alive(4, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = probes.stop_and_check(&zone, "during the join").await;
    assert!(calls > 64, "too few probes ran ({calls})");

    let after = agreed_owners(&zone, &resources).await;
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            assert_eq!(a, &fourth, "a resource moved between two old nodes");
        }
    }
    // With V = 128 virtual nodes per node a node's share is a sum of V arcs: mean 1/4, standard
    // deviation about 1/(4·sqrt(V)) = 2.2 points for random node ids. 20-30 % (±2.3σ) failed about
    // one run in fifty (CI saw 30.1 %); 15-35 % is ±4.5σ, and a ring that moved keys between old
    // nodes or gave the newcomer none or all of them still fails.
    let share = moved as f64 / resources.len() as f64;
    assert!((0.15..=0.35).contains(&share), "the fourth node took {:.1}% of resources", share * 100.0);
    // And the moved keys now run there: a probe of one is handled by the fourth node.
    let client = zone.client(0).await;
    let moved_keys: Vec<&String> =
        resources.iter().zip(before.iter().zip(&after)).filter(|(_, (b, a))| b != a).map(|(r, _)| r).take(5).collect();
    for r in moved_keys {
        let ran = client.probe(r, 0).await.expect("a probe of a moved resource");
        assert_eq!(ran.node_id, fourth, "{r} moved to the fourth node but ran on {}", ran.node_id);
    }
}

/// A node that leaves on SIGTERM while probes run on its resources through the other two: it exits
/// 0, every probe succeeds (what it held is finished, and what reaches it afterwards is forwarded
/// to the new owners), and no resource ever runs twice at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaving_under_load_loses_no_call_and_runs_nothing_twice() {
    let zone = Cluster::start(3, ClusterOptions::default()).await;
    let resources = random_resources(48);
    // Through the nodes that stay (0 and 1).
    let probes = ProbeLoops::start(&zone, &resources, 2).await;
    // Probes of the leaving node's own resources are running when it is told to go.
    let leaving = zone.node(2).node_id();
    zone.wait_until(Duration::from_secs(20), "a probe running on the node that will leave", || async {
        zone.probe_stats().await.iter().any(|s| s.active > 0 && s.completed > 0).then_some(())
    })
    .await;
    let status = zone.node(2).terminate().await.expect("the node exits on SIGTERM");
    assert!(status.success(), "{}", zone.node(2).failure(&format!("the leaving node exited with {status}")));
    zone.wait_for_alive(2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = probes.stop_and_check(&zone, &format!("while {leaving} left")).await;
    assert!(calls > 48, "too few probes ran ({calls})");
}

/// One loop per resource probing it (20 ms holds) through nodes `0..through`, round robin, until
/// stopped; each checks that it never saw another handler on its resource.
struct ProbeLoops {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(String, u64, Vec<String>)>>,
}

impl ProbeLoops {
    async fn start(zone: &Cluster, resources: &[String], through: usize) -> ProbeLoops {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut workers = Vec::new();
        for (w, resource) in resources.iter().enumerate() {
            let client = zone.node(w % through).client().await;
            let (resource, stop) = (resource.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match client.probe(&resource, 20).await {
                        Ok(r) => {
                            assert_eq!(r.active, 1, "two handlers on {resource} at once");
                            ok += 1;
                        }
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (resource, ok, failed)
            }));
        }
        ProbeLoops { stop, workers }
    }

    /// Stops the loops and checks that no probe failed (`when` says during what) and, by the
    /// database's own count, that every successful probe completed once and no resource ever had
    /// two handlers at once. Answers how many probes succeeded.
    async fn stop_and_check(self, zone: &Cluster, when: &str) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut calls = 0;
        for worker in self.workers {
            let (resource, ok, failed) = worker.await.expect("a probe loop panicked");
            assert!(failed.is_empty(), "probes on {resource} failed {when}: {failed:?}");
            calls += ok;
        }
        let stats = zone.probe_stats().await;
        let total: i64 = stats.iter().map(|s| s.completed).sum();
        assert_eq!(total as u64, calls, "completed probes in the database differ from successful calls");
        for s in &stats {
            assert_eq!(s.max_active, 1, "resource {} had {} concurrent handlers", s.resource_id, s.max_active);
        }
        calls
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// A node paused (`SIGSTOP`) past `dead_after` is evicted by its peer; resumed, it learns so at its
/// next heartbeat and, instead of exiting, rejoins the zone as a new member by itself: the same
/// process and URL, a new node id, alive again and serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_node_rejoins_as_a_new_member_without_a_restart() {
    let options = ClusterOptions::default();
    let dead_after = Duration::from_millis(options.dead_after_ms);
    let zone = Cluster::start(2, options).await;
    let (old_id, url) = (zone.node(1).node_id(), zone.node(1).url());
    let pid = zone.node(1).pid().expect("node 1 runs");
    let admin0 = zone.node(0).client().await;

    signal(pid, "-STOP");
    zone.wait_until(dead_after * 4, "node 0 evicts the paused node 1", || async {
        let info = admin0.zone().await.ok()?;
        info.nodes.iter().any(|n| n.id == old_id && n.state == "dead").then_some(())
    })
    .await;
    signal(pid, "-CONT");

    let new_id = zone
        .wait_until(Duration::from_secs(30), "node 1 rejoins with a new id", || async {
            let info = admin0.zone().await.ok()?;
            info.nodes
                .iter()
                .find(|n| {
                    n.api_url.trim_end_matches('/') == url.trim_end_matches('/') && n.state == "alive" && n.id != old_id
                })
                .map(|n| n.id.clone())
        })
        .await;
    assert_ne!(new_id, old_id);
    assert!(zone.node(1).exit_status().is_none(), "node 1 exited instead of rejoining");
    assert_eq!(zone.node(1).pid(), Some(pid), "the same process");
    // It serves again: its own API answers with its new id.
    let info = zone.node(1).client().await.zone().await.expect("node 1 serves again");
    assert_eq!(info.node_id, new_id);
}
