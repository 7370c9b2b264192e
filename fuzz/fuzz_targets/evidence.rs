//! Untrusted bytes as attestation evidence (a JWT-SVID, a DSSE launch
//! statement, or the `{"type": …}` form) and as an attestation
//! requirement: nothing panics, and no evidence verifies under anchors
//! whose keys the fuzzer never had (a fresh launcher key, no bundle).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::{
    AttestationRequirement, Evidence, LauncherKey, MissionKey, OsRandom, TrustAnchors, UnixTime,
    verify_evidence,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = serde_json::from_str::<AttestationRequirement>(text) {
        let _ = r.validate();
        let _ = r.trust_domains();
    }
    let Ok(evidence) = Evidence::from_text(text) else {
        return;
    };
    let (Ok(launcher), Ok(key)) = (
        LauncherKey::generate(&OsRandom),
        MissionKey::generate(&OsRandom),
    ) else {
        return;
    };
    let mut anchors = TrustAnchors::none("https://mandate.example");
    anchors
        .launchers
        .insert("ci".into(), launcher.public_jwk().clone());
    assert!(
        verify_evidence(&evidence, &anchors, key.thumbprint(), UnixTime(1_790_000_021)).is_err()
    );
});
