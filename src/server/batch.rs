//! `issue-batch` sessions: every CSR of a batch checked (signature, profile, CA policy)
//! before any holder is asked, one refusal naming the CSR refusing the whole batch; the
//! worker's job re-derived from the stored batch; the certificates recorded together.

use super::state::{ApiErr, ApiResult};
use crate::manifest::VerifiedManifest;
use crate::pki::{self, CertificateView, Csr, Profile, batch::MAX_BATCH};
use crate::policy;
use crate::proto::{BatchCertificate, BatchSummary, CreateSession, OfferSummary, SignJob};
use crate::store::{NewCertificate, SessionRow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::time::Duration;

/// A batch checked and built: the bundle the holders approve, its digest, and the terms
/// with every certificate.
pub(super) struct CheckedBatch {
    /// The CSRs, PEM, concatenated in order.
    pub request: String,
    pub request_sha256: String,
    pub summary: OfferSummary,
}

/// Who CSR `index` (0-based) of a batch is, for an error: its place and, when its subject
/// can be read at all, its CN (or whole subject).
fn named(index: usize, count: usize, der: Option<&[u8]>) -> String {
    let subject = der
        .and_then(|d| {
            use x509_parser::prelude::FromDer;
            x509_parser::certification_request::X509CertificationRequest::from_der(d).ok()
        })
        .map(|(_, req)| {
            let subject = &req.certification_request_info.subject;
            subject
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(|s| format!("CN={s}")))
                .unwrap_or_else(|| subject.to_string())
        });
    match subject {
        Some(s) => format!("CSR {} of {count} ({})", index + 1, pki::text::escape(&s)),
        None => format!("CSR {} of {count}", index + 1),
    }
}

/// The DER of a PEM (or DER) CSR as given, without checking it: for naming a bad one.
fn raw_der(text: &str) -> Option<Vec<u8>> {
    pem::parse(text.as_bytes())
        .ok()
        .map(pem::Pem::into_contents)
}

