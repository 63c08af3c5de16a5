//! Zones linked into trees, for the federation tests and benchmarks.
//!
//! Each zone is one embedded `zone-node` (SQLite in its data directory, the in-process bus) with
//! fast polling ([`FAST_POLL`]), so a tree of many zones starts in seconds and a dead child is
//! noticed in about a second. [`zone_add`] registers a child with its parent through the API, as
//! an operator would.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::node::{NodeProcess, NodeSpec};
use crate::poll::poll_until;

/// How often parents poll in these tests, and after how many failures a child is offline.
pub const POLL_INTERVAL_MS: u64 = 200;
pub const POLL_FAILURE_THRESHOLD: u64 = 3;

/// Settings every federated test zone runs with.
pub const FAST_POLL: &[(&str, &str)] = &[
    ("ZONE_POLL_INTERVAL_MS", "200"),
    ("ZONE_POLL_TIMEOUT_MS", "1000"),
    ("ZONE_POLL_FAILURE_THRESHOLD", "3"),
    ("ZONE_HOST_REPORT_INTERVAL_MS", "200"),
    ("ZONE_HOST_MAX_MISSED_REPORTS", "5"),
    ("ZONE_AGENT_TIMEOUT_MS", "20000"),
];

/// The spec of one embedded zone with [`FAST_POLL`].
pub fn zone_spec(name: &str) -> NodeSpec {
    let mut spec = NodeSpec::new(name);
    spec.label = name.to_owned();
    for (k, v) in FAST_POLL {
        spec = spec.with_env(*k, *v);
    }
    spec
}

/// Starts one embedded zone per name with [`FAST_POLL`], all at once, and waits until every one
/// is ready.
pub async fn start_zones(names: &[&str]) -> BTreeMap<String, NodeProcess> {
    start_zones_with(names, zone_spec).await
}

/// Starts one embedded zone per name at the product's default settings (no [`FAST_POLL`]), as
/// an operator would run them, all at once, and waits until every one is ready.
pub async fn start_default_zones(names: &[&str]) -> BTreeMap<String, NodeProcess> {
    start_zones_with(names, |name| NodeSpec { label: name.to_owned(), ..NodeSpec::new(name) }).await
}

/// [`start_default_zones`] with more environment variables for every zone (what a benchmark
/// changes from the defaults, e.g. `ZONE_POLL_INTERVAL_MS`).
pub async fn start_default_zones_with_env(names: &[&str], env: &[(String, String)]) -> BTreeMap<String, NodeProcess> {
    start_zones_with(names, |name| NodeSpec { label: name.to_owned(), env: env.to_vec(), ..NodeSpec::new(name) }).await
}

async fn start_zones_with(names: &[&str], spec: impl Fn(&str) -> NodeSpec) -> BTreeMap<String, NodeProcess> {
    let nodes: Vec<NodeProcess> = names.iter().map(|n| NodeProcess::spawn(spec(n))).collect();
    futures::future::join_all(nodes.iter().map(|n| n.wait_ready(crate::node::DEFAULT_READY_TIMEOUT))).await;
    names.iter().map(|n| n.to_string()).zip(nodes).collect()
}

/// A simulator for `zone`'s hosts with the zone's admin credentials, reporting as the zone
/// expects ([`FAST_POLL`]), every host also announcing `capabilities`.
pub fn sim_for(
    zone: &NodeProcess,
    hosts: usize,
    profile: &str,
    capabilities: Vec<(String, serde_json::Value)>,
) -> crate::SimSpec {
    crate::SimSpec {
        zone_url: zone.url(),
        username: zone.spec().admin_username.clone(),
        password: zone.spec().admin_password.clone(),
        hosts,
        latency_ms: 5,
        fail_rate: 0.0,
        profile: profile.into(),
        name_prefix: format!("{}-h", zone.label()),
        report_interval_ms: 200,
        control_token: None,
        capabilities,
    }
}

/// The zone-add body that registers `child` with its admin account, under its own name, with
/// the default weights.
pub fn zone_create(child: &NodeProcess) -> api::ZoneCreate {
    api::ZoneCreate {
        name: None,
        api_url: child.url(),
        username: child.spec().admin_username.clone(),
        password: child.spec().admin_password.clone(),
        weight_offset: 0.0,
        weight_scale: 1.0,
        disabled: false,
        insecure_http: false,
    }
}

/// Registers `child` with `parent` (zone-add with the child's admin account); panics with both
/// logs when it is refused.
pub async fn zone_add(parent: &NodeProcess, child: &NodeProcess) -> api::ChildZone {
    match parent.client().await.zone_create(&zone_create(child)).await {
        Ok(z) => z,
        Err(e) => panic!(
            "{}\n{}",
            parent.failure(&format!("zone-add {} failed: {e}", child.label())),
            child.failure("the child")
        ),
    }
}

/// Waits until `parent` lists its child `name` with `status`.
pub async fn wait_child_status(parent: &NodeProcess, name: &str, status: api::ZoneStatus, timeout: Duration) {
    let seen = poll_until(timeout, Duration::from_millis(50), || async {
        let zones = parent.client().await.zones(false).await.ok()?;
        zones.zones.into_iter().find(|z| z.name == name && z.status == status)
    })
    .await;
    if seen.is_none() {
        panic!("{}", parent.failure(&format!("child {name} did not become {} within {timeout:?}", status.as_str())));
    }
}

/// A counter of the node's `/metrics`: the sum of every series of `name` whose labels contain
/// `labels` (e.g. `op="lowest_zone"`). 0 when there is none yet.
pub async fn metric(node: &NodeProcess, name: &str, labels: &str) -> f64 {
    let text = api::http::client_builder()
        .build()
        .expect("an HTTP client")
        .get(format!("{}/metrics", node.url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", node.failure(&format!("GET /metrics failed: {e}"))))
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' ')))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
