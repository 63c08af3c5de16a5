//! A whole federation in one process: every zone a [`Gateway`] over an in-memory [`LocalZone`],
//! children reached through a transport that does what a child's HTTP edge does (verify the
//! parent's admin account, narrow it to the stated caller, admit the path) and counts requests.
//!
//! ```text
//!   global ──┬── region1 (one host of its own) ──┬── dc1
//!            │                                    └── dc2
//!            └── region2 ──────────────────────────── dc3
//!   root2 ───┬── dc1                      (a second root over two of the same data centres)
//!            └── dc3
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use api::{
    Aggregate, AggregateEntry, Answer, CapabilityValue, CodedError, Conditional, ErrorCode, HostList, Instance,
    InstanceAction, InstanceActionKind, InstanceCreate, InstanceList, LowestZone, NodeInfo, Op, Placement,
    PlacementRequest, Requirement, Resources, ZoneInfo,
};
use federation::identity::{effective, Stated};
use federation::matching::{may_meet, FREE_DISK_GB, FREE_MEMORY_MB, FREE_VCPUS};
use federation::poll::{PollSettings, PollSink, Poller, REPOLL_FAILING};
use federation::watch::WatchSettings;
use federation::{
    Changed, Child, ChildTransport, Credentials, FedError, Gateway, Hop, Identity, ListQuery, LocalZone, PollOutcome,
    Principal, RequestContext, Route, Routed, Settings, ZonePath,
};

struct FakeHost {
    id: String,
    caps: BTreeMap<String, CapabilityValue>,
    free: Mutex<Resources>,
}

impl FakeHost {
    fn aggregate(&self) -> Aggregate {
        let mut a: Aggregate = self.caps.iter().map(|(k, v)| (k.clone(), AggregateEntry::of(v))).collect();
        let free = *locked(&self.free);
        for (k, v) in [(FREE_VCPUS, free.vcpus), (FREE_MEMORY_MB, free.memory_mb), (FREE_DISK_GB, free.disk_gb)] {
            a.insert(k.into(), AggregateEntry::of(&CapabilityValue::Float(v as f64)));
        }
        a
    }
}

/// One zone's own hosts and instances, in memory.
struct FakeZone {
    id: String,
    name: String,
    hosts: Vec<FakeHost>,
    instances: Mutex<BTreeMap<String, Instance>>,
    generation: AtomicI64,
    routes: Mutex<HashMap<String, Route>>,
}

impl FakeZone {
    fn new(name: &str, hosts: Vec<(&str, &str)>) -> FakeZone {
        let hosts = hosts
            .into_iter()
            .enumerate()
            .map(|(i, (hv, os))| FakeHost {
                id: format!("{name}-host-{i}"),
                caps: [
                    ("hypervisor".to_owned(), CapabilityValue::String(hv.into())),
                    ("os".to_owned(), CapabilityValue::String(os.into())),
                    ("free-disk".to_owned(), CapabilityValue::Float(500.0 + i as f64)),
                ]
                .into_iter()
                .collect(),
                free: Mutex::new(Resources { vcpus: 64, memory_mb: 65536, disk_gb: 1000 }),
            })
            .collect();
        FakeZone {
            id: format!("id-{name}"),
            name: name.into(),
            hosts,
            instances: Mutex::new(BTreeMap::new()),
            generation: AtomicI64::new(0),
            routes: Mutex::new(HashMap::new()),
        }
    }
}

fn visible(caller: &Principal, i: &Instance) -> bool {
    caller.may_see(&i.client_id)
}

#[async_trait::async_trait]
impl LocalZone for FakeZone {
    async fn aggregate(&self) -> Result<Aggregate, FedError> {
        let mut agg = Aggregate::new();
        for h in &self.hosts {
            api::merge_aggregates(&mut agg, &h.aggregate());
        }
        Ok(agg)
    }

    async fn placement(&self, _caller: &Principal, req: &PlacementRequest) -> Result<Placement, FedError> {
        for h in &self.hosts {
            let a = h.aggregate();
            if req.requirements.iter().all(|r| may_meet(&a, r)) && federation::matching::fits(&a, &req.resources) {
                return Ok(Placement { zone_path: vec![self.name.clone()], host_id: h.id.clone() });
            }
        }
        Err(FedError::api(ErrorCode::NoValidHost, format!("no host of zone {} fits", self.name)))
    }

    async fn create(&self, caller: &Principal, id: &str, req: &InstanceCreate) -> Result<Changed<Instance>, FedError> {
        let client = req.client_id.clone().unwrap();
        assert!(caller.may_see(&client), "a member creating for another client got through");
        let p = self
            .placement(caller, &PlacementRequest { requirements: req.requirements.clone(), resources: req.resources })
            .await?;
        let instance = Instance {
            id: id.into(),
            name: req.name.clone(),
            client_id: client,
            state: "running".into(),
            host_id: Some(p.host_id),
            zone_id: self.id.clone(),
            zone_path: vec![self.name.clone()],
            resources: req.resources,
            requirements: req.requirements.clone(),
            error_reason: None,
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
        };
        locked(&self.instances).insert(id.into(), instance.clone());
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Changed { value: instance, generation: Some(g) })
    }

    /// All or nothing, as zone-node's: room taken host by host, all given back when one does not
    /// fit.
    async fn create_batch(
        &self,
        caller: &Principal,
        batch_id: &str,
        req: &InstanceCreate,
    ) -> Result<Changed<Vec<Instance>>, FedError> {
        let client = req.client_id.clone().unwrap();
        assert!(caller.may_see(&client), "a member creating for another client got through");
        let r = req.resources;
        let mut taken: Vec<&FakeHost> = Vec::new();
        for _ in 0..req.count() {
            let fit = self.hosts.iter().find(|h| {
                let a = h.aggregate();
                req.requirements.iter().all(|q| may_meet(&a, q)) && federation::matching::fits(&a, &r)
            });
            let Some(host) = fit else {
                for h in taken {
                    let mut free = locked(&h.free);
                    (free.vcpus, free.memory_mb, free.disk_gb) =
                        (free.vcpus + r.vcpus, free.memory_mb + r.memory_mb, free.disk_gb + r.disk_gb);
                }
                return Err(FedError::api(
                    ErrorCode::NoValidHost,
                    format!("not all of them fit in zone {}", self.name),
                ));
            };
            let mut free = locked(&host.free);
            (free.vcpus, free.memory_mb, free.disk_gb) =
                (free.vcpus - r.vcpus, free.memory_mb - r.memory_mb, free.disk_gb - r.disk_gb);
            drop(free);
            taken.push(host);
        }
        let ids = api::batch_member_ids(batch_id, req.count()).expect("a UUID batch id");
        let made: Vec<Instance> = taken
            .iter()
            .zip(1..)
            .zip(ids)
            .map(|((host, k), id)| Instance {
                id,
                name: api::batch_member_name(&req.name, k),
                client_id: client.clone(),
                state: "running".into(),
                host_id: Some(host.id.clone()),
                zone_id: self.id.clone(),
                zone_path: vec![self.name.clone()],
                resources: r,
                requirements: req.requirements.clone(),
                error_reason: None,
                version: 1,
                created_at: String::new(),
                updated_at: String::new(),
            })
            .collect();
        let mut all = locked(&self.instances);
        for i in &made {
            all.insert(i.id.clone(), i.clone());
        }
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Changed { value: made, generation: Some(g) })
    }

    async fn instance(&self, caller: &Principal, id: &str) -> Result<Option<Instance>, FedError> {
        Ok(locked(&self.instances).get(id).filter(|i| visible(caller, i)).cloned())
    }

    async fn action(
        &self,
        caller: &Principal,
        id: &str,
        action: &InstanceAction,
    ) -> Result<Changed<Instance>, FedError> {
        let mut all = locked(&self.instances);
        let i = all.get_mut(id).filter(|i| visible(caller, i)).ok_or_else(|| FedError::not_found(id))?;
        i.state = match action.action {
            InstanceActionKind::Stop => "stopped".into(),
            _ => "running".into(),
        };
        i.version += 1;
        Ok(Changed { value: i.clone(), generation: None })
    }

    async fn delete(&self, caller: &Principal, id: &str) -> Result<Changed<String>, FedError> {
        let mut all = locked(&self.instances);
        if !all.get(id).is_some_and(|i| visible(caller, i)) {
            return Err(FedError::not_found(id));
        }
        let i = all.remove(id).unwrap();
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Changed { value: i.client_id, generation: Some(g) })
    }

    async fn instances(&self, caller: &Principal, q: &ListQuery) -> Result<InstanceList, FedError> {
        let all = locked(&self.instances);
        let mut page: Vec<Instance> = all
            .values()
            .filter(|i| visible(caller, i))
            .filter(|i| q.client_id.as_ref().is_none_or(|c| &i.client_id == c))
            .filter(|i| q.marker.as_ref().is_none_or(|m| &i.id > m))
            .take(q.limit + 1)
            .cloned()
            .collect();
        let more = page.len() > q.limit;
        page.truncate(q.limit);
        let next_marker = if more { page.last().map(|i| i.id.clone()) } else { None };
        Ok(InstanceList { instances: page, unreachable_zones: vec![], next_marker })
    }

    async fn hosts(&self, _caller: &Principal, _q: &ListQuery) -> Result<HostList, FedError> {
        Ok(HostList { hosts: vec![], unreachable_zones: vec![], next_marker: None })
    }

    async fn has_client(&self, client_id: &str) -> Result<bool, FedError> {
        Ok(locked(&self.instances).values().any(|i| i.client_id == client_id))
    }

    async fn bump_generation(&self) -> Result<i64, FedError> {
        Ok(self.generation.fetch_add(1, Ordering::SeqCst) + 1)
    }

    async fn route_get(&self, instance_id: &str) -> Result<Option<Route>, FedError> {
        Ok(locked(&self.routes).get(instance_id).cloned())
    }

    async fn route_put(&self, instance_id: &str, route: &Route) -> Result<(), FedError> {
        locked(&self.routes).insert(instance_id.into(), route.clone());
        Ok(())
    }

    async fn route_delete(&self, instance_id: &str) -> Result<(), FedError> {
        locked(&self.routes).remove(instance_id);
        Ok(())
    }
}

