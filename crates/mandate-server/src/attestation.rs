//! What the authority trusts for attestation evidence (ADR 0020): SPIFFE
//! trust bundles per trust domain (files, or URLs re-read periodically)
//! and launcher keys, from `[attestation]` in `mandate.toml`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mandate_core::{Ed25519Jwk, TrustAnchors};
use serde::Deserialize;

/// `[attestation]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// The audience evidence must name; default: the issuer.
    pub audience: Option<String>,
    /// `[attestation.trust_domains."example.org"]`.
    #[serde(default)]
    pub trust_domains: BTreeMap<String, TrustDomainConfig>,
    /// `[attestation.launchers.NAME]`.
    #[serde(default)]
    pub launchers: BTreeMap<String, LauncherConfig>,
}

/// A SPIFFE trust domain's JWT bundle: a JWKS file, or an `https://` URL
/// (a SPIFFE bundle endpoint serving JWKS), read at start and again every
/// `refresh_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustDomainConfig {
    pub bundle: Option<PathBuf>,
    pub bundle_url: Option<String>,
    /// For `bundle_url`: the CA certificates (PEM) its TLS certificate
    /// must chain to, instead of the system's roots.
    pub bundle_ca: Option<PathBuf>,
    /// How often the bundle is read again (default 300 s).
    pub refresh_secs: Option<u64>,
}

/// A launcher: the file holding its Ed25519 public key as a JWK.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherConfig {
    pub public_key: PathBuf,
}

const DEFAULT_REFRESH_SECS: u64 = 300;
const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// Where a trust domain's bundle is read again from, kept fresh by
/// [`spawn_refresh`].
#[derive(Debug, Clone)]
pub struct BundleSource {
    pub trust_domain: String,
    pub from: BundleFrom,
    pub every: Duration,
}

/// A bundle file, or a URL with the CA certificates it must chain to.
#[derive(Debug, Clone)]
pub enum BundleFrom {
    File(PathBuf),
    Url { url: String, ca: Option<Vec<u8>> },
}

impl AttestationConfig {
    /// Checks names and sources; files are read by [`Self::load`].
    pub fn check(&self) -> Result<(), String> {
        for (td, c) in &self.trust_domains {
            mandate_core::check_trust_domain(td)
                .map_err(|e| format!("attestation.trust_domains: {e}"))?;
            match (&c.bundle, &c.bundle_url) {
                (Some(_), None) if c.bundle_ca.is_none() => {}
                (Some(_), None) => {
                    return Err(format!(
                        "attestation.trust_domains.\"{td}\": bundle_ca is for a bundle_url"
                    ));
                }
                // Whoever answers for the URL decides which keys mint
                // SVIDs of the whole trust domain: never over plain HTTP.
                (None, Some(url)) if url.starts_with("https://") => {}
                (None, Some(url)) => {
                    return Err(format!(
                        "attestation.trust_domains.\"{td}\": bundle_url `{url}` is not an https:// URL (a bundle decides which keys the trust domain's SVIDs verify with; use https, or a file kept current by your SPIFFE agent)"
                    ));
                }
                _ => {
                    return Err(format!(
                        "attestation.trust_domains.\"{td}\": give exactly one of `bundle` (a JWKS file) and `bundle_url`"
                    ));
                }
            }
            if c.refresh_secs == Some(0) {
                return Err(format!(
                    "attestation.trust_domains.\"{td}\": refresh_secs must be at least 1"
                ));
            }
        }
        for name in self.launchers.keys() {
            if !mandate_core::names::valid_name(name) {
                return Err(format!(
                    "attestation.launchers: `{name}` is not a launcher name"
                ));
            }
        }
        Ok(())
    }

    /// Refuses a requirement no evidence could satisfy here: malformed, or
    /// naming a trust domain or launcher this configuration does not have.
    pub fn check_requirement(
        &self,
        r: &mandate_core::AttestationRequirement,
    ) -> Result<(), String> {
        r.validate()?;
        for td in r.trust_domains() {
            if !self.trust_domains.contains_key(&td) {
                return Err(format!(
                    "no trust bundle is configured for trust domain `{td}` (`[attestation.trust_domains.\"{td}\"]` in mandate.toml)"
                ));
            }
        }
        for l in &r.launchers {
            if !self.launchers.contains_key(l) {
                return Err(format!(
                    "no launcher `{l}` is configured (`[attestation.launchers.{l}]` in mandate.toml)"
                ));
            }
        }
        Ok(())
    }

