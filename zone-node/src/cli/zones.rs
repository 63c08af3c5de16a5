//! The operator commands for child zones (`zone-add`, `zone-list`, `zone-details`,
//! `zone-update`, `zone-delete`) and the lowest-zone lookup (`client-zone`), in the style of
//! Nova's zone commands. Zones are named by id or by name.

use anyhow::Context;
use clap::{Args, Subcommand};

use api::{AggregateEntry, ChildZone, Client, ZoneCreate, ZoneUpdate};

use super::{print_table, Conn};

#[derive(Debug, Subcommand)]
pub enum ZoneCommand {
    /// Register a child zone (admin): its API URL and an admin account of it.
    ZoneAdd(ZoneAdd),
    /// List this zone's child zones (admin).
    ZoneList(ZoneListArgs),
    /// Show one child zone with its capabilities (admin).
    ZoneDetails(ZoneRef),
    /// Change a child zone (admin); absent options stay as they are.
    ZoneUpdate(ZoneUpdateArgs),
    /// Remove a child zone (admin).
    ZoneDelete(ZoneRef),
    /// The lowest zone that manages all of a client's instances.
    ClientZone {
        #[command(flatten)]
        conn: Conn,
        #[arg(value_name = "CLIENT_ID")]
        client_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ZoneAdd {
    #[command(flatten)]
    pub conn: Conn,
    /// The child zone's API URL.
    #[arg(value_name = "API_URL")]
    pub api_url: String,
    /// An admin account of the child zone.
    #[arg(value_name = "USERNAME")]
    pub child_username: String,
    /// Its password (or set ZONE_CHILD_PASSWORD, which keeps it out of `ps`).
    #[arg(value_name = "PASSWORD", env = "ZONE_CHILD_PASSWORD", hide_env_values = true)]
    pub child_password: String,
    /// The child's name here (default: its own name).
    #[arg(long)]
    pub name: Option<String>,
    /// Routing rank = offset + scale × score.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub weight_offset: f64,
    #[arg(long, default_value_t = 1.0)]
    pub weight_scale: f64,
    /// Allow a plain http:// URL off loopback (the child's password then crosses the network in
    /// clear); refused without it.
    #[arg(long)]
    pub insecure_http: bool,
    /// Register it disabled (polled, but no new placements).
    #[arg(long)]
    pub disabled: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ZoneListArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// Also show each child's capabilities.
    #[arg(long)]
    pub detail: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ZoneRef {
    #[command(flatten)]
    pub conn: Conn,
    /// The child zone's id or name.
    #[arg(value_name = "ZONE")]
    pub zone: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ZoneUpdateArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The child zone's id or name.
    #[arg(value_name = "ZONE")]
    pub zone: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub api_url: Option<String>,
    /// A new admin account of the child.
    #[arg(long)]
    pub child_username: Option<String>,
    /// Its password (or ZONE_CHILD_PASSWORD).
    #[arg(long, env = "ZONE_CHILD_PASSWORD", hide_env_values = true)]
    pub child_password: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub weight_offset: Option<f64>,
    #[arg(long)]
    pub weight_scale: Option<f64>,
    /// Allow a new plain http:// URL off loopback (see zone-add).
    #[arg(long)]
    pub insecure_http: bool,
    /// Skip it for new placements (still polled).
    #[arg(long, conflicts_with = "enable")]
    pub disable: bool,
    #[arg(long)]
    pub enable: bool,
    #[arg(long)]
    pub json: bool,
}

/// A child zone's id, given its id or name.
async fn resolve(client: &Client, zone: &str) -> anyhow::Result<String> {
    if uuid::Uuid::parse_str(zone).is_ok() {
        return Ok(zone.to_owned());
    }
    let list = client.zones(false).await?;
    list.zones
        .into_iter()
        .find(|z| z.name == zone)
        .map(|z| z.id)
        .with_context(|| format!("no child zone is named {zone:?} (zone-list shows them)"))
}

fn weights(z: &ChildZone) -> String {
    format!("{} + {}×", z.weight_offset, z.weight_scale)
}

fn print_zones(zones: &[ChildZone]) {
    let rows: Vec<Vec<String>> = zones
        .iter()
        .map(|z| {
            vec![
                z.name.clone(),
                z.id.clone(),
                z.status.as_str().to_owned(),
                z.api_url.clone(),
                z.last_seen.clone().unwrap_or_else(|| "never".into()),
                weights(z),
                z.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(&["NAME", "ID", "STATUS", "API", "LAST SEEN", "WEIGHT", "LAST ERROR"], &rows);
}

/// A one-line summary of an aggregate entry.
pub fn summary(e: &AggregateEntry) -> (String, String) {
    match e {
        AggregateEntry::Float { min, max, sum, count } => {
            ("float".into(), format!("min {min}  max {max}  sum {sum}  ({count} hosts)"))
        }
        AggregateEntry::Bool { any, all, count } => ("bool".into(), format!("any {any}  all {all}  ({count} hosts)")),
        AggregateEntry::String { values, count, truncated } => {
            let more = if *truncated { ", …" } else { "" };
            ("string".into(), format!("{}{more}  ({count} hosts)", values.join(", ")))
        }
    }
}

fn print_zone(z: &ChildZone) {
    let lines = [
        ("name", z.name.clone()),
        ("id", z.id.clone()),
        ("status", z.status.as_str().to_owned()),
        ("disabled", z.disabled.to_string()),
        (
            "api_url",
            if z.insecure_http {
                format!("{}  (insecure: plain HTTP off loopback)", z.api_url)
            } else {
                z.api_url.clone()
            },
        ),
        ("last_seen", z.last_seen.clone().unwrap_or_else(|| "never".into())),
        ("last_error", z.last_error.clone().unwrap_or_else(|| "-".into())),
        ("weight", weights(z)),
        ("generation", z.generation.to_string()),
        ("failed polls in a row", z.consecutive_failures.to_string()),
    ];
    let rows: Vec<Vec<String>> = lines.into_iter().map(|(k, v)| vec![k.to_owned(), v]).collect();
    print_table(&["FIELD", "VALUE"], &rows);
    if let Some(caps) = &z.capabilities {
        println!();
        let rows: Vec<Vec<String>> = caps
            .iter()
            .map(|(k, e)| {
                let (kind, text) = summary(e);
                vec![k.clone(), kind, text]
            })
            .collect();
        print_table(&["CAPABILITY", "TYPE", "AGGREGATE"], &rows);
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Runs a zone command.
pub async fn run(command: ZoneCommand) -> anyhow::Result<()> {
    match command {
        ZoneCommand::ZoneAdd(a) => {
            let client = a.conn.client().await?;
            let req = ZoneCreate {
                name: a.name,
                api_url: a.api_url,
                username: a.child_username,
                password: a.child_password,
                weight_offset: a.weight_offset,
                weight_scale: a.weight_scale,
                disabled: a.disabled,
                insecure_http: a.insecure_http,
            };
            let zone = client.zone_create(&req).await?;
            if a.json {
                print_json(&zone)?;
            } else {
                println!("added child zone {} ({}), {}", zone.name, zone.id, zone.status.as_str());
            }
        }
        ZoneCommand::ZoneList(a) => {
            let list = a.conn.client().await?.zones(a.detail).await?;
            if a.json {
                print_json(&list)?;
            } else if a.detail {
                for (i, z) in list.zones.iter().enumerate() {
                    if i > 0 {
                        println!();
                    }
                    print_zone(z);
                }
            } else {
                print_zones(&list.zones);
            }
        }
        ZoneCommand::ZoneDetails(r) => {
            let client = r.conn.client().await?;
            let id = resolve(&client, &r.zone).await?;
            let zone = client.zone_get(&id, true).await?;
            if r.json {
                print_json(&zone)?;
            } else {
                print_zone(&zone);
            }
        }
        ZoneCommand::ZoneUpdate(u) => {
            let client = u.conn.client().await?;
            let id = resolve(&client, &u.zone).await?;
            let disabled = match (u.disable, u.enable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let req = ZoneUpdate {
                name: u.name,
                api_url: u.api_url,
                username: u.child_username,
                password: u.child_password,
                weight_offset: u.weight_offset,
                weight_scale: u.weight_scale,
                disabled,
                insecure_http: u.insecure_http,
            };
            let zone = client.zone_update(&id, &req).await?;
            if u.json {
                print_json(&zone)?;
            } else {
                println!("updated child zone {} ({}), {}", zone.name, zone.id, zone.status.as_str());
            }
        }
        ZoneCommand::ZoneDelete(r) => {
            let client = r.conn.client().await?;
            let id = resolve(&client, &r.zone).await?;
            client.zone_delete(&id).await?;
            println!("deleted child zone {}", r.zone);
        }
        ZoneCommand::ClientZone { conn, client_id, json } => {
            let answer = conn.client().await?.lowest_zone(&client_id).await?;
            match answer {
                Some(z) if json => print_json(&z)?,
                Some(z) => {
                    println!("{}  {}  ({})", z.zone_name, z.api_url, z.path.join(" > "));
                    if !z.unreachable_zones.is_empty() {
                        println!("(not asked, did not answer: {})", z.unreachable_zones.join(", "));
                    }
                }
                None => anyhow::bail!("client {client_id} is not managed by this zone or any zone below it"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    use super::*;

    #[test]
    fn zone_add_takes_the_child_credentials_beside_the_login_options() {
        let cli = Cli::try_parse_from([
            "zone-node",
            "zone-add",
            "http://dc1:8080",
            "dc1-admin",
            "child-secret",
            "--name",
            "dc1",
            "--weight-offset",
            "-1.5",
            "--username",
            "ops",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Zones(ZoneCommand::ZoneAdd(a))) => {
                assert_eq!((a.api_url.as_str(), a.child_username.as_str()), ("http://dc1:8080", "dc1-admin"));
                assert_eq!(a.child_password, "child-secret");
                assert_eq!((a.weight_offset, a.weight_scale), (-1.5, 1.0));
                assert_eq!(a.conn.username, "ops", "the login username is separate");
            }
            other => panic!("parsed as {other:?}"),
        }
        let u = Cli::try_parse_from(["zone-node", "zone-update", "dc1", "--disable", "--enable"]);
        assert!(u.is_err(), "disable and enable exclude each other");
    }
}
