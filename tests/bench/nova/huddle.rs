//! A huddle zone in memory: what its parent (a DC's gateway) can learn of it through the API, and
//! nothing more. It holds its aggregate (as if merged over its hosts), its generation, and how
//! many instances each client has in it; it answers polls, watches, lookups, placements and
//! creates as a leaf zone's node would, without hosts, a database or HTTP.
//!
//! Cost: a lookup is a binary search over the huddle's clients (about 700 at the Nova design's
//! size); a create an insertion into that sorted list.

use std::sync::Mutex;

use api::{Aggregate, AggregateEntry, ErrorCode, LowestZone, Placement, PlacementRequest, Resources};
use federation::matching::{may_satisfy, FREE_DISK_GB, FREE_MEMORY_MB, FREE_VCPUS};
use federation::FedError;
use tokio::sync::watch;

use crate::shape::{api_url, client_index, mix, Shape, ZoneRef};

/// What every host of the model has: vCPUs, memory (MB) and disk (GB).
const HOST: Resources = Resources { vcpus: 128, memory_mb: 524_288, disk_gb: 8_000 };
/// What each instance of the population takes.
pub const INSTANCE: Resources = Resources { vcpus: 1, memory_mb: 2_048, disk_gb: 40 };

struct State {
    aggregate: Aggregate,
    /// `(client, instances)`, sorted by client.
    clients: Vec<(u32, u32)>,
}

pub struct Huddle {
    pub index: usize,
    pub id: String,
    pub name: String,
    pub api_url: String,
    // A std mutex: held for a copy or a small update, never across an await.
    state: Mutex<State>,
    generation: watch::Sender<i64>,
}

impl Huddle {
    pub fn new(shape: &Shape, index: usize, clients: Vec<(u32, u32)>) -> Huddle {
        let zone = ZoneRef::Huddle(index);
        let name = shape.name(zone);
        let instances: u64 = clients.iter().map(|(_, n)| u64::from(*n)).sum();
        Huddle {
            index,
            id: zone.id(),
            api_url: api_url(&name),
            state: Mutex::new(State { aggregate: aggregate(shape, index, instances), clients }),
            name,
            generation: watch::channel(0).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn generation(&self) -> i64 {
        *self.generation.borrow()
    }

    /// What a watch on this zone waits on.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.generation.subscribe()
    }

    pub fn aggregate(&self) -> Aggregate {
        self.state().aggregate.clone()
    }

    /// How many instances `client` has here.
    pub fn instances_of(&self, client: u32) -> u32 {
        let s = self.state();
        s.clients.binary_search_by_key(&client, |(c, _)| *c).map(|i| s.clients[i].1).unwrap_or(0)
    }

    /// The `k`-th client with instances here (wrapping), if any.
    pub fn some_client(&self, k: u64) -> Option<u32> {
        let s = self.state();
        (!s.clients.is_empty()).then(|| s.clients[(k % s.clients.len() as u64) as usize].0)
    }

    /// This zone as the lowest zone of `client_id`, when it holds any of its instances.
    pub fn lowest_zone(&self, client_id: &str) -> Option<LowestZone> {
        let client = client_index(client_id)?;
        (self.instances_of(client) > 0).then(|| LowestZone {
            client_id: client_id.to_owned(),
            zone_id: self.id.clone(),
            zone_name: self.name.clone(),
            api_url: self.api_url.clone(),
            path: vec![self.name.clone()],
            unreachable_zones: Vec::new(),
        })
    }

    /// Where a create would land here: a host, when the aggregate may satisfy the request. The
    /// model has no hosts, so the aggregate's answer is taken as the hosts' (a real huddle may
    /// still refuse with `no_valid_host` when no single host meets every requirement).
    pub fn placement(&self, req: &PlacementRequest, seed: &str) -> Result<Placement, FedError> {
        let s = self.state();
        if !may_satisfy(&s.aggregate, &req.requirements, &req.resources) {
            return Err(FedError::api(
                ErrorCode::NoValidHost,
                format!("no host of zone {} meets the requirements with the resources free", self.name),
            ));
        }
        let hosts = s.aggregate.get(FREE_VCPUS).map_or(1, |e| e.count().max(1)) as u64;
        let host = mix(seed.bytes().fold(self.index as u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))));
        Ok(Placement { zone_path: vec![self.name.clone()], host_id: format!("{}-host-{:03}", self.name, host % hosts) })
    }

    /// An instance of `client` made here (a create through the tree, or one made directly at this
    /// zone): the client's count, the free capacity and the instance count move, and so does the
    /// generation. Returns the new generation.
    pub fn add_instance(&self, client: u32, r: &Resources) -> i64 {
        {
            let mut s = self.state();
            match s.clients.binary_search_by_key(&client, |(c, _)| *c) {
                Ok(i) => s.clients[i].1 += 1,
                Err(i) => s.clients.insert(i, (client, 1)),
            }
            // Free capacity down by the instance's resources, the instance count up by one.
            for (key, delta) in
                [(FREE_VCPUS, -r.vcpus), (FREE_MEMORY_MB, -r.memory_mb), (FREE_DISK_GB, -r.disk_gb), (INSTANCES, 1)]
            {
                if let Some(AggregateEntry::Float { sum, .. }) = s.aggregate.get_mut(key) {
                    *sum += delta as f64;
                }
            }
        }
        let mut g = 0;
        self.generation.send_modify(|gen| {
            *gen += 1;
            g = *gen;
        });
        g
    }
}

