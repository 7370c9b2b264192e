//! Gateway routes: configuration, path hygiene, and the mapping of an HTTP
//! request to a Cedar action, resource and context.
//!
//! The path the policy sees is exactly the path the upstream gets. Paths
//! that different parsers could read differently are refused, never
//! normalised: dot segments (plain or percent-encoded), empty segments
//! (`//`), encoded `/` or `\`, a raw `\`, NUL or other control characters,
//! and percent-encodings that do not decode to UTF-8.

use mandate_core::names;
use std::collections::BTreeMap;

use mandate_core::{ResourceKind, ResourceRef, Trust};
use serde::Deserialize;

/// How the gateway authenticates to an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamAuth {
    /// No upstream credential.
    Pass,
    /// A short-lived JWT minted for this upstream alone (RFC 8693 shape).
    TokenExchange,
    /// Governed impersonation: the principal's vaulted secret for this
    /// route, injected after an Allow.
    Vault,
}

/// What the agent gets when the upstream answers 5xx.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamErrors {
    /// `502 upstream_error`, naming the route and the upstream's status,
    /// with nothing of the upstream's body or headers (the server log
    /// gets a summary).
    #[default]
    Mask,
    /// The answer as the upstream gave it (headers still filtered).
    Pass,
}

/// One route as written in `mandate.toml` (`[[routes]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Served under `/gw/{name}/…`.
    pub name: String,
    /// Base URL of the upstream, e.g. `http://127.0.0.1:9001`.
    pub upstream: String,
    #[serde(default = "default_auth")]
    pub auth: UpstreamAuth,
    /// For `token_exchange`: the minted token's `aud` (default: `upstream`).
    pub audience: Option<String>,
    /// Labels, e.g. `untrusted_content`: Cedar resource tags (value `"true"`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// The least trust every call needs: `signed` (default), `attested` or
    /// `approved` (each call approved on its own).
    pub required_trust: Option<Trust>,
    /// Which attested code or workloads may call at all (implies
    /// `attested`): SPIFFE IDs, launchers, code digests, as an agent's
    /// registration names them.
    pub attestation: Option<mandate_core::AttestationRequirement>,
    /// The upstream answers with content nobody vouches for (mail, a
    /// calendar, web pages): its answers taint the mission with these
    /// labels (ADR 0021).
    #[serde(default)]
    pub taint: Vec<String>,
    /// Largest request body (bytes); default 1 MiB.
    pub max_body_bytes: Option<usize>,
    /// Upstream timeout (milliseconds); default 30 s.
    pub timeout_ms: Option<u64>,
    /// Client-address headers (`x-client-ip`, `x-forwarded-for`, …) the
    /// agent's requests may carry to this upstream; every other one is
    /// withheld. Only client-address headers may be listed (see
    /// `header_policy`).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// What the agent gets when the upstream answers 5xx (default `mask`).
    #[serde(default)]
    pub upstream_errors: UpstreamErrors,
    /// How requests map to Cedar; the first rule that matches wins. A
    /// request no rule matches is refused (`no_route_rule`).
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

fn default_auth() -> UpstreamAuth {
    UpstreamAuth::Pass
}

/// `method` + `path` template → `action`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// An HTTP method, or `*` for any.
    pub method: String,
    /// A template: literal segments, `{name}` for one segment, and a final
    /// `{*name}` for the rest. Parameters become resource tags.
    pub path: String,
    /// The Cedar action, e.g. `read` or `refund`.
    pub action: String,
    /// Top-level fields of a JSON body that become the action's context
    /// (e.g. `["amount"]`); the body must then be a JSON object with them.
    #[serde(default)]
    pub context_from_body: Vec<String>,
}

/// A route checked at start.
#[derive(Debug, Clone)]
pub struct Route {
    pub config: RouteConfig,
    rules: Vec<Rule>,
    /// The upstream base URL, parsed once.
    base: reqwest::Url,
    /// `forward_headers`, checked and parsed.
    forward_headers: Vec<axum::http::HeaderName>,
}

