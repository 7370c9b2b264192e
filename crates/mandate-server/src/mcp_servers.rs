//! MCP upstream servers: configuration, name hygiene, and the mapping of an
//! MCP request (`tools/call`, `resources/read`, `prompts/get`) to a Cedar
//! action, resource and context.
//!
//! The transport and the sessions live in `api/mcp.rs` and `mcp_upstream.rs`.

use std::collections::BTreeMap;

use mandate_core::{ResourceKind, ResourceRef, Trust};
use serde::Deserialize;
use serde_json::Value;

use crate::routes::UpstreamAuth;

/// The protocol revisions the gateway speaks (see ADR 0007). Streamable
/// HTTP exists from 2025-03-26; the messages the gateway inspects
/// (`tools/*`, `resources/*`, `prompts/*`) have the same shape in all of
/// them.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-03-26", "2025-06-18", "2025-11-25"];

/// Default Cedar actions.
pub const CALL_TOOL: &str = "call_tool";
pub const READ_RESOURCE: &str = "read_resource";
pub const GET_PROMPT: &str = "get_prompt";
pub const COMPLETE: &str = "complete";
pub const SET_LOG_LEVEL: &str = "set_log_level";
pub const LIST_RESOURCE_TEMPLATES: &str = "list_resource_templates";
pub const ELICIT: &str = "elicit";

/// One upstream MCP server as written in `mandate.toml` (`[[mcp_servers]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Served to agents at `/mcp/{name}`; the `server` of its tools.
    pub name: String,
    /// A local server: the program, launched over stdio, one process per
    /// MCP session.
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment of the process. Nothing else of the gateway's
    /// environment is passed on, besides `PATH`, `HOME` and `LANG`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// For a local server: run it as this user and group (recommended: a
    /// server with file or shell access running as the gateway's own user
    /// could read the gateway's data directory, keys included).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// For a local server: let it ask the agent's client directly
    /// (elicitation). Off by default: a server that asks "are you sure?"
    /// would be answered by the governed agent itself.
    #[serde(default)]
    pub allow_elicitation: bool,
    /// Hand the server the agent's client's roots (`roots/list`). Off by
    /// default: the directory limits the operator gave the server would be
    /// replaced by whatever the client says.
    #[serde(default)]
    pub allow_roots: bool,
    /// Most sessions open with this server at once, all missions together
    /// (default 64).
    pub max_sessions: Option<usize>,
    /// A remote server: its streamable HTTP endpoint.
    pub url: Option<String>,
    /// For a remote server: `pass` (default) or `token_exchange`.
    #[serde(default = "default_auth")]
    pub auth: UpstreamAuth,
    /// For `token_exchange`: the minted token's `aud` (default: `url`).
    pub audience: Option<String>,
    /// Labels: Cedar resource tags (value `"true"`) on every tool,
    /// resource and prompt of this server.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The least trust every call needs (`approved`: each call approved).
    pub required_trust: Option<Trust>,
    /// Which attested code or workloads may call at all (implies
    /// `attested`), as an agent's registration names them.
    pub attestation: Option<mandate_core::AttestationRequirement>,
    /// The server answers with content nobody vouches for: the results of
    /// its tools, resources and prompts taint the mission with these
    /// labels, unless a tool says otherwise (ADR 0021).
    #[serde(default)]
    pub taint: Vec<String>,
    /// Whether the server's own metadata — its `initialize` instructions
    /// and its listings (tool, resource and prompt descriptions) — taints
    /// as well (default: yes; a server whose metadata you vetted may say
    /// no).
    pub taint_metadata: Option<bool>,
    /// Largest JSON-RPC message from the agent or the server (bytes);
    /// default 1 MiB.
    pub max_message_bytes: Option<usize>,
    /// How long one request may take upstream (milliseconds); default 60 s.
    pub timeout_ms: Option<u64>,
    /// Record the arguments of each call in the audit log (default: only
    /// their SHA-256).
    #[serde(default)]
    pub record_arguments: bool,
    /// Most open MCP sessions (and, for a local server, processes) one
    /// mission may have; default 4. At the limit, a new `initialize` ends
    /// the mission's session idle longest (ADR 0022).
    pub max_sessions_per_mission: Option<usize>,
    /// A session with no request in flight and no stream open for this
    /// long is closed (seconds); default 600.
    pub idle_timeout_secs: Option<u64>,
    /// Tools mapped to actions of their own (default: `call_tool`).
    #[serde(default)]
    pub tools: Vec<McpToolConfig>,
    /// How agents prove they hold the mission key on `/mcp/{name}`:
    /// `signature` (RFC 9421), `dpop` (RFC 9449) or `either` (default).
    #[serde(default)]
    pub proof: ProofMode,
    /// The revision the gateway speaks to the server for stateless
    /// (2026-07-28) clients: `auto` (default: `server/discover` first, the
    /// session era if the server does not speak 2026-07-28), `2026-07-28`,
    /// or `session`. Session-era clients are always served in the session
    /// era.
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
}

