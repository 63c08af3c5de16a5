//! `zone-node`: runs a management node (`serve`, the default) or an operator command.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use zone_node::Config;
use zone_node::{Application, Stopped};
use zone_node::{Cli, Command};

/// jemalloc rather than glibc malloc: glibc gives each thread its own arena and keeps freed
/// memory in them (7-8 MiB more per node under load, and a login's 19 MiB argon2 buffer resident
/// for good); jemalloc returns freed pages to the system and halved peak RSS in the create
/// benchmark (mimalloc, also tried, kept more: docs/benchmarks.md §3).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit codes: 2 bad configuration, 1 any other failure. (A node its peers evicted does not exit:
/// it rejoins the zone as a new member.)
const EXIT_CONFIG: u8 = 2;

/// How long a node that was evicted waits between attempts to rejoin when the zone's database or
/// bus is not back yet.
const REJOIN_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> ExitCode {
    // One TLS provider (ring) for the HTTP clients and amqps:// alike, installed before either runs.
    api::http::install_tls_provider();
    let cli = Cli::parse();
    // lapin logs returned messages at WARN with their bodies, which may hold secrets: keep it to
    // errors unless ZONE_LOG asks otherwise.
    let filter = EnvFilter::try_from_env("ZONE_LOG").unwrap_or_else(|_| EnvFilter::new("info,lapin=error"));
    // Colours only for a person at a terminal, not for log files and collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let workers = match worker_threads() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

/// The runtime's worker threads: `ZONE_WORKER_THREADS` (1 to 1024), else one per core. Read from
/// the environment only, since the runtime starts before the configuration is loaded. Fewer than
/// the cores serve a shorter tail where a node shares its cores with other busy processes (several
/// zones on one machine, or a load generator): a worker the kernel puts aside holds its
/// connections' requests for a time slice (docs/benchmarks.md, "One worker per zone").
fn worker_threads() -> Result<usize, String> {
    const VAR: &str = "ZONE_WORKER_THREADS";
    match std::env::var(VAR) {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(format!("invalid setting {VAR} = {v:?}: a whole number of threads from 1 to 1024")),
        },
        Err(std::env::VarError::NotPresent) => {
            Ok(std::thread::available_parallelism().map(std::num::NonZeroUsize::get).unwrap_or(1))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("invalid setting {VAR}: not text; a whole number of threads from 1 to 1024"))
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::CheckConfig => match Config::load_from_process(cli.config.as_deref()) {
            Ok(config) => {
                println!("{config:#?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        operator => match zone_node::run_operator(operator).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn serve(file: Option<std::path::PathBuf>) -> ExitCode {
    let config = match Config::load_from_process(file.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // A node its peers evicted (it missed heartbeats: paused, cut off) rejoins as a new member
    // with a new id, as a restart by its supervisor would, without the restart.
    let mut rejoining = false;
    loop {
        let app = match Application::build(config.clone()).await {
            Ok(app) => app,
            Err(e) if rejoining => {
                tracing::warn!(error = format!("{e:#}"), "cannot rejoin the zone yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(REJOIN_RETRY) => continue,
                    _ = zone_node::shutdown_signal() => return ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "node failed to start");
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        match app.run_until_stopped().await {
            Ok(Stopped::Shutdown) => return ExitCode::SUCCESS,
            Ok(Stopped::Evicted) => {
                tracing::warn!(
                    "this node was evicted by its peers (missed heartbeats); rejoining the zone as a new member"
                );
                rejoining = true;
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "node failed");
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
}
