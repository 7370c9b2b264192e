//! Interoperability of Mandate's RFC 9421 Ed25519 signatures with an
//! independent implementation: Cloudflare's `web-bot-auth` crate.
//!
//! `mandate_core::httpsig` builds its signature base itself, so a test that
//! only signs and verifies with Mandate's own code cannot catch a mistake
//! made the same way on both sides (a wrong component line, a
//! `@signature-params` line serialized differently from the header, a
//! parameter lost). Here each side checks the other, with the same Ed25519
//! key (RFC 9421 Appendix B.1.4, `test-key-ed25519`):
//!
//! - a request signed by `web-bot-auth`'s `MessageSigner` verifies with
//!   `parse_signature` + `verify_ed25519`, and stops verifying once a
//!   covered value (method, authority, path or header) is changed;
//! - a request signed by `sign_ed25519` verifies with `web-bot-auth`'s
//!   `MessageVerifier`, and stops verifying there once a covered value is
//!   changed.
//!
//! `web-bot-auth` derives no component values itself: the caller maps each
//! covered component to its value (`UnsignedMessage` / `SignedMessage`).
//! The adapter below hands it the request's values as sent, so the request
//! used here is already in the form RFC 9421 §2.2 asks for (lowercase host,
//! no default port, no padding around header values), where both derive the
//! same values.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use indexmap::IndexMap;
use mandate_core::httpsig::{
    HttpSigError, RequestParts, SignSpec, parse_signature, sign_ed25519, signature_labels,
    verify_ed25519,
};
use web_bot_auth::ImplementationError;
use web_bot_auth::components::{
    CoveredComponent, DerivedComponent, HTTPField, HTTPFieldParametersSet,
};
use web_bot_auth::keyring::{Algorithm, KeyRing};
use web_bot_auth::message_signatures::{
    MessageSigner, MessageVerifier, SignedMessage, UnsignedMessage,
};

const LABEL: &str = "sig1";
const KEYID: &str = "test-key-ed25519";

fn mandate_public(x: &[u8; 32]) -> VerifyingKey {
    VerifyingKey::from_bytes(x).unwrap()
}

fn wba_keyring(x: &[u8; 32]) -> KeyRing {
    let mut ring = KeyRing::default();
    assert!(ring.import_raw(KEYID.to_owned(), Algorithm::Ed25519, x.to_vec()));
    ring
}

/// An HTTP request, owned, so that a test can tamper with a copy.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    authority: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn new() -> Self {
        Self {
            method: "POST".to_owned(),
            authority: "api.example.com".to_owned(),
            path: "/v1/orders".to_owned(),
            headers: vec![
                ("Host".to_owned(), "api.example.com".to_owned()),
                ("Content-Type".to_owned(), "application/json".to_owned()),
                ("Content-Length".to_owned(), "18".to_owned()),
            ],
        }
    }

    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            scheme: "https",
            authority: &self.authority,
            path: &self.path,
            query: None,
            headers: &self.headers,
        }
    }

    fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The changes of one covered value each, named for the messages.
    fn tamperings(&self) -> Vec<(&'static str, Self)> {
        let mut method = self.clone();
        method.method = "PUT".to_owned();
        let mut authority = self.clone();
        authority.authority = "evil.example.com".to_owned();
        let mut path = self.clone();
        path.path = "/v1/orders/42".to_owned();
        let mut content_type = self.clone();
        content_type.set_header("Content-Type", "text/plain");
        vec![
            ("@method", method),
            ("@authority", authority),
            ("@path", path),
            ("content-type", content_type),
        ]
    }
}

/// The covered components, in the order both sides sign them.
const COVERED: [&str; 4] = ["@method", "@authority", "@path", "content-type"];

fn wba_covered() -> Vec<CoveredComponent> {
    vec![
        CoveredComponent::Derived(DerivedComponent::Method { req: false }),
        CoveredComponent::Derived(DerivedComponent::Authority { req: false }),
        CoveredComponent::Derived(DerivedComponent::Path { req: false }),
        CoveredComponent::HTTP(HTTPField {
            name: "content-type".to_owned(),
            parameters: HTTPFieldParametersSet(vec![]),
        }),
    ]
}

