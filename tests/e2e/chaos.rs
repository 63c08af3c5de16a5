//! Chaos: three nodes on PostgreSQL and RabbitMQ with simulated hosts, under a stream of creates,
//! actions, deletes and probes, while a chaos loop `kill -9`s a random node every few seconds and
//! starts it again, and once pauses one (`SIGSTOP`) past `dead_after`.
//!
//! After it settles, checked from the API, the database and the simulated agents:
//! - no node exited on its own, and the zone has three alive nodes again;
//! - no instance stays in a transitional state longer than the agent timeout;
//! - every create answered 201 exists, unless a delete of it was answered 204 (then it is gone);
//! - every host's used capacity equals the sum of its instances' resources;
//! - no resource was worked on by two nodes at once: the probe counter never saw two handlers on a
//!   resource, and no agent saw two tasks on one instance at once.
//!
//! `ZONE_CHAOS_SECS` (default 20) sets how long the chaos runs; `scripts/bench/chaos.sh` runs it
//! longer and prints the summary line this test prints (`chaos: ...`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{ClientError, InstanceAction, InstanceActionKind, InstanceCreate, Resources};
use e2e::{Cluster, ClusterOptions, SimProcess, SimSpec};
use rand::{Rng, SeedableRng};

const CONTROL_TOKEN: &str = "chaos-control-token-0123456789";
/// How long an agent task may take before its instance goes to `error`.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);
/// A node is killed (and started again) this often.
const KILL_EVERY: Duration = Duration::from_secs(4);
/// Workers sending creates, actions and deletes; resources probed at once.
const WORKERS: usize = 4;
const PROBERS: usize = 3;
const TRANSITIONAL: [&str; 6] = ["building", "starting", "stopping", "rebooting", "migrating", "deleting"];

fn chaos_duration() -> Duration {
    let secs = std::env::var("ZONE_CHAOS_SECS")
        .ok()
        .map(|s| s.parse::<u64>().unwrap_or_else(|_| panic!("ZONE_CHAOS_SECS must be a number of seconds, not {s:?}")));
    Duration::from_secs(secs.unwrap_or(20))
}

/// What the workers saw: instances whose create was answered 201, those whose delete was answered
/// 204, and those whose delete failed (a delete cut short by a kill may still have been done);
/// outcomes by operation and error code, for the summary.
#[derive(Default)]
struct Seen {
    created: Vec<String>,
    deleted: Vec<String>,
    delete_failed: Vec<String>,
    outcomes: BTreeMap<String, u64>,
}

impl Seen {
    fn count<T>(&mut self, op: &str, result: &Result<T, ClientError>) {
        let key = match result {
            Ok(_) => format!("{op} ok"),
            Err(e) => match (e.code(), e.status()) {
                (Some(code), _) => format!("{op} {}", code.as_str()),
                (None, Some(status)) => format!("{op} {status}"),
                // The node was killed or paused under the request.
                (None, None) => format!("{op} unreachable"),
            },
        };
        *self.outcomes.entry(key).or_default() += 1;
    }
}

/// Creates, actions and deletes through random nodes until stopped.
async fn worker(clients: Vec<api::Client>, seed: u64, stop: Arc<AtomicBool>) -> Seen {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut seen = Seen::default();
    let mut live: Vec<String> = Vec::new();
    let actions = [InstanceActionKind::Stop, InstanceActionKind::Start, InstanceActionKind::Reboot];
    while !stop.load(Ordering::SeqCst) {
        let client = &clients[rng.gen_range(0..clients.len())];
        let roll = rng.gen_range(0..10);
        if roll < 5 || live.is_empty() {
            let create = InstanceCreate {
                name: format!("chaos-{seed}-{}", seen.created.len()),
                client_id: Some(format!("chaos-{}", seed % 3)),
                requirements: Vec::new(),
                resources: Resources { vcpus: rng.gen_range(1..=2), memory_mb: 512, disk_gb: rng.gen_range(5..=20) },
                count: None,
            };
            let result = client.instance_create(&create).await;
            seen.count("create", &result);
            if let Ok(instance) = result {
                seen.created.push(instance.id.clone());
                live.push(instance.id);
            }
        } else if roll < 8 {
            let id = &live[rng.gen_range(0..live.len())];
            let action = actions[rng.gen_range(0..actions.len())];
            let result = client.instance_action(id, &InstanceAction { action, host_id: None }).await;
            seen.count(action.as_str(), &result);
        } else {
            let id = live.swap_remove(rng.gen_range(0..live.len()));
            let result = client.instance_delete(&id).await;
            seen.count("delete", &result);
            if result.is_ok() {
                seen.deleted.push(id);
            } else {
                seen.delete_failed.push(id);
            }
        }
    }
    seen
}

