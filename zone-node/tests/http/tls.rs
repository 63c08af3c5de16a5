//! TLS: a node serves HTTPS with `ZONE_TLS_CERT_FILE` + `ZONE_TLS_KEY_FILE`, a parent trusts a
//! private CA with `ZONE_TLS_CA_FILE` and links the child over HTTPS, and plain `http://` to a
//! child off loopback is refused unless the operator says `insecure_http`.

use std::path::Path;

use api::ErrorCode;

use crate::app::{spawn_app, spawn_app_with};

/// Runs `openssl` with `args` in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA (`ca.pem`) and a server certificate it signed for 127.0.0.1 (`node.pem`,
/// `node.key`), in `dir`.
fn private_ca(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=zone test CA"]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend(["-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1"]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("node.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write the extensions file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "node.pem",
            "-days",
            "2",
            "-extfile",
            "node.ext",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_links_an_https_child_signed_by_a_private_ca() {
    let certs = tempfile::tempdir().expect("a temporary directory");
    private_ca(certs.path());
    let file = |name: &str| certs.path().join(name).display().to_string();
    // Built before any node trusts the CA: what a client without ZONE_TLS_CA_FILE sees.
    let untrusting = api::http::client_builder().build().expect("an HTTP client");

    let (cert, key, ca) = (file("node.pem"), file("node.key"), file("ca.pem"));
    let child =
        spawn_app_with(&[("ZONE_TLS_CERT_FILE", &cert), ("ZONE_TLS_KEY_FILE", &key), ("ZONE_TLS_CA_FILE", &ca)]).await;
    assert!(child.url.starts_with("https://127.0.0.1:"), "the API URL defaults to https://: {}", child.url);
    let refused = untrusting.get(format!("{}/healthz", child.url)).send().await;
    // Refused for the certificate (reqwest's message chain names its issuer), not for anything else.
    let refused = refused.expect_err("a client without the private CA accepted the child's certificate");
    let chain = std::iter::successors(Some(&refused as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");
    let plain = untrusting.get(format!("{}/healthz", child.url.replacen("https://", "http://", 1))).send().await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true), "the TLS port answered plain HTTP");

    let parent = spawn_app_with(&[("ZONE_TLS_CA_FILE", &ca)]).await;
    let admin = parent.client().await;
    let linked = admin.zone_create(&child.as_child()).await.expect("zone-add over HTTPS with the private CA");
    assert_eq!(linked.status, api::ZoneStatus::Online);
    assert!(!linked.insecure_http);
    let seen = admin.zone().await.expect("the parent's zone");
    assert!(seen.children.iter().any(|c| c.id == linked.id), "the child is among the parent's children");
    parent.stop().await;
    child.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_child_off_loopback_needs_insecure_http() {
    let parent = spawn_app().await;
    let admin = parent.client().await;
    // `.invalid` never resolves (RFC 6761): nothing is sent anywhere.
    let far = api::ZoneCreate { api_url: "http://child.invalid:8080".into(), ..parent.as_child() };
    let err = admin.zone_create(&far).await.expect_err("plain HTTP off loopback");
    assert_eq!(err.code(), Some(ErrorCode::InvalidField), "{err}");
    assert!(err.to_string().contains("insecure_http"), "the message says how to allow it: {err}");
    // Allowed, it is tried (and cannot be reached).
    let allowed = api::ZoneCreate { insecure_http: true, ..far };
    let err = admin.zone_create(&allowed).await.expect_err("nothing answers there");
    assert_eq!(err.code(), Some(ErrorCode::ZoneUnreachable), "{err}");
    // Loopback over plain HTTP needs no flag (how every test and the demo link zones).
    let child = spawn_app().await;
    let linked = admin.zone_create(&child.as_child()).await.expect("loopback http://");
    assert!(!linked.insecure_http);
    assert!(admin.zones(false).await.expect("zone-list").zones.iter().all(|z| !z.insecure_http));
    child.stop().await;
    parent.stop().await;
}
