//! One simulated host: the instances its agent holds, the tasks in progress, the behaviour the
//! control API changes at runtime, and the counters `GET {agent_url}/v1/stats` shows.
//!
//! A task is accepted ([`SimHost::accept`]) and finished ([`SimHost::finish`]) in two short
//! critical sections of a std mutex, never held across an await; the waiting in between (the
//! simulated latency) happens outside. Tasks are idempotent per (instance, action), as the
//! protocol asks: a second task for an action already in progress on an instance joins it (its
//! callback gets the same result, the work is not done twice), and applying an action whose
//! effect already holds (stopping a stopped instance, deleting a deleted one) succeeds. That is
//! what a zone that lost track of a task (its node died) relies on when it sends the same action
//! again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use api::agent::{AgentAction, AgentTask};
use api::Resources;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::profile::HostProfile;

/// What the control API can change on one host at runtime.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// Probability (0..=1) that a task fails with a "simulated failure".
    pub fail_rate: f64,
    /// How long a task takes before its callback is posted.
    pub latency: Duration,
    /// Whether the host sends its periodic reports (false: the zone soon marks it down).
    pub reporting: bool,
}

impl Behaviour {
    pub fn to_json(self) -> Value {
        json!({
            "fail_rate": self.fail_rate,
            "latency_ms": self.latency.as_millis() as u64,
            "reporting": self.reporting,
        })
    }
}

/// Where and how to post one task's result.
#[derive(Debug, Clone)]
pub struct Callback {
    pub task_id: String,
    pub url: String,
    pub token: SecretString,
}

/// Work the caller must do for an accepted task: wait `latency`, then [`SimHost::finish`].
#[derive(Debug, Clone)]
pub struct Work {
    pub instance_id: String,
    pub action: AgentAction,
    pub resources: Resources,
    pub target_agent_url: Option<String>,
    pub latency: Duration,
    /// Decided when the task was accepted, so a control change cannot flip a task in flight.
    pub fail: bool,
}

/// What [`SimHost::accept`] did with a task.
#[derive(Debug)]
pub enum Accepted {
    /// New work: run it.
    Started(Work),
    /// The same action on the same instance is in progress: its result goes to this callback too.
    Joined,
}

/// How a finished task went, and who to tell.
#[derive(Debug)]
pub struct Finished {
    pub callbacks: Vec<Callback>,
    /// `None` on success, else the failure reason.
    pub failure: Option<String>,
    /// A successful migration: what the target host must now hold.
    pub migrated: Option<(Resources, Power)>,
}

/// Whether an instance exists on this host, and if so whether it runs. Its name (`running`,
/// `stopped`, `absent`) is the `state` of an instance in `GET {agent_url}/v1/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Power {
    Running,
    Stopped,
    Absent,
}

impl Power {
    fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug)]
struct SimInstance {
    power: Power,
    resources: Resources,
    /// Every action started on the instance, in order (joined duplicates are not repeated).
    ops: Vec<AgentAction>,
    /// Tasks in progress on it right now.
    active: usize,
}

impl SimInstance {
    fn new() -> SimInstance {
        SimInstance { power: Power::Absent, resources: Resources::default(), ops: Vec::new(), active: 0 }
    }
}

#[derive(Debug, Default)]
struct Counters {
    received: u64,
    started: u64,
    joined: u64,
    succeeded: u64,
    failed: u64,
    refused: u64,
    callbacks_failed: u64,
}

#[derive(Debug)]
struct HostState {
    behaviour: Behaviour,
    /// The zone's id of this host, once registered.
    host_id: Option<String>,
    instances: BTreeMap<String, SimInstance>,
    in_flight: HashMap<(String, AgentAction), Vec<Callback>>,
    max_concurrent_per_instance: usize,
    counters: Counters,
    /// A fingerprint of the capabilities last accepted by the zone, so unchanged ones are not
    /// sent again (a hash, not a copy: at 100,000 hosts a copy per host is a hundred MB).
    reported: Option<u64>,
    /// The credential the zone gave this host at enrollment; `None` when the simulator acts
    /// with an operator account.
    credential: Option<SecretString>,
}

