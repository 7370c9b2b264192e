//! Untrusted header values for the RFC 9421 verifier (`mandate_core::httpsig`):
//! `Signature-Input`, `Signature`, `Signature-Key`, `Content-Digest` and a
//! request. Besides never panicking:
//! - a signature parsed for a label is one `Signature-Input` lists;
//! - a signature base has one line per covered component and one
//!   `@signature-params` line, the last: no header value adds a line;
//! - nothing verifies under a key the input never had;
//! - what the signer makes for the same request and components parses and
//!   verifies, and stops verifying when a covered method changes;
//! - a `Signature-Key` JWT read back from the header the signer writes for
//!   it is the same JWT;
//! - a `Content-Digest` that accepts a body refuses any other body, and the
//!   digest the signer writes is accepted.
//!
//! Input: lines `Signature-Input`, `Signature`, `Signature-Key`,
//! `Content-Digest`, method, authority, target (path with an optional
//! `?query`), then header lines `name: value` up to an empty line, then the
//! body (see fuzz/seeds/httpsig/).
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use mandate_core::httpsig::{
    RequestParts, SignSpec, check_content_digest, content_digest, parse_only_signature,
    parse_signature, sign_ed25519, signature_base, signature_key_header, signature_key_jwt,
    signature_labels, verify_ed25519,
};

/// At most this many labels of one input are tried.
const LABELS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut line = || {
        let (l, r) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        rest = r;
        std::str::from_utf8(l).ok()
    };
    let fields: Option<Vec<&str>> = (0..7).map(|_| line()).collect();
    let Some(fields) = fields else { return };
    let [
        input,
        signature,
        signature_key,
        digest,
        method,
        authority,
        target,
    ] = fields[..]
    else {
        return;
    };
    let mut headers = Vec::new();
    loop {
        let Some(l) = line() else { return };
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            return;
        };
        headers.push((name.to_owned(), value.trim_start().to_owned()));
    }
    let body = rest;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let req = RequestParts {
        method,
        scheme: "https",
        authority,
        path,
        query,
        headers: &headers,
    };

    // A key the fuzzer never sees a signature of.
    let key = SigningKey::from_bytes(&[0x4d; 32]);
    let public = key.verifying_key();

    let labels = signature_labels(input).unwrap_or_default();
    // One reading of both headers tells what the labels and then the one
    // label's parse tell.
    if let Ok(only) = parse_only_signature(input, signature) {
        match (labels.as_slice(), only) {
            ([label], Some(p)) => {
                let again = parse_signature(input, signature, label).expect("the same parse");
                assert_eq!(
                    (p.label.as_str(), p.signature()),
                    (label.as_str(), again.signature())
                );
            }
            ([label], None) => panic!("one label `{label}` but no signature"),
            (_, Some(_)) => panic!("a signature without exactly one label"),
            (_, None) => {}
        }
    } else {
        assert!(labels.len() != 1 || parse_signature(input, signature, &labels[0]).is_err());
    }
    let mut tried: Vec<&str> = labels.iter().take(LABELS).map(String::as_str).collect();
    tried.push("sig");
    for label in tried {
        if let Ok(jwt) = signature_key_jwt(signature_key, label) {
            let header = signature_key_header(label, &jwt);
            // A label the parser read is one the writer can write.
            let header = header.expect("a parsed Signature-Key member can be written");
            assert_eq!(
                signature_key_jwt(&header, label).as_deref(),
                Ok(jwt.as_str())
            );
        }
        let Ok(parsed) = parse_signature(input, signature, label) else {
            continue;
        };
        assert_eq!(parsed.label, label);
        assert!(
            labels.iter().any(|l| l == label),
            "`{label}` is not a label of the input"
        );
        let components = parsed.components();
        if let Ok(base) = signature_base(&req, &parsed) {
            let base = String::from_utf8(base).expect("a signature base is text");
            let lines: Vec<&str> = base.split('\n').collect();
            let params = lines
                .iter()
                .filter(|l| l.starts_with("\"@signature-params\": "))
                .count();
            assert_eq!(params, 1, "{base:?}");
            assert!(
                lines
                    .last()
                    .is_some_and(|l| l.starts_with("\"@signature-params\": "))
            );
            assert!(components.len() < lines.len());
            for c in &components {
                let id = format!("\"{c}\": ");
                assert!(
                    lines.iter().any(|l| l.starts_with(&id)),
                    "{c} not in {base:?}"
                );
            }
        }
        assert!(
            verify_ed25519(&req, &parsed, &public).is_err(),
            "verified under a key the input never had"
        );

        // The signer, on the same request and components.
        let names: Vec<&str> = components.iter().map(String::as_str).collect();
        let spec = SignSpec {
            label,
            components: &names,
            created: parsed.int_param("created").unwrap_or(1_700_000_000),
            expires: parsed.int_param("expires"),
            keyid: parsed.str_param("keyid"),
            nonce: parsed.str_param("nonce"),
        };
        if let Ok((input2, signature2)) = sign_ed25519(&req, &spec, &key) {
            let signed = parse_signature(&input2, &signature2, label)
                .expect("what the signer writes parses");
            assert_eq!(signed.components(), components);
            assert_eq!(verify_ed25519(&req, &signed, &public), Ok(()));
            if names.contains(&"@method") {
                let other = format!("{method}X");
                let changed = RequestParts {
                    method: &other,
                    ..req.clone()
                };
                assert!(verify_ed25519(&changed, &signed, &public).is_err());
            }
        }
    }

    if check_content_digest(digest, body).is_ok() {
        let mut other = body.to_vec();
        other.push(b'x');
        assert!(check_content_digest(digest, &other).is_err());
    }
    assert_eq!(check_content_digest(&content_digest(body), body), Ok(()));
});
