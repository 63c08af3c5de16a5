//! Benchmarks of federation with real processes (the `zone-node` binary named by
//! `ZONE_NODE_BIN`, normally a release build), each zone embedded (SQLite, in-process bus):
//!
//! - `hop`: one gateway hop. `GET /v1/instances/{id}` at a parent, forwarded to the child that
//!   holds the instance, against the same request at the child directly, with `wrk` at 1 and 32
//!   connections (the nginx rows of `scripts/bench/federation.sh` are measured the same way).
//!   A third row is the floor of the zone's own stack: the same request through `bare-proxy`, a
//!   process with only the HTTP server and client a zone uses (axum, reqwest, tokio) and
//!   nothing else (no token, no route lookup, no JSON);
//! - `lookup`: the lowest-zone lookup through a 4-level tree (1 global, R regions, D data centres
//!   per region, H huddles per data centre: 69 zones by default): every client's first lookup at
//!   global (cold: nothing cached anywhere), then `wrk` at 32 connections on cached lookups;
//! - `list`: listing N instances from each of C children at their parent: the first page and the
//!   full list (pages of 1000), against the same at one child alone;
//! - `tree`: a tree of zones at the product's default settings (1 → 4 → 16 → 80 by default, one
//!   simulated host per leaf): time from the last leaf's zone-add to a correct aggregate at the
//!   root, staleness at the root after creates at random leaves (lookups and aggregate), and the
//!   whole tree's CPU and memory at rest.
//!
//! ```text
//! bench-federation hop [--duration 10] [--repeat 3] [--zone-env K=V,K=V]
//! bench-federation bare-proxy --to http://127.0.0.1:PORT   (prints its port; used by `hop`)
//! bench-federation lookup [--regions 4] [--dcs 4] [--huddles 3] [--clients 60] [--duration 10] [--report-ms 1000] [--zone-env K=V,K=V]
//! bench-federation list [--children 10] [--per-child 10000] [--hosts 40] [--zone-env K=V,K=V]
//! bench-federation tree [--fanout 4,4,5] [--changes 40] [--idle-secs 30] [--zone-env K=V,K=V]
//! ```
//! Run with `scripts/bench/federation.sh`, which builds the release binaries and runs the nginx
//! peer in the same session.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use api::{InstanceCreate, Op, Requirement, Resources};
use e2e::federation::{sim_for, start_default_zones_with_env, zone_add};
use e2e::procfs::{cpu_seconds, rss_mib};
use e2e::{NodeProcess, SimProcess, SimSpec};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} needs a value")),
        None => default,
    }
}

/// `--zone-env K=V,K=V`: settings changed from the defaults for every zone (none by default). The
/// harness passes a zone none of the caller's own `ZONE_*` environment, so this is the way in.
fn zone_env(args: &[String]) -> Vec<(String, String)> {
    arg(args, "--zone-env", String::new())
        .split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).expect("--zone-env K=V,K=V"))
        .collect()
}

fn sim(zone: &NodeProcess, hosts: usize, profile: &str, caps: Vec<(String, serde_json::Value)>) -> SimSpec {
    // Tasks answered at once: the benchmarks measure the zones, not the agents. Reports at the
    // zones' default interval (the zones run at the product's defaults).
    SimSpec { latency_ms: 0, report_interval_ms: 1000, ..sim_for(zone, hosts, profile, caps) }
}

fn small() -> Resources {
    Resources { vcpus: 1, memory_mb: 256, disk_gb: 5 }
}

/// One wrk run: requests/s, p50 and p99 in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Wrk {
    rps: f64,
    p50: f64,
    p99: f64,
}

