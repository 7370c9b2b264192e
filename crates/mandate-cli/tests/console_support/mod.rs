//! A browser's view of the console for the end-to-end tests: a software
//! WebAuthn authenticator (ES256, "none" attestation) standing in for the
//! browser's, and the console's requests as its page's script and forms
//! make them.
#![allow(dead_code, reason = "each test file uses a part of it")]

use std::path::Path;

use base64::Engine as _;
use mandate_client::MissionAgent;
use mandate_core::Decision;
use mandate_core::ResourceRef;
use mandate_core::wire::DecideRequest;
use mandate_testkit::{Scenario, TestServer};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

pub fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

pub fn server() -> (TestServer, tempfile::TempDir) {
    server_with("")
}

/// A server with the example refund policy, and `extra` configuration.
pub fn server_with(extra: &str) -> (TestServer, tempfile::TempDir) {
    server_with_policies(&["refunds-escalate.cedar"], extra)
}

/// A server with these example policies (and the actions' schema), and
/// `extra` configuration.
pub fn server_with_policies(policies: &[&str], extra: &str) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for f in std::iter::once(&"actions.cedarschema").chain(policies) {
        std::fs::copy(examples().join(f), dir.path().join(f)).unwrap();
    }
    let config = format!(
        "policies_dir = {:?}\n{extra}",
        dir.path().display().to_string()
    );
    (TestServer::start(bin(), Some(&config)), dir)
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

pub fn cbor(v: &ciborium::Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

/// A passkey on a software authenticator: an ES256 key, a credential id,
/// a signature counter.
pub struct SoftKey {
    pub key: SigningKey,
    pub id: Vec<u8>,
    pub counter: u32,
}

impl SoftKey {
    pub fn new(seed: u8) -> Self {
        let key = SigningKey::from_slice(&[seed; 32]).unwrap();
        Self {
            key,
            id: vec![seed; 16],
            counter: 0,
        }
    }

    pub fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
        json!({ "type": kind, "challenge": challenge, "origin": origin, "crossOrigin": false })
            .to_string()
            .into_bytes()
    }

    /// `navigator.credentials.create()`'s answer, as the script sends it.
    pub fn create(&mut self, options: &Value, origin: &str) -> Value {
        let pk = &options["publicKey"];
        let rp_id = pk["rp"]["id"].as_str().unwrap();
        let client_data =
            Self::client_data("webauthn.create", pk["challenge"].as_str().unwrap(), origin);
        let point = self.key.verifying_key().to_sec1_bytes();
        use ciborium::Value as C;
        let cose = cbor(&C::Map(vec![
            (C::Integer(1.into()), C::Integer(2.into())),
            (C::Integer(3.into()), C::Integer((-7).into())),
            (C::Integer((-1).into()), C::Integer(1.into())),
            (C::Integer((-2).into()), C::Bytes(point[1..33].to_vec())),
            (C::Integer((-3).into()), C::Bytes(point[33..65].to_vec())),
        ]));
        let mut auth = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth.push(0x45); // user present, user verified, attested credential
        auth.extend_from_slice(&self.counter.to_be_bytes());
        auth.extend_from_slice(&[0u8; 16]); // AAGUID
        auth.extend_from_slice(&u16::try_from(self.id.len()).unwrap().to_be_bytes());
        auth.extend_from_slice(&self.id);
        auth.extend_from_slice(&cose);
        let attestation = cbor(&C::Map(vec![
            (C::Text("fmt".into()), C::Text("none".into())),
            (C::Text("attStmt".into()), C::Map(vec![])),
            (C::Text("authData".into()), C::Bytes(auth)),
        ]));
        json!({
            "id": b64(&self.id), "rawId": b64(&self.id), "type": "public-key", "extensions": {},
            "response": { "attestationObject": b64(&attestation), "clientDataJSON": b64(&client_data) },
        })
    }

    /// `navigator.credentials.get()`'s answer, as the script sends it.
    pub fn get(&mut self, options: &Value, origin: &str) -> Value {
        self.get_with(options, origin, 0x05) // user present, user verified
    }

    /// The same with the authenticator data's `flags` as given.
    pub fn get_with(&mut self, options: &Value, origin: &str, flags: u8) -> Value {
        let pk = &options["publicKey"];
        let rp_id = pk["rpId"].as_str().unwrap();
        let client_data =
            Self::client_data("webauthn.get", pk["challenge"].as_str().unwrap(), origin);
        self.counter += 1;
        let mut auth = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth.push(flags);
        auth.extend_from_slice(&self.counter.to_be_bytes());
        let mut signed = auth.clone();
        signed.extend_from_slice(&Sha256::digest(&client_data));
        let sig: Signature = self.key.sign(&signed);
        json!({
            "id": b64(&self.id), "rawId": b64(&self.id), "type": "public-key", "extensions": {},
            "response": {
                "authenticatorData": b64(&auth),
                "clientDataJSON": b64(&client_data),
                "signature": b64(sig.to_der().as_bytes()),
                "userHandle": null,
            },
        })
    }
}

