//! [`InProcess`]: the `federation` crate's [`ChildTransport`] without the network. A call reaches
//! the child's gateway (a DC or region) or huddle model directly, doing on the way what the child's
//! HTTP edge does in zone-node: narrow the parent's admin account to the stated caller, admit the
//! zone path, and answer `GET /v1/zone` and `GET /v1/zone/watch` with the same view and the same
//! `ETag` (SHA-256 over the JSON of what a parent records, zone-node/src/http/zone.rs). With
//! `json` set, every answer is also encoded to JSON and decoded again, as it would cross the wire.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use api::federation::WATCH_MAX_TIMEOUT_MS;
use api::{
    Aggregate, Answer, ChildSummary, Conditional, ErrorCode, HostList, Instance, InstanceAction, InstanceCreate,
    LowestZone, Placement, PlacementRequest, SubtreeEntry, SubtreeView, ZoneInfo, ZoneWatch,
};
use federation::identity::{effective, Stated};
use federation::{Child, ChildTransport, Credentials, FedError, Gateway, Hop, ListQuery, Principal, RequestContext};

use crate::hub::Hub;
use crate::huddle::Huddle;
use crate::shape::client_index;

/// A zone a parent can reach.
#[derive(Clone)]
pub enum Node {
    /// Global, a region or a DC: a real gateway over a zone without hosts.
    Hub {
        gateway: Arc<Gateway>,
        hub: Arc<Hub>,
    },
    Huddle(Arc<Huddle>),
}

/// What a parent asks, counted.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Zone,
    Watch,
    Lookup,
    Placement,
    Create,
}

const OPS: usize = 5;

#[derive(Default)]
pub struct InProcess {
    nodes: RwLock<HashMap<String, Node>>,
    json: AtomicBool,
    calls: [AtomicU64; OPS],
}

/// What a parent reads of a zone (zone-node's `ParentView`), and so what its `ETag` covers.
struct ParentView {
    id: String,
    name: String,
    api_url: String,
    generation: i64,
    own: Aggregate,
    capabilities: Aggregate,
    children: Vec<ChildSummary>,
    subtree: Option<Vec<SubtreeEntry>>,
}

impl ParentView {
    /// zone-node's weak `ETag`, from the same definition ([`federation::etag::weak`]).
    fn etag(&self, view: Option<SubtreeView>) -> String {
        federation::etag::weak(&federation::etag::ViewParts {
            zone_id: &self.id,
            view,
            generation: self.generation,
            own: &self.own,
            capabilities: &self.capabilities,
            children: &self.children,
            subtree: self.subtree.as_deref(),
        })
    }

    fn into_info(self) -> ZoneInfo {
        ZoneInfo {
            id: self.id,
            name: self.name,
            api_url: self.api_url,
            node_id: "sim".into(),
            nodes: Vec::new(),
            capabilities: self.capabilities,
            own_capabilities: Some(self.own),
            children: self.children,
            generation: self.generation,
            ring_epoch: 1,
            subtree: self.subtree,
        }
    }
}

impl InProcess {
    pub fn add(&self, id: String, node: Node) {
        self.nodes.write().unwrap_or_else(|e| e.into_inner()).insert(id, node);
    }

    /// Encode every answer to JSON and decode it again (what crossing HTTP costs besides the network).
    pub fn set_json(&self, on: bool) {
        self.json.store(on, Ordering::Relaxed);
    }

    pub fn calls(&self, op: Op) -> u64 {
        self.calls[op as usize].load(Ordering::Relaxed)
    }