fn wrk(url: &str, token: &str, connections: u32, seconds: u64) -> Wrk {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency"])
        .args(["-H", &format!("Authorization: Bearer {token}"), url])
        .output()
        .unwrap_or_else(|e| panic!("cannot run wrk (apt-get install wrk): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("Non-2xx"), "wrk saw errors from {url}:\n{text}");
    let ms = |v: &str| -> f64 {
        let v = v.trim();
        if let Some(x) = v.strip_suffix("us") {
            x.parse::<f64>().unwrap() / 1000.0
        } else if let Some(x) = v.strip_suffix("ms") {
            x.parse().unwrap()
        } else if let Some(x) = v.strip_suffix('s') {
            x.parse::<f64>().unwrap() * 1000.0
        } else {
            panic!("wrk latency {v:?}")
        }
    };
    let pct = |p: &str| -> f64 {
        let line = text.lines().find(|l| l.trim_start().starts_with(p)).unwrap_or_else(|| panic!("no {p} in:\n{text}"));
        ms(line.trim_start().trim_start_matches(p))
    };
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in:\n{text}"));
    Wrk { rps, p50: pct("50%"), p99: pct("99%") }
}

fn median(mut runs: Vec<Wrk>) -> (Wrk, f64, f64) {
    runs.sort_by(|a, b| a.p50.total_cmp(&b.p50));
    let m = runs[runs.len() / 2];
    let rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
    let (lo, hi) = (rps.iter().cloned().fold(f64::MAX, f64::min), rps.iter().cloned().fold(0.0, f64::max));
    (m, lo, hi)
}

fn print_row(what: &str, c: u32, (m, lo, hi): (Wrk, f64, f64)) {
    println!("| {what} | c={c} | {:.0} [{lo:.0}–{hi:.0}] | {:.3} | {:.3} |", m.rps, m.p50, m.p99);
}

async fn token(node: &NodeProcess) -> String {
    let (_, t) =
        api::Client::new(&node.url()).login(&node.spec().admin_username, &node.spec().admin_password).await.unwrap();
    t.token
}

async fn hop(args: &[String]) {
    let seconds = arg(args, "--duration", 10u64);
    let repeat = arg(args, "--repeat", 3usize);
    let zones = start_default_zones_with_env(&["hop-parent", "hop-child"], &zone_env(args)).await;
    let (parent, child) = (&zones["hop-parent"], &zones["hop-child"]);
    let _sim = SimProcess::start(sim(child, 1, "uniform", vec![])).await;
    zone_add(parent, child).await;
    let p = parent.client().await;
    let instance = p
        .instance_create(&InstanceCreate {
            name: "vm".into(),
            client_id: Some("bench".into()),
            requirements: vec![],
            resources: small(),
            count: None,
        })
        .await
        .expect("create through the parent");
    assert_eq!(instance.zone_path, ["hop-parent", "hop-child"]);
    let (pt, ct) = (token(parent).await, token(child).await);
    let direct = format!("{}/v1/instances/{}", child.url(), instance.id);
    let via = format!("{}/v1/instances/{}", parent.url(), instance.id);
    // The floor: processes of this binary forwarding to the child with nothing in between.
    let (floor, port) = start_bare(&["--to", &child.url()]);
    let bare = format!("http://127.0.0.1:{port}/v1/instances/{}", instance.id);
    let (floor1, port) = start_bare(&["--to", &child.url(), "--current-thread"]);
    let bare1 = format!("http://127.0.0.1:{port}/v1/instances/{}", instance.id);
    let (floor2, port) = start_bare(&["--to", &child.url(), "--hyper"]);
    let bare2 = format!("http://127.0.0.1:{port}/v1/instances/{}", instance.id);
    let (floor3, port) = start_bare(&["--to", &child.url(), "--lean-reqwest"]);
    let bare3 = format!("http://127.0.0.1:{port}/v1/instances/{}", instance.id);
    // Warm every path (connections, token caches, the parent's route cache).
    wrk(&direct, &ct, 4, 1);
    wrk(&via, &pt, 4, 1);
    wrk(&bare, &ct, 4, 1);
    wrk(&bare1, &ct, 4, 1);
    wrk(&bare2, &ct, 4, 1);
    wrk(&bare3, &ct, 4, 1);
    println!("| path | connections | req/s (median [min–max] of {repeat}) | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for c in [1, 32] {
        let d = median((0..repeat).map(|_| wrk(&direct, &ct, c, seconds)).collect());
        let v = median((0..repeat).map(|_| wrk(&via, &pt, c, seconds)).collect());
        let b = median((0..repeat).map(|_| wrk(&bare, &ct, c, seconds)).collect());
        let b1 = median((0..repeat).map(|_| wrk(&bare1, &ct, c, seconds)).collect());
        let b2 = median((0..repeat).map(|_| wrk(&bare2, &ct, c, seconds)).collect());
        let b3 = median((0..repeat).map(|_| wrk(&bare3, &ct, c, seconds)).collect());
        print_row("child directly", c, d);
        print_row("through the parent (1 hop)", c, v);
        print_row("through bare-proxy (axum + reqwest only)", c, b);
        print_row("through bare-proxy on one thread", c, b1);
        print_row("through bare-proxy with hyper's client", c, b2);
        print_row("through bare-proxy with reqwest, no proxy lookup, HTTP/1 only, no timeout", c, b3);
        for (what, w) in [
            ("the hop", v),
            ("bare-proxy", b),
            ("bare-proxy on one thread", b1),
            ("bare-proxy with hyper's client", b2),
            ("bare-proxy with a lean reqwest", b3),
        ] {
            println!("| added by {what} | c={c} | | {:+.3} | {:+.3} |", w.0.p50 - d.0.p50, w.0.p99 - d.0.p99);
        }
    }
    for mut f in [floor, floor1, floor2, floor3] {
        let _ = f.kill();
        let _ = f.wait();
    }
}

/// The least a hop costs on the zone's own stack: an axum server whose one route forwards the
/// request's path and `Authorization` header to `--to` through a reqwest client configured as a
/// gateway's ([`api::client::default_http`]) and answers with the bytes it got. No token check,
/// no route lookup, no decoding: what is left is the HTTP server, the HTTP client and the runtime.
/// With `--answer BODY` it forwards nothing and answers every request with `BODY` (the floor of a
/// server on the same stack). `--current-thread` runs it on one thread, `--workers N` on a runtime of
/// N workers (else this binary's own, of two); `--hyper` forwards through
/// hyper's own client instead of reqwest; `--lean-reqwest` through reqwest without a proxy lookup,
/// HTTP/2 or a total timeout.
async fn bare_proxy(args: &[String]) {
    let to: String = arg(args, "--to", String::new());
    let answer: String = arg(args, "--answer", String::new());
    assert!(to.starts_with("http://127.0.0.1:") || !answer.is_empty(), "--to must be a loopback URL");
    #[derive(Clone)]
    struct Upstream {
        to: String,
        http: reqwest::Client,
    }
    async fn forward(
        axum::extract::State(up): axum::extract::State<Upstream>,
        uri: axum::http::Uri,
        headers: axum::http::HeaderMap,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let mut req = up.http.get(format!("{}{}", up.to, uri.path()));
        if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
            req = req.header(axum::http::header::AUTHORIZATION, auth);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.bytes().await.unwrap_or_default();
                (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
            }
            Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
        }
    }
    let hyper_client = args.iter().any(|a| a == "--hyper");
    // reqwest without the layers it adds by default: the system proxy lookup, HTTP/2 negotiation
    // and the total timeout (a timer per request).
    let lean = args.iter().any(|a| a == "--lean-reqwest");
    let serve = async move {
        let app = if hyper_client {
            // hyper's own client, without reqwest's layers (URL parsing, redirects, timeouts).
            let http: HyperClient = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build_http();
            axum::Router::new().route("/v1/instances/{id}", axum::routing::get(forward_hyper)).with_state((to, http))
        } else if answer.is_empty() {
            let http = if lean {
                api::http::client_builder()
                    .no_proxy()
                    .http1_only()
                    .pool_max_idle_per_host(64)
                    .tcp_nodelay(true)
                    .build()
                    .expect("a reqwest client")
            } else {
                api::client::default_http()
            };
            axum::Router::new()
                .route("/v1/instances/{id}", axum::routing::get(forward))
                .with_state(Upstream { to, http })
        } else {
            let answer = axum::body::Bytes::from(answer);
            axum::Router::new().fallback(move || {
                let answer = answer.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], answer) }
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("{}", listener.local_addr().expect("bound").port());
        axum::serve(listener, app).await.expect("serve");
    };
    let workers: usize = arg(args, "--workers", 0);
    if args.iter().any(|a| a == "--current-thread") {
        // One thread doing everything, as nginx's worker does: no hand-off between workers.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(serve)
        })
        .join()
        .expect("bare-proxy thread");
    } else if workers > 0 {
        // A runtime of its own with that many workers (this binary's own has two).
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(serve)
        })
        .join()
        .expect("bare-proxy thread");
    } else {
        serve.await;
    }
}

