//! `zone-node demo`: six zones in one process on embedded defaults, linked, with simulated hosts;
//! what it prints is enough to use it.

use std::process::Stdio;
use std::time::Duration;

use api::{InstanceCreate, Op, Requirement, Resources, ZoneStatus};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_starts_a_linked_federation_and_says_how_to_use_it() {
    let binary = e2e::node::default_binary_path();
    let binary = std::env::var_os(e2e::node::NODE_BIN_ENV).map(std::path::PathBuf::from).unwrap_or(binary);
    // Six consecutive free ports, below the kernel's ephemeral range (32768 and up), where the
    // harness's free ports and every outgoing connection of the suite live.
    let base = (0..100)
        .map(|_| 20_000 + rand::random::<u16>() % 12_000)
        .find(|b| (0..6).all(|i| std::net::TcpListener::bind(("127.0.0.1", b + i)).is_ok()))
        .expect("six consecutive free ports below 32000");
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(&binary)
        .args(["demo", "--base-port", &base.to_string(), "--hosts", "2", "--data-dir"])
        .arg(dir.path())
        .env("ZONE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start zone-node demo");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("Ctrl-C stops the demo");
            printed.push(line);
            if done {
                return;
            }
        }
        panic!("the demo ended before it was ready: {printed:?}");
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("the demo is ready within a minute");
    let text = printed.join("\n");
    let password = text
        .split_whitespace()
        .skip_while(|w| *w != "password")
        .nth(1)
        .unwrap_or_else(|| panic!("no password in:\n{text}"))
        .to_owned();
    let global = format!("http://127.0.0.1:{base}");
    for zone in ["global", "eu", "us", "eu-dc1", "eu-dc2", "us-dc1"] {
        assert!(text.contains(zone), "{zone} is not listed:\n{text}");
    }
    assert!(text.contains("zone-node zone-list"), "commands to try:\n{text}");

    let (client, _) = api::Client::new(&global).login("admin", &password).await.expect("the printed credentials work");
    let children = client.zones(false).await.unwrap().zones;
    let names: Vec<&str> = children.iter().map(|z| z.name.as_str()).collect();
    assert_eq!(names, ["eu", "us"]);
    assert!(children.iter().all(|z| z.status == ZoneStatus::Online));
    // Every data centre's hosts are in global's aggregate (polled up through the regions).
    let all_hosts = e2e::poll_until(Duration::from_secs(20), Duration::from_millis(200), || async {
        let caps = client.capabilities().await.ok()?;
        (caps.get("site").map(|e| e.count()) == Some(6)).then_some(caps)
    })
    .await;
    assert!(all_hosts.is_some(), "global never saw the 6 hosts of its 3 data centres");
    // A create with a requirement lands where it fits.
    let windows = Requirement { key: "os".into(), op: Op::Eq, value: Some("windows".into()) };
    let vm = client
        .instance_create(&InstanceCreate {
            name: "db-1".into(),
            client_id: Some("acme".into()),
            requirements: vec![windows],
            resources: Resources { vcpus: 1, memory_mb: 512, disk_gb: 10 },
            count: None,
        })
        .await
        .expect("create");
    assert_eq!(vm.zone_path, ["global", "us", "us-dc1"]);
    assert_eq!(client.lowest_zone("acme").await.unwrap().map(|z| z.zone_name).as_deref(), Some("us-dc1"));
    child.kill().await.ok();
}
