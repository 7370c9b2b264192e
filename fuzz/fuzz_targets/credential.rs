//! Untrusted bytes as a mission credential: parsing and verification must
//! never panic, and never accept what the test key did not sign.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::{AuthorityKey, OsRandom, UnixTime, UnverifiedCredential};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = AuthorityKey::generate(&OsRandom) else {
        return;
    };
    if let Ok(unverified) = UnverifiedCredential::parse(text) {
        // A fresh key signed nothing the fuzzer could know.
        assert!(
            unverified
                .verify(&key.jwks(), "https://issuer", UnixTime(1_800_000_000))
                .is_err()
        );
    }
});
