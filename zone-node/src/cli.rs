//! The `zone-node` command line: `serve` (the default) runs a node; the operator commands talk to
//! a zone's API with `ZONE_URL` and `ZONE_USERNAME`/`ZONE_PASSWORD` (or `ZONE_TOKEN`), printing
//! tables, or JSON with `--json`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use api::{AccountCreate, Client, Role};

use crate::agent::sim::{self, profile::Profile, Credentials, SimConfig};
use crate::config::Secret;

#[derive(Debug, Parser)]
#[command(
    name = "zone-node",
    version,
    about = "A management node of a zone, and the operator commands that talk to one"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration file for `serve` (environment variables win over it).
    #[arg(long, global = true, env = "ZONE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a management node (the default when no command is given).
    Serve,
    /// Validate the configuration and print it (secrets redacted), without starting.
    CheckConfig,
    /// Log in and print a bearer token (for ZONE_TOKEN).
    Login(Conn),
    /// Show this zone and its management nodes.
    ZoneShow(ConnJson),
    /// Create an account (admin).
    AccountAdd {
        #[command(flatten)]
        conn: Conn,
        /// The new account's username.
        #[arg(value_name = "USERNAME")]
        name: String,
        /// admin or member.
        #[arg(long, default_value = "member")]
        role: String,
        /// The client (tenant) a member belongs to.
        #[arg(long)]
        client_id: Option<String>,
        /// The new account's password (or set ZONE_NEW_PASSWORD, which keeps it out of `ps`).
        #[arg(long = "new-password", env = "ZONE_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
    },
    /// List accounts (admin).
    AccountList(ConnJson),
    /// Delete an account and revoke its tokens (admin).
    AccountDelete {
        #[command(flatten)]
        conn: Conn,
        #[arg(value_name = "USERNAME")]
        name: String,
    },
    /// Run N simulated hosts that register with a zone and answer its agent calls over HTTP
    /// (admin credentials; runs until SIGINT/SIGTERM, leaving the hosts registered).
    AgentSim(AgentSimArgs),
}

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

/// How to reach a zone's API.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// The zone's API URL.
    #[arg(long, visible_alias = "zone-url", env = "ZONE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, env = "ZONE_USERNAME", default_value = "admin")]
    pub username: String,
    #[arg(long, env = "ZONE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A bearer token instead of username and password.
    #[arg(long, env = "ZONE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ConnJson {
    #[command(flatten)]
    pub conn: Conn,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Conn {
    async fn client(&self) -> anyhow::Result<Client> {
        let client = Client::new(&self.url);
        if let Some(token) = &self.token {
            return Ok(client.with_token(token.clone()));
        }
        let password = self.password.as_deref().context("set ZONE_PASSWORD (or ZONE_TOKEN) to talk to the zone")?;
        let (client, _) = client.login(&self.username, password).await.context("login failed")?;
        Ok(client)
    }
}

/// Runs an operator command.
pub async fn run_operator(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Login(conn) => {
            let password = conn.password.as_deref().context("set ZONE_PASSWORD to log in")?;
            let (_, token) = Client::new(&conn.url).login(&conn.username, password).await.context("login failed")?;
            println!("{}", token.token);
            eprintln!("expires at {}; api_url {}", token.expires_at, token.api_url);
        }
        Command::ZoneShow(ConnJson { conn, json }) => {
            let zone = conn.client().await?.zone().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&zone)?);
            } else {
                println!("zone {} ({})  api {}  ring epoch {}", zone.name, zone.id, zone.api_url, zone.ring_epoch);
                let rows = zone
                    .nodes
                    .iter()
                    .map(|n| vec![n.id.clone(), n.state.clone(), n.api_url.clone(), n.last_heartbeat.clone()])
                    .collect::<Vec<_>>();
                print_table(&["NODE", "STATE", "API", "LAST HEARTBEAT"], &rows);
            }
        }
        Command::AccountAdd { conn, name, role, client_id, new_password } => {
            let role = Role::parse(&role).with_context(|| format!("--role must be admin or member, not {role:?}"))?;
            let account = conn
                .client()
                .await?
                .account_create(&AccountCreate { username: name, password: new_password, role, client_id })
                .await?;
            println!("created {} ({})", account.username, account.role.as_str());
        }
        Command::AccountList(ConnJson { conn, json }) => {
            let list = conn.client().await?.accounts().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows = list
                    .accounts
                    .iter()
                    .map(|a| {
                        vec![
                            a.username.clone(),
                            a.role.as_str().into(),
                            a.client_id.clone().unwrap_or_else(|| "-".into()),
                            a.created_at.clone(),
                        ]
                    })
                    .collect::<Vec<_>>();
                print_table(&["USERNAME", "ROLE", "CLIENT", "CREATED"], &rows);
            }
        }
        Command::AccountDelete { conn, name } => {
            conn.client().await?.account_delete(&name).await?;
            println!("deleted {name}");
        }
        Command::AgentSim(args) => run_agent_sim(args).await?,
        Command::Serve | Command::CheckConfig => unreachable!("handled by main"),
    }
    Ok(())
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn account_add_takes_a_positional_username_beside_the_login_username() {
        let cli = Cli::try_parse_from([
            "zone-node",
            "account-add",
            "alice",
            "--role",
            "member",
            "--client-id",
            "acme",
            "--new-password",
            "pw-123456",
            "--username",
            "admin",
        ])
        .unwrap();
        match cli.command {
            Some(Command::AccountAdd { conn, name, role, client_id, .. }) => {
                assert_eq!((name.as_str(), role.as_str(), client_id.as_deref()), ("alice", "member", Some("acme")));
                assert_eq!(conn.username, "admin");
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["zone-node"]).unwrap().command.is_none());
    }
}
