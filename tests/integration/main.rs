//! One integration-test binary: every test drives the real `nkpki` executable and checks
//! its output with the real peers (OpenSSL, the age CLI, pkilint).

// Test helpers fail loudly by design: a panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod browser;
mod harness;
mod memscan;

mod bad_input;
mod batch;
mod browser_ui;
mod ca_binding;
mod ceremony;
mod fuzz_corpus;
mod json_output;
mod memory;
mod nitrokey;
mod observability;
mod ocsp;
mod offer;
mod online;
mod online_attacks;
mod packaging;
mod policy;
mod policy_online;
mod preview;
mod reshare;
mod reshare_online;
mod session_events;
mod sign;
mod split_combine;
mod store_faults;
mod threshold_ceremony;
mod threshold_online;
mod token_bad_input;
mod token_hardening;
mod token_login;
mod tokens;
mod web;
mod web_generator;
mod web_sessions;
mod worker;
