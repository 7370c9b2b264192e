//! Names that must have one reading: a route path and query, an MCP tool
//! or prompt name, an MCP resource URI. What another parser could read
//! differently is refused, not normalised, so that a policy (or a grant's
//! prefix) on the name means what it says. Checked by the gateways before
//! mapping, and again by the enforcement pipeline before deciding.

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Ambiguous(pub String);

/// Checks one raw path segment and returns it percent-decoded. Refuses what
/// another parser could read differently.
pub fn check_segment(raw: &str) -> Result<String, Ambiguous> {
    let amb = |m: &str| Ambiguous(m.to_owned());
    if raw.is_empty() {
        return Err(amb("an empty segment (`//`)"));
    }
    if raw.contains(['\\', '\0', ';']) || raw.chars().any(|c| c.is_control() || c == ' ') {
        return Err(amb("a backslash, `;`, space or control character"));
    }
    if !raw.is_ascii() {
        return Err(amb("a character that is not percent-encoded ASCII"));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .filter(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
                .ok_or_else(|| amb("a malformed percent-encoding"))?;
            let b = u8::from_str_radix(hex, 16).map_err(|_| amb("a malformed percent-encoding"))?;
            if matches!(b, b'/' | b'\\' | b'.' | b'%' | b';') || b < 0x20 || b == 0x7f {
                return Err(amb(
                    "an encoded `/`, `\\`, `.`, `%`, `;` or control character",
                ));
            }
            // Only one spelling per path: an unreserved character (RFC 3986
            // §2.3) must not be encoded, and hex digits are upper case, so a
            // policy on the path cannot be dodged by spelling it otherwise.
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
                return Err(amb("a percent-encoded letter, digit, `-`, `_` or `~`"));
            }
            if hex.chars().any(|c| c.is_ascii_lowercase()) {
                return Err(amb("lower-case hex in a percent-encoding"));
            }
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| amb("a segment that is not UTF-8"))?;
    // The C1 controls (U+0080 to U+009F) are encoded in two bytes, neither
    // of them a control byte: checked on the decoded text.
    if s.chars().any(char::is_control) {
        return Err(amb(
            "an encoded `/`, `\\`, `.`, `%`, `;` or control character",
        ));
    }
    if s == "." || s == ".." {
        return Err(amb("a dot segment"));
    }
    Ok(s)
}

/// Checks a whole raw path (under the route): every segment as
/// [`check_segment`] does.
pub fn check_path(raw: &str) -> Result<(), Ambiguous> {
    match raw.strip_prefix('/') {
        Some("") => Ok(()),
        Some(rest) => rest
            .split('/')
            .try_for_each(|s| check_segment(s).map(|_| ())),
        None => Err(Ambiguous("the path must start with `/`".into())),
    }
}

/// Checks a raw query string: no control characters or spaces.
pub fn check_query(raw: &str) -> Result<(), Ambiguous> {
    if raw.chars().any(|c| c.is_control() || c == ' ' || c == '#') {
        return Err(Ambiguous(
            "a control character, space or `#` in the query".into(),
        ));
    }
    Ok(())
}

/// Whether `name` is a tool or prompt name as MCP recommends it: 1 to 128
/// characters of ASCII letters, digits, `_`, `-` and `.`, and not only
/// dots. Anything else (a `/`, `..` tricks, spaces, control characters) is
/// refused: the policy reads `server/name`, and it must mean one thing.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.chars().all(|c| c == '.')
}

/// Whether `uri` may name a resource: 1 to 2,048 characters in one
/// spelling only, so that a policy on the URI (`resource.uri like
/// "file:///srv/project/*"`) means what it says. Refused rather than
/// normalised: a scheme not in lower case; a fragment; userinfo; an
/// authority on `file:`; in the path, dot segments (plain or encoded),
/// empty segments, encoded `/`, `\` or `.`, a raw `\`, and whatever else
/// the gateway's path check refuses (see [`check_path`]).
#[must_use]
pub fn valid_uri(uri: &str) -> bool {
    if !(1..=2_048).contains(&uri.len()) || uri.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return false;
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.contains('#') {
        return false;
    }
    let (hier, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    // A query that could be read as more path (`?/../../etc`) is refused;
    // a `file:` URI has none.
    if query.is_some_and(|q| {
        scheme == "file" || q.is_empty() || q.contains(['/', '\\']) || check_query(q).is_err()
    }) {
        return false;
    }
    // `file:` in one spelling only: `file:///path`.
    if scheme == "file" && !hier.starts_with("///") {
        return false;
    }
    let path = match hier.strip_prefix("//") {
        Some(after) => {
            let (authority, path) = after.find('/').map_or((after, ""), |i| after.split_at(i));
            let canonical = authority.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_')
            });
            if !canonical || (scheme == "file" && !authority.is_empty()) {
                return false;
            }
            path
        }
        None => hier,
    };
    match path {
        "" => true,
        p if p.starts_with('/') => check_path(p).is_ok(),
        p => check_path(&format!("/{p}")).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `names` fuzz target: U+009A, percent-encoded as UTF-8,
    /// passed as a path segment although encoded control characters are
    /// refused.
    #[test]
    fn encoded_c1_control_characters_are_refused() {
        assert!(check_path("/[%C2%9A/f9").is_err());
        for c in ['\u{80}', '\u{85}', '\u{9f}'] {
            let mut buf = [0u8; 4];
            let encoded: String = c
                .encode_utf8(&mut buf)
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect();
            assert!(check_segment(&encoded).is_err(), "{encoded}");
            assert!(!valid_uri(&format!("file:///srv/{encoded}")), "{encoded}");
        }
        // The first character after them is not a control: it still passes.
        assert_eq!(check_segment("%C2%A0").as_deref(), Ok("\u{a0}"));
    }
}
