//! Grants: what an approval adds to one mission's scope.
//!
//! An approver chooses one of three terms (see `docs/approvals.md`):
//!
//! | terms | covers | uses |
//! |---|---|---|
//! | `once` | exactly the approved call | one |
//! | `mission` | exactly the approved call, again | until the mission ends (or the approver's limits) |
//! | `pattern` | the approved action on resources under a prefix | until the mission ends (or the approver's limits) |
//!
//! "Exactly the call" is the call's request digest: SHA-256 of the RFC 8785
//! encoding of its action, resource and context, so any change to an
//! argument is a different call. A pattern is a Cedar `permit` built through
//! Cedar's JSON policy format (never by pasting text), so a resource prefix
//! with quotes or wildcards cannot change the policy's meaning.

use serde::{Deserialize, Serialize};

use crate::decision::{ResourceKind, ResourceRef};

/// How far an approval reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GrantScope {
    /// This call, once.
    Once,
    /// This call, for the rest of the mission.
    Mission,
    /// The call's action on resources matching a prefix, for the rest of
    /// the mission.
    Pattern,
}

impl GrantScope {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Once => "once",
            Self::Mission => "mission",
            Self::Pattern => "pattern",
        }
    }
}

impl std::str::FromStr for GrantScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "once" => Ok(Self::Once),
            "mission" => Ok(Self::Mission),
            "pattern" => Ok(Self::Pattern),
            other => Err(format!(
                "unknown grant scope `{other}` (once, mission or pattern)"
            )),
        }
    }
}

/// The digest that identifies one call: SHA-256 (base64url) of the RFC 8785
/// JSON of `{action, resource, context}`. Identical calls share it; any
/// difference in an argument changes it.
pub fn request_digest(
    action: &str,
    resource: &ResourceRef,
    context: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, String> {
    let value = serde_json::json!({
        "action": action,
        "resource": resource,
        "context": context,
    });
    let bytes = serde_jcs::to_vec(&value).map_err(|e| e.to_string())?;
    Ok(crate::b64::s256(&bytes))
}

/// The Cedar `permit` (in Cedar syntax) of a pattern grant: `action` on
/// resources of the same kind (the same route or MCP server) whose id, path
/// or tool name starts with `prefix`. The resource of the approved call
/// must itself match, so a pattern never misses the call it was made for.
pub fn pattern_policy(
    action: &str,
    resource: &ResourceRef,
    prefix: &str,
) -> Result<String, String> {
    let attr =
        |name: &str| serde_json::json!({ ".": { "left": { "Var": "resource" }, "attr": name } });
    let eq = |name: &str, value: &str| serde_json::json!({ "==": { "left": attr(name), "right": { "Value": value } } });
    let (ty, own, field, same) = match &resource.kind {
        ResourceKind::Resource { id } => ("Resource", id, "id", None),
        ResourceKind::Route { route, path } => ("Route", path, "path", Some(eq("route", route))),
        ResourceKind::Tool { server, tool } => ("Tool", tool, "tool", Some(eq("server", server))),
        ResourceKind::McpResource { server, uri } => {
            ("McpResource", uri, "uri", Some(eq("server", server)))
        }
        ResourceKind::Prompt { server, prompt } => {
            ("Prompt", prompt, "prompt", Some(eq("server", server)))
        }
        ResourceKind::McpServer { server } => ("McpServer", server, "server", None),
    };
    if !own.starts_with(prefix) {
        return Err(format!(
            "the prefix `{prefix}` does not cover the approved call's resource `{own}`"
        ));
    }
    let mut pattern = Vec::new();
    if !prefix.is_empty() {
        pattern.push(serde_json::json!({ "Literal": prefix }));
    }
    pattern.push(serde_json::json!("Wildcard"));
    let like = serde_json::json!({ "like": { "left": attr(field), "pattern": pattern } });
    let body = match same {
        Some(s) => serde_json::json!({ "&&": { "left": s, "right": like } }),
        None => like,
    };
    let est = serde_json::json!({
        "effect": "permit",
        "principal": { "op": "All" },
        "action": { "op": "==", "entity": { "type": "Action", "id": action } },
        "resource": { "op": "is", "entity_type": ty },
        "conditions": [ { "kind": "when", "body": body } ],
    });
    let policy = cedar_policy::Policy::from_json(None, est).map_err(|e| e.to_string())?;
    Ok(policy.to_string())
}

/// A grant that covers exactly one call (by request digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactGrant {
    pub id: String,
    pub request_digest: String,
    /// Single use: the approval of "this very call", which is also what a
    /// step-up (`@trust("approved")`) demands.
    pub once: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn res(kind: ResourceKind) -> ResourceRef {
        ResourceRef {
            kind,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn pattern_text_survives_hostile_prefixes() {
        for prefix in ["cust-\"42\" || true", "a*b", "back\\slash", "ünïcode/"] {
            let r = res(ResourceKind::Resource {
                id: format!("{prefix}tail"),
            });
            let text = pattern_policy("refund", &r, prefix).unwrap();
            // Parses back to one permit with the prefix intact.
            let parsed: cedar_policy::Policy = text.parse().unwrap();
            let json = parsed.to_json().unwrap();
            let pattern = json["conditions"][0]["body"]["like"]["pattern"]
                .as_array()
                .unwrap();
            // Every character of the prefix is a literal; one wildcard, last.
            let (last, literals) = pattern.split_last().unwrap();
            assert_eq!(last, "Wildcard", "{text}");
            let literal: String = literals
                .iter()
                .map(|p| p["Literal"].as_str().unwrap())
                .collect();
            assert_eq!(literal, prefix, "{text}");
            assert_eq!(json["effect"], "permit");
        }
    }

    #[test]
    fn pattern_must_cover_the_approved_call() {
        let r = res(ResourceKind::Route {
            route: "billing".into(),
            path: "/refunds/7".into(),
        });
        assert!(pattern_policy("write", &r, "/refunds/").is_ok());
        assert!(pattern_policy("write", &r, "/invoices/").is_err());
    }

    #[test]
    fn digest_changes_with_any_argument() {
        let r = res(ResourceKind::Resource { id: "x".into() });
        let a = serde_json::json!({"amount": 1})
            .as_object()
            .unwrap()
            .clone();
        let b = serde_json::json!({"amount": 2})
            .as_object()
            .unwrap()
            .clone();
        assert_ne!(
            request_digest("refund", &r, &a).unwrap(),
            request_digest("refund", &r, &b).unwrap()
        );
        assert_eq!(
            request_digest("refund", &r, &a).unwrap(),
            request_digest("refund", &r, &a.clone()).unwrap()
        );
    }
}
