//! The server's own limits (`http::server`): a half-sent request does not hold a connection, the
//! number of open connections is capped, and a request not answered in time gets 504.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::app::spawn_app_with;

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes the connection or `limit` passes; true when it closed.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_head_is_cut_off_at_the_header_read_timeout() {
    let app = spawn_app_with(&[("ZONE_HEADER_READ_TIMEOUT_MS", "300")]).await;
    // Timed from before the connection exists: the server's clock starts no earlier.
    let started = Instant::now();
    let mut conn = TcpStream::connect(addr(&app.url)).await.expect("connect");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("half a head");
    assert!(
        closed_within(&mut conn, Duration::from_secs(10)).await,
        "the half-sent request still holds its connection"
    );
    assert!(started.elapsed() >= Duration::from_millis(300), "closed before the timeout: {:?}", started.elapsed());
    // A whole request on another connection is served as usual.
    let http = api::http::client_builder().build().expect("an HTTP client");
    let health = http.get(format!("{}/healthz", app.url)).send().await.expect("GET /healthz");
    assert!(health.status().is_success());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_one_closes() {
    let app = spawn_app_with(&[("ZONE_MAX_CONNECTIONS", "16"), ("ZONE_HEADER_READ_TIMEOUT_MS", "60000")]).await;
    let target = addr(&app.url);
    // The readiness probe's pooled connection may still be open: fill the cap with our own.
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut conn = TcpStream::connect(&target).await.expect("connect");
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        held.push(conn);
    }
    // One more: the kernel completes its handshake, the node does not take it.
    let mut extra = TcpStream::connect(&target).await.expect("connect past the cap");
    extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(500), extra.read_to_end(&mut answer)).await;
    assert!(early.is_err(), "a connection past the cap was served: {:?}", String::from_utf8_lossy(&answer));
    // Closing the held connections makes room; the waiting one is then served.
    held.clear();
    let served = tokio::time::timeout(Duration::from_secs(10), extra.read_to_end(&mut answer)).await;
    assert!(served.is_ok(), "the waiting connection was not served after others closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_answered_in_time_gets_504_timeout() {
    let app = spawn_app_with(&[("ZONE_REQUEST_TIMEOUT_MS", "2000"), ("ZONE_FORWARD_TIMEOUT_MS", "500")]).await;
    let client = app.client().await;
    let started = Instant::now();
    // The probe holds its resource for 5 s before it answers: past the 2 s request timeout.
    let err = client.probe("r-slow", 5000).await.expect_err("a 5 s probe within a 2 s request timeout");
    assert_eq!(err.status(), Some(504), "{err}");
    assert_eq!(err.code(), Some(api::ErrorCode::Timeout), "{err}");
    assert!(started.elapsed() < Duration::from_millis(4500), "cut off late: {:?}", started.elapsed());
    app.stop().await;
}
