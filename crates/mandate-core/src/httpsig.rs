//! RFC 9421 HTTP Message Signatures: the signature base, and Ed25519
//! signing and verification of requests.
//!
//! The one place Mandate builds a signature base itself (docs/adr/0006-gateway.md: the
//! public crates fail the RFC's Appendix B vectors). Structured fields are
//! parsed and serialized by `sfv` (RFC 9651); Ed25519 is `ed25519-dalek`.
//! What is here, and nothing more:
//!
//! - derived components `@method`, `@target-uri`, `@authority`, `@scheme`,
//!   `@request-target`, `@path`, `@query`; `@query-param`, `@status` and
//!   the `req` / `tr` / `bs` / `sf` flags are refused (a verifier that
//!   cannot rebuild a component must not guess it);
//! - HTTP fields by name, several values joined with `", "`, and a
//!   Dictionary member with `;key="…"`;
//! - parameters in any order, unknown parameters kept (they are signed);
//! - the `@signature-params` line is the re-serialization of the parsed
//!   inner list, as RFC 9421 §2.3 specifies.
//!
//! Policy (which components must be covered, the time window, replay) is
//! the caller's: see [`VerifiedSignature`].

use std::collections::HashSet;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sfv::{BareItem, Dictionary, FieldType as _, InnerList, Item, ListEntry, Parser};

/// A request as the verifier received it (or as the signer will send it).
#[derive(Debug, Clone)]
pub struct RequestParts<'a> {
    /// As sent, e.g. `POST`.
    pub method: &'a str,
    /// `http` or `https`: how the request reached the verifier.
    pub scheme: &'a str,
    /// The `Host` header (or `:authority`), as sent.
    pub authority: &'a str,
    /// The path exactly as on the request line (percent-encoding kept).
    pub path: &'a str,
    /// The query without `?`, exactly as sent; `None` if there is none.
    pub query: Option<&'a str>,
    /// Header fields in order, names in any case, values as sent.
    pub headers: &'a [(String, String)],
}

/// Why a signature does not verify (or cannot be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpSigError {
    #[error("malformed `{0}` header: {1}")]
    Malformed(&'static str, String),
    #[error("no signature labelled `{0}`")]
    UnknownLabel(String),
    #[error("the component `{0}` is not supported")]
    Unsupported(String),
    #[error("the component `{0}` is covered twice")]
    Duplicate(String),
    #[error("the covered field `{0}` is not in the request")]
    MissingField(String),
    #[error("the signature does not verify")]
    BadSignature,
}

/// One signature of a request: its label, covered components (as
/// serialized identifiers), parameters, and the signature bytes.
#[derive(Debug, Clone)]
pub struct ParsedSignature {
    pub label: String,
    inner: InnerList,
    signature: Vec<u8>,
}

impl ParsedSignature {
    /// The covered component names that carry no parameters, e.g.
    /// `@method`, `content-type`. A component with parameters
    /// (`"signature-key";key="x"`) is something else and is not listed, so
    /// a verifier that requires a component cannot be satisfied by it.
    #[must_use]
    pub fn components(&self) -> Vec<String> {
        self.inner
            .items
            .iter()
            .filter(|i| i.params.is_empty())
            .filter_map(|i| i.bare_item.as_string().map(|s| s.as_str().to_owned()))
            .collect()
    }

    /// An integer parameter (`created`, `expires`).
    #[must_use]
    pub fn int_param(&self, name: &str) -> Option<i64> {
        self.param(name)
            .and_then(BareItem::as_integer)
            .map(i64::from)
    }

    /// A string parameter (`keyid`, `alg`, `nonce`, `tag`).
    #[must_use]
    pub fn str_param(&self, name: &str) -> Option<&str> {
        self.param(name)
            .and_then(|b| b.as_string())
            .map(|s| s.as_str())
    }

    fn param(&self, name: &str) -> Option<&BareItem> {
        self.inner
            .params
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v)
    }

    /// The signature bytes.
    #[must_use]
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// Parses `Signature-Input` and `Signature` and returns the signature
/// labelled `label`.
pub fn parse_signature(
    signature_input: &str,
    signature: &str,
    label: &str,
) -> Result<ParsedSignature, HttpSigError> {
    signature_labelled(&parse_inputs(signature_input)?, signature, label)
}

