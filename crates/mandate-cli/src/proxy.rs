//! `mandate mission proxy`: signs for an agent that cannot.
//!
//! An agent nobody will modify sends plain HTTP, to the proxy as its base
//! URL (`GET /gw/billing/invoices/42`) or through it as its HTTP proxy
//! (`GET http://AUTHORITY/gw/billing/invoices/42`). Each request, in order:
//!
//! 1. refused if the mission has ended (the proxy remembers the authority
//!    saying so, and signs nothing more);
//! 2. refused if it is a `CONNECT` (nothing inside TLS can be signed), comes
//!    from a web page (`Origin`, `Sec-Fetch-*`), names a host other than the
//!    proxy's own or the mission's authority (DNS rebinding), or a
//!    destination other than the mission's authority;
//! 3. refused unless its path is under `/gw/` or `/mcp/`, and unless the
//!    URL goes out exactly as written;
//! 4. refused if its body is larger than the route's limit (or the MCP
//!    server's), which the authority lists (`GET /v1/mission/limits`) —
//!    before anything is read past the limit, signed or sent;
//! 5. stripped of what only the proxy may say (signatures, credentials,
//!    hop-by-hop headers), signed with the mission key (RFC 9421, as
//!    `mandate mission call` signs), the credential refreshed first if it
//!    is about to expire, and sent to the mission's authority — the only
//!    place it can go, since the URL is built from the mission state;
//! 6. the answer streams back; an escalation is the gateway's `403
//!    approval_required`, or with `--wait` a wait for the person's decision
//!    and the call sent again.
//!
//! ADR 0030 says why each of these is so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use mandate_client::{Client, ClientError, MissionAgent};
use mandate_core::wire::GatewayLimits;
use serde_json::{Value, json};

use crate::args::ProxyArgs;

/// How long the route limits are trusted before they are asked again (a
/// configuration reload may have changed them).
const LIMITS_TTL: Duration = Duration::from_secs(30);

/// A body over a limit known for at least this long is checked against a
/// fresh list before it is refused (the limit may have been raised).
const LIMITS_RECHECK: Duration = Duration::from_secs(5);

/// The most of a refusal (`401`, `403`) read to see what it says; a larger
/// answer is not one of Mandate's and is passed on as it comes.
const PROBLEM_PEEK: usize = 64 * 1024;

/// How long requests in flight may go on once the proxy is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Approved, yet escalated again this many times: give up waiting.
const MAX_ROUNDS: usize = 5;

/// Headers of the agent's request the proxy never forwards: hop-by-hop
/// ones (RFC 9110 §7.6.1), and those the proxy itself writes and signs
/// (an agent's own would be a second signature or credential, or a body
/// framing the proxy did not produce).
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "expect",
    "host",
    "content-length",
    "content-type",
    "content-digest",
    "authorization",
    "dpop",
    "signature",
    "signature-input",
    "signature-key",
    "mandate-justification",
    "mcp-session-id",
];

/// Headers of an answer that are about the connection it came on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Problem codes of the authority that mean the mission is over for good.
const ENDED: &[&str] = &["mission_ended", "revoked"];

