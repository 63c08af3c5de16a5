//! A bad setting stops the embedded node at start with a message naming it (the process's exit
//! code and stderr, so a real process). That the embedded node serves alone is tested in process:
//! `zone-node/tests/http/embedded.rs`.

use e2e::NodeSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_stop_the_node_naming_the_setting() {
    for (var, value) in [("ZONE_DEAD_AFTER_MS", "100"), ("ZONE_BUS_URL", "kafka://x"), ("ZONE_LISTEN", "nowhere")] {
        let output = NodeSpec::embedded().with_env(var, value).run_to_exit().await;
        assert_eq!(output.code, Some(2), "{var}={value}: exit {:?}, stderr {}", output.code, output.stderr);
        assert!(output.stderr.contains(var), "{var}={value}: stderr does not name it: {}", output.stderr);
    }
}