pub const INSTANCES: &str = "number-of-instances";

/// A huddle's aggregate, as the merge of its hosts would make it (not computed from hosts: the
/// model has none). Attributes follow the huddle's global index, so every scale has huddles of
/// each kind: kvm, xen and hyperv; x86_64 and aarch64 (one in ten); GPUs (one in ten: half of
/// them with aarch64 kvm hosts, half with x86_64 ones, so the merged aggregate of huddles 10 to 19
/// passes "kvm, aarch64 and a GPU" while none of them has all three).
pub fn aggregate(shape: &Shape, index: usize, instances: u64) -> Aggregate {
    let g = index as u64;
    let hosts = shape.hosts_per_huddle as i64;
    let strings = |values: &[&str]| AggregateEntry::String {
        values: values.iter().map(|v| v.to_string()).collect(),
        count: hosts,
        truncated: false,
    };
    let boolean = |any: bool, all: bool| AggregateEntry::Bool { any, all, count: hosts };
    let float = |min: f64, max: f64, sum: f64| AggregateEntry::Float { min, max, sum, count: hosts };
    let per_host = instances as f64 / hosts as f64;
    let (low, high) = ((per_host * 0.5).floor(), (per_host * 1.5).ceil());
    let free = |capacity: i64, each: i64| {
        let c = capacity as f64;
        let e = each as f64;
        float((c - high * e).max(0.0), c - low * e, hosts as f64 * c - instances as f64 * e)
    };
    let dc = shape.dc_of(index);
    let mut a = Aggregate::new();
    a.insert(
        "hypervisor".into(),
        match g % 5 {
            4 => strings(&["hyperv"]),
            2 => strings(&["kvm", "xen"]),
            _ => strings(&["kvm"]),
        },
    );
    a.insert("arch".into(), if g % 10 == 3 { strings(&["aarch64"]) } else { strings(&["x86_64"]) });
    a.insert(
        "os".into(),
        match (g % 5, g % 7) {
            (4, _) => strings(&["windows"]),
            (_, 0) => strings(&["linux", "windows"]),
            _ => strings(&["linux"]),
        },
    );
    a.insert("region".into(), strings(&[&shape.name(ZoneRef::Region(shape.region_of_dc(dc)))]));
    a.insert("dc".into(), strings(&[&shape.name(ZoneRef::Dc(dc))]));
    a.insert("gpu".into(), boolean(g % 20 == 3 || g % 20 == 17, false));
    a.insert("ssd".into(), boolean(true, !g.is_multiple_of(3)));
    a.insert("accept-migrations".into(), boolean(true, true));
    a.insert("free-disk".into(), float(200.0 + (g % 50) as f64, 2_000.0, hosts as f64 * 1_000.0));
    a.insert("average-load".into(), float(0.1, 4.0 + (g % 8) as f64, hosts as f64 * 1.5));
    a.insert(INSTANCES.into(), float(low, high, instances as f64));
    a.insert(FREE_VCPUS.into(), free(HOST.vcpus, INSTANCE.vcpus));
    a.insert(FREE_MEMORY_MB.into(), free(HOST.memory_mb, INSTANCE.memory_mb));
    a.insert(FREE_DISK_GB.into(), free(HOST.disk_gb, INSTANCE.disk_gb));
    a
}
