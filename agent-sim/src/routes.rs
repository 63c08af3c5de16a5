//! The simulated agents' HTTP side: one listener, one path prefix per host.
//!
//! - `POST /hosts/{name}/v1/tasks`: the agent protocol ([`api::agent`]); `202` at once, the
//!   result posted to the callback URL after the host's latency
//! - `POST /hosts/{name}/v1/control`: change the host's behaviour (`fail_rate`, `latency_ms`,
//!   `reporting`)
//! - `GET /hosts/{name}/v1/stats`: what the host's agent saw
//! - `GET /healthz`
//!
//! A host's `agent_url` is `<base>/hosts/<name>`, so the zone's `{agent_url}/v1/tasks` lands here.
//! Task posts need the host's agent token as bearer token; control and stats need the
//! simulator's control token when one is set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio_util::task::TaskTracker;

use api::agent::{AgentAccepted, AgentResult, AgentTask, CALLBACK_TOKEN_HEADER, CALLBACK_URL_HEADER, DEADLINE_HEADER};
use api::ErrorCode;

use crate::clock::now_ms;
use crate::error::{no_such_route, Json, SimError, SimResult};
use crate::host::{Accepted, Callback, SimHost, Work};

/// How often posting a result is tried when the zone cannot be reached (a node restarting).
const CALLBACK_ATTEMPTS: u32 = 3;
/// Wait before the second attempt; doubled for each further one.
const CALLBACK_RETRY_DELAY: Duration = Duration::from_millis(200);
/// One callback post may take this long.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest latency the control API accepts.
const MAX_LATENCY: Duration = Duration::from_secs(3600);

/// Shared by every route.
pub struct SimState {
    pub hosts: HashMap<String, Arc<SimHost>>,
    /// The same hosts by agent URL, to find a migration's target.
    pub by_url: HashMap<String, Arc<SimHost>>,
    pub http: reqwest::Client,
    pub control_token: Option<SecretString>,
    /// Every task's work, so a stop can wait for the callbacks still due.
    pub work: TaskTracker,
}

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/hosts/{name}/v1/tasks", post(task))
        .route("/hosts/{name}/v1/control", post(control))
        .route("/hosts/{name}/v1/stats", get(stats))
        .fallback(no_such_route)
        .with_state(state)
}

async fn health(State(state): State<Arc<SimState>>) -> axum::Json<Value> {
    axum::Json(json!({"status": "ok", "hosts": state.hosts.len()}))
}

fn host(state: &SimState, name: &str) -> SimResult<Arc<SimHost>> {
    state
        .hosts
        .get(name)
        .cloned()
        .ok_or_else(|| SimError::new(ErrorCode::NotFound, format!("no simulated host {name:?} here")))
}

/// Checks `Authorization: Bearer <expected>`; anything goes when nothing is expected.
fn check_bearer(headers: &HeaderMap, expected: Option<&SecretString>) -> SimResult<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| SimError::new(ErrorCode::MissingToken, "send Authorization: Bearer <token>"))?;
    // Constant time, so how long a refusal takes says nothing about where the tokens differ.
    if !bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes())) {
        return Err(SimError::new(ErrorCode::InvalidToken, "wrong bearer token"));
    }
    Ok(())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> SimResult<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| SimError::new(ErrorCode::InvalidField, format!("the {name} header is required")))
}

