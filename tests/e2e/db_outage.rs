//! A database outage three times longer than `dead_after`, under a zone of three nodes with
//! requests in flight: PostgreSQL of the test's own (`scripts/postgres-node`), stopped and started
//! again. Afterwards all three nodes serve and none exited (one evicted meanwhile rejoins), and every
//! request made during the outage either succeeded or got a clear 503.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::{free_port, Cluster, ClusterOptions};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").join("scripts/postgres-node")
}

/// A PostgreSQL server of this test's own, destroyed when dropped.
struct OwnPostgres {
    name: String,
    port: u16,
}

impl OwnPostgres {
    fn run(&self, args: &[&str]) {
        let out = std::process::Command::new(script()).args(args).output().expect("run scripts/postgres-node");
        assert!(
            out.status.success(),
            "postgres-node {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fn start(&self) {
        self.run(&["start", &self.name, &self.port.to_string()]);
    }
    fn stop(&self) {
        self.run(&["stop", &self.name]);
    }
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/zone", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script()).args(["destroy", &self.name]).output();
    }
}

/// What one request during the run came to.
#[derive(Debug)]
enum Seen {
    Ok,
    Unavailable(#[allow(dead_code)] String),
    Other(#[allow(dead_code)] String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_of_three_eviction_timeouts_ends_with_every_node_serving() {
    let pg = OwnPostgres { name: format!("outage-{}", e2e::net::short_id()), port: free_port() };
    pg.start();
    let options = ClusterOptions { database_url: Some(pg.url()), ..ClusterOptions::default() };
    let dead_after = Duration::from_millis(options.dead_after_ms);
    let zone = Cluster::start(3, options).await;
    let before: Vec<String> = (0..3).map(|i| zone.node(i).node_id()).collect();
    let clients: Vec<api::Client> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(zone.node(i).client().await.with_timeout(Duration::from_secs(10)));
        }
        v
    };

    // Requests to every node, one after another, through the whole run.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (clients, stop) = (clients.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.is_cancelled() {
                for c in &clients {
                    let outcome = match c.capabilities().await {
                        Ok(_) => Seen::Ok,
                        Err(e) if e.status() == Some(503) => Seen::Unavailable(e.to_string()),
                        Err(e) => Seen::Other(e.to_string()),
                    };
                    seen.push((Instant::now(), outcome));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let outage = Instant::now();
    pg.stop();
    // /readyz says what is wrong (it needs no token and is never fenced).
    let http = api::http::client_builder().build().expect("an HTTP client");
    let readyz = format!("{}/readyz", zone.node(0).url());
    let not_ready = e2e::poll_until(dead_after, Duration::from_millis(100), || async {
        let r = http.get(&readyz).send().await.ok()?;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.ok()?;
        (status == 503 && body["database"]["ok"] == false).then_some(body)
    })
    .await;
    assert!(not_ready.is_some(), "/readyz did not report the database down");
    tokio::time::sleep((dead_after * 3).saturating_sub(outage.elapsed())).await;
    pg.start();
    let back = Instant::now();

    // Every node serves again by itself, and the three agree on three alive members.
    zone.wait_until(Duration::from_secs(60), "all three nodes serve after the outage", || async {
        let mut alive = 0;
        for c in &clients {
            let info = c.zone().await.ok()?;
            alive = info.nodes.iter().filter(|n| n.state == "alive").count();
        }
        (alive == 3).then_some(())
    })
    .await;
    stop.cancel();
    let seen = load.await.expect("the load task");
    let alive_ids: Vec<String> = clients[0]
        .zone()
        .await
        .expect("the zone after the outage")
        .nodes
        .into_iter()
        .filter(|n| n.state == "alive")
        .map(|n| n.id)
        .collect();

    for i in 0..3 {
        assert!(zone.node(i).exit_status().is_none(), "node {i} exited");
    }
    let evicted: Vec<&String> = before.iter().filter(|id| !alive_ids.contains(id)).collect();
    eprintln!("nodes evicted and rejoined under a new id: {}", evicted.len());
    let during: Vec<&(Instant, Seen)> = seen.iter().filter(|(t, _)| *t >= outage && *t <= back).collect();
    assert!(!during.is_empty(), "no request was made during the outage");
    let unclear: Vec<&(Instant, Seen)> = seen.iter().filter(|(_, s)| matches!(s, Seen::Other(_))).collect();
    assert!(unclear.is_empty(), "requests that neither succeeded nor got a clear 503: {unclear:?}");
    // Each node answers what the load asked for again.
    for (i, c) in clients.iter().enumerate() {
        c.capabilities().await.unwrap_or_else(|e| panic!("node {i} does not serve after the outage: {e}"));
    }
    eprintln!(
        "outage {:?}: {} requests during it ({} answered 503), {} after",
        back - outage,
        during.len(),
        during.iter().filter(|(_, s)| matches!(s, Seen::Unavailable(_))).count(),
        seen.iter().filter(|(t, _)| *t > back).count()
    );
}