/// A zone of the tree: its gateway and its own hosts.
type Zone = (Arc<Gateway>, Arc<FakeZone>);

/// The data behind one of the fakes' locks. A panic while it was held already fails the test, so
/// the data is used as that panic left it rather than panicking again over the poison.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reaches a child's gateway directly, doing what its HTTP edge would.
#[derive(Default)]
struct InProcess {
    zones: OnceLock<HashMap<String, Zone>>,
    down: Mutex<HashSet<String>>,
    /// Zones that take a create and never answer (a frozen process that still accepts connections).
    frozen: Mutex<HashSet<String>>,
    /// Children that carry a batch out and then never answer.
    answer_lost: Mutex<HashSet<String>>,
    /// The id of the last create sent to a child.
    last_create_id: Mutex<Option<String>>,
    /// Children whose next zone answers wait, once read, until released ([`InProcess::hold_answers`]).
    held: Mutex<HashMap<String, Arc<Hold>>>,
    /// Requests per (child name, operation).
    calls: Mutex<HashMap<(String, &'static str), usize>>,
    total: AtomicUsize,
}

impl InProcess {
    fn enter(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        op: &'static str,
    ) -> Result<(Arc<Gateway>, RequestContext), FedError> {
        *locked(&self.calls).entry((child.name.clone(), op)).or_default() += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
        if locked(&self.down).contains(&child.id) {
            return Err(FedError::Unavailable { zone: child.name.clone(), reason: "connection refused".into() });
        }
        let (gw, _) = self.zone(&child.id);
        let headers = hop.caller.headers(hop.origin);
        let stated = Stated::from_headers(|n| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()))?;
        let account = Principal::admin("parent");
        let ctx = RequestContext { caller: effective(account, stated)?, path: hop.path.clone() };
        gw.admit(&ctx.path).map_err(wire)?;
        Ok((gw, ctx))
    }

    /// The gateway and fake of the zone `id`: every child a test names was built with the tree.
    fn zone(&self, id: &str) -> Zone {
        self.zones.get().expect("the tree is built").get(id).expect("a zone of the tree").clone()
    }

    /// The child `id` takes creates from now on and never answers them.
    fn freeze(&self, id: &str) {
        locked(&self.frozen).insert(id.to_owned());
    }

    /// The child `id` carries creates out from now on, and its answers are lost.
    fn lose_answers(&self, id: &str) {
        locked(&self.answer_lost).insert(id.to_owned());
    }

    /// The child `id`'s zone answers, once read, wait for [`Hold::release`] (an answer slow on the
    /// way back). Until [`InProcess::heal`].
    fn hold_answers(&self, id: &str) -> Arc<Hold> {
        locked(&self.held).entry(id.to_owned()).or_default().clone()
    }

    /// The child `id` refuses connections from now on.
    fn take_down(&self, id: &str) {
        locked(&self.down).insert(id.to_owned());
    }

    /// Every child answers again.
    fn heal(&self) {
        locked(&self.frozen).clear();
        locked(&self.answer_lost).clear();
        locked(&self.down).clear();
        locked(&self.held).clear();
    }

    /// The id of the last create sent to a child (panics when none was).
    fn last_create_id(&self) -> String {
        locked(&self.last_create_id).clone().expect("a create was sent to a child")
    }

    fn count(&self, child: &str, op: &'static str) -> usize {
        locked(&self.calls).get(&(child.to_owned(), op)).copied().unwrap_or(0)
    }
}