/// A browser's view of the console: its origin, and a session cookie
/// once signed in.
pub struct Browser {
    pub base: String,
    pub origin: String,
    pub http: reqwest::Client,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

impl Browser {
    pub fn new(server: &TestServer) -> Self {
        let port = server.url().rsplit(':').next().unwrap().to_owned();
        Self {
            base: server.url().to_owned(),
            origin: format!("http://localhost:{port}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
            csrf: None,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        r.send().await.unwrap()
    }

    /// A POST as the page's script makes it (its origin, its CSRF token).
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post_as(path, body, Some(&self.origin), self.csrf.as_deref())
            .await
    }

    pub async fn post_as(
        &self,
        path: &str,
        body: &Value,
        origin: Option<&str>,
        csrf: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(c) = csrf {
            r = r.header("x-mandate-csrf", c);
        }
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Enrolls a passkey through a one-time link and signs in.
    pub async fn enroll(&mut self, link: &str, key: &mut SoftKey) {
        let token = link.rsplit('/').next().unwrap();
        let (status, start) = self
            .post("/console/enroll/start", &json!({ "token": token }))
            .await;
        assert_eq!(status, StatusCode::OK, "{start}");
        let credential = key.create(&start["options"], &self.origin);
        let resp = self
            .http
            .post(format!("{}/console/enroll/finish", self.base))
            .header("origin", &self.origin)
            .header("content-type", "application/json")
            .body(json!({ "ceremony": start["ceremony"], "credential": credential }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        self.adopt(&resp).await;
    }

    /// Signs in with a passkey (the sign-in page's ceremony); on success
    /// the session is this browser's. The finish's status and body.
    pub async fn sign_in(&mut self, principal: &str, key: &mut SoftKey) -> (StatusCode, Value) {
        let origin = self.origin.clone();
        self.sign_in_with(principal, |o| key.get(o, &origin)).await
    }

    /// The same with the assertion `sign` makes of the options.
    pub async fn sign_in_with(
        &mut self,
        principal: &str,
        sign: impl FnOnce(&Value) -> Value,
    ) -> (StatusCode, Value) {
        let (status, start) = self
            .post("/console/signin/start", &json!({ "principal": principal }))
            .await;
        if status != StatusCode::OK {
            return (status, start);
        }
        let credential = sign(&start["options"]);
        let finish = json!({ "ceremony": start["ceremony"], "credential": credential });
        self.finish_sign_in(&finish).await
    }

    /// Posts a sign-in finish; on success the session is this browser's.
    pub async fn finish_sign_in(&mut self, finish: &Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}/console/signin/finish", self.base))
            .header("origin", &self.origin)
            .header("content-type", "application/json")
            .body(finish.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        if status == StatusCode::OK {
            self.adopt(&resp).await;
        }
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// Keeps the session cookie a sign-in set (checking its attributes),
    /// and the CSRF token of the inbox page.
    async fn adopt(&mut self, resp: &reqwest::Response) {
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
                && cookie.contains("Path=/console"),
            "{cookie}"
        );
        self.cookie = Some(cookie.split(';').next().unwrap().to_owned());
        let page = self.get("/console/inbox").await.text().await.unwrap();
        let csrf = page
            .split("<meta name=\"csrf\" content=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap();
        self.csrf = Some(csrf.to_owned());
    }

    pub async fn inbox(&self) -> String {
        let r = self.get("/console/inbox").await;
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    }
}

pub fn link(server: &TestServer, admin: &str, name: &str) -> String {
    let out = server
        .cli(Some(admin), &["principal", "enroll", name])
        .success();
    let line = out.trim();
    assert!(line.contains("/console/enroll/"), "{line}");
    assert_eq!(line.lines().count(), 1, "the link alone on its line: {out}");
    line.to_owned()
}

pub async fn escalate(s: &Scenario, invoice: &str) -> String {
    escalate_as(s, &s.agent, invoice).await
}

/// A refund of 75,000 on `invoice` by `agent`, which the organisation's
/// `big-refunds` escalates: the approval request's id.
pub async fn escalate_as(s: &Scenario, agent: &MissionAgent, invoice: &str) -> String {
    escalate_with(
        s,
        agent,
        "refund",
        invoice,
        "customer ACME was double-billed in November",
        json!({ "amount": 75_000 }),
    )
    .await
}

/// A call (`action` on `invoice`) by `agent` that escalates, with its
/// `justification` and call arguments (`context`): the approval request's
/// id.
pub async fn escalate_with(
    s: &Scenario,
    agent: &MissionAgent,
    action: &str,
    invoice: &str,
    justification: &str,
    context: Value,
) -> String {
    let r = s
        .gateway
        .decide(&DecideRequest {
            credential: agent.credential().to_owned(),
            action: action.into(),
            resource: serde_json::from_value::<ResourceRef>(
                json!({"type": "Resource", "id": invoice, "tags": {"billing": "nov"}}),
            )
            .unwrap(),
            context: context.as_object().unwrap().clone(),
            justification: Some(justification.into()),
            required_trust: None,
        })
        .await
        .unwrap();
    assert_eq!(r.decision, Decision::Escalate);
    r.approval_id.unwrap()
}

/// `GET {path}` on the API as `token`: the JSON answer.
pub async fn api_get(server: &TestServer, token: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", server.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn audit(server: &TestServer, admin: &str, kind: &str) -> Vec<Value> {
    let r = api_get(server, admin, &format!("/v1/audit?kind={kind}&limit=100")).await;
    r["records"].as_array().cloned().unwrap_or_default()
}
/// A form POST as a page's form makes it: `origin`, the fields, the
/// session cookie. Its status, `Location` and body.
pub async fn post_form(
    b: &Browser,
    path: &str,
    fields: &[(&str, &str)],
    origin: Option<&str>,
) -> (StatusCode, String, String) {
    // application/x-www-form-urlencoded, every byte but [A-Za-z0-9]
    // percent-encoded.
    let enc = |v: &str| -> String {
        v.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let body = fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut r = b
        .http
        .post(format!("{}{path}", b.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    if let Some(c) = &b.cookie {
        r = r.header("cookie", c);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, resp.text().await.unwrap())
}

pub async fn page(b: &Browser, path: &str) -> (StatusCode, String) {
    let r = b.get(path).await;
    (r.status(), r.text().await.unwrap())
}
