//! `nkpki sign --server --csr-dir DIR` (or several `--csr`): one session for a batch of
//! CSRs, approved once; each certificate written beside the others in `--out-dir`.

use super::hinted;
use super::online::{EXIT_POLICY, Exit, server_error};
use anyhow::Context;
use nkpki::fsx;
use nkpki::manifest::Manifest;
use nkpki::pki::{self, Csr, Profile, batch::MAX_BATCH};
use nkpki::policy::Request;
use nkpki::proto::{API, CreateSession, SessionKind, SessionPreview, SessionStatus};
use std::path::{Path, PathBuf};

/// What `sign` was asked, for a batch.
pub struct Batch<'a> {
    pub server: &'a super::online::ServerArgs,
    pub offline: bool,
    /// The CA's manifest: its policy judges every certificate here before a session opens.
    pub manifest: Option<&'a Path>,
    pub csrs: &'a [PathBuf],
    pub csr_dir: Option<&'a Path>,
    pub out_dir: Option<&'a Path>,
    pub profile: Profile,
    pub days: u32,
    pub dry_run: bool,
    pub force: bool,
    pub json: bool,
}

/// One CSR of the batch: where it came from and where its certificate goes.
struct Item {
    csr: PathBuf,
    out: PathBuf,
}

/// What `sign --json` prints for a batch.
#[derive(serde::Serialize)]
struct BatchReport<'a> {
    ca_id: &'a str,
    session_id: &'a str,
    profile: String,
    days: u32,
    count: usize,
    /// The holders who approved.
    holders: &'a [String],
    certificates: Vec<IssuedReport>,
}

#[derive(serde::Serialize)]
struct IssuedReport {
    csr: String,
    out: String,
    serial: String,
    subject: String,
}

/// The batch's CSR files: every `*.csr` and `*.pem` in `--csr-dir`, by name, or the
/// `--csr` files as given.
fn csr_files(b: &Batch<'_>) -> anyhow::Result<Vec<PathBuf>> {
    let Some(dir) = b.csr_dir else {
        return Ok(b.csrs.to_vec());
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if path.is_file() && matches!(ext, "csr" | "pem") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(hinted(
            format!("no CSR in {}", dir.display()),
            "the directory's *.csr and *.pem files are the batch",
        ));
    }
    Ok(files)
}

/// Each CSR file and the certificate file named after it; two CSRs that would write the
/// same file are refused before anything is sent.
fn items(files: Vec<PathBuf>, out_dir: &Path) -> anyhow::Result<Vec<Item>> {
    let mut items: Vec<Item> = Vec::with_capacity(files.len());
    for csr in files {
        let stem = csr
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .with_context(|| format!("{}: no file name to name its certificate", csr.display()))?;
        let out = out_dir.join(format!("{stem}.crt"));
        if let Some(other) = items.iter().find(|i| i.out == out) {
            return Err(hinted(
                format!(
                    "{} and {} would both be written to {}",
                    other.csr.display(),
                    csr.display(),
                    out.display()
                ),
                "give the CSR files distinct names (the certificate is named after its CSR)",
            ));
        }
        items.push(Item { csr, out });
    }
    Ok(items)
}

pub fn run(b: &Batch<'_>) -> anyhow::Result<()> {
    if b.offline || b.server.server.is_none() {
        return Err(hinted(
            "a batch is issued online only",
            "--server URL --ca CA_ID with --csr-dir DIR (or several --csr) and --out-dir DIR",
        ));
    }
    let files = csr_files(b)?;
    if files.len() > MAX_BATCH {
        return Err(hinted(
            format!(
                "a batch of {} CSRs is over the limit of {MAX_BATCH}; nothing was sent",
                files.len()
            ),
            format!("split it into batches of at most {MAX_BATCH}"),
        ));
    }
    let out_dir = match (b.out_dir, b.dry_run) {
        (Some(dir), _) => dir.to_owned(),
        (None, true) => PathBuf::from("."),
        (None, false) => {
            return Err(hinted(
                "no --out-dir given",
                "--out-dir DIR: where each certificate of the batch is written",
            ));
        }
    };
    let items = items(files, &out_dir)?;
    let count = items.len();
    // every CSR read and checked here first: a bad one is named before anything is sent
    let mut csrs = Vec::with_capacity(count);
    for (i, item) in items.iter().enumerate() {
        let csr = Csr::parse(&super::read_file(&item.csr, "CSR")?).with_context(|| {
            format!(
                "CSR {} of {count} ({}); nothing was sent",
                i + 1,
                item.csr.display()
            )
        })?;
        csrs.push(csr);
    }
    if let Some(path) = b.manifest {
        check_policy_locally(b, path, &items, &csrs)?;
    }
    let csr_pems: Vec<String> = csrs
        .iter()
        .map(|csr| pki::pem_encode("CERTIFICATE REQUEST", &csr.der))
        .collect();
    if !b.dry_run && !b.force {
        if let Some(taken) = items.iter().find(|i| i.out.exists()) {
            return Err(hinted(
                format!("{} already exists", taken.out.display()),
                "choose another --out-dir or pass --force",
            ));
        }
    }
    let request = CreateSession {
        ca_id: b.server.ca()?.to_owned(),
        kind: SessionKind::IssueBatch,
        csr_pem: None,
        csr_pems,
        profile: Some(b.profile.to_string()),
        days: Some(b.days),
        serial: None,
        reason: None,
        new_policy: None,
    };
    let client = b.server.operator_client()?;
    if b.dry_run {
        return dry_run(b, &client, &request);
    }
    if !b.json {
        eprintln!(
            "Batch:    {count} CSRs, profile {}, {} days each",
            b.profile, b.days
        );
    }
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let status = super::online::run_session(&client, &request, b.json)?;
    write_certificates(b, &client, &items, &csrs, &status, &request.ca_id)
}

