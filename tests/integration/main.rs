//! One integration-test binary: every test drives the real `nkpki` executable and checks
//! its output with the real peers (OpenSSL, the age CLI, pkilint).

// Test helpers fail loudly by design: a panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

mod bad_input;
mod ceremony;
mod fuzz_corpus;
mod nitrokey;
mod online;
mod online_attacks;
mod sign;
mod split_combine;
mod token_bad_input;
mod tokens;
