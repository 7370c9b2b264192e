//! MCP 2026-07-28's HTTP headers that mirror the body (`Mcp-Name`,
//! `Mcp-Param-*`): the value encoding both directions use, and which of a
//! tool's arguments its `inputSchema` mirrors (`x-mcp-header`). The
//! gateway checks what an agent sends with these (api/mcp/stateless.rs)
//! and writes them for a remote server of that revision (mcp_upstream.rs).

use base64::Engine as _;
use serde_json::Value;

const SENTINEL_PREFIX: &str = "=?base64?";
const SENTINEL_SUFFIX: &str = "?=";

/// A header value in MCP's encoding: as is, or `=?base64?…?=` (the UTF-8
/// bytes, standard Base64); `None` if the Base64 or the UTF-8 is invalid.
pub(crate) fn decode(v: &str) -> Option<String> {
    match v
        .strip_prefix(SENTINEL_PREFIX)
        .and_then(|r| r.strip_suffix(SENTINEL_SUFFIX))
    {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(v.to_owned()),
    }
}

/// A value as MCP carries it in a header: as is when it is visible ASCII
/// (or spaces) without surrounding whitespace and does not look like the
/// encoded form; otherwise `=?base64?…?=`. The result is always a valid
/// header value.
pub(crate) fn encode(v: &str) -> String {
    let plain = v.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && v.trim() == v
        && !(v.starts_with(SENTINEL_PREFIX) && v.ends_with(SENTINEL_SUFFIX));
    if plain {
        v.to_owned()
    } else {
        format!(
            "{SENTINEL_PREFIX}{}{SENTINEL_SUFFIX}",
            base64::engine::general_purpose::STANDARD.encode(v)
        )
    }
}

/// What an `Mcp-Param-*` header says for an argument's value (before
/// encoding): a string as is, a boolean as `true`/`false`, a number as
/// JSON writes it; `None` for anything else (nothing to mirror).
pub(crate) fn param_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The parameters an `inputSchema` mirrors into headers: each property
/// reached from the root through `properties` only that carries
/// `x-mcp-header`, as (the header's name after `Mcp-Param-`, its path).
pub(crate) fn mirrored_params(schema: Option<&Value>) -> Vec<(String, Vec<String>)> {
    fn walk(
        schema: &Value,
        path: &mut Vec<String>,
        out: &mut Vec<(String, Vec<String>)>,
        depth: usize,
    ) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (k, v) in props {
            path.push(k.clone());
            if let Some(name) = v.get("x-mcp-header").and_then(Value::as_str) {
                out.push((name.to_owned(), path.clone()));
            }
            if depth < 8 {
                walk(v, path, out, depth + 1);
            }
            path.pop();
        }
    }
    let mut out = Vec::new();
    if let Some(s) = schema {
        walk(s, &mut Vec::new(), &mut out, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_a_header_cannot_carry_are_encoded_and_come_back() {
        for v in [
            "git_status",
            "file:///tmp/a b",
            " leading",
            "trailing\t",
            "naïve",
            "line\r\nInjected: yes",
            "=?base64?aGk=?=",
            "",
        ] {
            let e = encode(v);
            assert!(
                e.bytes().all(|b| (0x20..=0x7e).contains(&b)),
                "{v:?} -> {e:?}"
            );
            assert_eq!(decode(&e).as_deref(), Some(v), "{v:?} -> {e:?}");
        }
        assert_eq!(encode("git_status"), "git_status");
        assert_eq!(encode("naïve"), "=?base64?bmHDr3Zl?=");
        // The spec's own example: a literal that looks encoded is encoded.
        assert_eq!(
            encode("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
    }
}