/// Parses `Signature-Input` and `Signature` of a request that carries one
/// signature: `None` when `Signature-Input` names more than one, or none.
/// (What [`signature_labels`] and then [`parse_signature`] tell, with one
/// reading of `Signature-Input`.)
pub fn parse_only_signature(
    signature_input: &str,
    signature: &str,
) -> Result<Option<ParsedSignature>, HttpSigError> {
    let inputs = parse_inputs(signature_input)?;
    let mut labels = inputs.keys();
    let (Some(label), None) = (labels.next(), labels.next()) else {
        return Ok(None);
    };
    signature_labelled(&inputs, signature, label.as_str()).map(Some)
}

fn parse_inputs(signature_input: &str) -> Result<Dictionary, HttpSigError> {
    Parser::new(signature_input)
        .parse()
        .map_err(|e| HttpSigError::Malformed("Signature-Input", e.to_string()))
}

/// The signature labelled `label` of `inputs` (a parsed `Signature-Input`)
/// and `signature`.
fn signature_labelled(
    inputs: &Dictionary,
    signature: &str,
    label: &str,
) -> Result<ParsedSignature, HttpSigError> {
    let sigs: Dictionary = Parser::new(signature)
        .parse()
        .map_err(|e| HttpSigError::Malformed("Signature", e.to_string()))?;
    let find = |d: &Dictionary| {
        d.iter()
            .find(|(k, _)| k.as_str() == label)
            .map(|(_, v)| v.clone())
    };
    let Some(ListEntry::InnerList(inner)) = find(inputs) else {
        return Err(HttpSigError::UnknownLabel(label.to_owned()));
    };
    let Some(ListEntry::Item(sig)) = find(&sigs) else {
        return Err(HttpSigError::UnknownLabel(label.to_owned()));
    };
    let signature = sig
        .bare_item
        .as_byte_sequence()
        .ok_or_else(|| HttpSigError::Malformed("Signature", "not a byte sequence".into()))?
        .to_vec();
    for item in &inner.items {
        if item.bare_item.as_string().is_none() {
            return Err(HttpSigError::Malformed(
                "Signature-Input",
                "a covered component is not a string".into(),
            ));
        }
    }
    Ok(ParsedSignature {
        label: label.to_owned(),
        inner,
        signature,
    })
}

/// The labels of `Signature-Input`, in order.
pub fn signature_labels(signature_input: &str) -> Result<Vec<String>, HttpSigError> {
    let inputs = parse_inputs(signature_input)?;
    Ok(inputs.keys().map(|k| k.as_str().to_owned()).collect())
}

/// The values of field `name` (case-insensitive), trimmed, in order.
fn field_values<'a>(req: &'a RequestParts<'_>, name: &str) -> Vec<&'a str> {
    req.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim_matches(|c| c == ' ' || c == '\t'))
        .collect()
}

/// The value of one covered component.
fn component_value(req: &RequestParts<'_>, item: &Item) -> Result<String, HttpSigError> {
    let name = item.bare_item.as_string().map(|s| s.as_str()).unwrap_or("");
    let mut key = None;
    for (k, v) in &item.params {
        match (k.as_str(), v.as_string()) {
            ("key", Some(s)) if !name.starts_with('@') => key = Some(s.as_str().to_owned()),
            _ => return Err(HttpSigError::Unsupported(format!("{name};{}", k.as_str()))),
        }
    }
    let value = match name {
        "@method" => req.method.to_owned(),
        "@scheme" => req.scheme.to_ascii_lowercase(),
        "@authority" => authority(req),
        "@path" => path(req),
        "@query" => format!("?{}", req.query.unwrap_or("")),
        "@request-target" => match req.query {
            Some(q) => format!("{}?{q}", path(req)),
            None => path(req),
        },
        "@target-uri" => {
            let mut s = format!(
                "{}://{}{}",
                req.scheme.to_ascii_lowercase(),
                authority(req),
                path(req)
            );
            if let Some(q) = req.query {
                s.push('?');
                s.push_str(q);
            }
            s
        }
        n if n.starts_with('@') || n.is_empty() || n != n.to_ascii_lowercase() => {
            return Err(HttpSigError::Unsupported(n.to_owned()));
        }
        field => {
            let values = field_values(req, field);
            if values.is_empty() {
                return Err(HttpSigError::MissingField(field.to_owned()));
            }
            let joined = values.join(", ");
            match key {
                None => joined,
                Some(k) => {
                    let dict: Dictionary = Parser::new(&joined).parse().map_err(|e| {
                        HttpSigError::Malformed("covered dictionary field", e.to_string())
                    })?;
                    let member = dict
                        .iter()
                        .find(|(dk, _)| dk.as_str() == k)
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| {
                            HttpSigError::MissingField(format!("{field};key=\"{k}\""))
                        })?;
                    vec![member].serialize().ok_or_else(|| {
                        HttpSigError::Malformed("covered dictionary field", "empty".into())
                    })?
                }
            }
        }
    };
    if value.contains(['\n', '\r']) {
        return Err(HttpSigError::Malformed(
            "covered field",
            "line break in value".into(),
        ));
    }
    Ok(value)
}

