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
#[derive(Debug, Clone, Default, Deserialize)]
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

/// A SPIFFE trust domain's JWT bundle: a JWKS file, or a URL (a SPIFFE
/// bundle endpoint serving JWKS) read at start and every `refresh_secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustDomainConfig {
    pub bundle: Option<PathBuf>,
    pub bundle_url: Option<String>,
    /// How often a `bundle_url` is read again (default 300 s).
    pub refresh_secs: Option<u64>,
}

/// A launcher: the file holding its Ed25519 public key as a JWK.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherConfig {
    pub public_key: PathBuf,
}

const DEFAULT_REFRESH_SECS: u64 = 300;
const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// A bundle read from a URL, kept fresh by [`spawn_refresh`].
#[derive(Debug, Clone)]
pub struct UrlBundle {
    pub trust_domain: String,
    pub url: String,
    pub every: Duration,
}

impl AttestationConfig {
    /// Checks names and sources; files are read by [`Self::load`].
    pub fn check(&self) -> Result<(), String> {
        for (td, c) in &self.trust_domains {
            mandate_core::check_trust_domain(td)
                .map_err(|e| format!("attestation.trust_domains: {e}"))?;
            match (&c.bundle, &c.bundle_url) {
                (Some(_), None) => {}
                (None, Some(url)) if url.starts_with("https://") || url.starts_with("http://") => {}
                (None, Some(url)) => {
                    return Err(format!(
                        "attestation.trust_domains.\"{td}\": bundle_url `{url}` is not an http(s) URL"
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

    /// Reads every file the configuration names. Bundles from URLs are
    /// returned to be fetched ([`spawn_refresh`]); until they are, their
    /// trust domains trust nothing.
    pub fn load(&self, issuer: &str) -> Result<(TrustAnchors, Vec<UrlBundle>), String> {
        self.check()?;
        let mut anchors = TrustAnchors::none(self.audience.as_deref().unwrap_or(issuer));
        let mut urls = Vec::new();
        for (td, c) in &self.trust_domains {
            if let Some(path) = &c.bundle {
                let bytes = std::fs::read(path).map_err(|e| {
                    format!(
                        "attestation.trust_domains.\"{td}\": cannot read `{}`: {e}",
                        path.display()
                    )
                })?;
                anchors
                    .add_bundle(td, &bytes)
                    .map_err(|e| format!("attestation.trust_domains.\"{td}\": {e}"))?;
            }
            if let Some(url) = &c.bundle_url {
                urls.push(UrlBundle {
                    trust_domain: td.clone(),
                    url: url.clone(),
                    every: Duration::from_secs(c.refresh_secs.unwrap_or(DEFAULT_REFRESH_SECS)),
                });
            }
        }
        for (name, c) in &self.launchers {
            let text = std::fs::read_to_string(&c.public_key).map_err(|e| {
                format!(
                    "attestation.launchers.{name}: cannot read `{}`: {e}",
                    c.public_key.display()
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
        Ok((anchors, urls))
    }
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

/// Reads each URL bundle now and then every `every`. A failed read keeps
/// the bundle last read (SPIFFE bundles rotate with overlap); before the
/// first read succeeds the trust domain trusts nothing.
pub fn spawn_refresh(anchors: Arc<Anchors>, urls: Vec<UrlBundle>) {
    if urls.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the bundle client; URL trust bundles stay empty");
            return;
        }
    };
    for u in urls {
        let anchors = Arc::clone(&anchors);
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                match fetch(&client, &u.url).await {
                    Ok(bytes) => match anchors.set_bundle(&u.trust_domain, &bytes) {
                        Ok(()) => {
                            tracing::info!(trust_domain = %u.trust_domain, url = %u.url, "trust bundle read")
                        }
                        Err(e) => {
                            tracing::error!(trust_domain = %u.trust_domain, error = %e, "trust bundle refused; the last one read stays")
                        }
                    },
                    Err(e) => {
                        tracing::error!(trust_domain = %u.trust_domain, url = %u.url, error = %e, "cannot read trust bundle; the last one read stays")
                    }
                }
                tokio::time::sleep(u.every).await;
            }
        });
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err("the bundle is larger than 1 MiB".into());
    }
    Ok(bytes.to_vec())
}