#[derive(Debug, Clone)]
struct Rule {
    method: Option<String>,
    segments: Vec<Segment>,
    action: String,
    context_from_body: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

/// A route that cannot be used. Start fails with it.
#[derive(Debug, thiserror::Error)]
#[error("route `{route}`: {message}")]
pub struct RouteError {
    pub route: String,
    /// Where in the route's table: a key such as `upstream` or
    /// `rules[0].path` (empty: the table as a whole).
    pub key: String,
    pub message: String,
}

pub(crate) fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Route {
    /// Checks a route's configuration.
    pub fn new(config: RouteConfig) -> Result<Self, RouteError> {
        let err = |key: &str, m: String| RouteError {
            route: config.name.clone(),
            key: key.to_owned(),
            message: m,
        };
        if !is_word(&config.name) {
            return Err(err(
                "name",
                "the name must be letters, digits, `_` or `-`".into(),
            ));
        }
        let up = config.upstream.trim_end_matches('/');
        let base = reqwest::Url::parse(up)
            .ok()
            .filter(|_| {
                (up.starts_with("http://") || up.starts_with("https://"))
                    && !up.contains(['?', '#', '\\'])
                    && !up.chars().any(|c| c.is_whitespace() || c.is_control())
            })
            .ok_or_else(|| {
                err(
                    "upstream",
                    format!(
                        "upstream `{}` is not an http(s) base URL",
                        crate::config::redact_upstream(&config.upstream)
                    ),
                )
            })?;
        if let Some(r) = &config.attestation {
            r.validate()
                .map_err(|m| err("attestation", format!("attestation: {m}")))?;
        }
        if let Some(l) = config
            .taint
            .iter()
            .find(|l| !mandate_core::valid_taint_label(l))
        {
            return Err(err(
                "taint",
                format!("taint: `{l}` is not a label (1 to 64 of a-z, 0-9, `_`, `-`, `.`)"),
            ));
        }
        if config.rules.is_empty() {
            return Err(err(
                "",
                "no `[[routes.rules]]`: nothing would be allowed".into(),
            ));
        }
        let mut forward_headers = Vec::new();
        for name in &config.forward_headers {
            let h =
                crate::header_policy::forwardable(name).map_err(|m| err("forward_headers", m))?;
            if !forward_headers.contains(&h) {
                forward_headers.push(h);
            }
        }
        let mut rules = Vec::new();
        for (n, r) in config.rules.iter().enumerate() {
            let method = match r.method.as_str() {
                "*" => None,
                m if !m.is_empty() && m.chars().all(|c| c.is_ascii_uppercase()) => {
                    Some(m.to_owned())
                }
                m => {
                    return Err(err(
                        &format!("rules[{n}].method"),
                        format!("method `{m}` must be upper case, or `*`"),
                    ));
                }
            };
            let Some(rest) = r.path.strip_prefix('/') else {
                return Err(err(
                    &format!("rules[{n}].path"),
                    format!("path `{}` must start with `/`", r.path),
                ));
            };
            let mut segments = Vec::new();
            let parts: Vec<&str> = if rest.is_empty() {
                Vec::new()
            } else {
                rest.split('/').collect()
            };
            for (i, p) in parts.iter().enumerate() {
                let seg = if let Some(name) = p.strip_prefix("{*").and_then(|n| n.strip_suffix('}'))
                {
                    if i + 1 != parts.len() {
                        return Err(err(
                            &format!("rules[{n}].path"),
                            format!("`{p}` must be the last segment"),
                        ));
                    }
                    Segment::Rest(name.to_owned())
                } else if let Some(name) = p.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                    Segment::Param(name.to_owned())
                } else {
                    if check_segment(p).is_err() || p.contains(['{', '}']) {
                        return Err(err(
                            &format!("rules[{n}].path"),
                            format!("path segment `{p}` is not a plain segment"),
                        ));
                    }
                    Segment::Literal((*p).to_owned())
                };
                if let Segment::Param(n) | Segment::Rest(n) = &seg
                    && (!is_word(n) || n.starts_with("http_"))
                {
                    return Err(err(
                        &format!("rules[{n}].path"),
                        format!("parameter name `{n}` must be a word not starting with `http_`"),
                    ));
                }
                segments.push(seg);
            }
            if !is_word(&r.action) {
                return Err(err(
                    &format!("rules[{n}].action"),
                    format!("action `{}` must be a word", r.action),
                ));
            }
            rules.push(Rule {
                method,
                segments,
                action: r.action.clone(),
                context_from_body: r.context_from_body.clone(),
            });
        }
        Ok(Self {
            config,
            rules,
            base,
            forward_headers,
        })
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.config.name
    }

