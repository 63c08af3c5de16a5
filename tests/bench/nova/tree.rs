//! The simulated tree, built bottom-up: the huddle models, then each DC's real [`Gateway`] over its
//! huddles, each region's over its DCs, and the root's over the regions. Each gateway comes with
//! what zone-node runs beside it: a [`Poller`] recording into a [`Sink`], the poll loop
//! ([`federation::poll::run`]) and the watches ([`federation::watch::run`]).
//!
//! Memory is measured while building: the bytes a zone's gateway, poller and sink keep after the
//! first poll of every child (the allocator's live bytes before and after, nothing else running).

use std::sync::Arc;
use std::time::{Duration, Instant};

use federation::poll::{PollSettings, Poller};
use federation::watch::WatchSettings;
use federation::{Child, Credentials, Gateway, Identity, Settings};
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, Sink};
use crate::huddle::Huddle;
use crate::shape::{api_url, Population, Shape, ZoneRef};
use crate::transport::{InProcess, Node};

/// zone-node's defaults (`[federation]` in docs/operations.md).
pub const POLL_TIMEOUT: Duration = Duration::from_millis(1000);
pub const FAILURE_THRESHOLD: u32 = 3;

/// The loops every zone runs: polls (optional here) and watches.
#[derive(Debug, Clone)]
pub struct Loops {
    pub poll: Option<PollSettings>,
    pub watch: WatchSettings,
}

impl Loops {
    /// zone-node's defaults, with the poll interval given (`None`: no poll loop).
    pub fn with_poll_interval(interval: Option<Duration>) -> Loops {
        Loops {
            poll: interval.map(|interval| PollSettings {
                interval,
                timeout: POLL_TIMEOUT,
                jitter: Duration::from_millis(100),
                max_concurrent: 32,
            }),
            watch: WatchSettings {
                wait: Duration::from_millis(api::federation::WATCH_DEFAULT_TIMEOUT_MS),
                retry: Duration::from_millis(1000),
            },
        }
    }
}

/// One zone above the huddles: its real gateway and what runs beside it.
pub struct Level {
    pub gateway: Arc<Gateway>,
    pub hub: Arc<Hub>,
    /// Polls and watches record through it, into a [`Sink`].
    pub poller: Arc<Poller>,
}

impl Level {
    /// [`Level::new`] polled once (so it holds what its children report), and the bytes its state
    /// took by `allocated`: what the benchmark reports as a zone's memory.
    async fn built(
        shape: &Shape,
        zone: ZoneRef,
        transport: &Arc<InProcess>,
        children: Vec<ZoneRef>,
        allocated: fn() -> usize,
    ) -> (Level, usize) {
        let before = allocated();
        let level = Level::new(shape, zone, transport, children);
        level.poll_children().await;
        let bytes = allocated().saturating_sub(before);
        (level, bytes)
    }

    fn new(shape: &Shape, zone: ZoneRef, transport: &Arc<InProcess>, children: Vec<ZoneRef>) -> Level {
        let name = shape.name(zone);
        let me = Identity { id: zone.id(), api_url: api_url(&name), name };
        let hub = Arc::new(Hub::default());
        let gateway = Arc::new(Gateway::new(me, Settings::default(), transport.clone(), hub.clone()));
        gateway.set_children(children.into_iter().map(|c| child_record(shape, c)).collect());
        gateway.observe_own_generation(0);
        let sink = Arc::new(Sink::new(gateway.clone(), hub.clone(), FAILURE_THRESHOLD));
        let poller = Arc::new(Poller::new(gateway.clone(), sink, POLL_TIMEOUT));
        transport.add(zone.id(), Node::Hub { gateway: gateway.clone(), hub: hub.clone() });
        Level { gateway, hub, poller }
    }

    /// One poll of every child, recorded (what the first round of the poll loop does).
    async fn poll_children(&self) {
        for child in self.gateway.registry().children().iter() {
            self.poller.poll(child).await;
        }
    }
}

/// A child as zone-add registers it: online, nothing learnt yet.
fn child_record(shape: &Shape, zone: ZoneRef) -> Child {
    let name = shape.name(zone);
    Child::registered(zone.id(), name.clone(), api_url(&name), Credentials::new("parent", "unused-in-process"))
}