/// Runs the proxy until SIGINT or SIGTERM.
pub(crate) async fn run(a: ProxyArgs) -> anyhow::Result<()> {
    if !a.listen.ip().is_loopback() && !a.dangerous_allow_non_loopback {
        bail!(
            "refusing to listen on {}: it is not a loopback address, and anyone who can reach the proxy acts with the mission's authority, with no credential of their own; listen on 127.0.0.1, or pass --dangerous-allow-non-loopback if only the agent can reach that address",
            a.listen
        );
    }
    let saved = crate::commands::read_state(&a.state)?;
    let server = saved.server.trim_end_matches('/').to_owned();
    let authority = Authority::of_url(&server)?;
    // Its own calls go to the authority directly: an `HTTP_PROXY` in its
    // environment may well name the proxy itself.
    let client = Client::direct(&server)?;
    let mut agent = MissionAgent::load_with(&saved, client)
        .await
        .context("cannot load the mission")?;
    let before = agent.credential().to_owned();
    // A mission that has ended, or an authority out of reach, stops the
    // start: better than a proxy that refuses everything it is sent.
    let ended = |e: ClientError| match e.code() {
        Some(code) if ENDED.contains(&code) => anyhow::anyhow!(
            "mission {} has ended, nothing to sign for: {e}",
            saved.mission_id
        ),
        _ => anyhow::Error::from(e),
    };
    let limits = match agent.fresh_credential().await.map(|_| ()) {
        Ok(()) => agent.limits().await,
        Err(e) => Err(e),
    }
    .map_err(ended)
    .context("cannot start the proxy")?;
    if agent.credential() != before {
        crate::commands::write_state(&a.state, &agent.save()?, false)?;
    }
    let http = reqwest::Client::builder()
        // Answers stream for as long as the gateway sends them (an MCP
        // event stream may last the session): no overall timeout.
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .context("cannot build an HTTP client")?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let local = listener.local_addr()?;
    let mission = agent.mission_id().to_string();
    let proxy = Arc::new(Proxy {
        agent: tokio::sync::Mutex::new(agent),
        http,
        state_file: a.state,
        server: server.clone(),
        authority,
        local,
        any_host: a.dangerous_allow_non_loopback,
        wait: a.wait.map(Duration::from_secs),
        limits: tokio::sync::Mutex::new(Limits {
            table: limits,
            fetched: Instant::now(),
        }),
        ended: Mutex::new(None),
    });
    println!("mandate mission proxy listening on http://{local} for mission {mission}");
    println!("  base URL:   http://{local}/gw/ROUTE/… and http://{local}/mcp/SERVER");
    println!("  HTTP proxy: http_proxy=http://{local} for {server}/gw/… and {server}/mcp/…");
    println!(
        "  each request is signed with the mission key and sent to {server} only{}",
        match a.wait {
            Some(s) => format!("; calls that need approval wait up to {s} s"),
            None => String::new(),
        }
    );
    if !local.ip().is_loopback() {
        eprintln!(
            "WARNING: the proxy listens on {local}, which is not loopback. Anyone who can reach this address acts with mission {mission} — with its scope, its budget and its approvals — and needs no credential of their own. Make sure only the agent can reach it."
        );
    }
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&proxy));
    // On SIGINT or SIGTERM: no new requests; those in flight get a few
    // seconds, then the proxy stops anyway (an MCP event stream or a wait
    // for approval would otherwise hold it open for as long as they last).
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signalled = Arc::clone(&stopping);
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        crate::commands::terminated().await;
        signalled.notify_one();
    });
    let grace = async {
        stopping.notified().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = std::future::IntoFuture::into_future(serve) => served?,
        () = grace => eprintln!(
            "stopped with requests still in flight (an event stream, or a call waiting for approval)"
        ),
    }
    Ok(())
}

/// The proxy's running state.
struct Proxy {
    /// The mission; held only to sign (and refresh), never across a send.
    agent: tokio::sync::Mutex<MissionAgent>,
    /// Sends the signed requests: no redirects, no proxy, no overall timeout.
    http: reqwest::Client,
    state_file: PathBuf,
    /// The mission's authority, as its state file names it.
    server: String,
    authority: Authority,
    /// Where the proxy listens.
    local: SocketAddr,
    /// `--dangerous-allow-non-loopback`: any `Host` is taken.
    any_host: bool,
    wait: Option<Duration>,
    limits: tokio::sync::Mutex<Limits>,
    /// The authority's word that the mission is over, once it has said so.
    ended: Mutex<Option<Canned>>,
}

/// The routes' limits as last asked.
struct Limits {
    table: GatewayLimits,
    fetched: Instant,
}