    #[must_use]
    pub fn upstream(&self) -> &str {
        self.config.upstream.trim_end_matches('/')
    }

    /// The upstream base URL, parsed.
    #[must_use]
    pub fn base_url(&self) -> &reqwest::Url {
        &self.base
    }

    #[must_use]
    pub fn audience(&self) -> &str {
        self.config.audience.as_deref().unwrap_or(self.upstream())
    }

    /// The client-address headers this route forwards.
    #[must_use]
    pub fn forward_headers(&self) -> &[axum::http::HeaderName] {
        &self.forward_headers
    }

    #[must_use]
    pub fn max_body_bytes(&self) -> usize {
        self.config.max_body_bytes.unwrap_or(1 << 20)
    }

    #[must_use]
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config.timeout_ms.unwrap_or(30_000))
    }

    /// Maps a request to the Cedar action, resource and context. Besides
    /// path parameters and labels, the resource's tags bind the whole
    /// request — `http_method`, and the SHA-256 of the query
    /// (`http_query_s256`), content type (`http_content_type`) and body
    /// (`http_body_s256`) when present — so an approval of "this call"
    /// covers this exact request and no variant of it.
    pub fn map_request(&self, call: &HttpCall<'_>) -> Result<Mapped, MapError> {
        let HttpCall {
            method,
            path,
            query,
            content_type,
            body,
        } = *call;
        let segments: Vec<&str> = match path.strip_prefix('/') {
            Some("") | None => Vec::new(),
            Some(rest) => rest.split('/').collect(),
        };
        let decoded: Vec<String> = segments
            .iter()
            .map(|s| check_segment(s))
            .collect::<Result<_, _>>()?;
        for rule in &self.rules {
            if rule.method.as_deref().is_some_and(|m| m != method) {
                continue;
            }
            let Some(tags) = rule.matches(&decoded) else {
                continue;
            };
            let mut tags = tags;
            for l in &self.config.labels {
                tags.insert(l.clone(), "true".into());
            }
            tags.insert("http_method".into(), method.to_owned());
            if let Some(q) = query {
                tags.insert("http_query_s256".into(), mandate_core::s256(q.as_bytes()));
            }
            if let Some(ct) = content_type {
                tags.insert("http_content_type".into(), ct.to_owned());
            }
            if !body.is_empty() {
                tags.insert("http_body_s256".into(), mandate_core::s256(body));
            }
            let mut context = serde_json::Map::new();
            if !rule.context_from_body.is_empty() {
                // The policy must read the body as the upstream will: JSON
                // by its content type, each key once (also case-insensitively).
                let json = content_type
                    .and_then(|c| c.split(';').next())
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
                if !json {
                    return Err(MapError::Body(
                        "this call's context comes from its body, which must be `application/json`"
                            .into(),
                    ));
                }
                let obj = unique_object(body)?;
                for f in &rule.context_from_body {
                    let value = obj
                        .get(f)
                        .ok_or_else(|| MapError::Body(format!("the body has no `{f}`")))?;
                    context.insert(f.clone(), value.clone());
                }
            }
            return Ok(Mapped {
                action: rule.action.clone(),
                resource: ResourceRef {
                    kind: ResourceKind::Route {
                        route: self.config.name.clone(),
                        path: path.to_owned(),
                    },
                    tags,
                },
                context,
            });
        }
        Err(MapError::NoRule)
    }
}

impl Rule {
    fn matches(&self, path: &[String]) -> Option<BTreeMap<String, String>> {
        let mut tags = BTreeMap::new();
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => {
                    if path.get(i) != Some(l) {
                        return None;
                    }
                }
                Segment::Param(n) => {
                    tags.insert(n.clone(), path.get(i)?.clone());
                }
                Segment::Rest(n) => {
                    let rest = path.get(i..)?;
                    if rest.is_empty() {
                        return None;
                    }
                    tags.insert(n.clone(), rest.join("/"));
                    return Some(tags);
                }
            }
            i += 1;
        }
        (i == path.len()).then_some(tags)
    }
}

