//! Benchmark: 10,000 instance creates through the REST API against `agent-sim` hosts.
//!
//! Starts real processes (the `zone-node` binary named by `ZONE_NODE_BIN`, normally a release
//! build), one zone at a time:
//! - `sqlite`: one node on its embedded defaults (SQLite, in-process bus);
//! - `pg1`: one node on PostgreSQL and RabbitMQ;
//! - `pg3`: three nodes on PostgreSQL and RabbitMQ, creates spread over the three APIs.
//!
//! and prints, per setup, wall time, creates/s, latency percentiles and each node's peak RSS
//! (`VmHWM`). Run it with `scripts/bench/creates.sh` (which builds the release binary first).
//!
//! ```text
//! bench-creates [--creates N] [--hosts N] [--concurrency N] [--latency-ms MS] [--setups sqlite,pg1,pg3]
//! ```

use std::time::{Duration, Instant};

use api::{InstanceCreate, Resources};
use e2e::procfs::peak_rss_mib;
use e2e::{Cluster, ClusterOptions, NodeProcess, NodeSpec, SimProcess, SimSpec};
use futures::StreamExt;

const USAGE: &str = "usage: bench-creates [--creates N] [--hosts N] [--concurrency N] [--latency-ms MS] \
     [--setups sqlite,pg1,pg3]";

struct Args {
    creates: usize,
    hosts: usize,
    concurrency: usize,
    latency_ms: u64,
    setups: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        creates: 10_000,
        hosts: 100,
        concurrency: 64,
        latency_ms: 0,
        setups: vec!["sqlite".into(), "pg1".into(), "pg3".into()],
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--creates" => a.creates = value.parse().expect("--creates N"),
            "--hosts" => a.hosts = value.parse().expect("--hosts N"),
            "--concurrency" => a.concurrency = value.parse().expect("--concurrency N"),
            "--latency-ms" => a.latency_ms = value.parse().expect("--latency-ms MS"),
            "--setups" => a.setups = value.split(',').map(str::to_owned).collect(),
            other => {
                eprintln!("bench-creates: unknown argument {other}\n{USAGE}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run(setup: &str, nodes: &[&NodeProcess], username: &str, password: &str, a: &Args) {
    let sim = SimProcess::start(SimSpec {
        zone_url: nodes[0].url(),
        username: username.into(),
        password: password.into(),
        hosts: a.hosts,
        latency_ms: a.latency_ms,
        fail_rate: 0.0,
        profile: "big".into(),
        name_prefix: "bench".into(),
        report_interval_ms: 1000,
        control_token: None,
        capabilities: Vec::new(),
    })
    .await;
    let mut clients = Vec::new();
    for n in nodes {
        clients.push(api::Client::new(&n.url()).login(username, password).await.expect("login").0);
    }
    let started = Instant::now();
    let results: Vec<(Duration, bool)> = futures::stream::iter(0..a.creates)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            async move {
                let t = Instant::now();
                let req = InstanceCreate {
                    name: format!("vm-{i}"),
                    client_id: Some(format!("client-{}", i % 100)),
                    requirements: vec![],
                    resources: Resources { vcpus: 1, memory_mb: 512, disk_gb: 10 },
                    count: None,
                };
                let ok = client.instance_create(&req).await.map(|inst| inst.state == "running").unwrap_or_else(|e| {
                    eprintln!("create {i} failed: {e}");
                    false
                });
                (t.elapsed(), ok)
            }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    let wall = started.elapsed();
    let ok = results.iter().filter(|r| r.1).count();
    let mut lat: Vec<Duration> = results.iter().map(|r| r.0).collect();
    lat.sort();
    let rss: Vec<String> =
        nodes.iter().map(|n| format!("{:.0}", n.pid().map(peak_rss_mib).unwrap_or(f64::NAN))).collect();
    println!(
        "{setup:>6} | nodes {} | creates {ok}/{} | wall {:.1} s | {:.0} creates/s | p50 {:.1} ms p99 {:.1} ms | peak RSS MiB per node [{}] | agent-sim {:.0} MiB",
        nodes.len(),
        a.creates,
        wall.as_secs_f64(),
        ok as f64 / wall.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        rss.join(", "),
        sim.process().pid().map(peak_rss_mib).unwrap_or(f64::NAN)
    );
    drop(sim);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    println!(
        "bench-creates: {} creates, {} simulated hosts (latency {} ms), {} in flight",
        a.creates, a.hosts, a.latency_ms, a.concurrency
    );
    for setup in a.setups.clone() {
        match setup.as_str() {
            "sqlite" => {
                let spec = NodeSpec::embedded();
                let (user, pass) = (spec.admin_username.clone(), spec.admin_password.clone());
                let node = NodeProcess::start(spec).await;
                run("sqlite", &[&node], &user, &pass, &a).await;
            }
            "pg1" | "pg3" => {
                let n = if setup == "pg1" { 1 } else { 3 };
                let zone = Cluster::start(n, ClusterOptions::default()).await;
                let (user, pass) = (zone.spec().admin_username.clone(), zone.spec().admin_password.clone());
                let nodes: Vec<&NodeProcess> = zone.nodes().iter().collect();
                run(&setup, &nodes, &user, &pass, &a).await;
            }
            other => panic!("unknown setup {other}: use sqlite, pg1 or pg3"),
        }
    }
}