fn authority(req: &RequestParts<'_>) -> String {
    let a = req.authority.to_ascii_lowercase();
    let default = match req.scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        _ => ":80",
    };
    a.strip_suffix(default)
        .map_or_else(|| a.clone(), str::to_owned)
}

fn path(req: &RequestParts<'_>) -> String {
    if req.path.is_empty() {
        "/".to_owned()
    } else {
        req.path.to_owned()
    }
}

/// The signature base (RFC 9421 §2.5) of `req` for `inner`.
fn base_for(req: &RequestParts<'_>, inner: &InnerList) -> Result<Vec<u8>, HttpSigError> {
    let mut out = String::new();
    let mut seen = HashSet::new();
    for item in &inner.items {
        let id = item.serialize();
        if !seen.insert(id.clone()) {
            return Err(HttpSigError::Duplicate(id));
        }
        let value = component_value(req, item)?;
        out.push_str(&id);
        out.push_str(": ");
        out.push_str(&value);
        out.push('\n');
    }
    let params = vec![ListEntry::InnerList(inner.clone())]
        .serialize()
        .ok_or_else(|| HttpSigError::Malformed("Signature-Input", "empty".into()))?;
    out.push_str("\"@signature-params\": ");
    out.push_str(&params);
    Ok(out.into_bytes())
}

/// The signature base of a parsed signature.
pub fn signature_base(
    req: &RequestParts<'_>,
    sig: &ParsedSignature,
) -> Result<Vec<u8>, HttpSigError> {
    base_for(req, &sig.inner)
}

/// Verifies an Ed25519 signature over the request.
pub fn verify_ed25519(
    req: &RequestParts<'_>,
    sig: &ParsedSignature,
    key: &VerifyingKey,
) -> Result<(), HttpSigError> {
    if let Some(alg) = sig.str_param("alg")
        && alg != "ed25519"
    {
        return Err(HttpSigError::Unsupported(format!("alg={alg}")));
    }
    let base = signature_base(req, sig)?;
    let signature =
        Signature::from_slice(&sig.signature).map_err(|_| HttpSigError::BadSignature)?;
    // Strict: refuses small-order keys and non-canonical signatures.
    key.verify_strict(&base, &signature)
        .map_err(|_| HttpSigError::BadSignature)
}

/// What to sign: covered components (identifiers such as `@method` or
/// `content-type`) and parameters in the order given.
#[derive(Debug, Clone)]
pub struct SignSpec<'a> {
    pub label: &'a str,
    pub components: &'a [&'a str],
    pub created: i64,
    pub expires: Option<i64>,
    pub keyid: Option<&'a str>,
    pub nonce: Option<&'a str>,
}

