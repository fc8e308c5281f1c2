//! cargo-fuzz target `share`: the body is `targets::share`, shared with the corpus replay.
#![no_main]

#[allow(dead_code)]
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = targets::share(data);
});
