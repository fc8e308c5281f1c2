//! `nkpki sign`: issue a certificate from a CSR with M of the CA's shares.

use super::hinted;
use anyhow::Context;
use nkpki::manifest::{Manifest, VerifiedManifest};
use nkpki::pki::{self, Csr, Profile};
use nkpki::policy::{Request, Verdict};
use nkpki::{fsx, offline};
use std::path::PathBuf;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example (on the ceremony laptop, no network):\n  \
    nkpki sign --offline --manifest ca/manifest.json --csr req.pem --profile server --days 90 \\\n    \
    --share NK001.age --share NK003.age --share NK004.age --identity holder-keys.txt --out cert.pem --chain")]
pub struct Args {
    /// Sign here, with share files or tokens (no network)
    #[arg(long, conflicts_with = "server")]
    offline: bool,
    /// The CA's manifest.json from the ceremony: required with --offline; with --server,
    /// the CA policy's verdict is shown (and a refusal ends it) before a session is opened
    #[arg(long, value_name = "FILE", required_if_eq("offline", "true"))]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    server: super::online::ServerArgs,
    /// The certificate signing request (PEM or DER); with --server, repeat it to issue a
    /// batch in one session
    #[arg(long, value_name = "FILE", required_unless_present = "csr_dir")]
    csr: Vec<PathBuf>,
    /// With --server: issue every *.csr and *.pem in DIR (by name) as one batch session of
    /// at most 1,000 CSRs, approved once by the holders
    #[arg(long, value_name = "DIR", requires = "server", conflicts_with = "csr")]
    csr_dir: Option<PathBuf>,
    /// A batch's certificates go here, each named after its CSR file (web1.csr → web1.crt)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "chain"])]
    out_dir: Option<PathBuf>,
    /// Issuance profile: server, client, sub-ca or ocsp (an OCSP responder: OCSPSigning,
    /// ocsp-nocheck, at most 30 days)
    #[arg(long, default_value = "server")]
    profile: Profile,
    /// Validity of the certificate in days (must end before the CA certificate)
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// A sealed share file (repeat)
    #[arg(long = "share", value_name = "FILE")]
    shares: Vec<PathBuf>,
    #[command(flatten)]
    unseal: super::unseal::UnsealArgs,
    /// A token holding a share: label, serial or PKCS#11 URI (repeat)
    #[arg(long = "token", value_name = "TOKEN")]
    tokens: Vec<String>,
    /// One reader: ask for the holders' tokens one after another until the threshold is met
    #[arg(long, conflicts_with = "tokens")]
    insert_tokens: bool,
    #[command(flatten)]
    token_access: super::tokens::TokenAccess,
    /// Where to write the certificate (PEM)
    #[arg(long, value_name = "FILE", required_unless_present_any = ["dry_run", "out_dir"])]
    out: Option<PathBuf>,
    /// With --server: show what would be issued (names as they will appear, key,
    /// validity) and the server's verdict; open no session (exit 3 if it would be refused)
    #[arg(long, requires = "server", conflicts_with_all = ["out", "out_dir", "chain", "force"])]
    dry_run: bool,
    /// Append the CA certificate after the issued one
    #[arg(long)]
    chain: bool,
    /// Replace --out if it exists
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    output: super::output::JsonFlag,
}

/// What `sign --json` prints: the certificate as written to `--out`, read back.
#[derive(Debug, serde::Serialize)]
struct SignReport<'a> {
    #[serde(flatten)]
    certificate: pki::CertificateSummary,
    ca_id: &'a str,
    profile: String,
    days: u32,
    out: String,
    chain: bool,
    /// The holders whose shares signed it.
    holders: Vec<String>,
    /// `sign --server`: the final session.
    session: Option<&'a nkpki::proto::SessionStatus>,
}

