//! `nkpki completions SHELL` and the hidden `nkpki man --out DIR`: shell completions and man
//! pages generated from the live command-line definitions, so they never drift from them.

use anyhow::Context;
use clap::CommandFactory;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    nkpki completions bash > ~/.local/share/bash-completion/completions/nkpki\n  \
    nkpki completions zsh > ~/.zfunc/_nkpki\n  \
    nkpki completions fish > ~/.config/fish/completions/nkpki.fish")]
pub struct Args {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    // into memory first: clap_complete panics on a write error (a closed pipe)
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "nkpki", &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("cannot write the completions to standard output")
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write nkpki.1 and one nkpki-<subcommand>.1 per subcommand into
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn man(args: ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    clap_mangen::generate_to(super::Cli::command(), &args.out)
        .with_context(|| format!("cannot write man pages into {}", args.out.display()))?;
    Ok(())
}