/// What building measured: live bytes kept, and how long each part took.
#[derive(Debug, Default)]
pub struct Built {
    pub population_bytes: usize,
    pub huddle_bytes: usize,
    pub dc_bytes: Vec<usize>,
    pub region_bytes: Vec<usize>,
    pub root_bytes: usize,
    pub huddles_time: Duration,
    pub dcs_time: Duration,
    pub regions_time: Duration,
    pub root_time: Duration,
}

pub struct Tree {
    pub shape: Shape,
    pub transport: Arc<InProcess>,
    pub huddles: Vec<Arc<Huddle>>,
    pub dcs: Vec<Level>,
    pub regions: Vec<Level>,
    pub root: Level,
    pub built: Built,
    /// Instances of the population, and its (client, huddle) pairs.
    pub instances: u64,
    pub pairs: usize,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Tree {
    /// Builds the tree and polls every child once, bottom-up. `allocated` reads the allocator's
    /// live bytes.
    pub async fn build(shape: Shape, allocated: fn() -> usize) -> Tree {
        let mut built = Built::default();
        let transport = Arc::new(InProcess::default());

        let t = Instant::now();
        let before = allocated();
        let population = Population::generate(&shape);
        built.population_bytes = allocated().saturating_sub(before);
        let (instances, pairs) = (population.instances, population.pairs);
        let before = allocated();
        let huddles: Vec<Arc<Huddle>> = population
            .per_huddle
            .into_iter()
            .enumerate()
            .map(|(h, clients)| Arc::new(Huddle::new(&shape, h, clients)))
            .collect();
        for h in &huddles {
            transport.add(h.id.clone(), Node::Huddle(h.clone()));
        }
        // The population's lists now belong to the huddles.
        built.huddle_bytes = (allocated() + built.population_bytes).saturating_sub(before);
        built.huddles_time = t.elapsed();

        let t = Instant::now();
        let mut dcs = Vec::with_capacity(shape.dcs());
        for d in 0..shape.dcs() {
            let children = shape.huddles_of_dc(d).map(ZoneRef::Huddle).collect();
            let (level, bytes) = Level::built(&shape, ZoneRef::Dc(d), &transport, children, allocated).await;
            built.dc_bytes.push(bytes);
            dcs.push(level);
        }
        built.dcs_time = t.elapsed();

        let t = Instant::now();
        let mut regions = Vec::with_capacity(shape.regions);
        for r in 0..shape.regions {
            let children = shape.dcs_of_region(r).map(ZoneRef::Dc).collect();
            let (level, bytes) = Level::built(&shape, ZoneRef::Region(r), &transport, children, allocated).await;
            built.region_bytes.push(bytes);
            regions.push(level);
        }
        built.regions_time = t.elapsed();

        let t = Instant::now();
        let children = (0..shape.regions).map(ZoneRef::Region).collect();
        let (root, root_bytes) = Level::built(&shape, ZoneRef::Global, &transport, children, allocated).await;
        built.root_bytes = root_bytes;
        built.root_time = t.elapsed();

        Tree {
            shape,
            transport,
            huddles,
            dcs,
            regions,
            root,
            built,
            instances,
            pairs,
            stop: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    /// Every level, the root first.
    pub fn levels(&self) -> impl Iterator<Item = &Level> {
        std::iter::once(&self.root).chain(self.regions.iter()).chain(self.dcs.iter())
    }

    /// Starts every zone's watches, and its poll loop when `loops.poll` is set.
    pub fn start(&mut self, loops: &Loops) {
        let mut tasks = Vec::new();
        for level in self.levels() {
            let watch = federation::watch::run(level.poller.clone(), loops.watch.clone(), self.stop.child_token());
            tasks.push(tokio::spawn(watch));
            if let Some(poll) = &loops.poll {
                let polls = federation::poll::run(level.poller.clone(), poll.clone(), self.stop.child_token());
                tasks.push(tokio::spawn(polls));
            }
        }
        self.tasks.extend(tasks);
    }

    /// Stops the loops and waits for them.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// The DC and region of huddle `h`.
    pub fn above(&self, h: usize) -> (&Level, &Level) {
        let dc = self.shape.dc_of(h);
        (&self.dcs[dc], &self.regions[self.shape.region_of_dc(dc)])
    }
}
