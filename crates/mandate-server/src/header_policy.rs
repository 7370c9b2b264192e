//! Which headers cross the gateway, each way. The one place the lists
//! live: the HTTP gateway forwards by them and a route's allow list is
//! checked against them. (The MCP gateway's remote upstreams need none of
//! this: they get no header of the agent's at all, and none of theirs
//! reaches the agent; see `mcp_upstream`.)
//!
//! **Upstream.** An upstream reads some headers as facts its own proxy
//! vouches for: where the client connected from, who it is, which URL or
//! method it "really" asked for, how to route it. Behind Mandate, the
//! gateway *is* that proxy, so an agent that sets one of these would speak
//! with the proxy's voice: spoof its address past an IP allow list or
//! rate limit, claim an identity, or make the upstream do other than what
//! was decided. Every such header is withheld ([`withheld`]). Of them, a
//! route may forward only the client-address headers, by name
//! (`forward_headers`); hop-by-hop headers, the gateway's own, rewrites
//! and identities never cross ([`Withheld::allowable`]).
//!
//! **Downstream.** An upstream's answer reaches the agent without
//! hop-by-hop headers, without a session (`Set-Cookie`,
//! `Authentication-Info`), without headers that instruct a proxy in front
//! of Mandate (`X-Accel-*`, `X-Sendfile`, `Alt-Svc`), and without headers
//! that describe the upstream's software, versions, hosts or debugging
//! aids ([`strip_downstream`]).
//!
//! Names are compared lower case, as `http::HeaderName` holds them.

/// Why a request header is not forwarded upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// Hop-by-hop (RFC 9110 §7.6.1): about one connection, not the request.
    HopByHop,
    /// The gateway's own: `Host` and `Content-Length` (it sets them for the
    /// upstream connection), credentials (the upstream's only credential is
    /// the one the route's `auth` sets), and Mandate's signature headers.
    GatewayOwned,
    /// Would make the upstream do other than what was decided: method
    /// overrides, URL rewrites, a proxy's routing instructions, internal
    /// sub-request markers.
    Rewrite,
    /// Asserts who the caller is, as an authenticating proxy in front of
    /// the upstream would (SSO headers, mTLS client certificates).
    Identity,
    /// Claims where the client connects from (address, host, scheme or
    /// port it used). A route may forward these by name.
    ClientAddress,
    /// Set by a proxy or CDN in front of an upstream, in a family the
    /// gateway drops whole (the prefix); only its client-address members
    /// listed in [`CLIENT_ADDRESS`] may be forwarded.
    ProxyFamily(&'static str),
}

impl Withheld {
    /// Whether a route's `forward_headers` may name a header withheld for
    /// this reason: only client-address headers. The others would let the
    /// agent speak for the connection, for the gateway, for a person, or
    /// change what is done.
    #[must_use]
    pub fn allowable(self) -> bool {
        self == Self::ClientAddress
    }

    /// Why, in a sentence's tail (for configuration errors).
    #[must_use]
    pub fn reason(self) -> String {
        match self {
            Self::HopByHop => "it is hop-by-hop".into(),
            Self::GatewayOwned => "the gateway owns it".into(),
            Self::Rewrite => "it would make the upstream do other than what was decided".into(),
            Self::Identity => "it asserts an identity the upstream would trust".into(),
            Self::ClientAddress => "it is a client-address header".into(),
            Self::ProxyFamily(p) => format!(
                "it is in the `{p}*` family, whose only forwardable members are the \
                 client-address headers docs/gateway.md lists"
            ),
        }
    }
}

/// Hop-by-hop (RFC 9110 §7.6.1, and the legacy `Proxy-Connection`; HTTP/2
/// `HTTP2-Settings`, RFC 7540 §3.2.1). Any header the request's
/// `Connection` names is hop-by-hop too (checked by the forwarder).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// The gateway's own. `Authorization` and `Cookie`: an agent never hands
/// an upstream credentials of its choosing (on a vault route it would
/// otherwise pick the session). `DPoP`: a proof by the mission key, for
/// Mandate alone, as the credential is. The signature headers and
/// `Mandate-Justification`: Mandate's, checked and recorded here.
const GATEWAY_OWNED: &[&str] = &[
    "host",
    "content-length",
    "authorization",
    "cookie",
    "dpop",
    "signature",
    "signature-input",
    "signature-key",
    "mandate-justification",
];

/// Rewrites: method overrides (Rails, Express `method-override`, Google
/// APIs, ASP.NET), URL rewrites (IIS `X-Original-URL` / `X-Rewrite-URL`,
/// honoured by Symfony and Zend), host overrides, and Next.js's internal
/// sub-request marker (CVE-2025-29927: it skips the middleware that
/// authenticates).
const REWRITE: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-rewrite-url",
    "x-http-host-override",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-middleware-subrequest",
];

