//! End to end: the HTTP edge of `mandate serve`, driven byte for byte over
//! loopback as a hostile or careless client would: slow and idle clients,
//! too many connections, a shutdown with half-sent requests, request
//! smuggling shapes, foreign request targets, and errors that must be
//! problem+json without echoing what was sent.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mandate_core::MissionKey;
use mandate_testkit::{MissionPlan, Scenario, TestServer, signed_headers};
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

/// How long a test waits for the server to answer or to close.
const PATIENCE: Duration = Duration::from_secs(15);

/// A server with `server` as its `[server]` table.
fn start(server: &str) -> TestServer {
    TestServer::start_logged(bin(), Some(&format!("[server]\n{server}\n")))
}

fn addr(server: &TestServer) -> String {
    server.url().trim_start_matches("http://").to_owned()
}

/// A response as read off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The problem document; asserts the media type.
    fn problem(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}: {}",
            self.text()
        );
        serde_json::from_slice(&self.body).unwrap()
    }

    fn code(&self) -> String {
        self.problem()["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A raw HTTP/1.1 connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: &str) -> Self {
        Self::from(TcpStream::connect(addr).unwrap())
    }

    fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.s.write_all(bytes.as_ref()).unwrap();
    }

    /// Reads more bytes; `false` at the end of the stream (or a reset).
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.s.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!("no answer within {PATIENCE:?}: {e}"),
        }
    }

    /// The next response (`Content-Length` or chunked).
    fn response(&mut self) -> Resp {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill(),
                "closed before a response: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        self.buf.drain(..head_end);
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let body = if get("transfer-encoding").is_some() {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill(), "closed inside a chunked body");
                };
                let size = usize::from_str_radix(
                    std::str::from_utf8(&self.buf[..line_end]).unwrap().trim(),
                    16,
                )
                .unwrap();
                while self.buf.len() < line_end + 2 + size + 2 {
                    assert!(self.fill(), "closed inside a chunk");
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break body;
                }
            }
        } else {
            let len: usize = get("content-length").map_or(0, |v| v.parse().unwrap());
            while self.buf.len() < len {
                assert!(self.fill(), "closed inside a body");
            }
            self.buf.drain(..len).collect()
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Whether the server closes the connection (within [`PATIENCE`]),
    /// sending nothing more.
    fn closed_silently(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        match self.s.read(&mut chunk) {
            Ok(0) => self.buf.is_empty(),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => self.buf.is_empty(),
            Ok(_) => false,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) => panic!("{e}"),
        }
    }
}

impl From<TcpStream> for Conn {
    fn from(s: TcpStream) -> Self {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        Self { s, buf: Vec::new() }
    }
}

/// A connection from another loopback address (`127.0.0.N`), to stand
/// for another client.
async fn open_from(source: &str, addr: &str) -> Conn {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let std = stream.into_std().unwrap();
    std.set_nonblocking(false).unwrap();
    Conn::from(std)
}

