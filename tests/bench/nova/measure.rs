//! The measurements, each checking the answers it times: a wrong answer is an error, not a figure.

use std::hint::black_box;
use std::time::{Duration, Instant};

use api::{Aggregate, AggregateEntry, InstanceCreate, LowestZone, Op, PlacementRequest, Requirement};
use federation::lookup::{LookupCache, Source};
use federation::matching::{may_satisfy, FREE_MEMORY_MB};
use federation::route::candidates;
use federation::{Principal, RequestContext, ZonePath};

use crate::huddle::INSTANCE;
use crate::shape::{api_url, client_id, Shape, Spread, ZoneRef};
use crate::transport::Op as Call;
use crate::tree::{Level, Tree};

/// Percentiles of a sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Stats {
    pub fn of(mut v: Vec<Duration>) -> Stats {
        if v.is_empty() {
            return Stats::default();
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        Stats { n: v.len(), p50: at(0.50), p99: at(0.99), max: v[v.len() - 1] }
    }
}

/// A duration in milliseconds, to the microsecond.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

pub fn admin() -> RequestContext {
    RequestContext { caller: Principal::admin("ops"), path: ZonePath::empty() }
}

/// The create of the figures: three requirements (kvm, aarch64, a GPU) that one huddle in twenty
/// meets: ten in every DC of 200 huddles (see [`crate::huddle::aggregate`]).
pub fn three_requirements() -> Vec<Requirement> {
    let eq = |key: &str, value: serde_json::Value| Requirement { key: key.into(), op: Op::Eq, value: Some(value) };
    vec![eq("hypervisor", "kvm".into()), eq("arch", "aarch64".into()), eq("gpu", true.into())]
}

/// The zone a lookup must answer for `client`.
pub fn expected(shape: &Shape, client: usize) -> ZoneRef {
    shape.lowest_of(&shape.huddles_of(client))
}

