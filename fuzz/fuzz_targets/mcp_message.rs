//! Untrusted bodies for the MCP gateway's first step
//! (`mandate_core::mcp_message::parse_client_message`): one JSON-RPC 2.0
//! message, classified before any session or decision. Besides never
//! panicking:
//! - a request names a method the gateway forwards and a string or integer
//!   `id`, a notification one of the notifications it forwards and no `id`,
//!   a response no method and a `result` or `error`; so a gated call
//!   (`tools/call`, `resources/read`, …) is only ever a request;
//! - what is classified is the message itself (`jsonrpc` "2.0", the same
//!   `id` and `method`), and the message as forwarded (re-serialized) is
//!   classified the same way again: the upstream reads what was decided;
//! - the method kept for the record is at most 64 characters, and a refusal
//!   answers with the request's `id` or with `null`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::mcp_message::{
    CLIENT_NOTIFICATIONS, CLIENT_REQUESTS, MessageKind, Refusal, parse_client_message,
};
use serde_json::Value;

const GATED: &[&str] = &[
    "tools/call",
    "resources/read",
    "resources/subscribe",
    "prompts/get",
];

fn usable_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

fuzz_target!(|data: &[u8]| {
    match parse_client_message(data) {
        Ok(m) => {
            assert!(m.named.chars().count() <= 64);
            let obj = m.message.as_object().expect("a message is an object");
            assert_eq!(obj.get("jsonrpc"), Some(&Value::from("2.0")));
            match &m.kind {
                MessageKind::Request { id, method } => {
                    assert!(CLIENT_REQUESTS.contains(&method.as_str()));
                    assert!(usable_id(id));
                    assert_eq!(obj.get("id"), Some(id));
                    assert_eq!(obj.get("method"), Some(&Value::from(method.as_str())));
                }
                MessageKind::Notification { method } => {
                    assert!(CLIENT_NOTIFICATIONS.contains(&method.as_str()));
                    assert!(!GATED.contains(&method.as_str()));
                    assert!(!obj.contains_key("id"));
                    assert_eq!(obj.get("method"), Some(&Value::from(method.as_str())));
                }
                MessageKind::Response { id } => {
                    assert!(usable_id(id));
                    assert_eq!(obj.get("id"), Some(id));
                    assert!(!obj.contains_key("method"));
                    assert!(obj.contains_key("result") || obj.contains_key("error"));
                }
            }
            let forwarded = serde_json::to_vec(&m.message).expect("a parsed message serializes");
            let again = parse_client_message(&forwarded).expect("the forwarded message parses");
            assert_eq!(again.kind, m.kind);
            assert_eq!(again.message, m.message);
        }
        Err(r) => {
            assert!(r.named.chars().count() <= 64);
            assert!(!r.detail.is_empty());
            match r.reason {
                Refusal::UnknownRequest => assert!(usable_id(&r.id)),
                Refusal::NotJson | Refusal::UnknownNotification => assert!(r.id.is_null()),
                Refusal::Invalid => {}
            }
        }
    }
});
