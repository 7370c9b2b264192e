//! Untrusted bytes as a DPoP proof: verification must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::{ProofExpectations, UnixTime, verify_proof};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = verify_proof(
        text,
        &ProofExpectations {
            htm: "POST",
            htu: "https://issuer/v1/missions/start",
            now: UnixTime(1_800_000_000),
            token: Some("mst_x"),
        },
    );
});
