//! Zone resources with real processes: `zone-node` nodes on PostgreSQL and RabbitMQ, and
//! `zone-node agent-sim` playing the hosts over real HTTP.
//!
//! - 1,000 creates with random requirements over 50 simulated hosts: every placement meets its
//!   filters, no host is over capacity, and the capacity used adds up exactly;
//! - a three-node zone: actions on one instance sent at once through every node are serialised
//!   (the agent never sees two at once) and none is lost; killing the owner mid-task ends the task
//!   on a survivor;
//! - an agent failure leaves the instance in `error` with the reason; a silent host goes down, its
//!   instances show `unknown` until it reports again; the canonical events are published;
//! - bad input and other clients' instances: clear 4xx, nothing changed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use api::{
    Capability, CapabilityValue, ClientError, ErrorCode, Host, Instance, InstanceAction, InstanceActionKind,
    InstanceCreate, Op, Requirement, Resources,
};
use e2e::{poll_until, Cluster, ClusterOptions, SimProcess, SimSpec};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::json;

const CONTROL_TOKEN: &str = "test-control-token-0123456789";

/// Hosts report every 200 ms and are down after 10 missed reports (2 s): quick enough for the
/// silent-host test, and far above what a report takes even on two loaded cores (reports share the
/// bus and the database pool with the test's creates), so no host goes down by accident.
fn zone_options(extra: &[(&str, &str)]) -> ClusterOptions {
    let mut env: Vec<(String, String)> = vec![
        ("ZONE_HOST_REPORT_INTERVAL_MS".into(), "200".into()),
        ("ZONE_HOST_MAX_MISSED_REPORTS".into(), "10".into()),
        ("ZONE_AGENT_TIMEOUT_MS".into(), "20000".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ClusterOptions { env, ..ClusterOptions::default() }
}

fn sim_spec(zone: &Cluster, hosts: usize, latency_ms: u64, profile: &str) -> SimSpec {
    let spec = zone.spec();
    SimSpec {
        zone_url: zone.node(0).url(),
        username: spec.admin_username.clone(),
        password: spec.admin_password.clone(),
        hosts,
        latency_ms,
        fail_rate: 0.0,
        profile: profile.into(),
        name_prefix: "sim".into(),
        report_interval_ms: 200,
        control_token: Some(CONTROL_TOKEN.into()),
        capabilities: Vec::new(),
    }
}

fn create(name: &str, client: &str, requirements: Vec<Requirement>, r: Resources) -> InstanceCreate {
    InstanceCreate { name: name.into(), client_id: Some(client.into()), requirements, resources: r, count: None }
}

fn req(key: &str, op: Op, value: serde_json::Value) -> Requirement {
    let value = if value.is_null() { None } else { Some(value) };
    Requirement { key: key.into(), op, value }
}

/// Whether a host's capability meets a requirement, evaluated independently of the zone's SQL.
fn meets(caps: &BTreeMap<String, Capability>, r: &Requirement) -> bool {
    let Some(cap) = caps.get(&r.key) else { return false };
    let num = |v: &serde_json::Value| v.as_f64();
    let same = |want: &serde_json::Value| match (&cap.value, want) {
        (CapabilityValue::Float(f), serde_json::Value::Number(n)) => Some(*f) == n.as_f64(),
        (CapabilityValue::Bool(b), serde_json::Value::Bool(w)) => b == w,
        (CapabilityValue::String(s), serde_json::Value::String(w)) => s == w,
        _ => false,
    };
    let value = r.value.clone().unwrap_or(serde_json::Value::Null);
    let float = match &cap.value {
        CapabilityValue::Float(f) => Some(*f),
        _ => None,
    };
    match r.op {
        Op::Exists => true,
        Op::Eq => same(&value),
        Op::Ne => !same(&value),
        Op::In => value.as_array().is_some_and(|vs| vs.iter().any(same)),
        Op::Lt => matches!((float, num(&value)), (Some(f), Some(v)) if f < v),
        Op::Le => matches!((float, num(&value)), (Some(f), Some(v)) if f <= v),
        Op::Gt => matches!((float, num(&value)), (Some(f), Some(v)) if f > v),
        Op::Ge => matches!((float, num(&value)), (Some(f), Some(v)) if f >= v),
    }
}

/// A random requirement list over the `mixed` profile's capabilities (some unsatisfiable).
fn random_requirements(rng: &mut impl Rng) -> Vec<Requirement> {
    let mut reqs = Vec::new();
    if rng.gen_bool(0.5) {
        let hv = ["kvm", "xen", "hyperv"][rng.gen_range(0..3)];
        if rng.gen_bool(0.5) {
            reqs.push(req("hypervisor", Op::Eq, json!(hv)));
        } else {
            reqs.push(req("hypervisor", Op::In, json!([hv, "kvm"])));
        }
    }
    if rng.gen_bool(0.5) {
        let op = [Op::Ge, Op::Gt, Op::Lt, Op::Le][rng.gen_range(0..4)];
        reqs.push(req("free-disk", op, json!(rng.gen_range(400..2100))));
    }
    if rng.gen_bool(0.3) {
        reqs.push(req("can-run-windows", Op::Eq, json!(rng.gen_bool(0.5))));
    }
    if rng.gen_bool(0.3) {
        reqs.push(req("os", Op::Ne, json!("windows")));
    }
    if rng.gen_bool(0.2) {
        reqs.push(req("accept-migrations", Op::Exists, serde_json::Value::Null));
    }
    if rng.gen_bool(0.2) {
        reqs.push(req("cpu-ghz", Op::Gt, json!(2.4)));
    }
    reqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_creates_meet_their_filters_and_never_overcommit() {
    // Not about silent hosts: a 5 s down-window, so 100 creates in flight cannot delay a report
    // long enough to take a host down under the placements.
    let zone = Cluster::start(1, zone_options(&[("ZONE_HOST_MAX_MISSED_REPORTS", "25")])).await;
    let _sim = SimProcess::start(sim_spec(&zone, 50, 0, "mixed")).await;
    let admin = zone.client(0).await;
    let hosts: HashMap<String, Host> =
        admin.hosts().await.expect("hosts").hosts.into_iter().map(|h| (h.id.clone(), h)).collect();
    assert_eq!(hosts.len(), 50, "the simulator registered its hosts");

    let mut rng = rand::rngs::StdRng::seed_from_u64(20261122);
    let requests: Vec<InstanceCreate> = (0..1000)
        .map(|i| {
            let r = Resources {
                vcpus: rng.gen_range(1..=8),
                memory_mb: rng.gen_range(1..=16) * 1024,
                disk_gb: rng.gen_range(10..=200),
            };
            create(&format!("vm-{i}"), &format!("client-{}", i % 7), random_requirements(&mut rng), r)
        })
        .collect();
    let outcomes: Vec<(InstanceCreate, Result<Instance, ClientError>)> = futures::stream::iter(requests)
        .map(|c| {
            let admin = admin.clone();
            async move {
                let out = admin.instance_create(&c).await;
                (c, out)
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;

    let mut created = 0;
    let mut no_host = 0;
    let mut refused: Vec<&InstanceCreate> = Vec::new();
    for (c, out) in &outcomes {
        match out {
            Ok(instance) => {
                created += 1;
                assert_eq!(instance.state, "running", "{instance:?}");
                let host = &hosts[instance.host_id.as_ref().expect("placed on a host")];
                for r in &c.requirements {
                    assert!(meets(&host.capabilities, r), "{} on host {} does not meet {r:?}", instance.id, host.name);
                }
            }
            Err(e) if e.code() == Some(ErrorCode::NoValidHost) => {
                no_host += 1;
                refused.push(c);
            }
            Err(e) => panic!("create {} failed unexpectedly: {e}", c.name),
        }
    }
    assert!(created >= 500, "most creates find a host: {created} created, {no_host} without a host");
    assert!(no_host > 0, "some random requirements are unsatisfiable (e.g. free-disk above every host)");

    // Capacity: per host, the sum of its instances' resources is exactly what it reports used,
    // and never above its total.
    // Pages of 100: the walk asks for each page while it reads the one before.
    let instances = admin.all_instances("limit=100").await.expect("list").instances;
    assert_eq!(instances.len(), created, "every created instance is listed once");
    let mut sums: HashMap<String, Resources> = HashMap::new();
    for i in &instances {
        let s = sums.entry(i.host_id.clone().unwrap()).or_default();
        s.vcpus += i.resources.vcpus;
        s.memory_mb += i.resources.memory_mb;
        s.disk_gb += i.resources.disk_gb;
    }
    let final_hosts = admin.hosts().await.unwrap().hosts;
    // A refusal was right: nothing is ever deleted here, so free capacity only shrank, and no host
    // that meets the request's filters has room for it even now.
    for c in &refused {
        let fits = final_hosts.iter().find(|h| {
            h.state == "up"
                && c.requirements.iter().all(|r| meets(&h.capabilities, r))
                && h.resources.vcpus - h.used.vcpus >= c.resources.vcpus
                && h.resources.memory_mb - h.used.memory_mb >= c.resources.memory_mb
                && h.resources.disk_gb - h.used.disk_gb >= c.resources.disk_gb
        });
        assert!(fits.is_none(), "{} was refused, but host {} meets it and has room", c.name, fits.unwrap().name);
    }
    for host in final_hosts {
        let sum = sums.get(&host.id).copied().unwrap_or_default();
        assert_eq!(host.used, sum, "host {} reports used {:?}, its instances add up to {sum:?}", host.name, host.used);
        assert!(
            host.used.vcpus <= host.resources.vcpus
                && host.used.memory_mb <= host.resources.memory_mb
                && host.used.disk_gb <= host.resources.disk_gb,
            "host {} is over capacity: {:?} of {:?}",
            host.name,
            host.used,
            host.resources
        );
    }
}

/// The node whose ring owns `id`, by index in the zone.
async fn owner_index(zone: &Cluster, id: &str) -> usize {
    let owners = zone.client(0).await.owners(vec![id.to_owned()]).await.expect("owners");
    zone.nodes().iter().position(|n| n.node_id() == owners.owners[0]).expect("the owner is one of the nodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_through_three_nodes_are_serialised_and_none_is_lost() {
    let zone = Cluster::start(3, zone_options(&[])).await;
    let sim = SimProcess::start(sim_spec(&zone, 2, 150, "uniform")).await;
    let admin = zone.client(0).await;
    let instance = admin
        .instance_create(&create("vm", "c1", vec![], Resources { vcpus: 1, memory_mb: 512, disk_gb: 10 }))
        .await
        .expect("create");
    let host = admin.host(instance.host_id.as_deref().unwrap()).await.unwrap();

    let clients: Vec<api::Client> = futures::future::join_all((0..3).map(|i| zone.client(i))).await;
    let actions = [InstanceActionKind::Stop, InstanceActionKind::Start, InstanceActionKind::Reboot];
    let calls = (0..15).map(|i| {
        let client = clients[i % 3].clone();
        let id = instance.id.clone();
        let action = actions[i % 3];
        async move { (action, client.instance_action(&id, &InstanceAction { action, host_id: None }).await) }
    });
    let results = futures::future::join_all(calls).await;
    let mut done = Vec::new();
    for (action, result) in &results {
        match result {
            Ok(after) => done.push((action.as_str(), after.version)),
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::InvalidState), "{action:?} failed other than by state: {e}"),
        }
    }
    assert!(!done.is_empty(), "some actions succeed");
    // Each success saw a different version: they ran one after another, never together.
    let mut versions: Vec<i64> = done.iter().map(|d| d.1).collect();
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), done.len(), "two actions reported the same version: {done:?}");

    let stats = sim.stats(&host.agent_url).await;
    assert_eq!(stats["max_concurrent_per_instance"], json!(1), "the agent saw overlapping tasks: {stats}");
    let ops = stats["instances"][&instance.id]["ops"].as_array().expect("ops of the instance").clone();
    assert_eq!(
        ops.len(),
        1 + done.len(),
        "every successful action reached the agent exactly once: {ops:?} vs {done:?}"
    );
    let final_state = admin.instance(&instance.id).await.unwrap();
    assert!(["running", "stopped"].contains(&final_state.state.as_str()), "{final_state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_node_dies_is_finished_by_a_survivor() {
    let zone = Cluster::start(3, zone_options(&[])).await;
    let _sim = SimProcess::start(sim_spec(&zone, 2, 2500, "uniform")).await;
    let admin = zone.client(0).await;
    let instance = admin
        .instance_create(&create("vm", "c1", vec![], Resources { vcpus: 1, memory_mb: 512, disk_gb: 10 }))
        .await
        .expect("create");
    let owner = owner_index(&zone, &instance.id).await;
    let via = (owner + 1) % 3;
    let client = zone.client(via).await;
    let id = instance.id.clone();
    let stop = tokio::spawn(async move {
        client.instance_action(&id, &InstanceAction { action: InstanceActionKind::Stop, host_id: None }).await
    });
    // Wait until the owner has written the transitional state, then kill it mid-task.
    poll_until(Duration::from_secs(10), Duration::from_millis(20), || async {
        (admin.instance(&instance.id).await.ok()?.state == "stopping").then_some(())
    })
    .await
    .expect("the stop starts");
    zone.node(owner).kill9().await;
    // The caller is told (the owner is gone), or the stop completed just before the kill.
    let outcome = stop.await.unwrap();
    if let Err(e) = &outcome {
        assert!(e.status().is_some_and(|s| s >= 500), "a clear failure: {e}");
    }
    let survivor = zone.client((owner + 2) % 3).await;
    let ended = poll_until(Duration::from_secs(40), Duration::from_millis(100), || async {
        let i = survivor.instance(&instance.id).await.ok()?;
        ["stopped", "error"].contains(&i.state.as_str()).then_some(i)
    })
    .await
    .unwrap_or_else(|| panic!("{}", zone.failure("the stop never ended after its node died")));
    if ended.state == "error" {
        assert!(ended.error_reason.as_deref().is_some_and(|r| !r.is_empty()), "failed with a reason: {ended:?}");
    }
    // Nothing is stuck: the instance takes the next action.
    let next = if ended.state == "stopped" { InstanceActionKind::Start } else { InstanceActionKind::Stop };
    survivor.instance_action(&instance.id, &InstanceAction { action: next, host_id: None }).await.expect("next action");
}

/// Reads events of `prefix` from the broker until `want` kinds have been seen for `id`.
async fn watch_events(url: &str, prefix: &str) -> tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)> {
    use lapin::options::*;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            Default::default(),
        )
        .await
        .expect("queue");
    ch.queue_bind(
        q.name().clone(),
        format!("{prefix}.event").into(),
        "#".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .expect("bind");
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "watch".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            Default::default(),
        )
        .await
        .expect("consume");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _conn = conn;
        while let Some(Ok(d)) = consumer.next().await {
            let body = serde_json::from_slice(&d.data).unwrap_or(serde_json::Value::Null);
            if tx.send((d.routing_key.to_string(), body)).is_err() {
                return;
            }
        }
    });
    rx
}