/// Probes through random nodes until stopped. A failed probe may have been cut short on a killed
/// node, which leaves its resource's `active` raised for good (evidence, by design), so the loop
/// moves on to a new resource after a failure; every resource must never have had two handlers.
async fn prober(clients: Vec<api::Client>, seed: u64, stop: Arc<AtomicBool>) -> (u64, u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut ok, mut failed) = (0, 0);
    let mut resource = format!("chaos-probe-{}", uuid::Uuid::new_v4());
    while !stop.load(Ordering::SeqCst) {
        let client = &clients[rng.gen_range(0..clients.len())];
        match client.probe(&resource, 20).await {
            Ok(reply) => {
                assert_eq!(reply.active, 1, "two handlers on {resource} at once: {reply:?}");
                ok += 1;
            }
            Err(_) => {
                failed += 1;
                resource = format!("chaos-probe-{}", uuid::Uuid::new_v4());
            }
        }
    }
    (ok, failed)
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_of_kills_and_a_pause_leaves_every_invariant_standing() {
    let options = ClusterOptions {
        env: vec![
            ("ZONE_HOST_REPORT_INTERVAL_MS".into(), "200".into()),
            ("ZONE_HOST_MAX_MISSED_REPORTS".into(), "25".into()),
            ("ZONE_AGENT_TIMEOUT_MS".into(), AGENT_TIMEOUT.as_millis().to_string()),
        ],
        ..ClusterOptions::default()
    };
    let dead_after = Duration::from_millis(options.dead_after_ms);
    let zone = Cluster::start(3, options).await;
    let spec = zone.spec();
    let sim = SimProcess::start(SimSpec {
        zone_url: zone.node(0).url(),
        username: spec.admin_username.clone(),
        password: spec.admin_password.clone(),
        hosts: 8,
        latency_ms: 100,
        fail_rate: 0.0,
        profile: "uniform".into(),
        name_prefix: "chaos".into(),
        report_interval_ms: 200,
        control_token: Some(CONTROL_TOKEN.into()),
        capabilities: Vec::new(),
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(zone.client(i).await.with_timeout(Duration::from_secs(15)));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> =
        (0..WORKERS as u64).map(|seed| tokio::spawn(worker(clients.clone(), 20261203 + seed, stop.clone()))).collect();
    let probers: Vec<_> =
        (0..PROBERS as u64).map(|seed| tokio::spawn(prober(clients.clone(), seed, stop.clone()))).collect();

    // The chaos loop: a kill every KILL_EVERY, and one pause past dead_after half-way through.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (started, duration) = (Instant::now(), chaos_duration());
    let (mut kills, mut paused) = (0, false);
    while started.elapsed() < duration {
        tokio::time::sleep(KILL_EVERY).await;
        let victim = rng.gen_range(0..3);
        let node = zone.node(victim);
        assert!(node.exit_status().is_none(), "{}", zone.failure(&format!("node {victim} exited on its own")));
        if !paused && started.elapsed() >= duration / 2 {
            let pid = node.pid().expect("a running node has a pid");
            signal(pid, "-STOP");
            tokio::time::sleep(dead_after + Duration::from_secs(1)).await;
            signal(pid, "-CONT");
            paused = true;
            continue;
        }
        node.kill9().await;
        node.respawn();
        node.wait_ready(Duration::from_secs(60)).await;
        kills += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let mut seen = Seen::default();
    for w in workers {
        let s = w.await.expect("a worker panicked");
        seen.created.extend(s.created);
        seen.deleted.extend(s.deleted);
        seen.delete_failed.extend(s.delete_failed);
        for (k, v) in s.outcomes {
            *seen.outcomes.entry(k).or_default() += v;
        }
    }
    let (mut probes_ok, mut probes_failed) = (0, 0);
    for p in probers {
        let (ok, failed) = p.await.expect("a prober panicked");
        probes_ok += ok;
        probes_failed += failed;
    }

    // Nobody exited on its own; the zone has three alive nodes again (the paused one rejoined).
    for (i, node) in zone.nodes().iter().enumerate() {
        assert!(node.exit_status().is_none(), "{}", zone.failure(&format!("node {i} exited on its own")));
    }
    zone.wait_for_alive(3, Duration::from_secs(60)).await;
    let settled_at = Instant::now();

    // No instance stays in a transitional state longer than the agent timeout (orphaned tasks are
    // taken over and finished, or end in error, by the agent timeout plus a scan or two).
    let admin = zone.client(0).await;
    let list_all = || async { admin.all_instances("limit=1000").await.map(|l| l.instances).map_err(|e| e.to_string()) };
    let instances = zone
        .wait_until(AGENT_TIMEOUT + Duration::from_secs(20), "no instance is in a transitional state", || async {
            let all = list_all().await?;
            let busy: Vec<_> = all
                .iter()
                .filter(|i| TRANSITIONAL.contains(&i.state.as_str()))
                .map(|i| format!("{} {}", i.id, i.state))
                .collect();
            if busy.is_empty() {
                Ok(all)
            } else {
                Err(format!("{} transitional: {busy:?}", busy.len()))
            }
        })
        .await;
    let settle = settled_at.elapsed();

    // Every create answered 201 exists, unless its delete was answered 204 (then it is gone) or
    // failed (then either).
    let ids: HashMap<&str, &api::Instance> = instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let deleted: HashSet<&str> = seen.deleted.iter().map(String::as_str).collect();
    let maybe_deleted: HashSet<&str> = seen.delete_failed.iter().map(String::as_str).collect();
    for id in &seen.created {
        if deleted.contains(id.as_str()) {
            assert!(!ids.contains_key(id.as_str()), "{id} was deleted (204) but is listed: {:?}", ids[id.as_str()]);
        } else if !maybe_deleted.contains(id.as_str()) {
            assert!(ids.contains_key(id.as_str()), "{id} was created (201) and never deleted, but is not listed");
        }
    }

    // Each host's used capacity is the sum of its instances' resources. (A create used to reserve
    // and insert in two transactions, and a node killed between them leaked the reservation:
    // this check found it; now both are one transaction, `Store::instance_place_and_insert`.)
    let mut sums: HashMap<String, Resources> = HashMap::new();
    for i in &instances {
        if let Some(host) = &i.host_id {
            let s = sums.entry(host.clone()).or_default();
            s.vcpus += i.resources.vcpus;
            s.memory_mb += i.resources.memory_mb;
            s.disk_gb += i.resources.disk_gb;
        }
    }
    let hosts = admin.hosts().await.expect("hosts").hosts;
    for host in &hosts {
        let sum = sums.get(&host.id).copied().unwrap_or_default();
        assert_eq!(host.used, sum, "host {} reports used {:?}, its instances add up to {sum:?}", host.name, host.used);
    }

    // No resource was worked on by two nodes at once.
    for s in zone.probe_stats().await {
        assert_eq!(s.max_active, 1, "resource {} had {} handlers at once", s.resource_id, s.max_active);
    }
    for host in &hosts {
        let stats = sim.stats(&host.agent_url).await;
        assert!(
            matches!(stats["max_concurrent_per_instance"].as_u64(), Some(0 | 1)),
            "the agent of {} saw two tasks on one instance at once: {stats}",
            host.name
        );
    }

    let outcomes: Vec<String> = seen.outcomes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!(
        "chaos: {:.0}s, {kills} kills, 1 pause of {:?}; {} created, {} deleted, {} deletes failed, {} listed at the end; \
         probes {probes_ok} ok, {probes_failed} failed; settled in {:.1}s; {}",
        duration.as_secs_f64(),
        dead_after + Duration::from_secs(1),
        seen.created.len(),
        seen.deleted.len(),
        seen.delete_failed.len(),
        instances.len(),
        settle.as_secs_f64(),
        outcomes.join(" ")
    );
    assert!(kills > 0 && paused, "the chaos loop did no kill or no pause: {kills} kills");
    assert!(!seen.created.is_empty(), "no create succeeded during the chaos");
}