/// The PEM of a batch certificate the server returned, once it is checked to be the
/// CA's, for this CSR's key, with the serial the server announced.
fn check_issued(
    ca: &pki::CaCertificate,
    csr: &Csr,
    cert: &nkpki::proto::BatchCertificate,
) -> anyhow::Result<String> {
    let pem = cert
        .pem
        .as_deref()
        .with_context(|| format!("the server returned no PEM for serial {}", cert.serial))?;
    let der = pem::parse(pem)
        .ok()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.contents().to_vec())
        .with_context(|| format!("serial {}: not a PEM certificate", cert.serial))?;
    pki::check_signed_by(ca, &der)
        .with_context(|| format!("serial {}: not issued by the CA", cert.serial))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("serial {}: {e}", cert.serial))?;
    if x509.public_key().raw != csr.spki_der.as_slice() {
        anyhow::bail!(
            "serial {} certifies another key than its CSR's",
            cert.serial
        );
    }
    let serial = hex::encode(x509.raw_serial());
    if serial != cert.serial.to_lowercase() {
        anyhow::bail!(
            "the certificate carries serial {serial}, not the announced {}",
            cert.serial
        );
    }
    Ok(pem.to_owned())
}

/// `--manifest`: the CA's own signed policy judges every certificate of the batch here,
/// before any session is opened; the first refusal names its CSR.
fn check_policy_locally(
    b: &Batch<'_>,
    path: &Path,
    items: &[Item],
    csrs: &[Csr],
) -> anyhow::Result<()> {
    let text = String::from_utf8(super::read_file(path, "manifest")?)
        .map_err(|_| anyhow::anyhow!("{} is not a manifest (not text)", path.display()))?;
    let manifest = Manifest::from_json(&text)
        .and_then(|m| m.verify())
        .with_context(|| format!("manifest {}", path.display()))?;
    let sub_ca = (b.profile == Profile::SubCa)
        .then(|| manifest.sub_ca_constraints())
        .flatten();
    let now = time::OffsetDateTime::now_utc();
    let count = csrs.len();
    let mut summary = Vec::new();
    for (i, (item, csr)) in items.iter().zip(csrs).enumerate() {
        let which = format!("CSR {} of {count} ({})", i + 1, item.csr.display());
        let terms = pki::Terms::new(b.profile, b.days, now)?.with_sub_ca(sub_ca.clone());
        let view = pki::check_request(&manifest.ca, csr, &terms)
            .with_context(|| format!("{which}; no session was opened"))?;
        let verdict = manifest.verdict(&Request::Issue(&view));
        if !verdict.allowed() {
            return Err(Exit(
                EXIT_POLICY,
                format!(
                    "{which}: refused by the CA policy: {}; no session was opened",
                    verdict.refusal()
                ),
            )
            .into());
        }
        if summary.is_empty() {
            summary = verdict.summary;
        }
    }
    eprintln!("Policy (every certificate of the batch allowed):");
    for line in &summary {
        eprintln!("  {}", pki::text::escape(line));
    }
    Ok(())
}

/// Writes each certificate next to the others, and reports.
fn write_certificates(
    b: &Batch<'_>,
    client: &nkpki::client::Client,
    items: &[Item],
    csrs: &[Csr],
    status: &SessionStatus,
    ca_id: &str,
) -> anyhow::Result<()> {
    if status.certificates.len() != items.len() {
        anyhow::bail!(
            "the server returned {} certificates for {} CSRs (session {})",
            status.certificates.len(),
            items.len(),
            status.session_id
        );
    }
    // every certificate checked against its CSR before any is written
    let ca_der = client
        .document(&format!("/ca/{ca_id}.der"))
        .map_err(server_error)
        .context("fetching the CA certificate to check the batch")?;
    let ca = pki::CaCertificate::from_der(&ca_der).context("the CA certificate the server sent")?;
    let count = items.len();
    let mut pems = Vec::with_capacity(count);
    for (i, (csr, cert)) in csrs.iter().zip(&status.certificates).enumerate() {
        let pem = check_issued(&ca, csr, cert).with_context(|| {
            format!(
                "certificate {} of {count} (for {}), session {}; nothing was written",
                i + 1,
                items[i].csr.display(),
                status.session_id
            )
        })?;
        pems.push(pem);
    }
    let mut report = Vec::with_capacity(items.len());
    for ((item, cert), pem) in items.iter().zip(&status.certificates).zip(&pems) {
        fsx::write_new(&item.out, pem.as_bytes(), 0o644, b.force).map_err(|e| {
            hinted(
                format!("cannot write {}: {e}", item.out.display()),
                format!(
                    "every certificate of the batch is issued; GET /api/v1/sessions/{}/certificates \
                     gives them all again",
                    status.session_id
                ),
            )
        })?;
        report.push(IssuedReport {
            csr: item.csr.display().to_string(),
            out: item.out.display().to_string(),
            serial: cert.serial.clone(),
            subject: cert.subject.clone(),
        });
    }
    if b.json {
        return super::output::print_json(&BatchReport {
            ca_id,
            session_id: &status.session_id,
            profile: b.profile.to_string(),
            days: b.days,
            count: report.len(),
            holders: &status.approved,
            certificates: report,
        });
    }
    for r in &report {
        println!(
            "  serial {}  {} -> {}",
            r.serial,
            pki::text::escape(&r.subject),
            r.out
        );
    }
    println!(
        "Issued {} certificates in session {} (approved by {})",
        report.len(),
        status.session_id,
        status.approved.join(", ")
    );
    Ok(())
}

