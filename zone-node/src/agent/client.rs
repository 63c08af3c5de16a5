//! The zone's side of the async HTTP protocol: post a task to an agent, wait for its callback.
//!
//! [`Agents::run`] registers a one-time waiter (task id → random callback token), posts the task
//! with the callback URL and token in headers, expects `202` at once, then waits for the agent's
//! callback until the deadline. The callback reaches `POST /v1/agent/callbacks/{task_id}` on
//! THIS node (the URL is built from this node's own `api_url`), which calls [`Agents::complete`].
//! Every call ends in success or an [`AgentFailure`] with a reason an operator can read: agent
//! unreachable, refused, failed, or silent past the deadline. No connection stays open while a
//! host works.
//!
//! Callback tokens are 32 random bytes, compared in constant time, and forgotten when the task
//! ends, so a callback can be neither forged nor replayed. The token is the callback's only
//! credential: the endpoint is outside bearer authentication because agents hold no account.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::agent::{AgentAction, AgentResult, AgentTask, CALLBACK_TOKEN_HEADER, CALLBACK_URL_HEADER, DEADLINE_HEADER};
use api::Resources;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;
use uuid::Uuid;

/// How long posting a task may take (the agent must answer `202` at once).
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an agent task did not succeed; `reason` is shown to operators as the instance's error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct AgentFailure {
    pub reason: String,
}

impl AgentFailure {
    fn new(reason: impl Into<String>) -> AgentFailure {
        AgentFailure { reason: reason.into() }
    }
}

/// Why a callback was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackRefused {
    /// No task with that id is waiting here (finished, timed out, or never sent by this node).
    UnknownTask,
    /// The token does not match the task's.
    BadToken,
}

/// One agent task to run.
#[derive(Debug, Clone)]
pub struct AgentCall<'a> {
    pub agent_url: &'a str,
    pub agent_token: Option<&'a str>,
    pub instance_id: Uuid,
    pub action: AgentAction,
    pub resources: Resources,
    pub target_agent_url: Option<&'a str>,
}

struct Waiter {
    token: String,
    done: oneshot::Sender<AgentResult>,
}

/// The node's agent client and the tasks waiting for their callbacks. Cheap to clone.
#[derive(Clone)]
pub struct Agents {
    http: reqwest::Client,
    callback_base: String,
    waiting: Arc<Mutex<HashMap<String, Waiter>>>,
}

/// Removes a task's waiter however `run` ends (answered, timed out, or its future dropped).
struct WaiterGuard<'a> {
    waiting: &'a Mutex<HashMap<String, Waiter>>,
    task_id: String,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.waiting.lock().expect("waiters lock").remove(&self.task_id);
    }
}

