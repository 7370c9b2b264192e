//! End to end: what `mandate serve` tells an operator about itself.
//! `GET /metrics` after decisions on `/v1/decide` and calls through the
//! gateway, read with a parser of the Prometheus text format; who may read
//! it; and traces sent over OTLP/HTTP to a collector in this test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use mandate_core::wire::DecideRequest;
use mandate_core::{Decision, ResourceRef};
use mandate_testkit::{MissionPlan, Scenario, TestServer, free_port};
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

/// The example policies, in a directory of their own.
fn policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "actions.cedarschema",
        "hr-off-limits.cedar",
        "refunds-escalate.cedar",
    ] {
        std::fs::copy(examples().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

/// Reads billing records and refunds them (the example scope), and reads
/// through the gateway routes `billing` and `down`.
fn plan() -> MissionPlan {
    let mut scope =
        std::fs::read_to_string(examples().join("missions/billing-scope.cedar")).unwrap();
    scope.push_str(
        r#"
@id("routes")
permit(principal, action == Action::"read", resource is Route)
when { resource.route == "billing" || resource.route == "down" };
"#,
    );
    MissionPlan {
        goal: "Reconcile November invoices".into(),
        scope,
        boundaries: String::new(),
        budget: 100,
    }
}

/// An upstream that answers every request with a small JSON.
async fn upstream() -> String {
    let app = axum::Router::new().fallback(|| async { axum::Json(json!({ "upstream": "ok" })) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn resource(id: &str, tags: &[(&str, &str)]) -> ResourceRef {
    serde_json::from_value(json!({
        "type": "Resource", "id": id,
        "tags": tags.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
    }))
    .unwrap()
}

fn decide_request(
    s: &Scenario,
    action: &str,
    r: ResourceRef,
    context: serde_json::Value,
) -> DecideRequest {
    DecideRequest {
        credential: s.agent.credential().to_owned(),
        action: action.into(),
        resource: r,
        context: context.as_object().unwrap().clone(),
        justification: None,
        required_trust: None,
    }
}

/// `/metrics` as a Prometheus server reads it.
fn parse(text: &str) -> Vec<Sample> {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap()
        .samples
}

/// The value of the sample `name` whose labels include `labels`, if there
/// is one.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            Value::Histogram(_) | Value::Summary(_) => panic!("{name} is not a single value"),
        })
}

/// Every `mandate_decisions_total` sample, by (front door, decision, code).
fn decisions(samples: &[Sample]) -> BTreeMap<(String, String, String), f64> {
    samples
        .iter()
        .filter(|s| s.metric == "mandate_decisions_total")
        .map(|s| {
            let l = |k| s.labels.get(k).unwrap().to_owned();
            let Value::Counter(v) = s.value else {
                panic!("mandate_decisions_total is not a counter: {:?}", s.value)
            };
            ((l("front_door"), l("decision"), l("code")), v)
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_each_decision_stage_and_upstream_error_and_only_an_admin_or_the_metrics_address_reads_them()
 {
    let up = upstream().await;
    let dir = policies();
    let metrics_port = free_port();
    let config = format!(
        r#"policies_dir = {dir:?}
metrics_listen = "127.0.0.1:{metrics_port}"

[[routes]]
name = "billing"
upstream = "{up}"

[[routes.rules]]
method = "GET"
path = "/invoices/{{id}}"
action = "read"

[[routes]]
name = "down"
upstream = "http://127.0.0.1:{closed}"

[[routes.rules]]
method = "GET"
path = "/{{*rest}}"
action = "read"
"#,
        dir = dir.path().display().to_string(),
        closed = free_port(),
    );
    let server = TestServer::start(bin(), Some(&config));
    let mut s = server.scenario(plan()).await;

    // An allow, a deny and an escalation on `/v1/decide`.
    let billing = resource("invoice-42", &[("billing", "nov")]);
    let r = s
        .gateway
        .decide(&decide_request(&s, "read", billing.clone(), json!({})))
        .await
        .unwrap();
    assert_eq!((r.decision, r.code.as_str()), (Decision::Allow, "scope"));
    let hr = resource("salary", &[("billing", "nov"), ("hr", "x")]);
    let r = s
        .gateway
        .decide(&decide_request(&s, "read", hr, json!({})))
        .await
        .unwrap();
    assert_eq!((r.decision, r.code.as_str()), (Decision::Deny, "boundary"));
    let r = s
        .gateway
        .decide(&decide_request(
            &s,
            "refund",
            billing,
            json!({ "amount": 75_000 }),
        ))
        .await
        .unwrap();
    assert_eq!(
        (r.decision, r.code.as_str()),
        (Decision::Escalate, "escalation")
    );
    // Two gateway calls, both allowed: one answered by its upstream, one
    // whose upstream is not there.
    let gw = format!("{}/gw", server.url());
    let ok = s
        .agent
        .send_signed("GET", &format!("{gw}/billing/invoices/7"), None, None)
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let down = s
        .agent
        .send_signed("GET", &format!("{gw}/down/anything"), None, None)
        .await
        .unwrap();
    assert_eq!(down.status(), 502);

    // Who may read them on the API's listener: an admin only.
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", server.url());
    let anon = http.get(&url).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    assert_eq!(
        anon.headers()["www-authenticate"],
        "Bearer",
        "only an API token works on /metrics"
    );
    assert_eq!(
        anon.json::<serde_json::Value>().await.unwrap()["code"],
        "unauthenticated"
    );
    let member = http.get(&url).bearer_auth(&s.alice).send().await.unwrap();
    assert_eq!(member.status(), 403);
    let admin = http.get(&url).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(admin.status(), 200);
    assert!(
        admin.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
    );
    let text = admin.text().await.unwrap();
    let samples = parse(&text);

    // Exactly the five decisions, under their front door, decision and code.
    let expected: BTreeMap<(String, String, String), f64> = [
        (("decide", "allow", "scope"), 1.0),
        (("decide", "deny", "boundary"), 1.0),
        (("decide", "escalate", "escalation"), 1.0),
        (("gateway", "allow", "scope"), 2.0),
    ]
    .into_iter()
    .map(|((d, o, c), v)| ((d.to_owned(), o.to_owned(), c.to_owned()), v))
    .collect();
    assert_eq!(decisions(&samples), expected, "{text}");

    // Every stage of every call was timed.
    let count = |door: &str, stage: &str| {
        value(
            &samples,
            "mandate_stage_duration_seconds_count",
            &[("front_door", door), ("stage", stage)],
        )
        .unwrap()
    };
    for stage in ["verify", "decide", "record"] {
        assert_eq!(count("decide", stage), 3.0, "decide {stage}");
    }
    assert_eq!(count("decide", "forward"), 0.0);
    for stage in ["verify", "decide", "record", "forward"] {
        assert_eq!(count("gateway", stage), 2.0, "gateway {stage}");
    }
    let histogram = samples
        .iter()
        .find(|s| {
            s.metric == "mandate_stage_duration_seconds"
                && s.labels.get("front_door") == Some("gateway")
                && s.labels.get("stage") == Some("forward")
        })
        .unwrap();
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram")
    };
    assert_eq!(buckets.last().unwrap().count, 2.0);

    // The audit log's group commits: at least one, holding at least the
    // five decisions and the approval request.
    let commits = value(&samples, "mandate_audit_commit_events_count", &[]).unwrap();
    let events = value(&samples, "mandate_audit_commit_events_sum", &[]).unwrap();
    assert!(
        commits >= 1.0 && events >= 6.0,
        "{commits} commits, {events} events"
    );
    assert!(value(&samples, "mandate_audit_commit_duration_seconds_count", &[]).unwrap() >= 1.0);
    assert_eq!(value(&samples, "mandate_audit_up", &[]), Some(1.0));

    // The escalation waits for a person.
    assert_eq!(value(&samples, "mandate_approvals_pending", &[]), Some(1.0));

    // The missing upstream, by its route; the other route had none.
    let errors = |route: &str, kind: &str| {
        value(
            &samples,
            "mandate_upstream_errors_total",
            &[
                ("front_door", "gateway"),
                ("upstream", route),
                ("kind", kind),
            ],
        )
    };
    assert_eq!(errors("down", "unreachable"), Some(1.0));
    assert_eq!(errors("billing", "unreachable"), Some(0.0));
    assert_eq!(errors("down", "timeout"), Some(0.0));

    // Nothing in them names who: no mission, agent or principal.
    let mission = s.agent.mission_id().to_string();
    for who in [mission.as_str(), "alice", "billing-bot"] {
        assert!(!text.contains(who), "`{who}` is in the metrics");
    }

    // The metrics address serves them without credentials, and nothing
    // else.
    let plain = format!("http://127.0.0.1:{metrics_port}");
    let scraped = http.get(format!("{plain}/metrics")).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    let again = parse(&scraped.text().await.unwrap());
    assert_eq!(decisions(&again), expected);
    let other = http
        .get(format!("{plain}/v1/whoami"))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// What a collector in this test received: each POST's body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An OTLP/HTTP collector: takes `POST /v1/traces` and keeps what came.
async fn collector() -> (String, Received) {
    let got: Received = Arc::default();
    let keep = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let keep = Arc::clone(&keep);
                async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    keep.lock().unwrap().push((ct, body.to_vec()));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), got)
}

/// A span as the collector decoded it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    id: Vec<u8>,
    parent: Vec<u8>,
    attributes: BTreeMap<String, String>,
}

fn spans(got: &Received) -> Vec<Span> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message as _;
    let mut out = Vec::new();
    for (ct, body) in got.lock().unwrap().iter() {
        assert_eq!(ct, "application/x-protobuf");
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                for sp in ss.spans {
                    let attributes = sp
                        .attributes
                        .iter()
                        .map(|kv| {
                            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(any_value::Value::StringValue(s)) => s.clone(),
                                Some(any_value::Value::IntValue(i)) => i.to_string(),
                                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                                other => format!("{other:?}"),
                            };
                            (kv.key.clone(), v)
                        })
                        .collect();
                    out.push(Span {
                        name: sp.name,
                        id: sp.span_id,
                        parent: sp.parent_span_id,
                        attributes,
                    });
                }
            }
        }
    }
    out
}