/// An answer held on its way back: `read` is signalled once the child's state is read, and the
/// answer goes when `release` is.
#[derive(Default)]
struct Hold {
    read: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

/// An error as it crosses HTTP: its code and message.
fn wire(e: FedError) -> FedError {
    FedError::api(e.code(), e.to_string())
}

#[async_trait::async_trait]
impl ChildTransport for InProcess {
    async fn zone_info(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        subtree: Option<api::SubtreeView>,
    ) -> Result<ZoneInfo, FedError> {
        let (gw, ctx) = self.enter(child, hop, "zone")?;
        let (_, fz) = self.zone(&child.id);
        let info = ZoneInfo {
            id: gw.me().id.clone(),
            name: gw.me().name.clone(),
            api_url: gw.me().api_url.clone(),
            node_id: "n".into(),
            nodes: Vec::<NodeInfo>::new(),
            capabilities: gw.aggregate().await?,
            own_capabilities: Some(gw.aggregates().await?.0),
            children: gw.children_summary(),
            generation: fz.generation.load(Ordering::SeqCst),
            ring_epoch: 1,
            subtree: match subtree {
                None => None,
                Some(api::SubtreeView::Cached) => Some(gw.subtree()),
                Some(api::SubtreeView::Live) => Some(gw.live_subtree(&ctx).await),
            },
        };
        let hold = locked(&self.held).get(&child.id).cloned();
        if let Some(hold) = hold {
            hold.read.notify_one();
            hold.release.notified().await;
        }
        Ok(info)
    }
    async fn zone_if_changed(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        etag: Option<&str>,
    ) -> Result<Conditional<ZoneInfo>, FedError> {
        // As the HTTP edge does: a digest of what a parent records, compared with the one sent.
        let info = self.zone_info(child, hop, Some(api::SubtreeView::Cached)).await?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&(info.generation, &info.capabilities, &info.own_capabilities, &info.subtree))
            .unwrap()
            .hash(&mut h);
        let tag = format!("{:x}", h.finish());
        if etag == Some(tag.as_str()) {
            return Ok(Conditional::NotModified);
        }
        Ok(Conditional::Modified { value: info, etag: Some(tag) })
    }
    async fn placement(&self, child: &Child, hop: &Hop<'_>, req: &PlacementRequest) -> Result<Placement, FedError> {
        let (gw, ctx) = self.enter(child, hop, "placement")?;
        gw.placement(&ctx, req).await.map_err(wire)
    }
    async fn create(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        id: &str,
        req: &InstanceCreate,
    ) -> Result<Answer<Instance>, FedError> {
        let (gw, ctx) = self.enter(child, hop, "create")?;
        *self.last_create_id.lock().expect("no test thread panicked holding the lock") = Some(id.to_owned());
        if locked(&self.frozen).contains(&child.id) {
            return std::future::pending().await;
        }
        let r = gw.create(&ctx, id, req).await.map_err(wire)?;
        Ok(Answer { value: r.value, generation: r.generation, lowest: r.lowest })
    }
    async fn create_batch(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        batch_id: &str,
        req: &InstanceCreate,
    ) -> Result<Answer<Vec<Instance>>, FedError> {
        let (gw, ctx) = self.enter(child, hop, "create_batch")?;
        let r = gw.create_batch(&ctx, batch_id, req).await.map_err(wire)?;
        if locked(&self.answer_lost).contains(&child.id) {
            // Made below, and then the child stops answering.
            return std::future::pending().await;
        }
        Ok(Answer { value: r.value, generation: r.generation, lowest: r.lowest })
    }
    async fn instance(&self, child: &Child, hop: &Hop<'_>, id: &str) -> Result<Option<Instance>, FedError> {
        let (gw, ctx) = self.enter(child, hop, "show")?;
        match gw.instance(&ctx, id).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(wire(e)),
        }
    }
    async fn action(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        id: &str,
        a: &InstanceAction,
    ) -> Result<Answer<Instance>, FedError> {
        let (gw, ctx) = self.enter(child, hop, "action")?;
        let r = gw.action(&ctx, id, a).await.map_err(wire)?;
        Ok(Answer { value: r.value, generation: r.generation, lowest: r.lowest })
    }
    async fn delete(&self, child: &Child, hop: &Hop<'_>, id: &str) -> Result<Answer<()>, FedError> {
        let (gw, ctx) = self.enter(child, hop, "delete")?;
        let r = gw.delete(&ctx, id).await.map_err(wire)?;
        Ok(Answer { value: (), generation: r.generation, lowest: r.lowest })
    }
    async fn instances(&self, child: &Child, hop: &Hop<'_>, q: &ListQuery) -> Result<api::RawInstanceList, FedError> {
        let (gw, ctx) = self.enter(child, hop, "list")?;
        gw.instances(&ctx, q).await.map_err(wire)
    }
    async fn hosts(&self, child: &Child, hop: &Hop<'_>, q: &ListQuery) -> Result<HostList, FedError> {
        let (gw, ctx) = self.enter(child, hop, "hosts")?;
        gw.hosts(&ctx, q).await.map_err(wire)
    }
    async fn lowest_zone(
        &self,
        child: &Child,
        hop: &Hop<'_>,
        client: &str,
    ) -> Result<Answer<Option<LowestZone>>, FedError> {
        let (gw, ctx) = self.enter(child, hop, "lookup")?;
        let (_, fz) = self.zone(&child.id);
        let generation = fz.generation.load(Ordering::SeqCst);
        let l = gw.lowest_zone(&ctx, client).await.map_err(wire)?;
        Ok(Answer { value: l.answer, generation: Some(generation), lowest: None })
    }
    async fn inspect(&self, api_url: &str, _c: &Credentials, hop: &Hop<'_>) -> Result<ZoneInfo, FedError> {
        let id =
            self.zones.get().unwrap().iter().find(|(_, (g, _))| g.me().api_url == api_url).map(|(id, _)| id.clone());
        let Some(id) = id else {
            return Err(FedError::api(ErrorCode::ZoneUnreachable, format!("nothing at {api_url}")));
        };
        let child = Child { id, ..child_record("probe") };
        self.zone_info(&child, hop, Some(api::SubtreeView::Live)).await
    }
}

fn child_record(name: &str) -> Child {
    Child::registered(format!("id-{name}"), name, format!("http://{name}"), Credentials::new("admin", "pw-12345678"))
}

struct Tree {
    transport: Arc<InProcess>,
    zones: HashMap<String, Zone>,
    /// Parent name → child names.
    edges: Vec<(&'static str, Vec<&'static str>)>,
}

impl Tree {
    async fn build() -> Tree {
        let transport = Arc::new(InProcess::default());
        let specs: Vec<(&str, Vec<(&str, &str)>)> = vec![
            ("global", vec![]),
            ("root2", vec![]),
            ("region1", vec![("xen", "linux")]),
            ("region2", vec![]),
            ("dc1", vec![("kvm", "linux"), ("kvm", "windows")]),
            ("dc2", vec![("kvm", "bsd")]),
            ("dc3", vec![("hyperv", "windows")]),
        ];
        let mut zones = HashMap::new();
        let mut by_id = HashMap::new();
        for (name, hosts) in specs {
            let fz = Arc::new(FakeZone::new(name, hosts));
            let me = Identity { id: fz.id.clone(), name: name.into(), api_url: format!("http://{name}") };
            let gw = Arc::new(Gateway::new(me, Settings::default(), transport.clone(), fz.clone()));
            by_id.insert(fz.id.clone(), (gw.clone(), fz.clone()));
            zones.insert(name.to_owned(), (gw, fz));
        }
        transport.zones.set(by_id).ok().unwrap();
        let edges = vec![
            ("global", vec!["region1", "region2"]),
            ("region1", vec!["dc1", "dc2"]),
            ("region2", vec!["dc3"]),
            ("root2", vec!["dc1", "dc3"]),
        ];
        let tree = Tree { transport, zones, edges };
        for (parent, kids) in &tree.edges {
            tree.gw(parent).set_children(kids.iter().map(|k| child_record(k)).collect());
        }
        for (gw, _) in tree.zones.values() {
            gw.observe_own_generation(0);
        }
        tree.poll_all().await;
        tree
    }

    fn gw(&self, name: &str) -> Arc<Gateway> {
        self.zones[name].0.clone()
    }

    fn fake(&self, name: &str) -> Arc<FakeZone> {
        self.zones[name].1.clone()
    }

    /// One poll of every child by its parent, bottom-up (as the zones' pollers would, given
    /// time), recording the results the way zone-node's poll sink does.
    async fn poll_all(&self) {
        for parent in ["region1", "region2", "global", "root2"] {
            let (gw, fz) = (self.gw(parent), self.fake(parent));
            let mut updated = Vec::new();
            for c in gw.registry().children().iter() {
                let mut c = (**c).clone();
                let before = (c.online, c.generation);
                match gw.poll(&c, std::time::Duration::from_secs(1)).await {
                    PollOutcome::Answered(info) => {
                        c.online = true;
                        c.capabilities = info.capabilities;
                        c.own_capabilities = info.own_capabilities;
                        c.generation = info.generation;
                        c.subtree = info.subtree.unwrap_or_default();
                    }
                    PollOutcome::Unchanged => {}
                    PollOutcome::Failed(_) => c.online = false,
                }
                // As the store does: a child that changed changes this zone's subtree.
                if (c.online, c.generation) != before {
                    fz.generation.fetch_add(1, Ordering::SeqCst);
                }
                updated.push(c);
            }
            gw.set_children(updated);
        }
        // As each node's refresh does: read the zone's own generation.
        for (gw, fz) in self.zones.values() {
            gw.observe_own_generation(fz.generation.load(Ordering::SeqCst));
        }
    }
}

fn admin() -> RequestContext {
    RequestContext { caller: Principal::admin("ops"), path: ZonePath::empty() }
}

fn member(client: &str) -> RequestContext {
    RequestContext { caller: Principal::member(format!("{client}-user"), client), path: ZonePath::empty() }
}

fn create(client: &str, reqs: Vec<Requirement>) -> InstanceCreate {
    InstanceCreate {
        name: "vm".into(),
        client_id: Some(client.into()),
        requirements: reqs,
        resources: Resources { vcpus: 1, memory_mb: 512, disk_gb: 10 },
        count: None,
    }
}