/// What a mission's stateless channel speaks to its server (ADR 0024).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum UpstreamProtocol {
    /// Ask (`server/discover`), and fall back to the session era.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// 2026-07-28 only.
    #[serde(rename = "2026-07-28")]
    Stateless,
    /// The session era only (`initialize`).
    #[serde(rename = "session")]
    Session,
}

fn default_auth() -> UpstreamAuth {
    UpstreamAuth::Pass
}

/// The proofs of possession of the mission key a server's endpoint takes
/// (ADR 0023). An RFC 9421 signature covers the message and the session
/// id; a DPoP proof covers the method and URL only (the message is bound
/// by TLS), so an operator can insist on signatures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofMode {
    /// RFC 9421 signatures only.
    Signature,
    /// DPoP proofs only.
    Dpop,
    /// Either, one per request.
    #[default]
    Either,
}

impl ProofMode {
    /// Whether an RFC 9421 signature is taken.
    #[must_use]
    pub fn takes_signature(self) -> bool {
        matches!(self, Self::Signature | Self::Either)
    }

    /// Whether a DPoP proof is taken.
    #[must_use]
    pub fn takes_dpop(self) -> bool {
        matches!(self, Self::Dpop | Self::Either)
    }
}

/// A tool with its own Cedar action, and the arguments policy sees.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpToolConfig {
    pub name: String,
    /// The Cedar action, e.g. `refund` (declared in the organisation's
    /// schema with the context below).
    pub action: String,
    /// Top-level arguments that become the action's context (e.g.
    /// `["amount"]`); a call without them is refused.
    #[serde(default)]
    pub context_from_arguments: Vec<String>,
    /// The labels this tool's results taint the mission with, instead of
    /// the server's `taint` (`[]`: this tool's results are trusted).
    pub taint: Option<Vec<String>>,
}

/// A server checked at start.
#[derive(Debug, Clone)]
pub struct McpServer {
    pub config: McpServerConfig,
}

/// How the gateway reaches the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Stdio { command: String, args: Vec<String> },
    Http { url: String },
}

/// A server that cannot be used. Start fails with it.
#[derive(Debug, thiserror::Error)]
#[error("MCP server `{server}`: {message}")]
pub struct McpConfigError {
    pub server: String,
    /// Where in the server's table: a key such as `url` or
    /// `tools[0].action` (empty: the table as a whole).
    pub key: String,
    pub message: String,
}

/// What an MCP request is decided as.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub action: String,
    pub resource: ResourceRef,
    pub context: serde_json::Map<String, Value>,
    /// SHA-256 of the RFC 8785 form of the arguments (`{}` if none).
    pub arguments_s256: String,
}

/// Why an MCP request cannot be mapped: a JSON-RPC "invalid params".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MapError(pub String);

