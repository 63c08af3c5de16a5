//! The bus protocol of a zone: every message kind and every event kind on the CloudBus, each a type
//! that carries its wire name, its body and (for requests) its reply.
//!
//! This is the one place a kind's text is written. A node sends `M` with the `type` property
//! `M::KIND` to the service queue of `M::SERVICE` and decodes the answer as `M::Reply`; a service
//! decodes what it received with its request enum ([`InstanceRequest`], ...). A service in another
//! language reads the same names in docs/wire-format.md.
//!
//! Bodies are JSON. Every message about one resource carries the resource's id in the
//! `x-resource-id` header, not in the body (the bus routes on it); the body holds the rest.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::agent::HostReport;
use crate::error::{CodedError, ErrorCode};
use crate::types::{Instance, InstanceAction, ProbeRequest, ProbeResponse, Requirement, Resources};

/// Service names: the `<service>` of `<prefix>.message.<service>.<node-uuid>`.
pub mod service {
    /// Instances: create, action, delete, recover (on the instance's ring owner).
    pub const INSTANCE: &str = "instance";
    /// Hosts' reports (on the host's ring owner).
    pub const HOST: &str = "host";
    /// The diagnostic probe (on the resource's ring owner).
    pub const PROBE: &str = "probe";
    /// The shared API queue every node consumes; answers what concerns no resource.
    pub const PORTAL: &str = "api.portal";
}

/// A request on the bus, in the style of garage's `Rpc`: the type is the body, and says where it
/// goes and what comes back.
pub trait Rpc: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The AMQP `type` of the message.
    const KIND: &'static str;
    /// The service that handles it.
    const SERVICE: &'static str;
    /// What a successful reply's body decodes to (an error reply is an [`crate::ErrorBody`]).
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

/// An event on `<prefix>.event` (routing key = `KIND`). Events tell watchers what happened;
/// nothing in a zone depends on receiving them.
pub trait BusEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: &'static str;
}

/// The body `{}`: a request or reply with nothing to say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

// ------------------------------------------------------------------------------------------------
// instance service

/// `instance.create`: create the instance whose id is `x-resource-id` (chosen by the caller, so a
/// redelivered create answers what the first one made).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateTask {
    pub name: String,
    pub client_id: String,
    #[serde(default)]
    pub requirements: Vec<Requirement>,
    #[serde(default)]
    pub resources: Resources,
}

impl Rpc for CreateTask {
    const KIND: &'static str = "instance.create";
    const SERVICE: &'static str = service::INSTANCE;
    type Reply = Instance;
}

/// `instance.action`: the REST action body, as is.
impl Rpc for InstanceAction {
    const KIND: &'static str = "instance.action";
    const SERVICE: &'static str = service::INSTANCE;
    type Reply = Instance;
}

/// `instance.delete`, body `{}`, reply `{}` once the host has deleted it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct InstanceDelete {}

impl Rpc for InstanceDelete {
    const KIND: &'static str = "instance.delete";
    const SERVICE: &'static str = service::INSTANCE;
    type Reply = Empty;
}

/// `instance.recover`: finish a task whose node left the zone, or (with `from`) one that node
/// `from` hands over. A multi-create's coordinator inserts its instances with their create task
/// under its own id and hands each to the instance's ring owner this way; a coordinator that dies
/// first leaves them to the owners' recovery, like any task of a node that left.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct InstanceRecover {
    /// The node handing its task over. The task is taken over only while that node still holds
    /// it; without `from`, only when its node is no longer live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Uuid>,
}

/// The reply to `instance.recover`: the instance, or `{}` when it no longer exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Recovered {
    Instance(Box<Instance>),
    Gone(Empty),
}

impl Rpc for InstanceRecover {
    const KIND: &'static str = "instance.recover";
    const SERVICE: &'static str = service::INSTANCE;
    type Reply = Recovered;
}