/// The request as `web-bot-auth` sees it: every component value (derived
/// ones included) comes from here, as the request carries it.
struct WbaMessage<'a> {
    request: &'a Request,
    /// What `MessageSigner` writes (the inner list and the byte sequence,
    /// without a label).
    signed: Option<(String, String)>,
}

impl SignedMessage for WbaMessage<'_> {
    fn lookup_component(&self, name: &CoveredComponent) -> Vec<String> {
        let r = self.request;
        match name {
            CoveredComponent::Derived(DerivedComponent::Method { req: false }) => {
                vec![r.method.clone()]
            }
            CoveredComponent::Derived(DerivedComponent::Authority { req: false }) => {
                vec![r.authority.clone()]
            }
            CoveredComponent::Derived(DerivedComponent::Path { req: false }) => {
                vec![r.path.clone()]
            }
            CoveredComponent::HTTP(HTTPField { name, parameters }) if parameters.0.is_empty() => r
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .collect(),
            // Anything else is not in this request: "not found".
            _ => vec![],
        }
    }
}

impl UnsignedMessage for WbaMessage<'_> {
    fn fetch_components_to_cover(&self) -> IndexMap<CoveredComponent, String> {
        wba_covered()
            .into_iter()
            .map(|c| {
                let value = self.lookup_component(&c).join(", ");
                (c, value)
            })
            .collect()
    }

    fn register_header_contents(&mut self, signature_input: String, signature_header: String) {
        self.signed = Some((signature_input, signature_header));
    }
}

/// Verifies `request` (which carries `Signature-Input` and `Signature`)
/// with `web-bot-auth`, the key looked up by the signature's `keyid`.
fn wba_verify(request: &Request, ring: &KeyRing) -> Result<(), ImplementationError> {
    let message = WbaMessage {
        request,
        signed: None,
    };
    let verifier = MessageVerifier::parse(&message, |(label, _)| label.as_str() == LABEL)?;
    verifier.verify(ring, None).map(|_timing| ())
}

#[test]
fn web_bot_auth_signature_verifies_with_mandate_and_tampering_is_refused() {
    let (d, x) = common::rfc_key_bytes();
    let mut request = Request::new();

    let signer = MessageSigner {
        keyid: KEYID.to_owned(),
        nonce: "bm9uY2UtMDEyMzQ1Njc4OQ".to_owned(),
        tag: "mandate-interop".to_owned(),
    };
    let mut message = WbaMessage {
        request: &request,
        signed: None,
    };
    signer
        .generate_signature_headers_content(
            &mut message,
            Duration::from_secs(300),
            Algorithm::Ed25519,
            &d,
        )
        .unwrap();
    let (inner, signature) = message.signed.unwrap();
    let signature_input = format!("{LABEL}={inner}");
    let signature = format!("{LABEL}={signature}");
    request.set_header("Signature-Input", &signature_input);
    request.set_header("Signature", &signature);

    // Control: web-bot-auth accepts its own signature.
    let ring = wba_keyring(&x);
    wba_verify(&request, &ring).unwrap();

    // Mandate reads the labels, components and parameters web-bot-auth wrote.
    assert_eq!(signature_labels(&signature_input).unwrap(), [LABEL]);
    let sig = parse_signature(&signature_input, &signature, LABEL).unwrap();
    assert_eq!(sig.components(), COVERED);
    assert_eq!(sig.str_param("keyid"), Some(KEYID));
    assert_eq!(sig.str_param("alg"), Some("ed25519"));
    assert_eq!(sig.str_param("nonce"), Some("bm9uY2UtMDEyMzQ1Njc4OQ"));
    assert_eq!(sig.str_param("tag"), Some("mandate-interop"));
    let created = sig.int_param("created").unwrap();
    assert_eq!(sig.int_param("expires"), Some(created + 300));
    assert_eq!(sig.signature().len(), 64);

    // ... and verifies the signature.
    let pk = mandate_public(&x);
    assert_eq!(verify_ed25519(&request.parts(), &sig, &pk), Ok(()));

    // A change to any covered value is refused.
    for (what, tampered) in request.tamperings() {
        assert_eq!(
            verify_ed25519(&tampered.parts(), &sig, &pk),
            Err(HttpSigError::BadSignature),
            "Mandate accepted a web-bot-auth signature after `{what}` changed"
        );
    }
    // So is a changed parameter: the `@signature-params` line is signed.
    let stretched = signature_input.replace(
        &format!("expires={}", created + 300),
        &format!("expires={}", created + 86_400),
    );
    assert_ne!(stretched, signature_input);
    let sig = parse_signature(&stretched, &signature, LABEL).unwrap();
    assert_eq!(
        verify_ed25519(&request.parts(), &sig, &pk),
        Err(HttpSigError::BadSignature)
    );
}