fn check(shape: &Shape, client: &str, got: Option<&LowestZone>, want: ZoneRef) -> Result<(), String> {
    match got {
        Some(z) if z.zone_id == want.id() && z.zone_name == shape.name(want) => Ok(()),
        other => Err(format!(
            "client {client}: the root answered {:?}, not {}",
            other.map(|z| &z.zone_name),
            shape.name(want)
        )),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LookupFigures {
    pub cold: Stats,
    pub cached: Stats,
    /// Requests to child zones per cold lookup (all levels), and for all cached lookups together.
    pub cold_requests: f64,
    pub cached_requests: u64,
    /// The level of the answers (the same for every client of a spread here).
    pub answer: ZoneRef,
}

/// How long the cached lookups of one spread may take: those of clients in 50 huddles cost
/// milliseconds each at the Nova design's size.
const CACHED_FOR: Duration = Duration::from_secs(10);

/// `samples` clients of `spread`, spaced over its range: each one's first lookup at the root
/// (cold: nobody has been asked about it), then `rounds` more of each (cached), fewer rounds when
/// they pass [`CACHED_FOR`] (one at least).
pub async fn lookups(tree: &Tree, spread: Spread, samples: usize, rounds: usize) -> Result<LookupFigures, String> {
    let shape = &tree.shape;
    let (first, count) = (shape.first_of(spread), shape.count_of(spread));
    let samples = samples.min(count).max(1);
    let clients: Vec<usize> = (0..samples).map(|i| first + i * count / samples).collect();
    let root = &tree.root.gateway;
    let ctx = admin();
    let mut cold = Vec::with_capacity(samples);
    let asked = tree.transport.calls(Call::Lookup);
    let mut answer = ZoneRef::Global;
    for &c in &clients {
        let id = client_id(c);
        let want = expected(shape, c);
        let t = Instant::now();
        let got = root.lowest_zone(&ctx, &id).await.map_err(|e| e.to_string())?;
        cold.push(t.elapsed());
        check(shape, &id, got.answer.as_ref(), want)?;
        answer = want;
    }
    let cold_requests = (tree.transport.calls(Call::Lookup) - asked) as f64 / samples as f64;
    let asked = tree.transport.calls(Call::Lookup);
    let mut cached = Vec::with_capacity(samples * rounds);
    let t = Instant::now();
    for round in 0..rounds {
        if round > 0 && t.elapsed() > CACHED_FOR {
            break;
        }
        for &c in &clients {
            let id = client_id(c);
            let t = Instant::now();
            let got = root.lowest_zone(&ctx, &id).await.map_err(|e| e.to_string())?;
            cached.push(t.elapsed());
            check(shape, &id, got.answer.as_ref(), expected(shape, c))?;
        }
    }
    let cached_requests = tree.transport.calls(Call::Lookup) - asked;
    Ok(LookupFigures { cold: Stats::of(cold), cached: Stats::of(cached), cold_requests, cached_requests, answer })
}

/// The routing decision alone, as `Gateway::create` and `Gateway::placement` make it: the
/// zone's children from its registry, ranked by `federation::route::candidates`. Returns the
/// times and the candidates of the last decision, each checked to pass the requirements.
pub fn decisions(level: &Level, requirements: &[Requirement], n: usize) -> Result<(Stats, usize), String> {
    let own = Aggregate::new();
    let mut times = Vec::with_capacity(n);
    let mut found = 0;
    for _ in 0..n {
        let t = Instant::now();
        let children = level.gateway.registry().children();
        let ranked = candidates(&own, &children, requirements, &INSTANCE);
        times.push(t.elapsed());
        found = black_box(ranked).len();
    }
    let children = level.gateway.registry().children();
    for c in candidates(&own, &children, requirements, &INSTANCE) {
        match c.target {
            federation::route::Target::Child(child) if may_satisfy(&child.capabilities, requirements, &INSTANCE) => {}
            other => return Err(format!("a candidate that does not pass: {other:?}")),
        }
    }
    Ok((Stats::of(times), found))
}

/// Checks that a zone path from the root ends at a huddle that meets the requirements.
fn landed(tree: &Tree, path: &[String], requirements: &[Requirement]) -> Result<usize, String> {
    let huddle = path.last().and_then(|name| tree.huddles.iter().find(|h| &h.name == name));
    match huddle {
        Some(h) if path.len() == 4 && may_satisfy(&h.aggregate(), requirements, &INSTANCE) => Ok(h.index),
        _ => Err(format!("landed at {path:?}, not at a huddle that meets the requirements")),
    }
}

/// `POST /v1/placements` at the root, through every level in process. Returns the times and how
/// many zones refused on the way per placement, on average (a merged aggregate that passed where
/// no zone below could take it).
pub async fn placements(tree: &Tree, requirements: &[Requirement], n: usize) -> Result<(Stats, f64), String> {
    let req = PlacementRequest { requirements: requirements.to_vec(), resources: INSTANCE };
    let ctx = admin();
    let asked = tree.transport.calls(Call::Placement);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let p = tree.root.gateway.placement(&ctx, &req).await.map_err(|e| e.to_string())?;
        times.push(t.elapsed());
        landed(tree, &p.zone_path, requirements)?;
    }
    // Three zones take part in a placement that nobody refuses: a region, a DC and a huddle.
    let extra = (tree.transport.calls(Call::Placement) - asked).saturating_sub(3 * n as u64);
    Ok((Stats::of(times), extra as f64 / n.max(1) as f64))
}

#[derive(Debug, Clone, Copy)]
pub struct CreateFigures {
    pub creates: Stats,
    /// Zones asked by the root's lookup of the new client right after its create, on average:
    /// for clients the root had looked up before the create (every zone on the way had cached
    /// "not managed", so each could compose its new answer: 0 when that answer survived), and
    /// for clients never looked up (a zone on the way knows only the answer of the child the
    /// create went to, not its other children's).
    pub asked_known: f64,
    pub asked_new: f64,
    /// One client of one huddle per DC is looked up at the root before the creates, and again
    /// after each create once its watches settled: the zones asked per such lookup, on average
    /// (0 when the root's cache kept the answer).
    pub asked_bystander: f64,
}

/// Creates through the root for new clients, `pause` apart (so each one's watches settle), every
/// other one for a client the root looked up first. Each must land at a huddle meeting the
/// requirements, and the root's lookup right after must answer that huddle.
pub async fn creates(
    tree: &Tree,
    requirements: &[Requirement],
    n: usize,
    first_client: usize,
    pause: Duration,
) -> Result<CreateFigures, String> {
    let ctx = admin();
    let shape = &tree.shape;
    let root = &tree.root.gateway;
    let bystanders: Vec<usize> = (0..shape.dcs()).map(|d| one_huddle_client_of_dc(shape, d)).collect();
    for c in &bystanders {
        root.lowest_zone(&ctx, &client_id(*c)).await.map_err(|e| e.to_string())?;
    }
    let mut times = Vec::with_capacity(n);
    // (asked, lookups): clients looked up before, new clients, bystanders.
    let mut asked = [(0u64, 0u64); 3];
    for i in 0..n {
        let client = client_id(first_client + i);
        let req = InstanceCreate {
            name: format!("vm-{i}"),
            client_id: Some(client.clone()),
            requirements: requirements.to_vec(),
            resources: INSTANCE,
            count: None,
        };
        let id = format!("{:08x}-0000-4000-8000-{:012x}", 0xc0ea7e, i);
        let known = i % 2 == 0;
        if known {
            let before = root.lowest_zone(&ctx, &client).await.map_err(|e| e.to_string())?;
            if before.answer.is_some() {
                return Err(format!("{client} is managed before its first instance"));
            }
        }
        let t = Instant::now();
        let made = root.create(&ctx, &id, &req).await.map_err(|e| e.to_string())?;
        times.push(t.elapsed());
        let h = landed(tree, &made.value.zone_path, requirements)?;
        let before = tree.transport.calls(Call::Lookup);
        let got = root.lowest_zone(&ctx, &client).await.map_err(|e| e.to_string())?;
        check(shape, &client, got.answer.as_ref(), ZoneRef::Huddle(h))?;
        let k = usize::from(!known);
        asked[k].0 += tree.transport.calls(Call::Lookup) - before;
        asked[k].1 += 1;
        tokio::time::sleep(pause).await;
        for &c in &bystanders {
            let before = tree.transport.calls(Call::Lookup);
            let id = client_id(c);
            let got = root.lowest_zone(&ctx, &id).await.map_err(|e| e.to_string())?;
            check(shape, &id, got.answer.as_ref(), expected(shape, c))?;
            asked[2].0 += tree.transport.calls(Call::Lookup) - before;
            asked[2].1 += 1;
        }
    }
    let mean = |(a, n): (u64, u64)| if n == 0 { 0.0 } else { a as f64 / n as f64 };
    Ok(CreateFigures {
        creates: Stats::of(times),
        asked_known: mean(asked[0]),
        asked_new: mean(asked[1]),
        asked_bystander: mean(asked[2]),
    })
}

/// The first client of one huddle whose huddle is in DC `dc`.
fn one_huddle_client_of_dc(shape: &Shape, dc: usize) -> usize {
    let (first, count) = (shape.first_of(Spread::One), shape.count_of(Spread::One));
    (first..first + count).find(|&c| shape.dc_of(shape.huddles_of(c)[0]) == dc).unwrap_or(first)
}

#[derive(Debug, Clone, Copy)]
pub struct ChurnFigures {
    /// Leaf changes made per second, and lookups done.
    pub changes_per_sec: f64,
    /// CPU of the whole process meanwhile, in % of one core.
    pub cpu: f64,
    pub lookups: Stats,
    /// Zones asked per lookup, on average.
    pub asked: f64,
    /// The root's generation moves per second meanwhile (changes recorded at the root).
    pub root_moves_per_sec: f64,
}

/// Lookups at the root, one after another for `duration`, over `clients` clients of one huddle
/// (each looked up once before), while instances are added at random huddles at `rate` a second
/// for clients already there (so every answer stays the same and is checked). Shows what the
/// cache is worth while the tree changes: every change moves the generations on its path, and
/// the root's next lookup of any client asks that path again.
pub async fn churn(tree: &Tree, rate: f64, duration: Duration, clients: usize) -> Result<ChurnFigures, String> {
    let ctx = admin();
    let shape = &tree.shape;
    let root = &tree.root.gateway;
    let (first, count) = (shape.first_of(Spread::One), shape.count_of(Spread::One));
    let clients: Vec<usize> = (0..clients.min(count).max(1)).map(|i| first + i * count / clients.max(1)).collect();
    for &c in &clients {
        root.lowest_zone(&ctx, &client_id(c)).await.map_err(|e| e.to_string())?;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let changer = {
        let huddles = tree.huddles.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut made = 0u64;
            if rate <= 0.0 {
                return made;
            }
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return made,
                    _ = tick.tick() => {}
                }
                let h = &huddles[(crate::shape::mix(made) % huddles.len() as u64) as usize];
                if let Some(client) = h.some_client(made) {
                    h.add_instance(client, &INSTANCE);
                    made += 1;
                }
            }
        })
    };
    let root_before = tree.root.hub.generation();
    let asked_before = tree.transport.calls(Call::Lookup);
    let cpu_before = cpu_time();
    let mut times = Vec::new();
    let t = Instant::now();
    let mut k = 0;
    while t.elapsed() < duration {
        let c = clients[k % clients.len()];
        k += 1;
        let id = client_id(c);
        let s = Instant::now();
        let got = root.lowest_zone(&ctx, &id).await.map_err(|e| e.to_string())?;
        times.push(s.elapsed());
        check(shape, &id, got.answer.as_ref(), expected(shape, c))?;
        // One lookup after another, but let the watches run on a busy runtime.
        if k.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu_before).as_secs_f64() / elapsed * 100.0;
    stop.cancel();
    let made = changer.await.map_err(|e| e.to_string())?;
    let asked = tree.transport.calls(Call::Lookup) - asked_before;
    Ok(ChurnFigures {
        changes_per_sec: made as f64 / elapsed,
        cpu,
        asked: asked as f64 / times.len().max(1) as f64,
        lookups: Stats::of(times),
        root_moves_per_sec: (tree.root.hub.generation() - root_before) as f64 / elapsed,
    })
}