/// What the instance service is asked.
#[derive(Debug, Clone)]
pub enum InstanceRequest {
    Create(CreateTask),
    Action(InstanceAction),
    Delete,
    Recover(InstanceRecover),
}

impl InstanceRequest {
    pub fn decode(kind: &str, body: &[u8]) -> Result<InstanceRequest, DecodeError> {
        Ok(match kind {
            CreateTask::KIND => InstanceRequest::Create(decode::<CreateTask>(body)?),
            InstanceAction::KIND => InstanceRequest::Action(decode::<InstanceAction>(body)?),
            InstanceDelete::KIND => InstanceRequest::Delete,
            InstanceRecover::KIND => InstanceRequest::Recover(decode::<InstanceRecover>(body)?),
            other => return Err(DecodeError::unknown(service::INSTANCE, other)),
        })
    }
}

// ------------------------------------------------------------------------------------------------
// host service

/// `host.report`: a host's presence and changed capabilities (`x-resource-id` = host id).
impl Rpc for HostReport {
    const KIND: &'static str = "host.report";
    const SERVICE: &'static str = service::HOST;
    type Reply = Empty;
}

/// What the host service is asked.
#[derive(Debug, Clone)]
pub enum HostRequest {
    Report(HostReport),
}

impl HostRequest {
    pub fn decode(kind: &str, body: &[u8]) -> Result<HostRequest, DecodeError> {
        match kind {
            HostReport::KIND => Ok(HostRequest::Report(decode::<HostReport>(body)?)),
            other => Err(DecodeError::unknown(service::HOST, other)),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// probe service

/// `probe.run`: hold the resource `hold_ms` and count concurrent holders in the database.
impl Rpc for ProbeRequest {
    const KIND: &'static str = "probe.run";
    const SERVICE: &'static str = service::PROBE;
    type Reply = ProbeResponse;
}

/// What the probe service is asked.
#[derive(Debug, Clone)]
pub enum ProbeServiceRequest {
    Run(ProbeRequest),
}

impl ProbeServiceRequest {
    pub fn decode(kind: &str, body: &[u8]) -> Result<ProbeServiceRequest, DecodeError> {
        match kind {
            ProbeRequest::KIND => Ok(ProbeServiceRequest::Run(decode::<ProbeRequest>(body)?)),
            other => Err(DecodeError::unknown(service::PROBE, other)),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// portal

/// `zone.get`, body `{}`: the zone as the answering node sees it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ZoneGet {}

/// The reply to `zone.get`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortalZone {
    pub id: Uuid,
    pub name: String,
    pub api_url: String,
    pub node_id: Uuid,
    pub ring_epoch: i64,
    pub nodes: Vec<PortalNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortalNode {
    pub id: Uuid,
    pub state: String,
}

impl Rpc for ZoneGet {
    const KIND: &'static str = "zone.get";
    const SERVICE: &'static str = service::PORTAL;
    type Reply = PortalZone;
}

/// `echo`: any JSON body, answered as is (a liveness check for bus clients).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Echo(pub serde_json::Value);

impl Rpc for Echo {
    const KIND: &'static str = "echo";
    const SERVICE: &'static str = service::PORTAL;
    type Reply = serde_json::Value;
}

/// What the portal answers itself (messages without `x-resource-id`).
#[derive(Debug, Clone)]
pub enum PortalRequest {
    ZoneGet,
    Echo,
}

impl PortalRequest {
    /// Echo's body is answered byte for byte, so it is not decoded here.
    pub fn decode(kind: &str) -> Result<PortalRequest, DecodeError> {
        match kind {
            ZoneGet::KIND => Ok(PortalRequest::ZoneGet),
            Echo::KIND => Ok(PortalRequest::Echo),
            other => Err(DecodeError::unknown(service::PORTAL, other)),
        }
    }
}

/// The service a message about a resource goes to: the part of its kind before the first dot
/// (`probe.run` → `probe`), as the portal routes it. `None` when the kind names no service.
pub fn service_of(kind: &str) -> Option<&str> {
    kind.split_once('.').map(|(service, _)| service).filter(|s| !s.is_empty())
}

// ------------------------------------------------------------------------------------------------
// events

/// `instance.created`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceCreated {
    pub id: Uuid,
    pub client_id: String,
    pub host_id: Option<Uuid>,
    pub state: String,
}

impl BusEvent for InstanceCreated {
    const KIND: &'static str = "instance.created";
}

/// `instance.state_changed`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceStateChanged {
    pub id: Uuid,
    pub client_id: String,
    pub from: String,
    pub to: String,
    pub host_id: Option<Uuid>,
    pub error_reason: Option<String>,
    pub version: i64,
}

impl BusEvent for InstanceStateChanged {
    const KIND: &'static str = "instance.state_changed";
}

/// `instance.deleted`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceDeleted {
    pub id: Uuid,
    pub client_id: String,
    pub host_id: Option<Uuid>,
}

impl BusEvent for InstanceDeleted {
    const KIND: &'static str = "instance.deleted";
}

/// `host.up`: a host that was down reported again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostUp {
    pub id: Uuid,
}

impl BusEvent for HostUp {
    const KIND: &'static str = "host.up";
}

/// `host.down`: a host missed `missed_reports` reports in a row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostDown {
    pub id: Uuid,
    pub missed_reports: u64,
}

impl BusEvent for HostDown {
    const KIND: &'static str = "host.down";
}

/// `zone.children_changed`, body `{}`: a node changed a child-zone row; every node re-reads them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ChildrenChanged {}

impl BusEvent for ChildrenChanged {
    const KIND: &'static str = "zone.children_changed";
}

/// `zone.generation_changed`: a node committed a change that moved the zone generation (to
/// `generation`); the other nodes answer the parents' watches they hold (`GET /v1/zone/watch`)
/// without reading the database in a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationChanged {
    pub generation: i64,
}

