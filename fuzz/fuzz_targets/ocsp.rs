//! cargo-fuzz target `ocsp`: the body is `targets::ocsp_request`, shared with the corpus replay.
#![no_main]

#[allow(dead_code)]
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = targets::ocsp_request(data);
});