/// Prefixes of rewrite families: `X-Original-*` (URL, URI, method, host a
/// proxy rewrote), `X-Envoy-*` (Envoy trusts them from internal callers:
/// retries, timeouts, original path, original destination host),
/// `X-Middleware-*` and `X-Invoke-*` (Next.js internal routing).
const REWRITE_PREFIXES: &[&str] = &["x-original-", "x-envoy-", "x-middleware-", "x-invoke-"];

/// Identities an authenticating proxy sets for the application behind it:
/// Apache/nginx `Remote-User`, oauth2-proxy, Kong, Azure App Service,
/// Google IAP, Cloudflare Access, AWS ALB (OIDC and mTLS), and client
/// certificates forwarded by TLS terminators (Envoy XFCC, nginx, IIS ARR).
const IDENTITY: &[&str] = &[
    "remote-user",
    "x-remote-user",
    "x-webauth-user",
    "x-authenticated-user",
    "x-authenticated-userid",
    "x-credential-identifier",
    "x-anonymous-consumer",
    "x-userinfo",
    "x-id-token",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-forwarded-client-cert",
    "x-client-cert",
    "x-client-verify",
    "x-client-dn",
    "x-arr-clientcert",
    "x-goog-iap-jwt-assertion",
];

/// Prefixes of identity families (`X-Auth-*`, `X-User*` and `X-Remote-*`
/// as before; the rest named in [`IDENTITY`]'s comment).
const IDENTITY_PREFIXES: &[&str] = &[
    "x-auth-",
    "x-user",
    "x-remote-",
    "x-ssl-",
    "ssl-client-",
    "x-consumer-",
    "x-amzn-oidc-",
    "x-amzn-mtls-",
    "x-ms-client-principal",
    "x-ms-token-",
    "x-goog-authenticated-user-",
    "cf-access-",
];

/// Client-address headers: the only ones a route may forward by name.
/// RFC 7239 `Forwarded` and RFC 9110 `Via`; the de-facto `X-Forwarded-*`
/// (for, host, proto, port, server, scheme, ssl) and their variants
/// (`Forwarded-For`, `X-Forward-For`, `X-Forwarded`); nginx `X-Real-IP`,
/// and nginx-ingress `X-Original-Forwarded-For`; the headers WAF-bypass
/// and IP-spoofing lists try (`X-Client-IP`, `Client-IP`,
/// `X-Cluster-Client-IP`, `X-Originating-IP`, `X-Remote-IP`,
/// `X-Remote-Addr`, `X-ProxyUser-IP`, `X-Host`,
/// `X-Custom-IP-Authorization`); WebLogic and Apache proxy plugins;
/// Envoy's `X-Envoy-External-Address`; and the CDNs' and platforms'
/// (Akamai `True-Client-IP` and `Akamai-Origin-Hop`, Cloudflare, Fastly,
/// Azure Front Door, App Engine, Vercel, Netlify, Fly.io, DigitalOcean).
pub const CLIENT_ADDRESS: &[&str] = &[
    "forwarded",
    "via",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-forwarded",
    "forwarded-for",
    "x-forward-for",
    "x-forwarded-for-original",
    "x-original-forwarded-for",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "x-true-client-ip",
    "x-cluster-client-ip",
    "cluster-client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-proxyuser-ip",
    "x-host",
    "x-custom-ip-authorization",
    "wl-proxy-client-ip",
    "proxy-client-ip",
    "x-envoy-external-address",
    "akamai-origin-hop",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "cf-pseudo-ipv4",
    "cf-ipcountry",
    "fastly-client-ip",
    "x-azure-clientip",
    "x-azure-socketip",
    "x-appengine-user-ip",
    "x-vercel-forwarded-for",
    "x-nf-client-connection-ip",
    "fly-client-ip",
    "do-connecting-ip",
];

/// Families a proxy or CDN sets in front of an upstream, dropped whole:
/// besides client addresses they carry scheme, geography, the CDN's own
/// request ids, and markers an upstream trusts to know the request came
/// through its front door (Azure `X-Azure-FDID`, App Engine
/// `X-AppEngine-Cron`).
const PROXY_FAMILY_PREFIXES: &[&str] = &[
    "x-forwarded-",
    "x-real-",
    "cf-",
    "fastly-",
    "akamai-",
    "x-azure-",
    "x-arr-",
    "x-appengine-",
    "x-vercel-",
    "x-nf-",
    "fly-",
];