// Two threads: the collector answers while the test waits for the server
// to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_otlp_endpoint_each_stage_of_a_decision_and_a_gateway_call_is_a_span_under_its_request()
 {
    let (endpoint, got) = collector().await;
    let up = upstream().await;
    let dir = policies();
    let config = format!(
        r#"policies_dir = {dir:?}

[tracing]
otlp_endpoint = "{endpoint}"

[[routes]]
name = "billing"
upstream = "{up}"

[[routes.rules]]
method = "GET"
path = "/invoices/{{id}}"
action = "read"
"#,
        dir = dir.path().display().to_string(),
    );
    let mut server = TestServer::start_logged(bin(), Some(&config));
    let mut s = server.scenario(plan()).await;
    let r = s
        .gateway
        .decide(&decide_request(
            &s,
            "read",
            resource("invoice-42", &[("billing", "nov")]),
            json!({}),
        ))
        .await
        .unwrap();
    assert_eq!(r.decision, Decision::Allow);
    let ok = s
        .agent
        .send_signed(
            "GET",
            &format!("{}/gw/billing/invoices/7", server.url()),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // A clean stop sends what is batched (what the timer did not send).
    assert!(server.stop());
    assert!(
        !server.log().contains("traces could not be sent"),
        "{}",
        server.log()
    );
    let all = spans(&got);

    for (root, stages) in [
        ("decide_request", &["verify", "decide", "record"][..]),
        (
            "gateway_request",
            &["verify", "decide", "record", "forward"][..],
        ),
    ] {
        let request = all
            .iter()
            .find(|x| x.name == root)
            .unwrap_or_else(|| panic!("no `{root}` span in {all:#?}"));
        let under: Vec<&str> = all
            .iter()
            .filter(|x| x.parent == request.id)
            .map(|x| x.name.as_str())
            .collect();
        for stage in stages {
            assert!(
                under.contains(stage),
                "`{stage}` is not under `{root}`: {under:?}"
            );
        }
    }
    let gateway = all.iter().find(|x| x.name == "gateway_request").unwrap();
    assert_eq!(
        gateway.attributes.get("route").map(String::as_str),
        Some("billing")
    );
    assert_eq!(
        gateway.attributes.get("status").map(String::as_str),
        Some("200")
    );
    let decided = all
        .iter()
        .find(|x| x.name == "decide" && x.attributes.contains_key("code"))
        .unwrap();
    assert_eq!(decided.attributes["decision"], "allow");
    assert_eq!(decided.attributes["code"], "scope");
    assert!(
        all.iter()
            .any(|x| x.name == "record" && x.attributes.contains_key("audit_seq"))
    );

    // Who made the calls is not in the traces.
    let mission = s.agent.mission_id().to_string();
    for (_, body) in got.lock().unwrap().iter() {
        let bytes = String::from_utf8_lossy(body);
        for who in [mission.as_str(), "alice", "billing-bot"] {
            assert!(!bytes.contains(who), "`{who}` is in the traces");
        }
    }
}
