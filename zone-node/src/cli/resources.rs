//! Operator commands for a zone's resources: hosts, instances, placements and capabilities.
//!
//! Requirements are given as `--requirement KEY:OP[:VALUE]` (repeatable), e.g.
//! `free-disk:ge:100`, `hypervisor:in:kvm,xen`, `accept-migrations:exists`,
//! `can-run-windows:eq:true`. The op is the first `:`-separated part after the key that names an
//! op (keys may contain `:`; values may too). A value is a boolean (`true`/`false`), a number, or
//! else a string; JSON (`'"true"'`, `'[1,2]'`) says exactly what is meant.

use std::str::FromStr;

use clap::{Args, ValueEnum};
use serde_json::Value;

use api::{
    Aggregate, AggregateEntry, Capability, CapabilityValue, Host, Instance, InstanceAction, InstanceActionKind,
    InstanceCreate, Op, PlacementRequest, Requirement, Resources,
};

use super::{print_table, ConnJson};

/// Every op by its name, in the order they are looked for.
const OPS: [(&str, Op); 8] = [
    ("eq", Op::Eq),
    ("ne", Op::Ne),
    ("lt", Op::Lt),
    ("le", Op::Le),
    ("gt", Op::Gt),
    ("ge", Op::Ge),
    ("in", Op::In),
    ("exists", Op::Exists),
];

/// One `--requirement KEY:OP[:VALUE]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RequirementArg(pub Requirement);

impl FromStr for RequirementArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split(':').collect();
        let usage = || format!("{text:?}: use KEY:OP[:VALUE] with OP one of eq, ne, lt, le, gt, ge, in, exists");
        let (at, op) = parts
            .iter()
            .enumerate()
            .skip(1)
            .find_map(|(i, p)| OPS.iter().find(|(name, _)| name == p).map(|(_, op)| (i, *op)))
            .ok_or_else(usage)?;
        let key = parts[..at].join(":");
        let rest = &parts[at + 1..];
        let value = match (op, rest.is_empty()) {
            (Op::Exists, true) => None,
            (Op::Exists, false) => return Err(format!("{text:?}: exists takes no value")),
            (_, true) => return Err(format!("{text:?}: {} needs a value", op.as_str())),
            (Op::In, false) => Some(list(&rest.join(":"))),
            (_, false) => Some(scalar(&rest.join(":"))),
        };
        Ok(RequirementArg(Requirement { key, op, value }))
    }
}

/// A value as typed: JSON when it looks like JSON, else boolean, number or string.
fn scalar(text: &str) -> Value {
    if text.starts_with('"') || text.starts_with('[') {
        if let Ok(v) = serde_json::from_str(text) {
            return v;
        }
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => match text.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            Some(n) => Value::Number(n),
            None => Value::String(text.to_owned()),
        },
    }
}

/// An `in` list: a JSON array, or values separated by commas.
fn list(text: &str) -> Value {
    match scalar(text) {
        v @ Value::Array(_) => v,
        _ => Value::Array(text.split(',').map(scalar).collect()),
    }
}

/// `--vcpus`, `--memory-mb`, `--disk-gb`.
#[derive(Debug, Clone, Args)]
pub struct ResourceArgs {
    #[arg(long, default_value_t = 1)]
    pub vcpus: i64,
    #[arg(long, default_value_t = 512)]
    pub memory_mb: i64,
    #[arg(long, default_value_t = 10)]
    pub disk_gb: i64,
}

impl ResourceArgs {
    fn resources(&self) -> Resources {
        Resources { vcpus: self.vcpus, memory_mb: self.memory_mb, disk_gb: self.disk_gb }
    }
}

/// What `instance-action` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActionArg {
    Start,
    Stop,
    Reboot,
    Migrate,
}