/// One simulated host and its agent.
#[derive(Debug)]
pub struct SimHost {
    pub name: String,
    pub agent_url: String,
    pub profile: HostProfile,
    /// The bearer token the zone must present; registered with the host, never logged.
    pub agent_token: SecretString,
    state: Mutex<HostState>,
}

impl SimHost {
    pub fn new(
        name: String,
        agent_url: String,
        profile: HostProfile,
        agent_token: SecretString,
        behaviour: Behaviour,
    ) -> Self {
        SimHost {
            name,
            agent_url,
            profile,
            agent_token,
            state: Mutex::new(HostState {
                behaviour,
                host_id: None,
                instances: BTreeMap::new(),
                in_flight: HashMap::new(),
                max_concurrent_per_instance: 0,
                counters: Counters::default(),
                reported: None,
                credential: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HostState> {
        // Every critical section leaves the state consistent, so a panic elsewhere cannot poison
        // its meaning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The zone's id of this host (`None` before registration).
    pub fn host_id(&self) -> Option<String> {
        self.lock().host_id.clone()
    }

    /// Keeps the credential the zone gave this host at enrollment.
    pub fn set_credential(&self, credential: SecretString) {
        self.lock().credential = Some(credential);
    }

    /// `client` acting as this host: with the host's own credential when it was enrolled.
    pub fn authorized(&self, client: api::Client) -> api::Client {
        match &self.lock().credential {
            Some(c) => client.with_token(c.expose_secret()),
            None => client,
        }
    }

    /// Records the zone's id of this host; the next report sends every capability again.
    pub fn set_host_id(&self, id: String) {
        let mut s = self.lock();
        s.host_id = Some(id);
        s.reported = None;
    }

    pub fn behaviour(&self) -> Behaviour {
        self.lock().behaviour
    }

    /// Changes what is given and returns the behaviour now in force.
    pub fn control(&self, fail_rate: Option<f64>, latency: Option<Duration>, reporting: Option<bool>) -> Behaviour {
        let mut s = self.lock();
        if let Some(f) = fail_rate {
            s.behaviour.fail_rate = f;
        }
        if let Some(l) = latency {
            s.behaviour.latency = l;
        }
        if let Some(r) = reporting {
            s.behaviour.reporting = r;
        }
        s.behaviour
    }

    /// Counts a task refused before it started (deadline passed, bad request).
    pub fn refused(&self) {
        self.lock().counters.refused += 1;
    }

    /// Takes a task: starts new work, or joins the same action already in progress.
    pub fn accept(&self, task: &AgentTask, callback: Callback) -> Accepted {
        let mut s = self.lock();
        s.counters.received += 1;
        let key = (task.instance_id.clone(), task.action);
        if let Some(waiting) = s.in_flight.get_mut(&key) {
            waiting.push(callback);
            s.counters.joined += 1;
            return Accepted::Joined;
        }
        s.in_flight.insert(key, vec![callback]);
        s.counters.started += 1;
        let behaviour = s.behaviour;
        let instance = s.instances.entry(task.instance_id.clone()).or_insert_with(SimInstance::new);
        instance.ops.push(task.action);
        instance.active += 1;
        let active = instance.active;
        s.max_concurrent_per_instance = s.max_concurrent_per_instance.max(active);
        let mut rng = rand::thread_rng();
        let latency = jitter(behaviour.latency, &mut rng);
        Accepted::Started(Work {
            instance_id: task.instance_id.clone(),
            action: task.action,
            resources: task.resources,
            target_agent_url: task.target_agent_url.clone(),
            latency,
            // `gen::<f64>()` is in [0, 1): a rate of 0 never fails, a rate of 1 always does.
            fail: rng.gen::<f64>() < behaviour.fail_rate,
        })
    }

    /// Ends `work` (after its latency): applies its effect unless it fails, and hands back every
    /// callback waiting for it.
    pub fn finish(&self, work: &Work) -> Finished {
        let mut s = self.lock();
        let callbacks = s.in_flight.remove(&(work.instance_id.clone(), work.action)).unwrap_or_default();
        let instance = s.instances.entry(work.instance_id.clone()).or_insert_with(SimInstance::new);
        instance.active = instance.active.saturating_sub(1);
        let mut migrated = None;
        let failure = if work.fail {
            Some(format!("simulated failure of {} on host {}", work.action.as_str(), self.name))
        } else {
            // An instance this agent never saw (the simulator restarted) is taken as it comes.
            if instance.power == Power::Absent || work.action == AgentAction::Create {
                instance.resources = work.resources;
            }
            let before = instance.power;
            instance.power = match work.action {
                AgentAction::Create | AgentAction::Start | AgentAction::Reboot => Power::Running,
                AgentAction::Stop => Power::Stopped,
                AgentAction::Delete => Power::Absent,
                AgentAction::Migrate => {
                    let power = if before == Power::Stopped { Power::Stopped } else { Power::Running };
                    migrated = Some((instance.resources, power));
                    Power::Absent
                }
            };
            None
        };
        if failure.is_some() {
            s.counters.failed += 1;
        } else {
            s.counters.succeeded += 1;
        }
        Finished { callbacks, failure, migrated }
    }

    /// The target side of a migration: the instance is now here.
    pub fn adopt(&self, instance_id: &str, resources: Resources, power: Power) {
        let mut s = self.lock();
        let instance = s.instances.entry(instance_id.to_owned()).or_insert_with(SimInstance::new);
        instance.resources = resources;
        instance.power = power;
    }

    pub fn callback_failed(&self) {
        self.lock().counters.callbacks_failed += 1;
    }

    /// Every capability as the host reports it now: the profile's static ones plus
    /// `number-of-instances` and `free-ram` (MB) from what it holds.
    pub fn capabilities(&self) -> BTreeMap<String, Value> {
        let s = self.lock();
        let present = s.instances.values().filter(|i| i.power != Power::Absent);
        let (count, memory) = present.fold((0i64, 0i64), |(n, m), i| (n + 1, m + i.resources.memory_mb));
        let mut caps = self.profile.capabilities.clone();
        caps.insert("number-of-instances".into(), json!(count as f64));
        caps.insert("free-ram".into(), json!((self.profile.resources.memory_mb - memory).max(0) as f64));
        caps
    }

    /// The report to send now: the capabilities when they differ from what the zone last
    /// accepted, else none (presence only). `None` while reporting is switched off.
    pub fn report_due(&self) -> Option<Option<BTreeMap<String, Value>>> {
        if !self.behaviour().reporting {
            return None;
        }
        let caps = self.capabilities();
        let now = fingerprint(&caps);
        let s = self.lock();
        Some((s.reported != Some(now)).then_some(caps))
    }

    /// The zone accepted a report carrying these capabilities.
    pub fn reported(&self, caps: &BTreeMap<String, Value>) {
        let print = fingerprint(caps);
        self.lock().reported = Some(print);
    }

    /// `GET {agent_url}/v1/stats`.
    pub fn stats(&self) -> Value {
        let s = self.lock();
        let c = &s.counters;
        let instances: serde_json::Map<String, Value> = s
            .instances
            .iter()
            .map(|(id, i)| {
                let ops: Vec<&str> = i.ops.iter().map(|a| a.as_str()).collect();
                (
                    id.clone(),
                    json!({"state": i.power.as_str(), "ops": ops, "active": i.active, "resources": i.resources}),
                )
            })
            .collect();
        json!({
            "name": self.name,
            "host_id": s.host_id,
            "agent_url": self.agent_url,
            "behaviour": s.behaviour.to_json(),
            "tasks": {
                "received": c.received,
                "started": c.started,
                "joined": c.joined,
                "succeeded": c.succeeded,
                "failed": c.failed,
                "refused": c.refused,
                "callbacks_failed": c.callbacks_failed,
                "in_progress": s.in_flight.len(),
            },
            "max_concurrent_per_instance": s.max_concurrent_per_instance,
            "instances": instances,
        })
    }
}

/// A hash of a set of capabilities, the same for the same keys and values.
fn fingerprint(caps: &BTreeMap<String, Value>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (key, value) in caps {
        key.hash(&mut h);
        // JSON text: `Value` is not `Hash`, and equal values print alike.
        value.to_string().hash(&mut h);
    }
    h.finish()
}

/// `latency` ± 10 %, so many hosts with the same latency do not call back in lockstep.
fn jitter(latency: Duration, rng: &mut impl Rng) -> Duration {
    if latency.is_zero() {
        return latency;
    }
    latency.mul_f64(rng.gen_range(0.9..=1.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{host_profile, Profile};

    fn host(fail_rate: f64) -> SimHost {
        let behaviour = Behaviour { fail_rate, latency: Duration::ZERO, reporting: true };
        SimHost::new(
            "h".into(),
            "http://a/hosts/h".into(),
            host_profile(Profile::Uniform, 0),
            SecretString::from("t".repeat(32)),
            behaviour,
        )
    }

    fn task(id: &str, instance: &str, action: AgentAction) -> AgentTask {
        AgentTask {
            task_id: id.into(),
            instance_id: instance.into(),
            action,
            resources: Resources { vcpus: 1, memory_mb: 1024, disk_gb: 10 },
            target_agent_url: None,
        }
    }

    fn cb(id: &str) -> Callback {
        Callback { task_id: id.into(), url: format!("http://zone/cb/{id}"), token: SecretString::from("x") }
    }

    fn started(a: Accepted) -> Work {
        match a {
            Accepted::Started(w) => w,
            Accepted::Joined => panic!("joined instead of starting"),
        }
    }

    #[test]
    fn a_repeated_action_in_progress_joins_it_and_runs_once() {
        let h = host(0.0);
        let work = started(h.accept(&task("t1", "i1", AgentAction::Create), cb("t1")));
        assert!(matches!(h.accept(&task("t2", "i1", AgentAction::Create), cb("t2")), Accepted::Joined));
        let done = h.finish(&work);
        assert_eq!(done.failure, None);
        let ids: Vec<&str> = done.callbacks.iter().map(|c| c.task_id.as_str()).collect();
        assert_eq!(ids, ["t1", "t2"], "both tasks get the result");
        let stats = h.stats();
        assert_eq!(stats["instances"]["i1"]["ops"], json!(["create"]));
        assert_eq!(stats["max_concurrent_per_instance"], json!(1));
        assert_eq!(h.capabilities()["number-of-instances"], json!(1.0));
        // After it ended, the same action again is new work, and its effect already holds.
        let again = started(h.accept(&task("t3", "i1", AgentAction::Create), cb("t3")));
        assert_eq!(h.finish(&again).failure, None);
        assert_eq!(h.capabilities()["number-of-instances"], json!(1.0));
    }

    #[test]
    fn overlapping_actions_on_one_instance_are_counted() {
        let h = host(0.0);
        let stop = started(h.accept(&task("t1", "i1", AgentAction::Stop), cb("t1")));
        let start = started(h.accept(&task("t2", "i1", AgentAction::Start), cb("t2")));
        h.finish(&stop);
        h.finish(&start);
        assert_eq!(h.stats()["max_concurrent_per_instance"], json!(2));
    }

    #[test]
    fn failures_change_nothing_and_say_why() {
        let h = host(1.0);
        let work = started(h.accept(&task("t1", "i1", AgentAction::Create), cb("t1")));
        let done = h.finish(&work);
        assert!(done.failure.as_deref().is_some_and(|r| r.contains("simulated failure")), "{done:?}");
        assert_eq!(h.capabilities()["number-of-instances"], json!(0.0));
        assert_eq!(h.stats()["tasks"]["failed"], json!(1));
    }

    #[test]
    fn reports_carry_capabilities_only_when_they_changed() {
        let h = host(0.0);
        let first = h.report_due().expect("reporting").expect("first report has capabilities");
        h.reported(&first);
        assert_eq!(h.report_due(), Some(None), "nothing changed: presence only");
        let work = started(h.accept(&task("t1", "i1", AgentAction::Create), cb("t1")));
        h.finish(&work);
        let changed = h.report_due().unwrap().expect("an instance more");
        assert_eq!(changed["free-ram"], json!((128 * 1024 - 1024) as f64));
        h.control(None, None, Some(false));
        assert_eq!(h.report_due(), None, "silent while reporting is off");
    }
}
