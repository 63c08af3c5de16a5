//! Benchmark: the Nova design's tree, simulated with the real `federation` crate (issue 10, item 5).
//!
//! 1 global zone, 5 regions, 25 DCs and 200 huddle zones per DC (5,000) of 200 hosts each:
//! 1,000,000 hosts and 60,000,000 instances of 3,000,000 clients. The global zone, the regions and
//! the DCs are real [`federation::Gateway`]s with their registries, routing, lookup caches, pollers
//! and watches; the huddles are models in memory that hold an aggregate and per-client instance
//! counts. Children are reached in process ([`transport::InProcess`], the crate's `ChildTransport`
//! without HTTP); nothing has a database. It measures and prints (Markdown):
//! - memory kept by the huddle models, one DC's, each region's and the root's federation state
//!   (live bytes from a counting allocator around jemalloc, zone-node's allocator), process RSS;
//! - CPU of the whole tree at rest (polls and watches of all 5,030 children);
//! - the routing decision at the root and at a DC for a create with 3 requirements, a placement
//!   through all levels, and creates through the root;
//! - cold and cached lookups at the root for clients in 1, 2 and 50 huddles;
//! - how long a change at a huddle takes to reach the root (through the watches), and what each
//!   step of the way costs;
//! - lookups at the root while instances are added at random huddles (`--churn` a second);
//! - the lookup cache's memory for 1,000,000 cached clients.
//!
//! ```text
//! bench-nova [--scale 1.0] [--regions 5] [--dcs 5] [--huddles N] [--hosts 200] [--clients N]
//!            [--instances N] [--lookups 100] [--rounds 100] [--decisions 100000]
//!            [--placements 1000] [--creates 100] [--changes 50] [--cache-clients N]
//!            [--poll-ms 1000] [--idle-secs 10] [--churn 0,10,50] [--churn-secs 10] [--json]
//!            [--seed 10]
//! ```
//! `--scale` multiplies the huddles per DC, the clients, the instances, the cached clients, the
//! idle and churn durations and the pauses between changes (`--scale 0.01` runs in seconds);
//! `--poll-ms 0` turns the poll loops off (watches only); `--json` encodes and decodes every answer
//! between zones (leaf changes are measured both ways anyway). Run it with
//! `scripts/bench/nova.sh`, which builds it in release mode.

mod hub;
mod huddle;
mod measure;
mod shape;
mod transport;
mod tree;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use cap::Cap;

use measure::{ms, Stats};
use shape::{Shape, Spread};
use tree::{Loops, Tree};

/// jemalloc, as zone-node uses, counted: the live bytes are what the memory figures report.
#[global_allocator]
static ALLOC: Cap<tikv_jemallocator::Jemalloc> = Cap::new(tikv_jemallocator::Jemalloc, usize::MAX);

/// Bytes allocated and not yet freed (as asked for: without the allocator's own overhead).
pub fn allocated() -> usize {
    ALLOC.allocated()
}