/// Why `name` (lower case) is not forwarded upstream, or `None` if it is.
/// Exact names first (so `x-envoy-external-address` is a client address
/// though `x-envoy-*` rewrites), then prefixes: identities, rewrites, then
/// the proxies' families.
#[must_use]
pub fn withheld(name: &str) -> Option<Withheld> {
    let exact: [(&[&str], Withheld); 5] = [
        (HOP_BY_HOP, Withheld::HopByHop),
        (GATEWAY_OWNED, Withheld::GatewayOwned),
        (REWRITE, Withheld::Rewrite),
        (IDENTITY, Withheld::Identity),
        (CLIENT_ADDRESS, Withheld::ClientAddress),
    ];
    for (list, why) in exact {
        if list.contains(&name) {
            return Some(why);
        }
    }
    if IDENTITY_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some(Withheld::Identity);
    }
    if REWRITE_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some(Withheld::Rewrite);
    }
    PROXY_FAMILY_PREFIXES
        .iter()
        .find(|p| name.starts_with(**p))
        .map(|p| Withheld::ProxyFamily(p))
}

/// A name a route's `forward_headers` lists, checked: a valid header name
/// that the gateway withholds by default and may forward. The error says
/// why not (the caller names the route).
pub fn forwardable(name: &str) -> Result<axum::http::HeaderName, String> {
    let parsed = axum::http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` in `forward_headers` is not a header name"))?;
    match withheld(parsed.as_str()) {
        Some(why) if why.allowable() => Ok(parsed),
        Some(why) => Err(format!(
            "`{name}` in `forward_headers` cannot be forwarded: {}",
            why.reason()
        )),
        None => Err(format!(
            "`{name}` in `forward_headers` is forwarded anyway; list only \
             client-address headers the gateway withholds"
        )),
    }
}

/// Response headers never passed back to the agent.
///
/// - Hop-by-hop (RFC 9110 §7.6.1) and `Content-Length` (the answer is
///   streamed again).
/// - A session: `Set-Cookie`, `Authentication-Info` (it would let the
///   agent act outside the gateway; on a vault route, as the principal).
/// - Instructions to a proxy in front of Mandate (Mandate runs behind a
///   TLS-terminating one, which would obey them): nginx `X-Accel-*`
///   (internal redirects to files the proxy can read), Apache/lighttpd
///   `X-Sendfile`, LiteSpeed `X-LiteSpeed-Location`, and `Alt-Svc`
///   (RFC 7838: it would send the agent's later connections to the
///   gateway's origin somewhere else).
/// - What the upstream runs on, and debugging aids: `Server`,
///   `X-Powered-By`, `X-AspNet-Version`, `X-AspNetMvc-Version`,
///   `X-SourceFiles` (IIS Express: a file path), `X-Runtime` (Rails),
///   `X-Generator`, `X-Application-Context` (Spring Boot: name, profile,
///   port), `X-Varnish`, `X-Drupal-*`, `X-Served-By`, `X-Server`,
///   `X-Hostname`, `X-Node`, `X-Backend-*`, `X-Upstream-*`, `X-Debug-*`
///   (Symfony's profiler token and link), `X-Envoy-*` and `X-Kong-*` (a
///   mesh's internals), `SourceMap` / `X-SourceMap` (the upstream's
///   source), `X-Turbo-Charged-By`, `X-Mod-Pagespeed`, `X-Page-Speed`,
///   `X-OWA-Version`, `MS-Author-Via`, `MicrosoftSharePointTeamServices`.
const DOWNSTREAM: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "set-cookie",
    "authentication-info",
    "x-sendfile",
    "x-lighttpd-send-file",
    "x-litespeed-location",
    "alt-svc",
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "x-sourcefiles",
    "x-runtime",
    "x-generator",
    "x-application-context",
    "x-varnish",
    "x-served-by",
    "x-server",
    "x-hostname",
    "x-node",
    "x-debug",
    "sourcemap",
    "x-sourcemap",
    "x-turbo-charged-by",
    "x-mod-pagespeed",
    "x-page-speed",
    "x-owa-version",
    "ms-author-via",
    "microsoftsharepointteamservices",
];

/// Prefixes of response header families never passed back (see
/// [`DOWNSTREAM`]).
const DOWNSTREAM_PREFIXES: &[&str] = &[
    "x-accel-",
    "x-debug-",
    "x-backend-",
    "x-upstream-",
    "x-drupal-",
    "x-envoy-",
    "x-kong-",
];

/// Whether a response header `name` (lower case) is kept from the agent.
#[must_use]
pub fn strip_downstream(name: &str) -> bool {
    DOWNSTREAM.contains(&name) || DOWNSTREAM_PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_exact() -> Vec<&'static str> {
        [HOP_BY_HOP, GATEWAY_OWNED, REWRITE, IDENTITY, CLIENT_ADDRESS].concat()
    }

    /// Each name is in one list, lower case and a valid header name; so a
    /// name's reason does not depend on the lists' order.
    #[test]
    fn the_lists_are_disjoint_lower_case_header_names() {
        let mut all = all_exact();
        all.extend(DOWNSTREAM);
        for n in &all {
            assert_eq!(*n, n.to_ascii_lowercase());
            assert!(
                axum::http::HeaderName::from_bytes(n.as_bytes()).is_ok(),
                "{n}"
            );
        }
        let exact = all_exact();
        let mut sorted = exact.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), exact.len(), "a name in two lists");
    }

    #[test]
    fn client_address_headers_are_withheld_and_only_they_can_be_forwarded() {
        // The families of the issue, each withheld by default.
        for n in [
            "x-client-ip",
            "true-client-ip",
            "x-cluster-client-ip",
            "client-ip",
            "x-originating-ip",
            "x-host",
            "cf-connecting-ip",
            "fastly-client-ip",
            "akamai-origin-hop",
            "x-proxyuser-ip",
            "x-true-client-ip",
            "x-envoy-external-address",
            "x-forwarded-for",
            "forwarded",
            "via",
            "x-real-ip",
        ] {
            assert_eq!(withheld(n), Some(Withheld::ClientAddress), "{n}");
            assert!(forwardable(n).is_ok(), "{n}");
        }
        // Upper case in the configuration is the same header.
        assert_eq!(forwardable("X-Client-IP").unwrap().as_str(), "x-client-ip");
        // Withheld, and never forwardable.
        for (n, why) in [
            ("te", Withheld::HopByHop),
            ("connection", Withheld::HopByHop),
            ("host", Withheld::GatewayOwned),
            ("content-length", Withheld::GatewayOwned),
            ("authorization", Withheld::GatewayOwned),
            ("signature-input", Withheld::GatewayOwned),
            ("x-http-method-override", Withheld::Rewrite),
            ("x-original-url", Withheld::Rewrite),
            ("x-envoy-original-dst-host", Withheld::Rewrite),
            ("x-middleware-subrequest", Withheld::Rewrite),
            ("x-remote-user", Withheld::Identity),
            ("x-forwarded-user", Withheld::Identity),
            ("x-forwarded-client-cert", Withheld::Identity),
            ("cf-access-jwt-assertion", Withheld::Identity),
            ("x-amzn-oidc-identity", Withheld::Identity),
            ("x-auth-request-email", Withheld::Identity),
            ("x-azure-fdid", Withheld::ProxyFamily("x-azure-")),
            (
                "x-forwarded-anything",
                Withheld::ProxyFamily("x-forwarded-"),
            ),
            ("x-real-port", Withheld::ProxyFamily("x-real-")),
        ] {
            assert_eq!(withheld(n), Some(why), "{n}");
            let e = forwardable(n).unwrap_err();
            assert!(e.contains(&format!("`{n}`")), "{e}");
        }
        // Ordinary end-to-end headers are forwarded, so listing one is a
        // mistake worth saying.
        for n in [
            "content-type",
            "content-digest",
            "accept",
            "user-agent",
            "x-request-id",
            "traceparent",
            "idempotency-key",
        ] {
            assert_eq!(withheld(n), None, "{n}");
            assert!(forwardable(n).unwrap_err().contains("forwarded anyway"));
        }
        assert!(forwardable("bad name").is_err());
    }

    #[test]
    fn implementation_revealing_and_proxy_instructing_answers_are_stripped() {
        for n in [
            "server",
            "x-powered-by",
            "x-aspnet-version",
            "x-aspnetmvc-version",
            "x-debug-token",
            "x-debug-token-link",
            "x-runtime",
            "x-backend-server",
            "x-upstream-addr",
            "x-envoy-upstream-service-time",
            "x-accel-redirect",
            "x-sendfile",
            "alt-svc",
            "set-cookie",
            "transfer-encoding",
        ] {
            assert!(strip_downstream(n), "{n}");
        }
        for n in [
            "content-type",
            "retry-after",
            "x-request-id",
            "x-ratelimit-remaining",
            "etag",
            "location",
            "www-authenticate",
        ] {
            assert!(!strip_downstream(n), "{n}");
        }
    }

    /// docs/gateway.md names every header and family the gateway withholds
    /// or strips, so an operator reads the lists that run.
    #[test]
    fn the_gateway_docs_list_every_header() {
        let doc = include_str!("../../../docs/gateway.md").to_ascii_lowercase();
        let mut missing = Vec::new();
        for n in all_exact().into_iter().chain(DOWNSTREAM.iter().copied()) {
            if !doc.contains(&format!("`{n}`")) {
                missing.push(n.to_owned());
            }
        }
        for p in IDENTITY_PREFIXES
            .iter()
            .chain(REWRITE_PREFIXES)
            .chain(PROXY_FAMILY_PREFIXES)
            .chain(DOWNSTREAM_PREFIXES)
        {
            if !doc.contains(&format!("`{p}*`")) {
                missing.push(format!("{p}*"));
            }
        }
        assert!(missing.is_empty(), "not in docs/gateway.md: {missing:?}");
    }
}
