//! The tree's shape, the zones' names and ids, and where each client's instances are.
//!
//! Everything is derived from indices and a seed, so a client's huddles can be computed again
//! when a measurement needs the right answer for it, without keeping 3,000,000 lists.

/// Sizes of the simulated tree and its population.
#[derive(Debug, Clone)]
pub struct Shape {
    pub regions: usize,
    pub dcs_per_region: usize,
    pub huddles_per_dc: usize,
    pub hosts_per_huddle: usize,
    pub clients: usize,
    /// Instances to spread over the clients' (client, huddle) pairs; every pair gets at least one.
    pub instances: u64,
    /// How many huddles the widest clients span.
    pub wide_spread: usize,
    pub seed: u64,
}

impl Shape {
    /// The Nova design's tree (1 global zone, 5 regions, 25 DCs, 200 huddles of 200 hosts per DC,
    /// 3,000,000 clients, 60,000,000 instances) with the huddles per DC, the clients and the
    /// instances multiplied by `scale`.
    pub fn nova(scale: f64) -> Shape {
        let scaled = |n: f64| (n * scale).round().max(1.0);
        Shape {
            regions: 5,
            dcs_per_region: 5,
            huddles_per_dc: scaled(200.0) as usize,
            hosts_per_huddle: 200,
            clients: scaled(3_000_000.0) as usize,
            instances: scaled(60_000_000.0) as u64,
            wide_spread: 50,
            seed: 10,
        }
    }

    pub fn dcs(&self) -> usize {
        self.regions * self.dcs_per_region
    }

    pub fn huddles(&self) -> usize {
        self.dcs() * self.huddles_per_dc
    }

    pub fn hosts(&self) -> usize {
        self.huddles() * self.hosts_per_huddle
    }

    /// The DC of huddle `h` (global indices).
    pub fn dc_of(&self, h: usize) -> usize {
        h / self.huddles_per_dc
    }

    pub fn region_of_dc(&self, dc: usize) -> usize {
        dc / self.dcs_per_region
    }

    /// The huddles of DC `dc`.
    pub fn huddles_of_dc(&self, dc: usize) -> std::ops::Range<usize> {
        dc * self.huddles_per_dc..(dc + 1) * self.huddles_per_dc
    }

    pub fn dcs_of_region(&self, region: usize) -> std::ops::Range<usize> {
        region * self.dcs_per_region..(region + 1) * self.dcs_per_region
    }

    /// Clients `[0, wide)` span `wide_spread` huddles.
    pub fn wide_clients(&self) -> usize {
        (self.clients / 1000).max(1).min(self.clients)
    }

    /// Clients `[wide, wide + two)` are in two huddles of one DC; the rest in one huddle.
    pub fn two_clients(&self) -> usize {
        (self.clients / 10).min(self.clients - self.wide_clients())
    }

    pub fn spread(&self, client: usize) -> Spread {
        let wide = self.wide_clients();
        if client < wide {
            Spread::Wide
        } else if client < wide + self.two_clients() {
            Spread::Two
        } else {
            Spread::One
        }
    }

    /// The first client of a spread (each spread is one range of client indices).
    pub fn first_of(&self, spread: Spread) -> usize {
        match spread {
            Spread::Wide => 0,
            Spread::Two => self.wide_clients(),
            Spread::One => self.wide_clients() + self.two_clients(),
        }
    }

    /// How many clients have a spread.
    pub fn count_of(&self, spread: Spread) -> usize {
        match spread {
            Spread::Wide => self.wide_clients(),
            Spread::Two => self.two_clients(),
            Spread::One => self.clients - self.wide_clients() - self.two_clients(),
        }
    }