#[test]
fn a_client_that_sends_its_head_slowly_or_not_at_all_is_cut_off() {
    let server = start("header_read_timeout_secs = 2\nidle_timeout_secs = 60");
    let addr = addr(&server);
    // Nothing at all after the connect.
    let mut silent = Conn::open(&addr);
    assert!(silent.closed_silently(), "a silent connection was kept");
    // Slowloris: a header line a second, never the end of the head.
    let mut slow = Conn::open(&addr);
    let reader = slow.s.try_clone().unwrap();
    let closed = Arc::new(Mutex::new(false));
    let flag = Arc::clone(&closed);
    let watcher = std::thread::spawn(move || {
        let mut c = Conn::from(reader);
        let silent = c.closed_silently();
        *flag.lock().unwrap() = true;
        silent
    });
    slow.send("GET /healthz HTTP/1.1\r\nHost: mandate\r\n");
    let mut sent = 0;
    while sent < 20 && !*closed.lock().unwrap() {
        std::thread::sleep(Duration::from_secs(1));
        if slow
            .s
            .write_all(format!("X-Slow-{sent}: 1\r\n").as_bytes())
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    assert!(watcher.join().unwrap(), "the slow client got an answer");
    assert!(
        sent < 20,
        "a client trickling its head was kept for {sent} s"
    );
    // A head pipelined behind an answered request is held to the
    // header-read timeout (2 s here), not the idle one (60 s).
    let mut pipelined = Conn::open(&addr);
    pipelined.send(
        "GET /healthz HTTP/1.1\r\nHost: mandate\r\n\r\nGET /healthz HTTP/1.1\r\nX-Slow: 1\r\n",
    );
    assert_eq!(pipelined.response().status, 200);
    let answered = std::time::Instant::now();
    assert!(
        pipelined.closed_silently(),
        "a pipelined half head was kept"
    );
    assert!(
        answered.elapsed() < Duration::from_secs(6),
        "a pipelined half head was kept {:?}",
        answered.elapsed()
    );
    // A client that sends its head in time is served as before.
    let mut ok = Conn::open(&addr);
    ok.send("GET /healthz HTTP/1.1\r\nHost: mandate\r\n\r\n");
    assert_eq!(ok.response().status, 200);
}

/// A complete head and then a body that never comes: the request is
/// refused once the header-read timeout passes again, and a body declared
/// larger than the API takes is refused before anything is read.
#[test]
fn a_body_that_trickles_or_never_comes_does_not_hold_the_connection() {
    let server = start("header_read_timeout_secs = 2\nidle_timeout_secs = 60");
    let addr = addr(&server);
    let mut c = Conn::open(&addr);
    let started = std::time::Instant::now();
    c.send(
        "POST /v1/credentials/introspect HTTP/1.1\r\nHost: mandate\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    );
    let r = c.response();
    assert_eq!((r.status, r.code()), (408, "body_timeout".into()));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let mut c = Conn::open(&addr);
    let started = std::time::Instant::now();
    c.send(
        "POST /v1/credentials/introspect HTTP/1.1\r\nHost: mandate\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n",
    );
    let r = c.response();
    assert_eq!((r.status, r.code()), (413, "payload_too_large".into()));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let server = start("header_read_timeout_secs = 30\nidle_timeout_secs = 1");
    let mut c = Conn::open(&addr(&server));
    for _ in 0..2 {
        c.send("GET /healthz HTTP/1.1\r\nHost: mandate\r\n\r\n");
        assert_eq!(c.response().status, 200);
    }
    assert!(c.closed_silently(), "an idle connection was kept open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_caps_hold_per_address_and_in_total() {
    let server = start(
        "header_read_timeout_secs = 60\nidle_timeout_secs = 60\n\
         max_connections_per_ip = 3\nmax_connections = 4",
    );
    let addr = addr(&server);
    let mut held: Vec<Conn> = (0..3).map(|_| Conn::open(&addr)).collect();
    // Served: the three are in.
    held[0].send("GET /healthz HTTP/1.1\r\nHost: mandate\r\n\r\n");
    assert_eq!(held[0].response().status, 200);
    // A fourth from the same address is refused at once.
    let mut extra = Conn::open(&addr);
    let r = extra.response();
    assert_eq!((r.status, r.code()), (503, "too_many_connections".into()));
    assert!(r.problem()["detail"].as_str().unwrap().contains("address"));
    assert!(extra.closed_silently());
    // Another client gets the last slot; a third finds the server full.
    let mut other = open_from("127.0.0.2", &addr).await;
    other.send("GET /healthz HTTP/1.1\r\nHost: mandate\r\n\r\n");
    assert_eq!(other.response().status, 200);
    let mut third = open_from("127.0.0.3", &addr).await;
    let r = third.response();
    assert_eq!((r.status, r.code()), (503, "too_many_connections".into()));
    // A closed connection gives its slot back.
    drop(held.pop());
    let mut served = false;
    for _ in 0..50 {
        let mut again = Conn::open(&addr);
        again.send("GET /healthz HTTP/1.1\r\nHost: mandate\r\n\r\n");
        if again.response().status == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the slot of a closed connection never came back");
    assert!(
        server
            .log()
            .contains("connections refused at the connection caps"),
        "{}",
        server.log()
    );
}

#[test]
fn a_shutdown_closes_half_read_connections_and_finishes_requests_in_flight() {
    let mut server =
        start("header_read_timeout_secs = 60\nidle_timeout_secs = 60\nshutdown_deadline_secs = 3");
    let addr = addr(&server);
    // Half a head.
    let mut half_head = Conn::open(&addr);
    half_head.send("GET /healthz HTTP/1.1\r\nHost: mandate\r\n");
    // A request whose body is on its way.
    let body = br#"{"start_token": "mst_not-a-real-token"}"#;
    let head = format!(
        "POST /v1/missions/start HTTP/1.1\r\nHost: mandate\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut in_flight = Conn::open(&addr);
    in_flight.send(head.as_bytes());
    in_flight.send(&body[..10]);
    // And one that will never finish its body.
    let mut stuck = Conn::open(&addr);
    stuck.send(head.as_bytes());
    stuck.send(&body[..10]);
    std::thread::sleep(Duration::from_millis(300));
    server.signal("TERM");
    // The half-read connection is closed at once, without an answer.
    assert!(half_head.closed_silently());
    // The request in flight finishes, and its connection then closes.
    in_flight.send(&body[10..]);
    let r = in_flight.response();
    assert_eq!(r.status, 401, "{}", r.text());
    r.problem();
    assert!(in_flight.closed_silently());
    // The stuck one is closed at the deadline, and the server exits.
    assert!(server.stop(), "the server did not exit cleanly");
    assert!(stuck.closed_silently());
}

const SCOPE: &str = r#"
@id("billing")
permit(principal, action in [Action::"read", Action::"write"], resource is Route)
when { resource.route == "billing" };
"#;

/// What reached the upstream.
type Seen = Arc<Mutex<Vec<String>>>;

/// An upstream that records each request line it gets.
async fn upstream() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = Arc::clone(&log);
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            log.lock().unwrap().push(format!(
                "{} {} {}",
                parts.method,
                parts.uri,
                String::from_utf8_lossy(&body)
            ));
            axum::Json(json!({ "upstream": "ok" }))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// A gateway with a route `billing` in front of a recording upstream, and
/// an agent on a mission that may read and write it.
async fn gateway() -> (TestServer, Scenario, MissionKey, Seen) {
    let (up, seen) = upstream().await;
    let config = format!(
        r#"[[routes]]
name = "billing"
upstream = "{up}"

[[routes.rules]]
method = "GET"
path = "/invoices/{{id}}"
action = "read"

[[routes.rules]]
method = "POST"
path = "/notes/{{id}}"
action = "write"

# Never spoken to: its requests are refused before a session opens.
[[mcp_servers]]
name = "idle"
command = "sleep"
args = ["300"]
"#
    );
    let server = TestServer::start(bin(), Some(&config));
    let s = server
        .scenario(MissionPlan {
            goal: "Annotate invoices".into(),
            scope: SCOPE.into(),
            boundaries: String::new(),
            budget: 100,
        })
        .await;
    let saved: mandate_client::SavedMission =
        serde_json::from_str(&s.agent.save().unwrap()).unwrap();
    let key = MissionKey::from_pkcs8_pem(&saved.key_pem).unwrap();
    (server, s, key, seen)
}

/// A signed `POST /gw/billing/notes/1` with a chunked body, as raw bytes;
/// `extra` goes into the head unsigned (the framing fields).
fn signed_chunked_post(key: &MissionKey, credential: &str, authority: &str, extra: &str) -> String {
    let path = "/gw/billing/notes/1";
    let body = r#"{"note":"paid"}"#;
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {authority}\r\n{extra}");
    for (k, v) in signed_headers(
        key,
        credential,
        "POST",
        authority,
        path,
        Some(("application/json", body.as_bytes())),
        &[],
    ) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    format!("{head}\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_shapes_are_refused_before_anything_is_forwarded() {
    let (server, s, key, seen) = gateway().await;
    let authority = addr(&server);
    let cred = s.agent.credential().to_owned();
    let refused = |extra: &str| {
        let mut c = Conn::open(&authority);
        c.send(signed_chunked_post(&key, &cred, &authority, extra));
        let r = c.response();
        assert!(c.closed_silently(), "kept open after refusing {extra:?}");
        (r.status, r.code())
    };
    // Content-Length beside Transfer-Encoding, in either order.
    for extra in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
    ] {
        assert_eq!(
            refused(extra),
            (400, "ambiguous_framing".into()),
            "{extra:?}"
        );
    }
    // A coding other than exactly `chunked`.
    for extra in [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    ] {
        assert_eq!(
            refused(extra),
            (400, "unsupported_transfer_encoding".into()),
            "{extra:?}"
        );
    }
    // Smuggled behind a harmless request, in the same packet: the
    // connection is refused from the moment the smuggling head is read,
    // the request before it included.
    let mut c = Conn::open(&authority);
    c.send(format!(
        "GET /healthz HTTP/1.1\r\nHost: {authority}\r\n\r\n{}",
        signed_chunked_post(
            &key,
            &cred,
            &authority,
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"
        )
    ));
    let r = c.response();
    assert_eq!((r.status, r.code()), (400, "ambiguous_framing".into()));
    assert!(c.closed_silently());
    // Not even an unknown path is routed first.
    let mut c = Conn::open(&authority);
    c.send(format!(
        "POST /nowhere HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ));
    assert_eq!(c.response().code(), "ambiguous_framing");
    // Obsolete line folding: hyper refuses it; the answer is a problem.
    let mut c = Conn::open(&authority);
    c.send(format!(
        "GET /healthz HTTP/1.1\r\nHost: {authority}\r\nX-Folded: a\r\n b\r\n\r\n"
    ));
    let r = c.response();
    assert_eq!((r.status, r.code()), (400, "malformed_request".into()));
    assert!(c.closed_silently());
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
    // The same request, framed once, goes through: the refusals above
    // were the framing's.
    let mut c = Conn::open(&authority);
    c.send(signed_chunked_post(
        &key,
        &cred,
        &authority,
        "Transfer-Encoding: chunked\r\n",
    ));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        *seen.lock().unwrap(),
        vec![r#"POST /notes/1 {"note":"paid"}"#.to_owned()]
    );
}

/// A refusal sent before the request's body is read (an unsigned call to
/// an MCP server, a path nothing serves) says
/// `Connection: close` and closes: a client that reused the connection
/// would have its next request cut off. An answer after the whole body,
/// and one to a request without a body, keep the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_before_the_body_is_read_closes_and_says_so() {
    let (server, s, key, seen) = gateway().await;
    let authority = addr(&server);
    let cred = s.agent.credential().to_owned();
    for (head, status, code) in [
        (
            "POST /mcp/idle HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n",
            401,
            "signature_required",
        ),
        (
            "POST /nowhere HTTP/1.1\r\nContent-Type: application/json\r\n",
            404,
            "not_found",
        ),
    ] {
        // The head alone: the body is still to come when the answer goes.
        let mut c = Conn::open(&authority);
        c.send(format!(
            "{head}Host: {authority}\r\nContent-Length: 15\r\n\r\n"
        ));
        let r = c.response();
        assert_eq!((r.status, r.code()), (status, code.into()), "{head}");
        assert_eq!(r.header("connection"), Some("close"), "{head}: {r:?}");
        assert!(c.closed_silently(), "{head}: kept open");
    }
    // The connection serves its next request.
    let serves_next = |c: &mut Conn| {
        c.send(format!(
            "GET /healthz HTTP/1.1\r\nHost: {authority}\r\n\r\n"
        ));
        assert_eq!(c.response().status, 200);
    };
    // No body: the refusal keeps the connection.
    let mut c = Conn::open(&authority);
    c.send(format!(
        "GET /gw/billing/invoices/1 HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    ));
    let r = c.response();
    assert_eq!((r.status, r.header("connection")), (401, None), "{r:?}");
    serves_next(&mut c);
    // A body read to its end: the connection stays, refusal or not.
    let mut c = Conn::open(&authority);
    c.send(signed_chunked_post(
        &key,
        &cred,
        &authority,
        "Transfer-Encoding: chunked\r\n",
    ));
    let r = c.response();
    assert_eq!((r.status, r.header("connection")), (200, None), "{r:?}");
    c.send(format!(
        "POST /v1/credentials/introspect HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n{{"
    ));
    let r = c.response();
    assert_eq!((r.status, r.header("connection")), (400, None), "{r:?}");
    serves_next(&mut c);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_must_name_the_gateway_itself() {
    let (server, s, key, seen) = gateway().await;
    let authority = addr(&server);
    let cred = s.agent.credential().to_owned();
    let path = "/gw/billing/invoices/42";
    let signed_get = |target: &str| {
        let mut head = format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\n");
        for (k, v) in signed_headers(&key, &cred, "GET", &authority, path, None, &[]) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let mut c = Conn::open(&authority);
        c.send(format!("{head}\r\n"));
        c.response()
    };
    let r = signed_get(&format!("http://other.example{path}"));
    assert_eq!((r.status, r.code()), (400, "foreign_authority".into()));
    let r = signed_get(&format!("ftp://{authority}{path}"));
    assert_eq!((r.status, r.code()), (400, "invalid_request_target".into()));
    assert!(seen.lock().unwrap().is_empty());
    // Naming the gateway itself (the `Host`), it is the same request.
    let r = signed_get(&format!("http://{authority}{path}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(*seen.lock().unwrap(), vec!["GET /invoices/42 ".to_owned()]);
}

#[test]
fn every_error_is_a_problem_that_names_the_field_not_the_value() {
    let server = TestServer::start(bin(), None);
    let admin = server.init_admin();
    let authority = addr(&server);
    let call = |method: &str, target: &str, body: Option<&str>| {
        let mut c = Conn::open(&authority);
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {admin}\r\n"
        );
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        c.send(req);
        c.response()
    };
    // A bad query string.
    for (target, param) in [
        ("/v1/audit?limit=abc987", "limit"),
        ("/v1/audit?after=98765432109876543210987", "after"),
        ("/v1/missions?limit=-987", "limit"),
    ] {
        let r = call("GET", target, None);
        let p = r.problem();
        assert_eq!((r.status, p["code"].as_str()), (400, Some("invalid_query")));
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("`{param}`")), "{target}: {detail}");
        assert!(!detail.contains("987"), "{target}: {detail}");
    }
    // A route still on axum's own query extractor: a problem all the same.
    let r = call("GET", "/v1/approvals?limit=abc987", None);
    assert_eq!(r.status, 400);
    r.problem();
    assert!(!r.text().contains("987"), "{}", r.text());
    // A bad path parameter.
    let r = call("GET", "/v1/audit/x987/explain", None);
    assert_eq!((r.status, r.code()), (400, "invalid_path".into()));
    assert!(!r.text().contains("987"), "{}", r.text());
    // A body field of the wrong type, or a value not in the list.
    for body in [
        r#"{"kind":"basic","username":"alice","password":987654321123}"#,
        r#"{"kind":"none987"}"#,
        r#"{"kind":"basic","username":"alice","password":"x","extra987":1}"#,
    ] {
        let r = call("PUT", "/v1/vault/crm/alice", Some(body));
        assert_eq!((r.status, r.code()), (400, "invalid_json".into()), "{body}");
        let detail = r.problem()["detail"].as_str().unwrap().to_owned();
        for leak in ["987", "expected", "variant"] {
            assert!(!detail.contains(leak), "{body}: {detail}");
        }
    }
    // A value the domain refuses, or an object that does not exist: the
    // detail says what is wrong, not what was sent.
    for (method, target, body, status) in [
        (
            "POST",
            "/v1/principals",
            Some(r#"{"name":"bob","role":"chief987"}"#),
            400,
        ),
        (
            "POST",
            "/v1/principals",
            Some(r#"{"name":"Bob<987>"}"#),
            400,
        ),
        (
            "POST",
            "/v1/revocations",
            Some(r#"{"kind":"everything987","id":"x"}"#),
            400,
        ),
        (
            "POST",
            "/v1/revocations",
            Some(r#"{"kind":"agent","id":"ghost987"}"#),
            404,
        ),
        ("GET", "/v1/agents/ghost987", None, 404),
        ("GET", "/v1/missions/msn_987", None, 400),
        ("GET", "/v1/approvals/apr_987", None, 404),
    ] {
        let r = call(method, target, body);
        assert_eq!(r.status, status, "{target} {body:?}: {}", r.text());
        let detail = r.problem()["detail"].as_str().unwrap().to_owned();
        assert!(!detail.contains("987"), "{target} {body:?}: {detail}");
    }
    // An unknown path, a method a path does not take.
    let r = call("GET", "/v1/nowhere", None);
    assert_eq!((r.status, r.code()), (404, "not_found".into()));
    let r = call("DELETE", "/v1/agents", None);
    assert_eq!((r.status, r.code()), (405, "method_not_allowed".into()));
    assert_eq!(r.header("allow"), Some("POST,GET,HEAD"));
    // No `Host`, or two.
    for head in [
        "GET /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let mut c = Conn::open(&authority);
        c.send(head);
        let r = c.response();
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_host".into()),
            "{head:?}"
        );
    }
    // A request hyper cannot parse, and one whose target is too long.
    let mut c = Conn::open(&authority);
    c.send("GET /healthz HTTP/1.1 extra\r\nHost: mandate\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.code()), (400, "malformed_request".into()));
    assert!(r.header("date").is_some(), "{r:?}");
    let mut c = Conn::open(&authority);
    c.send(format!(
        "GET /healthz?{} HTTP/1.1\r\nHost: mandate\r\n\r\n",
        "a".repeat(70_000)
    ));
    let r = c.response();
    assert_eq!((r.status, r.code()), (414, "uri_too_long".into()));
}
