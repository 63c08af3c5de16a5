//! RabbitMQ stopped and started again under a running zone: the nodes report the outage, fail
//! calls promptly instead of hanging, and serve again by themselves once the broker is back.
//! Uses its own RabbitMQ node on its own port so other tests keep their broker.

use std::time::{Duration, Instant};

use api::ErrorCode;
use e2e::{Cluster, ClusterOptions, RabbitInstance};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_again_after_a_broker_restart_without_restarting() {
    let mut rabbit = RabbitInstance::start().await;
    let options = ClusterOptions { bus_url: Some(rabbit.url()), ..ClusterOptions::default() };
    let zone = Cluster::start(2, options).await;
    let clients = [zone.node(0).client().await, zone.node(1).client().await];
    let resources: Vec<String> = (0..8).map(|_| Uuid::new_v4().to_string()).collect();
    for (i, r) in resources.iter().enumerate() {
        clients[i % 2].probe(r, 0).await.expect("probe before the outage");
    }

    rabbit.stop().await;

    // Both nodes notice: /readyz reports the bus, and calls fail at once with bus_unavailable.
    for client in &clients {
        let ready = e2e::poll_until(Duration::from_secs(15), Duration::from_millis(100), || {
            let client = client.clone();
            async move {
                match client.readiness().await {
                    Err(e) if e.status() == Some(503) => Some(()),
                    _ => None,
                }
            }
        })
        .await;
        assert!(ready.is_some(), "{} still reports ready with the broker down", client.base_url());
        let started = Instant::now();
        let error = client.probe(&resources[0], 0).await.expect_err("a probe cannot work without the bus");
        assert_eq!(error.code(), Some(ErrorCode::BusUnavailable), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5), "the call took {:?} to fail", started.elapsed());
    }

    rabbit.start().await;

    // Back without restarting any node: every resource is served again through either node.
    for (i, r) in resources.iter().enumerate() {
        let client = clients[i % 2].clone();
        let served = e2e::poll_until(Duration::from_secs(60), Duration::from_millis(200), || {
            let client = client.clone();
            let r = r.clone();
            async move { client.probe(&r, 0).await.ok() }
        })
        .await;
        assert!(served.is_some(), "resource {r} not served after the broker came back");
    }
    for client in &clients {
        assert!(client.readiness().await.is_ok(), "{} not ready after the broker came back", client.base_url());
    }
    // The same processes: the zone still has exactly two alive nodes, the original ones.
    let info = clients[0].zone().await.expect("zone");
    let alive: Vec<_> = info.nodes.iter().filter(|n| n.state == "alive").map(|n| n.id.clone()).collect();
    assert_eq!(alive.len(), 2, "{:?}", info.nodes);
    assert!(alive.contains(&zone.node(0).node_id()) && alive.contains(&zone.node(1).node_id()));
}