impl Agents {
    /// `api_url` is this node's own API URL: agents post callbacks there.
    pub fn new(api_url: &str) -> Agents {
        let http = api::http::client_builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(32)
            .build()
            .expect("the reqwest client builder only fails on a broken TLS backend");
        Agents {
            http,
            callback_base: format!("{}/v1/agent/callbacks", api_url.trim_end_matches('/')),
            waiting: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// How many tasks are waiting for a callback.
    pub fn in_flight(&self) -> usize {
        self.waiting.lock().expect("waiters lock").len()
    }

    /// Runs one task on an agent and waits for its result, at most `timeout` in all.
    pub async fn run(&self, call: AgentCall<'_>, timeout: Duration) -> Result<(), AgentFailure> {
        let started = tokio::time::Instant::now();
        let task_id = Uuid::new_v4().to_string();
        let token = random_token();
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiters lock").insert(task_id.clone(), Waiter { token: token.clone(), done: tx });
        let _guard = WaiterGuard { waiting: &self.waiting, task_id: task_id.clone() };

        let action = call.action.as_str();
        let task = AgentTask {
            task_id: task_id.clone(),
            instance_id: call.instance_id.to_string(),
            action: call.action,
            resources: call.resources,
            target_agent_url: call.target_agent_url.map(str::to_owned),
        };
        let deadline_ms = crate::time::local_now_ms() + timeout.as_millis() as i64;
        let url = format!("{}/v1/tasks", call.agent_url.trim_end_matches('/'));
        let mut req = self
            .http
            .post(&url)
            .timeout(POST_TIMEOUT.min(timeout))
            .header(CALLBACK_URL_HEADER, format!("{}/{task_id}", self.callback_base))
            .header(CALLBACK_TOKEN_HEADER, &token)
            .header(DEADLINE_HEADER, deadline_ms.to_string())
            .json(&task);
        if let Some(t) = call.agent_token {
            req = req.bearer_auth(t);
        }
        // The reasons are fixed texts: members read them in the instance's `error_reason`, and the
        // agent's URL, the network's error text or an answer body (which a redirect-following or
        // body-copying client would let an agent URL aim at internal pages) are for the log.
        let resp = req.send().await.map_err(|e| {
            tracing::warn!(agent = %call.agent_url, %action, error = %error_chain(&e), "cannot reach the host's agent");
            AgentFailure::new(format!("cannot reach the host's agent for {action}"))
        })?;
        let status = resp.status();
        if !status.is_success() {
            // The body is not read at all: dropping the answer closes it, however large.
            tracing::warn!(agent = %call.agent_url, %action, %status, "the host's agent refused a task");
            return Err(AgentFailure::new(format!(
                "the host's agent refused {action} with status {}",
                status.as_u16()
            )));
        }
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(result)) if result.ok => Ok(()),
            Ok(Ok(result)) => Err(AgentFailure::new(format!(
                "the agent failed {action}: {}",
                result.reason.as_deref().map(agent_reason).unwrap_or_else(|| "no reason given".into())
            ))),
            Ok(Err(_)) => Err(AgentFailure::new(format!("the task for {action} was abandoned"))),
            Err(_) => Err(AgentFailure::new(format!(
                "the agent did not report the result of {action} within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// Delivers an agent's callback to the task waiting for it.
    pub fn complete(&self, task_id: &str, token: &str, result: AgentResult) -> Result<(), CallbackRefused> {
        let mut waiting = self.waiting.lock().expect("waiters lock");
        let Some(waiter) = waiting.get(task_id) else {
            return Err(CallbackRefused::UnknownTask);
        };
        // Constant time, so how long a refusal takes says nothing about where the tokens differ.
        if !bool::from(waiter.token.as_bytes().ct_eq(token.as_bytes())) {
            return Err(CallbackRefused::BadToken);
        }
        let waiter = waiting.remove(task_id).expect("present: checked above under the same lock");
        // The task may have given up a moment ago; the result is then simply dropped.
        let _ = waiter.done.send(result);
        Ok(())
    }
}

/// The most of an agent's own failure reason kept (in characters).
const MAX_REASON_CHARS: usize = 200;

/// An agent's failure reason as stored: at most [`MAX_REASON_CHARS`] characters, control
/// characters (newlines, escapes that would rewrite a terminal) replaced by spaces.
fn agent_reason(reason: &str) -> String {
    reason.chars().take(MAX_REASON_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A reqwest error with its causes, for a readable reason ("connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_need_the_right_token_and_a_waiting_task() {
        let agents = Agents::new("http://127.0.0.1:1");
        let (tx, mut rx) = oneshot::channel();
        agents.waiting.lock().unwrap().insert("t1".into(), Waiter { token: "secret".into(), done: tx });
        let result = AgentResult { task_id: "t1".into(), ok: true, reason: None };
        assert_eq!(agents.complete("t2", "secret", result.clone()), Err(CallbackRefused::UnknownTask));
        assert_eq!(agents.complete("t1", "secreT", result.clone()), Err(CallbackRefused::BadToken));
        assert!(rx.try_recv().is_err(), "a refused callback delivers nothing");
        assert_eq!(agents.complete("t1", "secret", result.clone()), Ok(()));
        assert_eq!(rx.try_recv().unwrap(), result);
        // One-time: the same callback again is refused.
        assert_eq!(agents.complete("t1", "secret", result), Err(CallbackRefused::UnknownTask));
    }

    #[tokio::test]
    async fn an_unreachable_agent_fails_with_a_reason() {
        let agents = Agents::new("http://127.0.0.1:1");
        let call = AgentCall {
            agent_url: "http://127.0.0.1:1",
            agent_token: None,
            instance_id: Uuid::new_v4(),
            action: AgentAction::Start,
            resources: Resources::default(),
            target_agent_url: None,
        };
        let err = agents.run(call, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(err.reason, "cannot reach the host's agent for start", "no URL, no network error text");
        assert_eq!(agents.in_flight(), 0, "the waiter is removed");
    }

    /// An agent URL that redirects to an internal page and answers with a body: the redirect is
    /// not followed (the page hears nothing, the agent token goes nowhere else) and the reason
    /// a member reads names the status only, none of the body.
    #[tokio::test]
    async fn a_refusing_agent_is_not_followed_and_its_body_is_not_shown() {
        let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let internal_url = format!("http://{}/secret", internal.local_addr().unwrap());
        let agent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_url = format!("http://{}", agent.local_addr().unwrap());
        let redirect = axum::Router::new().route(
            "/v1/tasks",
            axum::routing::post(move || {
                let to = internal_url.clone();
                async move {
                    (
                        axum::http::StatusCode::TEMPORARY_REDIRECT,
                        [(axum::http::header::LOCATION, to)],
                        "internal detail: db-admin password is hunter2",
                    )
                }
            }),
        );
        tokio::spawn(async move { axum::serve(agent, redirect).await });

        let agents = Agents::new("http://127.0.0.1:1");
        let call = AgentCall {
            agent_url: &agent_url,
            agent_token: Some("agent-token"),
            instance_id: Uuid::new_v4(),
            action: AgentAction::Start,
            resources: Resources::default(),
            target_agent_url: None,
        };
        let err = agents.run(call, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(err.reason, "the host's agent refused start with status 307");
        let followed = tokio::time::timeout(Duration::from_millis(300), internal.accept()).await;
        assert!(followed.is_err(), "the redirect was followed to the internal URL");
    }

    #[test]
    fn an_agents_own_reason_is_bounded_and_printable() {
        assert_eq!(agent_reason("disk\nfull\u{1b}[2J"), "disk full [2J");
        assert_eq!(agent_reason(&"x".repeat(1000)).chars().count(), MAX_REASON_CHARS);
    }
}
