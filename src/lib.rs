//! nkpki: a certificate authority whose key never exists whole at rest and cannot be used
//! by fewer than M of its N holders.
//!
//! The library holds every role's logic; `src/cmd/` only turns command-line arguments into
//! calls to it. See `docs/` for the design, the ceremony and the threat model.

#![forbid(unsafe_code)]

pub mod agent;
pub mod ceremony;
pub mod client;
pub mod enrollment;
pub mod fsx;
pub mod generator;
pub mod harden;
pub mod hsm;
pub mod logging;
pub mod manifest;
pub mod offline;
pub mod package;
pub mod pki;
pub mod proto;
pub mod qr;
pub mod seal;
pub mod server;
pub mod sss;
pub mod standalone;
pub mod store;
pub mod web;
pub mod worker;