/// A request as the gateway received it.
#[derive(Debug, Clone, Copy)]
pub struct HttpCall<'a> {
    pub method: &'a str,
    /// The path under the route, as sent.
    pub path: &'a str,
    /// The raw query, if any.
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// Parses a JSON object whose keys are unique, also ignoring case (parsers
/// differ on which duplicate wins, and some match keys case-insensitively).
fn unique_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, MapError> {
    use serde::de::{Deserializer as _, MapAccess, Visitor};
    struct Unique;
    impl<'de> Visitor<'de> for Unique {
        type Value = Result<serde_json::Map<String, serde_json::Value>, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = serde_json::Map::new();
            let mut seen = std::collections::HashSet::new();
            while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                if !seen.insert(k.to_lowercase()) {
                    return Ok(Err(format!("the body repeats the key `{k}`")));
                }
                out.insert(k, v);
            }
            Ok(Ok(out))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de
        .deserialize_map(Unique)
        .map_err(|_| MapError::Body("the body must be a JSON object".into()))?;
    de.end()
        .map_err(|_| MapError::Body("the body must be one JSON object".into()))?;
    parsed.map_err(MapError::Body)
}

/// A request mapped to Cedar.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub action: String,
    pub resource: ResourceRef,
    pub context: serde_json::Map<String, serde_json::Value>,
}

/// Why a request cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("ambiguous path: {0}")]
    AmbiguousPath(String),
    #[error("no rule of this route matches the request")]
    NoRule,
    #[error("{0}")]
    Body(String),
}

/// Checks one raw path segment and returns it percent-decoded (see
/// [`mandate_core::names`]).
fn check_segment(raw: &str) -> Result<String, MapError> {
    names::check_segment(raw).map_err(MapError::from)
}

/// Checks a whole raw path (under the route): every segment as
/// [`Route::map_request`] would.
pub fn check_path(raw: &str) -> Result<(), MapError> {
    names::check_path(raw).map_err(MapError::from)
}

/// Checks a raw query string: no control characters or spaces.
pub fn check_query(raw: &str) -> Result<(), MapError> {
    names::check_query(raw).map_err(MapError::from)
}