async fn lookup(args: &[String]) {
    let (regions, dcs, huddles) =
        (arg(args, "--regions", 4usize), arg(args, "--dcs", 4usize), arg(args, "--huddles", 3usize));
    let clients = arg(args, "--clients", 60usize);
    let seconds = arg(args, "--duration", 10u64);
    // How often the leaves' simulated hosts report (the zones are told the same): the tree's
    // background beside the lookups.
    let report_ms = arg(args, "--report-ms", 1000u64);
    let mut names = vec!["global".to_string()];
    let mut edges: Vec<(String, String)> = Vec::new();
    let mut leaves = Vec::new();
    for r in 0..regions {
        let region = format!("r{r}");
        names.push(region.clone());
        edges.push(("global".into(), region.clone()));
        for d in 0..dcs {
            let dc = format!("r{r}-dc{d}");
            names.push(dc.clone());
            edges.push((region.clone(), dc.clone()));
            for h in 0..huddles {
                let huddle = format!("r{r}-dc{d}-h{h}");
                names.push(huddle.clone());
                edges.push((dc.clone(), huddle.clone()));
                leaves.push(huddle);
            }
        }
    }
    let started = Instant::now();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut env = zone_env(args);
    env.push(("ZONE_HOST_REPORT_INTERVAL_MS".into(), report_ms.to_string()));
    let zones: BTreeMap<String, NodeProcess> = start_default_zones_with_env(&refs, &env).await;
    let sims = futures::future::join_all(leaves.iter().map(|l| {
        let spec = sim(&zones[l], 1, "uniform", vec![("site".into(), json!(l))]);
        SimProcess::start(SimSpec { report_interval_ms: report_ms, ..spec })
    }))
    .await;
    for (parent, child) in &edges {
        zone_add(&zones[parent], &zones[child]).await;
    }
    println!(
        "tree: {} zones ({regions} regions × {dcs} data centres × {huddles} huddles), {} hosts, up in {:.1} s",
        zones.len(),
        sims.len(),
        started.elapsed().as_secs_f64()
    );
    // Each client's instances in one or two huddles, created at the huddles (so nothing above
    // them has heard of the client).
    for c in 0..clients {
        let homes: Vec<&String> = if c % 2 == 0 {
            vec![&leaves[c % leaves.len()]]
        } else {
            vec![&leaves[c % leaves.len()], &leaves[(c * 7 + 3) % leaves.len()]]
        };
        for home in homes {
            let client = zones[home].client().await;
            client
                .instance_create(&InstanceCreate {
                    name: "vm".into(),
                    client_id: Some(format!("client-{c}")),
                    requirements: vec![],
                    resources: small(),
                    count: None,
                })
                .await
                .expect("create");
        }
    }
    // Let the generations reach global (nothing is cached yet anyway).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let g = zones["global"].client().await;
    let mut cold = Vec::new();
    for c in 0..clients {
        let t = Instant::now();
        let z = g.lowest_zone(&format!("client-{c}")).await.unwrap().expect("managed");
        cold.push(t.elapsed().as_secs_f64() * 1000.0);
        // One huddle: that huddle, four levels down; two: where their paths meet.
        let depth = z.path.len();
        let want = if c % 2 == 0 { depth == 4 } else { (1..=4).contains(&depth) };
        assert!(want, "{z:?}");
    }
    cold.sort_by(f64::total_cmp);
    let pick = |p: f64| cold[((cold.len() - 1) as f64 * p).round() as usize];
    println!("| lookup at global | runs | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    println!(
        "| cold ({} zones asked per lookup) | {clients} | {:.2} | {:.2} | {:.2} |",
        zones.len() - 1,
        pick(0.5),
        pick(0.99),
        cold[cold.len() - 1]
    );
    let t = token(&zones["global"]).await;
    let url = format!("{}/v1/clients/client-1/zone", zones["global"].url());
    wrk_rows("cached", &url, &t, seconds);
    // The floor at 32 connections: a process of the zone's own HTTP stack answering the same
    // body from memory, under the same tree.
    let body = async {
        let resp = api::client::default_http().get(&url).bearer_auth(&t).send().await?.error_for_status()?;
        resp.text().await
    }
    .await
    .unwrap_or_else(|e| panic!("cannot read the lookup's answer at {url} to serve it from memory: {e}"));
    // On two workers (a zone's default here: one per core) and on one (as nginx's one worker
    // process): with wrk busy on one core, two workers share the other, and a worker the kernel
    // puts aside holds its connections' requests for a time slice.
    for workers in ["2", "1", "current-thread"] {
        let mut bare_args = vec!["--answer", body.as_str()];
        match workers {
            "current-thread" => bare_args.push("--current-thread"),
            n => bare_args.extend(["--workers", n]),
        }
        let (mut floor, port) = start_bare(&bare_args);
        let bare = format!("http://127.0.0.1:{port}/v1/clients/client-1/zone");
        wrk_rows(&format!("bare axum ({workers} workers) answering the same body from memory"), &bare, &t, seconds);
        let _ = floor.kill();
        let _ = floor.wait();
    }
    // And nginx (one process doing the work, as the peer's one worker does) answering the same body under the same
    // tree: what the tree's background leaves of the tail to a server that is not on tokio.
    match start_nginx_answering(&body) {
        Some((nginx, port)) => {
            let at = format!("http://127.0.0.1:{port}/v1/clients/client-1/zone");
            wrk_rows("nginx (one process) answering the same body, same tree", &at, &t, seconds);
            drop(nginx);
        }
        None => println!(
            "| nginx answering the same body: not run (nginx is not installed: apt-get install -y nginx) | | | | |"
        ),
    }
    drop(sims);
}

