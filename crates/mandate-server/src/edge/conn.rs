//! One connection as the edge watches it: where it is between requests,
//! its timeouts, the framing scan, and hyper's own error answers.
//!
//! hyper's `header_read_timeout` starts when hyper begins waiting for a
//! head (at the accept, and again as soon as a response is written), so it
//! is also the keep-alive idle timeout and cannot be set apart from it.
//! The edge keeps its own clock instead, on the bytes hyper reads:
//!
//! ```text
//!  accept ──▶ Head ──(service called)──▶ Busy ──(response flushed)──▶ Idle
//!               ▲                                                     │
//!               └────────────────(first byte of the next head)────────┘
//! ```
//!
//! - `Head`: the head must be complete within the header-read timeout,
//!   counted from its first byte (from the accept, for a new connection).
//! - `Idle`: the next request must start within the idle timeout.
//! - `Busy`: no timeout at the edge. A response being streamed (the MCP
//!   gateway's event streams) is never cut; request bodies have their own
//!   limits where they are read.
//!
//! A timeout closes the connection without an answer, as hyper's own
//! timeout would.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::EdgeRefusal;
use super::scan::HeadScanner;

/// Where a connection is between requests (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head {
        since: Instant,
    },
    Idle {
        since: Instant,
    },
    /// `requests` handled and not yet answered in full; at 0, the last
    /// answer is written and waits for its flush.
    Busy {
        requests: usize,
    },
}

/// What the connection's reader, its service and its task share.
#[derive(Debug)]
pub(super) struct Activity {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    ambiguous_framing: bool,
}

impl Activity {
    /// A connection accepted at `now`: its first head is due within the
    /// header-read timeout.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new(State {
                phase: Phase::Head { since: now },
                ambiguous_framing: false,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether a request is being handled or answered (shutdown lets those
    /// finish, and closes the others at once).
    pub(super) fn busy(&self) -> bool {
        self.with(|s| matches!(s.phase, Phase::Busy { .. }))
    }

    /// Whether a head with both `Content-Length` and `Transfer-Encoding`
    /// has crossed this connection.
    pub(super) fn ambiguous_framing(&self) -> bool {
        self.with(|s| s.ambiguous_framing)
    }

    /// hyper called the service: a request head was read in full.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.with(|s| {
            s.phase = match s.phase {
                Phase::Busy { requests } => Phase::Busy {
                    requests: requests.saturating_add(1),
                },
                Phase::Head { .. } | Phase::Idle { .. } => Phase::Busy { requests: 1 },
            };
        });
        InFlight(Arc::clone(self))
    }

    fn end(&self) {
        self.with(|s| {
            if let Phase::Busy { requests } = &mut s.phase {
                *requests = requests.saturating_sub(1);
            }
        });
    }

    fn bytes_read(&self, now: Instant) {
        self.with(|s| {
            if let Phase::Idle { .. } = s.phase {
                s.phase = Phase::Head { since: now };
            }
        });
    }

    /// The last answer is out. With the next request's head already begun
    /// (pipelined behind it, read before it was served), that head is due
    /// within the header-read timeout from now, not the idle one.
    fn flushed(&self, now: Instant, head_begun: bool) {
        self.with(|s| {
            if s.phase == (Phase::Busy { requests: 0 }) {
                s.phase = if head_begun {
                    Phase::Head { since: now }
                } else {
                    Phase::Idle { since: now }
                };
            }
        });
    }

    fn deadline(&self, t: &Timeouts) -> Option<(Instant, &'static str)> {
        self.with(|s| match s.phase {
            Phase::Head { since } => Some((since + t.header_read, "header read")),
            Phase::Idle { since } => Some((since + t.idle, "idle")),
            Phase::Busy { .. } => None,
        })
    }
}

/// A request being handled; dropped with its response body (when hyper
/// has polled it to the end, or the connection is gone).
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The response body, holding the request's [`InFlight`] until hyper is
/// done with it.
#[derive(Debug)]
pub(super) struct Answer<B> {
    pub(super) body: B,
    pub(super) _in_flight: InFlight,
}