/// An answer kept to be given again.
#[derive(Clone)]
struct Canned {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Canned {
    fn response(self) -> Response {
        let mut r = Response::new(Body::from(self.body));
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers;
        r
    }
}

/// A host and port, as an absolute-form target or `Host` names them, with
/// the scheme's default port left out.
#[derive(Debug, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn of_url(url: &str) -> anyhow::Result<Self> {
        let u = reqwest::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
        let host = u
            .host_str()
            .with_context(|| format!("`{url}` has no host"))?
            .to_ascii_lowercase();
        // `Url` leaves out the scheme's default port.
        Ok(Self {
            host,
            port: u.port(),
        })
    }

    /// `host[:port]` from a request; `default` is the port its scheme
    /// implies (left out, as `of_url` leaves it out).
    fn of_request(authority: &str, default: u16) -> Option<Self> {
        let a: axum::http::uri::Authority = authority.parse().ok()?;
        if authority.contains('@') {
            return None;
        }
        let port = a.port_u16().filter(|p| *p != default);
        Some(Self {
            host: a.host().to_ascii_lowercase(),
            port,
        })
    }
}

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Gateway,
    Mcp,
}

/// Why the proxy answered itself. The one place each refusal gets its
/// status and stable code.
#[derive(Debug)]
enum Refusal {
    Connect,
    CrossOrigin,
    ForeignHost,
    ForeignDestination(String),
    NotProxied,
    AmbiguousPath(String),
    UnknownRoute(String),
    UnknownMcpServer(String),
    TooLarge {
        what: String,
        limit: u64,
    },
    BadHeader(&'static str),
    AuthorityUnavailable(String),
    /// The authority refused the proxy's own call (a refresh, the limits).
    Authority {
        status: u16,
        code: String,
        detail: String,
    },
    ApprovalDenied {
        approval: String,
        reason: Option<String>,
    },
    ApprovalExpired(String),
    Internal(String),
}

impl Refusal {
    fn parts(&self) -> (StatusCode, &str, String) {
        match self {
            Self::Connect => (
                StatusCode::METHOD_NOT_ALLOWED,
                "connect_refused",
                "the mission proxy does not tunnel (CONNECT): it cannot sign inside TLS; send plain http:// requests to it, and it sends them on to the mission's authority (over https if that is the authority's scheme)".into(),
            ),
            Self::CrossOrigin => (
                StatusCode::FORBIDDEN,
                "cross_origin_refused",
                "the mission proxy does not serve web pages' requests (`Origin` or `Sec-Fetch-*` sent): a page would act with the mission".into(),
            ),
            Self::ForeignHost => (
                StatusCode::FORBIDDEN,
                "foreign_host",
                "the `Host` is neither the mission proxy's address nor the mission's authority; address the proxy by its IP address (or `localhost`)".into(),
            ),
            Self::ForeignDestination(to) => (
                StatusCode::FORBIDDEN,
                "foreign_destination",
                format!("the mission proxy sends requests only to the mission's authority, not to `{to}`"),
            ),
            Self::NotProxied => (
                StatusCode::FORBIDDEN,
                "not_proxied",
                "the mission proxy forwards only the gateway's requests (`/gw/{route}/…`) and the MCP gateway's (`/mcp/{server}`)".into(),
            ),
            Self::AmbiguousPath(why) => (StatusCode::BAD_REQUEST, "ambiguous_path", why.clone()),
            Self::UnknownRoute(name) => (
                StatusCode::NOT_FOUND,
                "unknown_route",
                format!("the mission's authority has no gateway route `{name}`"),
            ),
            Self::UnknownMcpServer(name) => (
                StatusCode::NOT_FOUND,
                "unknown_mcp_server",
                format!("the mission's authority has no MCP server `{name}`"),
            ),
            Self::TooLarge { what, limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {what} takes ({limit} bytes); the mission proxy did not sign or send it"),
            ),
            Self::BadHeader(name) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("the `{name}` header is not text"),
            ),
            Self::AuthorityUnavailable(why) => (
                StatusCode::BAD_GATEWAY,
                "authority_unavailable",
                format!("the mission proxy cannot reach the mission's authority: {why}"),
            ),
            Self::Authority { code, detail, .. } => (
                StatusCode::BAD_GATEWAY,
                code.as_str(),
                format!("the mission's authority refused the mission proxy: {detail}"),
            ),
            Self::ApprovalDenied { approval, reason } => (
                StatusCode::FORBIDDEN,
                "approval_denied",
                format!(
                    "approval request {approval} was denied{}",
                    reason
                        .as_deref()
                        .filter(|r| !r.is_empty())
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            ),
            Self::ApprovalExpired(approval) => (
                StatusCode::FORBIDDEN,
                "approval_expired",
                format!("approval request {approval} expired without a decision"),
            ),
            Self::Internal(why) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the mission proxy failed: {why}"),
            ),
        }
    }

