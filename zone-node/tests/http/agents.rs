//! What the zone does with agents that misbehave: one that takes a task and never calls back.

use std::collections::BTreeMap;

use api::{ErrorCode, HostRegister, Resources};

use crate::app::spawn_app_with;

/// An agent that answers `202` to every task and never calls back: the create ends at the agent
/// timeout with `502 agent_failed`, and the instance stays, in state `error`, with a reason that
/// says so (and nothing the agent sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_calls_back_leaves_the_instance_in_error() {
    let app = spawn_app_with(&[("ZONE_AGENT_TIMEOUT_MS", "500")]).await;
    let admin = app.client().await;
    let agent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port for the agent");
    let agent_url = format!("http://{}", agent.local_addr().unwrap());
    let silent =
        axum::Router::new().route("/v1/tasks", axum::routing::post(|| async { axum::http::StatusCode::ACCEPTED }));
    tokio::spawn(async move { axum::serve(agent, silent).await });
    admin
        .host_register(&HostRegister {
            name: "silent-host".into(),
            agent_url,
            capabilities: BTreeMap::new(),
            resources: Resources { vcpus: 4, memory_mb: 4096, disk_gb: 40 },
            agent_token: Some("a-token-of-sixteen-chars".into()),
        })
        .await
        .expect("a host");

    let req = crate::app::small_instance("never-built", "acme");
    let started = std::time::Instant::now();
    let err = admin.instance_create(&req).await.expect_err("no callback ever comes");
    assert_eq!((err.status(), err.code()), (Some(502), Some(ErrorCode::AgentFailed)), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    let listed = admin.instances("limit=10").await.expect("list").instances;
    let instance = listed.iter().find(|i| i.name == "never-built").expect("the instance stays");
    assert_eq!(instance.state, "error", "{instance:?}");
    let reason = instance.error_reason.as_deref().unwrap_or_default();
    assert!(reason.contains("did not report"), "{reason}");
    app.stop().await;
}
