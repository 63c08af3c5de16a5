//! The embedded default (SQLite, in-process bus) serves alone: the API, the ring through the bus to
//! the node itself, and the OpenAPI document.

use crate::app::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_node_serves_alone() {
    let node = spawn_app().await;
    let client = node.client().await;
    let zone = client.zone().await.expect("zone");
    assert_eq!(zone.nodes.len(), 1);
    assert_eq!(zone.nodes[0].state, "alive");
    assert_eq!(zone.node_id, zone.nodes[0].id);
    // The ring routes through the in-process bus to the node itself.
    let probe = client.probe("r-1", 0).await.expect("probe");
    assert_eq!(probe.node_id, zone.node_id);
    assert_eq!(probe.active, 1);
    // The OpenAPI document is served without a token and names the API's paths.
    let doc: serde_json::Value = api::http::client_builder()
        .build()
        .expect("an HTTP client")
        .get(format!("{}/openapi.json", node.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/auth/tokens",
        "/v1/instances",
        "/v1/zones",
        "/v1/zones/{id}/detail",
        "/v1/clients/{client_id}/zone",
        "/v1/zone/watch",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not in the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["ChildZone"].is_object());
    node.stop().await;
}
