//! `/healthz` (the process is up), `/readyz` (it can serve), `/metrics` (Prometheus) and
//! `/openapi.json`; none needs a token.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
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
fn method_label(method: &axum::http::Method) -> &'static str {
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

/// Counts requests and their latency per route and status.
pub async fn track_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}
