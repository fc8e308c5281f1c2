//! cargo-fuzz target `manifest`: the body is `targets::manifest`, shared with the corpus replay.
#![no_main]

#[allow(dead_code)]
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = targets::manifest(data);
});