fn hv(value: &str) -> Requirement {
    Requirement { key: "hypervisor".into(), op: Op::Eq, value: Some(value.into()) }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn new_id() -> String {
    format!("{:08}-0000-4000-8000-000000000000", NEXT.fetch_add(1, Ordering::SeqCst))
}

async fn lowest(tree: &Tree, at: &str, client: &str) -> Option<String> {
    tree.gw(at).lowest_zone(&admin(), client).await.unwrap().answer.map(|z| z.zone_name)
}

#[tokio::test]
async fn aggregates_are_the_merge_of_what_lies_below() {
    let t = Tree::build().await;
    async fn count(t: &Tree, zone: &str) -> i64 {
        t.gw(zone).aggregate().await.unwrap().get("hypervisor").map(|e| e.count()).unwrap_or(0)
    }
    assert_eq!(count(&t, "dc1").await, 2);
    assert_eq!(count(&t, "region1").await, 4, "its own host plus dc1 and dc2");
    assert_eq!(count(&t, "global").await, 5);
    assert_eq!(count(&t, "root2").await, 3);
    let global = t.gw("global").aggregate().await.unwrap();
    match &global["hypervisor"] {
        AggregateEntry::String { values, .. } => assert_eq!(values, &["hyperv", "kvm", "xen"]),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn creates_land_where_requirements_are_met_and_nowhere_else() {
    let t = Tree::build().await;
    let g = t.gw("global");
    for (wanted, zone) in [("hyperv", "dc3"), ("xen", "region1"), ("kvm", "dc1")] {
        let id = new_id();
        let r = g.create(&admin(), &id, &create("acme", vec![hv(wanted)])).await.unwrap();
        assert_eq!(r.value.zone_path.last().map(String::as_str), Some(zone), "{wanted}: {:?}", r.value.zone_path);
        assert_eq!(r.value.zone_path[0], "global");
        assert!(r.generation.is_some(), "a create through global moves global's generation");
    }
    let e = g.create(&admin(), &new_id(), &create("acme", vec![hv("vmware")])).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoValidHost, "{e}");
    let windows_kvm = vec![hv("kvm"), Requirement { key: "os".into(), op: Op::Eq, value: Some("windows".into()) }];
    let r = g.create(&admin(), &new_id(), &create("acme", windows_kvm)).await.unwrap();
    assert_eq!(r.value.zone_path, ["global", "region1", "dc1"], "only dc1 has a kvm host running windows");
    let p = g
        .placement(&admin(), &PlacementRequest { requirements: vec![hv("hyperv")], resources: Resources::default() })
        .await
        .unwrap();
    assert_eq!(p.zone_path, ["global", "region2", "dc3"]);
}

#[tokio::test]
async fn a_batch_goes_whole_to_one_child_and_a_child_that_cannot_place_all_of_it_passes_it_on() {
    let t = Tree::build().await;
    let g = t.gw("global");
    // dc1: two kvm hosts of 64 vcpus (128 free in all, the most memory, so ranked first); dc2: one
    // kvm host, made to have 128 vcpus free.
    locked(&t.fake("dc2").hosts[0].free).vcpus = 128;
    t.poll_all().await;
    let batch = |count: u32, vcpus: i64| InstanceCreate {
        name: "web".into(),
        count: Some(count),
        resources: Resources { vcpus, memory_mb: 512, disk_gb: 10 },
        ..create("acme", vec![hv("kvm")])
    };

    // Three of 8 vcpus: dc1 takes all three, named in order, and every zone on the way routes them.
    let r = g.create_batch(&admin(), &new_id(), &batch(3, 8)).await.unwrap();
    let names: Vec<&str> = r.value.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["web-0001", "web-0002", "web-0003"]);
    for i in &r.value {
        assert_eq!(i.zone_path, ["global", "region1", "dc1"], "{}", i.name);
    }
    assert!(r.generation.is_some(), "a batch through global moves global's generation");
    assert_eq!(t.transport.count("dc1", "create_batch"), 1, "one request for the whole batch");
    let shows = (t.transport.count("region1", "show"), t.transport.count("region2", "show"));
    for i in &r.value {
        assert_eq!(g.instance(&admin(), &i.id).await.unwrap().name, i.name);
    }
    assert_eq!(
        (t.transport.count("region1", "show"), t.transport.count("region2", "show")),
        (shows.0 + 3, shows.1),
        "straight down to region1, region2 never searched: the routes were recorded on the way down"
    );
    assert_eq!(lowest(&t, "global", "acme").await.as_deref(), Some("dc1"));

    // Three of 33 vcpus: dc1's 104 free may hold 99 in sum, but no host of it holds two, so it
    // refuses with nothing left behind; dc2's one host of 128 takes all three.
    let dc1_free = t.fake("dc1").aggregate().await.unwrap();
    let r = g.create_batch(&admin(), &new_id(), &batch(3, 33)).await.unwrap_or_else(|e| panic!("{e}"));
    for i in &r.value {
        assert_eq!(i.zone_path, ["global", "region1", "dc2"], "{}", i.name);
    }
    assert_eq!(t.transport.count("dc1", "create_batch"), 2, "dc1 was asked first");
    assert_eq!(locked(&t.fake("dc1").instances).len(), 3, "dc1 kept nothing of the refused batch");
    assert_eq!(t.fake("dc1").aggregate().await.unwrap(), dc1_free, "and reserved nothing");

    // Five of 40: more than any zone's free vcpus: refused, nothing made anywhere.
    t.poll_all().await;
    let before: usize = ["dc1", "dc2", "dc3", "region1"].iter().map(|z| locked(&t.fake(z).instances).len()).sum();
    let e = g.create_batch(&admin(), &new_id(), &batch(5, 40)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoValidHost, "{e}");
    let after: usize = ["dc1", "dc2", "dc3", "region1"].iter().map(|z| locked(&t.fake(z).instances).len()).sum();
    assert_eq!(before, after);
    // A single create still answers one instance.
    let one = g.create(&admin(), &new_id(), &create("acme", vec![hv("kvm")])).await.unwrap();
    assert_eq!(one.value.name, "vm");
}

#[tokio::test]
async fn the_lowest_zone_follows_the_seed_rule_and_is_served_from_the_cache() {
    let t = Tree::build().await;
    let g = t.gw("global");
    assert_eq!(lowest(&t, "global", "acme").await, None, "no instances: not managed");
    g.create(&admin(), &new_id(), &create("acme", vec![hv("kvm")])).await.unwrap();
    let lookups_before = t.transport.count("region1", "lookup") + t.transport.count("region2", "lookup");
    // Precomputed on the way down: no child is asked.
    assert_eq!(lowest(&t, "global", "acme").await.as_deref(), Some("dc1"));
    let lookups_after = t.transport.count("region1", "lookup") + t.transport.count("region2", "lookup");
    assert_eq!(lookups_before, lookups_after, "the create precomputed the answer");
    // A second data centre of the same region: the region.
    let id2 = new_id();
    let bsd = Requirement { key: "os".into(), op: Op::Eq, value: Some("bsd".into()) };
    g.create(&admin(), &id2, &create("acme", vec![bsd])).await.unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (locked(&t.fake("dc1").instances).len(), locked(&t.fake("dc2").instances).len());
    assert_eq!((a, b), (1, 1), "only dc2 runs bsd");
    let asked = t.transport.count("region1", "lookup") + t.transport.count("region2", "lookup");
    assert_eq!(lowest(&t, "global", "acme").await.as_deref(), Some("region1"));
    // Across regions: global.
    g.create(&admin(), &new_id(), &create("acme", vec![hv("hyperv")])).await.unwrap();
    assert_eq!(lowest(&t, "global", "acme").await.as_deref(), Some("global"));
    assert_eq!(
        t.transport.count("region1", "lookup") + t.transport.count("region2", "lookup"),
        asked,
        "both answers were precomputed on the way down (region1 composed dc1 and dc2 itself)"
    );
    // From the other root, dc1 and dc3 meet at root2.
    t.poll_all().await;
    assert_eq!(lowest(&t, "root2", "acme").await.as_deref(), Some("root2"));
    let total = t.transport.total.load(Ordering::SeqCst);
    assert_eq!(lowest(&t, "root2", "acme").await.as_deref(), Some("root2"));
    assert_eq!(t.transport.total.load(Ordering::SeqCst), total, "a second lookup asks nobody");
    // Deleting through global updates global's answer at once.
    g.delete(&admin(), &id2).await.unwrap();
    assert_eq!(lowest(&t, "global", "acme").await.as_deref(), Some("global"), "dc1 and dc3 remain");
    // A member asking about another client learns nothing.
    assert_eq!(g.lowest_zone(&member("other"), "acme").await.unwrap().answer, None);
    assert_eq!(
        g.lowest_zone(&member("acme"), "acme").await.unwrap().answer.map(|z| z.zone_name).as_deref(),
        Some("global")
    );
}

#[tokio::test]
async fn a_change_made_below_shows_after_a_poll() {
    let t = Tree::build().await;
    assert_eq!(lowest(&t, "global", "beta").await, None);
    // Created directly at dc3, bypassing global: global's cached "not managed" is stale until
    // polls carry the new generations up.
    t.gw("dc3").create(&admin(), &new_id(), &create("beta", vec![])).await.unwrap();
    assert_eq!(lowest(&t, "global", "beta").await, None, "cached until the generations move up");
    t.poll_all().await;
    t.poll_all().await;
    assert_eq!(lowest(&t, "global", "beta").await.as_deref(), Some("dc3"));
}

#[tokio::test]
async fn instances_by_id_anywhere_and_lists_across_the_tree() {
    let t = Tree::build().await;
    let g = t.gw("global");
    let mut ids = Vec::new();
    for i in 0..30 {
        let (client, wanted) = if i % 3 == 0 { ("a", "kvm") } else { ("b", ["kvm", "hyperv", "xen"][i % 3]) };
        let id = new_id();
        g.create(&admin(), &id, &create(client, vec![hv(wanted)])).await.unwrap();
        ids.push((id, client));
    }
    // One created below, unknown to global: found by asking, then remembered.
    let hidden = new_id();
    t.gw("dc3").create(&admin(), &hidden, &create("b", vec![])).await.unwrap();
    let shown = g.instance(&admin(), &hidden).await.unwrap();
    assert_eq!(shown.zone_path, ["global", "region2", "dc3"]);
    let searches = t.transport.count("region1", "show");
    g.instance(&admin(), &hidden).await.unwrap();
    assert_eq!(t.transport.count("region1", "show"), searches, "remembered: region1 is not asked again");
    // Actions and deletes by id at the top.
    let (first, _) = &ids[0];
    let stopped =
        g.action(&admin(), first, &InstanceAction { action: InstanceActionKind::Stop, host_id: None }).await.unwrap();
    assert_eq!(stopped.value.state, "stopped");
    // Lists: every instance once, in id order, in small pages.
    let mut seen = Vec::new();
    let mut marker = None;
    loop {
        let page =
            g.instances(&admin(), &ListQuery { client_id: None, limit: 4, marker: marker.clone() }).await.unwrap();
        assert!(page.unreachable_zones.is_empty());
        seen.extend(page.instances.iter().map(|i| i.id().to_owned()));
        marker = page.next_marker;
        if marker.is_none() {
            break;
        }
    }
    let mut expected: Vec<String> = ids.iter().map(|(id, _)| id.clone()).chain([hidden.clone()]).collect();
    expected.sort();
    assert_eq!(seen, expected);
    // A member sees only its client, and only children holding it are asked.
    let before = t.transport.count("region2", "list");
    let a_list = g
        .instances(&member("a"), &ListQuery { client_id: Some("a".into()), limit: 100, marker: None })
        .await
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(a_list.instances.len(), 10);
    assert!(a_list.instances.iter().all(|i| i.client_id == "a"));
    assert_eq!(t.transport.count("region2", "list"), before, "client a is all in region1: region2 is not asked");
    // B's instances are invisible to a member of A, by id too.
    let (b_id, _) = ids.iter().find(|(_, c)| *c == "b").unwrap();
    assert_eq!(g.instance(&member("a"), b_id).await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(g.delete(&member("a"), b_id).await.unwrap_err().code(), ErrorCode::NotFound);
    assert!(g.instance(&admin(), b_id).await.is_ok(), "the refused delete changed nothing");
}

/// Walks every page of the admin list at `zone`, `limit` at a time, calling `between` after each
/// page with the marker of the next; returns the ids listed and the number of pages.
async fn walk(t: &Tree, zone: &str, limit: usize, mut between: impl AsyncFnMut(&str)) -> (Vec<String>, usize) {
    let g = t.gw(zone);
    let (mut seen, mut pages, mut marker) = (Vec::new(), 0, None);
    loop {
        let page = g.instances(&admin(), &ListQuery { client_id: None, limit, marker: marker.clone() }).await.unwrap();
        assert!(page.unreachable_zones.is_empty());
        pages += 1;
        seen.extend(page.instances.iter().map(|i| i.id().to_owned()));
        marker = page.next_marker;
        match &marker {
            Some(m) => between(m).await,
            None => return (seen, pages),
        }
    }
}

#[tokio::test]
async fn a_list_walk_reads_ahead_and_still_shows_changes_made_between_pages() {
    let t = Tree::build().await;
    let g = t.gw("global");
    let mut ids = Vec::new();
    for i in 0..240 {
        let id = new_id();
        g.create(&admin(), &id, &create("a", vec![hv(["kvm", "hyperv", "xen"][i % 3])])).await.unwrap();
        ids.push(id);
    }
    ids.sort();
    // Unchanged below: every instance once, and the children asked far less than once a page.
    let before = t.transport.count("region1", "list") + t.transport.count("region2", "list");
    let (seen, pages) = walk(&t, "global", 10, async |_| {}).await;
    assert_eq!(seen, ids);
    let asked = t.transport.count("region1", "list") + t.transport.count("region2", "list") - before;
    // Without reading ahead: one list per child per page. With it, a child's page of `limit`
    // serves about `limit / share` pages (here 10 / 5, with three sources at global).
    assert!(asked * 4 < pages * 2 * 3, "{asked} child lists for {pages} pages of 2 children");

    // Changed below between pages: after the second page, one instance further on is deleted and
    // one is made further on, each directly at a data centre (the parents learn of it at their
    // next poll, as they would from their watches). The walk shows the new one and not the old.
    let mut expected = ids.clone();
    let mut page = 0;
    let (seen, _) = walk(&t, "global", 10, async |marker: &str| {
        page += 1;
        if page != 2 {
            return;
        }
        // The next page's first instance: one a child read ahead and keeps.
        let gone = ids.iter().find(|id| id.as_str() > marker).expect("an instance after the page").clone();
        let holder = ["dc1", "dc2", "dc3", "region1"]
            .into_iter()
            .find(|dc| locked(&t.fake(dc).instances).contains_key(&gone))
            .expect("a zone holds it");
        t.gw(holder).delete(&admin(), &gone).await.unwrap();
        expected.retain(|id| *id != gone);
        // Right after the marker (its last hex digit one up), before anything kept: a kept page
        // that was not dropped would miss it.
        let made = match marker.chars().last().and_then(|c| c.to_digit(16)).filter(|d| *d < 15) {
            Some(d) => format!("{}{:x}", &marker[..marker.len() - 1], d + 1),
            None => std::iter::repeat_with(new_id).find(|id| id.as_str() > marker).unwrap(),
        };
        t.gw("dc2").create(&admin(), &made, &create("a", vec![])).await.unwrap();
        expected.push(made);
        expected.sort();
        // Three rounds: each level learns of the change below it one round after that level.
        for _ in 0..3 {
            t.poll_all().await;
        }
        assert_ne!(t.gw("global").registry().get(&t.fake("region1").id).map(|c| c.generation), Some(0));
    })
    .await;
    assert_eq!(seen, expected, "the walk shows what changed below after its first pages");
}

#[tokio::test]
async fn an_offline_child_is_avoided_and_named_in_lists() {
    let t = Tree::build().await;
    let g = t.gw("global");
    g.create(&admin(), &new_id(), &create("a", vec![hv("hyperv")])).await.unwrap();
    g.create(&admin(), &new_id(), &create("a", vec![hv("kvm")])).await.unwrap();
    let region2 = t.gw("region2");
    locked(&t.transport.down).insert(region2.me().id.clone());
    t.poll_all().await;
    assert!(!g.registry().get(&region2.me().id).unwrap().online);
    let e = g.create(&admin(), &new_id(), &create("a", vec![hv("hyperv")])).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoValidHost, "only region2 had hyperv: nothing else may take it");
    let list = g.instances(&admin(), &ListQuery { client_id: None, limit: 100, marker: None }).await.unwrap();
    assert_eq!(list.instances.len(), 1);
    assert_eq!(list.unreachable_zones, ["region2"]);
    locked(&t.transport.down).clear();
    t.poll_all().await;
    let list = g.instances(&admin(), &ListQuery { client_id: None, limit: 100, marker: None }).await.unwrap();
    assert_eq!((list.instances.len(), list.unreachable_zones.len()), (2, 0), "back online");
}

/// A create forwarded to a child that takes it and never answers is cut off the moment the
/// child is marked offline (503 `zone_unavailable`, not the 60 s forward timeout), and it is not
/// tried on another child: it may have been made there.
/// Waits until `pending` (a create forwarded to `child`, which does not answer) is cut off when
/// the polls find `child` silent; answers the error, checked to be 503 `zone_unavailable`.
async fn cut_off<T: std::fmt::Debug + Send + 'static>(
    t: &Tree,
    child: &str,
    pending: tokio::task::JoinHandle<Result<T, FedError>>,
) -> FedError {
    tokio::time::sleep(Duration::from_millis(100)).await;
    if pending.is_finished() {
        panic!("the child answered: {:?}", pending.await.expect("the create task"));
    }
    // The polls that find it silent mark it offline.
    t.transport.take_down(child);
    t.poll_all().await;
    let err = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("cut off once the child went offline")
        .expect("the create task")
        .expect_err("a create at a child that does not answer");
    assert_eq!(err.code(), ErrorCode::ZoneUnavailable, "{err}");
    err
}