impl From<names::Ambiguous> for MapError {
    fn from(e: names::Ambiguous) -> Self {
        Self::AmbiguousPath(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Route {
        /// A JSON request without a query.
        fn map(&self, method: &str, path: &str, body: &[u8]) -> Result<Mapped, MapError> {
            self.map_request(&HttpCall {
                method,
                path,
                query: None,
                content_type: Some("application/json"),
                body,
            })
        }
    }

    fn route() -> Route {
        Route::new(RouteConfig {
            name: "billing".into(),
            upstream: "http://127.0.0.1:9".into(),
            auth: UpstreamAuth::Pass,
            audience: None,
            labels: vec!["untrusted_content".into()],
            required_trust: None,
            attestation: None,
            taint: Vec::new(),
            max_body_bytes: None,
            timeout_ms: None,
            forward_headers: vec![],
            upstream_errors: UpstreamErrors::Mask,
            rules: vec![
                RuleConfig {
                    method: "GET".into(),
                    path: "/invoices/{id}".into(),
                    action: "read".into(),
                    context_from_body: vec![],
                },
                RuleConfig {
                    method: "POST".into(),
                    path: "/refunds/{id}".into(),
                    action: "refund".into(),
                    context_from_body: vec!["amount".into()],
                },
                RuleConfig {
                    method: "*".into(),
                    path: "/files/{*rest}".into(),
                    action: "read".into(),
                    context_from_body: vec![],
                },
            ],
        })
        .unwrap()
    }

    #[test]
    fn requests_map_to_actions_resources_and_context() {
        let r = route();
        let m = r.map("GET", "/invoices/inv%2042", b"").unwrap();
        assert_eq!(m.action, "read");
        assert_eq!(
            m.resource.tags.get("id").map(String::as_str),
            Some("inv 42")
        );
        assert_eq!(
            m.resource.tags.get("untrusted_content").map(String::as_str),
            Some("true")
        );
        let m = r
            .map("POST", "/refunds/7", br#"{"amount": 75000, "note": "x"}"#)
            .unwrap();
        assert_eq!((m.action.as_str(), m.context.len()), ("refund", 1));
        assert!(matches!(
            r.map("POST", "/refunds/7", b"{}"),
            Err(MapError::Body(_))
        ));
        assert!(matches!(
            r.map("DELETE", "/invoices/1", b""),
            Err(MapError::NoRule)
        ));
        let m = r.map("PUT", "/files/a/b/c.txt", b"").unwrap();
        assert_eq!(
            m.resource.tags.get("rest").map(String::as_str),
            Some("a/b/c.txt")
        );
    }

    #[test]
    fn the_whole_request_is_bound_and_the_body_read_one_way() {
        let r = route();
        let call = |query, ct, body: &'static [u8]| HttpCall {
            method: "POST",
            path: "/refunds/7",
            query,
            content_type: ct,
            body,
        };
        let a = r
            .map_request(&call(None, Some("application/json"), br#"{"amount": 1}"#))
            .unwrap();
        let b = r
            .map_request(&call(
                Some("to=attacker"),
                Some("application/json"),
                br#"{"amount": 1}"#,
            ))
            .unwrap();
        let c = r
            .map_request(&call(
                None,
                Some("application/json"),
                br#"{"amount": 1, "to": "x"}"#,
            ))
            .unwrap();
        // Same context, but not the same request: the resources differ.
        assert_eq!(a.context, b.context);
        assert_eq!(a.context, c.context);
        assert_ne!(a.resource, b.resource);
        assert_ne!(a.resource, c.resource);
        for (ct, body) in [
            (
                Some("application/json"),
                &br#"{"amount": 1, "amount": 999}"#[..],
            ),
            (
                Some("application/json"),
                &br#"{"amount": 1, "AMOUNT": 999}"#[..],
            ),
            (
                Some("application/x-www-form-urlencoded"),
                &br#"{"amount": 1}"#[..],
            ),
            (None, &br#"{"amount": 1}"#[..]),
            (
                Some("application/json"),
                &br#"{"amount": 1} {"amount": 2}"#[..],
            ),
        ] {
            assert!(
                matches!(r.map_request(&call(None, ct, body)), Err(MapError::Body(_))),
                "{ct:?} {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn ambiguous_paths_are_refused_not_normalised() {
        let r = route();
        for p in [
            "/invoices/../hr/1",
            "/invoices/%2e%2e/x",
            "/invoices/%2E",
            "/invoices/a%2fb",
            "/invoices/a%5Cb",
            "/invoices//1",
            "/invoices/a\\b",
            "/invoices/%00",
            "/invoices/%ff",
            "/invoices/%zz",
            "/files/./x",
            "/invoices/%252e",
            "/invoices/%73ecret",
            "/invoices/a%2ab",
            "/files/..;/admin",
            "/invoices/x;jsessionid=1",
            "/invoices/café",
        ] {
            assert!(
                matches!(r.map("GET", p, b""), Err(MapError::AmbiguousPath(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn bad_configuration_is_refused_with_the_route_named() {
        let mut c = route().config;
        c.upstream = "ftp://x".into();
        let e = Route::new(c).unwrap_err();
        assert!(e.to_string().starts_with("route `billing`"), "{e}");
        // A base the URL parser would read otherwise than it is written
        // (trimmed space, backslash as `/`) is refused.
        for up in [
            "http://h/v1 ",
            "http://h/v1\\",
            "http://h/v 1",
            "http://h\\v1",
        ] {
            let mut c = route().config;
            c.upstream = up.into();
            assert!(Route::new(c).is_err(), "{up}");
        }
        let mut c = route().config;
        c.rules[0].path = "/a/{*rest}/b".into();
        assert!(Route::new(c).is_err());
        let mut c = route().config;
        c.rules.clear();
        assert!(Route::new(c).is_err());
    }

    #[test]
    fn a_route_forwards_only_client_address_headers_it_names() {
        let mut c = route().config;
        c.forward_headers = vec!["X-Client-IP".into(), "x-client-ip".into(), "via".into()];
        let r = Route::new(c).unwrap();
        let names: Vec<&str> = r.forward_headers().iter().map(|h| h.as_str()).collect();
        assert_eq!(names, ["x-client-ip", "via"]);
        for (name, why) in [
            ("authorization", "the gateway owns it"),
            ("signature", "the gateway owns it"),
            ("host", "the gateway owns it"),
            ("content-length", "the gateway owns it"),
            ("transfer-encoding", "hop-by-hop"),
            ("x-http-method-override", "other than what was decided"),
            ("x-remote-user", "identity"),
            ("content-type", "forwarded anyway"),
        ] {
            let mut c = route().config;
            c.forward_headers = vec![name.into()];
            let e = Route::new(c).unwrap_err().to_string();
            assert!(
                e.starts_with("route `billing`: `") && e.contains(name) && e.contains(why),
                "{e}"
            );
        }
    }
}