fn report_share(share: &nkpki::sss::Share, what: &str) {
    eprintln!(
        "share {} ({}) from {what}: verified against the manifest",
        share.index,
        share.holder.as_deref().unwrap_or("?")
    );
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.csr_dir.is_some() || args.csr.len() > 1 || args.out_dir.is_some() {
        return super::sign_batch::run(&super::sign_batch::Batch {
            server: &args.server,
            offline: args.offline,
            manifest: args.manifest.as_deref(),
            csrs: &args.csr,
            csr_dir: args.csr_dir.as_deref(),
            out_dir: args.out_dir.as_deref(),
            profile: args.profile,
            days: args.days,
            dry_run: args.dry_run,
            force: args.force,
            json: args.output.json,
        });
    }
    if args.dry_run {
        return dry_run(&args);
    }
    let Some(out) = &args.out else {
        return Err(hinted(
            "no --out given",
            "--out FILE: where to write the certificate",
        ));
    };
    if out.exists() && !args.force {
        return Err(hinted(
            format!("{} already exists", out.display()),
            "choose another --out or pass --force",
        ));
    }
    if args.server.server.is_some() {
        return run_online(&args, out);
    }
    let Some(manifest_path) = args.manifest.as_ref().filter(|_| args.offline) else {
        return Err(hinted(
            "choose where to sign",
            "--offline --manifest FILE with shares or tokens, or --server URL --ca CA_ID",
        ));
    };
    if args.shares.is_empty() && args.tokens.is_empty() && !args.insert_tokens {
        return Err(hinted(
            "no share given",
            "give --share FILE, --token TOKEN or --insert-tokens",
        ));
    }
    let manifest_text = String::from_utf8(super::read_file(manifest_path, "manifest")?)
        .map_err(|_| anyhow::anyhow!("{} is not a manifest (not text)", manifest_path.display()))?;
    let manifest = Manifest::from_json(&manifest_text)
        .and_then(|m| m.verify())
        .with_context(|| format!("manifest {}", manifest_path.display()))?;
    let csr_path = one_csr(&args)?;
    let csr = Csr::parse(&super::read_file(csr_path, "CSR")?)
        .with_context(|| format!("CSR {}", csr_path.display()))?;
    let terms = pki::Terms::new(args.profile, args.days, OffsetDateTime::now_utc())?
        .with_sub_ca(sub_ca_constraints(&manifest, args.profile));
    let view = pki::check_request(&manifest.ca, &csr, &terms)?;
    let verdict = manifest.verdict(&Request::Issue(&view));
    show_verdict(&verdict);
    if !verdict.allowed() {
        return Err(super::online::Exit(
            super::online::EXIT_POLICY,
            format!(
                "refused by the CA policy: {}; nothing was signed",
                verdict.refusal()
            ),
        )
        .into());
    }
    eprintln!(
        "CA:          {} ({})",
        pki::text::escape(&manifest.body.ca.name),
        manifest.ca_id()
    );
    eprintln!("The certificate to be issued:");
    for line in view.lines() {
        eprintln!("  {line}");
    }
    eprintln!("CSR SHA-256: {}", csr.digest());

    let (issued, holders) = if manifest.threshold_key().is_some() {
        sign_threshold(&args, &manifest, &csr, &terms, &verdict)?
    } else {
        sign_reconstruct(&args, &manifest, &csr, &terms, &verdict)?
    };
    for note in &issued.dropped {
        eprintln!(
            "note: not copied from the CSR (profile {}): {}",
            args.profile,
            pki::text::escape(note)
        );
    }
    let mut pem = issued.pem();
    if args.chain {
        pem.push_str(&manifest.ca.pem());
    }
    fsx::write_new(out, pem.as_bytes(), 0o644, args.force)
        .with_context(|| format!("cannot write {}", out.display()))?;
    if args.output.json {
        return super::output::print_json(&SignReport {
            certificate: pki::CertificateSummary::from_der(&issued.der)?,
            ca_id: &manifest.ca_id().0,
            profile: args.profile.to_string(),
            days: args.days,
            out: out.display().to_string(),
            chain: args.chain,
            holders,
            session: None,
        });
    }
    let until = issued.not_after.format(&Rfc3339).unwrap_or_default();
    println!(
        "Issued serial {} valid until {until} -> {}",
        issued.serial_hex,
        out.display()
    );
    Ok(())
}

