//! Federation with real processes: eight `zone-node` zones in a multi-root tree, hosts played by
//! `zone-node agent-sim` in the data centres and at one region.
//!
//! ```text
//!   global ──┬── region1 (one host of its own) ──┬── dc1 (kvm)
//!            │                                    └── dc2 (kvm)
//!            └── region2 ──────────────────────────┬── dc3 (hyperv)
//!                                                  └── dc4 (xen)
//!   root2 ───┬── dc2            (a second root over two of the same data centres)
//!            └── dc3
//! ```
//!
//! Every zone is embedded (SQLite, in-process bus) with fast polling; a two-node parent zone on
//! PostgreSQL and RabbitMQ shows registry changes reaching every node of a zone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use api::{
    Aggregate, AggregateEntry, CapabilityValue, ClientError, ErrorCode, Instance, InstanceAction, InstanceActionKind,
    InstanceCreate, Op, Requirement, Resources, ZoneStatus,
};
use e2e::federation::{
    metric, sim_for, start_zones, wait_child_status, zone_add, zone_create, zone_spec, POLL_INTERVAL_MS,
};
use e2e::{poll_until, Cluster, ClusterOptions, NodeProcess, SimProcess, SimSpec};
use serde_json::json;

/// What the hosts of each zone announce, besides the profile's capabilities.
fn site_caps(site: &str, hypervisor: &str) -> Vec<(String, serde_json::Value)> {
    vec![("site".into(), json!(site)), ("hypervisor".into(), json!(hypervisor))]
}

fn sim_spec(zone: &NodeProcess, hosts: usize, caps: Vec<(String, serde_json::Value)>) -> SimSpec {
    sim_for(zone, hosts, "uniform", caps)
}

fn small() -> Resources {
    Resources { vcpus: 1, memory_mb: 256, disk_gb: 5 }
}

fn req(key: &str, op: Op, value: serde_json::Value) -> Requirement {
    Requirement { key: key.into(), op, value: Some(value) }
}

fn create(client: &str, reqs: Vec<Requirement>) -> InstanceCreate {
    InstanceCreate {
        name: "vm".into(),
        client_id: Some(client.into()),
        requirements: reqs,
        resources: small(),
        count: None,
    }
}

fn at(site: &str) -> Vec<Requirement> {
    vec![req("site", Op::Eq, json!(site))]
}

struct Tree {
    zones: BTreeMap<String, NodeProcess>,
    _sims: Vec<SimProcess>,
}

impl Tree {
    fn z(&self, name: &str) -> &NodeProcess {
        &self.zones[name]
    }

    async fn admin(&self, name: &str) -> api::Client {
        self.z(name).client().await
    }

    fn failure(&self, what: &str) -> String {
        let logs: Vec<String> = self.zones.values().map(|n| n.failure("")).collect();
        format!("{what}\n{}", logs.join("\n"))
    }

    /// Builds the tree of the module docs and waits until global and root2 aggregate every host.
    async fn build() -> Tree {
        let zones = start_zones(&["global", "root2", "region1", "region2", "dc1", "dc2", "dc3", "dc4"]).await;
        let sims = futures::future::join_all([
            SimProcess::start(sim_spec(&zones["region1"], 1, site_caps("region1", "kvm"))),
            SimProcess::start(sim_spec(&zones["dc1"], 2, site_caps("dc1", "kvm"))),
            SimProcess::start(sim_spec(&zones["dc2"], 2, site_caps("dc2", "kvm"))),
            SimProcess::start(sim_spec(&zones["dc3"], 2, site_caps("dc3", "hyperv"))),
            SimProcess::start(sim_spec(&zones["dc4"], 2, site_caps("dc4", "xen"))),
        ])
        .await;
        let tree = Tree { zones, _sims: sims };
        for (parent, children) in [
            ("region1", ["dc1", "dc2"]),
            ("region2", ["dc3", "dc4"]),
            ("global", ["region1", "region2"]),
            ("root2", ["dc2", "dc3"]),
        ] {
            for child in children {
                let added = zone_add(tree.z(parent), tree.z(child)).await;
                assert_eq!((added.name.as_str(), added.status), (child, ZoneStatus::Online));
            }
        }
        for (zone, hosts) in [("global", 9), ("root2", 4)] {
            let client = tree.admin(zone).await;
            let seen = poll_until(Duration::from_secs(20), Duration::from_millis(100), || async {
                let caps = client.capabilities().await.ok()?;
                (caps.get("site").map(AggregateEntry::count) == Some(hosts)).then_some(())
            })
            .await;
            assert!(seen.is_some(), "{}", tree.failure(&format!("{zone} never aggregated its {hosts} hosts")));
        }
        tree
    }
}

