//! The simulator against a fake zone: registration with a bounded number in flight, retries of
//! what the zone could not take, taking over a zone's hosts beyond its first page, and reports
//! from every host.
//!
//! The fake zone ([`FakeZone`]) serves just the part of the API the simulator uses and counts
//! what it sees; it answers after a short pause, as a database commit would, so registrations
//! overlap.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_sim::profile::Profile;
use agent_sim::{Credentials, SimConfig};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// How long the fake zone takes to register a host.
const REGISTER_TAKES: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Zone {
    /// Registered hosts by name: (id, agent URL).
    hosts: Mutex<BTreeMap<String, (String, String)>>,
    registering: AtomicUsize,
    most_registering: AtomicUsize,
    /// `POST /v1/hosts` requests, refused ones included.
    register_calls: AtomicUsize,
    /// Every `n`th registration request is refused with 503 (0: none).
    refuse_every: AtomicUsize,
    refused: AtomicUsize,
    updates: AtomicUsize,
    /// Reports per host id.
    reports: Mutex<BTreeMap<String, usize>>,
}

type Shared = Arc<Zone>;

struct FakeZone {
    url: String,
    zone: Shared,
}

impl FakeZone {
    async fn start(zone: Zone) -> FakeZone {
        let zone = Arc::new(zone);
        let app = Router::new()
            .route("/v1/auth/tokens", post(login))
            .route("/v1/zone", get(zone_info))
            .route("/v1/hosts", post(register).get(list))
            .route("/v1/hosts/{id}", put(update))
            .route("/v1/hosts/{id}/report", post(report))
            .with_state(zone.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeZone { url, zone }
    }
}

fn host_json(id: &str, name: &str, agent_url: &str) -> Value {
    let r = json!({"vcpus": 32, "memory_mb": 131072, "disk_gb": 2000});
    json!({"id": id, "name": name, "agent_url": agent_url, "state": "up", "capabilities": {},
        "resources": r, "used": {"vcpus": 0, "memory_mb": 0, "disk_gb": 0}})
}

async fn login(State(_): State<Shared>) -> Json<Value> {
    Json(json!({"token": "fake-token", "expires_at": "2100-01-01T00:00:00Z", "roles": ["admin"],
        "client_id": null, "api_url": "http://unused"}))
}

async fn zone_info(State(_): State<Shared>) -> Json<Value> {
    Json(json!({"id": "z", "name": "fake", "api_url": "http://unused", "node_id": "n", "nodes": [],
        "capabilities": {}, "children": [], "generation": 0, "ring_epoch": 0}))
}

async fn register(State(zone): State<Shared>, Json(req): Json<Value>) -> (StatusCode, Json<Value>) {
    let call = zone.register_calls.fetch_add(1, Ordering::SeqCst) + 1;
    let now = zone.registering.fetch_add(1, Ordering::SeqCst) + 1;
    zone.most_registering.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(REGISTER_TAKES).await;
    zone.registering.fetch_sub(1, Ordering::SeqCst);
    let every = zone.refuse_every.load(Ordering::SeqCst);
    if every > 0 && call % every == 0 {
        zone.refused.fetch_add(1, Ordering::SeqCst);
        let body = json!({"error": {"code": "store_unavailable", "message": "try again"}});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    let name = req["name"].as_str().unwrap().to_owned();
    let agent_url = req["agent_url"].as_str().unwrap().to_owned();
    let mut hosts = zone.hosts.lock().unwrap();
    if hosts.contains_key(&name) {
        let body = json!({"error": {"code": "conflict", "message": format!("host {name} already exists")}});
        return (StatusCode::CONFLICT, Json(body));
    }
    let id = uuid(hosts.len());
    hosts.insert(name.clone(), (id.clone(), agent_url.clone()));
    (StatusCode::CREATED, Json(host_json(&id, &name, &agent_url)))
}

/// Ids that sort like the zone's: by text.
fn uuid(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

async fn list(State(zone): State<Shared>, Query(q): Query<BTreeMap<String, String>>) -> Json<Value> {
    let limit: usize = q.get("limit").map(|l| l.parse().unwrap()).unwrap_or(1000).min(1000);
    let hosts = zone.hosts.lock().unwrap();
    let mut by_id: Vec<(&String, &(String, String))> = hosts.iter().collect();
    by_id.sort_by(|a, b| a.1 .0.cmp(&b.1 .0));
    let after: Vec<_> = by_id.into_iter().filter(|(_, (id, _))| q.get("marker").is_none_or(|m| id > m)).collect();
    let page: Vec<Value> = after.iter().take(limit).map(|(name, (id, url))| host_json(id, name, url)).collect();
    let next = (after.len() > limit).then(|| after[limit - 1].1 .0.clone());
    Json(json!({"hosts": page, "next_marker": next}))
}

async fn update(State(zone): State<Shared>, Path(id): Path<String>, Json(req): Json<Value>) -> Json<Value> {
    zone.updates.fetch_add(1, Ordering::SeqCst);
    let mut hosts = zone.hosts.lock().unwrap();
    let (name, entry) = hosts.iter_mut().find(|(_, (i, _))| *i == id).expect("a known host");
    entry.1 = req["agent_url"].as_str().unwrap().to_owned();
    Json(host_json(&id, name, &entry.1))
}

async fn report(State(zone): State<Shared>, Path(id): Path<String>) -> StatusCode {
    *zone.reports.lock().unwrap().entry(id).or_default() += 1;
    StatusCode::NO_CONTENT
}

fn config(zone_url: &str, hosts: usize, register_concurrency: usize) -> SimConfig {
    SimConfig {
        zone_url: zone_url.to_owned(),
        credentials: Credentials::Password { username: "admin".into(), password: SecretString::from("pw") },
        hosts,
        latency: Duration::ZERO,
        fail_rate: 0.0,
        profile: Profile::Uniform,
        name_prefix: "sim".into(),
        report_interval: Duration::from_secs(3600),
        control_token: None,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        advertise_url: None,
        capabilities: BTreeMap::new(),
        register_concurrency,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_register_concurrently_never_more_than_the_bound_at_once() {
    let fake = FakeZone::start(Zone::default()).await;
    let stop = CancellationToken::new();
    let sim = agent_sim::run(config(&fake.url, 300, 8), stop.clone()).await.unwrap();
    assert_eq!(sim.hosts().len(), 300);
    let names: Vec<&str> = sim.hosts().iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names[..3], ["sim-000", "sim-001", "sim-002"], "in host order");
    assert_eq!(fake.zone.hosts.lock().unwrap().len(), 300);
    assert_eq!(fake.zone.register_calls.load(Ordering::SeqCst), 300, "each host registered once");
    let most = fake.zone.most_registering.load(Ordering::SeqCst);
    assert!(most <= 8, "{most} registrations at once, more than the bound of 8");
    assert!(most > 1, "registrations never overlapped");
    stop.cancel();
    sim.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_the_zone_could_not_take_is_tried_again() {
    let fake = FakeZone::start(Zone { refuse_every: AtomicUsize::new(7), ..Zone::default() }).await;
    let stop = CancellationToken::new();
    let sim = agent_sim::run(config(&fake.url, 100, 4), stop.clone()).await.unwrap();
    let refused = fake.zone.refused.load(Ordering::SeqCst);
    assert!(refused >= 14, "the fake refused every 7th request: {refused}");
    assert_eq!(fake.zone.hosts.lock().unwrap().len(), 100, "every host registered in the end");
    assert_eq!(sim.hosts().len(), 100);
    stop.cancel();
    sim.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_simulator_takes_over_hosts_beyond_the_zones_first_page() {
    // A zone that already holds 1,500 hosts of these names (a simulator ran before): more than
    // one page of GET /v1/hosts.
    let zone = Zone::default();
    {
        let mut hosts = zone.hosts.lock().unwrap();
        for i in 0..1500 {
            hosts.insert(agent_sim::host_name("sim", i), (uuid(i), "http://old/agent".into()));
        }
    }
    let fake = FakeZone::start(zone).await;
    let stop = CancellationToken::new();
    let sim = agent_sim::run(config(&fake.url, 1500, 32), stop.clone()).await.unwrap();
    assert_eq!(fake.zone.updates.load(Ordering::SeqCst), 1500, "every host taken over");
    let last = &sim.hosts()[1499];
    assert_eq!((last.name.as_str(), last.host_id.as_str()), ("sim-1499", uuid(1499).as_str()));
    let hosts = fake.zone.hosts.lock().unwrap().clone();
    assert!(hosts.values().all(|(_, url)| url.starts_with(sim.agents_url())), "agent URLs are the new simulator's");
    stop.cancel();
    sim.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registered_host_reports() {
    let fake = FakeZone::start(Zone::default()).await;
    let stop = CancellationToken::new();
    let mut config = config(&fake.url, 200, 16);
    config.report_interval = Duration::from_millis(200);
    let sim = agent_sim::run(config, stop.clone()).await.unwrap();
    let ids: Vec<String> = sim.hosts().iter().map(|h| h.host_id.clone()).collect();
    let reported = test_support::poll_until(Duration::from_secs(20), Duration::from_millis(50), || {
        let reports = fake.zone.reports.lock().unwrap().clone();
        let all = ids.iter().all(|id| reports.get(id).is_some_and(|n| *n >= 2));
        async move { all }
    })
    .await;
    assert!(reported.is_some(), "every host reported twice: {:?}", fake.zone.reports.lock().unwrap().len());
    stop.cancel();
    sim.wait().await.unwrap();
}