impl BusEvent for GenerationChanged {
    const KIND: &'static str = "zone.generation_changed";
}

/// `auth.tokens_revoked`: a node deleted tokens (a token revoked by its holder, an account
/// deleted); every node forgets the tokens it verified recently, so the next request with a
/// revoked token asks the database and gets 401 (a lost event: within the token cache's 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokensRevoked {}

impl BusEvent for TokensRevoked {
    const KIND: &'static str = "auth.tokens_revoked";
}

/// The membership events `node.joined`, `node.alive`, `node.leaving`, `node.left`,
/// `node.evicted`: one body, the kind says what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString, strum::EnumIter)]
pub enum NodeEventKind {
    #[strum(serialize = "node.joined")]
    Joined,
    #[strum(serialize = "node.alive")]
    Alive,
    #[strum(serialize = "node.leaving")]
    Leaving,
    #[strum(serialize = "node.left")]
    Left,
    #[strum(serialize = "node.evicted")]
    Evicted,
}

impl NodeEventKind {
    pub fn kind(self) -> &'static str {
        self.into()
    }

    /// The membership event this kind names, if it names one.
    pub fn of(kind: &str) -> Option<NodeEventKind> {
        kind.parse().ok()
    }
}

/// The body of every membership event. `api_url` is set when a node speaks of itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEvent {
    pub node_id: Uuid,
    pub api_url: Option<String>,
}

// ------------------------------------------------------------------------------------------------
// decoding

