//! The model at a small size, every answer checked: the measurements fail on a wrong answer, and
//! a change that never reaches the root fails the wait.

use std::time::{Duration, Instant};

use api::AggregateEntry;
use federation::matching::FREE_VCPUS;

use crate::huddle::INSTANCES;
use crate::measure::{self, three_requirements};
use crate::shape::{Shape, Spread, ZoneRef};
use crate::tree::{Loops, Tree};

/// 2 regions × 2 DCs × 10 huddles of 10 hosts: 40 huddles, 400 hosts, 2,000 clients.
fn small() -> Shape {
    Shape {
        regions: 2,
        dcs_per_region: 2,
        huddles_per_dc: 10,
        hosts_per_huddle: 10,
        clients: 2000,
        instances: 40_000,
        wide_spread: 12,
        seed: 7,
    }
}

async fn instances_at_root(tree: &Tree) -> u64 {
    match tree.root.gateway.aggregate().await.expect("the root's aggregate").get(INSTANCES) {
        Some(AggregateEntry::Float { sum, .. }) => *sum as u64,
        other => panic!("no instance count at the root: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_nova_tree_answers_lookups_routes_creates_and_carries_leaf_changes_to_the_root() {
    let shape = small();
    let mut tree = Tree::build(shape.clone(), crate::allocated).await;

    // Every host and instance counted once at the root, and some memory measured per zone.
    let agg = tree.root.gateway.aggregate().await.expect("the root's aggregate");
    assert_eq!(agg[FREE_VCPUS].count(), shape.hosts() as i64);
    assert_eq!(instances_at_root(&tree).await, tree.instances);
    assert!(tree.built.root_bytes > 0 && tree.built.dc_bytes.iter().all(|&b| b > 0));

    // With no watch and no poll running, a change at a huddle stays there: the wait fails.
    let unseen = measure::leaf_changes(&tree, 1, shape.clients + 100, Duration::ZERO, Duration::from_millis(300)).await;
    assert!(unseen.is_err(), "a change reached the root with nothing to carry it: {unseen:?}");

    // Watches only (no poll loop): they carry that change up.
    tree.start(&Loops::with_poll_interval(None));
    let t = Instant::now();
    while instances_at_root(&tree).await != tree.instances + 1 {
        assert!(t.elapsed() < Duration::from_secs(5), "the watches did not carry the change to the root");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Lookups: the right zone for each spread, cold asking every zone below, cached asking none.
    let zones_below = (shape.regions + shape.dcs() + shape.huddles()) as f64;
    for (spread, level) in [(Spread::One, "huddle"), (Spread::Two, "dc"), (Spread::Wide, "global")] {
        let f = measure::lookups(&tree, spread, 5, 3).await.unwrap_or_else(|e| panic!("{spread:?}: {e}"));
        let got = match f.answer {
            ZoneRef::Huddle(_) => "huddle",
            ZoneRef::Dc(_) => "dc",
            ZoneRef::Region(_) => "region",
            ZoneRef::Global => "global",
        };
        assert_eq!(got, level, "{spread:?}");
        assert_eq!(f.cold_requests, zones_below, "{spread:?}: a cold lookup asks every zone below the root once");
        assert_eq!(f.cached_requests, 0, "{spread:?}: cached lookups ask nobody");
        assert_eq!(f.cached.n, 3 * f.cold.n, "{spread:?}: three rounds of each client");
    }

    // Routing: only children whose aggregate passes are candidates (checked inside), and
    // placements and creates land at huddles that meet all three requirements.
    let reqs = three_requirements();
    let (_, found) = measure::decisions(&tree.root, &reqs, 10).expect("routing decisions at the root");
    assert_eq!(found, shape.regions, "each region has a kvm aarch64 GPU huddle");
    let (_, found) = measure::decisions(&tree.dcs[1], &reqs, 10).expect("routing decisions at a DC");
    assert_eq!(found, 0, "no huddle of the second DC has a GPU");
    measure::placements(&tree, &reqs, 20).await.expect("placements through every level");
    let created = measure::creates(&tree, &reqs, 4, shape.clients + 1000, Duration::from_millis(100))
        .await
        .expect("creates through the root");
    // For a client looked up before, each zone on the way composes its new answer; the watches
    // re-reading the changed zones at the same moment may drop it again, so the root's lookup
    // asks at most the create's path (region, DC, huddle).
    assert!(created.asked_known <= 3.0, "{created:?}");
    assert!(
        created.asked_new >= zones_below - 1.0,
        "for a client never looked up, at most the huddle's answer is known on the way: the lookup asks all the others ({created:?})"
    );

    // Leaf changes reach the root through the watches; each level records after the one below.
    let p = measure::leaf_changes(&tree, 5, shape.clients + 2000, Duration::from_millis(20), Duration::from_secs(5))
        .await
        .expect("leaf changes reach the root within 5 s");
    assert!(p.dc.p50 <= p.region.p50 && p.region.p50 <= p.root.p50, "{p:?}");
    assert_eq!(p.lookup_asked, 3.0, "after a change the root asks down the changed path only: region, DC, huddle");

    // Cached lookups ask nobody while nothing changes, and ask again while huddles change.
    let quiet = measure::churn(&tree, 0.0, Duration::from_millis(200), 50).await.expect("lookups at rest");
    assert_eq!(quiet.asked, 0.0, "{quiet:?}");
    let busy = measure::churn(&tree, 200.0, Duration::from_millis(500), 50).await.expect("lookups under churn");
    assert!(busy.changes_per_sec > 0.0 && busy.asked > 0.0, "{busy:?}");
    tree.stop().await;
}

#[test]
fn clients_spread_as_the_shape_says_and_the_lowest_zone_follows() {
    let shape = small();
    let pop = crate::shape::Population::generate(&shape);
    let pairs: usize = pop.per_huddle.iter().map(Vec::len).sum();
    assert_eq!(pairs, pop.pairs);
    assert!(pop.instances >= shape.instances, "every pair has at least one instance");
    for c in [0, shape.first_of(Spread::Two), shape.first_of(Spread::One), shape.clients - 1] {
        let huddles = shape.huddles_of(c);
        let want = match shape.spread(c) {
            Spread::One => 1,
            Spread::Two => 2,
            Spread::Wide => shape.wide_spread,
        };
        assert_eq!(huddles.len(), want, "client {c}");
        for h in &huddles {
            assert!(pop.per_huddle[*h].binary_search_by_key(&(c as u32), |p| p.0).is_ok(), "client {c} in huddle {h}");
        }
    }
    assert_eq!(shape.lowest_of(&[3, 3]), ZoneRef::Huddle(3));
    assert_eq!(shape.lowest_of(&[3, 7]), ZoneRef::Dc(0));
    assert_eq!(shape.lowest_of(&[3, 17]), ZoneRef::Region(0));
    assert_eq!(shape.lowest_of(&[3, 27]), ZoneRef::Global);
    assert_eq!(shape.name(ZoneRef::Huddle(27)), "r2-dc1-h008");
}