    /// Reads every file the configuration names. Bundles are returned with
    /// where to read them again ([`spawn_refresh`]); one from a URL is
    /// read there first, and until it is, its trust domain trusts nothing.
    pub fn load(&self, issuer: &str) -> Result<(TrustAnchors, Vec<BundleSource>), String> {
        self.check()?;
        let mut anchors = TrustAnchors::none(self.audience.as_deref().unwrap_or(issuer));
        let mut sources = Vec::new();
        for (td, c) in &self.trust_domains {
            let every = Duration::from_secs(c.refresh_secs.unwrap_or(DEFAULT_REFRESH_SECS));
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|e| {
                    format!(
                        "attestation.trust_domains.\"{td}\": cannot read `{}`: {e}",
                        absolute(path)
                    )
                })
            };
            if let Some(path) = &c.bundle {
                anchors
                    .add_bundle(td, &read(path)?)
                    .map_err(|e| format!("attestation.trust_domains.\"{td}\": {e}"))?;
                sources.push(BundleSource {
                    trust_domain: td.clone(),
                    from: BundleFrom::File(path.clone()),
                    every,
                });
            }
            if let Some(url) = &c.bundle_url {
                let ca = c.bundle_ca.as_ref().map(read).transpose()?;
                if let Some(pem) = &ca {
                    reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                        format!(
                            "attestation.trust_domains.\"{td}\": bundle_ca is not PEM certificates: {e}"
                        )
                    })?;
                }
                sources.push(BundleSource {
                    trust_domain: td.clone(),
                    from: BundleFrom::Url {
                        url: url.clone(),
                        ca,
                    },
                    every,
                });
            }
        }
        for (name, c) in &self.launchers {
            let text = std::fs::read_to_string(&c.public_key).map_err(|e| {
                format!(
                    "attestation.launchers.{name}: cannot read `{}`: {e}",
                    absolute(&c.public_key)
                )
            })?;
            let jwk: Ed25519Jwk = serde_json::from_str(&text)
                .ok()
                .filter(|k: &Ed25519Jwk| k.public_bytes().is_some())
                .ok_or_else(|| {
                    format!(
                        "attestation.launchers.{name}: `{}` is not an Ed25519 public JWK",
                        c.public_key.display()
                    )
                })?;
            anchors.launchers.insert(name.clone(), jwk);
        }
        Ok((anchors, sources))
    }
}

/// A path as the server reads it: a relative one is relative to the
/// directory `mandate serve` runs in.
fn absolute(path: &std::path::Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The anchors in force; replaced whole when a bundle URL is read again.
#[derive(Debug)]
pub struct Anchors(RwLock<Arc<TrustAnchors>>);

impl Anchors {
    #[must_use]
    pub fn new(anchors: TrustAnchors) -> Self {
        Self(RwLock::new(Arc::new(anchors)))
    }

    /// The anchors now. A poisoned lock (a panic while replacing them)
    /// trusts nothing.
    #[must_use]
    pub fn get(&self) -> Arc<TrustAnchors> {
        match self.0.read() {
            Ok(a) => Arc::clone(&a),
            Err(_) => Arc::new(TrustAnchors::none("")),
        }
    }

    pub fn set(&self, anchors: TrustAnchors) {
        if let Ok(mut a) = self.0.write() {
            *a = Arc::new(anchors);
        }
    }

    /// Replaces one trust domain's bundle, under the lock: two domains
    /// refreshed at once both keep theirs.
    fn set_bundle(&self, trust_domain: &str, jwks: &[u8]) -> Result<(), String> {
        let mut current = self
            .0
            .write()
            .map_err(|_| "the trust anchors' lock is poisoned".to_owned())?;
        let mut next = (**current).clone();
        next.add_bundle(trust_domain, jwks)?;
        *current = Arc::new(next);
        Ok(())
    }
}

/// Reads each bundle again every `every` (one from a URL, first at once).
/// A failed read keeps the bundle last read (SPIFFE bundles rotate with
/// overlap); a URL's trust domain trusts nothing before its first read.
pub fn spawn_refresh(anchors: Arc<Anchors>, sources: Vec<BundleSource>) {
    for source in sources {
        let client = match &source.from {
            BundleFrom::File(_) => None,
            BundleFrom::Url { ca, .. } => match bundle_client(ca.as_deref()) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(trust_domain = %source.trust_domain, error = %e, "cannot build the bundle client; the trust domain trusts nothing");
                    continue;
                }
            },
        };
        let anchors = Arc::clone(&anchors);
        tokio::spawn(async move {
            let td = &source.trust_domain;
            if matches!(source.from, BundleFrom::File(_)) {
                // Read at start already.
                tokio::time::sleep(source.every).await;
            }
            loop {
                let read = match (&source.from, &client) {
                    (BundleFrom::File(path), _) => tokio::fs::read(path)
                        .await
                        .map_err(|e| format!("cannot read `{}`: {e}", absolute(path))),
                    (BundleFrom::Url { url, .. }, Some(c)) => fetch(c, url).await,
                    (BundleFrom::Url { .. }, None) => Err("no client".into()),
                };
                match read {
                    Ok(bytes) => match anchors.set_bundle(td, &bytes) {
                        Ok(()) => tracing::debug!(trust_domain = %td, "trust bundle read"),
                        Err(e) => {
                            tracing::error!(trust_domain = %td, error = %e, "trust bundle refused; the last one read stays")
                        }
                    },
                    Err(e) => {
                        tracing::error!(trust_domain = %td, error = %e, "cannot read trust bundle; the last one read stays")
                    }
                }
                tokio::time::sleep(source.every).await;
            }
        });
    }
}

/// The client that reads bundle URLs: https only, no redirects, a
/// deadline, and, given CA certificates, only those as roots.
fn bundle_client(ca: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .https_only(true)
        .timeout(Duration::from_secs(10));
    if let Some(pem) = ca {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| e.to_string())
}

/// Reads a bundle, at most [`MAX_BUNDLE_BYTES`] of it: a larger (or
/// endless) answer is refused as soon as it passes the cap.
async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let too_large = || {
        format!(
            "the bundle is larger than {} MiB",
            MAX_BUNDLE_BYTES / (1024 * 1024)
        )
    };
    let mut resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BUNDLE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_BUNDLE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
