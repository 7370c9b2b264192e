//! Untrusted Cedar text as a mission's policies: compiling must never panic
//! or overflow the stack (nesting is bounded before the parser runs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::{MissionPolicies, MissionPolicySet};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policies = MissionPolicies {
        scope: text.to_owned(),
        boundaries: String::new(),
        escalations: String::new(),
    };
    let _ = MissionPolicySet::compile("msn_fuzz", &policies, None);
});
