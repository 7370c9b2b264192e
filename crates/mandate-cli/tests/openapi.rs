//! The OpenAPI document, as a client author meets it: served by the real
//! binary at `/openapi.json` without credentials, it lists the very
//! endpoints the API reference (`docs/api.md`) lists, and the server routes
//! every operation it names.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeSet;
use std::path::Path;

use mandate_testkit::TestServer;
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

async fn document(server: &TestServer) -> Value {
    let resp = reqwest::get(format!("{}/openapi.json", server.url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "served without credentials");
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    resp.json().await.unwrap()
}

/// `(METHOD, /path)` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// `(METHOD, /path)` of every endpoint in the API reference's table, but
/// the two proxies (`/gw/…`, `/mcp/…`), which the document leaves out.
fn reference() -> BTreeSet<(String, String)> {
    let text = include_str!("../../../docs/api.md");
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = line.split(" | ").next().unwrap_or_default();
        for code in first_cell.split('`').skip(1).step_by(2) {
            let Some((methods, path)) = code.split_once(' ') else {
                continue;
            };
            if !path.starts_with('/') || path.starts_with("/gw/") || path.starts_with("/mcp/") {
                continue;
            }
            let path = path.split('?').next().unwrap_or_default();
            for m in methods.split('/') {
                out.insert((m.to_owned(), path.to_owned()));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_document_is_served_without_credentials_and_lists_every_endpoint_of_the_reference() {
    let server = TestServer::start(bin(), None);
    let doc = document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let documented = operations(&doc);
    let referenced = reference();
    assert!(referenced.len() > 30, "the table was read: {referenced:?}");
    let missing: Vec<_> = referenced.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "in docs/api.md, not in the document: {missing:?}"
    );
    let unreferenced: Vec<_> = documented.difference(&referenced).collect();
    assert!(
        unreferenced.is_empty(),
        "in the document, not in docs/api.md: {unreferenced:?}"
    );
    // The proxies are not part of it.
    assert!(
        documented
            .iter()
            .all(|(_, p)| !p.starts_with("/gw") && !p.starts_with("/mcp"))
    );
    // Every refusal is documented as a problem.
    for (method, path) in &documented {
        let responses = &doc["paths"][path][method.to_lowercase()]["responses"];
        for (status, r) in responses.as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    r["content"]["application/problem+json"].is_object(),
                    "{method} {path} {status} is not a problem"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_server_routes_every_operation_of_the_document() {
    let server = TestServer::start(bin(), None);
    let doc = document(&server).await;
    let client = reqwest::Client::new();
    for (method, path) in operations(&doc) {
        // Any value for the path parameters: the route must exist, whatever
        // it then answers (most of them want credentials first).
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "0" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let resp = client
            .request(
                method.parse().unwrap(),
                format!("{}{concrete}", server.url()),
            )
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert_ne!(
            body["detail"], "no such endpoint",
            "{method} {path} is in the document but not routed"
        );
    }
    // And what is not routed is answered as such.
    let resp = client
        .get(format!("{}/v1/no-such-thing", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        doc["paths"].get("/v1/no-such-thing"),
        None,
        "nor is it documented"
    );
}