impl McpServer {
    /// Checks a server's configuration.
    pub fn new(config: McpServerConfig) -> Result<Self, McpConfigError> {
        let err = |key: &str, message: String| McpConfigError {
            server: config.name.clone(),
            key: key.to_owned(),
            message,
        };
        if !crate::routes::is_word(&config.name) {
            return Err(err(
                "name",
                "the name must be letters, digits, `_` or `-` (it is a URL segment)".into(),
            ));
        }
        if let Some(r) = &config.attestation {
            r.validate()
                .map_err(|m| err("attestation", format!("attestation: {m}")))?;
        }
        let labels = config
            .taint
            .iter()
            .chain(config.tools.iter().flat_map(|t| t.taint.iter().flatten()));
        if let Some(l) = labels.clone().find(|l| !mandate_core::valid_taint_label(l)) {
            return Err(err(
                "taint",
                format!("taint: `{l}` is not a label (1 to 64 of a-z, 0-9, `_`, `-`, `.`)"),
            ));
        }
        match (&config.command, &config.url) {
            (Some(c), None) if !c.trim().is_empty() => {}
            (None, Some(u)) if u.starts_with("http://") || u.starts_with("https://") => {}
            (None, Some(u)) => {
                return Err(err(
                    "url",
                    format!(
                        "`url` `{}` is not an http(s) URL",
                        crate::config::redact_upstream(u)
                    ),
                ));
            }
            _ => {
                return Err(err(
                    "",
                    "give exactly one of `command` (a local stdio server) or `url` (a remote one)"
                        .into(),
                ));
            }
        }
        match config.auth {
            UpstreamAuth::Pass => {}
            UpstreamAuth::TokenExchange if config.url.is_some() => {}
            UpstreamAuth::TokenExchange => {
                return Err(err(
                    "auth",
                    "`token_exchange` is for remote servers (`url`); a local one gets no token"
                        .into(),
                ));
            }
            UpstreamAuth::Vault => {
                return Err(err(
                    "auth",
                    "`vault` is not supported for MCP servers; use `pass` or `token_exchange`"
                        .into(),
                ));
            }
        }
        if config.max_message_bytes == Some(0)
            || config.timeout_ms == Some(0)
            || config.max_sessions_per_mission == Some(0)
            || config.max_sessions == Some(0)
            || config.idle_timeout_secs == Some(0)
        {
            return Err(err("", 
                "max_message_bytes, timeout_ms, max_sessions, max_sessions_per_mission and idle_timeout_secs must be ≥ 1"
                    .into(),
            ));
        }
        if config.url.is_some() && (config.uid.is_some() || config.gid.is_some()) {
            return Err(err(
                "uid",
                "`uid` and `gid` are for local servers (`command`)".into(),
            ));
        }
        if config.command.is_some() && config.audience.is_some() {
            return Err(err(
                "audience",
                "`audience` is for remote servers with `token_exchange`".into(),
            ));
        }
        for l in &config.labels {
            if !crate::routes::is_word(l) {
                return Err(err("labels", format!("label `{l}` must be a word")));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (n, t) in config.tools.iter().enumerate() {
            if !mandate_core::names::valid_name(&t.name) {
                return Err(err(
                    &format!("tools[{n}].name"),
                    format!("tool name `{}` is not a valid MCP name", t.name),
                ));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(err(
                    &format!("tools[{n}].name"),
                    format!("tool `{}` is mapped twice", t.name),
                ));
            }
            if !crate::routes::is_word(&t.action) {
                return Err(err(
                    &format!("tools[{n}].action"),
                    format!("tool `{}`: action `{}` must be a word", t.name, t.action),
                ));
            }
            for f in &t.context_from_arguments {
                if f == "trust" || f == "time" || f.is_empty() {
                    return Err(err(
                        &format!("tools[{n}].context_from_arguments"),
                        format!("tool `{}`: `{f}` cannot come from the arguments", t.name),
                    ));
                }
            }
        }
        Ok(Self { config })
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.config.name
    }

    #[must_use]
    pub fn transport(&self) -> Transport {
        match (&self.config.command, &self.config.url) {
            (Some(command), _) => Transport::Stdio {
                command: command.clone(),
                args: self.config.args.clone(),
            },
            (None, url) => Transport::Http {
                url: url.clone().unwrap_or_default(),
            },
        }
    }

    #[must_use]
    pub fn audience(&self) -> &str {
        self.config
            .audience
            .as_deref()
            .or(self.config.url.as_deref())
            .unwrap_or(&self.config.name)
    }

    #[must_use]
    pub fn max_message_bytes(&self) -> usize {
        self.config.max_message_bytes.unwrap_or(1 << 20)
    }

    #[must_use]
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config.timeout_ms.unwrap_or(60_000))
    }

