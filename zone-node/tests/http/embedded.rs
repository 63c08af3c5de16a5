//! The embedded default (SQLite, in-process bus) serves alone: the API, the ring through the bus to
//! the node itself, and the OpenAPI document.

use crate::app::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_node_serves_alone() {
    let node = spawn_app().await;
    let client = node.client().await;
    // A node alone becomes alive on its first membership tick after joining.
    let zone =
        test_support::poll_until(std::time::Duration::from_secs(30), std::time::Duration::from_millis(50), || async {
            client.zone().await.ok().filter(|z| z.nodes.iter().any(|n| n.state == "alive"))
        })
        .await
        .expect("the node never listed itself alive");
    assert_eq!(zone.nodes.len(), 1);
    assert_eq!(zone.nodes[0].state, "alive");
    assert_eq!(zone.node_id, zone.nodes[0].id);
    // The ring routes through the in-process bus to the node itself.
    let probe = client.probe("r-1", 0).await.expect("probe");
    assert_eq!(probe.node_id, zone.node_id);
    assert_eq!(probe.active, 1);
    // The OpenAPI document is served without a token, as JSON, the same each time (it is built
    // once), and names the API's paths.
    let http = api::http::client_builder().build().expect("an HTTP client");
    let fetch = || async {
        let resp = http.get(format!("{}/openapi.json", node.url)).send().await.expect("GET /openapi.json");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        resp.bytes().await.expect("the OpenAPI document's body")
    };
    let first = fetch().await;
    assert_eq!(fetch().await, first, "the OpenAPI document changed between two requests");
    let doc: serde_json::Value = serde_json::from_slice(&first).expect("the OpenAPI document is JSON");
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

/// What the node keeps on disk is its own user's only: the data directory it created 0700, the
/// database (password hashes, sealed child passwords) and the secret key 0600.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_its_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let node = spawn_app().await;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
    };
    let db = std::path::PathBuf::from(
        node.database_url.strip_prefix("sqlite://").expect("a sqlite:// URL").split('?').next().expect("a path"),
    );
    let data_dir = db.parent().expect("the database is in the data directory");
    assert_eq!(mode(data_dir), 0o700, "data directory {}", data_dir.display());
    assert_eq!(mode(&db), 0o600, "database {}", db.display());
    let key_files: Vec<_> = std::fs::read_dir(data_dir)
        .expect("list the data directory")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("key")))
        .collect();
    assert!(!key_files.is_empty(), "no key file in {}", data_dir.display());
    for file in key_files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    node.stop().await;
}

/// A method string a caller invents does not become a metrics label (`/metrics` needs no token,
/// so each new label would be a series anyone could add).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_are_counted_under_one_label() {
    let node = spawn_app().await;
    let http = reqwest::Client::new();
    for name in ["BREWCOFFEE", "XYZZY"] {
        let method = reqwest::Method::from_bytes(name.as_bytes()).expect("a valid method token");
        let status = http.request(method, format!("{}/v1/zone", node.url)).send().await.expect("an answer").status();
        assert!(status.is_client_error(), "{name} answered {status}");
    }
    let metrics = http
        .get(format!("{}/metrics", node.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("the metrics text");
    assert!(!metrics.contains("BREWCOFFEE") && !metrics.contains("XYZZY"), "an invented method is a label:\n{metrics}");
    assert!(metrics.contains(r#"method="other""#), "no method=\"other\" series:\n{metrics}");
    node.stop().await;
}

/// `GET /v1/zone?subtree=live` asks every zone below: admins only. A member still reads the polled
/// subtree, without the management nodes' URLs (internal addresses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_subtree_and_the_node_list_are_for_admins_only() {
    let node = spawn_app().await;
    let admin = node.client().await;
    admin
        .account_create(&api::AccountCreate {
            username: "tenant".into(),
            password: "tenant-password-1".into(),
            role: api::Role::Member,
            client_id: Some("client-a".into()),
            client_ids: None,
        })
        .await
        .expect("a member account");
    let (member, _) = api::Client::new(&node.url).login("tenant", "tenant-password-1").await.expect("member login");
    let err = member.zone_with(api::SubtreeView::Live).await.expect_err("a member asks for the live subtree");
    assert_eq!((err.status(), err.code()), (Some(403), Some(api::ErrorCode::Forbidden)), "{err}");
    let seen = member.zone_with(api::SubtreeView::Cached).await.expect("a member reads the polled subtree");
    assert!(seen.nodes.is_empty(), "a member sees node URLs: {:?}", seen.nodes);
    let full = admin.zone_with(api::SubtreeView::Live).await.expect("an admin reads the live subtree");
    assert_eq!(full.nodes.len(), 1, "an admin sees the node");
    assert!(full.nodes[0].api_url.starts_with("http://127.0.0.1:"), "{:?}", full.nodes);
    node.stop().await;
}