/// The one `--csr` of a single issuance.
fn one_csr(args: &Args) -> anyhow::Result<&PathBuf> {
    args.csr.first().ok_or_else(|| {
        hinted(
            "no --csr given",
            "--csr FILE: the certificate signing request",
        )
    })
}

/// Reconstruct mode: every share is read, then M of them rebuild the key for one signature.
fn sign_reconstruct(
    args: &Args,
    manifest: &VerifiedManifest,
    csr: &Csr,
    terms: &pki::Terms,
    verdict: &Verdict,
) -> anyhow::Result<(pki::Issued, Vec<String>)> {
    let mut unsealer = args.unseal.unsealer()?;
    let mut shares = Vec::with_capacity(args.shares.len() + args.tokens.len());
    for path in &args.shares {
        let what = path.display().to_string();
        let armored = super::read_file(path, "share file")?;
        let pass = || unsealer.passphrases.get(path);
        let share = offline::open_share(manifest, &armored, &what, &unsealer.identities, pass)?;
        report_share(&share, &what);
        shares.push((what, share));
    }
    if !args.tokens.is_empty() || args.insert_tokens {
        let token_shares = if args.insert_tokens {
            super::tokens::insert_one_by_one(
                manifest,
                &args.token_access,
                shares.len(),
                usize::from(verdict.approvals),
            )?
        } else {
            super::tokens::read_named(manifest, &args.token_access, &args.tokens)?
        };
        shares.extend(token_shares);
    }
    let holders: Vec<String> = shares
        .iter()
        .map(|(_, s)| holder_name(manifest, s))
        .collect();
    check_quorum(verdict, manifest.threshold(), &holders)?;
    let issued = offline::sign(manifest, csr, terms, &shares)?;
    drop(shares);
    Ok((issued, holders))
}

/// The holder a share belongs to: the manifest gives each index its holder (a share file
/// without a holder name counts for its holder too, e.g. for the policy's required holders).
fn holder_name(manifest: &VerifiedManifest, share: &nkpki::sss::Share) -> String {
    manifest
        .holder(share.index)
        .map(|h| h.nitrokey_id.to_string())
        .or_else(|| share.holder.clone())
        .unwrap_or_else(|| format!("share {}", share.index))
}

/// Threshold mode: each share, from a file or a token, makes its signature share on the
/// TBSCertificate as soon as it is read and is wiped before the next; the signature
/// shares combine into the signature. The CA key never exists.
fn sign_threshold(
    args: &Args,
    manifest: &VerifiedManifest,
    csr: &Csr,
    terms: &pki::Terms,
    verdict: &Verdict,
) -> anyhow::Result<(pki::Issued, Vec<String>)> {
    let mut signing = offline::ThresholdSigning::begin(manifest, csr, terms)?;
    eprintln!(
        "Threshold CA: each share signs the TBSCertificate (SHA-256 {}) on its own; the CA \
         key is never rebuilt",
        signing.tbs_sha256()
    );
    let mut unsealer = args.unseal.unsealer()?;
    let mut holders = Vec::new();
    for path in &args.shares {
        let what = path.display().to_string();
        let armored = super::read_file(path, "share file")?;
        let pass = || unsealer.passphrases.get(path);
        let share = offline::open_share(manifest, &armored, &what, &unsealer.identities, pass)?;
        report_share(&share, &what);
        signing.add(&what, &share)?;
        holders.push(holder_name(manifest, &share));
        drop(share);
        eprintln!("  signature share made; the share is wiped");
    }
    let mut add = |what: String, share: nkpki::sss::Share| -> anyhow::Result<()> {
        signing.add(&what, &share)?;
        holders.push(holder_name(manifest, &share));
        drop(share);
        eprintln!("  signature share made; the share is wiped");
        Ok(())
    };
    if args.insert_tokens {
        let already = args.shares.len();
        let needed = usize::from(verdict.approvals);
        super::tokens::insert_one_by_one_into(
            manifest,
            &args.token_access,
            already,
            needed,
            &mut add,
        )?;
    } else if !args.tokens.is_empty() {
        super::tokens::for_each_named(manifest, &args.token_access, &args.tokens, &mut add)?;
    }
    check_quorum(verdict, manifest.threshold(), &holders)?;
    Ok((signing.finish()?, holders))
}

