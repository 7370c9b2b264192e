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

/// Most arguments one tool may mirror into headers; the rest are not
/// mirrored (see [`mirrored_params`]).
pub(crate) const MAX_MIRRORED: usize = 32;

/// Longest path to a mirrored argument (its property names' bytes, all
/// levels), and longest header name after `Mcp-Param-`.
pub(crate) const MAX_MIRROR_BYTES: usize = 256;

/// The parameters an `inputSchema` mirrors into headers: each property
/// reached from the root through `properties` only that carries
/// `x-mcp-header`, as (the header's name after `Mcp-Param-`, its path).
///
/// The schema comes from the MCP server, so what is kept is bounded: at
/// most [`MAX_MIRRORED`] parameters, each with a path and a name of at
/// most [`MAX_MIRROR_BYTES`] (and nothing below a path that long). Each
/// parameter keeps its own copy of its path, so without the bounds one
/// long property name above many mirrored ones would be copied once for
/// each of them: a megabyte of listing could take gigabytes. A parameter
/// beyond the bounds is not mirrored: the gateway refuses an agent's
/// header for it and writes none upstream, so nothing routes on it.
// INVARIANT: the result's size is bounded by the constants, whatever the
// schema.
pub(crate) fn mirrored_params(schema: Option<&Value>) -> Vec<(String, Vec<String>)> {
    fn walk(
        schema: &Value,
        path: &mut Vec<String>,
        bytes: usize,
        out: &mut Vec<(String, Vec<String>)>,
        depth: usize,
    ) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (k, v) in props {
            if out.len() >= MAX_MIRRORED {
                return;
            }
            let bytes = bytes.saturating_add(k.len());
            if bytes > MAX_MIRROR_BYTES {
                continue;
            }
            path.push(k.clone());
            if let Some(name) = v.get("x-mcp-header").and_then(Value::as_str)
                && name.len() <= MAX_MIRROR_BYTES
            {
                out.push((name.to_owned(), path.clone()));
            }
            if depth < 8 {
                walk(v, path, bytes, out, depth + 1);
            }
            path.pop();
        }
    }
    let mut out = Vec::new();
    if let Some(s) = schema {
        walk(s, &mut Vec::new(), 0, &mut out, 0);
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

    /// A hostile server's schema: one long property name above many
    /// mirrored properties. Each mirrored one would copy the long name.
    #[test]
    fn a_schema_cannot_make_the_mirrors_larger_than_the_bounds() {
        let long = "k".repeat(20_000);
        let children: serde_json::Map<String, Value> = (0..2_000)
            .map(|i| {
                (
                    format!("a{i}"),
                    serde_json::json!({"x-mcp-header": format!("h{i}")}),
                )
            })
            .collect();
        let schema = serde_json::json!({"properties": {
            long: {"x-mcp-header": "Long", "properties": children.clone()},
            "short": {"properties": children},
        }});
        let mirrored = mirrored_params(Some(&schema));
        let bytes: usize = mirrored
            .iter()
            .map(|(n, p)| n.len() + p.iter().map(String::len).sum::<usize>())
            .sum();
        assert!(mirrored.len() <= MAX_MIRRORED, "{}", mirrored.len());
        assert!(
            bytes <= MAX_MIRRORED * 2 * MAX_MIRROR_BYTES,
            "{bytes} bytes"
        );
        // What is within the bounds is still mirrored.
        assert!(
            mirrored
                .iter()
                .any(|(n, p)| n == "h0" && p == &["short".to_owned(), "a0".to_owned()]),
            "{:?}",
            mirrored.first()
        );
    }
}