/// Signs a request with Ed25519. Returns the `Signature-Input` and
/// `Signature` header values.
pub fn sign_ed25519(
    req: &RequestParts<'_>,
    spec: &SignSpec<'_>,
    key: &SigningKey,
) -> Result<(String, String), HttpSigError> {
    let bad = |e: sfv::Error| HttpSigError::Malformed("signature spec", e.to_string());
    let mut items = Vec::new();
    for c in spec.components {
        items.push(Item::new(
            sfv::String::from_string((*c).to_owned()).map_err(|(e, _)| bad(e))?,
        ));
    }
    let mut inner = InnerList::new(items);
    let key_of = |k: &str| sfv::Key::from_string(k.to_owned()).map_err(|(e, _)| bad(e));
    inner.params.insert(
        key_of("created")?,
        BareItem::Integer(sfv::Integer::try_from(spec.created).map_err(bad)?),
    );
    if let Some(e) = spec.expires {
        inner.params.insert(
            key_of("expires")?,
            BareItem::Integer(sfv::Integer::try_from(e).map_err(bad)?),
        );
    }
    for (name, value) in [("keyid", spec.keyid), ("nonce", spec.nonce)] {
        if let Some(v) = value {
            inner.params.insert(
                key_of(name)?,
                BareItem::String(sfv::String::from_string(v.to_owned()).map_err(|(e, _)| bad(e))?),
            );
        }
    }
    inner.params.insert(
        key_of("alg")?,
        BareItem::String(sfv::String::from_string("ed25519".into()).map_err(|(e, _)| bad(e))?),
    );
    let base = base_for(req, &inner)?;
    let signature = key.sign(&base).to_bytes().to_vec();
    let label = key_of(spec.label)?;
    let mut input = Dictionary::new();
    input.insert(label.clone(), ListEntry::InnerList(inner));
    let mut sig = Dictionary::new();
    sig.insert(
        label,
        ListEntry::Item(Item::new(BareItem::ByteSequence(signature))),
    );
    let empty = || HttpSigError::Malformed("signature", "empty".into());
    Ok((
        input.serialize().ok_or_else(empty)?,
        sig.serialize().ok_or_else(empty)?,
    ))
}

/// The `Signature-Key` member for `label` with scheme `jwt`: the JWT it
/// carries (draft-hardt-httpbis-signature-key).
pub fn signature_key_jwt(signature_key: &str, label: &str) -> Result<String, HttpSigError> {
    if let Some(jwt) = plain_signature_key_jwt(signature_key, label) {
        return Ok(jwt.to_owned());
    }
    parsed_signature_key_jwt(signature_key, label)
}

/// The form agents send, `{label}=jwt;jwt="{token}"` with a valid key as
/// `label` and only JWS characters (`A-Z a-z 0-9 - _ .`) in the token:
/// that is the serialization of a one-member dictionary, and parses to
/// exactly that token. Read without the general parser, which spent
/// longer on a credential's characters than every other header check of a
/// request; any other form is left to it.
fn plain_signature_key_jwt<'h>(signature_key: &'h str, label: &str) -> Option<&'h str> {
    let mut key = label.bytes();
    let key_ok = key
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == b'*')
        && key.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.' | b'*')
        });
    let token = signature_key
        .strip_prefix(label)?
        .strip_prefix("=jwt;jwt=\"")?
        .strip_suffix('"')?;
    let token_ok = token
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    (key_ok && token_ok).then_some(token)
}

/// [`signature_key_jwt`] by the structured-field parser.
fn parsed_signature_key_jwt(signature_key: &str, label: &str) -> Result<String, HttpSigError> {
    let dict: Dictionary = Parser::new(signature_key)
        .parse()
        .map_err(|e| HttpSigError::Malformed("Signature-Key", e.to_string()))?;
    let Some((_, ListEntry::Item(item))) = dict.iter().find(|(k, _)| k.as_str() == label) else {
        return Err(HttpSigError::UnknownLabel(label.to_owned()));
    };
    if item.bare_item.as_token().map(|t| t.as_str()) != Some("jwt") {
        return Err(HttpSigError::Unsupported(
            "Signature-Key scheme (only `jwt`)".into(),
        ));
    }
    item.params
        .iter()
        .find(|(k, _)| k.as_str() == "jwt")
        .and_then(|(_, v)| v.as_string())
        .map(|s| s.as_str().to_owned())
        .ok_or_else(|| HttpSigError::Malformed("Signature-Key", "no `jwt` parameter".into()))
}

