//! Strict framing: the first layer every request crosses, in front of
//! every route and fallback (`api::router`).
//!
//! - A request whose head carried both `Content-Length` and
//!   `Transfer-Encoding` is refused (`ambiguous_framing`). hyper drops the
//!   `Content-Length` field of such a request, so the connection's scan
//!   tells us ([`super::ConnectionFacts`]); a `Content-Length` still here
//!   beside a `Transfer-Encoding` is refused too.
//! - `Transfer-Encoding` must be exactly one field, `chunked`
//!   (`unsupported_transfer_encoding`). hyper itself refuses a coding list
//!   that does not end in `chunked`, and `Transfer-Encoding` in HTTP/1.0.
//! - An HTTP/1.1 request carries exactly one `Host` (`invalid_host`): two
//!   would name two authorities.
//! - The request target is a path (origin-form), or an absolute `http` /
//!   `https` URL whose authority is the `Host` header's (RFC 9112 §3.2.2
//!   asks servers to accept absolute-form). Any other authority is refused
//!   (`foreign_authority`): the signature covers the `Host` the client
//!   sent, and the request would otherwise name two. An accepted
//!   absolute-form target is rewritten to its path and query, so no route
//!   sees the difference. Authority-form (`CONNECT host:port`) and other
//!   schemes are refused (`invalid_request_target`).
//!
//! Every refusal closes the connection (`Connection: close`): the body
//! that follows is never read, so bytes framed one way cannot become the
//! next request.

use axum::extract::Request;
use axum::http::uri::{PathAndQuery, Scheme, Uri};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::{ConnectionFacts, EdgeRefusal};
use crate::problem::Problem;

/// The middleware (`axum::middleware::from_fn`).
pub(crate) async fn strict_framing(mut req: Request, next: Next) -> Response {
    match check(&mut req) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::debug!(%refusal, "request refused at the edge");
            let mut resp = Problem::from(refusal).into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

fn check(req: &mut Request) -> Result<(), EdgeRefusal> {
    let headers = req.headers();
    let te: Vec<&HeaderValue> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    let scanned = req
        .extensions()
        .get::<ConnectionFacts>()
        .is_some_and(|f| f.ambiguous_framing);
    if scanned || (!te.is_empty() && headers.contains_key(header::CONTENT_LENGTH)) {
        return Err(EdgeRefusal::AmbiguousFraming);
    }
    match te.as_slice() {
        [] => {}
        [one] if one.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => {}
        _ => return Err(EdgeRefusal::UnsupportedTransferEncoding),
    }
    // RFC 9112 §3.2: exactly one `Host` in HTTP/1.1 (an HTTP/1.0 client may
    // send none).
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && req.version() != Version::HTTP_10) {
        return Err(EdgeRefusal::InvalidHost);
    }
    // A host is `host[:port]`: userinfo (`user@host`) names no host.
    if headers
        .get(header::HOST)
        .is_some_and(|h| h.as_bytes().contains(&b'@'))
    {
        return Err(EdgeRefusal::InvalidHost);
    }
    origin_form(req)
}

/// Checks the request target and leaves it in origin-form.
fn origin_form(req: &mut Request) -> Result<(), EdgeRefusal> {
    let uri = req.uri();
    let Some(authority) = uri.authority() else {
        // Origin-form (`/path?query`) or asterisk-form (`*`).
        return Ok(());
    };
    let scheme = uri.scheme().ok_or(EdgeRefusal::InvalidRequestTarget)?;
    if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
        return Err(EdgeRefusal::InvalidRequestTarget);
    }
    // Userinfo in a target is deprecated (RFC 9110 §4.2.4) and names a
    // credential, not an authority.
    if authority.as_str().contains('@') {
        return Err(EdgeRefusal::InvalidRequestTarget);
    }
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.as_bytes().trim_ascii())
        .ok_or(EdgeRefusal::ForeignAuthority)?;
    // INVARIANT: a request that goes on names one authority, the one its
    // signature covers.
    if !authority.as_str().as_bytes().eq_ignore_ascii_case(host) {
        return Err(EdgeRefusal::ForeignAuthority);
    }
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{EdgeRefusal, check};
    use axum::body::Body;
    use axum::extract::Request;

    fn req(target: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn absolute_form_must_name_the_host() {
        let mut r = req(
            "http://gw.example:7878/gw/billing/x?y=1",
            &[("host", "GW.example:7878")],
        );
        assert_eq!(check(&mut r), Ok(()));
        assert_eq!(r.uri().to_string(), "/gw/billing/x?y=1");
        assert!(r.uri().authority().is_none());
        for (target, host) in [
            ("http://other.example/gw/billing/x", "gw.example"),
            ("http://gw.example:80/gw/billing/x", "gw.example"),
        ] {
            assert_eq!(
                check(&mut req(target, &[("host", host)])),
                Err(EdgeRefusal::ForeignAuthority),
                "{target}"
            );
        }
        assert_eq!(
            check(&mut req("http://gw.example/x", &[])),
            Err(EdgeRefusal::InvalidHost)
        );
        assert_eq!(
            check(&mut req("/x", &[("host", "a"), ("host", "a")])),
            Err(EdgeRefusal::InvalidHost)
        );
        assert_eq!(
            check(&mut req("ftp://gw.example/x", &[("host", "gw.example")])),
            Err(EdgeRefusal::InvalidRequestTarget)
        );
        // Userinfo names a credential, not a host: in the target or `Host`.
        assert_eq!(
            check(&mut req(
                "http://gw.example@other.example/x",
                &[("host", "gw.example")]
            )),
            Err(EdgeRefusal::InvalidRequestTarget)
        );
        assert_eq!(
            check(&mut req(
                "http://a@evil.example/healthz",
                &[("host", "a@evil.example")]
            )),
            Err(EdgeRefusal::InvalidHost)
        );
        assert_eq!(
            check(&mut req("/healthz", &[("host", "a@gw.example")])),
            Err(EdgeRefusal::InvalidHost)
        );
    }

    #[test]
    fn transfer_encoding_is_chunked_or_nothing() {
        assert_eq!(
            check(&mut req(
                "/x",
                &[("host", "a"), ("transfer-encoding", "Chunked")]
            )),
            Ok(())
        );
        for te in [
            &["gzip, chunked"][..],
            &["chunked", "chunked"],
            &["identity"],
        ] {
            let h: Vec<_> = te.iter().map(|v| ("transfer-encoding", *v)).collect();
            assert_eq!(
                check(&mut req("/x", &h)),
                Err(EdgeRefusal::UnsupportedTransferEncoding),
                "{te:?}"
            );
        }
        assert_eq!(
            check(&mut req(
                "/x",
                &[
                    ("host", "a"),
                    ("transfer-encoding", "chunked"),
                    ("content-length", "3")
                ]
            )),
            Err(EdgeRefusal::AmbiguousFraming)
        );
    }
}
