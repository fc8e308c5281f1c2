//! The `nkpki` executable: parse, dispatch, map errors to exit codes (0 success, 1 the
//! operation failed, 2 the command line is wrong; online operations add 3 refused by
//! policy, 4 declined, 5 expired, 6 server error).

mod cmd;

use clap::Parser;
use std::process::ExitCode;

/// Every heap block is wiped when freed: libraries (PKCS#11 attribute buffers in cryptoki,
/// age's plaintext chunk, rsa's Montgomery parameters, serde and HTTP buffers) free copies of
/// secrets without zeroizing them, and freed memory is not reused soon enough to erase them.
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    for warning in nkpki::harden::process() {
        eprintln!("warning: {warning}");
    }
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            cmd::report(&err);
            ExitCode::from(cmd::exit_code(&err))
        }
    }
}
