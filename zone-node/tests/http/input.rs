//! Bad input at the HTTP edge: every case gets a 4xx with an error code, and nothing is written.

use api::ErrorBody;
use reqwest::StatusCode;
use serde_json::json;

use crate::app::spawn_app;

struct Case {
    name: &'static str,
    method: reqwest::Method,
    path: &'static str,
    token: TokenKind,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
}

#[derive(Clone, Copy)]
enum TokenKind {
    None,
    Admin,
    Forged,
    Expired,
    Member,
    Malformed,
}

fn case(
    name: &'static str,
    method: reqwest::Method,
    path: &'static str,
    token: TokenKind,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path,
        token,
        content_type: Some("application/json"),
        body,
        status: StatusCode::from_u16(status).unwrap(),
        code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_coded_4xx_and_writes_nothing() {
    // A single embedded node is enough here: the edge is the same whatever the backends.
    let node = spawn_app().await;
    let admin = node.client().await;
    // A fresh connection per case: after refusing the over-limit body (413) without reading it the
    // server closes that connection, and a pooled client could send the next case on it just as it
    // closes ("error sending request"), failing the case for a reason that is not its own.
    let http = api::http::client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("the reqwest client builder only fails on a broken TLS backend");
    let admin_token = node.admin_token().await;

    // A member, and an expired token made by ageing a real one in the database.
    admin
        .account_create(&api::AccountCreate {
            username: "m1".into(),
            password: "member-password".into(),
            role: api::Role::Member,
            client_id: Some("acme".into()),
            client_ids: None,
        })
        .await
        .expect("member");
    let (_, member) = api::Client::new(&node.url).login("m1", "member-password").await.expect("member login");
    let (_, expiring) = api::Client::new(&node.url).login("m1", "member-password").await.expect("member login");
    node.expire_token(&expiring.token).await;

    let accounts_before = admin.accounts().await.expect("accounts").accounts;
    let big = vec![b' '; 2 * 1024 * 1024];
    let valid =
        serde_json::to_vec(&json!({"username":"new1","password":"password-1","role":"member","client_id":"acme"}))
            .unwrap();
    use reqwest::Method as M;
    let cases = vec![
        case(
            "malformed json",
            M::POST,
            "/v1/accounts",
            TokenKind::Admin,
            b"{\"username\": \"x\",".to_vec(),
            400,
            "invalid_json",
        ),
        case(
            "unknown field",
            M::POST,
            "/v1/accounts",
            TokenKind::Admin,
            serde_json::to_vec(
                &json!({"username":"new2","password":"password-1","role":"member","client_id":"acme","is_root":true}),
            )
            .unwrap(),
            400,
            "invalid_body",
        ),
        case(
            "wrong type",
            M::POST,
            "/v1/accounts",
            TokenKind::Admin,
            serde_json::to_vec(&json!({"username":42,"password":"password-1","role":"member","client_id":"acme"}))
                .unwrap(),
            400,
            "invalid_body",
        ),
        case(
            "missing field",
            M::POST,
            "/v1/accounts",
            TokenKind::Admin,
            serde_json::to_vec(&json!({"username":"new3"})).unwrap(),
            400,
            "invalid_body",
        ),
        case(
            "bad role",
            M::POST,
            "/v1/accounts",
            TokenKind::Admin,
            serde_json::to_vec(&json!({"username":"new4","password":"password-1","role":"root"})).unwrap(),
            400,
            "invalid_body",
        ),
        case(
            "short password",
            M::POST,
            "/v1/accounts",
            TokenKind::Admin,
            serde_json::to_vec(&json!({"username":"new5","password":"short","role":"admin"})).unwrap(),
            400,
            "invalid_field",
        ),
        case(
            "member without client",
            M::POST,
            "/v1/accounts",
            TokenKind::Admin,
            serde_json::to_vec(&json!({"username":"new6","password":"password-1","role":"member"})).unwrap(),
            400,
            "invalid_field",
        ),
        case(
            "bad username",
            M::POST,
            "/v1/accounts",
            TokenKind::Admin,
            serde_json::to_vec(&json!({"username":"a b","password":"password-1","role":"admin"})).unwrap(),
            400,
            "invalid_field",
        ),
        case("body over the limit", M::POST, "/v1/accounts", TokenKind::Admin, big.clone(), 413, "body_too_large"),
        Case {
            content_type: Some("text/plain"),
            ..case("not json", M::POST, "/v1/accounts", TokenKind::Admin, valid.clone(), 415, "unsupported_media_type")
        },
        case("missing token", M::POST, "/v1/accounts", TokenKind::None, valid.clone(), 401, "missing_token"),
        case("forged token", M::POST, "/v1/accounts", TokenKind::Forged, valid.clone(), 401, "invalid_token"),
        case(
            "malformed authorization",
            M::POST,
            "/v1/accounts",
            TokenKind::Malformed,
            valid.clone(),
            401,
            "invalid_token",
        ),
        case("expired token", M::POST, "/v1/accounts", TokenKind::Expired, valid.clone(), 401, "token_expired"),
        case("member is not admin", M::POST, "/v1/accounts", TokenKind::Member, valid.clone(), 403, "forbidden"),
        case("missing token on read", M::GET, "/v1/zone", TokenKind::None, Vec::new(), 401, "missing_token"),
        case(
            "wrong password",
            M::POST,
            "/v1/auth/tokens",
            TokenKind::None,
            serde_json::to_vec(&json!({"username":"admin","password":"not-the-password"})).unwrap(),
            401,
            "invalid_credentials",
        ),
        case(
            "unknown user",
            M::POST,
            "/v1/auth/tokens",
            TokenKind::None,
            serde_json::to_vec(&json!({"username":"ghost","password":"whatever-123"})).unwrap(),
            401,
            "invalid_credentials",
        ),
        case(
            "token body unknown field",
            M::POST,
            "/v1/auth/tokens",
            TokenKind::None,
            serde_json::to_vec(&json!({"username":"admin","password":"x","otp":1})).unwrap(),
            400,
            "invalid_body",
        ),
        case("no such route", M::GET, "/v1/nothing-here", TokenKind::Admin, Vec::new(), 404, "no_such_route"),
        case("delete unknown account", M::DELETE, "/v1/accounts/ghost", TokenKind::Admin, Vec::new(), 404, "not_found"),
        case(
            "probe hold too long",
            M::POST,
            "/v1/zone/probe/r1",
            TokenKind::Admin,
            serde_json::to_vec(&json!({"hold_ms": 999999})).unwrap(),
            400,
            "invalid_field",
        ),
    ];
    for c in &cases {
        let mut req = http.request(c.method.clone(), format!("{}{}", node.url, c.path));
        if let Some(ct) = c.content_type {
            if !c.body.is_empty() {
                req = req.header("content-type", ct);
            }
        }
        req = match c.token {
            TokenKind::None => req,
            TokenKind::Admin => req.bearer_auth(&admin_token),
            TokenKind::Member => req.bearer_auth(&member.token),
            TokenKind::Expired => req.bearer_auth(&expiring.token),
            TokenKind::Forged => req.bearer_auth("Zm9yZ2VkLXRva2VuLXRoYXQtbG9va3MtcmVhbA"),
            TokenKind::Malformed => req.header("authorization", "Basic YWRtaW46YWRtaW4="),
        };
        let resp = req.body(c.body.clone()).send().await.unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, c.status, "{}: {text}", c.name);
        let body: ErrorBody =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not an error body ({e}): {text}", c.name));
        assert_eq!(body.error.code.as_str(), c.code, "{}: {text}", c.name);
        assert!(!body.error.message.is_empty(), "{}: empty message", c.name);
    }
    // Nothing was written by any of them.
    let accounts_after = admin.accounts().await.expect("accounts").accounts;
    assert_eq!(accounts_before, accounts_after, "a rejected request wrote an account");
    // And the valid request goes through, so the cases above failed for their own reasons.
    let resp = http
        .post(format!("{}/v1/accounts", node.url))
        .bearer_auth(&admin_token)
        .header("content-type", "application/json")
        .body(valid)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    node.stop().await;
}
