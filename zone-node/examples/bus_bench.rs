//! Bus RPC benchmark, measured like the peers in /work/shared/peers (pika_rpc_bench.py,
//! oslo_rpc_bench.py): a 200-byte JSON payload echoed by a handler on a service queue; N calls
//! one at a time, then M calls with C in flight; calls/s, p50 and p99 per mode.
//!
//! ```text
//! cargo run --release -p zone-node --example bus_bench -- [--url amqp://...] [--n 5000]
//!     [--conc-calls 10000] [--conc 64] [--warmup 500] [--transport all|amqp|memory] [--json out.json]
//! ```
//!
//! For `amqp://` the echo server runs in a separate process (this example re-executing itself
//! with `--serve`), so client, server and broker are three processes as with the peers; the
//! `memory://` run is in-process.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use zone_node::{Bus, Delivery, Destination, Handler, Message};

const SERVICE: &str = "bench";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The peers' 200-byte payload.
fn payload() -> Vec<u8> {
    let head = r#"{"zone":"example.org","serial":2024112201,"op":"get","rr":[{"n":"www","t":"A","v":"192.0.2.10"},{"n":"mail","t":"MX","v":"10 mx.example.org"}],"pad":""#;
    let mut s = head.to_owned();
    s.push_str(&"x".repeat(200 - head.len() - 2));
    s.push_str("\"}");
    assert_eq!(s.len(), 200);
    s.into_bytes()
}

struct Echo;

#[async_trait::async_trait]
impl Handler for Echo {
    async fn handle(&self, d: Delivery) {
        let body = d.msg.body.clone();
        d.reply(Ok(body)).await;
    }
}