/// `sign --dry-run` of a batch: the server's verdict on every CSR; nothing is opened.
fn dry_run(
    b: &Batch<'_>,
    client: &nkpki::client::Client,
    request: &CreateSession,
) -> anyhow::Result<()> {
    let preview: SessionPreview = client
        .post(&format!("{API}/sessions/preview"), request)
        .map_err(server_error)?;
    if b.json {
        super::output::print_json(&preview)?;
    } else {
        println!(
            "CA:          {} ({}), {} of {} approvals",
            pki::text::escape(&preview.ca_name),
            preview.ca_id,
            preview.threshold,
            preview.total
        );
        if let Some(batch) = preview.summary.as_ref().and_then(|s| s.batch.as_ref()) {
            println!(
                "The batch that would be issued: {} certificates, profile {}",
                batch.count,
                batch.profiles.join(", ")
            );
            println!(
                "Names:       {}",
                pki::text::escape(&batch.names.join(", "))
            );
            for (i, view) in batch.certificates.iter().enumerate() {
                println!(
                    "  {:>4}. {} [{}]",
                    i + 1,
                    pki::text::escape(&view.subject_string()),
                    pki::text::escape(&view.sans.join(", "))
                );
            }
        }
    }
    super::sign::dry_run_verdict(preview, !b.json)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nkpki::pki::{CaCertificate, CaKey, CaSubject, KeyAlgorithm, Terms};
    use nkpki::proto::BatchCertificate;
    use time::OffsetDateTime;

    fn ca(name: &str) -> (CaKey, CaCertificate) {
        let key = CaKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let subject = CaSubject {
            name: name.into(),
            org: "Org".into(),
            country: "FR".into(),
        };
        let der = pki::self_signed(&key, &subject, 10, None, OffsetDateTime::now_utc()).unwrap();
        (key, CaCertificate::from_der(&der).unwrap())
    }

    fn csr(cn: &str) -> Csr {
        let key = CaKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        Csr::parse(params.serialize_request(&key).unwrap().der()).unwrap()
    }

    fn issued(key: &CaKey, ca: &CaCertificate, csr: &Csr) -> BatchCertificate {
        let terms = Terms::new(Profile::Client, 10, OffsetDateTime::now_utc()).unwrap();
        let cert = pki::issue(key, ca, csr, &terms).unwrap();
        BatchCertificate {
            serial: cert.serial_hex.clone(),
            subject: String::new(),
            pem: Some(pki::pem_encode("CERTIFICATE", &cert.der)),
        }
    }

    #[test]
    fn a_batch_certificate_must_be_the_cas_for_its_csr_with_its_serial() {
        let (key, ca_cert) = ca("Batch CA");
        let (one, two) = (csr("one"), csr("two"));
        let first = issued(&key, &ca_cert, &one);
        assert_eq!(
            check_issued(&ca_cert, &one, &first).unwrap(),
            first.pem.clone().unwrap()
        );
        // the certificates came back in another order
        let why = format!("{:#}", check_issued(&ca_cert, &two, &first).unwrap_err());
        assert!(
            why.contains("certifies another key than its CSR's"),
            "{why}"
        );
        // announced under another serial
        let renamed = BatchCertificate {
            serial: "7f01".into(),
            ..first.clone()
        };
        let why = format!("{:#}", check_issued(&ca_cert, &one, &renamed).unwrap_err());
        assert!(why.contains("not the announced 7f01"), "{why}");
        // issued by another CA
        let (other_key, other_ca) = ca("Other CA");
        let foreign = issued(&other_key, &other_ca, &one);
        let why = format!("{:#}", check_issued(&ca_cert, &one, &foreign).unwrap_err());
        assert!(why.contains("not issued by the CA"), "{why}");
        // no PEM at all
        let missing = BatchCertificate { pem: None, ..first };
        let why = format!("{:#}", check_issued(&ca_cert, &one, &missing).unwrap_err());
        assert!(why.contains("no PEM"), "{why}");
    }
}