/// Every child answers again, and the parents have polled them.
/// A create at `g` for `client`, of one instance on a hyperv host (only below region2), running
/// in its own task so the test can cut it off.
fn spawn_create(g: &Arc<Gateway>, client: &str) -> tokio::task::JoinHandle<Result<Routed<Instance>, FedError>> {
    let (g, req) = (g.clone(), create(client, vec![hv("hyperv")]));
    tokio::spawn(async move { g.create(&admin(), &new_id(), &req).await })
}

/// [`spawn_create`] of a batch of `count` with the id `batch`.
fn spawn_batch(
    g: &Arc<Gateway>,
    batch: &str,
    client: &str,
    count: u32,
) -> tokio::task::JoinHandle<Result<Routed<Vec<Instance>>, FedError>> {
    let (g, batch) = (g.clone(), batch.to_owned());
    let req = InstanceCreate { count: Some(count), ..create(client, vec![hv("hyperv")]) };
    tokio::spawn(async move { g.create_batch(&admin(), &batch, &req).await })
}

async fn bring_back(t: &Tree) {
    t.transport.heal();
    t.poll_all().await;
}

#[tokio::test]
async fn a_create_with_a_child_that_freezes_ends_when_the_child_goes_offline() {
    let t = Tree::build().await;
    let g = t.gw("global");
    let region2 = t.gw("region2").me().id.clone();
    t.transport.freeze(&region2);
    // hyperv hosts are only below region2: the create can go nowhere else.
    let pending = spawn_create(&g, "frozen");
    let started = std::time::Instant::now();
    let err = cut_off(&t, &region2, pending).await;
    assert!(err.to_string().contains("may or may not"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(6));
    // Reconciled: global kept the route of the id it chose. Back online, region2 is asked about it
    // directly (no search of every child) and, as the create never got through, global answers
    // 404 and forgets the route.
    bring_back(&t).await;
    let cut_id = t.transport.last_create_id();
    let (r1, r2) = (t.transport.count("region1", "show"), t.transport.count("region2", "show"));
    let gone = g.instance(&admin(), &cut_id).await.expect_err("never made");
    assert_eq!(gone.code(), ErrorCode::NotFound);
    assert_eq!(t.transport.count("region1", "show"), r1, "the route sent it straight to region2");
    assert_eq!(t.transport.count("region2", "show"), r2 + 1);
}

/// Creates cut off at a child are reconciled once it is back, without anyone reading them: one
/// the child never got is forgotten (its route goes), one it made stays known (its route stays,
/// and a read goes straight to the child); a child still offline keeps its entries for later.
#[tokio::test]
async fn cut_off_creates_are_reconciled_when_the_child_returns_without_a_read() {
    let t = Tree::build().await;
    let g = t.gw("global");
    let region2 = t.gw("region2").me().id.clone();
    let fake = t.fake("global");

    // One create the child never got (frozen), and one batch it made but whose answer was lost.
    t.transport.freeze(&region2);
    let lost = spawn_create(&g, "lost");
    cut_off(&t, &region2, lost).await;
    let lost_id = t.transport.last_create_id();
    bring_back(&t).await;
    t.transport.lose_answers(&region2);
    let batch = new_id();
    let made = spawn_batch(&g, &batch, "made", 2);
    cut_off(&t, &region2, made).await;
    let made_ids = api::batch_member_ids(&batch, 2).expect("a UUID batch id");
    assert!(
        fake.route_get(&lost_id).await.expect("the fake's route table answers").is_some(),
        "the route of the cut-off create is kept"
    );

    // Still offline: nothing is settled, and nothing is forgotten.
    assert_eq!(g.reconcile_cut_offs(Duration::ZERO).await, 0);
    assert!(g.has_cut_offs());

    // Back: all three settled by asking region2 once each, with no read by anyone.
    bring_back(&t).await;
    let shows = t.transport.count("region2", "show");
    assert_eq!(g.reconcile_cut_offs(Duration::ZERO).await, 3);
    assert!(!g.has_cut_offs());
    assert_eq!(t.transport.count("region2", "show"), shows + 3);
    assert!(
        fake.route_get(&lost_id).await.expect("the fake's route table answers").is_none(),
        "a create never made is forgotten"
    );
    for id in &made_ids {
        let route =
            fake.route_get(id).await.expect("the fake's route table answers").expect("a create made below stays known");
        assert_eq!(route.child_id, region2);
    }
    assert_eq!(g.instance(&admin(), &made_ids[0]).await.expect("made").zone_path, ["global", "region2", "dc3"]);
}

/// A batch cut off at a child that made it and then stopped answering: the parent derives the
/// batch's instance ids from the batch id it chose, keeps their routes, and once the child is back
/// finds each of them there at once, made once.
#[tokio::test]
async fn a_batch_cut_off_at_a_child_is_found_again_by_its_derived_ids() {
    let t = Tree::build().await;
    let g = t.gw("global");
    let region2 = t.gw("region2").me().id.clone();
    t.transport.lose_answers(&region2);
    let batch = new_id();
    let pending = spawn_batch(&g, &batch, "cut", 3);
    cut_off(&t, &region2, pending).await;
    bring_back(&t).await;
    let ids = api::batch_member_ids(&batch, 3).expect("a UUID batch id");
    let searches = t.transport.count("region1", "show");
    for id in &ids {
        let found = g.instance(&admin(), id).await.expect("made below, and found by its derived id");
        assert_eq!(found.zone_path, ["global", "region2", "dc3"]);
    }
    assert_eq!(t.transport.count("region1", "show"), searches, "the kept routes sent each straight to region2");
    let listed =
        g.instances(&admin(), &ListQuery { client_id: Some("cut".into()), limit: 100, marker: None }).await.unwrap();
    assert_eq!(listed.instances.len(), 3, "made once");
}

#[tokio::test]
async fn loops_are_refused_at_zone_add_and_at_runtime() {
    let t = Tree::build().await;
    // dc1 adding global as its child would close global → region1 → dc1 → global.
    let e = t.gw("dc1").inspect(&admin(), "http://global", &Credentials::new("a", "b"), None).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::ZoneLoop);
    assert!(e.to_string().contains("dc1 -> global -> region1 -> dc1"), "{e}");
    let e = t.gw("dc1").inspect(&admin(), "http://dc1", &Credentials::new("a", "b"), None).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::ZoneLoop, "a zone is not its own child");
    let e = t.gw("global").inspect(&admin(), "http://dc3", &Credentials::new("a", "b"), None).await;
    assert!(e.is_ok(), "a zone already below (through region2) may be added again: that is multi-root, not a loop");
    // At runtime, a request that already crossed dc1 is refused by dc1.
    let dc1 = t.gw("dc1");
    let path = ZonePath::parse(Some(&format!("{},{}", t.gw("global").me().id, dc1.me().id))).unwrap();
    assert_eq!(dc1.admit(&path).unwrap_err().code(), ErrorCode::ZoneLoop);
    // Suppose dc1 did register global anyway (two operators at the same moment). A request that
    // dc1's aggregate admits but none of its hosts can take (a kvm host with windows AND
    // free-disk 500: dc1 has each on a different host) goes global → region1 → dc1 → global,
    // where it stops.
    dc1.set_children(vec![Child { capabilities: t.gw("global").aggregate().await.unwrap(), ..child_record("global") }]);
    let reqs = vec![
        hv("kvm"),
        Requirement { key: "os".into(), op: Op::Eq, value: Some("windows".into()) },
        Requirement { key: "free-disk".into(), op: Op::Eq, value: Some(500.0.into()) },
    ];
    let e = t.gw("global").create(&admin(), &new_id(), &create("a", reqs)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoValidHost, "{e}");
    assert!(e.to_string().contains("loop"), "the refusal says why: {e}");
}