/// Clients looked up in turn while the tree changes (each looked up cold once first).
const CHURN_CLIENTS: usize = 200;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} needs a value")),
        None => default,
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// 1234567 → "1,234,567".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn row(what: &str, s: &Stats) -> String {
    format!("| {what} | {} | {} | {} | {} |", thousands(s.n as u64), ms(s.p50), ms(s.p99), ms(s.max))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("bench-nova: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let scale: f64 = arg(&args, "--scale", 1.0);
    let nova = Shape::nova(scale);
    let shape = Shape {
        regions: arg(&args, "--regions", nova.regions),
        dcs_per_region: arg(&args, "--dcs", nova.dcs_per_region),
        huddles_per_dc: arg(&args, "--huddles", nova.huddles_per_dc),
        hosts_per_huddle: arg(&args, "--hosts", nova.hosts_per_huddle),
        clients: arg(&args, "--clients", nova.clients),
        instances: arg(&args, "--instances", nova.instances),
        wide_spread: nova.wide_spread,
        seed: arg(&args, "--seed", nova.seed),
    };
    let samples: usize = arg(&args, "--lookups", 100);
    let rounds: usize = arg(&args, "--rounds", 100);
    let n_decisions: usize = arg(&args, "--decisions", 100_000);
    let n_placements: usize = arg(&args, "--placements", 1000);
    let n_creates: usize = arg(&args, "--creates", 100);
    let n_changes: usize = arg(&args, "--changes", 50);
    let cache_clients: usize = arg(&args, "--cache-clients", ((1_000_000.0 * scale).round() as usize).max(1000));
    let poll_ms: u64 = arg(&args, "--poll-ms", 1000);
    // Durations shrink with the tree, so a small run takes seconds (1 s at least).
    let secs = |full: f64| ((full * scale).round() as u64).max(1);
    let idle_secs: u64 = arg(&args, "--idle-secs", secs(10.0));
    let churn_rates: Vec<f64> = arg::<String>(&args, "--churn", "0,10,50".into())
        .split(',')
        .map(|r| r.trim().parse().map_err(|_| format!("--churn: {r:?} is not a rate")))
        .collect::<Result<_, _>>()?;
    let churn_secs: u64 = arg(&args, "--churn-secs", secs(10.0));
    // Between creates and between leaf changes: long enough for the watches to settle (tens of
    // milliseconds at the full size).
    let pause = Duration::from_secs_f64((0.3 * scale).clamp(0.02, 0.3));
    let json = args.iter().any(|a| a == "--json");

    eprintln!(
        "building: {} regions x {} DCs x {} huddles x {} hosts, {} clients, {} instances",
        shape.regions,
        shape.dcs_per_region,
        shape.huddles_per_dc,
        shape.hosts_per_huddle,
        shape.clients,
        shape.instances
    );
    let t = Instant::now();
    let mut tree = Tree::build(shape.clone(), allocated).await;
    let build_time = t.elapsed();
    let (rss_built, _) = measure::rss();
    let federation_bytes = tree.built.root_bytes
        + tree.built.region_bytes.iter().sum::<usize>()
        + tree.built.dc_bytes.iter().sum::<usize>();
    eprintln!("built in {build_time:.1?}");

    let loops = Loops::with_poll_interval((poll_ms > 0).then(|| Duration::from_millis(poll_ms)));
    tree.start(&loops);
    // Let the first poll round (all answers unchanged since the build) pass.
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("idle for {idle_secs} s");
    let cpu = measure::cpu_time();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle_cpu = (measure::cpu_time() - cpu).as_secs_f64() / t.elapsed().as_secs_f64() * 100.0;

    tree.transport.set_json(json);
    let reqs = measure::three_requirements();
    eprintln!("routing");
    let (root_decisions, root_candidates) = measure::decisions(&tree.root, &reqs, n_decisions)?;
    // A DC ranks 40 times more children: a tenth as many decisions.
    let (dc_decisions, dc_candidates) = measure::decisions(&tree.dcs[0], &reqs, (n_decisions / 10).max(1))?;
    let (placements, refusals) = measure::placements(&tree, &reqs, n_placements).await?;

    let mut lookups = Vec::new();
    for spread in [Spread::One, Spread::Two, Spread::Wide] {
        eprintln!("lookups: {spread:?}");
        lookups.push((spread, measure::lookups(&tree, spread, samples, rounds).await?));
    }

    eprintln!("creates through the root");
    let creates = measure::creates(&tree, &reqs, n_creates, shape.clients + 1_000_000, pause).await?;

    eprintln!("step costs");
    let steps = measure::step_costs(&tree, 50).await?;
    eprintln!("leaf changes");
    let timeout = Duration::from_secs(10);
    tree.transport.set_json(false);
    let in_process = measure::leaf_changes(&tree, n_changes, shape.clients + 2_000_000, pause, timeout).await?;
    tree.transport.set_json(true);
    let with_json = measure::leaf_changes(&tree, n_changes, shape.clients + 3_000_000, pause, timeout).await?;
    tree.transport.set_json(json);
    let mut churn = Vec::new();
    for rate in &churn_rates {
        eprintln!("lookups while {rate} changes a second");
        churn.push(measure::churn(&tree, *rate, Duration::from_secs(churn_secs), CHURN_CLIENTS).await?);
        tokio::time::sleep(pause).await;
    }
    tree.stop().await;
    let (rss_end, rss_peak) = measure::rss();

    eprintln!("lookup cache: {cache_clients} clients");
    let root_cache = measure::cache_bytes(cache_clients, shape.regions, 3, allocated);
    let dc_clients = cache_clients.min(10_000);
    let dc_cache = measure::cache_bytes(dc_clients, shape.huddles_per_dc, 1, allocated);

    // The report.
    let n = |x: usize| thousands(x as u64);
    println!(
        "Tree: 1 global zone, {} regions, {} DCs, {} huddles of {} hosts ({} hosts); {} clients ({} over {} huddles, {} over 2 of one DC, {} in 1); {} instances in {} (client, huddle) pairs. Built and polled once in {:.1} s. Answers between zones: {}.",
        shape.regions,
        n(shape.dcs()),
        n(shape.huddles()),
        shape.hosts_per_huddle,
        n(shape.hosts()),
        n(shape.clients),
        n(shape.count_of(Spread::Wide)),
        shape.wide_spread.min(shape.huddles()),
        n(shape.count_of(Spread::Two)),
        n(shape.count_of(Spread::One)),
        thousands(tree.instances),
        n(tree.pairs),
        build_time.as_secs_f64(),
        if json { "encoded to JSON and decoded" } else { "in process" },
    );
    println!();
    let b = &tree.built;
    let mean = |v: &[usize]| v.iter().sum::<usize>() / v.len().max(1);
    println!("| memory (live bytes) | |");
    println!("|---|---|");
    println!(
        "| huddle models ({} huddles: aggregate, per-client counts) | {} |",
        n(shape.huddles()),
        mib(b.huddle_bytes)
    );
    println!(
        "| one DC's federation state ({} children): first DC / mean of {} / largest | {} / {} / {} |",
        shape.huddles_per_dc,
        shape.dcs(),
        mib(b.dc_bytes[0]),
        mib(mean(&b.dc_bytes)),
        mib(*b.dc_bytes.iter().max().unwrap_or(&0))
    );
    println!(
        "| one region's federation state ({} children, {} zones below): mean of {} | {} |",
        shape.dcs_per_region,
        n(shape.dcs_per_region * (1 + shape.huddles_per_dc)),
        shape.regions,
        mib(mean(&b.region_bytes))
    );
    println!(
        "| the root's federation state ({} children, {} zones below) | {} |",
        shape.regions,
        n(shape.regions + shape.dcs() + shape.huddles()),
        mib(b.root_bytes)
    );
    println!("| all {} gateways' federation state | {} |", n(1 + shape.regions + shape.dcs()), mib(federation_bytes));
    println!(
        "| process RSS after the build / at the end / peak | {} / {} / {} |",
        mib(rss_built as usize),
        mib(rss_end as usize),
        mib(rss_peak as usize)
    );
    println!(
        "| CPU at rest, whole tree ({} children polled every {} ms, one watch each) | {:.1} % of one core |",
        n(shape.regions + shape.dcs() + shape.huddles()),
        poll_ms,
        idle_cpu
    );
    println!();
    println!("| routing, create with 3 requirements (ms) | n | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        row(
            &format!("decision at the root: rank {} regions ({} candidates)", shape.regions, root_candidates),
            &root_decisions
        )
    );
    println!(
        "{}",
        row(
            &format!("decision at a DC: rank {} huddles ({} candidates)", shape.huddles_per_dc, dc_candidates),
            &dc_decisions
        )
    );
    println!(
        "{}",
        row(&format!("placement at the root through every level ({refusals:.2} refusals each)"), &placements)
    );
    println!(
        "{}",
        row("create through the root (lands at a huddle; routes, generations, answers recorded)", &creates.creates)
    );
    println!();
    println!("| lookup at the root (ms) | answer | cold p50 | cold p99 | zones asked, cold | cached p50 | cached p99 | zones asked, cached |");
    println!("|---|---|---|---|---|---|---|---|");
    for (spread, f) in &lookups {
        let what = match spread {
            Spread::One => "client in 1 huddle".to_owned(),
            Spread::Two => "client in 2 huddles (one DC)".to_owned(),
            Spread::Wide => format!("client in {} huddles", shape.wide_spread.min(shape.huddles())),
        };
        let answer = match f.answer {
            shape::ZoneRef::Global => "global",
            shape::ZoneRef::Region(_) => "a region",
            shape::ZoneRef::Dc(_) => "its DC",
            shape::ZoneRef::Huddle(_) => "its huddle",
        };
        println!(
            "| {what} ({} clients; cached: {} lookups) | {answer} | {} | {} | {} | {} | {} | {} |",
            f.cold.n,
            thousands(f.cached.n as u64),
            ms(f.cold.p50),
            ms(f.cold.p99),
            thousands(f.cold_requests.round() as u64),
            ms(f.cached.p50),
            ms(f.cached.p99),
            f.cached_requests
        );
    }
    println!();
    println!(
        "After each of {} creates through the root: the root's lookup of the new client asked {:.1} zones when the root had looked the client up before the create, {:.1} when not; a client of one huddle cached at the root before, looked up again {} ms later (one per DC), asked {:.2} zones.",
        creates.creates.n,
        creates.asked_known,
        creates.asked_new,
        pause.as_millis(),
        creates.asked_bystander
    );
    println!();
    println!("| leaf change → recorded at (ms), {} changes | DC p50 | DC p99 | region p50 | region p99 | root p50 | root p99 | root max | root's next lookup p50 (zones asked) |", n_changes);
    println!("|---|---|---|---|---|---|---|---|---|");
    for (mode, p) in [("in process", &in_process), ("answers through JSON", &with_json)] {
        println!(
            "| {mode} | {} | {} | {} | {} | {} | {} | {} | {} ({:.1}) |",
            ms(p.dc.p50),
            ms(p.dc.p99),
            ms(p.region.p50),
            ms(p.region.p99),
            ms(p.root.p50),
            ms(p.root.p99),
            ms(p.root.max),
            ms(p.lookup.p50),
            p.lookup_asked
        );
    }
    println!();
    println!("| one change's steps, at rest (ms), 50 each | p50 | p99 |");
    println!("|---|---|---|");
    let reads = [
        ("a DC reads a huddle (view + ETag)".to_owned(), &steps.read_huddle),
        (format!("a region reads a DC (view + ETag over {} subtree entries)", shape.huddles_per_dc), &steps.read_dc),
        (
            format!(
                "the root reads a region (view + ETag over {} subtree entries)",
                shape.dcs_per_region * (1 + shape.huddles_per_dc)
            ),
            &steps.read_region,
        ),
    ];
    for (what, s) in reads {
        println!("| {what} | {} | {} |", ms(s.p50), ms(s.p99));
    }
    let records = [
        (format!("a DC ({} zones below)", shape.huddles_per_dc), &steps.record_at_dc),
        (
            format!("a region ({} zones below)", shape.dcs_per_region * (1 + shape.huddles_per_dc)),
            &steps.record_at_region,
        ),
        (format!("the root ({} zones below)", n(shape.regions + shape.dcs() + shape.huddles())), &steps.record_at_root),
    ];
    for (what, (copy, replace)) in records {
        println!("| {what} records: rows copied | {} | {} |", ms(copy.p50), ms(copy.p99));
        println!(
            "| {what} records: registry replaced, merged per zone id | {} | {} |",
            ms(replace.p50),
            ms(replace.p99)
        );
    }
    println!();
    println!("| lookups at the root while instances are added at random huddles ({churn_secs} s each, {CHURN_CLIENTS} clients of one huddle in turn) | changes/s | CPU (% of a core) | lookups | p50 | p99 | zones asked per lookup | root generation moves/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for c in &churn {
        println!(
            "| | {:.1} | {:.0} | {} | {} | {} | {:.2} | {:.1} |",
            c.changes_per_sec,
            c.cpu,
            thousands(c.lookups.n as u64),
            ms(c.lookups.p50),
            ms(c.lookups.p99),
            c.asked,
            c.root_moves_per_sec
        );
    }
    println!();
    println!("| lookup cache | clients | entries | live bytes | per client | 1,000,000 clients |");
    println!("|---|---|---|---|---|---|");
    for (what, clients, sources, bytes) in [
        (format!("root shape: own hosts + {} regions", shape.regions), cache_clients, shape.regions + 1, root_cache),
        (
            format!("DC shape: own hosts + {} huddles", shape.huddles_per_dc),
            dc_clients,
            shape.huddles_per_dc + 1,
            dc_cache,
        ),
    ] {
        let per_client = bytes as f64 / clients as f64;
        println!(
            "| {what} | {} | {} | {} | {:.0} B | {} |",
            n(clients),
            n(clients * sources),
            mib(bytes),
            per_client,
            mib((per_client * 1_000_000.0) as usize)
        );
    }
    Ok(())
}