    /// The huddles holding `client`'s instances, sorted, without repeats.
    pub fn huddles_of(&self, client: usize) -> Vec<usize> {
        let n = self.huddles();
        let r = |k: u64| mix(self.seed ^ mix(client as u64) ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15)) as usize;
        let mut out = match self.spread(client) {
            Spread::One => vec![r(0) % n],
            Spread::Two if n == 1 => vec![0],
            Spread::Two => {
                let h = r(0) % n;
                let other = if self.huddles_per_dc > 1 {
                    let base = self.dc_of(h) * self.huddles_per_dc;
                    base + (h - base + 1 + r(1) % (self.huddles_per_dc - 1)) % self.huddles_per_dc
                } else {
                    (h + 1) % n
                };
                vec![h, other]
            }
            Spread::Wide => {
                let want = self.wide_spread.min(n);
                let mut picked = Vec::with_capacity(want);
                let mut k = 0;
                while picked.len() < want {
                    let h = r(k) % n;
                    if !picked.contains(&h) {
                        picked.push(h);
                    }
                    k += 1;
                }
                picked
            }
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The lowest zone holding all of `huddles`: the huddle, the DC, the region or the root.
    pub fn lowest_of(&self, huddles: &[usize]) -> ZoneRef {
        let first = huddles[0];
        if huddles.iter().all(|&h| h == first) {
            return ZoneRef::Huddle(first);
        }
        let dc = self.dc_of(first);
        if huddles.iter().all(|&h| self.dc_of(h) == dc) {
            return ZoneRef::Dc(dc);
        }
        let region = self.region_of_dc(dc);
        if huddles.iter().all(|&h| self.region_of_dc(self.dc_of(h)) == region) {
            return ZoneRef::Region(region);
        }
        ZoneRef::Global
    }

    pub fn name(&self, zone: ZoneRef) -> String {
        match zone {
            ZoneRef::Global => "global".to_owned(),
            ZoneRef::Region(r) => format!("r{}", r + 1),
            ZoneRef::Dc(d) => {
                format!("{}-dc{}", self.name(ZoneRef::Region(self.region_of_dc(d))), d % self.dcs_per_region + 1)
            }
            ZoneRef::Huddle(h) => {
                format!("{}-h{:03}", self.name(ZoneRef::Dc(self.dc_of(h))), h % self.huddles_per_dc + 1)
            }
        }
    }
}

/// How many huddles a client's instances are spread over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    One,
    Two,
    Wide,
}

/// One zone of the tree, by level and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneRef {
    Global,
    Region(usize),
    Dc(usize),
    Huddle(usize),
}

impl ZoneRef {
    /// A zone id shaped like the real ones (a UUID), unique per level and index.
    pub fn id(self) -> String {
        let (kind, index) = match self {
            ZoneRef::Global => (1, 0),
            ZoneRef::Region(i) => (2, i),
            ZoneRef::Dc(i) => (3, i),
            ZoneRef::Huddle(i) => (4, i),
        };
        format!("{kind:08x}-0000-4000-8000-{index:012x}")
    }
}

/// Where a zone's API would be (`.invalid`: never resolved, nothing is ever sent there).
pub fn api_url(name: &str) -> String {
    format!("https://{name}.nova.invalid")
}

pub fn client_id(client: usize) -> String {
    format!("client-{client:07}")
}

/// The index of a client id made by [`client_id`].
pub fn client_index(id: &str) -> Option<u32> {
    id.strip_prefix("client-")?.parse().ok()
}

/// splitmix64: a cheap, well-mixed hash for deterministic choices.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every huddle's clients: per huddle, `(client, instances)` sorted by client. Two `u32` a pair:
/// the Nova design's 3,000,000 clients make about 3,450,000 pairs (28 MB), not 60,000,000 objects.
pub struct Population {
    pub per_huddle: Vec<Vec<(u32, u32)>>,
    pub pairs: usize,
    pub instances: u64,
}

impl Population {
    pub fn generate(shape: &Shape) -> Population {
        let mut per_huddle: Vec<Vec<(u32, u32)>> = vec![Vec::new(); shape.huddles()];
        let pairs = shape.count_of(Spread::One)
            + 2 * shape.count_of(Spread::Two)
            + shape.wide_spread.min(shape.huddles()) * shape.count_of(Spread::Wide);
        let (base, extra) = (shape.instances / pairs as u64, shape.instances % pairs as u64);
        let mut pair = 0u64;
        let mut instances = 0u64;
        for client in 0..shape.clients {
            for h in shape.huddles_of(client) {
                let count = (base + u64::from(pair < extra)).max(1) as u32;
                per_huddle[h].push((client as u32, count));
                instances += u64::from(count);
                pair += 1;
            }
        }
        Population { pairs: pair as usize, per_huddle, instances }
    }
}
