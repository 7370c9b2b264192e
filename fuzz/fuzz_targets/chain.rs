//! Untrusted bytes as a delegation link and as a presented chain (a
//! credential on the first line, its links on the next): verification
//! must never panic, and no chain verifies under an authority key the
//! fuzzer never had.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::{AuthorityKey, OsRandom, UnixTime, verify_delegation_chain, verify_link};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        if let Ok((_, signer)) = verify_link(line) {
            // A link that verifies names its signer by an RFC 7638
            // thumbprint (base64url SHA-256).
            assert_eq!(signer.as_str().len(), 43);
        }
    }
    let Ok(key) = AuthorityKey::generate(&OsRandom) else {
        return;
    };
    let mut lines = text.lines();
    let credential = lines.next().unwrap_or_default();
    let links: Vec<String> = lines.map(str::to_owned).collect();
    // A fresh key signed no credential the fuzzer could know.
    assert!(
        verify_delegation_chain(
            credential,
            &links,
            &key.jwks(),
            "https://mandate.example",
            UnixTime(1_790_000_021),
        )
        .is_err()
    );
});
