//! A program in another language joins the bus: `tests/clients/portal_client.py`, a plain pika
//! client written from docs/wire-format.md, sends requests to `<prefix>.message.api.portal` of a
//! real two-node zone and reads the replies, including one routed to a resource's ring owner.

use std::path::PathBuf;

use e2e::{Cluster, ClusterOptions};

async fn portal(zone: &Cluster, kind: &str, body: &str, resource: Option<&str>) -> serde_json::Value {
    portal_with_id(zone, kind, body, resource, None).await
}

async fn portal_with_id(
    zone: &Cluster,
    kind: &str,
    body: &str,
    resource: Option<&str>,
    message_id: Option<&str>,
) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/portal_client.py");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(&script).args(["--url", zone.bus_url(), "--prefix", zone.bus_prefix(), "--kind", kind, "--body", body]);
    if let Some(r) = resource {
        cmd.args(["--resource", r]);
    }
    if let Some(id) = message_id {
        cmd.args(["--message-id", id]);
    }
    let out = cmd.output().await.expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "portal_client.py failed (pika is installed by scripts/ensure-services)\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_talks_to_a_real_zone_through_the_portal() {
    let zone = Cluster::start(2, ClusterOptions::default()).await;
    let admin = zone.node(0).client().await;
    let info = admin.zone().await.expect("zone");

    // Answered by whichever node takes it from the shared queue.
    let reply = portal(&zone, "zone.get", "{}", None).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["body"]["name"], info.name.as_str());
    assert_eq!(reply["body"]["nodes"].as_array().map(Vec::len), Some(2), "{reply}");

    // Routed by the portal to the ring owner's probe service, which replies to the client directly.
    for resource in ["vm-1", "vm-2", "vm-3", "vm-4"] {
        let owner = admin.owners(vec![resource.into()]).await.expect("owners").owners[0].clone();
        let reply = portal(&zone, "probe.run", r#"{"hold_ms":0}"#, Some(resource)).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        assert_eq!(reply["body"]["node_id"], owner.as_str(), "{resource} not run by its owner: {reply}");
        assert_eq!(reply["body"]["active"], 1);
    }

    // A request sent again with the same message id (a client that lost its reply) gets the first
    // run's reply and does not run again; a new id runs again.
    let resource = format!("again-{}", uuid::Uuid::new_v4());
    let id = uuid::Uuid::new_v4().to_string();
    let first = portal_with_id(&zone, "probe.run", r#"{"hold_ms":0}"#, Some(&resource), Some(&id)).await;
    assert_eq!(first["status"], "ok", "{first}");
    assert_eq!(first["body"]["completed"], 1, "{first}");
    let again = portal_with_id(&zone, "probe.run", r#"{"hold_ms":0}"#, Some(&resource), Some(&id)).await;
    assert_eq!(again["body"], first["body"], "the same message ran again");
    let next = portal(&zone, "probe.run", r#"{"hold_ms":0}"#, Some(&resource)).await;
    assert_eq!(next["body"]["completed"], 2, "{next}");

    // Errors come back as the documented error body.
    let reply = portal(&zone, "no.such", "{}", None).await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["body"]["error"]["code"], "no_such_service");
}
