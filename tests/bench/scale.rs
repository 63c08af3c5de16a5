//! Benchmark: one zone at the scale it exists for (issue 9), from 1,000 to 100,000 hosts and from
//! 10,000 to 1,000,000 instances.
//!
//! For each setup and host count it starts a zone (real `zone-node` processes, the binary named by
//! `ZONE_NODE_BIN`, normally a release build) and `zone-node agent-sim` with that many hosts of
//! the `mixed` profile, and measures:
//! - registration: from starting the simulator until every host is registered (and so up), as
//!   the bench sees it; the simulator's own figure beside it; then checks the zone lists them up;
//! - idle: with every host reporting and no API call, the node's CPU (% of one core, summed over
//!   the zone's nodes), its RSS (largest node), reports handled per second (from `/metrics`),
//!   and the simulator's RSS;
//! - `GET /v1/capabilities` and `POST /v1/placements` (two filters) p50/p99, one at a time;
//! - creates/s through `POST /v1/instances`, 32 in flight (`--creates` of them).
//!
//! Then, for each instance count, it **inserts instances directly in SQL** up to that count
//! (placed on the registered hosts, state running, no capacity reserved, 10,000 clients), and
//! measures `GET /v1/instances` (first page; a later page from a random marker),
//! `GET /v1/instances/{id}`, `GET /v1/clients/{id}/zone` cold (a client never asked before),
//! each p50/p99, and creates/s again. Latencies are the client's, over loopback, with one login.
//!
//! Setups: `embedded` (one node, SQLite, in-process bus), `pg1` (one node on PostgreSQL and
//! RabbitMQ), `pg3` (three). Run it with `scripts/bench/scale.sh` (which builds the release
//! binary first):
//!
//! ```text
//! bench-scale [--hosts 1000,10000,100000] [--instances 10000,100000,1000000]
//!             [--setups embedded,pg1,pg3] [--creates 1000] [--samples 200] [--idle-secs 30]
//!             [--report-interval-ms MS] [--register-concurrency N]
//! ```
//!
//! Each host reports every `--report-interval-ms`; by default 1 s per 1,000 hosts (1,000 reports
//! a second), at most 60 s, as in the issue's table. The zone is told the same interval.

use std::time::{Duration, Instant};

const USAGE: &str = "usage: bench-scale [--hosts 1000,10000,100000] [--instances 10000,100000,1000000] \
     [--setups embedded,pg1,pg3] [--creates 1000] [--samples 200] [--idle-secs 30] [--report-interval-ms MS] \
     [--register-concurrency N]";

use api::{Op, PlacementRequest, Requirement, Resources};
use e2e::procfs::{cpu_seconds, rss_mib};
use e2e::{Cluster, ClusterOptions, NodeProcess, NodeSpec, SimProcess, SimSpec};
use futures::StreamExt;
use rand::seq::SliceRandom;
use serde_json::json;

struct Args {
    hosts: Vec<usize>,
    instances: Vec<usize>,
    setups: Vec<String>,
    creates: usize,
    samples: usize,
    idle: Duration,
    report_interval_ms: Option<u64>,
    register_concurrency: Option<usize>,
}

fn list<T: std::str::FromStr>(value: &str, flag: &str) -> Vec<T> {
    value.split(',').map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{flag}: {v:?} is not a number"))).collect()
}

