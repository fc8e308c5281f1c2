//! The `nkpki` executable: parse, dispatch, map errors to exit codes (0 success, 1 the
//! operation failed, 2 the command line is wrong).

mod cmd;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    for warning in nkpki::harden::process() {
        eprintln!("warning: {warning}");
    }
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            cmd::report(&err);
            ExitCode::from(1)
        }
    }
}