impl From<ActionArg> for InstanceActionKind {
    fn from(a: ActionArg) -> InstanceActionKind {
        match a {
            ActionArg::Start => InstanceActionKind::Start,
            ActionArg::Stop => InstanceActionKind::Stop,
            ActionArg::Reboot => InstanceActionKind::Reboot,
            ActionArg::Migrate => InstanceActionKind::Migrate,
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn resources_text(r: &Resources) -> String {
    format!("{} vcpus, {} MB, {} GB", r.vcpus, r.memory_mb, r.disk_gb)
}

fn used_of(used: i64, total: i64) -> String {
    format!("{used}/{total}")
}

fn capability_text(c: &Capability) -> String {
    match &c.value {
        CapabilityValue::Bool(b) => b.to_string(),
        CapabilityValue::Float(f) => f.to_string(),
        CapabilityValue::String(s) => s.clone(),
    }
}

pub async fn host_list(ConnJson { conn, json }: ConnJson) -> anyhow::Result<()> {
    // Every page: a subtree may hold more hosts than one page.
    let list = conn.client().await?.all_hosts().await?;
    if json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .hosts
        .iter()
        .map(|h| {
            vec![
                h.id.clone(),
                h.name.clone(),
                h.state.clone(),
                h.zone_path.join("/"),
                used_of(h.used.vcpus, h.resources.vcpus),
                used_of(h.used.memory_mb, h.resources.memory_mb),
                used_of(h.used.disk_gb, h.resources.disk_gb),
                h.agent_url.clone(),
            ]
        })
        .collect();
    print_table(&["ID", "NAME", "STATE", "ZONE", "VCPUS", "MEMORY MB", "DISK GB", "AGENT"], &rows);
    if !list.unreachable_zones.is_empty() {
        eprintln!("zones that did not answer (their hosts are missing): {}", list.unreachable_zones.join(", "));
    }
    Ok(())
}

pub async fn host_show(ConnJson { conn, json }: ConnJson, id: &str) -> anyhow::Result<()> {
    let host: Host = conn.client().await?.host(id).await?;
    if json {
        return print_json(&host);
    }
    println!("host {} ({})  state {}  agent {}", host.name, host.id, host.state, host.agent_url);
    println!("capacity {}; used {}", resources_text(&host.resources), resources_text(&host.used));
    let rows: Vec<Vec<String>> = host
        .capabilities
        .iter()
        .map(|(k, c)| vec![k.clone(), c.kind.as_str().to_owned(), capability_text(c)])
        .collect();
    print_table(&["CAPABILITY", "TYPE", "VALUE"], &rows);
    Ok(())
}

pub async fn host_delete(conn: super::Conn, id: &str) -> anyhow::Result<()> {
    conn.client().await?.host_delete(id).await?;
    println!("deleted host {id}");
    Ok(())
}

fn print_instances(instances: &[Instance]) {
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.name.clone(),
                i.client_id.clone(),
                i.state.clone(),
                i.zone_path.join("/"),
                i.host_id.clone().unwrap_or_else(|| "-".into()),
                format!("{}/{}/{}", i.resources.vcpus, i.resources.memory_mb, i.resources.disk_gb),
                i.error_reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["ID", "NAME", "CLIENT", "STATE", "ZONE", "HOST", "VCPUS/MB/GB", "ERROR"], &rows);
}

fn print_instance(i: &Instance, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(i);
    }
    print_instances(std::slice::from_ref(i));
    Ok(())
}

pub async fn instance_create(
    ConnJson { conn, json }: ConnJson,
    name: String,
    client_id: Option<String>,
    requirements: Vec<RequirementArg>,
    resources: &ResourceArgs,
    count: u32,
) -> anyhow::Result<()> {
    let req = InstanceCreate {
        name,
        client_id,
        requirements: requirements.into_iter().map(|r| r.0).collect(),
        resources: resources.resources(),
        count: (count > 1).then_some(count),
    };
    let client = conn.client().await?;
    if !req.is_batch() {
        return print_instance(&client.instance_create(&req).await?, json);
    }
    let batch = client.instance_create_batch(&req).await?;
    if json {
        return print_json(&batch);
    }
    print_instances(&batch.instances);
    // Placement is all or nothing, builds are not: say which failed, as a single create would.
    let failed = batch.instances.iter().filter(|i| i.state == "error").count();
    anyhow::ensure!(failed == 0, "{failed} of the {} instances failed to build (state error)", batch.instances.len());
    Ok(())
}

/// Lists every instance the caller sees (all pages), of one client when given.
pub async fn instance_list(ConnJson { conn, json }: ConnJson, client_id: Option<String>) -> anyhow::Result<()> {
    let client = conn.client().await?;
    let query = match &client_id {
        Some(c) => format!("limit=1000&client_id={c}"),
        None => "limit=1000".to_owned(),
    };
    let api::InstanceList { instances, unreachable_zones: unreachable, .. } = client.all_instances(&query).await?;
    if json {
        return print_json(&api::InstanceList { instances, unreachable_zones: unreachable, next_marker: None });
    }
    print_instances(&instances);
    if !unreachable.is_empty() {
        eprintln!("zones that did not answer (their instances are missing): {}", unreachable.join(", "));
    }
    Ok(())
}

pub async fn instance_show(ConnJson { conn, json }: ConnJson, id: &str) -> anyhow::Result<()> {
    print_instance(&conn.client().await?.instance(id).await?, json)
}

pub async fn instance_action(
    ConnJson { conn, json }: ConnJson,
    id: &str,
    action: ActionArg,
    host_id: Option<String>,
) -> anyhow::Result<()> {
    let req = InstanceAction { action: action.into(), host_id };
    print_instance(&conn.client().await?.instance_action(id, &req).await?, json)
}

pub async fn instance_delete(conn: super::Conn, id: &str) -> anyhow::Result<()> {
    conn.client().await?.instance_delete(id).await?;
    println!("deleted instance {id}");
    Ok(())
}

pub async fn placement(
    ConnJson { conn, json }: ConnJson,
    requirements: Vec<RequirementArg>,
    resources: &ResourceArgs,
) -> anyhow::Result<()> {
    let req = PlacementRequest {
        requirements: requirements.into_iter().map(|r| r.0).collect(),
        resources: resources.resources(),
    };
    let placement = conn.client().await?.placement(&req).await?;
    if json {
        return print_json(&placement);
    }
    println!("host {}  zone path {}", placement.host_id, placement.zone_path.join(" / "));
    Ok(())
}

pub async fn capabilities(ConnJson { conn, json }: ConnJson) -> anyhow::Result<()> {
    let aggregate: Aggregate = conn.client().await?.capabilities().await?;
    if json {
        return print_json(&aggregate);
    }
    let rows: Vec<Vec<String>> = aggregate
        .iter()
        .map(|(key, entry)| {
            let (kind, summary, count) = match entry {
                AggregateEntry::Float { min, max, sum, count } => {
                    ("float", format!("min {min}  max {max}  sum {sum}"), count)
                }
                AggregateEntry::Bool { any, all, count } => ("bool", format!("any {any}  all {all}"), count),
                AggregateEntry::String { values, count, truncated } => {
                    let more = if *truncated { ", ..." } else { "" };
                    ("string", format!("{}{more}", values.join(", ")), count)
                }
            };
            vec![key.clone(), kind.to_owned(), count.to_string(), summary]
        })
        .collect();
    print_table(&["CAPABILITY", "TYPE", "HOSTS", "VALUES"], &rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Requirement {
        text.parse::<RequirementArg>().unwrap_or_else(|e| panic!("{e}")).0
    }

    #[test]
    fn requirements_parse_from_the_command_line() {
        let r = parse("free-disk:ge:100");
        assert_eq!((r.key.as_str(), r.op, r.value), ("free-disk", Op::Ge, Some(json!(100.0))));
        assert_eq!(parse("hypervisor:in:kvm,xen").value, Some(json!(["kvm", "xen"])));
        assert_eq!(parse("hypervisor:in:[\"kvm\"]").value, Some(json!(["kvm"])));
        assert_eq!(parse("accept-migrations:exists").value, None);
        assert_eq!(parse("can-run-windows:eq:true").value, Some(json!(true)));
        assert_eq!(parse("os:ne:\"true\"").value, Some(json!("true")));
        // Keys and values may contain ':'.
        let r = parse("zone:az:eq:http://x:1");
        assert_eq!((r.key.as_str(), r.value), ("zone:az", Some(json!("http://x:1"))));
        for bad in ["free-disk", "free-disk:like:1", "gpu:exists:1", "free-disk:ge"] {
            let parsed = bad.parse::<RequirementArg>();
            assert!(parsed.is_err(), "{bad} parsed as {parsed:?}");
        }
    }
}