/// The `Signature-Key` header value carrying `jwt` for `label`.
pub fn signature_key_header(label: &str, jwt: &str) -> Result<String, HttpSigError> {
    let bad = |e: sfv::Error| HttpSigError::Malformed("Signature-Key", e.to_string());
    let mut item = Item::new(BareItem::Token(
        sfv::Token::from_string("jwt".into()).map_err(|(e, _)| bad(e))?,
    ));
    item.params.insert(
        sfv::Key::from_string("jwt".into()).map_err(|(e, _)| bad(e))?,
        BareItem::String(sfv::String::from_string(jwt.to_owned()).map_err(|(e, _)| bad(e))?),
    );
    let mut dict = Dictionary::new();
    dict.insert(
        sfv::Key::from_string(label.to_owned()).map_err(|(e, _)| bad(e))?,
        ListEntry::Item(item),
    );
    dict.serialize()
        .ok_or_else(|| HttpSigError::Malformed("Signature-Key", "empty".into()))
}

/// Checks an RFC 9530 `Content-Digest` against `body`: every `sha-256` and
/// `sha-512` member must match, and at least one must be present.
pub fn check_content_digest(header: &str, body: &[u8]) -> Result<(), HttpSigError> {
    use sha2::{Digest as _, Sha256, Sha512};
    let dict: Dictionary = Parser::new(header)
        .parse()
        .map_err(|e| HttpSigError::Malformed("Content-Digest", e.to_string()))?;
    let mut checked = 0;
    for (k, v) in &dict {
        let ListEntry::Item(item) = v else { continue };
        let Some(claimed) = item.bare_item.as_byte_sequence() else {
            continue;
        };
        let actual: Vec<u8> = match k.as_str() {
            "sha-256" => Sha256::digest(body).to_vec(),
            "sha-512" => Sha512::digest(body).to_vec(),
            _ => continue,
        };
        if actual != claimed {
            return Err(HttpSigError::Malformed(
                "Content-Digest",
                "does not match the body".into(),
            ));
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(HttpSigError::Malformed(
            "Content-Digest",
            "needs a sha-256 or sha-512 member".into(),
        ));
    }
    Ok(())
}

/// The `Content-Digest` value (`sha-256`) of `body`.
#[must_use]
pub fn content_digest(body: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::{Digest as _, Sha256};
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the header and label, the plain form's reading is the
        /// parser's.
        #[test]
        fn the_plain_signature_key_reads_as_the_parser_does(
            label in prop_oneof![Just("sig".to_owned()), "[a-zA-Z*0-9_.\\-\" ]{0,6}"],
            token in "[A-Za-z0-9_.=\\-\"\\\\ ;é]{0,40}",
            before in prop_oneof![Just(String::new()), Just(" ".to_owned()), "[ ,;=a-z\"]{0,3}"],
            after in prop_oneof![Just(String::new()), Just(" ".to_owned()), "[ ,;=a-z\"]{0,3}"],
        ) {
            let header = format!("{before}{label}=jwt;jwt=\"{token}\"{after}");
            let parsed = parsed_signature_key_jwt(&header, &label);
            if let Some(plain) = plain_signature_key_jwt(&header, &label) {
                prop_assert_eq!(Ok(plain.to_owned()), parsed);
            }
            prop_assert_eq!(signature_key_jwt(&header, &label), parsed_signature_key_jwt(&header, &label));
        }
    }

    #[test]
    fn an_agents_signature_key_takes_the_plain_path() {
        let jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln-_";
        let header = signature_key_header("sig", jwt).unwrap();
        assert_eq!(plain_signature_key_jwt(&header, "sig"), Some(jwt));
        assert_eq!(signature_key_jwt(&header, "sig").unwrap(), jwt);
        // Another label, or a token the plain form does not cover, goes to
        // the parser.
        assert_eq!(plain_signature_key_jwt(&header, "other"), None);
        assert!(signature_key_jwt(&header, "other").is_err());
        assert_eq!(
            plain_signature_key_jwt("sig=jwt;jwt=\"a\\\"b\"", "sig"),
            None
        );
        assert_eq!(
            signature_key_jwt("sig=jwt;jwt=\"a\\\"b\"", "sig").unwrap(),
            "a\"b"
        );
    }
}