struct Args {
    url: String,
    n: usize,
    conc_calls: usize,
    conc: usize,
    warmup: usize,
    transport: String,
    json: Option<String>,
    serve: bool,
    prefix: String,
    node: Uuid,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: std::env::var("ZONE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
        n: 5000,
        conc_calls: 10000,
        conc: 64,
        warmup: 500,
        transport: "all".into(),
        json: None,
        serve: false,
        prefix: format!("bench{}", &Uuid::new_v4().simple().to_string()[..8]),
        node: Uuid::new_v4(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--n" => args.n = value()?.parse().map_err(|e| format!("--n: {e}"))?,
            "--conc-calls" => args.conc_calls = value()?.parse().map_err(|e| format!("--conc-calls: {e}"))?,
            "--conc" => args.conc = value()?.parse().map_err(|e| format!("--conc: {e}"))?,
            "--warmup" => args.warmup = value()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--transport" => args.transport = value()?,
            "--json" => args.json = Some(value()?),
            "--serve" => args.serve = true,
            "--prefix" => args.prefix = value()?,
            "--node" => args.node = value()?.parse().map_err(|e| format!("--node: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// The peers' percentile: nearest rank.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len() as f64;
    let k = ((p / 100.0 * n + 0.5).round() as i64 - 1).clamp(0, sorted.len() as i64 - 1);
    sorted[k as usize]
}

fn summarize(mut lat_ms: Vec<f64>, wall: Duration) -> serde_json::Value {
    lat_ms.sort_by(|a, b| a.total_cmp(b));
    let calls = lat_ms.len();
    serde_json::json!({
        "calls": calls,
        "wall_s": (wall.as_secs_f64() * 1000.0).round() / 1000.0,
        "calls_per_s": (calls as f64 / wall.as_secs_f64() * 10.0).round() / 10.0,
        "p50_ms": (pct(&lat_ms, 50.0) * 1000.0).round() / 1000.0,
        "p99_ms": (pct(&lat_ms, 99.0) * 1000.0).round() / 1000.0,
        "max_ms": (lat_ms.last().copied().unwrap_or(0.0) * 1000.0).round() / 1000.0,
    })
}

async fn sequential(bus: &Bus, to: &Destination, n: usize, body: &[u8]) -> Result<serde_json::Value, String> {
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let reply =
            bus.call(to.clone(), Message::new("echo", body.to_vec()), TIMEOUT).await.map_err(|e| e.to_string())?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        if reply != body {
            return Err("bad reply".into());
        }
    }
    Ok(summarize(lat, t0.elapsed()))
}

async fn concurrent(
    bus: &Bus,
    to: &Destination,
    total: usize,
    conc: usize,
    body: &[u8],
) -> Result<serde_json::Value, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..conc)
        .map(|_| {
            let (bus, to, next, body) = (bus.clone(), to.clone(), next.clone(), body.to_vec());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    let reply = bus
                        .call(to.clone(), Message::new("echo", body.clone()), TIMEOUT)
                        .await
                        .map_err(|e| e.to_string())?;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    if reply != body {
                        return Err("bad reply".to_owned());
                    }
                }
                Ok::<_, String>(lat)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(total);
    for worker in workers {
        lat.extend(worker.await.map_err(|e| e.to_string())??);
    }
    let mut v = summarize(lat, t0.elapsed());
    v["in_flight"] = serde_json::json!(conc);
    Ok(v)
}

async fn measure(bus: &Bus, to: &Destination, args: &Args, label: &str) -> Result<serde_json::Value, String> {
    let body = payload();
    sequential(bus, to, args.warmup, &body).await?;
    let seq = sequential(bus, to, args.n, &body).await?;
    println!("{label} sequential: {seq}");
    let conc = concurrent(bus, to, args.conc_calls, args.conc, &body).await?;
    println!("{label} concurrent: {conc}");
    Ok(serde_json::json!({ "sequential": seq, "concurrent": conc }))
}

/// The echo server process: serves until its stdin closes (the client exiting closes it).
async fn serve(args: &Args) -> Result<(), String> {
    let bus = Bus::connect(&args.url, &args.prefix, args.node).await.map_err(|e| e.to_string())?;
    bus.serve(SERVICE, Arc::new(Echo)).await.map_err(|e| e.to_string())?;
    println!("READY");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().lock().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            line.clear();
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    bus.close().await;
    Ok(())
}

async fn bench_amqp(args: &Args) -> Result<serde_json::Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut server = Command::new(exe)
        .args(["--serve", "--url", &args.url, "--prefix", &args.prefix, "--node", &args.node.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the server process: {e}"))?;
    let stdout = server.stdout.take().ok_or("no server stdout")?;
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        line
    })
    .await
    .map_err(|e| e.to_string())?;
    if ready.trim() != "READY" {
        let _ = server.kill();
        return Err(format!("server did not start: {ready:?}"));
    }
    let client = Bus::connect(&args.url, &args.prefix, Uuid::new_v4()).await.map_err(|e| e.to_string())?;
    let to = Destination::Node { service: SERVICE.into(), node: args.node };
    let result = measure(&client, &to, args, "amqp").await;
    client.close().await;
    drop(server.stdin.take());
    let _ = server.wait();
    result
}

async fn bench_memory(args: &Args) -> Result<serde_json::Value, String> {
    let name = format!("bench-{}", Uuid::new_v4());
    let server = Bus::connect(&format!("memory://{name}"), &args.prefix, args.node).await.map_err(|e| e.to_string())?;
    server.serve(SERVICE, Arc::new(Echo)).await.map_err(|e| e.to_string())?;
    let client =
        Bus::connect(&format!("memory://{name}"), &args.prefix, Uuid::new_v4()).await.map_err(|e| e.to_string())?;
    let to = Destination::Node { service: SERVICE.into(), node: args.node };
    measure(&client, &to, args, "memory").await
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("bus_bench: {err}");
            std::process::exit(2);
        }
    };
    if args.serve {
        if let Err(err) = serve(&args).await {
            eprintln!("bus_bench server: {err}");
            std::process::exit(1);
        }
        return;
    }
    let mut out = serde_json::Map::new();
    if matches!(args.transport.as_str(), "all" | "amqp") {
        match bench_amqp(&args).await {
            Ok(v) => {
                out.insert("amqp".into(), v);
            }
            Err(err) => {
                eprintln!("bus_bench amqp: {err}");
                std::process::exit(1);
            }
        }
    }
    if matches!(args.transport.as_str(), "all" | "memory") {
        match bench_memory(&args).await {
            Ok(v) => {
                out.insert("memory".into(), v);
            }
            Err(err) => {
                eprintln!("bus_bench memory: {err}");
                std::process::exit(1);
            }
        }
    }
    out.insert("config".into(), serde_json::json!({ "payload_bytes": 200, "n": args.n, "conc_calls": args.conc_calls, "conc": args.conc, "warmup": args.warmup }));
    if let Some(path) = &args.json {
        if let Err(err) = std::fs::write(path, serde_json::Value::Object(out).to_string()) {
            eprintln!("bus_bench: cannot write {path}: {err}");
            std::process::exit(1);
        }
    }
}