#[tokio::test]
async fn a_zone_reached_by_two_paths_counts_once_in_aggregates_and_lookups() {
    let t = Tree::build().await;
    let g = t.gw("global");
    let before = g.aggregate().await.unwrap();
    // A diamond: global → region1 → dc1, and now global → dc1 as well.
    let mut kids: Vec<Child> = g.registry().children().iter().map(|c| (**c).clone()).collect();
    kids.push(child_record("dc1"));
    g.set_children(kids);
    t.poll_all().await;
    assert_eq!(g.registry().children().len(), 3);
    let after = g.aggregate().await.unwrap();
    match &after["free-disk"] {
        AggregateEntry::Float { min, max, sum, count } => {
            // region1 500, dc1 500 and 501, dc2 500, dc3 500: five hosts, dc1's counted once.
            assert_eq!((*count, *sum, *min, *max), (5, 2501.0, 500.0, 501.0));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(after["hypervisor"].count(), 5);
    assert_eq!(after, before, "counts, sums, min and max as without the second path");

    // Lookups: region1 and dc1 both answer dc1 for a client only in dc1.
    t.gw("dc1").create(&admin(), &new_id(), &create("solo", vec![])).await.unwrap();
    t.poll_all().await;
    t.poll_all().await;
    assert_eq!(lowest(&t, "global", "solo").await.as_deref(), Some("dc1"));
    // In dc1 and dc2: region1 (which holds both) answers region1, dc1 answers dc1; region1 wins.
    let bsd = Requirement { key: "os".into(), op: Op::Eq, value: Some("bsd".into()) };
    t.gw("dc2").create(&admin(), &new_id(), &create("pair", vec![bsd])).await.unwrap();
    t.gw("dc1").create(&admin(), &new_id(), &create("pair", vec![])).await.unwrap();
    t.poll_all().await;
    t.poll_all().await;
    assert_eq!(lowest(&t, "global", "pair").await.as_deref(), Some("region1"));
    // In dc1 and dc3: only global holds both.
    t.gw("dc3").create(&admin(), &new_id(), &create("solo", vec![])).await.unwrap();
    t.poll_all().await;
    t.poll_all().await;
    assert_eq!(lowest(&t, "global", "solo").await.as_deref(), Some("global"));
}

#[tokio::test]
async fn a_miss_asks_each_child_once_per_generation() {
    let t = Tree::build().await;
    let asked = |child: &str| t.transport.count(child, "lookup");
    assert_eq!(lowest(&t, "global", "nobody").await, None);
    let (r1, r2) = (asked("region1"), asked("region2"));
    assert_eq!((r1, r2), (1, 1), "one fan-out");
    for _ in 0..5 {
        assert_eq!(lowest(&t, "global", "nobody").await, None);
    }
    assert_eq!((asked("region1"), asked("region2")), (r1, r2), "the miss is cached per child");
    // A change below region2 moves its generation: only region2 is asked again, once.
    t.gw("dc3").create(&admin(), &new_id(), &create("other", vec![])).await.unwrap();
    t.poll_all().await;
    t.poll_all().await;
    for _ in 0..5 {
        assert_eq!(lowest(&t, "global", "nobody").await, None);
    }
    assert_eq!((asked("region1"), asked("region2")), (r1, r2 + 1));
}

/// Searching for an unknown instance id asks each child once per (child generation, asker): the
/// miss is remembered, a member's miss does not stand for an admin's, and an instance created
/// below a child (moving its generation) is found on the next search.
#[tokio::test]
async fn an_unknown_instance_id_asks_each_child_once_per_generation() {
    let t = Tree::build().await;
    let asked = |child: &str| t.transport.count(child, "show");
    let g = t.gw("global");
    let ghost = new_id();
    assert_eq!(g.instance(&admin(), &ghost).await.unwrap_err().code(), ErrorCode::NotFound);
    let (r1, r2) = (asked("region1"), asked("region2"));
    assert!(r1 >= 1 && r2 >= 1, "the first search asks every child: {r1}, {r2}");
    for _ in 0..5 {
        assert_eq!(g.instance(&admin(), &ghost).await.unwrap_err().code(), ErrorCode::NotFound);
    }
    assert_eq!((asked("region1"), asked("region2")), (r1, r2), "the miss is cached per child");
    // A member's search is its own: the admin's miss does not answer it.
    assert_eq!(g.instance(&member("acme"), &ghost).await.unwrap_err().code(), ErrorCode::NotFound);
    assert!(asked("region1") > r1, "a member's search asks again");
    // An instance made directly at dc3 (below region2, bypassing global) moves region2's
    // generation: the next search asks region2 again, and the new instance is found.
    let (r1, r2) = (asked("region1"), asked("region2"));
    let made = t.gw("dc3").create(&admin(), &new_id(), &create("late", vec![])).await.unwrap().value;
    t.poll_all().await;
    t.poll_all().await;
    assert_eq!(g.instance(&admin(), &ghost).await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(asked("region1"), r1, "region1 did not change");
    assert!(asked("region2") > r2, "region2 moved: asked again");
    assert_eq!(g.instance(&admin(), &made.id).await.expect("found below region2").id, made.id);
}

/// What the poller records: how many answers and failures, and the last answer's generation.
#[derive(Default)]
struct RecordingSink {
    records: AtomicUsize,
    failures: AtomicUsize,
    generation: AtomicI64,
}

#[async_trait::async_trait]
impl PollSink for RecordingSink {
    fn owns(&self, _child_id: &str) -> bool {
        true
    }
    async fn record(&self, _child: &Child, outcome: PollOutcome) -> bool {
        assert!(!matches!(outcome, PollOutcome::Unchanged), "nothing to record is never recorded");
        match &outcome {
            PollOutcome::Answered(info) => self.generation.store(info.generation, Ordering::SeqCst),
            PollOutcome::Failed(_) => {
                self.failures.fetch_add(1, Ordering::SeqCst);
            }
            PollOutcome::Unchanged => {}
        }
        self.records.fetch_add(1, Ordering::SeqCst);
        true
    }
}

/// The tree with dc3 refusing connections, and a poller of region2's children recording into a
/// fresh sink.
async fn region2_with_dc3_down() -> (Tree, Arc<RecordingSink>, Arc<Poller>) {
    let t = Tree::build().await;
    let sink = Arc::new(RecordingSink::default());
    let poller = Arc::new(Poller::new(t.gw("region2"), sink.clone(), Duration::from_secs(1)));
    t.transport.take_down("id-dc3");
    (t, sink, poller)
}

/// The interval sets the cost at rest, not how soon a dead child is offline: a child whose poll
/// failed while it is online is polled again within `REPOLL_FAILING`, so the failure threshold
/// (3 by default) is reached in seconds with an interval of a minute.
#[tokio::test]
async fn a_failing_child_is_polled_again_within_a_second_whatever_the_interval() {
    let (_t, sink, poller) = region2_with_dc3_down().await;
    let settings = PollSettings {
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(1),
        jitter: Duration::ZERO,
        max_concurrent: 4,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(federation::poll::run(poller, settings, stop.clone()));
    // The first round at once, then one every REPOLL_FAILING: three failures in about 2 s.
    let started = std::time::Instant::now();
    let failed = came_true_within(REPOLL_FAILING * 10, || sink.failures.load(Ordering::SeqCst) >= 3).await;
    let took = started.elapsed();
    stop.cancel();
    run.await.expect("the poll loop stops");
    assert!(failed, "three failed polls of a dead child, with a 60 s interval, within 10 s");
    assert!(took >= REPOLL_FAILING, "the re-polls are spaced, not back to back: three failures in {took:?}");
}

/// Between intervals only the children in doubt are polled, each second: one offline (to bring it
/// back soon once it answers) and one whose last poll failed. Their healthy siblings wait for the
/// interval.
#[tokio::test]
async fn only_the_children_in_doubt_are_polled_between_intervals() {
    let t = Tree::build().await;
    let global = t.gw("global");
    // region1 answers but is offline in global's registry; region2 is healthy.
    let children: Vec<Child> =
        global.registry().children().iter().map(|c| Child { online: c.name != "region1", ..(**c).clone() }).collect();
    global.registry().replace(children);
    let sink = Arc::new(RecordingSink::default());
    let poller = Arc::new(Poller::new(global, sink, Duration::from_secs(1)));
    let settings = PollSettings {
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(1),
        jitter: Duration::ZERO,
        max_concurrent: 4,
    };
    let (region1, region2) = (t.transport.count("region1", "zone"), t.transport.count("region2", "zone"));
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(federation::poll::run(poller, settings, stop.clone()));
    // The first round polls both; then region1 alone, every REPOLL_FAILING.
    let polled_again =
        came_true_within(REPOLL_FAILING * 5, || t.transport.count("region1", "zone") >= region1 + 3).await;
    stop.cancel();
    run.await.expect("the poll loop stops");
    assert!(polled_again, "the offline region1 was polled three times within 5 s with a 60 s interval");
    assert_eq!(
        t.transport.count("region2", "zone"),
        region2 + 1,
        "the healthy region2 was polled once, in the first round"
    );
}

/// A child added to the registry (zone-add) is watched at once, not at the next reconcile tick:
/// a change made at it in between would otherwise wait for the next poll.
#[tokio::test]
async fn a_new_child_is_watched_at_once() {
    let t = Tree::build().await;
    let region2 = t.gw("region2");
    let sink = Arc::new(RecordingSink::default());
    let poller = Arc::new(Poller::new(region2.clone(), sink, Duration::from_secs(1)));
    let settings = WatchSettings { wait: Duration::from_secs(25), retry: Duration::from_secs(60) };
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(federation::watch::run(poller, settings, stop.clone()));
    // Just past a reconcile tick (a second apart, on the process's grid), so waiting for the
    // next one would take most of a second.
    federation::ticks::next(Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // dc1 joins region2's children. This transport serves no watches, so dc1's watch fails at
    // once and polls it: the poll shows when the watch started.
    let mut children: Vec<Child> = region2.registry().children().iter().map(|c| (**c).clone()).collect();
    children.push(child_record("dc1"));
    let before = t.transport.count("dc1", "zone"); // region1 polled dc1 when the tree was built
    region2.registry().replace(children);
    let added = std::time::Instant::now();
    let started = came_true_within(Duration::from_millis(600), || t.transport.count("dc1", "zone") > before).await;
    stop.cancel();
    run.await.expect("the watches stop");
    assert!(started, "dc1 watched within 600 ms of joining the registry (waited {:?})", added.elapsed());
}

/// Waits up to `within` for `done`; whether it came true.
async fn came_true_within(within: Duration, done: impl Fn() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done()
}

/// A watch that breaks polls its child at once: a dead child's refused connection counts
/// toward the failure threshold without waiting for the poll loop.
#[tokio::test]
async fn a_broken_watch_polls_the_child() {
    let (t, sink, poller) = region2_with_dc3_down().await;
    let settings = WatchSettings { wait: Duration::from_secs(25), retry: Duration::from_millis(100) };
    let stop = tokio_util::sync::CancellationToken::new();
    // No poll loop: every failure recorded comes from the watch.
    let run = tokio::spawn(federation::watch::run(poller, settings, stop.clone()));
    let failed = came_true_within(Duration::from_secs(10), || sink.failures.load(Ordering::SeqCst) >= 2).await;
    stop.cancel();
    run.await.expect("the watches stop");
    assert!(failed, "each broken watch of dc3 polled it (failures recorded: {})", sink.failures.load(Ordering::SeqCst));
    assert!(t.transport.count("dc3", "zone") >= 2, "the polls reached dc3's transport");
}

/// The poll loop and a watch may poll one child at once. An answer read before a change and
/// recorded after the answer read after it would put the old state back until the next poll.
#[tokio::test]
async fn polls_of_one_child_are_recorded_in_the_order_they_were_asked() {
    let t = Tree::build().await;
    let sink = Arc::new(RecordingSink::default());
    let poller = Arc::new(Poller::new(t.gw("region2"), sink.clone(), std::time::Duration::from_secs(5)));
    // Offline in this copy, so every poll reads the child in full and records what it read.
    let dc3 = Arc::new(Child {
        online: false,
        ..(*t.gw("region2").registry().get("id-dc3").expect("dc3 is region2's child")).clone()
    });
    let poll = |poller: &Arc<Poller>, child: &Arc<Child>| {
        let (poller, child) = (poller.clone(), child.clone());
        tokio::spawn(async move { poller.poll(&child).await })
    };

    let hold = t.transport.hold_answers("id-dc3");
    let first = poll(&poller, &dc3);
    hold.read.notified().await; // the first poll has read dc3 as it was
    t.transport.heal(); // later answers come back at once
    t.gw("dc3").create(&admin(), &new_id(), &create("acme", vec![])).await.expect("dc3 has room for acme");
    let changed = t.fake("dc3").generation.load(Ordering::SeqCst);
    assert!(changed > 0, "the create moved dc3's generation");
    let mut second = poll(&poller, &dc3);
    // One at a time: the second poll waits for the first. (Were they not, it would finish here
    // and the first, released below, would record the older answer last.)
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), &mut second).await.is_err(),
        "the second poll of a child waits for the first to be recorded"
    );
    hold.release.notify_one();
    first.await.expect("the first poll ends once released");
    second.await.expect("the second poll ends after the first");
    assert_eq!(sink.generation.load(Ordering::SeqCst), changed, "the newer answer is recorded last");
}

#[tokio::test]
async fn an_unchanged_child_costs_a_conditional_request_and_records_nothing() {
    let t = Tree::build().await;
    let sink = Arc::new(RecordingSink::default());
    let poller = Poller::new(t.gw("region2"), sink.clone(), std::time::Duration::from_secs(1));
    let dc3 = t.gw("region2").registry().get("id-dc3").expect("dc3 is region2's child");
    let records = || sink.records.load(Ordering::SeqCst);
    poller.poll(&dc3).await;
    assert_eq!(records(), 1, "the first answer is recorded");
    for _ in 0..3 {
        poller.poll(&dc3).await;
    }
    assert_eq!(records(), 1, "unchanged (304): nothing recorded");
    t.gw("dc3").create(&admin(), &new_id(), &create("acme", vec![])).await.expect("dc3 has room for acme");
    poller.poll(&dc3).await;
    assert_eq!(records(), 2, "a change is read and recorded");
    poller.poll(&dc3).await;
    assert_eq!(records(), 2);
    // An offline child is always read in full: its answer must be recorded to bring it back.
    let offline = Child { online: false, ..(*dc3).clone() };
    poller.poll(&offline).await;
    assert_eq!(records(), 3);
}