/// The aggregate of some hosts, as a zone computes it for its own (capabilities and free capacity).
fn aggregate_of(hosts: &[api::Host]) -> Aggregate {
    let mut agg = Aggregate::new();
    for h in hosts.iter().filter(|h| h.state == "up") {
        let mut one: Aggregate =
            h.capabilities.iter().map(|(k, c)| (k.clone(), AggregateEntry::of(&c.value))).collect();
        let free = [
            ("capacity.free-vcpus", h.resources.vcpus - h.used.vcpus),
            ("capacity.free-memory-mb", h.resources.memory_mb - h.used.memory_mb),
            ("capacity.free-disk-gb", h.resources.disk_gb - h.used.disk_gb),
        ];
        for (k, v) in free {
            one.insert(k.into(), AggregateEntry::of(&CapabilityValue::Float(v as f64)));
        }
        api::merge_aggregates(&mut agg, &one);
    }
    agg
}

/// Capabilities the simulator's reports change all the time, left out of exact comparisons.
fn without_changing(mut agg: Aggregate) -> Aggregate {
    agg.retain(|k, _| !["free-ram", "number-of-instances"].contains(&k.as_str()));
    agg
}

/// A zone's aggregate without the capabilities that change all the time.
async fn caps(t: &Tree, zone: &str) -> Aggregate {
    without_changing(t.admin(zone).await.capabilities().await.unwrap())
}

/// The generations global and the regions last polled of their children.
async fn generations_seen(t: &Tree) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for zone in ["global", "region1", "region2"] {
        for z in t.admin(zone).await.zones(false).await.unwrap().zones {
            out.push((z.name, z.generation));
        }
    }
    out
}

/// Lowest-zone lookups a zone has sent to its children so far.
async fn asked(t: &Tree, zone: &str) -> f64 {
    metric(t.z(zone), "federation_child_requests_total", "op=\"lowest_zone\"").await
}

async fn lowest(client: &api::Client, id: &str) -> Option<String> {
    client.lowest_zone(id).await.expect("lookup").map(|z| z.zone_name)
}

