//! `zone-node agent-sim`: the command-line face of [`crate::agent::sim`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::Conn;
use crate::agent::sim::{self, profile::Profile, Credentials, SimConfig};
use crate::config::Secret;

/// `zone-node agent-sim`.
#[derive(Debug, Clone, Args)]
pub struct AgentSimArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// How many hosts to simulate.
    #[arg(long)]
    pub hosts: usize,
    /// How long each agent task takes, in milliseconds (± 10 %).
    #[arg(long, default_value_t = 100)]
    pub latency_ms: u64,
    /// Probability (0 to 1) that an agent task fails.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Which capabilities and capacity the hosts get.
    #[arg(long, value_enum, default_value = "uniform")]
    pub profile: Profile,
    /// Hosts are named PREFIX-000, PREFIX-001, ...
    #[arg(long, default_value = "sim")]
    pub name_prefix: String,
    /// How often each host reports its presence (match the zone's ZONE_HOST_REPORT_INTERVAL_MS).
    #[arg(long, default_value_t = 1000)]
    pub report_interval_ms: u64,
    /// Bearer token the agents' control and stats endpoints require (or set
    /// ZONE_SIM_CONTROL_TOKEN, which keeps it out of `ps`). Without one they are open.
    #[arg(long, env = "ZONE_SIM_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
    /// Where the agents listen; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The agents' base URL as the zone reaches it, when not http://LISTEN (behind NAT, or
    /// listening on 0.0.0.0).
    #[arg(long)]
    pub advertise_url: Option<String>,
}

impl AgentSimArgs {
    /// The simulator's configuration; credentials as the operator commands take them.
    pub fn config(self) -> anyhow::Result<SimConfig> {
        let credentials = match (self.conn.token, self.conn.password) {
            (Some(token), _) => Credentials::Token(Secret::new(token)),
            (None, Some(password)) => {
                Credentials::Password { username: self.conn.username, password: Secret::new(password) }
            }
            (None, None) => anyhow::bail!("set ZONE_PASSWORD (or ZONE_TOKEN) so the hosts can register"),
        };
        Ok(SimConfig {
            zone_url: self.conn.url,
            credentials,
            hosts: self.hosts,
            latency: Duration::from_millis(self.latency_ms),
            fail_rate: self.fail_rate,
            profile: self.profile,
            name_prefix: self.name_prefix,
            report_interval: Duration::from_millis(self.report_interval_ms),
            control_token: self.control_token.map(Secret::new),
            listen: self.listen,
            advertise_url: self.advertise_url,
        })
    }
}

/// Runs `zone-node agent-sim` until SIGINT or SIGTERM.
pub async fn run_agent_sim(args: AgentSimArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let shutdown = CancellationToken::new();
    let handle = sim::run(config, shutdown.clone()).await?;
    println!("agent-sim: {} hosts registered; agents at {}/hosts/<name>", handle.hosts().len(), handle.agents_url());
    tokio::spawn(async move {
        crate::app::shutdown_signal().await;
        tracing::info!("stopping the simulated agents");
        shutdown.cancel();
    });
    handle.wait().await
}
