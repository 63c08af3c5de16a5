//! A bad setting stops the embedded node at start with a message naming it (the process's exit
//! code and stderr, so a real process). That the embedded node serves alone is tested in process:
//! `zone-node/tests/http/embedded.rs`.

use e2e::{NodeProcess, NodeSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_stop_the_node_naming_the_setting() {
    for (var, value) in [
        ("ZONE_DEAD_AFTER_MS", "100"),
        ("ZONE_BUS_URL", "kafka://x"),
        ("ZONE_LISTEN", "nowhere"),
        ("ZONE_WORKER_THREADS", "0"),
        ("ZONE_WORKER_THREADS", "many"),
    ] {
        let output = NodeSpec::embedded().with_env(var, value).run_to_exit().await;
        assert_eq!(output.code, Some(2), "{var}={value}: exit {:?}, stderr {}", output.code, output.stderr);
        assert!(output.stderr.contains(var), "{var}={value}: stderr does not name it: {}", output.stderr);
    }
}

/// `ZONE_WORKER_THREADS` sets how many runtime workers serve the node (the node says so when it
/// starts serving), and the node serves on one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_threads_setting_is_what_the_node_runs_on() {
    for workers in ["1", "3"] {
        let spec = NodeSpec::embedded().with_env("ZONE_WORKER_THREADS", workers);
        let zone_name = spec.zone_name.clone();
        let node = NodeProcess::start(spec).await;
        let info = node.client().await.zone().await.expect("the node serves");
        assert_eq!(info.name, zone_name);
        let log = std::fs::read_to_string(node.log_path()).expect("the node's log");
        let serving = log.lines().find(|l| l.contains("serving the API")).expect("the node says it serves");
        assert!(serving.contains(&format!("workers={workers}")), "ZONE_WORKER_THREADS={workers}: {serving}");
    }
}