#[test]
fn mandate_signature_verifies_with_web_bot_auth_and_tampering_is_refused() {
    let (d, x) = common::rfc_key_bytes();
    let mut request = Request::new();

    let spec = SignSpec {
        label: LABEL,
        components: &COVERED,
        created: 1_700_000_000,
        expires: Some(1_700_000_300),
        keyid: Some(KEYID),
        nonce: Some("bm9uY2UtOTg3NjU0MzIxMA"),
    };
    let (signature_input, signature) =
        sign_ed25519(&request.parts(), &spec, &SigningKey::from_bytes(&d)).unwrap();
    request.set_header("Signature-Input", &signature_input);
    request.set_header("Signature", &signature);

    // Control: Mandate accepts its own signature.
    let own = parse_signature(&signature_input, &signature, LABEL).unwrap();
    assert_eq!(
        verify_ed25519(&request.parts(), &own, &mandate_public(&x)),
        Ok(())
    );

    // web-bot-auth parses the components and parameters Mandate wrote.
    let message = WbaMessage {
        request: &request,
        signed: None,
    };
    let parsed = MessageVerifier::parse(&message, |(label, _)| label.as_str() == LABEL)
        .unwrap()
        .parsed;
    assert_eq!(parsed.label.as_str(), LABEL);
    assert_eq!(parsed.signature.len(), 64);
    let covered: Vec<CoveredComponent> = parsed.base.components.keys().cloned().collect();
    assert_eq!(covered, wba_covered());
    let values: Vec<&str> = parsed
        .base
        .components
        .values()
        .map(String::as_str)
        .collect();
    assert_eq!(
        values,
        [
            "POST",
            "api.example.com",
            "/v1/orders",
            request.header("content-type").unwrap()
        ]
    );
    let details = &parsed.base.parameters.details;
    assert_eq!(details.algorithm, Some(Algorithm::Ed25519));
    assert_eq!(details.created, Some(1_700_000_000));
    assert_eq!(details.expires, Some(1_700_000_300));
    assert_eq!(details.keyid.as_deref(), Some(KEYID));
    assert_eq!(details.nonce.as_deref(), Some("bm9uY2UtOTg3NjU0MzIxMA"));
    assert_eq!(details.tag, None);

    // ... and verifies the signature, finding the key by `keyid`.
    let ring = wba_keyring(&x);
    wba_verify(&request, &ring).unwrap();

    // A change to any covered value is refused.
    for (what, tampered) in request.tamperings() {
        let result = wba_verify(&tampered, &ring);
        assert!(
            matches!(result, Err(ImplementationError::FailedToVerify(_))),
            "web-bot-auth did not refuse a Mandate signature after `{what}` changed: {result:?}"
        );
    }
    // So is a changed parameter.
    let mut stretched = request.clone();
    stretched.set_header(
        "Signature-Input",
        &signature_input.replace("expires=1700000300", "expires=1700086400"),
    );
    assert_ne!(
        stretched.header("signature-input"),
        Some(signature_input.as_str())
    );
    let result = wba_verify(&stretched, &ring);
    assert!(
        matches!(result, Err(ImplementationError::FailedToVerify(_))),
        "web-bot-auth accepted a Mandate signature with a changed `expires`: {result:?}"
    );
}
