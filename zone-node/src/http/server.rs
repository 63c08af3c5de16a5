//! The listening loop: the router on hyper's HTTP/1 server, with the limits `axum::serve` does not
//! offer.
//!
//! - **Header-read timeout** (`http.header_read_timeout_ms`, 10 s): a connection must send a whole
//!   request head within it, else hyper closes it. Without it, a client that sends half a request
//!   line holds a connection (and a task) for as long as it likes.
//! - **Connection cap** (`http.max_connections`, 4,096): at most that many connections are open;
//!   the loop stops accepting while at the cap, so further clients wait in the kernel's listen
//!   backlog instead of costing the node memory and file descriptors.
//! - **Request timeout** (`http.request_timeout_ms`, 120 s): [`within_timeout`], in the [`edge`]
//!   middleware, answers 504 `timeout` for a request still unanswered then. It is longer than the
//!   forward timeout and the longest watch (the configuration checks), which end by their own
//!   deadlines.
//!
//! - **TLS** (`http.tls_cert_file` + `http.tls_key_file`): rustls with the process's ring
//!   provider; the handshake must finish within the header-read timeout too.
//!
//! - **Before the router**: a request [`crate::http::before_router`] can answer from memory (a
//!   cached lowest-zone lookup) is answered on the spot, without the router's layers, boxed
//!   futures and extractors; everything else, that request's errors included, goes through them.
//!
//! What `axum::serve` did is kept: the client's address for the login limits, `TCP_NODELAY`,
//! accept errors survived, and a graceful stop that lets requests in flight finish.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::future::Either;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::HttpConfig;
use crate::error::Error;
use crate::http::{health, AppState};

/// The TLS side of the server, from `http.tls_cert_file` and `http.tls_key_file`: `None` when
/// they are not set (plain HTTP). An error names the file and what is wrong with it.
pub fn tls_acceptor(limits: &HttpConfig) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    use anyhow::Context;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert_file), Some(key_file)) = (&limits.tls_cert_file, &limits.tls_key_file) else {
        return Ok(None);
    };
    let pem = std::fs::read(cert_file).with_context(|| format!("cannot read {}", cert_file.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert_file.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert_file.display());
    let pem = std::fs::read(key_file).with_context(|| format!("cannot read {}", key_file.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .with_context(|| format!("{} is not a PEM private key", key_file.display()))?;
    api::http::install_tls_provider();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("{} does not fit {}", key_file.display(), cert_file.display()))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop` is cancelled, then waits for
/// the requests in flight. A request [`crate::http::before_router`] answers from `state` alone
/// never reaches the router.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    limits: &HttpConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let header_read_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    let graceful = GracefulShutdown::new();
    loop {
        // A permit first: at the cap, stop accepting rather than accept and refuse.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
        };
        // Answers are small and written in pieces (head, body): without TCP_NODELAY, Nagle's
        // algorithm meeting the peer's delayed ACK holds the last piece for up to 40 ms.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
        }
        let (router, state) = (router.clone(), state.clone());
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            if let Some(answer) = crate::http::before_router(&state, &req) {
                return Either::Left(std::future::ready(Ok::<_, Infallible>(answer)));
            }
            // The client's address, for the per-address login failure limit.
            req.extensions_mut().insert(ConnectInfo(peer));
            Either::Right(router.clone().oneshot(req))
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => watcher.watch(http.serve_connection(TokioIo::new(tcp), service)).await,
                Some(tls) => match tokio::time::timeout(header_read_timeout, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake not done within the header-read timeout");
                        Ok(())
                    }
                },
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// After a failed accept: a connection that failed before it was accepted costs nothing; anything
/// else (out of file descriptors, mostly) is logged and the loop pauses instead of spinning.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// What every request passes through, in one layer (each layer costs a boxed service clone and a
/// boxed future per request): outermost its metrics ([`health::record_request`]), then the
/// database [`fence`], then the request timeout ([`within_timeout`]).
pub async fn edge(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = health::method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = match fence(&state, req.uri().path()) {
        Some(refused) => refused,
        None => within_timeout(&state, next.run(req)).await,
    };
    health::record_request(method, route.as_ref().map(MatchedPath::as_str), response.status(), started);
    response
}

/// Answers 503 `store_unavailable` at once while this node cannot reach the zone's database (its
/// last heartbeat failed), instead of letting each request wait out the connection pool; the
/// node serves again by itself at its next good heartbeat. Health, metrics and the OpenAPI
/// document still answer (`/readyz` says what is wrong).
fn fence(state: &AppState, path: &str) -> Option<Response> {
    let exempt = matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json");
    if !exempt && state.cluster.database_lost() {
        return Some(
            Error::api(
                api::ErrorCode::StoreUnavailable,
                "this node cannot reach the zone's database; it serves again by itself when the database is back",
            )
            .into_response(),
        );
    }
    None
}

/// Answers 504 `timeout` for a request not answered within `http.request_timeout_ms`.
async fn within_timeout(state: &AppState, answer: impl std::future::Future<Output = Response>) -> Response {
    let limit = Duration::from_millis(state.config.http.request_timeout_ms);
    match tokio::time::timeout(limit, answer).await {
        Ok(response) => response,
        Err(_) => {
            Error::api(api::ErrorCode::Timeout, format!("the request was not answered within {} ms", limit.as_millis()))
                .into_response()
        }
    }
}
