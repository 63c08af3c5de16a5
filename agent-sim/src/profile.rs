//! Capability profiles: what each simulated host announces and how much it can hold.
//!
//! A profile maps a host's index (0, 1, 2, …) to its static capabilities and its capacity, with
//! no randomness, so a test that starts the same simulator twice sees the same hosts and can name
//! them ("the first three hosts have one each of kvm, xen and hyperv"). The changing
//! capabilities (`free-ram`, `number-of-instances`) come from what a host runs and are added by
//! the simulator's reports ([`crate::host`]), not here.

use std::collections::BTreeMap;

use api::Resources;
use serde_json::{json, Value};

/// 1 GiB in the API's memory unit (MB).
const GIB: i64 = 1024;

/// The capability profiles of `zone-node agent-sim --profile`. Their names are clap's
/// (`ValueEnum`) on the command line and strum's in logs; a test checks that they agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "lowercase")]
pub enum Profile {
    /// Every host the same: kvm, linux, 32 vcpus, 128 GiB, 2 TB.
    Uniform,
    /// Hosts that differ in every capability, for scheduler tests: hypervisor kvm/xen/hyperv in
    /// turn, some windows hosts, free-disk spread over 400..2000, accept-migrations on half of
    /// the hosts only, cpu-ghz 2.0..3.2, and three sizes of capacity.
    Mixed,
    /// Like uniform, with room for a hundred small instances per host (the 10,000-create
    /// benchmark over 100 hosts).
    Big,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One simulated host's static capabilities and capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct HostProfile {
    /// Key → JSON number, boolean or string, as `POST /v1/hosts` takes them.
    pub capabilities: BTreeMap<String, Value>,
    pub resources: Resources,
}

/// The profile of host number `index`.
pub fn host_profile(profile: Profile, index: usize) -> HostProfile {
    match profile {
        Profile::Uniform => HostProfile {
            capabilities: linux_kvm(1000.0, 2.6),
            resources: Resources { vcpus: 32, memory_mb: 128 * GIB, disk_gb: 2000 },
        },
        Profile::Big => HostProfile {
            capabilities: linux_kvm(10_000.0, 2.6),
            resources: Resources { vcpus: 256, memory_mb: 512 * GIB, disk_gb: 10_000 },
        },
        Profile::Mixed => mixed(index),
    }
}

fn linux_kvm(free_disk: f64, cpu_ghz: f64) -> BTreeMap<String, Value> {
    caps([
        ("hypervisor", json!("kvm")),
        ("os", json!("linux")),
        ("can-run-windows", json!(false)),
        ("accept-migrations", json!(true)),
        ("free-disk", json!(free_disk)),
        ("cpu-ghz", json!(cpu_ghz)),
    ])
}

/// The mixed profile. The figures are spread with small multiplicative steps (no RNG) and sized
/// so that 1,000 random creates of 1–8 vcpus, 1–16 GiB and 10–200 GB over 50 hosts mostly fit,
/// while the hosts that narrow requirements leave (xen only, windows only, ...) do run out.
fn mixed(index: usize) -> HostProfile {
    let i = index as i64;
    let hypervisor = ["kvm", "xen", "hyperv"][index % 3];
    let windows = hypervisor == "hyperv" || index % 5 == 1;
    let mut capabilities = caps([
        ("hypervisor", json!(hypervisor)),
        ("os", json!(if windows { "windows" } else { "linux" })),
        ("can-run-windows", json!(windows)),
        // 400..1996: above 2000 nothing matches, below 400 nothing does either.
        ("free-disk", json!((400 + (i * 389) % 1597) as f64)),
        // 2.0..3.2 in steps of 0.1.
        ("cpu-ghz", json!((20 + (i * 7) % 13) as f64 / 10.0)),
    ]);
    // Only on every other host, so `exists` is a real filter; true on half of those.
    match index % 4 {
        0 => capabilities.insert("accept-migrations".into(), json!(true)),
        2 => capabilities.insert("accept-migrations".into(), json!(false)),
        _ => None,
    };
    HostProfile {
        capabilities,
        resources: Resources {
            vcpus: 64 + 16 * (i % 3),
            memory_mb: (112 + 32 * (i % 4)) * GIB,
            disk_gb: 2000 + 500 * (i % 3),
        },
    }
}

fn caps<const N: usize>(pairs: [(&str, Value); N]) -> BTreeMap<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_hosts_differ_where_the_scheduler_tests_need_them_to() {
        let hosts: Vec<HostProfile> = (0..50).map(|i| host_profile(Profile::Mixed, i)).collect();
        let hv: Vec<&str> = hosts[..3].iter().map(|h| h.capabilities["hypervisor"].as_str().unwrap()).collect();
        assert_eq!(hv, ["kvm", "xen", "hyperv"]);
        let disks: Vec<f64> = hosts.iter().map(|h| h.capabilities["free-disk"].as_f64().unwrap()).collect();
        assert!(disks.iter().all(|d| (400.0..2050.0).contains(d)), "{disks:?}");
        assert!(disks.iter().any(|d| *d < 600.0) && disks.iter().any(|d| *d > 1800.0), "{disks:?}");
        let os = |v: &str| hosts.iter().filter(|h| h.capabilities["os"] == json!(v)).count();
        assert!(os("windows") > 0 && os("linux") > 0);
        let migrating = hosts.iter().filter(|h| h.capabilities.contains_key("accept-migrations")).count();
        assert!(migrating > 0 && migrating < hosts.len(), "accept-migrations on some hosts only");
        let ghz: Vec<f64> = hosts.iter().map(|h| h.capabilities["cpu-ghz"].as_f64().unwrap()).collect();
        assert!(ghz.iter().all(|g| (2.0..=3.2).contains(g)) && ghz.iter().any(|g| *g > 2.4));
        assert_eq!(host_profile(Profile::Mixed, 7), host_profile(Profile::Mixed, 7), "deterministic");
    }

    #[test]
    fn names_on_the_command_line_and_in_logs_agree() {
        use clap::ValueEnum;
        use strum::IntoEnumIterator;
        for p in Profile::iter() {
            assert_eq!(Profile::from_str(p.as_str(), false), Ok(p), "{p:?}");
        }
        assert_eq!(Profile::Uniform.as_str(), "uniform");
    }

    #[test]
    fn big_hosts_hold_a_hundred_small_instances() {
        let r = host_profile(Profile::Big, 0).resources;
        assert!(r.vcpus >= 100 && r.memory_mb >= 100 * 512 && r.disk_gb >= 100 * 10, "{r:?}");
    }
}