fn args() -> Args {
    let mut a = Args {
        hosts: vec![1_000, 10_000, 100_000],
        instances: vec![10_000, 100_000, 1_000_000],
        setups: vec!["embedded".into()],
        creates: 1_000,
        samples: 200,
        idle: Duration::from_secs(30),
        report_interval_ms: None,
        register_concurrency: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let flag = argv[i].as_str();
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = argv.get(i + 1).cloned().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag {
            "--hosts" => a.hosts = list(&value, flag),
            "--instances" => a.instances = if value.is_empty() { Vec::new() } else { list(&value, flag) },
            "--setups" => a.setups = value.split(',').map(str::to_owned).collect(),
            "--creates" => a.creates = value.parse().expect("--creates N"),
            "--samples" => a.samples = value.parse().expect("--samples N"),
            "--idle-secs" => a.idle = Duration::from_secs(value.parse().expect("--idle-secs S")),
            "--report-interval-ms" => a.report_interval_ms = Some(value.parse().expect("--report-interval-ms MS")),
            "--register-concurrency" => a.register_concurrency = Some(value.parse().expect("--register-concurrency N")),
            other => {
                eprintln!("bench-scale: unknown argument {other}\n{USAGE}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a.instances.sort_unstable();
    a
}

/// Longest the bench waits for every host to register.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(1800);
/// Longest one latency measurement samples for (fewer samples when the call is slow).
const SAMPLING_BUDGET: Duration = Duration::from_secs(60);
/// Creates in flight, as in the issue's figures.
const CREATE_CONCURRENCY: usize = 32;
/// Clients the seeded instances belong to.
const SEEDED_CLIENTS: usize = 10_000;
/// Instances inserted per SQL statement (and transaction), so the node's own writes wait at
/// most about a second behind the seeding.
const SEED_BATCH: usize = 20_000;

// ---------------------------------------------------------------------------------------------
// figures

#[derive(Default, Clone, Copy)]
struct Spread {
    p50: f64,
    p99: f64,
    n: usize,
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.n == 0 {
            return write!(f, "-");
        }
        write!(f, "{} / {}", ms(self.p50), ms(self.p99))
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn spread(mut samples: Vec<Duration>) -> Spread {
    if samples.is_empty() {
        return Spread::default();
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    Spread { p50: at(0.5), p99: at(0.99), n: samples.len() }
}

/// Times `call(i)` for i in 0..samples, one at a time, after a few unmeasured warm-up calls;
/// stops early when [`SAMPLING_BUDGET`] is spent (at least 5 samples). Panics on a failed call.
async fn sample<F, Fut, T, E>(what: &str, samples: usize, warmup: usize, mut call: F) -> Spread
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    for i in 0..warmup {
        if let Err(e) = call(samples + i).await {
            panic!("{what} failed: {e}");
        }
    }
    let started = Instant::now();
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = Instant::now();
        if let Err(e) = call(i).await {
            panic!("{what} failed: {e}");
        }
        times.push(t.elapsed());
        if started.elapsed() > SAMPLING_BUDGET && times.len() >= 5 {
            break;
        }
    }
    spread(times)
}

// ---------------------------------------------------------------------------------------------
// the zone under test

struct Zone {
    _embedded: Option<NodeProcess>,
    _cluster: Option<Cluster>,
    /// Every node's API URL and pid.
    nodes: Vec<(String, u32)>,
    username: String,
    password: String,
    /// `sqlite://…` or `postgres://…`.
    database_url: String,
}

impl Zone {
    async fn start(setup: &str, report_interval_ms: u64) -> Zone {
        let env = vec![("ZONE_HOST_REPORT_INTERVAL_MS".to_owned(), report_interval_ms.to_string())];
        match setup {
            "embedded" => {
                let mut spec = NodeSpec::embedded();
                spec.env.extend(env);
                let (username, password) = (spec.admin_username.clone(), spec.admin_password.clone());
                let node = NodeProcess::start(spec).await;
                let database_url = format!("sqlite://{}", node.data_dir().join("zone.db").display());
                let nodes = vec![(node.url(), node.pid().expect("the node runs"))];
                Zone { _embedded: Some(node), _cluster: None, nodes, username, password, database_url }
            }
            "pg1" | "pg3" => {
                let n = if setup == "pg1" { 1 } else { 3 };
                let options = ClusterOptions { env, ..ClusterOptions::default() };
                let zone = Cluster::start(n, options).await;
                let (username, password) = (zone.spec().admin_username.clone(), zone.spec().admin_password.clone());
                let nodes = zone.nodes().iter().map(|n| (n.url(), n.pid().expect("the node runs"))).collect();
                let database_url = zone.database_url().to_owned();
                Zone { _embedded: None, _cluster: Some(zone), nodes, username, password, database_url }
            }
            other => panic!("unknown setup {other}: use embedded, pg1 or pg3"),
        }
    }

    fn url(&self) -> &str {
        &self.nodes[0].0
    }

    /// An admin client and its bearer token for each node.
    async fn clients(&self) -> Vec<(api::Client, String)> {
        let mut clients = Vec::new();
        for (url, _) in &self.nodes {
            let (client, token) = api::Client::new(url).login(&self.username, &self.password).await.expect("login");
            clients.push((client, token.token));
        }
        clients
    }

    fn cpu_seconds(&self) -> f64 {
        self.nodes.iter().map(|(_, pid)| cpu_seconds(*pid)).sum()
    }

    fn max_rss_mib(&self) -> f64 {
        self.nodes.iter().map(|(_, pid)| rss_mib(*pid)).fold(0.0, f64::max)
    }

    /// Host reports the zone's nodes have answered so far (their `/metrics`).
    async fn reports_handled(&self, http: &reqwest::Client) -> f64 {
        let mut total = 0.0;
        for (url, _) in &self.nodes {
            let text = http.get(format!("{url}/metrics")).send().await.expect("GET /metrics").text().await.unwrap();
            total += text
                .lines()
                .filter(|l| l.starts_with("http_requests_total{") && l.contains("report"))
                .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
                .sum::<f64>();
        }
        total
    }
}

// ---------------------------------------------------------------------------------------------
// seeding instances in SQL

/// Inserts instances `from..to` on the zone's hosts in batches, straight into the database.
async fn seed(database_url: &str, from: usize, to: usize) {
    use sqlx::Connection;
    const SQLITE: &str = "WITH RECURSIVE n(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $2) \
        INSERT INTO instances (id, name, client_id, state, host_id, vcpus, memory_mb, disk_gb, requirements, \
        version, created_at_ms, updated_at_ms, created_at, updated_at) \
        SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) \
        || '-8' || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))), \
        'seed-' || i, 'seed-client-' || (i % $3), 'running', s.id, 1, 512, 10, '[]', 0, 0, 0, \
        '1970-01-01T00:00:00.000Z', '1970-01-01T00:00:00.000Z' \
        FROM n JOIN seed_hosts s ON s.k = i % $4";
    const POSTGRES: &str = "INSERT INTO instances (id, name, client_id, state, host_id, vcpus, memory_mb, disk_gb, \
        requirements, version, created_at_ms, updated_at_ms, created_at, updated_at) \
        SELECT gen_random_uuid()::text, 'seed-' || i, 'seed-client-' || (i % $3), 'running', s.id, 1, 512, 10, \
        '[]', 0, 0, 0, '1970-01-01T00:00:00.000Z', '1970-01-01T00:00:00.000Z' FROM generate_series($1::bigint, $2::bigint - 1) i JOIN seed_hosts s ON s.k = i % $4";
    const HOSTS: &str =
        "CREATE TEMP TABLE seed_hosts AS SELECT row_number() OVER (ORDER BY id) - 1 AS k, id FROM hosts";
    let batches = (from..to).step_by(SEED_BATCH).map(move |start| (start as i64, (start + SEED_BATCH).min(to) as i64));
    if database_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(database_url).await.expect("open the zone's SQLite file");
        sqlx::query("PRAGMA busy_timeout = 30000").execute(&mut conn).await.unwrap();
        sqlx::query(HOSTS).execute(&mut conn).await.unwrap();
        let hosts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM seed_hosts").fetch_one(&mut conn).await.unwrap();
        for (start, end) in batches {
            let q = sqlx::query(SQLITE).bind(start).bind(end).bind(SEEDED_CLIENTS as i64).bind(hosts);
            q.execute(&mut conn).await.expect("seed instances");
        }
        let _ = conn.close().await;
    } else {
        let mut conn = sqlx::PgConnection::connect(database_url).await.expect("connect to the zone's database");
        sqlx::query(HOSTS).execute(&mut conn).await.unwrap();
        let hosts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM seed_hosts").fetch_one(&mut conn).await.unwrap();
        for (start, end) in batches {
            let q = sqlx::query(POSTGRES).bind(start).bind(end).bind(SEEDED_CLIENTS as i64).bind(hosts);
            q.execute(&mut conn).await.expect("seed instances");
        }
        // What autovacuum would do soon after such a load.
        sqlx::query("ANALYZE instances").execute(&mut conn).await.unwrap();
        let _ = conn.close().await;
    }
}

/// On PostgreSQL, what autovacuum does soon after the hosts table grew from nothing: fresh
/// planner statistics. This machine's PostgreSQL runs with `autovacuum = off`, and a placement
/// planned on the statistics of an empty table reads every host (docs/operations.md).
async fn analyze_hosts(database_url: &str) {
    use sqlx::Connection;
    if database_url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(database_url).await.expect("connect to the zone's database");
        sqlx::query("ANALYZE hosts").execute(&mut conn).await.expect("ANALYZE hosts");
        sqlx::query("ANALYZE host_capabilities").execute(&mut conn).await.expect("ANALYZE host_capabilities");
        let _ = conn.close().await;
    }
}

/// `n` ids of seeded instances, at random.
async fn some_ids(database_url: &str, n: usize) -> Vec<String> {
    use sqlx::Connection;
    // Every 97th row of the id index: spread over the whole range without sorting the table.
    const SQL: &str = "SELECT id FROM instances WHERE name LIKE 'seed-%' ORDER BY id";
    let ids: Vec<String> = if database_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(SQL).fetch_all(&mut conn).await.unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(SQL).fetch_all(&mut conn).await.unwrap()
    };
    let mut picked: Vec<String> = ids.choose_multiple(&mut rand::thread_rng(), n).cloned().collect();
    picked.shuffle(&mut rand::thread_rng());
    picked
}

// ---------------------------------------------------------------------------------------------
// the measurements

struct HostRow {
    setup: String,
    hosts: usize,
    interval_ms: u64,
    registered_s: f64,
    sim_says_s: f64,
    up: usize,
    reports_per_s: f64,
    idle_cpu: f64,
    node_rss: f64,
    sim_rss: f64,
    capabilities: Spread,
    placements: Spread,
    creates_per_s: f64,
}

struct InstanceRow {
    setup: String,
    hosts: usize,
    instances: usize,
    seed_s: f64,
    first_page: Spread,
    later_page: Spread,
    get: Spread,
    lookup_cold: Spread,
    creates_per_s: f64,
}

/// Creates `n` instances, [`CREATE_CONCURRENCY`] in flight, over every node; returns creates/s.
async fn creates(clients: &[(api::Client, String)], urls: &[String], n: usize, tag: &str) -> f64 {
    // Raw JSON: the body is the API's, whatever optional fields the Rust type grows.
    let http = api::http::client_builder().build().expect("an HTTP client");
    let tokens: Vec<&String> = clients.iter().map(|(_, t)| t).collect();
    let started = Instant::now();
    let ok = futures::stream::iter(0..n)
        .map(|i| {
            let (url, token, http) = (&urls[i % urls.len()], tokens[i % tokens.len()], &http);
            async move {
                let body = json!({"name": format!("{tag}-{i}"), "client_id": format!("bench-{}", i % 100),
                    "requirements": [], "resources": {"vcpus": 1, "memory_mb": 512, "disk_gb": 10}});
                let resp = http.post(format!("{url}/v1/instances")).bearer_auth(token).json(&body).send().await;
                match resp {
                    Ok(r) if r.status().as_u16() == 201 => true,
                    Ok(r) => {
                        eprintln!("create {i}: {} {}", r.status(), r.text().await.unwrap_or_default());
                        false
                    }
                    Err(e) => {
                        eprintln!("create {i}: {e}");
                        false
                    }
                }
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    ok as f64 / started.elapsed().as_secs_f64()
}

/// Waits for the simulator's "N hosts registered in X s" line; returns X.
async fn wait_registered(sim: &SimProcess, hosts: usize) -> f64 {
    let needle = format!("agent-sim: {hosts} hosts registered in ");
    let started = Instant::now();
    loop {
        if let Some(status) = sim.process().exit_status() {
            panic!("{}", sim.failure(&format!("exited with {status} before its hosts were registered")));
        }
        let log = std::fs::read_to_string(sim.process().log_path()).unwrap_or_default();
        if let Some(rest) = log.lines().find_map(|l| l.strip_prefix(needle.as_str())) {
            return rest.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
        }
        if started.elapsed() > REGISTRATION_TIMEOUT {
            panic!("{}", sim.failure("its hosts were not registered in time"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_hosts(a: &Args, setup: &str, hosts: usize, rows: &mut Vec<HostRow>, inst_rows: &mut Vec<InstanceRow>) {
    let interval_ms = a.report_interval_ms.unwrap_or_else(|| (hosts as u64).clamp(1_000, 60_000));
    eprintln!("== {setup}, {hosts} hosts reporting every {interval_ms} ms");
    let zone = Zone::start(setup, interval_ms).await;
    let spec = SimSpec {
        zone_url: zone.url().to_owned(),
        username: zone.username.clone(),
        password: zone.password.clone(),
        hosts,
        latency_ms: 0,
        fail_rate: 0.0,
        profile: "mixed".into(),
        name_prefix: "scale".into(),
        report_interval_ms: interval_ms,
        control_token: None,
        capabilities: Vec::new(),
    };
    let extra = match a.register_concurrency {
        Some(n) => vec!["--register-concurrency".to_owned(), n.to_string()],
        None => Vec::new(),
    };
    let started = Instant::now();
    let sim = SimProcess::spawn(spec, extra);
    let sim_says_s = wait_registered(&sim, hosts).await;
    let registered_s = started.elapsed().as_secs_f64();
    analyze_hosts(&zone.database_url).await;
    let clients = zone.clients().await;
    let admin = &clients[0].0;
    let listed = e2e::sim::all_hosts(admin).await.expect("list the hosts");
    let up = listed.iter().filter(|h| h.state == "up" && h.name.starts_with("scale-")).count();
    eprintln!("   registered in {registered_s:.1} s (agent-sim: {sim_says_s:.1} s), {up} up");

    // Idle: reports only. Wait for the reports of the first interval to settle.
    let http = api::http::client_builder().build().expect("an HTTP client");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu0, reports0, t0) = (zone.cpu_seconds(), zone.reports_handled(&http).await, Instant::now());
    tokio::time::sleep(a.idle).await;
    let secs = t0.elapsed().as_secs_f64();
    let idle_cpu = (zone.cpu_seconds() - cpu0) / secs * 100.0;
    let reports_per_s = (zone.reports_handled(&http).await - reports0) / secs;
    let node_rss = zone.max_rss_mib();
    let sim_rss = sim.process().pid().map(rss_mib).unwrap_or(f64::NAN);
    eprintln!("   idle: {idle_cpu:.1} % CPU, {reports_per_s:.0} reports/s, node {node_rss:.0} MiB, agent-sim {sim_rss:.0} MiB");

    let capabilities = sample("GET /v1/capabilities", a.samples, 3, |_| admin.capabilities()).await;
    let placement = PlacementRequest {
        requirements: vec![
            Requirement { key: "hypervisor".into(), op: Op::Eq, value: Some(json!("kvm")) },
            Requirement { key: "free-disk".into(), op: Op::Ge, value: Some(json!(500)) },
        ],
        resources: Resources { vcpus: 1, memory_mb: 512, disk_gb: 10 },
    };
    let placements = sample("POST /v1/placements", a.samples, 3, |_| admin.placement(&placement)).await;
    eprintln!("   capabilities {capabilities} ms, placements {placements} ms");
    let urls: Vec<String> = zone.nodes.iter().map(|(u, _)| u.clone()).collect();
    let creates_per_s = creates(&clients, &urls, a.creates, "bench").await;
    eprintln!("   {creates_per_s:.0} creates/s");
    rows.push(HostRow {
        setup: setup.into(),
        hosts,
        interval_ms,
        registered_s,
        sim_says_s,
        up,
        reports_per_s,
        idle_cpu,
        node_rss,
        sim_rss,
        capabilities,
        placements,
        creates_per_s,
    });

    let mut seeded = 0;
    for (level, &instances) in a.instances.iter().enumerate() {
        let t = Instant::now();
        if instances > seeded {
            seed(&zone.database_url, seeded, instances).await;
            seeded = instances;
        }
        let seed_s = t.elapsed().as_secs_f64();
        let ids = some_ids(&zone.database_url, a.samples + 10).await;
        let first_page = sample("GET /v1/instances", a.samples, 3, |_| admin.instances("limit=100")).await;
        let later_page = sample("GET /v1/instances?marker=", a.samples, 3, |i| {
            let q = format!("limit=100&marker={}", ids[i % ids.len()]);
            async move { admin.instances(&q).await }
        })
        .await;
        let get = sample("GET /v1/instances/{id}", a.samples, 3, |i| admin.instance(&ids[(i + 1) % ids.len()])).await;
        // Never-asked clients: a disjoint range for each level, so every lookup is cold.
        let base = level * (a.samples + 10);
        let lookup_cold = sample("GET /v1/clients/{id}/zone", a.samples, 3, |i| {
            let client = format!("seed-client-{}", (base + i) % SEEDED_CLIENTS);
            async move { admin.lowest_zone(&client).await }
        })
        .await;
        let creates_per_s = creates(&clients, &urls, a.creates, &format!("level{level}")).await;
        eprintln!(
            "   {instances} instances (seeded in {seed_s:.0} s): first page {first_page}, later page {later_page}, \
             get {get}, lookup cold {lookup_cold} ms; {creates_per_s:.0} creates/s"
        );
        inst_rows.push(InstanceRow {
            setup: setup.into(),
            hosts,
            instances,
            seed_s,
            first_page,
            later_page,
            get,
            lookup_cold,
            creates_per_s,
        });
    }
    drop(sim);
    drop(zone);
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(f64::NAN);
    format!("{} × {cores}, {mem:.0} GiB", model.unwrap_or("unknown CPU"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("bench-scale: {date}; {}", machine());
    println!(
        "hosts {:?}, instances {:?} (inserted in SQL), setups {:?}, {} creates at {CREATE_CONCURRENCY} in flight, \
         up to {} samples per latency",
        a.hosts, a.instances, a.setups, a.creates, a.samples
    );
    let mut rows = Vec::new();
    let mut inst_rows = Vec::new();
    for setup in &a.setups {
        for &hosts in &a.hosts {
            run_hosts(&a, setup, hosts, &mut rows, &mut inst_rows).await;
        }
    }
    println!();
    println!(
        "| setup | hosts | report every | all up after (agent-sim) | reports/s | idle CPU | node RSS | agent-sim RSS | \
         capabilities p50 / p99 | placement p50 / p99 | creates/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} s | {:.1} s ({:.1} s){} | {:.0} | {:.1} % | {:.0} MiB | {:.0} MiB | {} ms | {} ms | {:.0} |",
            r.setup,
            r.hosts,
            r.interval_ms / 1000,
            r.registered_s,
            r.sim_says_s,
            if r.up == r.hosts { String::new() } else { format!(", only {} up", r.up) },
            r.reports_per_s,
            r.idle_cpu,
            r.node_rss,
            r.sim_rss,
            r.capabilities,
            r.placements,
            r.creates_per_s
        );
    }
    if !inst_rows.is_empty() {
        println!();
        println!("instances inserted in SQL (seed-client-0 … seed-client-9999), latencies p50 / p99 in ms:");
        println!();
        println!(
            "| setup | hosts | instances | seeded in | list, first page | list, later page | GET instance | \
             client's zone, cold | creates/s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for r in &inst_rows {
            println!(
                "| {} | {} | {} | {:.0} s | {} | {} | {} | {} | {:.0} |",
                r.setup,
                r.hosts,
                r.instances,
                r.seed_s,
                r.first_page,
                r.later_page,
                r.get,
                r.lookup_cold,
                r.creates_per_s
            );
        }
    }
}