/// One row per connection count (1, then 32) of the lookup table: `what`, and the median of
/// three wrk runs of `seconds` against `url` after a second's warm-up.
fn wrk_rows(what: &str, url: &str, token: &str, seconds: u64) {
    wrk(url, token, 4, 1);
    for c in [1, 32] {
        let (m, lo, hi) = median((0..3).map(|_| wrk(url, token, c, seconds)).collect());
        println!(
            "| {what}, wrk c={c} ({:.0} req/s [{lo:.0}–{hi:.0}]) | {seconds} s × 3 | {:.3} | {:.3} | |",
            m.rps, m.p50, m.p99
        );
    }
}

/// nginx serving `body` as JSON on a free port in one process (no master), no access log, from a
/// configuration in a directory of its own; stopped (and the directory removed) on drop. `None`
/// when nginx is not installed.
fn start_nginx_answering(body: &str) -> Option<(NginxAnswering, u16)> {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists())?;
    let dir = tempfile::tempdir().expect("a directory for nginx");
    let port = test_support::free_port();
    // nginx's single-quoted strings end at a quote; a JSON body holds none unless a name does.
    assert!(!body.contains('\'') && !body.contains('\\'), "a body nginx cannot quote: {body}");
    let conf = format!(
        "master_process off; daemon off; pid {dir}/nginx.pid; error_log {dir}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir}; \
         uwsgi_temp_path {dir}; scgi_temp_path {dir};\n\
         server {{ listen 127.0.0.1:{port}; location / {{ default_type application/json; return 200 '{body}'; }} }} }}\n",
        dir = dir.path().display()
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let child = Command::new(bin)
        .args(["-p", &dir.path().display().to_string(), "-c", &conf_path.display().to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nginx");
    let nginx = NginxAnswering { child, _dir: dir };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((nginx, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nginx did not listen on {port} within 5 s");
}

/// An nginx of [`start_nginx_answering`], stopped on drop.
struct NginxAnswering {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for NginxAnswering {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<axum::body::Bytes>,
>;

/// `bare-proxy --hyper`'s one route.
async fn forward_hyper(
    axum::extract::State((to, http)): axum::extract::State<(String, HyperClient)>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let mut req = axum::http::Request::get(format!("{to}{}", uri.path()));
    if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
        req = req.header(axum::http::header::AUTHORIZATION, auth);
    }
    let Ok(req) = req.body(http_body_util::Empty::new()) else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    match http.request(req).await {
        Ok(resp) => {
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Starts `bare-proxy` with `args`; the process and the port it listens on.
fn start_bare(args: &[&str]) -> (std::process::Child, u16) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("bare-proxy")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start bare-proxy");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("piped")), &mut line)
        .expect("bare-proxy prints its port");
    (child, line.trim().parse().expect("a port"))
}

async fn list(args: &[String]) {
    let children = arg(args, "--children", 10usize);
    let per_child = arg(args, "--per-child", 10_000usize);
    let hosts = arg(args, "--hosts", 40usize);
    let mut names = vec!["list-parent".to_string()];
    names.extend((0..children).map(|i| format!("list-c{i}")));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    // At the product's defaults: the fast polls and 200 ms host reports of the tests would have
    // 10 × 40 hosts send 2,000 reports a second on the cores the list runs on.
    let zones = start_default_zones_with_env(&refs, &zone_env(args)).await;
    let kids: Vec<&NodeProcess> = names[1..].iter().map(|n| &zones[n]).collect();
    let sims = futures::future::join_all(kids.iter().map(|k| SimProcess::start(sim(k, hosts, "big", vec![])))).await;
    let started = Instant::now();
    futures::future::join_all(kids.iter().map(|k| async move {
        let client = k.client().await;
        let made: usize = futures::stream::iter(0..per_child)
            .map(|i| {
                let client = client.clone();
                async move {
                    client
                        .instance_create(&InstanceCreate {
                            name: format!("vm-{i}"),
                            client_id: Some(format!("client-{}", i % 50)),
                            requirements: vec![Requirement { key: "hypervisor".into(), op: Op::Exists, value: None }],
                            resources: small(),
                            count: None,
                        })
                        .await
                        .map(|_| 1)
                        .unwrap_or_else(|e| panic!("create failed: {e}"))
                }
            })
            .buffer_unordered(16)
            .fold(0, |a, b| async move { a + b })
            .await;
        assert_eq!(made, per_child);
    }))
    .await;
    eprintln!("created {} instances in {:.0} s", children * per_child, started.elapsed().as_secs_f64());
    for k in &kids {
        zone_add(&zones["list-parent"], k).await;
    }
    let parent = zones["list-parent"].client().await;
    let one = kids[0].client().await;
    println!("| what | where | instances | time ms (median of 5) |");
    println!("|---|---|---|---|");
    for (label, client, total) in
        [("one child alone", &one, per_child), ("parent of all children", &parent, children * per_child)]
    {
        let mut first = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let page = client.instances("limit=1000").await.unwrap_or_else(|e| panic!("the first page: {e}"));
            first.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(page.instances.len().min(1000), page.instances.len());
        }
        first.sort_by(f64::total_cmp);
        println!("| first page (limit 1000) | {label} | 1000 | {:.0} |", first[2]);
        // CPU of every zone process over the five walks (the bench client's own decoding apart):
        // steadier than wall time on a shared machine.
        let zone_cpu = || zones.values().filter_map(NodeProcess::pid).map(cpu_seconds).sum::<f64>();
        // The two walks take turns, so a machine that slows down mid-run slows both alike.
        let (mut times, mut cpu) = ([Vec::new(), Vec::new()], [0.0, 0.0]);
        for _ in 0..5 {
            for ahead in [false, true] {
                let (t, cpu_before) = (Instant::now(), zone_cpu());
                let n = if ahead { walk_ahead(client).await } else { walk_in_turn(client).await };
                times[ahead as usize].push(t.elapsed().as_secs_f64() * 1000.0);
                cpu[ahead as usize] += (zone_cpu() - cpu_before) * 1000.0 / 5.0;
                assert_eq!(n, total, "every instance listed once");
            }
        }
        for (i, walk) in ["one page after the other", "next page asked on its header"].into_iter().enumerate() {
            times[i].sort_by(f64::total_cmp);
            println!(
                "| full list (pages of 1000), {walk} | {label} | {total} | {:.0} (zones' CPU: {:.0} ms a walk) |",
                times[i][2], cpu[i]
            );
        }
    }
    drop(sims);
}

/// Walks every page of 1,000, asking for each page once the one before is decoded (what a client
/// that reads `next_marker` from the body does); answers how many instances it saw.
async fn walk_in_turn(client: &api::Client) -> usize {
    let mut n = 0;
    let mut marker: Option<String> = None;
    loop {
        let q = match &marker {
            Some(m) => format!("limit=1000&marker={m}"),
            None => "limit=1000".into(),
        };
        let page = client.instances(&q).await.unwrap_or_else(|e| panic!("the page after {marker:?}: {e}"));
        assert!(page.unreachable_zones.is_empty(), "{:?}", page.unreachable_zones);
        n += page.instances.len();
        marker = page.next_marker;
        if marker.is_none() {
            return n;
        }
    }
}

/// [`walk_in_turn`] with `api::InstancePages`: each page's successor asked for on its header,
/// while the page is read and decoded.
async fn walk_ahead(client: &api::Client) -> usize {
    let mut n = 0;
    let mut pages = client.instance_pages("limit=1000");
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("the page after {n} instances: {e}"));
        assert!(page.unreachable_zones.is_empty(), "{:?}", page.unreachable_zones);
        assert_eq!(pages.asked_ahead(), page.next_marker.is_some(), "the zone names the next page in its header");
        n += page.instances.len();
    }
    n
}

/// p50, p99 and max of `samples` (milliseconds).
fn p50_p99_max(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let pick = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (pick(0.5), pick(0.99), samples[samples.len() - 1])
}

/// The root's view of the leaves' hosts: how many hosts announce `site`, and the sum of their
/// free memory.
fn root_view(agg: &api::Aggregate) -> (i64, f64) {
    let sites = match agg.get("site") {
        Some(api::AggregateEntry::String { count, .. }) => *count,
        _ => 0,
    };
    let free = match agg.get("capacity.free-memory-mb") {
        Some(api::AggregateEntry::Float { sum, .. }) => *sum,
        _ => f64::NAN,
    };
    (sites, free)
}

async fn tree(args: &[String]) {
    let fanout: Vec<usize> =
        arg(args, "--fanout", "4,4,5".to_string()).split(',').map(|f| f.parse().expect("--fanout N,N,…")).collect();
    assert!(!fanout.is_empty() && fanout.iter().all(|f| *f > 0), "--fanout takes positive numbers, e.g. 4,4,5");
    let changes = arg(args, "--changes", 40usize);
    assert!(changes > 0, "--changes takes at least 1: the staleness figures are percentiles of them");
    let idle_secs = arg(args, "--idle-secs", 30u64);
    // Level by level from the root: `frontier` is the deepest level built so far (the leaves at
    // the end), `names` every zone.
    let mut names: Vec<String> = vec!["t".to_string()];
    let mut frontier: Vec<String> = names.clone();
    let mut edges: Vec<(String, String)> = Vec::new();
    for f in &fanout {
        let next: Vec<String> =
            frontier.iter().flat_map(|parent| (0..*f).map(move |i| format!("{parent}-{i}"))).collect();
        for (k, child) in next.iter().enumerate() {
            edges.push((frontier[k / f].clone(), child.clone()));
        }
        names.extend(next.iter().cloned());
        frontier = next;
    }
    let leaves = frontier;
    let started = Instant::now();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let zones = start_default_zones_with_env(&refs, &zone_env(args)).await;
    // One host per leaf, reporting at the zone's default interval (1 s); agents answer at once.
    let sims = futures::future::join_all(
        leaves.iter().map(|l| SimProcess::start(sim(&zones[l], 1, "uniform", vec![("site".into(), json!(l))]))),
    )
    .await;
    let spawned_s = started.elapsed().as_secs_f64();
    // The inner edges first, then the leaves: the last zone-add is a leaf's.
    let (leaf_edges, inner_edges): (Vec<_>, Vec<_>) = edges.iter().partition(|(_, c)| leaves.contains(c));
    for (parent, child) in inner_edges.iter().chain(&leaf_edges) {
        zone_add(&zones[parent], &zones[child]).await;
    }
    let last_add = Instant::now();
    let root = zones["t"].client().await;
    let want = leaves.len() as i64;
    let mut seen = (0, f64::NAN);
    while last_add.elapsed() < Duration::from_secs(120) {
        seen = root_view(&root.capabilities().await.expect("root aggregate"));
        if seen.0 == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let converged_s = last_add.elapsed().as_secs_f64();
    assert_eq!(seen.0, want, "the root's aggregate counts every leaf's host after 120 s");
    println!(
        "tree {}: {} zones, {} leaves with one host each; processes up in {spawned_s:.1} s; \
         root aggregate correct {converged_s:.2} s after the last zone-add",
        fanout.iter().map(ToString::to_string).collect::<Vec<_>>().join("→"),
        zones.len(),
        leaves.len()
    );

    // Staleness: the root first answers "not managed" for a new client (and caches that miss),
    // then the client's instance is created at a random leaf; how long until the root's lookup
    // names that leaf, and until its aggregate shows the leaf's lower free memory.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut lookup_ms, mut aggregate_ms) = (Vec::new(), Vec::new());
    for k in 0..changes {
        let leaf = &leaves[rng.gen_range(0..leaves.len())];
        let client_id = format!("stale-{k}");
        assert!(root.lowest_zone(&client_id).await.expect("lookup").is_none(), "{client_id} is new");
        let before = root_view(&root.capabilities().await.expect("root aggregate")).1;
        zones[leaf]
            .client()
            .await
            .instance_create(&InstanceCreate {
                name: "vm".into(),
                client_id: Some(client_id.clone()),
                requirements: vec![],
                resources: small(),
                count: None,
            })
            .await
            .expect("create at the leaf");
        let made = Instant::now();
        let (mut found, mut moved) = (None, None);
        while (found.is_none() || moved.is_none()) && made.elapsed() < Duration::from_secs(30) {
            if found.is_none() {
                if let Some(z) = root.lowest_zone(&client_id).await.expect("lookup") {
                    assert_eq!(&z.zone_name, leaf, "{client_id} lives in {leaf}");
                    found = Some(made.elapsed());
                }
            }
            if moved.is_none() && root_view(&root.capabilities().await.expect("root aggregate")).1 < before {
                moved = Some(made.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let found = found.expect("the root finds the new client within 30 s");
        let found_ms = found.as_secs_f64() * 1000.0;
        if found_ms > 100.0 {
            // Which leaf and when (Unix time, to match the zones' logs): to chase an outlier.
            let made_at = (std::time::SystemTime::now() - made.elapsed()).duration_since(std::time::UNIX_EPOCH);
            let made_at = made_at.map(|d| d.as_secs_f64()).unwrap_or_default();
            eprintln!(
                "slow change {k} at {leaf}: seen at the root after {found_ms:.0} ms; created at Unix time {made_at:.3}"
            );
        }
        lookup_ms.push(found_ms);
        aggregate_ms.push(moved.expect("the root's aggregate moves within 30 s").as_secs_f64() * 1000.0);
    }

    // At rest: no API calls, hosts reporting, parents watching and polling.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pids: Vec<u32> = zones.values().filter_map(NodeProcess::pid).collect();
    let sim_pids: Vec<u32> = sims.iter().filter_map(|s| s.process().pid()).collect();
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    // Per level too (the root is level 0, the leaves the last), to say where the time goes.
    let level_of = |name: &str| name.matches('-').count();
    let by_level = |name_pids: &[(usize, u32)]| {
        let mut cpu = vec![0.0; fanout.len() + 1];
        for (level, pid) in name_pids {
            cpu[*level] += cpu_seconds(*pid);
        }
        cpu
    };
    let level_pids: Vec<(usize, u32)> =
        zones.iter().filter_map(|(name, z)| z.pid().map(|p| (level_of(name), p))).collect();
    let levels0 = by_level(&level_pids);
    let (zones0, sims0, t0) = (cpu(&pids), cpu(&sim_pids), Instant::now());
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let secs = t0.elapsed().as_secs_f64();
    let levels: Vec<String> = by_level(&level_pids)
        .iter()
        .zip(&levels0)
        .enumerate()
        .map(|(level, (after, before))| {
            let n = level_pids.iter().filter(|(l, _)| *l == level).count().max(1);
            format!("level {level}: {:.2} %", (after - before) / secs * 100.0 / n as f64)
        })
        .collect();
    let zones_cpu = (cpu(&pids) - zones0) / secs * 100.0;
    let sims_cpu = (cpu(&sim_pids) - sims0) / secs * 100.0;
    let mut rss: Vec<f64> = pids.iter().map(|p| rss_mib(*p)).collect();
    rss.sort_by(f64::total_cmp);
    let (l50, l99, lmax) = p50_p99_max(lookup_ms);
    let (a50, a99, amax) = p50_p99_max(aggregate_ms);
    println!("| what | figure |");
    println!("|---|---|");
    println!("| zones / leaves | {} / {} |", zones.len(), leaves.len());
    println!("| last zone-add → correct root aggregate | {converged_s:.2} s |");
    println!("| root lookup after a create at a random leaf, p50 / p99 / max ({changes}) | {l50:.0} / {l99:.0} / {lmax:.0} ms |");
    println!(
        "| root aggregate after a create at a random leaf, p50 / p99 / max | {a50:.0} / {a99:.0} / {amax:.0} ms |"
    );
    println!("| all zones at rest, CPU ({idle_secs} s) | {zones_cpu:.1} % of one core |");
    println!("| agent simulators at rest, CPU | {sims_cpu:.1} % of one core |");
    println!("| at rest, CPU per zone by level (root first) | {} |", levels.join(", "));
    println!(
        "| RSS per zone at rest, median / max | {:.0} / {:.0} MiB (total {:.0} MiB) |",
        rss[rss.len() / 2],
        rss[rss.len() - 1],
        rss.iter().sum::<f64>()
    );
    drop(sims);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("hop") => hop(&args).await,
        Some("bare-proxy") => bare_proxy(&args).await,
        Some("lookup") => lookup(&args).await,
        Some("list") => list(&args).await,
        Some("tree") => tree(&args).await,
        _ => {
            eprintln!("usage: bench-federation hop|lookup|list|tree [options] (see tests/bench/federation.rs)");
            std::process::exit(2);
        }
    }
}
