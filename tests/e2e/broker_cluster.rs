//! A zone on a three-node RabbitMQ cluster loses the broker node it talks to (`kill -9`) while
//! portal requests and API calls are in flight: it serves again within 10 s without a restart, and
//! no portal request that got an ok reply was lost or done twice.
//!
//! The portal client (`tests/clients/portal_load.py`, pika) sends each request again with the same
//! message id until it gets a reply that is not an error saying to retry (`unroutable` while the
//! owner re-declares its queues), moving to the next broker address when its connection fails;
//! the resource's owner answers a message it already ran from the first run. So each resource's
//! k-th request must report `completed == k`: a request done twice would make a later one jump.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use api::ErrorCode;
use e2e::{Cluster, ClusterOptions, RabbitCluster};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

/// Portal requests per resource, and resources (one client thread each).
const PER_RESOURCE: usize = 60;
const RESOURCES: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_survives_losing_its_broker_node_with_no_portal_request_lost_or_done_twice() {
    let mut rabbit = RabbitCluster::start(3).await;
    // Every address of the cluster, in order: both zone nodes connect to the first one.
    let options = ClusterOptions { bus_url: Some(rabbit.urls()), ..ClusterOptions::default() };
    let zone = Cluster::start(2, options).await;
    let clients = [zone.node(0).client().await, zone.node(1).client().await];

    let resources: Vec<String> = (0..RESOURCES).map(|i| format!("portal-{i}-{}", Uuid::new_v4())).collect();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/portal_load.py");
    let mut load = tokio::process::Command::new("python3")
        .arg(&script)
        .args(["--urls", zone.bus_url(), "--prefix", zone.bus_prefix(), "--resources", &resources.join(",")])
        .args(["--count", &PER_RESOURCE.to_string(), "--timeout", "2", "--give-up", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3 tests/clients/portal_load.py");
    let mut lines = BufReader::new(load.stdout.take().expect("piped stdout")).lines();
    let mut replies: Vec<serde_json::Value> = Vec::new();

    // API calls through both nodes the whole time, each on its own resource.
    let stop = tokio_util::sync::CancellationToken::new();
    let api_load: Vec<_> = clients
        .iter()
        .map(|client| {
            let (client, stop) = (client.clone().with_timeout(Duration::from_secs(10)), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.is_cancelled() {
                    let r = format!("api-{}", Uuid::new_v4());
                    seen.push((
                        Instant::now(),
                        client.probe(&r, 0).await.map(|_| ()).map_err(|e| (e.code(), e.to_string())),
                    ));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen
            })
        })
        .collect();

    // Kill the broker node the zone talks to once portal replies are flowing.
    while replies.len() < 2 * RESOURCES {
        let line = lines.next_line().await.expect("read portal_load.py").expect("portal_load.py ended early");
        replies.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")));
    }
    rabbit.kill(0).await;
    let killed = Instant::now();

    // Served again through both nodes, without restarting them. Each probe is bounded at 3 s (the
    // client's default is 30 s), so one call that gets no answer cannot use up the whole wait, and
    // a failure names what the last probe got.
    for client in &clients {
        let bounded = client.clone().with_timeout(Duration::from_secs(3));
        let served = e2e::poll_until_detailed(Duration::from_secs(30), Duration::from_millis(50), || {
            let client = bounded.clone();
            async move { client.probe(&format!("after-{}", Uuid::new_v4()), 0).await }
        })
        .await;
        let after = killed.elapsed();
        if let Err(waited) = served {
            panic!("{} does not serve 30 s after its broker node died: {waited}", client.base_url());
        }
        eprintln!("{} serves again {after:?} after the broker node died", client.base_url());
        assert!(after < Duration::from_secs(10), "{} served again only after {after:?}", client.base_url());
    }

    while let Some(line) = lines.next_line().await.expect("read portal_load.py") {
        replies.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")));
    }
    let output = load.wait_with_output().await.expect("wait for portal_load.py");
    assert!(output.status.success(), "portal_load.py failed: {}", String::from_utf8_lossy(&output.stderr));
    stop.cancel();
    assert_eq!(replies.pop().map(|done| done["done"].clone()), Some(serde_json::Value::Bool(true)));

    // Every portal request got an ok reply, and each resource counted exactly its requests.
    assert_eq!(replies.len(), PER_RESOURCE * RESOURCES);
    for reply in &replies {
        assert_eq!(reply["status"], "ok", "a portal request got no ok reply: {reply}");
        assert_eq!(reply["body"]["completed"], reply["seq"], "a request was lost or done twice: {reply}");
        assert_eq!(reply["body"]["active"], 1, "{reply}");
    }
    let retried = replies.iter().filter(|r| r["attempts"].as_u64() > Some(1)).count();
    eprintln!("portal requests sent more than once: {retried} of {}", replies.len());
    assert!(retried > 0, "no portal request was in flight when the broker node died");
    for stat in zone.probe_stats().await.iter().filter(|s| s.resource_id.starts_with("portal-")) {
        assert_eq!(stat.completed, PER_RESOURCE as i64, "{stat:?}");
        assert_eq!(stat.max_active, 1, "{stat:?}");
    }

    // API calls during the loss either worked or said clearly that the bus was briefly away (or,
    // unroutable, that the resource's owner had not declared its queues again yet).
    for task in api_load {
        for (at, outcome) in task.await.expect("API load task") {
            if let Err((code, error)) = outcome {
                assert!(
                    matches!(
                        code,
                        Some(
                            ErrorCode::BusUnavailable
                                | ErrorCode::NodeUnavailable
                                | ErrorCode::Unroutable
                                | ErrorCode::Timeout
                        )
                    ),
                    "an API call {:?} after the kill failed with {code:?}: {error}",
                    at.saturating_duration_since(killed)
                );
            }
        }
    }
    let info = clients[0].zone().await.expect("zone");
    assert_eq!(info.nodes.iter().filter(|n| n.state == "alive").count(), 2, "{:?}", info.nodes);
}