/// `POST /hosts/{name}/v1/tasks`.
async fn task(
    State(state): State<Arc<SimState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> SimResult<(StatusCode, axum::Json<AgentAccepted>)> {
    let host = host(&state, &name)?;
    // Authenticate before reading anything the caller sent.
    check_bearer(&headers, Some(&host.agent_token))?;
    let refuse = |e: SimError| {
        host.refused();
        e
    };
    let url = header(&headers, CALLBACK_URL_HEADER).map_err(refuse)?.to_owned();
    let token = header(&headers, CALLBACK_TOKEN_HEADER).map_err(refuse)?.to_owned();
    let deadline_ms: i64 = header(&headers, DEADLINE_HEADER)
        .map_err(refuse)?
        .parse()
        .map_err(|_| refuse(SimError::new(ErrorCode::InvalidField, format!("{DEADLINE_HEADER}: not an integer"))))?;
    let task: AgentTask = serde_json::from_slice(&body)
        .map_err(|e| refuse(SimError::new(ErrorCode::InvalidBody, format!("the task does not parse: {e}"))))?;
    let now = now_ms();
    if deadline_ms <= now {
        // Work nobody waits for any more is not started (the zone has given up on it).
        return Err(refuse(SimError::new(
            ErrorCode::Timeout,
            format!("task {}: its deadline passed {} ms ago; not started", task.task_id, now - deadline_ms),
        )));
    }
    let callback = Callback { task_id: task.task_id.clone(), url, token: SecretString::from(token) };
    match host.accept(&task, callback) {
        Accepted::Started(work) => {
            tracing::debug!(host = %host.name, task = %task.task_id, instance = %task.instance_id,
                action = task.action.as_str(), "task started");
            state.work.spawn(run(state.clone(), host.clone(), work));
        }
        Accepted::Joined => {
            tracing::info!(host = %host.name, task = %task.task_id, instance = %task.instance_id,
                action = task.action.as_str(), "task joins the same action in progress");
        }
    }
    Ok((StatusCode::ACCEPTED, axum::Json(AgentAccepted { task_id: task.task_id })))
}

/// Does one task's work: waits its latency, applies it, posts the result to every callback.
async fn run(state: Arc<SimState>, host: Arc<SimHost>, work: Work) {
    tokio::time::sleep(work.latency).await;
    let done = host.finish(&work);
    if let (Some((resources, power)), Some(target)) = (done.migrated, work.target_agent_url.as_deref()) {
        // A target simulated elsewhere learns of the instance from its own zone's tasks, if ever.
        if let Some(target) = state.by_url.get(target.trim_end_matches('/')) {
            target.adopt(&work.instance_id, resources, power);
        }
    }
    for callback in done.callbacks {
        let result =
            AgentResult { task_id: callback.task_id.clone(), ok: done.failure.is_none(), reason: done.failure.clone() };
        if let Err(error) = post_result(&state.http, &callback, &result).await {
            host.callback_failed();
            tracing::warn!(host = %host.name, task = %callback.task_id, %error, "cannot post a task result");
        }
    }
}

/// Posts one result, retrying when the zone cannot be reached. A `404` means the task is no
/// longer waiting there (timed out, or its node died): nothing to retry.
async fn post_result(http: &reqwest::Client, callback: &Callback, result: &AgentResult) -> Result<(), String> {
    let mut delay = CALLBACK_RETRY_DELAY;
    let mut attempt = 1;
    loop {
        let sent = http
            .post(&callback.url)
            .timeout(CALLBACK_TIMEOUT)
            .header(CALLBACK_TOKEN_HEADER, callback.token.expose_secret())
            .json(result)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => return Err(format!("the zone answered {}", resp.status())),
            Err(e) if attempt < CALLBACK_ATTEMPTS => {
                tracing::debug!(task = %callback.task_id, attempt, error = %e, "callback failed; retrying");
            }
            Err(e) => return Err(format!("after {attempt} attempts: {e}")),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    }
}

/// `POST /hosts/{name}/v1/control` body: what to change; absent fields stay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlRequest {
    fail_rate: Option<f64>,
    latency_ms: Option<u64>,
    reporting: Option<bool>,
}