    /// The refusal as the authority's own problem documents look.
    fn canned(&self) -> Canned {
        let (mut status, code, detail) = self.parts();
        if let Self::Authority { status: s, .. } = self
            && let Ok(s) = StatusCode::from_u16(*s)
            && (s.is_client_error() || s.is_server_error())
        {
            status = s;
        }
        let mut doc = json!({
            "type": format!("urn:mandate:problem:{code}"),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
            "code": code,
        });
        if let Self::ApprovalDenied { approval, .. } | Self::ApprovalExpired(approval) = self {
            doc["approval_id"] = json!(approval);
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, Self::Connect) {
            headers.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        Canned {
            status,
            headers,
            body: Bytes::from(doc.to_string()),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        self.canned().response()
    }
}

/// A request, checked and read, ready to be signed (again, after an
/// approval).
struct Outgoing {
    door: Door,
    method: String,
    url: String,
    body: Option<(String, Vec<u8>)>,
    justification: Option<String>,
    session: Option<String>,
    headers: HeaderMap,
}

async fn handle(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    match p.serve(req).await {
        Ok(r) => r,
        Err(refusal) => refusal.into_response(),
    }
}

impl Proxy {
    async fn serve(&self, req: Request) -> Result<Response, Refusal> {
        if let Some(ended) = self.ended() {
            return Ok(ended.response());
        }
        let out = self.check(req).await?;
        let resp = self.send(&out).await?;
        if resp.status() == StatusCode::FORBIDDEN
            && out.door == Door::Gateway
            && let Some(wait) = self.wait
        {
            return self.wait_and_retry(resp, &out, wait).await;
        }
        Ok(self.relay(resp).await)
    }

    fn ended(&self) -> Option<Canned> {
        self.ended.lock().ok().and_then(|e| e.clone())
    }

    /// Remembers that the mission is over: every later request gets
    /// `answer`, and nothing more is signed.
    fn latch(&self, answer: &Canned) {
        if let Ok(mut e) = self.ended.lock()
            && e.is_none()
        {
            *e = Some(answer.clone());
            let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            eprintln!(
                "the mission has ended ({}: {}); every request is now refused with {} and nothing more is signed; stop the proxy when done",
                v["code"].as_str().unwrap_or("refused"),
                v["detail"].as_str().unwrap_or_default(),
                answer.status.as_u16(),
            );
        }
    }

    /// Steps 2–4: what the request is for, and its body within the limit.
    async fn check(&self, req: Request) -> Result<Outgoing, Refusal> {
        let (parts, body) = req.into_parts();
        if parts.method == Method::CONNECT {
            return Err(Refusal::Connect);
        }
        let from_a_page = parts.headers.contains_key(header::ORIGIN)
            || parts
                .headers
                .keys()
                .any(|k| k.as_str().starts_with("sec-fetch-"));
        if from_a_page {
            return Err(Refusal::CrossOrigin);
        }
        self.destination(&parts.uri, &parts.headers)?;
        let path = parts.uri.path();
        let (door, name) = if let Some(rest) = path.strip_prefix("/gw/") {
            let name = rest.split('/').next().unwrap_or_default();
            (Door::Gateway, name)
        } else if let Some(name) = path.strip_prefix("/mcp/") {
            (Door::Mcp, name)
        } else {
            return Err(Refusal::NotProxied);
        };
        if name.is_empty() || (door == Door::Mcp && name.contains('/')) {
            return Err(Refusal::NotProxied);
        }
        let target = parts
            .uri
            .path_and_query()
            .map_or(path, axum::http::uri::PathAndQuery::as_str);
        let url = format!("{}{target}", self.server);
        // Signed and sent exactly as written, or not at all: a URL that a
        // parser rewrites (`..`, `%2e`, a backslash) would be signed as one
        // request and read as another.
        match reqwest::Url::parse(&url) {
            Ok(u) if u.as_str() == url => {}
            _ => {
                return Err(Refusal::AmbiguousPath(format!(
                    "`{target}` would not be sent as written (dot segments, a backslash, or characters a URL must percent-encode); the gateway takes each path in one spelling only"
                )));
            }
        }
        let limit = self.limit(door, name, None).await?;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let limit = match declared {
            Some(n) if n > limit => self.limit(door, name, Some(n)).await?,
            _ => limit,
        };
        let too_large = || Refusal::TooLarge {
            what: match door {
                Door::Gateway => format!("route `{name}`"),
                Door::Mcp => format!("MCP server `{name}`"),
            },
            limit,
        };
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let cap = usize::try_from(limit).unwrap_or(usize::MAX);
        let bytes = axum::body::to_bytes(body, cap)
            .await
            .map_err(|_| too_large())?;
        let text = |name: &'static str| -> Result<Option<String>, Refusal> {
            parts
                .headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map(str::to_owned)
                        .map_err(|_| Refusal::BadHeader(name))
                })
                .transpose()
        };
        let justification = text("mandate-justification")?;
        let session = match door {
            Door::Mcp => text("mcp-session-id")?,
            Door::Gateway => None,
        };
        let body = if bytes.is_empty() {
            None
        } else {
            let ctype =
                text("content-type")?.unwrap_or_else(|| "application/octet-stream".to_owned());
            Some((ctype, bytes.to_vec()))
        };
        Ok(Outgoing {
            door,
            method: parts.method.as_str().to_owned(),
            url,
            body,
            justification,
            session,
            headers: forwarded(&parts.headers),
        })
    }

    /// The request goes to the mission's authority or nowhere: an
    /// absolute-form target must name it (or the proxy); a `Host` must be
    /// the proxy's (an IP address or `localhost`: a web page that rebinds
    /// its own name to 127.0.0.1 sends its name) or the authority's.
    fn destination(&self, uri: &axum::http::Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        if let Some(a) = uri.authority() {
            let default = match uri.scheme_str() {
                Some("http") => 80,
                Some("https") => 443,
                _ => return Err(Refusal::ForeignDestination(a.to_string())),
            };
            let named = Authority::of_request(a.as_str(), default);
            if named.as_ref() == Some(&self.authority) || self.is_self(a.as_str(), default) {
                return Ok(());
            }
            return Err(Refusal::ForeignDestination(a.to_string()));
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .ok_or(Refusal::ForeignHost)?;
        if self.any_host
            || self.is_self(host, 80)
            || Authority::of_request(host, 80).as_ref() == Some(&self.authority)
        {
            Ok(())
        } else {
            Err(Refusal::ForeignHost)
        }
    }

    /// Whether `authority` names this proxy: an IP address or `localhost`,
    /// on the port it listens on.
    fn is_self(&self, authority: &str, default: u16) -> bool {
        let Ok(a) = authority.parse::<axum::http::uri::Authority>() else {
            return false;
        };
        let host = a.host().trim_start_matches('[').trim_end_matches(']');
        let literal =
            host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok();
        literal && a.port_u16().unwrap_or(default) == self.local.port()
    }

    /// The body limit of route (or MCP server) `name`: from the list last
    /// asked, or a fresh one if it is old, does not name it, or a body of
    /// `size` bytes would be refused by an older one.
    async fn limit(&self, door: Door, name: &str, size: Option<u64>) -> Result<u64, Refusal> {
        let lookup = |t: &GatewayLimits| match door {
            Door::Gateway => t
                .routes
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.max_body_bytes),
            Door::Mcp => t
                .mcp_servers
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.max_message_bytes),
        };
        let mut limits = self.limits.lock().await;
        let age = limits.fetched.elapsed();
        let known = lookup(&limits.table);
        let stale = match (known, size) {
            (None, _) => true,
            (Some(l), Some(n)) if n > l => age > LIMITS_RECHECK,
            _ => age > LIMITS_TTL,
        };
        if stale {
            let table = {
                let mut agent = self.agent.lock().await;
                let before = agent.credential().to_owned();
                let fetched = match agent.fresh_credential().await.map(|_| ()) {
                    Ok(()) => agent.limits().await,
                    Err(e) => Err(e),
                };
                self.keep_credential(&agent, &before);
                fetched
            };
            limits.table = table.map_err(|e| self.refusal(e))?;
            limits.fetched = Instant::now();
        }
        lookup(&limits.table).ok_or_else(|| match door {
            Door::Gateway => Refusal::UnknownRoute(name.to_owned()),
            Door::Mcp => Refusal::UnknownMcpServer(name.to_owned()),
        })
    }

    /// Writes a refreshed credential back to the state file (if it is
    /// still there: a mission ended with `mission end --state` deleted it).
    fn keep_credential(&self, agent: &MissionAgent, before: &str) {
        if agent.credential() == before || !self.state_file.exists() {
            return;
        }
        let written = agent
            .save()
            .map_err(anyhow::Error::from)
            .and_then(|text| crate::commands::write_state(&self.state_file, &text, false));
        if let Err(e) = written {
            eprintln!("warning: the refreshed credential was not saved: {e:#}");
        }
    }

    /// A failure of the proxy's own call to the authority; the authority
    /// saying the mission is over is remembered.
    fn refusal(&self, e: ClientError) -> Refusal {
        match e {
            ClientError::Problem {
                status,
                code,
                detail,
            } => {
                let r = Refusal::Authority {
                    status,
                    code,
                    detail,
                };
                if let Refusal::Authority { code, .. } = &r
                    && ENDED.contains(&code.as_str())
                {
                    self.latch(&r.canned());
                }
                r
            }
            ClientError::Http { source, .. } => Refusal::AuthorityUnavailable(source.to_string()),
            ClientError::Decode(m) => Refusal::AuthorityUnavailable(m),
            ClientError::ApprovalDenied { approval, reason } => {
                Refusal::ApprovalDenied { approval, reason }
            }
            ClientError::ApprovalExpired { approval } => Refusal::ApprovalExpired(approval),
            e @ (ClientError::Local(_) | ClientError::ApprovalPending { .. }) => {
                Refusal::Internal(e.to_string())
            }
        }
    }

    /// Step 5: signs `out` (refreshing the credential if needed) and sends
    /// it to the mission's authority.
    async fn send(&self, out: &Outgoing) -> Result<reqwest::Response, Refusal> {
        let extra: Vec<(&str, &str)> = out
            .session
            .as_deref()
            .map(|s| vec![("mcp-session-id", s)])
            .unwrap_or_default();
        let signed = {
            let mut agent = self.agent.lock().await;
            let before = agent.credential().to_owned();
            let signed = agent
                .signed_request_on(
                    &self.http,
                    &out.method,
                    &out.url,
                    out.body.as_ref().map(|(t, b)| (t.as_str(), b.clone())),
                    out.justification.as_deref(),
                    &extra,
                )
                .await;
            self.keep_credential(&agent, &before);
            signed
        };
        let rb = signed.map_err(|e| self.refusal(e))?;
        rb.headers(out.headers.clone())
            .send()
            .await
            .map_err(|e| Refusal::AuthorityUnavailable(e.to_string()))
    }

    /// Step 6: the answer, streamed. A `401` saying the mission is over is
    /// checked with the authority and then remembered.
    async fn relay(&self, resp: reqwest::Response) -> Response {
        if resp.status() != StatusCode::UNAUTHORIZED {
            return stream(resp);
        }
        let (canned, rest) = peek(resp).await;
        if rest.is_some() {
            return combine(canned, rest);
        }
        if problem_code(&canned).is_some_and(|c| ENDED.contains(&c)) {
            self.confirm_ended(&canned).await;
        }
        canned.response()
    }

    /// The gateway passes an upstream's 4xx answers on, so a `401` that
    /// says `revoked` may be an upstream's: the proxy stops only once the
    /// authority itself says so.
    async fn confirm_ended(&self, answer: &Canned) {
        let asked = {
            let agent = self.agent.lock().await;
            agent.mission().await
        };
        if let Err(ClientError::Problem { code, .. }) = asked
            && ENDED.contains(&code.as_str())
        {
            self.latch(answer);
        }
    }

    /// `--wait`: a `403 approval_required` waits for the person's decision
    /// and, approved, the call is signed and sent again. Still pending when
    /// the wait is over: the agent gets the `403` as it came, and may send
    /// the call again later.
    async fn wait_and_retry(
        &self,
        first: reqwest::Response,
        out: &Outgoing,
        wait: Duration,
    ) -> Result<Response, Refusal> {
        let deadline = Instant::now() + wait;
        let mut resp = first;
        for _ in 0..MAX_ROUNDS {
            let (canned, rest) = peek(resp).await;
            if rest.is_some() {
                return Ok(combine(canned, rest));
            }
            let Some((approval, url)) = escalation(&canned) else {
                return Ok(canned.response());
            };
            eprintln!(
                "waiting up to {} s for approval request {approval}{} (an approver runs `mandate approvals approve {approval}`)",
                deadline.saturating_duration_since(Instant::now()).as_secs(),
                url.map(|u| format!(" ({u})")).unwrap_or_default()
            );
            // A handle of its own: other requests go on meanwhile.
            let mut waiter = {
                let agent = self.agent.lock().await;
                agent.fork().map_err(|e| self.refusal(e))?
            };
            let view = waiter
                .wait_for_approval(
                    &approval,
                    deadline.saturating_duration_since(Instant::now()),
                )
                .await
                .map_err(|e| self.refusal(e))?;
            match view.status.as_str() {
                "approved" => {}
                "denied" => {
                    return Err(Refusal::ApprovalDenied {
                        approval,
                        reason: view.decision_reason,
                    });
                }
                "expired" => return Err(Refusal::ApprovalExpired(approval)),
                _ => return Ok(canned.response()),
            }
            resp = self.send(out).await?;
            if resp.status() != StatusCode::FORBIDDEN {
                return Ok(self.relay(resp).await);
            }
        }
        Ok(self.relay(resp).await)
    }
}