/// The constraints the CA policy gives a sub-CA (none for other profiles).
fn sub_ca_constraints(
    manifest: &VerifiedManifest,
    profile: Profile,
) -> Option<pki::constraints::SubCaConstraints> {
    (profile == Profile::SubCa)
        .then(|| manifest.sub_ca_constraints())
        .flatten()
}

/// Prints the policy's verdict on the request, as holders are shown it.
fn show_verdict(verdict: &Verdict) {
    eprintln!("Policy:");
    for line in &verdict.summary {
        eprintln!("  {}", pki::text::escape(line));
    }
    for v in &verdict.violations {
        eprintln!("  REFUSED: {}", pki::text::escape(&v.to_string()));
    }
}

/// Offline, each share brought is one holder's approval: the policy's count and required
/// holders are checked before anything is signed (fewer than M shares are the signing
/// step's to refuse).
fn check_quorum(verdict: &Verdict, threshold: u8, holders: &[String]) -> anyhow::Result<()> {
    if holders.len() < usize::from(threshold) {
        // fewer than M: the signing step says so, as without a policy
        return Ok(());
    }
    if holders.len() < usize::from(verdict.approvals) {
        return Err(super::online::Exit(
            super::online::EXIT_POLICY,
            format!(
                "the CA policy's [{}] rule needs {} approvals (holders' shares) and {} were given; nothing was signed",
                verdict.profile,
                verdict.approvals,
                holders.len()
            ),
        )
        .into());
    }
    if let Some(missing) = verdict
        .required_holders
        .iter()
        .find(|h| !holders.contains(h))
    {
        return Err(super::online::Exit(
            super::online::EXIT_POLICY,
            format!(
                "the CA policy's [{}] rule requires holder {missing} among the approvers (given: {}); nothing was signed",
                verdict.profile,
                holders.join(", ")
            ),
        )
        .into());
    }
    Ok(())
}