impl<B: http_body::Body + Unpin> http_body::Body for Answer<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body that says whether it was read to its end. An answer
/// sent before that (a refusal that never reads the body) carries
/// `Connection: close`: hyper closes such a connection once it has
/// written the answer, unless the rest of the body happens to have
/// arrived already, and a client that was not told so may send its next
/// request on a connection the server is closing.
#[derive(Debug)]
pub(super) struct Asked<B> {
    pub(super) body: B,
    pub(super) read: Arc<AtomicBool>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Asked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.body.is_end_stream(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => false,
        };
        if ended {
            this.read.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) header_read: Duration,
    pub(super) idle: Duration,
}

/// The socket as hyper sees it: reads under the phase's deadline and
/// through the framing scan; hyper's own error answers rewritten.
#[derive(Debug)]
pub(super) struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    sleep: Pin<Box<Sleep>>,
    scanner: HeadScanner,
    /// hyper's own answer to a request it could not parse, as we send it.
    own_answer: Option<Rewrite>,
}

#[derive(Debug)]
struct Rewrite {
    bytes: Vec<u8>,
    written: usize,
}

impl Watched {
    pub(super) fn new(tcp: TcpStream, activity: Arc<Activity>, timeouts: Timeouts) -> Self {
        Self {
            tcp,
            activity,
            timeouts,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            scanner: HeadScanner::new(),
            own_answer: None,
        }
    }

    /// Arms the phase's deadline on `cx` (the connection's task wakes when
    /// it passes, and the next read fails); an error once it has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some((deadline, which)) = self.activity.deadline(&self.timeouts) else {
            return Ok(());
        };
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{which} timeout"),
            ));
        }
        Ok(())
    }

    /// The rewrite of hyper's error answer, if `first` starts one.
    ///
    /// hyper answers a head it cannot parse itself, before any service
    /// runs, with a status and an empty body (and offers no hook for it).
    /// Every answer to a request the service saw is written while the
    /// connection is `Busy` (until its flush), so a status line written
    /// outside `Busy` is one of hyper's own.
    fn take_own_answer(&mut self, first: &[u8]) {
        if self.own_answer.is_some() || self.activity.busy() || !first.starts_with(b"HTTP/1.") {
            return;
        }
        let status = first
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        let date = first
            .split(|&b| b == b'\n')
            .find(|l| l.get(..5).is_some_and(|p| p.eq_ignore_ascii_case(b"date:")))
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let refusal = match status {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => EdgeRefusal::HeadTooLarge,
            StatusCode::URI_TOO_LONG => EdgeRefusal::UriTooLong,
            _ => EdgeRefusal::Malformed,
        };
        self.own_answer = Some(Rewrite {
            bytes: super::raw_problem(refusal, date),
            written: 0,
        });
    }

    /// Writes the rewritten answer out, if there is one: `Ready(true)` once
    /// all of it is out (hyper's bytes are then dropped, not sent).
    fn poll_own_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(r) = &mut self.own_answer else {
            return Poll::Ready(Ok(false));
        };
        while let Some(rest) = r.bytes.get(r.written..).filter(|b| !b.is_empty()) {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            r.written += n;
        }
        Poll::Ready(Ok(true))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_deadline(cx)?;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
        if let Some(got) = buf.filled().get(before..).filter(|b| !b.is_empty()) {
            this.activity.bytes_read(Instant::now());
            // INVARIANT: hyper parses only bytes that went through here,
            // so a flagged head is known before its request is served.
            if !this.scanner.flagged() {
                this.scanner.feed(got);
                if this.scanner.flagged() {
                    this.activity.with(|s| s.ambiguous_framing = true);
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.take_own_answer(buf);
        if ready!(this.poll_own_answer(cx))? {
            Poll::Ready(Ok(buf.len()))
        } else {
            Pin::new(&mut this.tcp).poll_write(cx, buf)
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.take_own_answer(first);
        }
        if ready!(this.poll_own_answer(cx))? {
            Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
        } else {
            Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.tcp).poll_flush(cx))?;
        // hyper flushes after it has written everything it queued: an
        // answer whose body is done is now out in full.
        this.activity
            .flushed(Instant::now(), this.scanner.in_head());
        // hyper may not read again before the client sends something: the
        // idle deadline must wake the connection by itself. (A deadline
        // already passed fails the next read.)
        let _ = this.poll_deadline(cx);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
