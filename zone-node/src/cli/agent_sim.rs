//! `zone-node agent-sim`: the command-line face of the [`agent_sim`] crate. It only turns the
//! flags into an [`agent_sim::SimConfig`] and runs it.

use std::net::SocketAddr;
use std::time::Duration;

use agent_sim::profile::Profile;
use agent_sim::{Credentials, SimConfig};
use clap::Args;
use secrecy::SecretString;

use super::Conn;

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
    /// A capability every host announces as well, KEY=VALUE (repeatable; replaces the profile's
    /// KEY). VALUE is a number, true/false, or else a string: site=dc1, gpu=true, cpu-ghz=3.1.
    #[arg(long = "capability", value_name = "KEY=VALUE", value_parser = parse_capability)]
    pub capabilities: Vec<(String, serde_json::Value)>,
    /// Register the hosts with this enrollment token (`POST /v1/hosts/enrollment-tokens` makes
    /// one; or set ZONE_ENROLLMENT_TOKEN, which keeps it out of `ps`): each host then acts with a
    /// credential of its own and no username or password is needed.
    #[arg(long, env = "ZONE_ENROLLMENT_TOKEN", hide_env_values = true)]
    pub enrollment_token: Option<String>,
    /// How many hosts register at once (1 to 1024): at start, hosts are registered this many in
    /// flight, each the moment one before it is done.
    #[arg(long, default_value_t = agent_sim::register::DEFAULT_REGISTER_CONCURRENCY)]
    pub register_concurrency: usize,
}

/// `KEY=VALUE` as a capability: a JSON number or boolean when VALUE is one, a string otherwise.
fn parse_capability(text: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("{text:?}: use KEY=VALUE"))?;
    if !api::validate::valid_key(key) {
        return Err(format!("{key:?}: keys are 1 to 64 of [A-Za-z0-9_.:-]"));
    }
    let value = match serde_json::from_str::<serde_json::Value>(value) {
        Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v,
        _ => serde_json::Value::String(value.to_owned()),
    };
    Ok((key.to_owned(), value))
}

impl AgentSimArgs {
    /// The simulator's configuration; credentials as the operator commands take them.
    pub fn config(self) -> anyhow::Result<SimConfig> {
        let credentials = match (self.enrollment_token, self.conn.token, self.conn.password) {
            (Some(enrollment), _, _) => Credentials::Enrollment(SecretString::from(enrollment)),
            (None, Some(token), _) => Credentials::Token(SecretString::from(token)),
            (None, None, Some(password)) => {
                Credentials::Password { username: self.conn.username, password: SecretString::from(password) }
            }
            (None, None, None) => {
                anyhow::bail!("set ZONE_ENROLLMENT_TOKEN (or ZONE_PASSWORD, or ZONE_TOKEN) so the hosts can register")
            }
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
            control_token: self.control_token.map(SecretString::from),
            listen: self.listen,
            advertise_url: self.advertise_url,
            capabilities: self.capabilities.into_iter().collect(),
            register_concurrency: self.register_concurrency,
        })
    }
}

/// Runs `zone-node agent-sim` until SIGINT or SIGTERM.
pub async fn run_agent_sim(args: AgentSimArgs) -> anyhow::Result<()> {
    agent_sim::run_until_signal(args.config()?).await
}
