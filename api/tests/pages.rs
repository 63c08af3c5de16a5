//! `Client::instance_pages` against a zone played by a small HTTP/1.1 server that answers from a
//! table of pages and records what it was asked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use api::{Client, ClientError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One canned answer: status, `x-next-marker` header, body.
#[derive(Clone)]
struct Canned {
    status: u16,
    header: Option<&'static str>,
    body: String,
}

fn page(header: Option<&'static str>, next: Option<&str>) -> Canned {
    let next = next.map(|m| format!(",\"next_marker\":{}", serde_json::json!(m))).unwrap_or_default();
    Canned { status: 200, header, body: format!("{{\"instances\":[],\"unreachable_zones\":[]{next}}}") }
}

/// Serves `answers` by request target (path and query); answers 404 to anything else. Returns
/// the base URL and the targets asked, in order.
async fn zone(answers: HashMap<&'static str, Canned>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port for the zone");
    let base = format!("http://{}", listener.local_addr().expect("the zone's bound address"));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let (answers, log) = (Arc::new(answers), asked.clone());
    tokio::spawn(async move {
        loop {
            // A failed accept ends the zone: the walk then fails with a transport error, naming it.
            let Ok((socket, _)) = listener.accept().await else { return };
            let (answers, log) = (answers.clone(), log.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                // Requests without bodies, one after the other on a kept-alive connection.
                while let Ok(Some(request_line)) = lines.next_line().await {
                    while let Ok(Some(header)) = lines.next_line().await {
                        if header.is_empty() {
                            break;
                        }
                    }
                    let target = request_line.split(' ').nth(1).unwrap_or_default().to_owned();
                    locked(&log).push(target.clone());
                    let canned = answers.get(target.as_str()).cloned().unwrap_or(Canned {
                        status: 404,
                        header: None,
                        body: r#"{"error":{"code":"not_found","message":"no such page"}}"#.into(),
                    });
                    let header = canned.header.map(|m| format!("x-next-marker: {m}\r\n")).unwrap_or_default();
                    let answer = format!(
                        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{header}\r\n{}",
                        canned.status,
                        canned.body.len(),
                        canned.body
                    );
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (base, asked)
}

/// The targets asked so far. A lock poisoned by a panicking connection task still holds every
/// target recorded before it: read it as it is.
fn locked(log: &Mutex<Vec<String>>) -> MutexGuard<'_, Vec<String>> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Walks every page; answers, per page, whether the walk had asked for the next one when it
/// returned the page, and the error that ended the walk, if one did.
async fn walk(base: &str) -> (Vec<bool>, Option<ClientError>) {
    let client = Client::new(base);
    let mut pages = client.instance_pages("limit=2");
    let mut ahead = Vec::new();
    while let Some(page) = pages.next().await {
        match page {
            Ok(_) => ahead.push(pages.asked_ahead()),
            Err(e) => {
                assert!(pages.next().await.is_none(), "a walk ends at its first error");
                return (ahead, Some(e));
            }
        }
    }
    (ahead, None)
}

#[tokio::test]
async fn each_page_is_asked_for_on_the_header_of_the_one_before() {
    let (base, asked) = zone(HashMap::from([
        ("/v1/instances?limit=2", page(Some("m1"), Some("m1"))),
        // A marker that is not a plain word stays one parameter.
        ("/v1/instances?limit=2&marker=m1", page(Some("m&2"), Some("m&2"))),
        ("/v1/instances?limit=2&marker=m%262", page(None, None)),
    ]))
    .await;
    let (ahead, error) = walk(&base).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(ahead, [true, true, false]);
    assert_eq!(
        *locked(&asked),
        ["/v1/instances?limit=2", "/v1/instances?limit=2&marker=m1", "/v1/instances?limit=2&marker=m%262"]
    );
}

#[tokio::test]
async fn host_lists_are_walked_the_same_way() {
    let hosts = |next: Option<&str>| {
        let next = next.map(|m| format!(",\"next_marker\":\"{m}\"")).unwrap_or_default();
        format!("{{\"hosts\":[],\"unreachable_zones\":[\"dc2\"]{next}}}")
    };
    let (base, asked) = zone(HashMap::from([
        ("/v1/hosts?limit=1000", Canned { status: 200, header: Some("h1"), body: hosts(Some("h1")) }),
        ("/v1/hosts?limit=1000&marker=h1", Canned { status: 200, header: None, body: hosts(None) }),
    ]))
    .await;
    let all = Client::new(&base).all_hosts().await.expect("every page");
    assert_eq!(all.unreachable_zones, ["dc2"], "named once for the two pages that missed it");
    assert_eq!(*locked(&asked), ["/v1/hosts?limit=1000", "/v1/hosts?limit=1000&marker=h1"]);
}

#[tokio::test]
async fn a_zone_without_the_header_is_walked_from_the_body() {
    let (base, asked) = zone(HashMap::from([
        ("/v1/instances?limit=2", page(None, Some("m1"))),
        ("/v1/instances?limit=2&marker=m1", page(None, None)),
    ]))
    .await;
    let (ahead, error) = walk(&base).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(ahead, [false, false], "nothing asked before the body named it");
    assert_eq!(locked(&asked).len(), 2);
}

#[tokio::test]
async fn a_header_that_differs_from_the_body_ends_the_walk_with_an_error() {
    let (base, _) = zone(HashMap::from([
        ("/v1/instances?limit=2", page(Some("m1"), Some("m9"))),
        ("/v1/instances?limit=2&marker=m1", page(None, None)),
        ("/v1/instances?limit=2&marker=m9", page(None, None)),
    ]))
    .await;
    let (ahead, error) = walk(&base).await;
    assert!(ahead.is_empty());
    let e = error.expect("an error");
    assert!(matches!(e, ClientError::Decode { status: 200, .. }), "{e:?}");
    assert!(e.to_string().contains("differ"), "{e}");
}

#[tokio::test]
async fn an_error_on_a_later_page_ends_the_walk_with_the_zones_error() {
    // The second page's target is not served: 404 with the zone's error body.
    let (base, _) = zone(HashMap::from([("/v1/instances?limit=2", page(Some("m1"), Some("m1")))])).await;
    let (ahead, error) = walk(&base).await;
    assert_eq!(ahead, [true]);
    let e = error.expect("an error");
    assert_eq!(e.status(), Some(404), "{e:?}");
    assert_eq!(e.code(), Some(api::ErrorCode::NotFound));
}
