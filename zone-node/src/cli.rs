//! The `zone-node` command line: `serve` (the default) runs a node; the operator commands talk to
//! a zone's API with `ZONE_URL` and `ZONE_USERNAME`/`ZONE_PASSWORD` (or `ZONE_TOKEN`), printing
//! tables, or JSON with `--json`.

//!
//! - this file: the commands, connection arguments, accounts, tables
//! - [`resources`]: hosts, instances, placements and capabilities
//! - [`agent_sim`]: `agent-sim`, the simulated hosts
//! - [`zones`]: child zones (`zone-add` …) and the lowest-zone lookup (`client-zone`)

mod agent_sim;
mod resources;
pub mod zones;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use api::{AccountCreate, Client, Role};

pub use agent_sim::{run_agent_sim, AgentSimArgs};
pub use resources::{ActionArg, RequirementArg, ResourceArgs};

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
        /// admin, member or parent.
        #[arg(long, default_value = "member")]
        role: String,
        /// The client (tenant) a member belongs to.
        #[arg(long)]
        client_id: Option<String>,
        /// The clients a parent account is limited to: comma-separated client ids or prefixes
        /// ending in '*' (`--client-ids 'acme-*,bob'`).
        #[arg(long, value_delimiter = ',')]
        client_ids: Option<Vec<String>>,
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
    /// List the zone's hosts (admin).
    HostList(ConnJson),
    /// Show a host and its capabilities (admin).
    HostShow {
        #[command(flatten)]
        conn: ConnJson,
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Delete a host that has no instances (admin).
    HostDelete {
        #[command(flatten)]
        conn: Conn,
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Create an instance (or COUNT of them); answers once the hosts' agents have built them.
    InstanceCreate {
        #[command(flatten)]
        conn: ConnJson,
        #[arg(value_name = "NAME")]
        name: String,
        /// The client that will own it (admins must give it; members get their own).
        #[arg(long)]
        client_id: Option<String>,
        /// A capability filter KEY:OP[:VALUE], e.g. free-disk:ge:100 or hypervisor:in:kvm,xen
        /// (repeatable).
        #[arg(long = "requirement", value_name = "KEY:OP[:VALUE]")]
        requirements: Vec<RequirementArg>,
        #[command(flatten)]
        resources: ResourceArgs,
        /// How many instances, 1 to 1000: more than one are named NAME-0001, NAME-0002, … and
        /// placed all or nothing.
        #[arg(long, default_value_t = 1,
            value_parser = clap::value_parser!(u32).range(1..=i64::from(api::MAX_CREATE_COUNT)))]
        count: u32,
    },
    /// List instances (every page), of one client when given.
    InstanceList {
        #[command(flatten)]
        conn: ConnJson,
        #[arg(long)]
        client_id: Option<String>,
    },
    /// Show an instance.
    InstanceShow {
        #[command(flatten)]
        conn: ConnJson,
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Start, stop, reboot or migrate an instance; answers when the action is done.
    InstanceAction {
        #[command(flatten)]
        conn: ConnJson,
        #[arg(value_name = "ID")]
        id: String,
        #[arg(value_enum, value_name = "ACTION")]
        action: ActionArg,
        /// The migration's target host (admin); the scheduler picks one without it.
        #[arg(long)]
        host_id: Option<String>,
    },
    /// Delete an instance.
    InstanceDelete {
        #[command(flatten)]
        conn: Conn,
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Where an instance with these requirements would land, creating nothing.
    Placement {
        #[command(flatten)]
        conn: ConnJson,
        /// A capability filter KEY:OP[:VALUE] (repeatable).
        #[arg(long = "requirement", value_name = "KEY:OP[:VALUE]")]
        requirements: Vec<RequirementArg>,
        #[command(flatten)]
        resources: ResourceArgs,
    },
    /// This zone's aggregate of its up hosts' capabilities.
    Capabilities(ConnJson),
    /// Run N simulated hosts that register with a zone and answer its agent calls over HTTP
    /// (admin credentials; runs until SIGINT/SIGTERM, leaving the hosts registered).
    AgentSim(AgentSimArgs),
    #[command(flatten)]
    Zones(zones::ZoneCommand),
    /// Start a small federation in this process on embedded defaults: a global zone, two
    /// regions and three data centres with simulated hosts; prints URLs, credentials and
    /// commands to try, and runs until Ctrl-C.
    Demo(crate::demo::DemoArgs),
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
    pub async fn client(&self) -> anyhow::Result<Client> {
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
        Command::AccountAdd { conn, name, role, client_id, client_ids, new_password } => {
            let role =
                Role::parse(&role).with_context(|| format!("--role must be admin, member or parent, not {role:?}"))?;
            let account = conn
                .client()
                .await?
                .account_create(&AccountCreate { username: name, password: new_password, role, client_id, client_ids })
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
                            a.client_id
                                .clone()
                                .or_else(|| a.client_ids.as_ref().map(|c| c.join(",")))
                                .unwrap_or_else(|| "-".into()),
                            a.created_at.clone(),
                        ]
                    })
                    .collect::<Vec<_>>();
                print_table(&["USERNAME", "ROLE", "CLIENTS", "CREATED"], &rows);
            }
        }
        Command::AccountDelete { conn, name } => {
            conn.client().await?.account_delete(&name).await?;
            println!("deleted {name}");
        }
        Command::HostList(c) => resources::host_list(c).await?,
        Command::HostShow { conn, id } => resources::host_show(conn, &id).await?,
        Command::HostDelete { conn, id } => resources::host_delete(conn, &id).await?,
        Command::InstanceCreate { conn, name, client_id, requirements, resources: r, count } => {
            resources::instance_create(conn, name, client_id, requirements, &r, count).await?
        }
        Command::InstanceList { conn, client_id } => resources::instance_list(conn, client_id).await?,
        Command::InstanceShow { conn, id } => resources::instance_show(conn, &id).await?,
        Command::InstanceAction { conn, id, action, host_id } => {
            resources::instance_action(conn, &id, action, host_id).await?
        }
        Command::InstanceDelete { conn, id } => resources::instance_delete(conn, &id).await?,
        Command::Placement { conn, requirements, resources: r } => resources::placement(conn, requirements, &r).await?,
        Command::Capabilities(c) => resources::capabilities(c).await?,
        Command::AgentSim(args) => run_agent_sim(args).await?,
        Command::Zones(z) => zones::run(z).await?,
        Command::Demo(args) => crate::demo::run(args).await?,
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
    let mut out = std::io::stdout().lock();
    let mut line = |cells: Vec<&str>| {
        use std::io::Write;
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        // A reader that stopped reading (`zone-node instance-list | head`) is not an error.
        if let Err(e) = writeln!(out, "{}", text.join("  ").trim_end()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
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

    #[test]
    fn instance_create_takes_repeated_requirements_and_resources() {
        let cli = Cli::try_parse_from([
            "zone-node",
            "instance-create",
            "vm-1",
            "--client-id",
            "acme",
            "--requirement",
            "free-disk:ge:100",
            "--requirement",
            "hypervisor:in:kvm,xen",
            "--vcpus",
            "4",
            "--json",
        ])
        .unwrap();
        match cli.command {
            Some(Command::InstanceCreate { conn, name, client_id, requirements, resources, count }) => {
                assert_eq!((name.as_str(), client_id.as_deref(), conn.json), ("vm-1", Some("acme"), true));
                let keys: Vec<&str> = requirements.iter().map(|r| r.0.key.as_str()).collect();
                assert_eq!(keys, ["free-disk", "hypervisor"]);
                assert_eq!((resources.vcpus, resources.memory_mb, resources.disk_gb), (4, 512, 10));
                assert_eq!(count, 1, "one unless asked");
            }
            other => panic!("parsed as {other:?}"),
        }
        let many = Cli::try_parse_from(["zone-node", "instance-create", "web", "--count", "1000"]).unwrap();
        assert!(matches!(many.command, Some(Command::InstanceCreate { count: 1000, .. })));
        for bad in ["0", "1001", "2.5", "-1"] {
            let parsed = Cli::try_parse_from(["zone-node", "instance-create", "web", "--count", bad]);
            assert!(parsed.is_err(), "--count {bad} is refused at parse time");
        }
        let bad = Cli::try_parse_from(["zone-node", "placement", "--requirement", "free-disk:like:1"]);
        assert!(bad.is_err(), "an unknown op is refused at parse time");
        let action =
            Cli::try_parse_from(["zone-node", "instance-action", "i-1", "migrate", "--host-id", "h-2"]).unwrap();
        assert!(matches!(action.command, Some(Command::InstanceAction { action: ActionArg::Migrate, .. })));
    }

    #[test]
    fn agent_sim_reads_the_design_flags() {
        let cli = Cli::try_parse_from([
            "zone-node",
            "agent-sim",
            "--zone-url",
            "http://127.0.0.1:9",
            "--hosts",
            "3",
            "--latency-ms",
            "5",
            "--fail-rate",
            "0.5",
            "--profile",
            "mixed",
            "--register-concurrency",
            "200",
        ])
        .unwrap();
        let Some(Command::AgentSim(args)) = cli.command else { panic!("not agent-sim") };
        assert_eq!((args.conn.url.as_str(), args.hosts, args.latency_ms), ("http://127.0.0.1:9", 3, 5));
        assert_eq!(args.profile, ::agent_sim::profile::Profile::Mixed);
        assert_eq!(args.register_concurrency, 200);
    }
}
