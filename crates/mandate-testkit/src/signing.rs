//! Signing requests for the gateways by hand, as an independent agent
//! would (tests and benchmarks that prepare requests before the clock
//! starts, or send them concurrently).

use mandate_core::MissionKey;
use mandate_core::httpsig::{RequestParts, SignSpec, content_digest, signature_key_header};

/// The headers of a request to `http://{authority}{path}`, signed with
/// `key` (RFC 9421) and carrying `credential` in `Signature-Key`: a body's
/// `Content-Type` and `Content-Digest`, then `extra`, all covered, then
/// `Signature-Input` and `Signature`, created now.
///
/// # Panics
/// If the credential or a header cannot be encoded (test input only), or
/// the clock is before 1970.
#[must_use]
pub fn signed_headers(
    key: &MissionKey,
    credential: &str,
    method: &str,
    authority: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut h = Vec::new();
    let mut components = vec!["@method", "@authority", "@path", "signature-key"];
    if let Some((ctype, bytes)) = body {
        h.push(("content-type".to_owned(), ctype.to_owned()));
        h.push(("content-digest".to_owned(), content_digest(bytes)));
        components.extend(["content-type", "content-digest"]);
    }
    h.push((
        "signature-key".to_owned(),
        signature_key_header("sig", credential).expect("signature-key"),
    ));
    for (k, v) in extra {
        h.push(((*k).to_owned(), (*v).to_owned()));
        components.push(k);
    }
    let (input, signature) = key
        .sign_request(
            &RequestParts {
                method,
                scheme: "http",
                authority,
                path,
                query: None,
                headers: &h,
            },
            &SignSpec {
                label: "sig",
                components: &components,
                created: now_secs(),
                expires: None,
                keyid: None,
                nonce: None,
            },
        )
        .expect("sign");
    h.push(("signature-input".to_owned(), input));
    h.push(("signature".to_owned(), signature));
    h
}

/// Now, in Unix seconds.
#[must_use]
fn now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("time")
}