/// A message a service cannot take: a kind it does not handle, or a body of the wrong shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("the {service} service does not handle {kind:?}")]
    UnknownKind { service: &'static str, kind: String },
    #[error("{kind}: the body does not match: {reason}")]
    Body { kind: &'static str, reason: String },
}

impl DecodeError {
    fn unknown(service: &'static str, kind: &str) -> DecodeError {
        DecodeError::UnknownKind { service, kind: kind.to_owned() }
    }
}

impl CodedError for DecodeError {
    fn code(&self) -> ErrorCode {
        match self {
            DecodeError::UnknownKind { .. } => ErrorCode::NoSuchService,
            DecodeError::Body { .. } => ErrorCode::InvalidBody,
        }
    }

    /// Both are the sender's to fix, so the message is shown as is.
    fn public_message(&self) -> String {
        self.to_string()
    }
}

/// Decodes the body of an `R` (an empty body reads as `{}`, as bus clients may send none).
pub fn decode<R: Rpc>(body: &[u8]) -> Result<R, DecodeError> {
    let body = if body.is_empty() { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| DecodeError::Body { kind: R::KIND, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn every_request_kind_decodes_to_its_own_variant_and_names_its_service() {
        let create = serde_json::to_vec(&serde_json::json!({"name": "a", "client_id": "c"})).unwrap();
        assert!(matches!(InstanceRequest::decode(CreateTask::KIND, &create), Ok(InstanceRequest::Create(_))));
        let action = br#"{"action":"stop"}"#;
        assert!(matches!(InstanceRequest::decode(InstanceAction::KIND, action), Ok(InstanceRequest::Action(_))));
        assert!(matches!(InstanceRequest::decode(InstanceDelete::KIND, b"{}"), Ok(InstanceRequest::Delete)));
        assert!(matches!(
            InstanceRequest::decode(InstanceRecover::KIND, b""),
            Ok(InstanceRequest::Recover(InstanceRecover { from: None }))
        ));
        let handed = br#"{"from":"00000000-0000-0000-0000-000000000001"}"#;
        assert!(matches!(
            InstanceRequest::decode(InstanceRecover::KIND, handed),
            Ok(InstanceRequest::Recover(InstanceRecover { from: Some(_) }))
        ));
        assert!(matches!(HostRequest::decode(HostReport::KIND, b"{}"), Ok(HostRequest::Report(_))));
        assert!(matches!(ProbeServiceRequest::decode(ProbeRequest::KIND, b"{}"), Ok(ProbeServiceRequest::Run(_))));
        assert!(matches!(PortalRequest::decode(ZoneGet::KIND), Ok(PortalRequest::ZoneGet)));
        for (kind, service) in [
            (CreateTask::KIND, CreateTask::SERVICE),
            (InstanceAction::KIND, InstanceAction::SERVICE),
            (InstanceDelete::KIND, InstanceDelete::SERVICE),
            (InstanceRecover::KIND, InstanceRecover::SERVICE),
            (HostReport::KIND, HostReport::SERVICE),
            (ProbeRequest::KIND, ProbeRequest::SERVICE),
        ] {
            assert_eq!(service_of(kind), Some(service), "{kind}");
        }
    }

    #[test]
    fn a_wrong_kind_or_body_is_a_coded_error() {
        let e = InstanceRequest::decode("instance.explode", b"{}").unwrap_err();
        assert_eq!(e.code(), ErrorCode::NoSuchService);
        assert!(e.public_message().contains("instance.explode"), "{e}");
        let e = InstanceRequest::decode(CreateTask::KIND, b"{\"name\": 1}").unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidBody);
        assert!(HostRequest::decode(InstanceDelete::KIND, b"{}").is_err());
        assert_eq!(service_of("echo"), None);
        assert_eq!(service_of(".x"), None);
    }

    #[test]
    fn node_event_kinds_round_trip() {
        for kind in NodeEventKind::iter() {
            assert!(kind.kind().starts_with("node."));
            assert_eq!(NodeEventKind::of(kind.kind()), Some(kind));
        }
        assert_eq!(NodeEventKind::of("zone.children_changed"), None);
    }

    #[test]
    fn event_bodies_keep_their_wire_shape() {
        let id = Uuid::nil();
        let body = serde_json::to_value(HostDown { id, missed_reports: 3 }).unwrap();
        assert_eq!(body, serde_json::json!({"id": id, "missed_reports": 3}));
        assert_eq!(serde_json::to_string(&ChildrenChanged {}).unwrap(), "{}");
        assert_eq!(serde_json::to_string(&Recovered::Gone(Empty {})).unwrap(), "{}");
    }
}