async fn all_instances(client: &api::Client, query: &str) -> (Vec<Instance>, Vec<String>) {
    let mut out = Vec::new();
    let mut unreachable = BTreeSet::new();
    let mut pages = client.instance_pages(query);
    while let Some(page) = pages.next().await {
        let page = page.expect("list");
        // Leaf or parent, every page with a successor names it in its header, and the walk has
        // asked for it before reading the page (the client checks the header against the body).
        assert_eq!(pages.asked_ahead(), page.next_marker.is_some(), "{query}: {:?}", page.next_marker);
        unreachable.extend(page.unreachable_zones);
        out.extend(page.instances);
    }
    (out, unreachable.into_iter().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_root_tree_aggregates_routes_and_finds_the_lowest_zone() {
    let t = Tree::build().await;
    let g = t.admin("global").await;

    // --- the aggregate at every level is exactly the merge of what lies below it ---
    let own_region1: Vec<api::Host> = t.admin("region1").await.hosts_page("").await.unwrap().hosts;
    let own_region1: Vec<api::Host> = own_region1.into_iter().filter(|h| h.zone_path == ["region1"]).collect();
    assert_eq!(own_region1.len(), 1);
    let merged = |parts: Vec<Aggregate>| {
        let mut agg = Aggregate::new();
        for p in parts {
            api::merge_aggregates(&mut agg, &p);
        }
        without_changing(agg)
    };
    for _ in 0..2 {
        // Twice: the first round may catch a report between polls; the comparison must hold once
        // everything has been polled, and keep holding.
        let settled = poll_until(Duration::from_secs(15), Duration::from_millis(250), || async {
            let (dc1, dc2, dc3, dc4) =
                (caps(&t, "dc1").await, caps(&t, "dc2").await, caps(&t, "dc3").await, caps(&t, "dc4").await);
            let (r1, r2, global, root2) = (
                caps(&t, "region1").await,
                caps(&t, "region2").await,
                caps(&t, "global").await,
                caps(&t, "root2").await,
            );
            let ok = r1 == merged(vec![aggregate_of(&own_region1), dc1.clone(), dc2.clone()])
                && r2 == merged(vec![dc3.clone(), dc4])
                && global == merged(vec![r1.clone(), r2])
                && root2 == merged(vec![dc2, dc3]);
            ok.then_some(())
        })
        .await;
        assert!(settled.is_some(), "{}", t.failure("aggregates are not the merge of their children"));
    }

    // --- the subtree's hosts, two to a page, each page's successor asked for on its header ---
    let mut walked = Vec::new();
    let mut pages = g.host_pages("limit=2");
    while let Some(page) = pages.next().await {
        let page = page.expect("a page of hosts");
        assert_eq!(pages.asked_ahead(), page.next_marker.is_some(), "{:?}", page.next_marker);
        walked.extend(page.hosts.into_iter().map(|h| h.id));
    }
    let whole = g.hosts_page("limit=1000").await.unwrap_or_else(|e| panic!("one page of every host: {e}"));
    let whole: Vec<String> = whole.hosts.into_iter().map(|h| h.id).collect();
    assert!(walked.len() > 2, "several pages: {walked:?}");
    assert_eq!(walked, whole, "the walk lists every host once, in id order");

    // --- creates land only where requirements are met, and nowhere when nothing meets them ---
    let on_dc3 = g.instance_create(&create("acme", at("dc3"))).await.expect("create at dc3");
    assert_eq!(on_dc3.zone_path, ["global", "region2", "dc3"]);
    let xen = g.instance_create(&create("acme", vec![req("hypervisor", Op::Eq, json!("xen"))])).await.unwrap();
    assert_eq!(xen.zone_path, ["global", "region2", "dc4"]);
    let own = g.instance_create(&create("acme", at("region1"))).await.unwrap();
    assert_eq!(own.zone_path, ["global", "region1"], "a region's own host");
    let before = all_instances(&g, "limit=100").await.0.len();
    let none = g.instance_create(&create("acme", at("atlantis"))).await.unwrap_err();
    assert_eq!((none.status(), none.code()), (Some(409), Some(ErrorCode::NoValidHost)), "{none}");
    assert!(none.to_string().contains("meets the requirements"), "says why: {none}");
    assert_eq!(all_instances(&g, "limit=100").await.0.len(), before, "nothing was made");
    let p =
        g.placement(&api::PlacementRequest { requirements: at("dc2"), resources: small() }).await.expect("placement");
    assert_eq!(p.zone_path, ["global", "region1", "dc2"]);

    // --- the lowest zone ---
    let one_dc = g.instance_create(&create("c-one", at("dc1"))).await.unwrap();
    assert_eq!(lowest(&g, "c-one").await.as_deref(), Some("dc1"));
    g.instance_create(&create("c-region", at("dc1"))).await.unwrap();
    let c_region_dc2 = g.instance_create(&create("c-region", at("dc2"))).await.unwrap();
    assert_eq!(lowest(&g, "c-region").await.as_deref(), Some("region1"));
    let c_global_dc1 = g.instance_create(&create("c-global", at("dc1"))).await.unwrap();
    g.instance_create(&create("c-global", at("dc3"))).await.unwrap();
    assert_eq!(lowest(&g, "c-global").await.as_deref(), Some("global"));
    assert_eq!(lowest(&g, "c-none").await, None, "404: not managed here");
    let r2 = t.admin("root2").await;
    r2.instance_create(&create("c-root2", at("dc2"))).await.unwrap();
    r2.instance_create(&create("c-root2", at("dc3"))).await.unwrap();
    assert_eq!(lowest(&r2, "c-root2").await.as_deref(), Some("root2"));
    let through_global = poll_until(Duration::from_secs(10), Duration::from_millis(50), || async {
        (lowest(&g, "c-root2").await.as_deref() == Some("global")).then_some(())
    })
    .await;
    assert!(through_global.is_some(), "creates made at root2 reach global's answer through polls");

    // A second lookup is served from the cache: no request to any child. A change below moves a
    // child's generation and rightly drops cached answers, so the claim holds over a window in
    // which no generation seen by global or the regions moved; a window with a change is retried.
    let clients = ["c-one", "c-region", "c-global", "c-none", "c-root2"];
    let mut checked = false;
    for _ in 0..10 {
        let generations = generations_seen(&t).await;
        for client in clients {
            lowest(&g, client).await;
        }
        let before = (asked(&t, "global").await, asked(&t, "region1").await, asked(&t, "region2").await);
        for client in clients {
            lowest(&g, client).await;
        }
        let after = (asked(&t, "global").await, asked(&t, "region1").await, asked(&t, "region2").await);
        if generations_seen(&t).await == generations {
            assert_eq!(after, before, "second lookups asked a child");
            checked = true;
            break;
        }
    }
    assert!(checked, "{}", t.failure("the tree never stood still for two rounds of lookups"));

    // After a delete or migrate through the tree, the answer is right at once (the change
    // passed through every zone on the way).
    g.instance_delete(&c_region_dc2.id).await.expect("delete through global");
    assert_eq!(lowest(&g, "c-region").await.as_deref(), Some("dc1"));
    let moved = g
        .instance_action(&one_dc.id, &InstanceAction { action: InstanceActionKind::Migrate, host_id: None })
        .await
        .expect("migrate within dc1");
    assert_ne!(moved.host_id, one_dc.host_id);
    assert_eq!(lowest(&g, "c-one").await.as_deref(), Some("dc1"));
    // A delete made at dc1 directly, bypassing global, reaches global's answer through polls.
    t.admin("dc1").await.instance_delete(&c_global_dc1.id).await.unwrap();
    let converged = poll_until(Duration::from_secs(10), Duration::from_millis(20), || async {
        (lowest(&g, "c-global").await.as_deref() == Some("dc3")).then_some(())
    })
    .await;
    assert!(converged.is_some(), "{}", t.failure("a delete below global never reached its lookup cache"));

    // --- every instance once across pages, from the top ---
    let (listed, unreachable) = all_instances(&g, "limit=3").await;
    assert!(unreachable.is_empty(), "{unreachable:?}");
    let ids: Vec<&str> = listed.iter().map(|i| i.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "in id order, no repeats");
    let mut expected = 0;
    for dc in ["region1", "dc1", "dc2", "dc3", "dc4"] {
        let (mine, _) = all_instances(&t.admin(dc).await, "limit=1000").await;
        expected += mine.iter().filter(|i| i.zone_path.len() == 1).count();
    }
    assert_eq!(listed.len(), expected, "global lists every instance of its subtree");
    for i in &listed {
        assert_eq!(i.zone_path[0], "global");
    }

    // --- a member of client A can neither see nor touch client B's instances, at any zone ---
    for zone in ["global", "region1", "dc1"] {
        for (user, client) in [("alice", "c-one"), ("bob", "c-region")] {
            t.admin(zone)
                .await
                .account_create(&api::AccountCreate {
                    username: user.into(),
                    password: format!("{user}-password-1"),
                    role: api::Role::Member,
                    client_id: Some(client.into()),
                    client_ids: None,
                })
                .await
                .unwrap();
        }
    }
    let b_instance = all_instances(&g, "client_id=c-region&limit=100").await.0.remove(0);
    for zone in ["global", "region1", "dc1"] {
        let (alice, token) = api::Client::new(&t.z(zone).url()).login("alice", "alice-password-1").await.unwrap();
        if zone == "global" {
            assert_eq!(token.api_url, t.z("dc1").url(), "alice is sent to the lowest zone of her client");
        }
        let mine = all_instances(&alice, "limit=100").await.0;
        assert!(!mine.is_empty() && mine.iter().all(|i| i.client_id == "c-one"), "{zone}: {mine:?}");
        assert_eq!(alice.instance(&b_instance.id).await.unwrap_err().code(), Some(ErrorCode::NotFound), "{zone}");
        let stop = InstanceAction { action: InstanceActionKind::Stop, host_id: None };
        assert_eq!(alice.instance_action(&b_instance.id, &stop).await.unwrap_err().code(), Some(ErrorCode::NotFound));
        assert_eq!(alice.instance_delete(&b_instance.id).await.unwrap_err().code(), Some(ErrorCode::NotFound));
        assert_eq!(
            alice.lowest_zone("c-region").await.unwrap(),
            None,
            "{zone}: another client's zone is not hers to know"
        );
        let e = alice.instance_create(&create("c-region", vec![])).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Forbidden));
        let e = alice.instances("client_id=c-region").await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
    }
    assert_eq!(g.instance(&b_instance.id).await.unwrap().state, "running", "bob's instance is untouched");

    // --- a dead child goes offline, routing avoids it, lists name it; it comes back ---
    let r2c = t.admin("region2").await;
    t.z("dc4").kill9().await;
    let killed = std::time::Instant::now();
    wait_child_status(t.z("region2"), "dc4", ZoneStatus::Offline, Duration::from_secs(15)).await;
    eprintln!("dc4 offline at region2 {:?} after kill -9 (poll {POLL_INTERVAL_MS} ms, 3 failures)", killed.elapsed());
    let dc4 = r2c.zones(false).await.unwrap().zones.into_iter().find(|z| z.name == "dc4").unwrap();
    assert!(dc4.last_error.is_some(), "the reason is kept: {dc4:?}");
    let avoided = poll_until(Duration::from_secs(10), Duration::from_millis(100), || async {
        match g.instance_create(&create("acme", vec![req("hypervisor", Op::Eq, json!("xen"))])).await {
            Err(e) if e.code() == Some(ErrorCode::NoValidHost) => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(avoided.is_some(), "{}", t.failure("global kept routing to a dead zone"));
    let (_, unreachable) = all_instances(&g, "limit=100").await;
    assert_eq!(unreachable, ["region2/dc4"], "the list says which zone is missing");
    t.z("dc4").restart().await;
    wait_child_status(t.z("region2"), "dc4", ZoneStatus::Online, Duration::from_secs(15)).await;
    let back = poll_until(Duration::from_secs(15), Duration::from_millis(200), || async {
        g.instance_create(&create("acme", vec![req("hypervisor", Op::Eq, json!("xen"))])).await.ok()
    })
    .await;
    assert!(back.is_some(), "{}", t.failure("dc4 came back but global does not route to it"));
    assert!(all_instances(&g, "limit=100").await.1.is_empty());
    drop(xen);
    drop(own);
    drop(on_dc3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_add_refuses_bad_input_and_loops_and_so_does_every_hop() {
    let zones = start_zones(&["za", "zb", "zc"]).await;
    let (a, b, c) = (&zones["za"], &zones["zb"], &zones["zc"]);
    let admin_a = a.client().await;
    zone_add(a, b).await;
    // What zone-add writes (polls move last_seen, so that is left out).
    let registered = |zones: Vec<api::ChildZone>| -> Vec<(String, String, String, bool)> {
        zones.into_iter().map(|z| (z.id, z.name, z.api_url, z.disabled)).collect()
    };
    let before = registered(admin_a.zones(true).await.unwrap().zones);

    let good = zone_create;
    // A member account of zc, to be refused as the credentials of a parent.
    c.client()
        .await
        .account_create(&api::AccountCreate {
            username: "tenant".into(),
            password: "tenant-password-1".into(),
            role: api::Role::Member,
            client_id: Some("t".into()),
            client_ids: None,
        })
        .await
        .unwrap();
    let cases: Vec<(api::ZoneCreate, u16, ErrorCode, &str)> = vec![
        (
            api::ZoneCreate { api_url: "http://127.0.0.1:1".into(), ..good(c) },
            502,
            ErrorCode::ZoneUnreachable,
            "cannot",
        ),
        (api::ZoneCreate { password: "wrong-password".into(), ..good(c) }, 400, ErrorCode::ZoneAuthFailed, "refused"),
        (
            api::ZoneCreate { username: "tenant".into(), password: "tenant-password-1".into(), ..good(c) },
            400,
            ErrorCode::ZoneAuthFailed,
            "neither an admin nor a parent",
        ),
        (api::ZoneCreate { name: Some("zb".into()), ..good(c) }, 409, ErrorCode::Conflict, "zb"),
        (api::ZoneCreate { name: Some("again".into()), ..good(b) }, 409, ErrorCode::Conflict, "already a child"),
        (api::ZoneCreate { api_url: "ftp://127.0.0.1:21".into(), ..good(c) }, 400, ErrorCode::InvalidField, "http"),
        (api::ZoneCreate { api_url: "not a url".into(), ..good(c) }, 400, ErrorCode::InvalidField, "api_url"),
        (api::ZoneCreate { name: Some("bad name".into()), ..good(c) }, 400, ErrorCode::InvalidField, "name"),
        (api::ZoneCreate { weight_scale: -1.0, ..good(c) }, 400, ErrorCode::InvalidField, "weight_scale"),
        (good(a), 409, ErrorCode::ZoneLoop, "itself"),
    ];
    for (body, status, code, words) in cases {
        let e = admin_a.zone_create(&body).await.expect_err("refused");
        assert_eq!((e.status(), e.code()), (Some(status), Some(code)), "{e}");
        assert!(e.to_string().contains(words), "{e} should say {words:?}");
        assert!(!e.to_string().contains(&body.password) || body.password.is_empty(), "the password is not echoed: {e}");
    }
    assert_eq!(registered(admin_a.zones(true).await.unwrap().zones), before, "nothing was written");

    // A loop at zone-add: za → zb → zc, then zc adding za.
    zone_add(b, c).await;
    wait_child_status(a, "zb", ZoneStatus::Online, Duration::from_secs(10)).await;
    let closes = poll_until(Duration::from_secs(10), Duration::from_millis(100), || async {
        match c.client().await.zone_create(&good(a)).await {
            Err(e) if e.code() == Some(ErrorCode::ZoneLoop) => Some(e),
            Err(_) => None,
            Ok(z) => panic!("zc accepted za as its child: {z:?}"),
        }
    })
    .await
    .expect("zone-add refuses the loop once za sees zc below it");
    assert!(closes.to_string().contains("zc -> za -> zb -> zc"), "the path that would loop: {closes}");
    assert!(c.client().await.zones(false).await.unwrap().zones.is_empty());

    // At runtime: a request that already crossed a zone, or too many zones, is refused there.
    let a_id = admin_a.zone().await.unwrap().id;
    let b_id = b.client().await.zone().await.unwrap().id;
    let tok = a.client().await;
    let loop_path =
        b.client().await.with_headers([(api::federation::ZONE_PATH_HEADER.to_owned(), format!("{a_id},{b_id}"))]);
    let e = loop_path.instances("").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(409), Some(ErrorCode::ZoneLoop)), "{e}");
    let far: Vec<String> = (0..api::federation::DEFAULT_HOP_LIMIT).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let too_far = b.client().await.with_headers([(api::federation::ZONE_PATH_HEADER.to_owned(), far.join(","))]);
    assert_eq!(too_far.zone().await.unwrap_err().code(), Some(ErrorCode::HopLimitExceeded));
    // A member account may not state another caller.
    let (tenant, _) = api::Client::new(&c.url()).login("tenant", "tenant-password-1").await.unwrap();
    let claims = tenant.with_headers([(api::federation::CALLER_ROLE_HEADER.to_owned(), "admin".to_owned())]);
    assert_eq!(claims.instances("").await.unwrap_err().code(), Some(ErrorCode::Forbidden));
    drop(tok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_a_parent_zone_sees_registry_changes_without_a_restart() {
    let child = NodeProcess::start(zone_spec("leaf")).await;
    // Without a shared secret key, a zone on PostgreSQL refuses to store child credentials its
    // other nodes could not open, and says how to fix it.
    {
        let keyless = Cluster::start(1, ClusterOptions { env: fed_env(false), ..ClusterOptions::default() }).await;
        let e = keyless.client(0).await.zone_create(&zone_create(&child)).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidState), "{e}");
        assert!(e.to_string().contains("ZONE_SECRET_KEY"), "{e}");
    }
    let parent = Cluster::start(2, ClusterOptions { env: fed_env(true), ..ClusterOptions::default() }).await;
    let _sim = SimProcess::start(sim_spec(&child, 2, site_caps("leaf", "kvm"))).await;
    let (n0, n1) = (parent.client(0).await, parent.client(1).await);
    let added = n0
        .zone_create(&api::ZoneCreate { name: Some("leaf".into()), ..zone_create(&child) })
        .await
        .expect("zone-add through node 0");
    // Node 1 routes to the new child at once (the change is announced on the bus).
    let routed = poll_until(Duration::from_secs(10), Duration::from_millis(50), || async {
        n1.instance_create(&create("acme", at("leaf"))).await.ok()
    })
    .await
    .expect("node 1 routes to a child added through node 0");
    assert_eq!(routed.zone_path.last().map(String::as_str), Some("leaf"));
    // Disabled through node 1: node 0 stops placing there, still lists it.
    n1.zone_update(&added.id, &api::ZoneUpdate { disabled: Some(true), ..Default::default() }).await.unwrap();
    let skipped = poll_until(Duration::from_secs(10), Duration::from_millis(50), || async {
        match n0.instance_create(&create("acme", at("leaf"))).await {
            Err(e) if e.code() == Some(ErrorCode::NoValidHost) => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(skipped.is_some(), "node 0 kept placing in a disabled child");
    assert_eq!(n0.zone_get(&added.id, false).await.unwrap().status, ZoneStatus::Disabled);
    assert_eq!(n0.instance(&routed.id).await.unwrap().id, routed.id, "a disabled child's instances stay reachable");
    // Deleted through node 0: node 1 forgets it.
    n0.zone_delete(&added.id).await.unwrap();
    let gone = poll_until(Duration::from_secs(10), Duration::from_millis(50), || async {
        n1.zone().await.ok().filter(|z| z.children.is_empty())
    })
    .await;
    assert!(gone.is_some(), "node 1 still lists a deleted child");
    let e: ClientError = n1.zone_get(&added.id, false).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
}

/// The environment of a parent zone of several nodes on one database: fast polls, and (with
/// `shared_key`) one secret key for all of its nodes.
fn fed_env(shared_key: bool) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        e2e::federation::FAST_POLL.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if shared_key {
        let key: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        env.push(("ZONE_SECRET_KEY".into(), key));
    }
    env
}

/// A child frozen with `SIGSTOP` (it accepts connections and never answers): a create the parent
/// forwarded to it ends when the parent marks it offline, with 503 `zone_unavailable`, instead of
/// after the 60 s forward timeout; after `SIGCONT` the child is back online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_on_a_frozen_child_ends_when_the_child_goes_offline() {
    let zones = start_zones(&["hang-parent", "hang-a", "hang-b"]).await;
    let (parent, a, b) = (&zones["hang-parent"], &zones["hang-a"], &zones["hang-b"]);
    let _sims = futures::future::join_all([
        SimProcess::start(sim_spec(a, 2, site_caps("hang-a", "kvm"))),
        SimProcess::start(sim_spec(b, 2, site_caps("hang-b", "kvm"))),
    ])
    .await;
    zone_add(parent, a).await;
    zone_add(parent, b).await;
    let admin = parent.client().await;
    // Routing works: a create for site hang-a lands there.
    poll_until(Duration::from_secs(20), Duration::from_millis(200), || async {
        admin.instance_create(&create("acme", at("hang-a"))).await.ok()
    })
    .await
    .expect("a create reaches hang-a through the parent");

    let pid = a.pid().expect("hang-a runs");
    let signal = |s: &str| {
        let ok = std::process::Command::new("kill").args([s, &pid.to_string()]).status().expect("kill").success();
        assert!(ok, "kill {s} {pid}");
    };
    signal("-STOP");
    let started = std::time::Instant::now();
    let result = admin.with_timeout(Duration::from_secs(90)).instance_create(&create("acme", at("hang-a"))).await;
    let took = started.elapsed();
    signal("-CONT");
    let err = result.expect_err("a create on a frozen child");
    assert_eq!((err.status(), err.code()), (Some(503), Some(ErrorCode::ZoneUnavailable)), "{err}");
    // Marked so that a zone above does not try it elsewhere: it may have been made.
    assert!(matches!(err, ClientError::Api { outcome_unknown: true, .. }), "{err:?}");
    assert!(took < Duration::from_secs(15), "the create waited {took:?} (the forward timeout is 60 s)");
    eprintln!("a create on a frozen child ended after {took:?}");
    wait_child_status(parent, "hang-a", ZoneStatus::Online, Duration::from_secs(20)).await;
}