    #[must_use]
    pub fn max_sessions_per_mission(&self) -> usize {
        self.config.max_sessions_per_mission.unwrap_or(4)
    }

    #[must_use]
    pub fn max_sessions(&self) -> usize {
        self.config.max_sessions.unwrap_or(64)
    }

    #[must_use]
    pub fn proof(&self) -> ProofMode {
        self.config.proof
    }

    /// What a stateless channel speaks to this server, local or remote.
    #[must_use]
    pub fn upstream_protocol(&self) -> UpstreamProtocol {
        self.config.upstream_protocol
    }

    /// Whether the server may ask the agent's client (elicitation).
    #[must_use]
    pub fn allows_elicitation(&self) -> bool {
        self.config.allow_elicitation
    }

    /// Whether the server may ask the agent's client for its roots.
    #[must_use]
    pub fn allows_roots(&self) -> bool {
        self.config.allow_roots
    }

    /// How long a session may sit idle (nothing in flight, no stream open)
    /// before it is closed.
    #[must_use]
    pub fn idle_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.config.idle_timeout_secs.unwrap_or(600))
    }

    /// The labels a result of `method` on `name` (a tool, resource URI or
    /// prompt) taints the mission with.
    #[must_use]
    pub fn taint_for(&self, method: &str, name: &str) -> Vec<String> {
        let tool = (method == "tools/call")
            .then(|| self.config.tools.iter().find(|t| t.name == name))
            .flatten();
        match tool.and_then(|t| t.taint.as_ref()) {
            Some(labels) => labels.clone(),
            None => self.config.taint.clone(),
        }
    }

    /// The labels what the server sends on its own (requests,
    /// notifications) taints the mission with.
    #[must_use]
    pub fn taint_unasked(&self) -> &[String] {
        &self.config.taint
    }

    /// The labels the server's metadata (`initialize` instructions,
    /// listings) taints the mission with.
    #[must_use]
    pub fn taint_metadata(&self) -> &[String] {
        if self.config.taint_metadata.unwrap_or(true) {
            &self.config.taint
        } else {
            &[]
        }
    }

    #[must_use]
    pub fn required_trust(&self) -> Trust {
        let least = if self.config.attestation.is_some() {
            Trust::Attested
        } else {
            Trust::Signed
        };
        self.config
            .required_trust
            .unwrap_or(Trust::Signed)
            .max(least)
    }

    fn tags(&self) -> BTreeMap<String, String> {
        self.config
            .labels
            .iter()
            .map(|l| (l.clone(), "true".to_owned()))
            .collect()
    }

    fn tool_rule(&self, tool: &str) -> Option<&McpToolConfig> {
        self.config.tools.iter().find(|t| t.name == tool)
    }

    /// The action and resource a tool is listed (and decided) as, without
    /// arguments.
    #[must_use]
    pub fn tool_resource(&self, tool: &str) -> (String, ResourceRef) {
        let action = self
            .tool_rule(tool)
            .map_or(CALL_TOOL, |r| r.action.as_str())
            .to_owned();
        let resource = ResourceRef {
            kind: ResourceKind::Tool {
                server: self.name().to_owned(),
                tool: tool.to_owned(),
            },
            tags: self.tags(),
        };
        (action, resource)
    }

    /// A resource of this server, by URI.
    #[must_use]
    pub fn resource_ref(&self, uri: &str) -> (String, ResourceRef) {
        let resource = ResourceRef {
            kind: ResourceKind::McpResource {
                server: self.name().to_owned(),
                uri: uri.to_owned(),
            },
            tags: self.tags(),
        };
        (READ_RESOURCE.to_owned(), resource)
    }

    /// A prompt of this server, by name.
    #[must_use]
    pub fn prompt_ref(&self, prompt: &str) -> (String, ResourceRef) {
        let resource = ResourceRef {
            kind: ResourceKind::Prompt {
                server: self.name().to_owned(),
                prompt: prompt.to_owned(),
            },
            tags: self.tags(),
        };
        (GET_PROMPT.to_owned(), resource)
    }

    /// This server as a whole.
    #[must_use]
    pub fn server_ref(&self) -> ResourceRef {
        ResourceRef {
            kind: ResourceKind::McpServer {
                server: self.name().to_owned(),
            },
            tags: self.tags(),
        }
    }

    /// Maps a gated request to what policy decides. The resource's tags
    /// bind the exact arguments (`mcp_arguments_s256`), so an approval of
    /// "this call" covers these arguments and no others.
    pub fn map(&self, method: &str, params: Option<&Value>) -> Result<Mapped, MapError> {
        let params = match params {
            None => &Value::Null,
            Some(p) if p.is_object() => p,
            Some(_) => return Err(MapError("`params` must be an object".into())),
        };
        let text = |field: &str| {
            params
                .get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| MapError(format!("`params.{field}` must be a string")))
        };
        let arguments = match method {
            // What the request asks besides its target: bound like a
            // call's arguments.
            "completion/complete" | "logging/setLevel" => params
                .as_object()
                .map(|p| {
                    p.iter()
                        .filter(|(k, _)| matches!(k.as_str(), "argument" | "context" | "level"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            "resources/templates/list" => serde_json::Map::new(),
            _ => match params.get("arguments") {
                None | Some(Value::Null) => serde_json::Map::new(),
                Some(Value::Object(m)) => m.clone(),
                Some(_) => return Err(MapError("`params.arguments` must be an object".into())),
            },
        };
        let arguments_s256 = mandate_core::s256(
            &serde_jcs::to_vec(&arguments)
                .map_err(|e| MapError(format!("the arguments cannot be canonicalised: {e}")))?,
        );
        let (action, mut resource, fields): (String, ResourceRef, &[String]) = match method {
            "tools/call" => {
                let name = text("name")?;
                if !mandate_core::names::valid_name(name) {
                    return Err(MapError(format!("`{name}` is not a valid tool name")));
                }
                let (action, resource) = self.tool_resource(name);
                let fields = self
                    .tool_rule(name)
                    .map_or(&[][..], |r| r.context_from_arguments.as_slice());
                (action, resource, fields)
            }
            "resources/read" | "resources/subscribe" => {
                let uri = text("uri")?;
                if !mandate_core::names::valid_uri(uri) {
                    return Err(MapError("the resource URI is not acceptable".into()));
                }
                let (a, r) = self.resource_ref(uri);
                (a, r, &[][..])
            }
            "prompts/get" => {
                let name = text("name")?;
                if !mandate_core::names::valid_name(name) {
                    return Err(MapError(format!("`{name}` is not a valid prompt name")));
                }
                let (a, r) = self.prompt_ref(name);
                (a, r, &[][..])
            }
            "completion/complete" => {
                let r = params
                    .get("ref")
                    .filter(|r| r.is_object())
                    .ok_or_else(|| MapError("`params.ref` must be an object".into()))?;
                let field = |f: &str| {
                    r.get(f)
                        .and_then(Value::as_str)
                        .ok_or_else(|| MapError(format!("`params.ref.{f}` must be a string")))
                };
                let resource = match r.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => {
                        let name = field("name")?;
                        if !mandate_core::names::valid_name(name) {
                            return Err(MapError(format!("`{name}` is not a valid prompt name")));
                        }
                        self.prompt_ref(name).1
                    }
                    Some("ref/resource") => {
                        let uri = field("uri")?;
                        if !mandate_core::names::valid_uri(uri) {
                            return Err(MapError("the resource URI is not acceptable".into()));
                        }
                        self.resource_ref(uri).1
                    }
                    _ => {
                        return Err(MapError(
                            "`params.ref.type` must be `ref/prompt` or `ref/resource`".into(),
                        ));
                    }
                };
                (COMPLETE.to_owned(), resource, &[][..])
            }
            "logging/setLevel" => {
                if !params.get("level").is_some_and(Value::is_string) {
                    return Err(MapError("`params.level` must be a string".into()));
                }
                (SET_LOG_LEVEL.to_owned(), self.server_ref(), &[][..])
            }
            "resources/templates/list" => (
                LIST_RESOURCE_TEMPLATES.to_owned(),
                self.server_ref(),
                &[][..],
            ),
            other => return Err(MapError(format!("`{other}` is not decided"))),
        };
        let mut context = serde_json::Map::new();
        for f in fields {
            let v = arguments
                .get(f)
                .ok_or_else(|| MapError(format!("the call needs the argument `{f}`")))?;
            context.insert(f.clone(), v.clone());
        }
        resource
            .tags
            .insert("mcp_arguments_s256".into(), arguments_s256.clone());
        // Reading and subscribing are the same action, not the same call.
        resource.tags.insert("mcp_method".into(), method.to_owned());
        Ok(Mapped {
            action,
            resource,
            context,
            arguments_s256,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "test code: a failed unwrap is a failed test"
    )]
    use super::*;
    use serde_json::json;

    fn server(extra: &str) -> Result<McpServer, McpConfigError> {
        let text = format!("name = \"billing\"\ncommand = \"billing-mcp\"\n{extra}");
        McpServer::new(toml::from_str(&text).unwrap())
    }

    #[test]
    fn what_else_the_gateway_decides_maps_to_its_own_actions() {
        let s = server("").unwrap();
        let m = s
            .map(
                "completion/complete",
                Some(&json!({"ref": {"type": "ref/prompt", "name": "summary"},
                    "argument": {"name": "topic", "value": "gi"}})),
            )
            .unwrap();
        assert_eq!(m.action, COMPLETE);
        assert_eq!(
            m.resource.kind,
            ResourceKind::Prompt {
                server: "billing".into(),
                prompt: "summary".into()
            }
        );
        // The value being completed is bound like a call's arguments.
        let other = s
            .map(
                "completion/complete",
                Some(&json!({"ref": {"type": "ref/prompt", "name": "summary"},
                    "argument": {"name": "topic", "value": "xx"}})),
            )
            .unwrap();
        assert_ne!(m.arguments_s256, other.arguments_s256);
        let level = s
            .map("logging/setLevel", Some(&json!({"level": "debug"})))
            .unwrap();
        assert_eq!(level.action, SET_LOG_LEVEL);
        assert_eq!(
            level.resource.kind,
            ResourceKind::McpServer {
                server: "billing".into()
            }
        );
        let templates = s.map("resources/templates/list", None).unwrap();
        assert_eq!(templates.action, LIST_RESOURCE_TEMPLATES);
        for bad in [
            json!({"ref": {"type": "ref/tool", "name": "x"}}),
            json!({"ref": {"type": "ref/prompt", "name": "../x"}}),
            json!({"ref": {"type": "ref/resource", "uri": "file:///a/../b"}}),
        ] {
            assert!(s.map("completion/complete", Some(&bad)).is_err(), "{bad}");
        }
        assert!(s.map("logging/setLevel", Some(&json!({}))).is_err());
    }

    #[test]
    fn tool_calls_map_to_actions_with_their_arguments_bound() {
        let s = server(
            "labels = [\"finance\"]\n[[tools]]\nname = \"refund\"\naction = \"refund\"\ncontext_from_arguments = [\"amount\"]\n",
        )
        .unwrap();
        let m = s
            .map(
                "tools/call",
                Some(&json!({"name": "refund", "arguments": {"amount": 120, "invoice": "7"}})),
            )
            .unwrap();
        assert_eq!(m.action, "refund");
        assert_eq!(
            m.context,
            json!({"amount": 120}).as_object().cloned().unwrap()
        );
        assert_eq!(m.resource.tags["finance"], "true");
        // Other arguments change the binding, not the context.
        let other = s
            .map(
                "tools/call",
                Some(&json!({"name": "refund", "arguments": {"amount": 120, "invoice": "8"}})),
            )
            .unwrap();
        assert_ne!(m.arguments_s256, other.arguments_s256);
        assert_ne!(m.resource, other.resource);
        // Unmapped tools are `call_tool`, arguments only bound.
        let m = s
            .map("tools/call", Some(&json!({"name": "lookup"})))
            .unwrap();
        assert_eq!(m.action, "call_tool");
        assert!(m.context.is_empty());
        // A mapped tool without its argument is refused.
        assert!(
            s.map(
                "tools/call",
                Some(&json!({"name": "refund", "arguments": {}}))
            )
            .is_err()
        );
        let r = s
            .map("resources/read", Some(&json!({"uri": "file:///a.txt"})))
            .unwrap();
        assert_eq!(r.action, "read_resource");
        let p = s
            .map("prompts/get", Some(&json!({"name": "summary"})))
            .unwrap();
        assert_eq!(p.action, "get_prompt");
    }

    #[test]
    fn names_with_path_tricks_are_refused() {
        let s = server("").unwrap();
        for bad in [
            "../hr/export",
            "git/reset",
            "..",
            "",
            "a b",
            "reset\u{0}",
            "x\\y",
            &"a".repeat(129),
        ] {
            assert!(
                s.map("tools/call", Some(&json!({ "name": bad }))).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert!(
            s.map("tools/call", Some(&json!({"name": "ok", "arguments": [1]})))
                .is_err()
        );
        assert!(s.map("tools/call", Some(&json!("x"))).is_err());
        assert!(
            s.map("resources/read", Some(&json!({"uri": "file:///a b"})))
                .is_err()
        );
        for bad in [
            "file:///srv/project/../../etc/shadow",
            "file:////etc/shadow",
            "file://localhost/etc/shadow",
            "FILE:///etc/shadow",
            "file:///%65tc/shadow",
            "file:///srv/project/..%2f..%2fetc/passwd",
            "file:///srv/./x",
            "file:///srv/x#frag",
            "https://user@host/x",
            "file:///srv\\x",
            "no-scheme",
            "file:/etc/shadow",
            "file:etc/shadow",
            "file:",
            "file:///etc/shadow?",
            "file:///srv/project/x?/../../../etc/shadow",
            "notes://PUBLIC",
            "notes://host:443/x",
        ] {
            assert!(
                s.map("resources/read", Some(&json!({ "uri": bad })))
                    .is_err(),
                "{bad:?} was accepted"
            );
        }
        for good in [
            "file:///srv/project/a.txt",
            "notes://public",
            "db://main/t?x=1",
        ] {
            assert!(
                s.map("resources/read", Some(&json!({ "uri": good })))
                    .is_ok(),
                "{good:?} was refused"
            );
        }
    }

    #[test]
    fn bad_configuration_is_refused_with_the_server_named() {
        for (extra, needle) in [
            ("url = \"http://x\"", "exactly one"),
            ("auth = \"vault\"", "vault"),
            ("auth = \"token_exchange\"", "remote"),
            ("max_message_bytes = 0", "≥ 1"),
            ("idle_timeout_secs = 0", "≥ 1"),
            (
                "[[tools]]\nname = \"a/b\"\naction = \"read\"",
                "not a valid MCP name",
            ),
            (
                "[[tools]]\nname = \"a\"\naction = \"read\"\n[[tools]]\nname = \"a\"\naction = \"write\"",
                "twice",
            ),
            (
                "[[tools]]\nname = \"a\"\naction = \"read\"\ncontext_from_arguments = [\"trust\"]",
                "cannot come",
            ),
        ] {
            let e = server(extra).unwrap_err().to_string();
            assert!(e.contains("billing") && e.contains(needle), "{extra}: {e}");
        }
        let e =
            McpServer::new(toml::from_str("name = \"a/b\"\ncommand = \"x\"").unwrap()).unwrap_err();
        assert!(e.to_string().contains("URL segment"));
    }

    #[test]
    fn the_proof_of_possession_is_one_of_three() {
        assert_eq!(server("").unwrap().proof(), ProofMode::Either);
        for (text, mode) in [
            ("signature", ProofMode::Signature),
            ("dpop", ProofMode::Dpop),
            ("either", ProofMode::Either),
        ] {
            let s = server(&format!("proof = \"{text}\"")).unwrap();
            assert_eq!(s.proof(), mode);
            assert_eq!(
                (mode.takes_signature(), mode.takes_dpop()),
                (text != "dpop", text != "signature")
            );
        }
        // Anything else stops the load, naming what is accepted.
        for bad in ["bearer", "DPoP", "none", ""] {
            let text = format!("name = \"billing\"\ncommand = \"x\"\nproof = \"{bad}\"");
            let e = toml::from_str::<McpServerConfig>(&text)
                .unwrap_err()
                .to_string();
            assert!(e.contains("signature") && e.contains("dpop"), "{bad}: {e}");
        }
    }
}
