//! cargo-fuzz target `age`: the body is `targets::age_ciphertext`, shared with the corpus replay.
#![no_main]

#[allow(dead_code)]
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = targets::age_ciphertext(data);
});
