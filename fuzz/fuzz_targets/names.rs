//! Untrusted names for the checks of `mandate_core::names`: a route path
//! or segment (what the HTTP gateway and `/v1/decide` decide on), a query,
//! an MCP tool or prompt name, an MCP resource URI. Besides never
//! panicking, what is accepted has the one reading the docs promise
//! (docs/gateway.md "Path hygiene", docs/mcp.md):
//! - a path starts with `/`; no empty segment (`//`, a trailing `/`); no
//!   `.` or `..` segment, plain or encoded; no raw `\`, `;`, space, control
//!   or non-ASCII character; no encoded `/`, `\`, `.`, `%`, `;` or control
//!   character (`%2f`, `%5C`, `%2e`, `%25`, …); no encoded unreserved
//!   character and no lower-case hex; percent-encodings that are UTF-8;
//! - a segment decodes as an independent decoder decodes it, and decoding
//!   it again changes nothing (no double encoding);
//! - a query has no control character, space or `#`;
//! - a tool or prompt name is 1 to 128 of `A-Za-z0-9_-.`, not only dots;
//! - a resource URI is 1 to 2,048 characters, no control character or
//!   whitespace, no fragment; a lower-case scheme; `file:` only as
//!   `file:///…` without a query; an authority without userinfo or port;
//!   a query that is not empty and has no `/` or `\`; a path as above.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::names::{check_path, check_query, check_segment, valid_name, valid_uri};

/// Percent-decodes `raw`, written apart from the code under test.
fn decode(raw: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// What every accepted segment (raw, as sent) must be.
fn assert_one_reading(raw: &str) {
    assert!(!raw.is_empty(), "an empty segment in an accepted path");
    assert!(raw.is_ascii(), "raw non-ASCII in {raw:?}");
    assert!(
        !raw.chars()
            .any(|c| c.is_control() || matches!(c, ' ' | '\\' | ';')),
        "a raw control character, space, `\\` or `;` in {raw:?}"
    );
    let lower = raw.to_ascii_lowercase();
    for enc in ["%2f", "%5c", "%2e", "%25", "%3b", "%00", "%7f"] {
        assert!(!lower.contains(enc), "{enc} in {raw:?}");
    }
    for (i, _) in raw.match_indices('%') {
        let hex = raw.get(i + 1..i + 3).unwrap_or_default();
        assert!(
            hex.len() == 2
                && hex
                    .bytes()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h)),
            "not two upper-case hex digits after `%` in {raw:?}"
        );
        let byte = decode(&raw[i..i + 3]).map(String::into_bytes);
        // Non-ASCII bytes do not decode alone; an ASCII one must not be
        // unreserved.
        if let Some([c]) = byte.as_deref() {
            assert!(
                !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'~' | b'.')),
                "an encoded unreserved character in {raw:?}"
            );
        }
    }
    let decoded = decode(raw).expect("an accepted segment decodes to UTF-8");
    assert!(decoded != "." && decoded != "..", "a dot segment: {raw:?}");
    assert!(
        !decoded.contains(['/', '\\', '%', ';']),
        "{raw:?} decodes to {decoded:?}"
    );
    assert!(
        !decoded.chars().any(char::is_control),
        "{raw:?} decodes to a control character: {decoded:?}"
    );
    assert_eq!(decode(&decoded).as_deref(), Some(decoded.as_str()));
}

fn assert_path(p: &str) {
    let rest = p
        .strip_prefix('/')
        .expect("an accepted path starts with `/`");
    if !rest.is_empty() {
        rest.split('/').for_each(assert_one_reading);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    // A segment is what a path has between two `/`.
    if !s.contains('/')
        && let Ok(decoded) = check_segment(s)
    {
        assert_one_reading(s);
        assert_eq!(decode(s).as_deref(), Some(decoded.as_str()));
    }
    if check_path(s).is_ok() {
        assert_path(s);
    }
    if check_query(s).is_ok() {
        assert!(!s.chars().any(|c| c.is_control() || c == ' ' || c == '#'));
    }
    if valid_name(s) {
        assert!((1..=128).contains(&s.len()));
        assert!(
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        );
        assert!(!s.chars().all(|c| c == '.'));
    }
    if valid_uri(s) {
        assert!((1..=2_048).contains(&s.len()));
        assert!(
            !s.chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '#')
        );
        let (scheme, rest) = s.split_once(':').expect("a scheme");
        assert!(scheme.starts_with(|c: char| c.is_ascii_lowercase()));
        assert!(scheme.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.')
        }));
        let (hier, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        if let Some(q) = query {
            assert!(scheme != "file", "a query on a `file:` URI: {s:?}");
            assert!(!q.is_empty() && !q.contains(['/', '\\']), "query {q:?}");
        }
        if scheme == "file" {
            assert!(hier.starts_with("///"), "{s:?}");
        }
        let path = match hier.strip_prefix("//") {
            Some(after) => {
                let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
                assert!(!authority.contains(['@', ':']), "userinfo or port in {s:?}");
                assert_eq!(authority, authority.to_ascii_lowercase());
                path
            }
            None => hier,
        };
        if !path.is_empty() {
            if path.starts_with('/') {
                assert_path(path);
            } else {
                assert_path(&format!("/{path}"));
            }
        }
    }
});