async fn expect_event(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>,
    kind: &str,
    id: &str,
) -> serde_json::Value {
    let wait = async {
        while let Some((k, body)) = rx.recv().await {
            if k == kind && body["id"] == json!(id) {
                return body;
            }
        }
        panic!("event stream ended");
    };
    tokio::time::timeout(Duration::from_secs(15), wait).await.unwrap_or_else(|_| panic!("no {kind} event for {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_failure_and_silent_hosts_show_in_state_and_events() {
    let zone = Cluster::start(1, zone_options(&[])).await;
    let mut events = watch_events(zone.bus_url(), zone.bus_prefix()).await;
    let sim = SimProcess::start(sim_spec(&zone, 3, 20, "mixed")).await;
    let admin = zone.client(0).await;
    let hosts = admin.hosts().await.unwrap().hosts;
    let by_hv = |hv: &str| {
        hosts
            .iter()
            .find(|h| {
                h.capabilities.get("hypervisor").map(|c| c.value.clone()) == Some(CapabilityValue::String(hv.into()))
            })
            .expect("the mixed profile has one host per hypervisor among the first three")
            .clone()
    };
    let (kvm, xen) = (by_hv("kvm"), by_hv("xen"));
    let small = Resources { vcpus: 1, memory_mb: 512, disk_gb: 10 };

    // The xen host's agent fails everything: the create fails with the agent's reason and the
    // instance stays, in state error, with that reason.
    sim.control(&xen.agent_url, json!({"fail_rate": 1.0})).await;
    let err = admin
        .instance_create(&create("doomed", "c1", vec![req("hypervisor", Op::Eq, json!("xen"))], small))
        .await
        .expect_err("the agent fails");
    assert_eq!(err.code(), Some(ErrorCode::AgentFailed), "{err}");
    let doomed = admin
        .instances("client_id=c1")
        .await
        .unwrap()
        .instances
        .into_iter()
        .find(|i| i.name == "doomed")
        .expect("kept");
    assert_eq!(doomed.state, "error");
    assert!(doomed.error_reason.as_deref().unwrap_or_default().contains("simulated failure"), "{doomed:?}");
    let created = expect_event(&mut events, "instance.created", &doomed.id).await;
    assert_eq!(created["client_id"], json!("c1"));
    let changed = expect_event(&mut events, "instance.state_changed", &doomed.id).await;
    assert_eq!((changed["from"].clone(), changed["to"].clone()), (json!("building"), json!("error")));

    // A healthy instance on the kvm host; then the host goes silent.
    let vm = admin
        .instance_create(&create("vm", "c1", vec![req("hypervisor", Op::Eq, json!("kvm"))], small))
        .await
        .expect("create");
    assert_eq!(vm.state, "running");
    sim.control(&kvm.agent_url, json!({"reporting": false})).await;
    let down = poll_until(Duration::from_secs(10), Duration::from_millis(50), || async {
        let h = admin.host(&kvm.id).await.ok()?;
        (h.state == "down").then_some(h)
    })
    .await
    .expect("a silent host goes down");
    assert_eq!(down.state, "down");
    expect_event(&mut events, "host.down", &kvm.id).await;
    let unknown = admin.instance(&vm.id).await.unwrap();
    assert_eq!(unknown.state, "unknown", "an instance on a down host has an unknown state");
    let refused = admin
        .instance_action(&vm.id, &InstanceAction { action: InstanceActionKind::Stop, host_id: None })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::InvalidState), "{refused}");
    // Placement avoids the down host.
    let placement = admin
        .placement(&api::PlacementRequest {
            requirements: vec![req("hypervisor", Op::Eq, json!("kvm"))],
            resources: small,
        })
        .await;
    assert_eq!(placement.unwrap_err().code(), Some(ErrorCode::NoValidHost));

    // It reports again: up, and the instance shows its stored state.
    sim.control(&kvm.agent_url, json!({"reporting": true})).await;
    poll_until(Duration::from_secs(10), Duration::from_millis(50), || async {
        (admin.host(&kvm.id).await.ok()?.state == "up").then_some(())
    })
    .await
    .expect("the host comes back up");
    expect_event(&mut events, "host.up", &kvm.id).await;
    assert_eq!(admin.instance(&vm.id).await.unwrap().state, "running");

    // Delete publishes instance.deleted and gives the capacity back.
    admin.instance_delete(&vm.id).await.expect("delete");
    expect_event(&mut events, "instance.deleted", &vm.id).await;
    assert_eq!(admin.host(&kvm.id).await.unwrap().used, Resources::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_other_clients_get_clear_4xx_and_change_nothing() {
    let zone = Cluster::start(1, zone_options(&[])).await;
    let _sim = SimProcess::start(sim_spec(&zone, 2, 0, "uniform")).await;
    let admin = zone.client(0).await;
    let small = Resources { vcpus: 1, memory_mb: 512, disk_gb: 10 };
    let vm = admin.instance_create(&create("vm", "client-a", vec![], small)).await.expect("create");
    let before_hosts = admin.hosts().await.unwrap().hosts;
    let before_instances = admin.instances("").await.unwrap().instances;

    // Raw bodies, so malformed input reaches the server as sent.
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (
            json!({"name":"x","client_id":"c","requirements":[{"key":"a","op":"like","value":1}]}),
            400,
            "invalid_requirements",
        ),
        (
            json!({"name":"x","client_id":"c","requirements":[{"key":"free-disk","op":"ge","value":"big"}]}),
            400,
            "invalid_requirements",
        ),
        (
            json!({"name":"x","client_id":"c","requirements":[{"key":"a","op":"in","value":[]}]}),
            400,
            "invalid_requirements",
        ),
        (json!({"name":"x","client_id":"c","requirements":{"key":"a"}}), 400, "invalid_requirements"),
        (
            json!({"name":"x","client_id":"c","resources":{"vcpus":-1,"memory_mb":1,"disk_gb":1}}),
            400,
            "invalid_resources",
        ),
        (
            json!({"name":"x","client_id":"c","resources":{"vcpus":"two","memory_mb":1,"disk_gb":1}}),
            400,
            "invalid_resources",
        ),
        (json!({"name":"bad name","client_id":"c"}), 400, "invalid_field"),
        (json!({"name":"x"}), 400, "invalid_field"),
        (json!({"name":"x","client_id":"c","colour":"red"}), 400, "invalid_body"),
        (
            json!({"name":"x","client_id":"c","requirements":[{"key":"hypervisor","op":"eq","value":"vmware"}],"resources":{"vcpus":1,"memory_mb":1,"disk_gb":1}}),
            409,
            "no_valid_host",
        ),
        (
            json!({"name":"x","client_id":"c","resources":{"vcpus":100000,"memory_mb":1,"disk_gb":1}}),
            409,
            "no_valid_host",
        ),
    ];
    let http = api::http::client_builder().build().expect("an HTTP client");
    let (_, tok) = api::Client::new(&zone.node(0).url())
        .login(&zone.spec().admin_username, &zone.spec().admin_password)
        .await
        .unwrap();
    for (body, status, code) in &cases {
        let resp = http
            .post(format!("{}/v1/instances", zone.node(0).url()))
            .bearer_auth(&tok.token)
            .json(body)
            .send()
            .await
            .unwrap();
        let got = resp.status().as_u16();
        let err: serde_json::Value = resp.json().await.unwrap();
        assert_eq!((got, err["error"]["code"].as_str().unwrap_or_default()), (*status, *code), "{body}: {err}");
        assert!(!err["error"]["message"].as_str().unwrap_or_default().is_empty());
    }
    // Unknown ids, malformed ids, and invalid transitions.
    let stop = InstanceAction { action: InstanceActionKind::Stop, host_id: None };
    let start = InstanceAction { action: InstanceActionKind::Start, host_id: None };
    for id in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_string()] {
        assert_eq!(admin.instance(&id).await.unwrap_err().code(), Some(ErrorCode::NotFound));
        assert_eq!(admin.instance_action(&id, &stop).await.unwrap_err().code(), Some(ErrorCode::NotFound));
        assert_eq!(admin.instance_delete(&id).await.unwrap_err().code(), Some(ErrorCode::NotFound));
        assert_eq!(admin.host(&id).await.unwrap_err().code(), Some(ErrorCode::NotFound));
    }
    let e = admin.instance_action(&vm.id, &start).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(409), Some(ErrorCode::InvalidState)));
    assert!(e.to_string().contains("running"), "the message names the current state: {e}");

    // Members: client B sees nothing of client A and cannot touch it; 404, never 403.
    admin
        .account_create(&api::AccountCreate {
            username: "bob".into(),
            password: "bob-password-123".into(),
            role: api::Role::Member,
            client_id: Some("client-b".into()),
            client_ids: None,
        })
        .await
        .unwrap();
    let (bob, _) = api::Client::new(&zone.node(0).url()).login("bob", "bob-password-123").await.unwrap();
    assert!(bob.instances("").await.unwrap().instances.is_empty());
    let e = bob.instances("client_id=client-a").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "a member cannot list another client: {e}");
    assert_eq!(bob.instance(&vm.id).await.unwrap_err().code(), Some(ErrorCode::NotFound));
    assert_eq!(bob.instance_action(&vm.id, &stop).await.unwrap_err().code(), Some(ErrorCode::NotFound));
    assert_eq!(bob.instance_delete(&vm.id).await.unwrap_err().code(), Some(ErrorCode::NotFound));
    assert_eq!(
        bob.instance_create(&create("x", "client-a", vec![], small)).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(bob.hosts().await.unwrap_err().code(), Some(ErrorCode::Forbidden));
    // Bob's own instance: created for his client without naming it, visible to him.
    let own = bob
        .instance_create(&InstanceCreate {
            name: "mine".into(),
            client_id: None,
            requirements: vec![],
            resources: small,
            count: None,
        })
        .await
        .expect("own create");
    assert_eq!(own.client_id, "client-b");
    assert_eq!(bob.instances("").await.unwrap().instances.len(), 1);

    // Nothing changed by the refused requests: same instances (plus bob's), same capacity.
    let after: Vec<String> =
        admin.instances("client_id=client-a").await.unwrap().instances.iter().map(|i| i.id.clone()).collect();
    assert_eq!(after, before_instances.iter().map(|i| i.id.clone()).collect::<Vec<_>>());
    let after_hosts = admin.hosts().await.unwrap().hosts;
    let used = |hs: &[Host]| hs.iter().map(|h| h.used.vcpus).sum::<i64>();
    assert_eq!(used(&after_hosts), used(&before_hosts) + own.resources.vcpus);
    assert_eq!(admin.instance(&vm.id).await.unwrap().version, vm.version, "the refused actions changed nothing");
}