    fn node(&self, child: &Child) -> Result<Node, FedError> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes.get(&child.id).cloned().ok_or_else(|| FedError::Unavailable {
            zone: child.name.clone(),
            reason: "no such zone in the model".into(),
        })
    }

    /// What the child's HTTP edge does first: the caller as the parent states it, narrowing the
    /// parent's admin account, and the zone path admitted.
    fn enter(&self, child: &Child, hop: &Hop<'_>, op: Op) -> Result<(Node, RequestContext), FedError> {
        self.calls[op as usize].fetch_add(1, Ordering::Relaxed);
        let node = self.node(child)?;
        let headers = hop.caller.headers(hop.origin);
        let stated = Stated::from_headers(|n| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()))?;
        let account = Principal::admin("parent");
        let ctx = RequestContext { caller: effective(account, stated)?, path: hop.path.clone() };
        let admitted = match &node {
            Node::Hub { gateway, .. } => gateway.admit(&ctx.path),
            Node::Huddle(h) => ctx.path.admit(&h.id, api::federation::DEFAULT_HOP_LIMIT),
        };
        admitted.map_err(wire_error)?;
        Ok((node, ctx))
    }

    /// An answer as the parent would decode it.
    fn wire<T: serde::Serialize + serde::de::DeserializeOwned>(&self, value: T) -> Result<T, FedError> {
        if !self.json.load(Ordering::Relaxed) {
            return Ok(value);
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| FedError::internal(format!("encode: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| FedError::internal(format!("decode: {e}")))
    }

    async fn view(node: &Node, ctx: &RequestContext, subtree: Option<SubtreeView>) -> Result<ParentView, FedError> {
        match node {
            Node::Hub { gateway, hub } => {
                // The generation first: an answer is never newer than the generation it reports.
                let generation = hub.generation();
                let (own, capabilities) = gateway.aggregates().await?;
                let subtree = match subtree {
                    None => None,
                    Some(SubtreeView::Cached) => Some(gateway.subtree()),
                    Some(SubtreeView::Live) => Some(gateway.live_subtree(ctx).await),
                };
                let me = gateway.me();
                Ok(ParentView {
                    id: me.id.clone(),
                    name: me.name.clone(),
                    api_url: me.api_url.clone(),
                    generation,
                    own,
                    capabilities,
                    children: gateway.children_summary(),
                    subtree,
                })
            }
            Node::Huddle(h) => {
                let generation = h.generation();
                let own = h.aggregate();
                Ok(ParentView {
                    id: h.id.clone(),
                    name: h.name.clone(),
                    api_url: h.api_url.clone(),
                    generation,
                    capabilities: own.clone(),
                    own,
                    children: Vec::new(),
                    subtree: subtree.map(|_| Vec::new()),
                })
            }
        }
    }
}

/// An error as it crosses HTTP: its code and message.
fn wire_error(e: FedError) -> FedError {
    use api::CodedError;
    FedError::api(e.code(), e.to_string())
}

fn not_modelled(what: &str) -> FedError {
    FedError::api(ErrorCode::Internal, format!("{what} is not part of the model"))
}

#[async_trait::async_trait]
impl ChildTransport for InProcess {
    async fn zone_info(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        subtree: Option<SubtreeView>,
    ) -> Result<ZoneInfo, FedError> {
        let (node, ctx) = self.enter(child, hop, Op::Zone)?;
        self.wire(Self::view(&node, &ctx, subtree).await?.into_info())
    }

    async fn zone_if_changed(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        etag: Option<&str>,
    ) -> Result<Conditional<ZoneInfo>, FedError> {
        let (node, ctx) = self.enter(child, hop, Op::Zone)?;
        let view = Self::view(&node, &ctx, Some(SubtreeView::Cached)).await?;
        let tag = view.etag(Some(SubtreeView::Cached));
        if etag == Some(tag.as_str()) {
            return Ok(Conditional::NotModified);
        }
        Ok(Conditional::Modified { value: self.wire(view.into_info())?, etag: Some(tag) })
    }

    async fn watch(&self, child: &Child, hop: &Hop<'_>, since: i64, wait: Duration) -> Result<ZoneWatch, FedError> {
        let (node, ctx) = self.enter(child, hop, Op::Watch)?;
        let mut moves = match &node {
            Node::Hub { hub, .. } => hub.subscribe(),
            Node::Huddle(h) => h.subscribe(),
        };
        if *moves.borrow_and_update() <= since {
            let deadline = tokio::time::sleep(wait.min(Duration::from_millis(WATCH_MAX_TIMEOUT_MS)));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    changed = moves.changed() => {
                        if changed.is_err() || *moves.borrow_and_update() > since {
                            break;
                        }
                    }
                }
            }
        }
        let view = Self::view(&node, &ctx, Some(SubtreeView::Cached)).await?;
        let digest = view.etag(Some(SubtreeView::Cached));
        self.wire(ZoneWatch { id: view.id, generation: view.generation, changed: view.generation > since, digest })
    }

    async fn placement(&self, child: &Child, hop: &Hop<'_>, req: &PlacementRequest) -> Result<Placement, FedError> {
        let (node, ctx) = self.enter(child, hop, Op::Placement)?;
        let placed = match node {
            Node::Hub { gateway, .. } => gateway.placement(&ctx, req).await.map_err(wire_error)?,
            Node::Huddle(h) => h.placement(req, &ctx.caller.username)?,
        };
        self.wire(placed)
    }

    async fn create(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        id: &str,
        req: &InstanceCreate,
    ) -> Result<Answer<Instance>, FedError> {
        let (node, ctx) = self.enter(child, hop, Op::Create)?;
        match node {
            Node::Hub { gateway, .. } => {
                let r = gateway.create(&ctx, id, req).await.map_err(wire_error)?;
                // `lowest` travels in a header (`x-zone-lowest`), not the body.
                Ok(Answer { value: self.wire(r.value)?, generation: r.generation, lowest: r.lowest })
            }
            Node::Huddle(h) => {
                let client_id = req.client_id.clone().ok_or_else(|| FedError::internal("a create without a client"))?;
                let client = client_index(&client_id).ok_or_else(|| {
                    FedError::api(ErrorCode::InvalidField, format!("{client_id} is not a client of the model"))
                })?;
                let placed = h.placement(
                    &PlacementRequest { requirements: req.requirements.clone(), resources: req.resources },
                    id,
                )?;
                let generation = h.add_instance(client, &req.resources);
                let instance = Instance {
                    id: id.to_owned(),
                    name: req.name.clone(),
                    client_id: client_id.clone(),
                    state: "building".into(),
                    host_id: Some(placed.host_id),
                    zone_id: h.id.clone(),
                    zone_path: vec![h.name.clone()],
                    resources: req.resources,
                    requirements: req.requirements.clone(),
                    error_reason: None,
                    version: 1,
                    created_at: String::new(),
                    updated_at: String::new(),
                };
                Ok(Answer {
                    value: self.wire(instance)?,
                    generation: Some(generation),
                    lowest: Some(h.lowest_zone(&client_id)),
                })
            }
        }
    }

    async fn create_batch(
        &self,
        _child: &Child,
        _hop: &Hop<'_>,
        _batch_id: &str,
        _req: &InstanceCreate,
    ) -> Result<Answer<Vec<Instance>>, FedError> {
        Err(not_modelled("a multi-create"))
    }

    async fn instance(&self, _child: &Child, _hop: &Hop<'_>, _id: &str) -> Result<Option<Instance>, FedError> {
        Err(not_modelled("showing an instance"))
    }

    async fn action(
        &self,
        _child: &Child,
        _hop: &Hop<'_>,
        _id: &str,
        _action: &InstanceAction,
    ) -> Result<Answer<Instance>, FedError> {
        Err(not_modelled("an instance action"))
    }

    async fn delete(&self, _child: &Child, _hop: &Hop<'_>, _id: &str) -> Result<Answer<()>, FedError> {
        Err(not_modelled("a delete"))
    }

    async fn instances(
        &self,
        _child: &Child,
        _hop: &Hop<'_>,
        _query: &ListQuery,
    ) -> Result<api::RawInstanceList, FedError> {
        Err(not_modelled("an instance list"))
    }

    async fn hosts(&self, _child: &Child, _hop: &Hop<'_>, _query: &ListQuery) -> Result<HostList, FedError> {
        Err(not_modelled("a host list"))
    }

    async fn lowest_zone(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        client_id: &str,
    ) -> Result<Answer<Option<LowestZone>>, FedError> {
        let (node, ctx) = self.enter(child, hop, Op::Lookup)?;
        match node {
            Node::Hub { gateway, .. } => {
                // As zone-node's handler: the generation before the lookup, from memory.
                let generation = gateway.own_generation();
                let lookup = gateway.lowest_zone(&ctx, client_id).await.map_err(wire_error)?;
                Ok(Answer { value: self.wire(lookup.answer)?, generation, lowest: None })
            }
            Node::Huddle(h) => {
                let generation = h.generation();
                let answer = if ctx.caller.may_see(client_id) { h.lowest_zone(client_id) } else { None };
                Ok(Answer { value: self.wire(answer)?, generation: Some(generation), lowest: None })
            }
        }
    }

    async fn inspect(&self, _api_url: &str, _credentials: &Credentials, _hop: &Hop<'_>) -> Result<ZoneInfo, FedError> {
        Err(not_modelled("zone-add"))
    }
}