#[derive(Debug, Clone, Copy)]
pub struct Propagation {
    /// From the change at the huddle until its DC, its region and the root recorded it (each
    /// level's generation moved, its registry holding the new aggregate).
    pub dc: Stats,
    pub region: Stats,
    pub root: Stats,
    /// The root's first lookup of the changed client afterwards (it had cached "not managed"),
    /// and the zones it asked.
    pub lookup: Stats,
    pub lookup_asked: f64,
}

/// `n` leaf changes, `pause` apart: an instance of a new client created directly at a huddle,
/// after the root cached "not managed" for that client. Each is timed until the root's
/// aggregate has it (free memory down by exactly the instance's) and then the root's lookup must
/// answer the huddle.
pub async fn leaf_changes(
    tree: &Tree,
    n: usize,
    first_client: usize,
    pause: Duration,
    timeout: Duration,
) -> Result<Propagation, String> {
    let ctx = admin();
    let root = &tree.root;
    let (mut dc_t, mut region_t, mut root_t, mut lookup_t) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut asked_total = 0;
    let huddles = tree.huddles.len();
    for i in 0..n {
        let h = (i * 7919 + 13) % huddles;
        let huddle = &tree.huddles[h];
        let (dc, region) = tree.above(h);
        let client = first_client + i;
        let id = client_id(client);
        let before = root.gateway.lowest_zone(&ctx, &id).await.map_err(|e| e.to_string())?;
        if before.answer.is_some() {
            return Err(format!("{id} is managed before its first instance"));
        }
        let free_before = free_memory(&root.gateway.aggregate().await.map_err(|e| e.to_string())?);
        let (mut dc_rx, mut region_rx, mut root_rx) =
            (dc.hub.subscribe(), region.hub.subscribe(), root.hub.subscribe());
        let gens = (dc.hub.generation(), region.hub.generation(), root.hub.generation());
        let t = Instant::now();
        huddle.add_instance(client as u32, &INSTANCE);
        let wait = async {
            dc_rx.wait_for(|g| *g > gens.0).await.map_err(|e| e.to_string())?;
            let at_dc = t.elapsed();
            region_rx.wait_for(|g| *g > gens.1).await.map_err(|e| e.to_string())?;
            let at_region = t.elapsed();
            root_rx.wait_for(|g| *g > gens.2).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((at_dc, at_region, t.elapsed()))
        };
        let (at_dc, at_region, at_root) = tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| format!("change {i} at {} did not reach the root within {timeout:?}", huddle.name))??;
        let free_after = free_memory(&root.gateway.aggregate().await.map_err(|e| e.to_string())?);
        if free_before - free_after != INSTANCE.memory_mb as f64 {
            return Err(format!(
                "the root's free memory went from {free_before} to {free_after}, not down by {}",
                INSTANCE.memory_mb
            ));
        }
        let asked = tree.transport.calls(Call::Lookup);
        let t = Instant::now();
        let got = root.gateway.lowest_zone(&ctx, &id).await.map_err(|e| e.to_string())?;
        lookup_t.push(t.elapsed());
        asked_total += tree.transport.calls(Call::Lookup) - asked;
        check(&tree.shape, &id, got.answer.as_ref(), ZoneRef::Huddle(h))?;
        dc_t.push(at_dc);
        region_t.push(at_region);
        root_t.push(at_root);
        tokio::time::sleep(pause).await;
    }
    Ok(Propagation {
        dc: Stats::of(dc_t),
        region: Stats::of(region_t),
        root: Stats::of(root_t),
        lookup: Stats::of(lookup_t),
        lookup_asked: asked_total as f64 / n.max(1) as f64,
    })
}

