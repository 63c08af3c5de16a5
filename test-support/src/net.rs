//! Ports and names that keep concurrent tests apart.
//!
//! [`free_port`] picks ports below the kernel's ephemeral range, so the outgoing connections of the
//! tests and nodes (which take ephemeral ports) cannot steal a port between the moment it is picked and
//! the moment a node binds it. Picked ports are reserved with a marker file in a shared directory, so
//! two test processes (nextest runs each test in its own) never get the same one; a reservation ends
//! with the process that made it.

use std::collections::HashSet;
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Mutex;

use rand::Rng;

/// Lowest port [`free_port`] hands out.
const PORT_RANGE_START: u16 = 20_000;
/// Used when the kernel's ephemeral range cannot be read.
const DEFAULT_EPHEMERAL_START: u16 = 32_768;
const MAX_PICK_ATTEMPTS: u32 = 1_000;

/// Ports this process has handed out (a std mutex: held for a few instructions, never across `.await`).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that nothing listens on and no other test process holds.
///
/// The port stays reserved for this process's lifetime, so a node restarted on the same port finds it
/// still free of other tests.
pub fn free_port() -> u16 {
    free_port_where(|_| true)
}

/// Like [`free_port`], with an extra condition on the port (for example that `port + 20000`, where
/// RabbitMQ puts its distribution listener, is free too).
pub fn free_port_where(extra: impl Fn(u16) -> bool) -> u16 {
    let end = ephemeral_start().max(PORT_RANGE_START + 1_000);
    let mut rng = rand::thread_rng();
    for _ in 0..MAX_PICK_ATTEMPTS {
        let port = rng.gen_range(PORT_RANGE_START..end);
        if !port_bindable(port) || !extra(port) {
            continue;
        }
        if reserve(port) {
            return port;
        }
    }
    panic!(
        "no free TCP port on 127.0.0.1 in {PORT_RANGE_START}..{end} after {MAX_PICK_ATTEMPTS} attempts \
         (leftover processes from earlier runs? try `ss -ltnp`)"
    );
}

/// Whether a listener can bind 127.0.0.1:`port` right now.
pub fn port_bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A bus prefix no other test uses, such as `zt_3f9c0a1b2d4e`: tests share the broker, never queues.
/// Safe in queue and exchange names (no dots: the wire format puts dots between name parts).
pub fn unique_prefix() -> String {
    format!("zt_{}", short_id())
}

/// 12 random hex digits, for names that must not collide between tests.
pub fn short_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..12].to_owned()
}

fn ephemeral_start() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

fn reservation_dir() -> PathBuf {
    std::env::temp_dir().join("zone-e2e-ports")
}

/// Reserves `port` for this process; false when this or another live process already holds it.
fn reserve(port: u16) -> bool {
    {
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !guard.get_or_insert_with(HashSet::new).insert(port) {
            return false;
        }
    }
    let dir = reservation_dir();
    if fs::create_dir_all(&dir).is_err() {
        // No shared directory: the in-process set and the bind check still hold.
        return true;
    }
    let path = dir.join(port.to_string());
    let me = std::process::id();
    for _ in 0..2 {
        match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                use std::io::Write;
                let _ = write!(f, "{me}");
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner: Option<u32> = fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok());
                match owner {
                    Some(pid) if pid != me && process_alive(pid) => return false,
                    // Stale (its process is gone) or unreadable: take it over.
                    _ => {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
            Err(_) => return true,
        }
    }
    false
}

fn process_alive(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}
