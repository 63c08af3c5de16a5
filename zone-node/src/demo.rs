//! `zone-node demo`: a small federation in one process, on embedded defaults.
//!
//! Six zones, each a real node with its own SQLite database (under one data directory), its own
//! in-process bus and its own API port: a global zone, two regions and three data centres, with
//! simulated hosts (real HTTP agents, the [`agent_sim`] crate) in the data centres, each data centre
//! of another kind (hypervisor, OS) so requirements route visibly. The zones are linked with
//! zone-add through their public APIs, exactly as an operator would. The demo prints the URLs,
//! the credentials and commands to try, and runs until Ctrl-C.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use agent_sim::profile::Profile;
use agent_sim::{Credentials, SimConfig};
use anyhow::Context;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::config::Config;

/// One zone of the demo.
struct DemoZone {
    name: &'static str,
    parent: Option<&'static str>,
    /// For a data centre: its hosts' hypervisor and OS.
    hosts: Option<(&'static str, &'static str)>,
}

const fn zone(
    name: &'static str,
    parent: Option<&'static str>,
    hosts: Option<(&'static str, &'static str)>,
) -> DemoZone {
    DemoZone { name, parent, hosts }
}

const ZONES: &[DemoZone] = &[
    zone("global", None, None),
    zone("eu", Some("global"), None),
    zone("us", Some("global"), None),
    zone("eu-dc1", Some("eu"), Some(("kvm", "linux"))),
    zone("eu-dc2", Some("eu"), Some(("xen", "linux"))),
    zone("us-dc1", Some("us"), Some(("hyperv", "windows"))),
];

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The global zone's port; the others take the next ones.
    #[arg(long, default_value_t = 18500)]
    pub base_port: u16,
    /// Where the zones keep their databases (default: a new temporary directory, removed at exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Simulated hosts per data centre.
    #[arg(long, default_value_t = 4)]
    pub hosts: usize,
}

fn zone_config(name: &str, port: u16, data_dir: &std::path::Path, password: &str) -> anyhow::Result<Config> {
    let env: BTreeMap<&str, String> = [
        ("ZONE_NAME", name.to_owned()),
        ("ZONE_LISTEN", format!("127.0.0.1:{port}")),
        ("ZONE_DATA_DIR", data_dir.join(name).display().to_string()),
        // Each zone its own in-process bus: zones share nothing but HTTP.
        ("ZONE_BUS_URL", format!("memory://demo-{name}")),
        ("ZONE_ADMIN_PASSWORD", password.to_owned()),
    ]
    .into_iter()
    .collect();
    Config::load(None, &|var| env.get(var).cloned()).with_context(|| format!("configuration of zone {name}"))
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (data_dir, temporary) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("zone-demo-{}", std::process::id())), true),
    };
    let password = crate::auth::generate_password();
    let stop = CancellationToken::new();
    let mut nodes = Vec::new();
    let mut urls: BTreeMap<&str, String> = BTreeMap::new();
    for (i, DemoZone { name, .. }) in ZONES.iter().enumerate() {
        let port = args.base_port.checked_add(i as u16).context("--base-port is too high")?;
        let config = zone_config(name, port, &data_dir, &password)?;
        urls.insert(name, config.api_url().to_owned());
        let app = Application::build(config).await.with_context(|| format!("cannot start zone {name}"))?;
        let token = app.shutdown_token();
        let child = stop.clone();
        tokio::spawn(async move {
            child.cancelled().await;
            token.cancel();
        });
        nodes.push((name.to_string(), tokio::spawn(app.run_until_stopped())));
    }
    let mut sims = Vec::new();
    for DemoZone { name, hosts, .. } in ZONES {
        let Some((hypervisor, os)) = hosts else { continue };
        let config = SimConfig {
            zone_url: urls[name].clone(),
            credentials: Credentials::Password {
                username: "admin".into(),
                password: SecretString::from(password.clone()),
            },
            hosts: args.hosts,
            latency: Duration::from_millis(50),
            fail_rate: 0.0,
            profile: Profile::Uniform,
            name_prefix: format!("{name}-host"),
            report_interval: Duration::from_secs(1),
            control_token: None,
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            advertise_url: None,
            capabilities: [
                ("hypervisor".to_owned(), serde_json::json!(hypervisor)),
                ("os".to_owned(), serde_json::json!(os)),
                ("site".to_owned(), serde_json::json!(name)),
            ]
            .into_iter()
            .collect(),
            register_concurrency: agent_sim::register::DEFAULT_REGISTER_CONCURRENCY,
        };
        sims.push(
            agent_sim::run(config, stop.child_token())
                .await
                .with_context(|| format!("cannot start the hosts of {name}"))?,
        );
    }
    // Link the tree bottom-up with zone-add, as an operator would.
    for DemoZone { name, parent, .. } in ZONES.iter().rev() {
        let Some(parent) = parent else { continue };
        let (client, _) =
            api::Client::new(&urls[parent]).login("admin", &password).await.context("cannot log in to the demo")?;
        let req = api::ZoneCreate {
            name: None,
            api_url: urls[name].clone(),
            username: "admin".into(),
            password: password.clone(),
            weight_offset: 0.0,
            weight_scale: 1.0,
            disabled: false,
            insecure_http: false,
        };
        client.zone_create(&req).await.with_context(|| format!("zone-add {name} to {parent}"))?;
    }

    println!(
        "zone-node demo: {} zones on embedded defaults (SQLite under {}, one in-process bus each)",
        ZONES.len(),
        data_dir.display()
    );
    for DemoZone { name, parent, hosts } in ZONES {
        let what = match (parent, hosts) {
            (None, _) => "root".to_owned(),
            (Some(p), None) => format!("region under {p}"),
            (Some(p), Some((hv, os))) => format!("data centre under {p}, {} {hv}/{os} hosts", args.hosts),
        };
        println!("  {name:<8} {:<24} {what}", urls[name]);
    }
    println!("every zone: username admin, password {password}");
    println!();
    println!("Try:");
    println!("  export ZONE_URL={} ZONE_USERNAME=admin ZONE_PASSWORD={password}", urls["global"]);
    println!("  zone-node zone-list                       # the global zone's children");
    println!("  zone-node capabilities                    # merged from every zone below");
    println!("  zone-node instance-create web-1 --client-id acme --requirement hypervisor:eq:xen");
    println!("  zone-node instance-create db-1 --client-id acme --requirement os:eq:windows");
    println!("  zone-node client-zone acme                # the lowest zone holding all of acme's instances");
    println!("  zone-node instance-list                   # across the whole tree");
    println!("  ZONE_URL={} zone-node zone-details eu-dc2", urls["eu"]);
    println!("Ctrl-C stops the demo.");

    // Each node stops on Ctrl-C by itself; then the simulators.
    let mut failed = None;
    for (name, handle) in nodes {
        match handle.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failed = Some(format!("zone {name} failed: {e:#}")),
            Err(e) => failed = Some(format!("zone {name} panicked: {e}")),
        }
        stop.cancel();
    }
    for s in sims {
        let _ = s.wait().await;
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    match failed {
        Some(f) => anyhow::bail!(f),
        None => Ok(()),
    }
}