/// `sign --server --manifest`: the CA's own signed policy, judged here before any session
/// is opened.
fn check_policy_locally(args: &Args, csr: &Csr) -> anyhow::Result<()> {
    if let Some(path) = &args.manifest {
        // the CA's own signed policy, judged here before any session is opened
        let text = String::from_utf8(super::read_file(path, "manifest")?)
            .map_err(|_| anyhow::anyhow!("{} is not a manifest (not text)", path.display()))?;
        let manifest = Manifest::from_json(&text)
            .and_then(|m| m.verify())
            .with_context(|| format!("manifest {}", path.display()))?;
        let terms = pki::Terms::new(args.profile, args.days, OffsetDateTime::now_utc())?
            .with_sub_ca(sub_ca_constraints(&manifest, args.profile));
        let view = pki::check_request(&manifest.ca, csr, &terms)?;
        let verdict = manifest.verdict(&Request::Issue(&view));
        show_verdict(&verdict);
        if !verdict.allowed() {
            return Err(super::online::Exit(
                super::online::EXIT_POLICY,
                format!(
                    "refused by the CA policy: {}; no session was opened",
                    verdict.refusal()
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// The session request `sign --server` sends for `csr`.
fn issue_request(args: &Args, csr: &Csr) -> anyhow::Result<nkpki::proto::CreateSession> {
    Ok(nkpki::proto::CreateSession {
        ca_id: args.server.ca()?.to_owned(),
        kind: nkpki::proto::SessionKind::Issue,
        csr_pem: Some(pki::pem_encode("CERTIFICATE REQUEST", &csr.der)),
        csr_pems: Vec::new(),
        profile: Some(args.profile.to_string()),
        days: Some(args.days),
        serial: None,
        reason: None,
        new_policy: None,
    })
}

/// `sign --server --dry-run`: ask the server what the session would issue, open nothing.
fn dry_run(args: &Args) -> anyhow::Result<()> {
    let csr_path = one_csr(args)?;
    let csr = Csr::parse(&super::read_file(csr_path, "CSR")?)
        .with_context(|| format!("CSR {}", csr_path.display()))?;
    check_policy_locally(args, &csr)?;
    let client = args.server.operator_client()?;
    let request = issue_request(args, &csr)?;
    let preview: nkpki::proto::SessionPreview = client
        .post(&format!("{}/sessions/preview", nkpki::proto::API), &request)
        .map_err(super::online::server_error)?;
    if args.output.json {
        super::output::print_json(&preview)?;
    } else {
        println!(
            "CA:          {} ({}), {} of {} approvals",
            pki::text::escape(&preview.ca_name),
            preview.ca_id,
            preview.threshold,
            preview.total
        );
        if let Some(view) = preview
            .summary
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
        {
            println!("The certificate that would be issued:");
            for line in view.lines() {
                if line.starts_with("Serial:") {
                    println!("  Serial:      (drawn when the session opens)");
                } else {
                    println!("  {line}");
                }
            }
        }
    }
    dry_run_verdict(preview, !args.output.json)
}

/// Ends a dry run: prints its verdict (unless `--json` printed the whole preview) and
/// turns a refusal into the error the session request would have got.
pub(super) fn dry_run_verdict(
    preview: nkpki::proto::SessionPreview,
    print: bool,
) -> anyhow::Result<()> {
    if print {
        match &preview.refusal {
            None => println!("Verdict:     accepted (dry run: no session opened)"),
            Some(r) => println!(
                "Verdict:     refused ({} {}): {}",
                r.status,
                r.code,
                pki::text::escape(&r.error)
            ),
        }
    }
    match preview.refusal {
        None => Ok(()),
        Some(r) => Err(super::online::server_error(
            nkpki::client::ClientError::Api {
                status: r.status,
                code: r.code,
                message: r.error,
            },
        )),
    }
}

/// `sign --server`: open a session on the server and wait for M holders.
fn run_online(args: &Args, out: &std::path::Path) -> anyhow::Result<()> {
    let csr_path = one_csr(args)?;
    let csr = Csr::parse(&super::read_file(csr_path, "CSR")?)
        .with_context(|| format!("CSR {}", csr_path.display()))?;
    check_policy_locally(args, &csr)?;
    let client = args.server.operator_client()?;
    let request = issue_request(args, &csr)?;
    eprintln!(
        "Request:  {} [{}], profile {}, {} days; CSR SHA-256 {}",
        pki::text::escape(&csr.subject_string()),
        csr.key,
        args.profile,
        args.days,
        csr.digest()
    );
    // fetched before the session, so a signed certificate is never lost to a failed fetch
    let ca_pem = if args.chain {
        let ca = client
            .document(&format!("/ca/{}.crt", request.ca_id))
            .map_err(|e| super::online::Exit(super::online::EXIT_SERVER, e.to_string()))?;
        Some(String::from_utf8_lossy(&ca).into_owned())
    } else {
        None
    };
    let status = super::online::run_session(&client, &request, args.output.json)?;
    let mut pem = status
        .certificate_pem
        .clone()
        .context("the server returned no certificate")?;
    if let Some(ca) = &ca_pem {
        pem.push_str(ca);
    }
    fsx::write_new(out, pem.as_bytes(), 0o644, args.force)
        .with_context(|| format!("cannot write {}", out.display()))?;
    if args.output.json {
        super::output::print_json(&SignReport {
            certificate: pki::CertificateSummary::from_pem(&pem)?,
            ca_id: &request.ca_id,
            profile: args.profile.to_string(),
            days: args.days,
            out: out.display().to_string(),
            chain: args.chain,
            holders: status.approved.clone(),
            session: Some(&status),
        })?;
    } else {
        println!(
            "Issued serial {} (approved by {}) -> {}",
            status.serial.clone().unwrap_or_default(),
            status.approved.join(", "),
            out.display()
        );
    }
    Ok(())
}
