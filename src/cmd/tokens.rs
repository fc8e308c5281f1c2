//! Reading shares from holders' tokens for offline signing: named tokens all plugged in, or
//! one reader and the tokens inserted one after another.

use anyhow::bail;
use nkpki::hsm::{Module, PinSource, TokenSelector, read_pin};
use nkpki::manifest::VerifiedManifest;
use nkpki::offline;
use nkpki::sss::Share;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Debug, Default, clap::Args)]
pub struct TokenAccess {
    /// PKCS#11 module (default: $NKPKI_PKCS11_MODULE, else OpenSC's opensc-pkcs11.so)
    #[arg(long, value_name = "PATH")]
    pub module: Option<PathBuf>,
    /// Read token PINs from the first line of FILE (default: $NKPKI_PIN if set, else a
    /// prompt for each token)
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
}

fn read_one(
    manifest: &VerifiedManifest,
    module: &Module,
    selector: &TokenSelector,
    access: &TokenAccess,
) -> anyhow::Result<(String, Share)> {
    let token = module.open(selector)?;
    let pin = read_pin(&PinSource::resolve(access.pin_file.clone()), token.label())?;
    token.login(&pin)?;
    drop(pin);
    let share = offline::share_from_token(manifest, &token)?;
    let what = format!("token {}", token.label());
    eprintln!(
        "share {} ({}) from {what}: verified against the manifest",
        share.index,
        share.holder.as_deref().unwrap_or("?")
    );
    Ok((what, share))
}

/// Reads the share on each named token (all plugged in at once).
pub fn read_named(
    manifest: &VerifiedManifest,
    access: &TokenAccess,
    tokens: &[String],
) -> anyhow::Result<Vec<(String, Share)>> {
    let mut out = Vec::with_capacity(tokens.len());
    for_each_named(manifest, access, tokens, |what, share| {
        out.push((what, share));
        Ok(())
    })?;
    Ok(out)
}

/// Hands the share on each named token to `sink` as soon as it is read, so that a caller
/// that uses each share on its own can drop it before the next token is read.
pub fn for_each_named(
    manifest: &VerifiedManifest,
    access: &TokenAccess,
    tokens: &[String],
    mut sink: impl FnMut(String, Share) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let module = Module::load(access.module.as_deref())?;
    for t in tokens {
        let (what, share) = read_one(manifest, &module, &TokenSelector::parse(t)?, access)?;
        sink(what, share)?;
    }
    Ok(())
}

/// One reader: asks for tokens one at a time (Enter on standard input) until `needed`
/// shares are in (the threshold, or the CA policy's approvals). The module is reloaded each time so a newly inserted token is seen.
pub fn insert_one_by_one(
    manifest: &VerifiedManifest,
    access: &TokenAccess,
    already: usize,
    needed: usize,
) -> anyhow::Result<Vec<(String, Share)>> {
    let mut out = Vec::new();
    insert_one_by_one_into(manifest, access, already, needed, |what, share| {
        out.push((what, share));
        Ok(())
    })?;
    Ok(out)
}

/// [`insert_one_by_one`], handing each share to `sink` as soon as it is read. An error
/// from `sink` (e.g. a duplicate) is reported and the next token can be tried.
pub fn insert_one_by_one_into(
    manifest: &VerifiedManifest,
    access: &TokenAccess,
    already: usize,
    needed: usize,
    mut sink: impl FnMut(String, Share) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut used: Vec<String> = Vec::new();
    let mut taken = 0usize;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    while already + taken < needed {
        eprintln!(
            "Insert a holder's token and press Enter ({} of {} shares so far; Ctrl-D to stop)",
            already + taken,
            needed
        );
        match lines.next() {
            Some(Ok(_)) => {}
            _ => bail!(
                "stopped with {} of {} shares; nothing was signed",
                already + taken,
                needed
            ),
        }
        let module = Module::load(access.module.as_deref())?;
        let fresh: Vec<_> = module
            .tokens()?
            .into_iter()
            .filter(|t| !used.contains(&t.serial))
            .collect();
        let Some(summary) = fresh.first() else {
            eprintln!("no new token found; insert another holder's token");
            continue;
        };
        if fresh.len() > 1 {
            eprintln!(
                "{} new tokens present; reading {} first",
                fresh.len(),
                summary.label
            );
        }
        let selector = TokenSelector::parse(&format!("pkcs11:serial={}", summary.serial))?;
        used.push(summary.serial.clone());
        // a wrong PIN or a token without this CA's share is reported, and the next
        // token can be tried; nothing is retried on the same token
        match read_one(manifest, &module, &selector, access)
            .and_then(|(what, share)| sink(what, share))
        {
            Ok(()) => taken += 1,
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
    Ok(())
}