/// The agent's headers the gateway may see: all but those in
/// [`NOT_FORWARDED`] and those its `Connection` header names.
fn forwarded(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = connection_names(headers);
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if NOT_FORWARDED.contains(&n) || named.iter().any(|c| c == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The header names a `Connection` header lists (lower-case).
fn connection_names(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// An answer's headers without the hop-by-hop ones.
fn answer_headers(headers: &HeaderMap) -> HeaderMap {
    let named = connection_names(headers);
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || named.iter().any(|c| c == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The answer as it comes, streamed.
fn stream(resp: reqwest::Response) -> Response {
    let status = resp.status();
    let headers = answer_headers(resp.headers());
    let mut r = Response::new(Body::from_stream(resp.bytes_stream()));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// Reads up to [`PROBLEM_PEEK`] bytes of an answer. All of it: the answer,
/// and `None`. More: what was read, and the rest still to stream.
async fn peek(mut resp: reqwest::Response) -> (Canned, Option<reqwest::Response>) {
    let status = resp.status();
    let headers = answer_headers(resp.headers());
    let mut body = Vec::new();
    // An answer cut short (an error) reaches the agent cut short.
    while let Ok(Some(c)) = resp.chunk().await {
        body.extend_from_slice(&c);
        if body.len() > PROBLEM_PEEK {
            let canned = Canned {
                status,
                headers,
                body: Bytes::from(body),
            };
            return (canned, Some(resp));
        }
    }
    let canned = Canned {
        status,
        headers,
        body: Bytes::from(body),
    };
    (canned, None)
}

/// What [`peek`] read, followed by the rest of the answer.
fn combine(canned: Canned, rest: Option<reqwest::Response>) -> Response {
    let Some(rest) = rest else {
        return canned.response();
    };
    let head = futures_util::stream::iter([Ok::<Bytes, reqwest::Error>(canned.body)]);
    let mut r = Response::new(Body::from_stream(head.chain(rest.bytes_stream())));
    *r.status_mut() = canned.status;
    *r.headers_mut() = canned.headers;
    r
}

/// The `code` of a problem document.
fn problem_code(c: &Canned) -> Option<&'static str> {
    let is_problem = c
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/problem+json"));
    if !is_problem {
        return None;
    }
    let v: Value = serde_json::from_slice(&c.body).ok()?;
    let code = v.get("code")?.as_str()?;
    ENDED
        .iter()
        .chain(["approval_required"].iter())
        .find(|k| **k == code)
        .copied()
}

/// The approval request an escalation names: its id and URL.
fn escalation(c: &Canned) -> Option<(String, Option<String>)> {
    if problem_code(c) != Some("approval_required") {
        return None;
    }
    let v: Value = serde_json::from_slice(&c.body).ok()?;
    let id = v.get("approval_id")?.as_str()?.to_owned();
    let url = v
        .get("approval_url")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((id, url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderName;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_agents_signatures_credentials_and_hop_by_hop_headers_are_not_forwarded() {
        let h = headers(&[
            ("signature", "sig=:AAAA:"),
            ("signature-input", "sig=()"),
            ("signature-key", "sig=jwt;jwt=\"x\""),
            ("authorization", "Bearer x"),
            ("dpop", "x"),
            ("proxy-authorization", "Basic x"),
            ("connection", "x-private, keep-alive"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("accept", "application/json"),
            ("accept", "text/plain"),
            ("x-request-id", "42"),
        ]);
        let out = forwarded(&h);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "x-request-id"]);
        assert_eq!(out.get_all("accept").iter().count(), 2);
    }

    #[test]
    fn authorities_compare_with_the_default_port_left_out() {
        let mission = Authority::of_url("http://127.0.0.1:7878").unwrap();
        assert_eq!(
            Authority::of_request("127.0.0.1:7878", 80).as_ref(),
            Some(&mission)
        );
        assert_ne!(
            Authority::of_request("127.0.0.1:7879", 80).as_ref(),
            Some(&mission)
        );
        let tls = Authority::of_url("https://Mandate.Example").unwrap();
        assert_eq!(
            Authority::of_request("mandate.example", 80).as_ref(),
            Some(&tls)
        );
        assert_eq!(
            Authority::of_request("mandate.example:443", 443).as_ref(),
            Some(&tls)
        );
        assert_ne!(
            Authority::of_request("mandate.example.evil", 80).as_ref(),
            Some(&tls)
        );
        assert_eq!(Authority::of_request("user@mandate.example", 80), None);
    }
}
