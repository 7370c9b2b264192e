//! An agent's MCP message as the MCP gateway first reads it: the body of one
//! `POST`, parsed as one JSON-RPC 2.0 message and classified as a request,
//! a notification or a response, before any session, decision or upstream
//! is involved. Bytes in, a [`ClientMessage`] or a [`Refused`] out; no I/O.
//!
//! Refused, never forwarded: what is not JSON, a batch, anything but an
//! object, a `jsonrpc` other than `"2.0"`, an `id` that is not a string or
//! an integer, a `method` that is not a string, a response with neither
//! `result` nor `error`, a message that is none of the three, and a method
//! not in [`CLIENT_REQUESTS`] or [`CLIENT_NOTIFICATIONS`].

use serde_json::Value;

/// Requests an agent may send; anything else is refused (`-32601`).
/// `completion/complete`, `resources/templates/list` and
/// `logging/setLevel` are decided by policy like calls (they run server
/// code on the agent's input, or widen what the server tells it).
pub const CLIENT_REQUESTS: &[&str] = &[
    "initialize",
    "server/discover",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "resources/templates/list",
];

/// Notifications an agent may send.
pub const CLIENT_NOTIFICATIONS: &[&str] = &[
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
];

/// The longest method name kept for the record of a message.
const NAMED_CHARS: usize = 64;

/// A message of the agent, classified.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMessage {
    pub kind: MessageKind,
    /// The whole message, as parsed (what is forwarded, if anything is).
    pub message: Value,
    /// The method it names, for the record: at most 64 characters, `-`
    /// for a response.
    pub named: String,
}

/// What a [`ClientMessage`] is.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageKind {
    /// A request with a method of [`CLIENT_REQUESTS`]; `id` is a string or
    /// an integer.
    Request { id: Value, method: String },
    /// A notification (no `id`) with a method of [`CLIENT_NOTIFICATIONS`].
    Notification { method: String },
    /// An answer to a request of the server (no `method`; `result` or
    /// `error`); `id` is a string or an integer.
    Response { id: Value },
}

/// Why a message is refused, and how to answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub reason: Refusal,
    /// The `id` of the JSON-RPC error answer (`null` where none is usable).
    pub id: Value,
    /// The method the message named, for the record: at most 64
    /// characters, `-` if none.
    pub named: String,
    pub detail: String,
}

/// The kinds of [`Refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not JSON (`-32700`).
    NotJson,
    /// JSON, but not a message the gateway accepts (`-32600`).
    Invalid,
    /// A request whose method is not in [`CLIENT_REQUESTS`] (`-32601`,
    /// answered with the request's `id`).
    UnknownRequest,
    /// A notification whose method is not in [`CLIENT_NOTIFICATIONS`]
    /// (`-32601`).
    UnknownNotification,
}

