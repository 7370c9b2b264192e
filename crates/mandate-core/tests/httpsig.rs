//! RFC 9421: the Appendix B.2.6 vector (the one that uses Ed25519), and the
//! verifier's behaviour on parameter order, extra parameters, tampering and
//! unsupported components.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use mandate_core::httpsig::{
    HttpSigError, RequestParts, SignSpec, check_content_digest, content_digest, parse_signature,
    sign_ed25519, signature_base, verify_ed25519,
};

/// RFC 9421 Appendix B.1.4, `test-key-ed25519`.
fn rfc_key() -> (SigningKey, VerifyingKey) {
    let (d, x) = common::rfc_key_bytes();
    (
        SigningKey::from_bytes(&d),
        VerifyingKey::from_bytes(&x).unwrap(),
    )
}

/// RFC 9421 Appendix B.2: the test request.
fn headers() -> Vec<(String, String)> {
    [
        ("Host", "example.com"),
        ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
        ("Content-Type", "application/json"),
        (
            "Content-Digest",
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
        ),
        ("Content-Length", "18"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

const BODY: &[u8] = b"{\"hello\": \"world\"}";

fn request(headers: &[(String, String)]) -> RequestParts<'_> {
    RequestParts {
        method: "POST",
        scheme: "https",
        authority: "example.com",
        path: "/foo",
        query: Some("param=Value&Pet=dog"),
        headers,
    }
}

const B26_INPUT: &str = "sig-b26=(\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\"";
const B26_SIGNATURE: &str = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";

#[test]
fn appendix_b_2_6_verifies_and_its_base_is_exact() {
    let (_, pk) = rfc_key();
    let h = headers();
    let req = request(&h);
    let sig = parse_signature(B26_INPUT, B26_SIGNATURE, "sig-b26").unwrap();
    let base = String::from_utf8(signature_base(&req, &sig).unwrap()).unwrap();
    assert_eq!(
        base,
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\
         \"@method\": POST\n\
         \"@path\": /foo\n\
         \"@authority\": example.com\n\
         \"content-type\": application/json\n\
         \"content-length\": 18\n\
         \"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\""
    );
    verify_ed25519(&req, &sig, &pk).unwrap();
    // The body's digest in the vector is right, too.
    check_content_digest(&h[3].1, BODY).unwrap();
}

#[test]
fn ed25519_is_deterministic_so_signing_reproduces_the_vector() {
    use ed25519_dalek::Signer as _;
    let (sk, _) = rfc_key();
    let h = headers();
    let req = request(&h);
    let sig = parse_signature(B26_INPUT, B26_SIGNATURE, "sig-b26").unwrap();
    let base = signature_base(&req, &sig).unwrap();
    assert_eq!(sk.sign(&base).to_bytes().as_slice(), sig.signature());
}

#[test]
fn parameters_in_any_order_and_extra_ones_verify_and_are_signed() {
    let (sk, pk) = rfc_key();
    let h = headers();
    let req = request(&h);
    // Reordered and extra parameters: the base follows the input exactly.
    let input = "s=(\"@method\" \"@authority\" \"@path\" \"@query\");tag=\"x\";keyid=\"k\";created=1618884473;foo=?1";
    let parsed = parse_signature(input, "s=:AA==:", "s").unwrap();
    let base = signature_base(&req, &parsed).unwrap();
    let text = String::from_utf8(base.clone()).unwrap();
    assert!(text.ends_with("\"@signature-params\": (\"@method\" \"@authority\" \"@path\" \"@query\");tag=\"x\";keyid=\"k\";created=1618884473;foo"), "{text}");
    assert!(
        text.contains("\"@query\": ?param=Value&Pet=dog\n"),
        "{text}"
    );
    use ed25519_dalek::Signer as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(sk.sign(&base).to_bytes());
    let signed = parse_signature(input, &format!("s=:{b64}:"), "s").unwrap();
    verify_ed25519(&req, &signed, &pk).unwrap();
    // Moving a parameter changes what was signed.
    let moved = "s=(\"@method\" \"@authority\" \"@path\" \"@query\");keyid=\"k\";tag=\"x\";created=1618884473;foo=?1";
    let moved = parse_signature(moved, &format!("s=:{b64}:"), "s").unwrap();
    assert_eq!(
        verify_ed25519(&req, &moved, &pk),
        Err(HttpSigError::BadSignature)
    );
}

#[test]
fn what_we_sign_we_verify_and_any_change_breaks_it() {
    let (sk, pk) = rfc_key();
    let mut h = headers();
    h[3].1 = content_digest(BODY);
    let req = request(&h);
    let spec = SignSpec {
        label: "sig",
        components: &[
            "@method",
            "@authority",
            "@path",
            "@query",
            "content-digest",
            "content-type",
        ],
        created: 1_618_884_473,
        expires: None,
        keyid: None,
        nonce: None,
    };
    let (input, signature) = sign_ed25519(&req, &spec, &sk).unwrap();
    let parsed = parse_signature(&input, &signature, "sig").unwrap();
    verify_ed25519(&req, &parsed, &pk).unwrap();
    check_content_digest(&h[3].1, BODY).unwrap();
    assert!(check_content_digest(&h[3].1, b"{\"hello\": \"World\"}").is_err());
    // Another path, method, authority or query: refused.
    for (m, a, p, q) in [
        ("GET", "example.com", "/foo", Some("param=Value&Pet=dog")),
        ("POST", "evil.example", "/foo", Some("param=Value&Pet=dog")),
        (
            "POST",
            "example.com",
            "/foo/../bar",
            Some("param=Value&Pet=dog"),
        ),
        ("POST", "example.com", "/foo", Some("param=Value&Pet=cat")),
        ("POST", "example.com", "/foo", None),
    ] {
        let other = RequestParts {
            method: m,
            authority: a,
            path: p,
            query: q,
            ..request(&h)
        };
        assert_eq!(
            verify_ed25519(&other, &parsed, &pk),
            Err(HttpSigError::BadSignature)
        );
    }
    // A covered header that went missing is named.
    let fewer: Vec<_> = h
        .iter()
        .filter(|(k, _)| k != "Content-Type")
        .cloned()
        .collect();
    assert_eq!(
        verify_ed25519(&request(&fewer), &parsed, &pk),
        Err(HttpSigError::MissingField("content-type".into()))
    );
}

#[test]
fn components_we_cannot_rebuild_are_refused_not_guessed() {
    let h = headers();
    let req = request(&h);
    for input in [
        "s=(\"@query-param\";name=\"Pet\");created=1",
        "s=(\"@status\");created=1",
        "s=(\"content-type\";bs);created=1",
        "s=(\"content-type\";req);created=1",
        "s=(\"Content-Type\");created=1",
    ] {
        let parsed = parse_signature(input, "s=:AA==:", "s").unwrap();
        assert!(
            matches!(
                signature_base(&req, &parsed),
                Err(HttpSigError::Unsupported(_))
            ),
            "{input}"
        );
    }
    let dup = parse_signature("s=(\"@method\" \"@method\");created=1", "s=:AA==:", "s").unwrap();
    assert!(matches!(
        signature_base(&req, &dup),
        Err(HttpSigError::Duplicate(_))
    ));
    assert!(matches!(
        parse_signature("s=(\"@method\");created=1", "t=:AA==:", "s"),
        Err(HttpSigError::UnknownLabel(_))
    ));
    assert!(parse_signature("s=(@method)", "s=:AA==:", "s").is_err());
}
