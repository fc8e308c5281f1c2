//! One integration-test binary: every test drives the real `nkpki` executable and checks
//! its output with the real peers (OpenSSL, the age CLI, pkilint).

mod harness;

mod bad_input;
mod ceremony;
mod sign;
mod split_combine;