/// Parses and classifies the body of one `POST` of the agent.
pub fn parse_client_message(body: &[u8]) -> Result<ClientMessage, Box<Refused>> {
    let msg = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        Err(e) => {
            return Err(Box::new(Refused {
                reason: Refusal::NotJson,
                id: Value::Null,
                named: "-".to_owned(),
                detail: format!("not JSON: {e}"),
            }));
        }
    };
    let named: String = msg
        .get("method")
        .and_then(Value::as_str)
        .map_or_else(|| "-".to_owned(), |m| m.chars().take(NAMED_CHARS).collect());
    let refuse = |reason: Refusal, id: Option<&Value>, detail: String| {
        Box::new(Refused {
            reason,
            id: id.cloned().unwrap_or(Value::Null),
            named: named.clone(),
            detail,
        })
    };
    let invalid = |id: Option<&Value>, detail: &str| refuse(Refusal::Invalid, id, detail.into());
    if msg.is_array() {
        return Err(invalid(
            None,
            "JSON-RPC batches are not accepted; send one message per request",
        ));
    }
    let Some(obj) = msg.as_object() else {
        return Err(invalid(None, "a JSON-RPC message is an object"));
    };
    let id = obj.get("id");
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(id, "`jsonrpc` must be \"2.0\""));
    }
    if let Some(i) = id
        && !(i.is_string() || i.is_i64() || i.is_u64())
    {
        return Err(invalid(None, "`id` must be a string or an integer"));
    }
    let method = match obj.get("method") {
        None => None,
        Some(Value::String(m)) => Some(m.clone()),
        Some(_) => return Err(invalid(id, "`method` must be a string")),
    };
    let kind = match (method, id.cloned()) {
        (None, Some(id)) => {
            if !(obj.contains_key("result") || obj.contains_key("error")) {
                return Err(invalid(Some(&id), "a response needs `result` or `error`"));
            }
            MessageKind::Response { id }
        }
        (None, None) => {
            return Err(invalid(
                None,
                "neither a request, a notification nor a response",
            ));
        }
        (Some(method), None) => {
            if !CLIENT_NOTIFICATIONS.contains(&method.as_str()) {
                return Err(refuse(
                    Refusal::UnknownNotification,
                    None,
                    format!("`{method}` is not a notification the gateway forwards"),
                ));
            }
            MessageKind::Notification { method }
        }
        (Some(method), Some(id)) => {
            if !CLIENT_REQUESTS.contains(&method.as_str()) {
                return Err(refuse(
                    Refusal::UnknownRequest,
                    Some(&id),
                    format!("`{method}` is not a method the gateway forwards"),
                ));
            }
            MessageKind::Request { id, method }
        }
    };
    Ok(ClientMessage {
        kind,
        message: msg,
        named,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(body: &str) -> Result<MessageKind, (Refusal, Value, String)> {
        parse_client_message(body.as_bytes())
            .map(|m| m.kind)
            .map_err(|r| (r.reason, r.id, r.detail))
    }

    #[test]
    fn requests_notifications_and_responses_are_told_apart() {
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}"#),
            Ok(MessageKind::Request {
                id: json!(7),
                method: "tools/call".into()
            })
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(MessageKind::Notification {
                method: "notifications/initialized".into()
            })
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#),
            Ok(MessageKind::Response { id: json!("s-1") })
        );
    }

    #[test]
    fn what_the_gateway_does_not_forward_is_refused_with_the_answer_id() {
        let cases = [
            ("{", Refusal::NotJson, Value::Null),
            ("[]", Refusal::Invalid, Value::Null),
            ("7", Refusal::Invalid, Value::Null),
            (
                r#"{"jsonrpc":"1.0","id":3,"method":"ping"}"#,
                Refusal::Invalid,
                json!(3),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                Refusal::Invalid,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                Refusal::Invalid,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":7}"#,
                Refusal::Invalid,
                json!(3),
            ),
            (r#"{"jsonrpc":"2.0","id":3}"#, Refusal::Invalid, json!(3)),
            (r#"{"jsonrpc":"2.0"}"#, Refusal::Invalid, Value::Null),
            (
                r#"{"jsonrpc":"2.0","id":"a","method":"tasks/list"}"#,
                Refusal::UnknownRequest,
                json!("a"),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#,
                Refusal::UnknownNotification,
                Value::Null,
            ),
            // A gated method without an id is not a notification.
            (
                r#"{"jsonrpc":"2.0","method":"tools/call"}"#,
                Refusal::UnknownNotification,
                Value::Null,
            ),
        ];
        for (body, reason, id) in cases {
            let r = parse_client_message(body.as_bytes()).err();
            assert_eq!(
                r.as_ref().map(|r| (r.reason, &r.id)),
                Some((reason, &id)),
                "{body}"
            );
        }
    }

    #[test]
    fn the_recorded_method_is_bounded() {
        let long = "m".repeat(300);
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{long}"}}"#);
        let r = parse_client_message(body.as_bytes()).err();
        assert_eq!(r.map(|r| r.named.len()), Some(64));
        let ok = parse_client_message(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert_eq!(ok.map(|m| m.named), Ok("-".to_owned()));
    }
}
