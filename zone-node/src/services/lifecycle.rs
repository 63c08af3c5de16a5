//! The instance state machine: which action may start from which state, what state it passes
//! through, and where it ends.
//!
//! ```text
//!             create                stop                 start
//!   (none) ──────────▶ building ──▶ running ──▶ stopping ──▶ stopped ──▶ starting ──▶ running
//!                                    │  ▲                     │
//!                            reboot  ▼  │                     │ migrate (either state, back to it)
//!                                 rebooting        migrating ◀┘
//!   any stable state ── delete ──▶ deleting ──▶ (gone)
//!   a failed agent task ──▶ error (with the reason); from error: start, stop, delete
//! ```
//!
//! Stable states are `running`, `stopped` and `error`; the others mean a task is in progress, and
//! every action is refused (409, naming the current state) until it ends. A task's name is stored
//! with the instance (`task` column) so a node that takes over an orphaned task knows what to
//! finish: the action's name, and for a migration also the state to return to
//! (`migrate:running`).

use api::InstanceActionKind;

/// What an instance does, including the actions that are not `POST …/action` kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Create,
    Start,
    Stop,
    Reboot,
    /// Back to this stable state when the migration is done.
    Migrate(Stable),
    Delete,
}

/// The stable states an instance can rest in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::IntoStaticStr, strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum Stable {
    Running,
    Stopped,
    Error,
}

impl Stable {
    /// The state's name as the database and the API store it (derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(state: &str) -> Option<Stable> {
        state.parse().ok()
    }
}

impl Task {
    /// The state shown while the task runs.
    pub fn transitional_state(self) -> &'static str {
        match self {
            Task::Create => "building",
            Task::Start => "starting",
            Task::Stop => "stopping",
            Task::Reboot => "rebooting",
            Task::Migrate(_) => "migrating",
            Task::Delete => "deleting",
        }
    }

    /// The state after success (`None` for delete: the instance is gone).
    pub fn final_state(self) -> Option<Stable> {
        match self {
            Task::Create | Task::Start | Task::Reboot => Some(Stable::Running),
            Task::Stop => Some(Stable::Stopped),
            Task::Migrate(back) => Some(back),
            Task::Delete => None,
        }
    }

    /// The stored form (`task` column).
    pub fn encode(self) -> String {
        match self {
            Task::Create => "create".into(),
            Task::Start => "start".into(),
            Task::Stop => "stop".into(),
            Task::Reboot => "reboot".into(),
            Task::Migrate(back) => format!("migrate:{}", back.as_str()),
            Task::Delete => "delete".into(),
        }
    }

    pub fn decode(text: &str) -> Option<Task> {
        Some(match text {
            "create" => Task::Create,
            "start" => Task::Start,
            "stop" => Task::Stop,
            "reboot" => Task::Reboot,
            "delete" => Task::Delete,
            _ => Task::Migrate(Stable::parse(text.strip_prefix("migrate:")?)?),
        })
    }

    /// The agent action this task asks for.
    pub fn agent_action(self) -> api::agent::AgentAction {
        use api::agent::AgentAction as A;
        match self {
            Task::Create => A::Create,
            Task::Start => A::Start,
            Task::Stop => A::Stop,
            Task::Reboot => A::Reboot,
            Task::Migrate(_) => A::Migrate,
            Task::Delete => A::Delete,
        }
    }

    /// The name used in messages ("cannot stop…").
    pub fn verb(self) -> &'static str {
        match self {
            Task::Create => "create",
            Task::Start => "start",
            Task::Stop => "stop",
            Task::Reboot => "reboot",
            Task::Migrate(_) => "migrate",
            Task::Delete => "delete",
        }
    }
}

/// Why an action cannot start: the message for a 409.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// The task an action starts from `state`, or why it cannot.
pub fn begin(action: Option<InstanceActionKind>, state: &str) -> Result<Task, Refused> {
    let stable = Stable::parse(state);
    let (task, allowed): (Task, &[Stable]) = match action {
        Some(InstanceActionKind::Start) => (Task::Start, &[Stable::Stopped, Stable::Error]),
        Some(InstanceActionKind::Stop) => (Task::Stop, &[Stable::Running, Stable::Error]),
        Some(InstanceActionKind::Reboot) => (Task::Reboot, &[Stable::Running]),
        Some(InstanceActionKind::Migrate) => match stable {
            Some(s @ (Stable::Running | Stable::Stopped)) => return Ok(Task::Migrate(s)),
            _ => (Task::Migrate(Stable::Running), &[Stable::Running, Stable::Stopped]),
        },
        None => (Task::Delete, &[Stable::Running, Stable::Stopped, Stable::Error]),
    };
    match stable {
        Some(s) if allowed.contains(&s) => Ok(task),
        _ => {
            let needs: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            let busy = if stable.is_none() { " (a task is in progress; wait for it to end)" } else { "" };
            Err(Refused(format!(
                "cannot {} an instance in state {state}{busy}; {} needs state {}",
                task.verb(),
                task.verb(),
                needs.join(" or ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_state_names_are_the_stored_ones() {
        use strum::IntoEnumIterator as _;
        let names: Vec<&str> = Stable::iter().map(Stable::as_str).collect();
        assert_eq!(names, ["running", "stopped", "error"]);
        for state in Stable::iter() {
            assert_eq!((Stable::parse(state.as_str()), state.to_string()), (Some(state), state.as_str().into()));
        }
        assert_eq!(Stable::parse("building"), None);
    }

    #[test]
    fn transitions() {
        use InstanceActionKind as A;
        assert_eq!(begin(Some(A::Stop), "running"), Ok(Task::Stop));
        assert_eq!(begin(Some(A::Start), "stopped"), Ok(Task::Start));
        assert_eq!(begin(Some(A::Start), "error"), Ok(Task::Start));
        assert_eq!(begin(Some(A::Migrate), "stopped"), Ok(Task::Migrate(Stable::Stopped)));
        assert_eq!(begin(None, "error"), Ok(Task::Delete));
        let e = begin(Some(A::Start), "running").unwrap_err();
        assert!(e.0.contains("state running") && e.0.contains("stopped or error"), "{}", e.0);
        let e = begin(Some(A::Reboot), "stopping").unwrap_err();
        assert!(e.0.contains("in progress"), "{}", e.0);
        assert!(begin(None, "building").is_err());
        assert!(begin(Some(A::Migrate), "error").is_err());
    }

    #[test]
    fn tasks_round_trip_through_their_stored_form() {
        for t in [
            Task::Create,
            Task::Start,
            Task::Stop,
            Task::Reboot,
            Task::Migrate(Stable::Running),
            Task::Migrate(Stable::Stopped),
            Task::Delete,
        ] {
            assert_eq!(Task::decode(&t.encode()), Some(t));
        }
        assert_eq!(Task::decode("migrate:building"), None);
        assert_eq!(Task::decode("dance"), None);
    }
}