/// What one change costs on its way up, step by step (each step timed `n` times on the tree at
/// rest): a parent's read of a child (`GET /v1/zone?subtree=true` with its `ETag`, what a watch's
/// answer and the re-read each compute) and a parent's recording of it (the registry replaced,
/// its children merged per zone id).
#[derive(Debug, Clone, Copy)]
pub struct StepCosts {
    pub read_huddle: Stats,
    pub read_dc: Stats,
    pub read_region: Stats,
    /// Each: the rows copied (the model's stand-in for zone-node reading its `child_zones`
    /// rows), then the registry replaced (`Gateway::set_children`: the children merged per zone id).
    pub record_at_dc: (Stats, Stats),
    pub record_at_region: (Stats, Stats),
    pub record_at_root: (Stats, Stats),
}

pub async fn step_costs(tree: &Tree, n: usize) -> Result<StepCosts, String> {
    async fn read(tree: &Tree, parent: &Level, n: usize) -> Result<Stats, String> {
        let child = parent.gateway.registry().children()[0].clone();
        let caller = Principal::admin("zone:parent");
        let path = ZonePath::empty().through(&parent.gateway.me().id);
        let hop = federation::Hop {
            path: &path,
            caller: &caller,
            origin: &parent.gateway.me().name,
            timeout: Duration::from_secs(5),
        };
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let answer = federation::ChildTransport::zone_if_changed(&*tree.transport, &child, &hop, None).await;
            times.push(t.elapsed());
            black_box(answer.map_err(|e| e.to_string())?);
        }
        Ok(Stats::of(times))
    }
    fn record(level: &Level, n: usize) -> (Stats, Stats) {
        let (mut copy, mut replace) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let t = Instant::now();
            let rows: Vec<federation::Child> =
                level.gateway.registry().children().iter().map(|c| (**c).clone()).collect();
            copy.push(t.elapsed());
            let t = Instant::now();
            level.gateway.set_children(rows);
            replace.push(t.elapsed());
        }
        (Stats::of(copy), Stats::of(replace))
    }
    Ok(StepCosts {
        read_huddle: read(tree, &tree.dcs[0], n).await?,
        read_dc: read(tree, &tree.regions[0], n).await?,
        read_region: read(tree, &tree.root, n).await?,
        record_at_dc: record(&tree.dcs[0], n),
        record_at_region: record(&tree.regions[0], n),
        record_at_root: record(&tree.root, n),
    })
}

