//! The HTTP edge: accepting connections and holding them to time and
//! number limits, before any route runs (ADR 0013).
//!
//! - A new connection takes a slot: at most `max_connections_per_ip` per
//!   client address and `max_connections` in all. One over a cap is
//!   answered `503` problem+json at once (a single non-blocking write) and
//!   closed; refusals are counted in a log line.
//! - Each connection is served by hyper's HTTP/1 server on a socket that
//!   keeps the header-read and idle timeouts ([`conn`]), scans for heads
//!   with two framings ([`scan`]), and rewrites hyper's own empty error
//!   answers as problem+json.
//! - An answer sent before its request's body was read to the end (a
//!   refusal that never reads it) says `Connection: close`: hyper will not
//!   read on past an unread body, and a client must know not to send its
//!   next request there.
//! - On shutdown: stop accepting; close idle and half-read connections at
//!   once; let requests in flight finish (no new request on their
//!   connections); at the deadline, close whatever is left.

mod conn;
pub(crate) mod framing;
mod scan;
mod slots;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, StatusCode, header};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::config::ServerConfig;
use crate::problem::Problem;
use conn::{Activity, Answer, Asked, Timeouts, Watched};
use slots::{Cap, Slot, Slots};

/// What the edge refuses, before or instead of a route. Mapped to status
/// and code in `problem.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EdgeRefusal {
    #[error("the request carries both `Content-Length` and `Transfer-Encoding`")]
    AmbiguousFraming,
    #[error("`Transfer-Encoding` must be exactly `chunked`")]
    UnsupportedTransferEncoding,
    #[error("the request target names another authority than the `Host` header")]
    ForeignAuthority,
    #[error(
        "the request target must be a path, or an http(s) URL naming the `Host` header's authority"
    )]
    InvalidRequestTarget,
    #[error("an HTTP/1.1 request carries exactly one `Host` header")]
    InvalidHost,
    #[error("the request is not valid HTTP/1.1")]
    Malformed,
    #[error("the request's header section is too large")]
    HeadTooLarge,
    #[error("the request target is too long")]
    UriTooLong,
    #[error("too many connections from this address; retry later")]
    TooManyFromAddress,
    #[error("too many connections; retry later")]
    TooManyConnections,
}

/// What the edge knows about a request's connection, for the framing
/// checks (a request extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionFacts {
    /// A head with both `Content-Length` and `Transfer-Encoding` crossed
    /// this connection (hyper drops one of the two before we see it).
    pub ambiguous_framing: bool,
    /// How long the request's body may take to arrive once it is being
    /// served (the header-read timeout again: the client's part of a
    /// request is its head and its body). The edge's own timeouts stop
    /// while a request is served, so whoever reads a body keeps this one.
    pub body_read_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains
/// within `config.shutdown_deadline`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    raise_fd_limit(config.max_connections);
    let slots = Slots::new(config.max_connections, config.max_connections_per_ip);
    let timeouts = Timeouts {
        header_read: config.header_read_timeout,
        idle: config.idle_timeout,
    };
    let (stop, stopping) = watch::channel(());
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        accept_failed(&e).await;
                        continue;
                    }
                };
                match slots.take(peer.ip()) {
                    Ok(slot) => {
                        // No Nagle: a streamed answer (the MCP gateway's
                        // event streams) would otherwise wait on the
                        // client's delayed ACK, ~40 ms a message.
                        if let Err(e) = tcp.set_nodelay(true) {
                            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                        }
                        tasks.spawn(connection(tcp, slot, router.clone(), timeouts, stopping.clone()));
                    }
                    Err(cap) => refuse(&tcp, cap),
                }
            }
        }
    }
    drop(listener);
    drop(stop);
    let open = slots.open();
    tracing::info!(
        open,
        deadline_secs = config.shutdown_deadline.as_secs(),
        "shutting down: closing idle connections, letting requests in flight finish"
    );
    let drained = tokio::time::timeout(config.shutdown_deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "closing the connections still busy at the shutdown deadline"
        );
        tasks.shutdown().await;
    }
    Ok(())
}

/// One connection, from accept to close.
async fn connection(
    tcp: TcpStream,
    slot: Slot,
    router: Router,
    timeouts: Timeouts,
    mut stopping: watch::Receiver<()>,
) {
    let _slot = slot;
    let activity = Arc::new(Activity::new(Instant::now()));
    let io = TokioIo::new(Watched::new(tcp, Arc::clone(&activity), timeouts));
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_flight = activity.begin();
            // A request with a body: whether it was read to its end.
            let mut read = None;
            let mut req = req.map(|body| {
                if body.is_end_stream() {
                    axum::body::Body::new(body)
                } else {
                    let flag = Arc::new(AtomicBool::new(false));
                    read = Some(Arc::clone(&flag));
                    axum::body::Body::new(Asked { body, read: flag })
                }
            });
            req.extensions_mut().insert(ConnectionFacts {
                ambiguous_framing: activity.ambiguous_framing(),
                body_read_timeout: timeouts.header_read,
            });
            let call = router.clone().oneshot(req);
            async move {
                let mut response = call.await.unwrap_or_else(|never| match never {});
                if read.is_some_and(|r| !r.load(Ordering::Relaxed)) {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response.map(|body| Answer {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    // hyper's own header-read timeout stays off: it would also be the idle
    // timeout (see `conn`), and the edge keeps both.
    let conn = http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection closed");
                }
                return;
            }
            _ = stopping.changed(), if !draining => {
                draining = true;
                if !activity.busy() {
                    // Idle, or a head not yet complete: nothing to finish.
                    return;
                }
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Answers a connection over a cap with `503` and closes it. One
/// non-blocking write, before the request is read: a client that has not
/// sent it yet gets the answer; one whose request is already in flight may
/// see a reset instead (the kernel resets a socket closed with unread
/// data).
fn refuse(tcp: &TcpStream, cap: Cap) {
    let refusal = match cap {
        Cap::PerIp => EdgeRefusal::TooManyFromAddress,
        Cap::Total => EdgeRefusal::TooManyConnections,
    };
    let _ = tcp.try_write(&raw_problem(refusal, None));
}

/// A complete `HTTP/1.1` answer carrying `refusal` as problem+json, for
/// the places where no service runs; `date` is a `Date` field line to
/// keep, if any.
fn raw_problem(refusal: EdgeRefusal, date: Option<&[u8]>) -> Vec<u8> {
    let problem = Problem::from(refusal);
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        out.extend_from_slice(b"retry-after: 1\r\n");
    }
    if let Some(d) = date {
        out.extend_from_slice(d);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

/// A failed `accept`. Errors of the one connection are skipped; others
/// (out of file descriptors, say) would fail again at once, so wait a
/// little before the next try.
async fn accept_failed(e: &io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Raises the soft limit on open files (up to the hard limit) so that the
/// connection cap, not the descriptor limit, is what a flood runs into;
/// warns when the hard limit is too low for the cap.
fn raise_fd_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // A connection, perhaps one upstream for it, and room for the rest
    // (the database, MCP servers' pipes, the listener).
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(256);
    let limit = getrlimit(Resource::Nofile);
    let Some(current) = limit.current.filter(|&c| c < wanted) else {
        return;
    };
    let target = limit.maximum.map_or(wanted, |max| max.min(wanted));
    let now = if target > current
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            },
        )
        .is_ok()
    {
        target
    } else {
        current
    };
    if now < wanted {
        tracing::warn!(
            open_files = now,
            max_connections,
            "the open-file limit is low for server.max_connections: connections may fail before the cap"
        );
    }
}
