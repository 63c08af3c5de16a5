//! `/healthz` (the process is up), `/readyz` (it can serve), `/metrics` (Prometheus) and
//! `/openapi.json`; none needs a token.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use api::{CheckResult, Health, Readiness};

use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok".into() })
}

fn check(result: Result<(), String>) -> CheckResult {
    match result {
        Ok(()) => CheckResult { ok: true, error: None },
        Err(error) => CheckResult { ok: false, error: Some(error) },
    }
}

/// The node can serve: database and bus reachable, and the node is an alive member of its zone.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = check(state.store.ping().await.map_err(|e| e.to_string()));
    let bus = check(if state.bus.is_connected() { Ok(()) } else { Err("not connected to the message bus".into()) });
    let membership = check(if state.cluster.is_serving() {
        Ok(())
    } else {
        Err(format!("node is {} and not serving", state.cluster.my_state().as_str()))
    });
    let ready = database.ok && bus.ok && membership.ok;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Readiness { status: if ready { "ready" } else { "not_ready" }.into(), database, bus, membership };
    (status, axum::Json(body)).into_response()
}

/// The process-wide Prometheus recorder (a recorder can be installed once per process). Installed
/// by `Application::build`, before the first counter is touched.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed already; then we render an empty page.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub async fn metrics() -> String {
    prometheus().render()
}

pub async fn openapi() -> Response {
    // Built and serialized once per process: building it walks every route's schema (about 1.5 ms
    // of CPU), and the path needs no token, so building it per request let anyone keep a worker
    // busy with 650 requests a second.
    static DOCUMENT: OnceLock<axum::body::Bytes> = OnceLock::new();
    let body = match DOCUMENT.get() {
        Some(body) => body.clone(),
        None => match serde_json::to_vec(&crate::http::openapi::document()) {
            Ok(json) => DOCUMENT.get_or_init(|| json.into()).clone(),
            Err(e) => {
                return crate::Error::internal(format!("the OpenAPI document does not serialize: {e}")).into_response()
            }
        },
    };
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The `method` label of a request: the standard methods by name, anything else as `other`, so a
/// caller cannot create a new series per method string it invents (`/metrics` needs no token).
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts a request and its latency per method, route (the matched path, or `unmatched`) and
/// status. The handles of each combination are registered once: registering builds and hashes a
/// label set per call, which cost about a microsecond a request (docs/benchmarks.md, "One worker
/// per zone"). Methods, routes and statuses are bounded sets, so the map is too.
pub fn record_request(method: &'static str, route: Option<&str>, status: StatusCode, started: Instant) {
    let route = route.unwrap_or("unmatched");
    let status = status.as_u16();
    let seconds = started.elapsed().as_secs_f64();
    let handles = REQUEST_METRICS.get_or_init(Default::default);
    {
        let known = handles.read().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = known.get(&(method, status)).and_then(|routes| routes.get(route)) {
            m.requests.increment(1);
            m.duration.record(seconds);
            return;
        }
    }
    let mut known = handles.write().unwrap_or_else(|e| e.into_inner());
    let m = known.entry((method, status)).or_default().entry(route.to_owned()).or_insert_with(|| RequestMetrics {
        requests: metrics::counter!("http_requests_total", "method" => method, "route" => route.to_owned(), "status" => status.to_string()),
        duration: metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route.to_owned()),
    });
    m.requests.increment(1);
    m.duration.record(seconds);
}

/// The registered handles of one (method, route, status).
struct RequestMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// (method, status) → route → handles. A std lock: held for a map lookup, never across `.await`.
type RequestMetricsMap = HashMap<(&'static str, u16), HashMap<String, RequestMetrics>>;
static REQUEST_METRICS: OnceLock<RwLock<RequestMetricsMap>> = OnceLock::new();