fn free_memory(agg: &Aggregate) -> f64 {
    match agg.get(FREE_MEMORY_MB) {
        Some(AggregateEntry::Float { sum, .. }) => *sum,
        _ => 0.0,
    }
}

/// Live bytes of a [`LookupCache`] holding `clients` clients' answers from `children` children
/// and this zone's own hosts, as a zone's cache holds them after its lookups: per client one
/// child answers a zone `depth` levels down (a region answers the root with a huddle: 3; a huddle
/// answers its DC with itself: 1), the others and the own hosts "not managed". Filled through the
/// cache's public calls, as `Gateway::lowest_zone` does; measured with `allocated`, then dropped.
pub fn cache_bytes(clients: usize, children: usize, depth: usize, allocated: fn() -> usize) -> usize {
    let before = allocated();
    let cache = LookupCache::new((clients * (children + 1)) as u64 + 1);
    let sources: Vec<Source> =
        std::iter::once(Source::Local).chain((0..children).map(|c| Source::Child(ZoneRef::Dc(c).id()))).collect();
    for c in 0..clients {
        let id = client_id(c);
        let home = 1 + c % children;
        for (i, source) in sources.iter().enumerate() {
            let answer = (i == home).then(|| {
                let huddle = format!("r1-dc1-h{:03}", c % 200 + 1);
                let path = ["r1".to_owned(), "r1-dc1".to_owned(), huddle.clone()];
                LowestZone {
                    client_id: id.clone(),
                    zone_id: ZoneRef::Huddle(c % 5000).id(),
                    api_url: api_url(&huddle),
                    zone_name: huddle,
                    path: path[3 - depth.clamp(1, 3)..].to_vec(),
                    unreachable_zones: Vec::new(),
                }
            });
            let ticket = cache.ticket(source);
            cache.fetched(source, &id, ticket, Some(1), answer);
        }
    }
    let bytes = allocated().saturating_sub(before);
    // Every answer must be there (none evicted, none refused), or the bytes mean nothing.
    let probe = client_id(clients - 1);
    assert!(sources.iter().all(|s| cache.get(s, &probe).is_some()), "the cache lost answers");
    drop(cache);
    bytes
}

/// CPU time of this process so far (user + system), from `/proc/self/stat` at 100 ticks a second.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counted from 0 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// `VmRSS` and `VmHWM` of this process, in bytes.
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}
