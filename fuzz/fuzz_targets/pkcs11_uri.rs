//! cargo-fuzz target `pkcs11_uri`: the body is `targets::pkcs11_uri`, shared with the corpus replay.
#![no_main]

#[allow(dead_code)]
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = targets::pkcs11_uri(data);
});