/// `POST /hosts/{name}/v1/control`: answers the behaviour now in force.
async fn control(
    State(state): State<Arc<SimState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(req): Json<ControlRequest>,
) -> SimResult<axum::Json<Value>> {
    check_bearer(&headers, state.control_token.as_ref())?;
    let host = host(&state, &name)?;
    if let Some(f) = req.fail_rate {
        if !(0.0..=1.0).contains(&f) {
            return Err(SimError::new(ErrorCode::InvalidField, "fail_rate: must be between 0 and 1"));
        }
    }
    let latency = req.latency_ms.map(Duration::from_millis);
    if latency.is_some_and(|l| l > MAX_LATENCY) {
        return Err(SimError::new(ErrorCode::InvalidField, "latency_ms: at most one hour"));
    }
    let now = host.control(req.fail_rate, latency, req.reporting);
    tracing::info!(host = %host.name, fail_rate = now.fail_rate, latency_ms = now.latency.as_millis() as u64,
        reporting = now.reporting, "behaviour changed");
    Ok(axum::Json(now.to_json()))
}

/// `GET /hosts/{name}/v1/stats`.
async fn stats(
    State(state): State<Arc<SimState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> SimResult<axum::Json<Value>> {
    check_bearer(&headers, state.control_token.as_ref())?;
    Ok(axum::Json(host(&state, &name)?.stats()))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tokio::sync::mpsc;
    use tower::ServiceExt;

    use super::*;
    use crate::host::Behaviour;
    use crate::profile::{host_profile, Profile};

    const AGENT_TOKEN: &str = "agent-token-0123456789abcdef";
    const CONTROL_TOKEN: &str = "control-token-0123456789abcdef";

    /// A zone's callback endpoint: records (task id in the URL, callback token header, body).
    async fn callback_receiver() -> (String, mpsc::UnboundedReceiver<(String, String, AgentResult)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new().route(
            "/cb/{id}",
            post(move |Path(id): Path<String>, headers: HeaderMap, axum::Json(result): axum::Json<AgentResult>| {
                let tx = tx.clone();
                async move {
                    let token = headers.get(CALLBACK_TOKEN_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                    let _ = tx.send((id, token.to_owned(), result));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, rx)
    }

    fn agents(fail_rate: f64) -> (Router, Arc<SimHost>) {
        let behaviour = Behaviour { fail_rate, latency: Duration::from_millis(10), reporting: true };
        let host = Arc::new(SimHost::new(
            "h-000".into(),
            "http://sim/hosts/h-000".into(),
            host_profile(Profile::Uniform, 0),
            SecretString::from(AGENT_TOKEN),
            behaviour,
        ));
        let state = Arc::new(SimState {
            hosts: [("h-000".to_owned(), host.clone())].into_iter().collect(),
            by_url: HashMap::new(),
            http: api::http::client_builder().build().expect("an HTTP client"),
            control_token: Some(SecretString::from(CONTROL_TOKEN)),
            work: TaskTracker::new(),
        });
        (router(state), host)
    }

    fn task_request(callback_base: &str, task_id: &str, token: Option<&str>, deadline_ms: i64) -> Request<Body> {
        let task = json!({"task_id": task_id, "instance_id": "i-1", "action": "create",
            "resources": {"vcpus": 1, "memory_mb": 512, "disk_gb": 10}});
        let mut req = Request::post("/hosts/h-000/v1/tasks")
            .header("content-type", "application/json")
            .header(CALLBACK_URL_HEADER, format!("{callback_base}/cb/{task_id}"))
            .header(CALLBACK_TOKEN_HEADER, format!("cb-{task_id}"))
            .header(DEADLINE_HEADER, deadline_ms.to_string());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.body(Body::from(task.to_string())).unwrap()
    }

    #[tokio::test]
    async fn a_task_is_accepted_at_once_and_its_result_called_back_with_the_token() {
        let (callbacks, mut results) = callback_receiver().await;
        let (app, host) = agents(0.0);
        let later = now_ms() + 10_000;
        let resp = app.clone().oneshot(task_request(&callbacks, "t1", Some(AGENT_TOKEN), later)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let (id, token, result) = tokio::time::timeout(Duration::from_secs(10), results.recv()).await.unwrap().unwrap();
        assert_eq!((id.as_str(), token.as_str()), ("t1", "cb-t1"));
        assert_eq!(result, AgentResult { task_id: "t1".into(), ok: true, reason: None });
        assert_eq!(host.stats()["instances"]["i-1"]["state"], json!("running"));
    }

    #[tokio::test]
    async fn tasks_need_the_agent_token_and_a_deadline_still_ahead() {
        let (callbacks, _results) = callback_receiver().await;
        let (app, host) = agents(0.0);
        let later = now_ms() + 10_000;
        for (token, status) in
            [(None, StatusCode::UNAUTHORIZED), (Some("wrong-token-0123456789"), StatusCode::UNAUTHORIZED)]
        {
            let resp = app.clone().oneshot(task_request(&callbacks, "t1", token, later)).await.unwrap();
            assert_eq!(resp.status(), status);
        }
        let past = now_ms() - 1;
        let resp = app.clone().oneshot(task_request(&callbacks, "t2", Some(AGENT_TOKEN), past)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT, "work past its deadline is not started");
        let stats = host.stats();
        assert_eq!((stats["tasks"]["started"].clone(), stats["tasks"]["refused"].clone()), (json!(0), json!(1)));
    }

    #[tokio::test]
    async fn control_and_stats_need_the_control_token() {
        let (app, host) = agents(0.0);
        let control = |token: &str| {
            Request::post("/hosts/h-000/v1/control")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(r#"{"fail_rate": 1.0, "reporting": false}"#))
                .unwrap()
        };
        assert_eq!(
            app.clone().oneshot(control("nope-nope-nope-nope")).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        assert!(host.behaviour().reporting, "a refused control changes nothing");
        assert_eq!(app.clone().oneshot(control(CONTROL_TOKEN)).await.unwrap().status(), StatusCode::OK);
        assert_eq!(host.behaviour().fail_rate, 1.0);
        assert!(!host.behaviour().reporting);
        let stats = Request::get("/hosts/h-000/v1/stats").body(Body::empty()).unwrap();
        assert_eq!(app.clone().oneshot(stats).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        let bad = Request::post("/hosts/h-000/v1/control")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {CONTROL_TOKEN}"))
            .body(Body::from(r#"{"fail_rate": 1.5}"#))
            .unwrap();
        assert_eq!(app.clone().oneshot(bad).await.unwrap().status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn errors_answer_the_api_error_body_with_its_status() {
        let (app, _host) = agents(0.0);
        let body = |resp: axum::response::Response| async move {
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
            serde_json::from_slice::<api::ErrorBody>(&bytes).unwrap().error.code
        };
        let unknown = app.clone().oneshot(Request::get("/nowhere").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        assert_eq!(body(unknown).await, ErrorCode::NoSuchRoute);
        let no_host = app.clone().oneshot(Request::get("/hosts/h-999/v1/stats").body(Body::empty()).unwrap());
        let no_host = no_host.await.unwrap();
        // The control token is checked first: an unknown host is not told apart from a known one.
        assert_eq!(no_host.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body(no_host).await, ErrorCode::MissingToken);
        let not_json = Request::post("/hosts/h-000/v1/control")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {CONTROL_TOKEN}"))
            .body(Body::from("{"))
            .unwrap();
        let not_json = app.clone().oneshot(not_json).await.unwrap();
        assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(not_json).await, ErrorCode::InvalidJson);
        let unknown_field = Request::post("/hosts/h-000/v1/control")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {CONTROL_TOKEN}"))
            .body(Body::from(r#"{"speed": 2}"#))
            .unwrap();
        let unknown_field = app.clone().oneshot(unknown_field).await.unwrap();
        assert_eq!(body(unknown_field).await, ErrorCode::InvalidBody);
    }
}