/// Checks every CSR of `req` and builds the batch: the same checks and CA policy as a
/// single `issue` session, for each certificate, before anything is stored or offered.
/// `policy_check` is the server's policy check of one certificate.
pub(super) fn check(
    manifest: &VerifiedManifest,
    req: &CreateSession,
    urls: pki::Urls,
    policy_check: impl Fn(&policy::Request<'_>) -> ApiResult<()>,
) -> ApiResult<CheckedBatch> {
    let refuse = |message: String| ApiErr::new(422, "policy", message);
    if req.csr_pem.is_some() {
        return Err(ApiErr::new(
            400,
            "bad-request",
            "an issue-batch session takes csr_pems, not csr_pem",
        ));
    }
    let count = req.csr_pems.len();
    if count == 0 {
        return Err(ApiErr::new(
            400,
            "bad-request",
            "csr_pems is required (one PEM CSR per certificate)",
        ));
    }
    if count > MAX_BATCH {
        return Err(ApiErr::new(
            422,
            "batch-too-large",
            format!(
                "a batch of {count} CSRs is over the limit of {MAX_BATCH} (hint: split it into \
                 batches of at most {MAX_BATCH})"
            ),
        ));
    }
    let profile: Profile = req
        .profile
        .as_deref()
        .unwrap_or("server")
        .parse()
        .map_err(refuse)?;
    if profile == Profile::Ocsp {
        return Err(refuse(
            "the ocsp profile certifies the server's own responder key, never a batch of CSRs"
                .into(),
        ));
    }
    let days = req.days.unwrap_or(90);
    let sub_ca = (profile == Profile::SubCa)
        .then(|| manifest.sub_ca_constraints())
        .flatten();
    // one start of validity for the whole batch; each certificate its own fresh serial
    let now = time::OffsetDateTime::now_utc();
    let mut csrs = Vec::with_capacity(count);
    let mut views: Vec<CertificateView> = Vec::with_capacity(count);
    for (i, pem_text) in req.csr_pems.iter().enumerate() {
        let der = raw_der(pem_text);
        let which = || named(i, count, der.as_deref());
        let csr = Csr::parse(pem_text.as_bytes())
            .map_err(|e| refuse(format!("{}: {e}; nothing was opened", which())))?;
        let terms = pki::Terms::new(profile, days, now)
            .map_err(|e| refuse(e.to_string()))?
            .with_urls(urls.clone())
            .with_sub_ca(sub_ca.clone());
        let view = pki::check_request(&manifest.ca, &csr, &terms)
            .map_err(|e| refuse(format!("{}: {e}; nothing was opened", which())))?;
        policy_check(&policy::Request::Issue(&view)).map_err(|e| {
            ApiErr::new(
                e.status,
                e.code,
                format!("{}: {}; nothing was opened", which(), e.message),
            )
        })?;
        if views.iter().any(|v| v.serial == view.serial) {
            return Err(ApiErr::new(500, "internal", "a serial was drawn twice"));
        }
        csrs.push(csr);
        views.push(view);
    }
    let digests: Vec<String> = csrs.iter().map(Csr::digest).collect();
    let request: String = csrs
        .iter()
        .map(|c| pki::pem_encode("CERTIFICATE REQUEST", &c.der))
        .collect();
    let not_before = views.first().map(|v| v.not_before).unwrap_or_default();
    Ok(CheckedBatch {
        request,
        request_sha256: pki::batch::batch_digest(&digests),
        summary: OfferSummary {
            profile: profile.to_string(),
            days,
            not_before,
            serial: None,
            reason: None,
            certificate: None,
            batch: Some(BatchSummary::of(views)),
        },
    })
}

/// The views a batch session stored (`certificate_view` holds the list).
pub(super) fn stored_views(row: &SessionRow) -> Result<Vec<CertificateView>, String> {
    serde_json::from_str(row.certificate_view.as_deref().unwrap_or_default())
        .map_err(|e| format!("the stored batch is unreadable: {e}"))
}

/// The worker's job for a batch session, re-derived from the stored CSRs and checked
/// against the digest the holders approved, whatever the store says now.
pub(super) fn job(row: &SessionRow) -> Result<(SignJob, Vec<CertificateView>), String> {
    let ders = pki::batch::split_csr_bundle(&row.request).map_err(|e| e.to_string())?;
    let views = stored_views(row)?;
    if ders.len() != views.len() {
        return Err("the stored batch has not one certificate per CSR".into());
    }
    let digests: Vec<String> = ders.iter().map(|d| pki::sha256_hex(d)).collect();
    if pki::batch::batch_digest(&digests) != row.request_sha256 {
        return Err("the stored batch no longer matches the digest the holders approved".into());
    }
    let job = SignJob::IssueBatch {
        csr_ders: ders.iter().map(|d| B64.encode(d)).collect(),
        views: views.clone(),
    };
    Ok((job, views))
}

/// How long the worker may take for a batch of `count`: the usual exchange time, and a
/// fifth of a second per certificate (RSA-4096 in a debug build, with room to spare).
pub(super) fn sign_timeout(count: usize) -> Duration {
    crate::worker::DEFAULT_TIMEOUT
        .saturating_add(Duration::from_millis(200).saturating_mul(count as u32))
}

/// What the store records for each signed certificate, after checking each is signed by
/// this CA and is the one approved.
pub(super) fn records(
    manifest: &VerifiedManifest,
    views: &[CertificateView],
    ders: &[Vec<u8>],
) -> Result<Vec<NewCertificate>, String> {
    if ders.len() != views.len() {
        return Err(format!(
            "the worker returned {} certificates for a batch of {}",
            ders.len(),
            views.len()
        ));
    }
    views
        .iter()
        .zip(ders)
        .enumerate()
        .map(|(i, (view, der))| {
            pki::check_signed_by(&manifest.ca, der)
                .map_err(|e| format!("certificate {} of the batch: {e}", i + 1))?;
            let summary = pki::CertificateSummary::from_der(der)
                .map_err(|e| format!("certificate {} of the batch: {e}", i + 1))?;
            if summary.serial.to_lowercase() != view.serial.to_lowercase() {
                return Err(format!(
                    "certificate {} of the batch has serial {}, not the approved {}",
                    i + 1,
                    summary.serial,
                    view.serial
                ));
            }
            Ok(NewCertificate {
                serial: view.serial.clone(),
                subject: view.subject_string(),
                sans: view.sans.clone(),
                not_after: view.not_after,
                pem: pki::pem_encode("CERTIFICATE", der),
            })
        })
        .collect()
}

/// A batch's certificates for its status: as recorded once signed (with PEM), else as
/// they will be issued.
pub(super) fn status_certificates(
    views: &[CertificateView],
    issued: Vec<(String, String, String)>,
) -> Vec<BatchCertificate> {
    if issued.is_empty() {
        return views
            .iter()
            .map(|v| BatchCertificate {
                serial: v.serial.clone(),
                subject: v.subject_string(),
                pem: None,
            })
            .collect();
    }
    issued
        .into_iter()
        .map(|(serial, subject, pem)| BatchCertificate {
            serial,
            subject,
            pem: Some(pem),
        })
        .collect()
}
