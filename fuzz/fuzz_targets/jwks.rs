//! Untrusted bytes as a JWKS document (fetched by offline verifiers).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jwks) = mandate_core::Jwks::from_json(text) {
        for k in &jwks.keys {
            assert!(k.public_bytes().is_some());
            let _ = k.thumbprint();
        }
    }
});
