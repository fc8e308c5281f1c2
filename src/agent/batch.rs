//! An `issue-batch` offer on the holder's side: every certificate recomputed from its CSR
//! with the code that issues, every one judged by this holder's own manifest (and by the
//! approval rule), a summary shown and the list paged through before one answer.

use super::{AgentError, Approval, Approving, SigningMode};
use crate::manifest::VerifiedManifest;
use crate::pki::{self, CertificateView, Csr, batch::MAX_BATCH};
use crate::policy::{Request, Verdict};
use crate::proto::{BatchSummary, SessionOffer};
use std::io::{BufRead, Write};

/// Certificates shown per page.
pub const PAGE: usize = 20;

fn refused(why: String) -> AgentError {
    AgentError::Refused(why)
}

/// Recomputes every certificate of the batch from its CSR and the offered terms, and
/// refuses the offer if any differs from what the server describes, if the summary the
/// holder is shown is not the one of these certificates, or if the digest is not this
/// list's.
pub fn recompute(
    offer: &SessionOffer,
    manifest: &VerifiedManifest,
) -> Result<Approving, AgentError> {
    if offer.mode != SigningMode::Reconstruct {
        return Err(refused(
            "a batch in threshold mode is not supported by this agent".into(),
        ));
    }
    let batch = offer
        .summary
        .batch
        .as_ref()
        .ok_or_else(|| refused("a batch offer without its certificates".into()))?;
    let ders = pki::batch::split_csr_bundle(&offer.request)
        .map_err(|e| refused(format!("the batch's requests: {e}")))?;
    if ders.is_empty() || ders.len() > MAX_BATCH {
        return Err(refused(format!(
            "a batch of {} CSRs (1 to {MAX_BATCH} are accepted)",
            ders.len()
        )));
    }
    if ders.len() != batch.certificates.len() {
        return Err(refused(format!(
            "the batch has {} CSRs and {} certificates",
            ders.len(),
            batch.certificates.len()
        )));
    }
    let mut digests = Vec::with_capacity(ders.len());
    let mut views: Vec<CertificateView> = Vec::with_capacity(ders.len());
    for (i, (der, described)) in ders.iter().zip(&batch.certificates).enumerate() {
        let which = format!("certificate {} of {}", i + 1, ders.len());
        let csr = Csr::parse(der).map_err(|e| {
            refused(format!(
                "{which}: the request is not a CSR nkpki can show: {e}"
            ))
        })?;
        if described.profile != offer.summary.profile || described.days != offer.summary.days {
            return Err(refused(format!(
                "{which}: the offer's terms and the certificate disagree"
            )));
        }
        let terms = pki::Terms::of_view(described).map_err(|e| refused(format!("{which}: {e}")))?;
        let view = pki::check_request(&manifest.ca, &csr, &terms)
            .map_err(|e| refused(format!("{which}: the request cannot be issued: {e}")))?;
        if &view != described {
            return Err(refused(format!(
                "{which}: the server describes another certificate than its request issues"
            )));
        }
        if views.iter().any(|v| v.serial == view.serial) {
            return Err(refused(format!(
                "{which}: serial {} is given to two certificates",
                view.serial
            )));
        }
        digests.push(csr.digest());
        views.push(view);
    }
    if BatchSummary::of(views.clone()) != *batch {
        return Err(refused(
            "the batch's summary (count, profiles, names or digest) is not the one of its \
             certificates"
                .into(),
        ));
    }
    Ok(Approving {
        request_sha256: pki::batch::batch_digest(&digests),
        certificate: None,
        tbs: None,
        crl: None,
        batch: views,
    })
}

/// Judges every certificate by the CA policy of this holder's own manifest; a refusal
/// names the certificate. The verdict shown is the first one's (a batch has one profile).
pub fn judge(
    manifest: &VerifiedManifest,
    views: &[CertificateView],
) -> Result<Verdict, AgentError> {
    let mut first = None;
    for (i, view) in views.iter().enumerate() {
        let verdict = manifest.verdict(&Request::Issue(view));
        if !verdict.allowed() {
            return Err(refused(format!(
                "the CA policy in this holder's manifest refuses certificate {} of {} ({}): {}",
                i + 1,
                views.len(),
                pki::text::escape(&view.subject_string()),
                verdict.refusal()
            )));
        }
        first.get_or_insert(verdict);
    }
    first.ok_or_else(|| refused("an empty batch".into()))
}

/// Why the rule does not cover every certificate of the batch, naming the first it does
/// not cover.
pub fn rule_refuses(rule: &super::ApprovalRule, views: &[CertificateView]) -> Option<String> {
    views.iter().enumerate().find_map(|(i, view)| {
        rule.refuses_certificate(view).map(|why| {
            format!(
                "certificate {} of {} ({}): {why}",
                i + 1,
                views.len(),
                view.subject_string()
            )
        })
    })
}

/// Whether to approve the batch; `None` when nobody can be asked.
pub fn decide(
    approval: &Approval,
    offer: &SessionOffer,
    approving: &Approving,
    verdict: &Verdict,
) -> Result<Option<bool>, AgentError> {
    match approval {
        Approval::Rule(rule) => match rule_refuses(rule, &approving.batch) {
            None => {
                tracing::info!(
                    "AUTO-APPROVED by rule (non-interactive mode): session {}, a batch of {} \
                     certificates, every one covered",
                    offer.session_id,
                    approving.batch.len()
                );
                Ok(Some(true))
            }
            Some(why) => {
                tracing::info!(
                    "declined by rule: session {}: {}",
                    offer.session_id,
                    pki::text::escape(&why)
                );
                Ok(Some(false))
            }
        },
        Approval::Interactive => {
            let stdin = std::io::stdin();
            ask(
                offer,
                approving,
                verdict,
                &mut stdin.lock(),
                &mut std::io::stderr(),
            )
        }
    }
}

/// The summary, then the list a page at a time, until the holder approves or declines:
/// `n` next page, `p` previous, `a` approve (once the last page has been shown), `d`
/// decline. `None` when the input ends.
pub fn ask(
    offer: &SessionOffer,
    approving: &Approving,
    verdict: &Verdict,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<Option<bool>, AgentError> {
    let io = |e: std::io::Error| AgentError::Config(e.to_string());
    for line in summary_lines(offer, approving, verdict) {
        writeln!(out, "{line}").map_err(io)?;
    }
    let pages = approving.batch.len().div_ceil(PAGE).max(1);
    let mut page = 0;
    let mut seen_last = false;
    loop {
        seen_last |= page == pages - 1;
        for line in page_lines(&approving.batch, page) {
            writeln!(out, "{line}").map_err(io)?;
        }
        write!(
            out,
            "Page {} of {pages}: [n]ext, [p]revious, [a]pprove all {}, [d]ecline? ",
            page + 1,
            approving.batch.len()
        )
        .map_err(io)?;
        out.flush().map_err(io)?;
        let mut answer = String::new();
        if input.read_line(&mut answer).map_err(io)? == 0 {
            tracing::info!(
                "no one to ask (standard input closed): session {} left unanswered; run the \
                 agent in a terminal or give it an approval rule",
                offer.session_id
            );
            return Ok(None);
        }
        match answer.trim() {
            "a" | "A" | "approve" if seen_last => return Ok(Some(true)),
            "a" | "A" | "approve" => {
                writeln!(out, "page through to the end first (n), or decline (d)").map_err(io)?;
            }
            "d" | "D" | "decline" => return Ok(Some(false)),
            "p" | "P" => page = page.saturating_sub(1),
            // `n`, or just Enter, pages on (and stays on the last page)
            _ => page = (page + 1).min(pages - 1),
        }
    }
}

/// What the holder sees first: count, profiles, every distinct name, the digests, the
/// policy. Every server- or CSR-given string escaped.
pub fn summary_lines(
    offer: &SessionOffer,
    approving: &Approving,
    verdict: &Verdict,
) -> Vec<String> {
    let esc = pki::text::escape;
    let views = &approving.batch;
    let names: Vec<String> = pki::batch::distinct_names(views)
        .iter()
        .map(|n| esc(n))
        .collect();
    let mut lines = vec![
        format!(
            "\n──────── batch signing request {} ────────",
            esc(&offer.session_id)
        ),
        format!(
            "CA:          {} ({})",
            esc(&offer.ca_name),
            esc(&offer.ca_id)
        ),
        format!("Requester:   {}", esc(&offer.requester)),
        format!(
            "Batch:       {} certificates, profile {}, {} days each (every one recomputed here \
             from its CSR)",
            views.len(),
            esc(&offer.summary.profile),
            offer.summary.days
        ),
        format!("Names ({}):  {}", names.len(), names.join(", ")),
    ];
    for (i, line) in verdict.summary.iter().enumerate() {
        let label = if i == 0 {
            "Policy:     "
        } else {
            "            "
        };
        lines.push(format!("{label} {}", esc(line)));
    }
    lines.push(format!(
        "Batch digest: SHA-256 {}",
        approving.request_sha256
    ));
    lines.push(format!(
        "Certificates: SHA-256 {}",
        pki::batch::certificates_digest(views)
    ));
    lines.push(format!(
        "Expires in:  {} s",
        offer.expires_at - crate::store::now()
    ));
    lines
}

/// Page `page` (0-based) of the list, one line per certificate.
pub fn page_lines(views: &[CertificateView], page: usize) -> Vec<String> {
    let esc = pki::text::escape;
    views
        .iter()
        .enumerate()
        .skip(page * PAGE)
        .take(PAGE)
        .map(|(i, v)| {
            format!(
                "  {:>4}. {} [{}] key {}, serial {}",
                i + 1,
                esc(&v.subject_string()),
                esc(&v.sans.join(", ")),
                esc(&v.key),
                v.serial
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::OfferSummary;

    fn view(i: usize) -> CertificateView {
        CertificateView {
            profile: "server".into(),
            serial: format!("{i:04x}"),
            subject: vec![("CN".into(), format!("host{i}.example.org"))],
            sans: vec![format!("DNS:host{i}.example.org")],
            key: "ecdsa-p256".into(),
            not_before: 0,
            not_after: 86_400,
            days: 1,
            is_ca: false,
            path_len: None,
            key_usage: vec![],
            extended_key_usage: vec![],
            name_constraints: vec![],
            dropped: vec![],
            crl_urls: vec![],
            ca_issuers_urls: vec![],
            ocsp_urls: vec![],
        }
    }

    fn approving(n: usize) -> (SessionOffer, Approving, Verdict) {
        let views: Vec<CertificateView> = (1..=n).map(view).collect();
        let offer = SessionOffer {
            session_id: "s".into(),
            ca_id: "c".into(),
            ca_name: "CA".into(),
            kind: crate::proto::SessionKind::IssueBatch,
            requester: "op".into(),
            request: String::new(),
            request_sha256: String::new(),
            summary: OfferSummary {
                profile: "server".into(),
                days: 1,
                not_before: 0,
                serial: None,
                reason: None,
                certificate: None,
                batch: Some(BatchSummary::of(views.clone())),
            },
            nonce: String::new(),
            expires_at: 0,
            recipient: String::new(),
            mode: SigningMode::Reconstruct,
            tbs: None,
            policy: None,
            approval_only: false,
        };
        let approving = Approving {
            request_sha256: "ab".repeat(32),
            certificate: None,
            tbs: None,
            crl: None,
            batch: views,
        };
        let verdict = Verdict {
            profile: "server".into(),
            approvals: 3,
            required_holders: vec![],
            summary: vec![],
            violations: vec![],
        };
        (offer, approving, verdict)
    }

    fn asked(n: usize, input: &str) -> (Option<bool>, String) {
        let (offer, approving, verdict) = approving(n);
        let mut out = Vec::new();
        let answer = ask(
            &offer,
            &approving,
            &verdict,
            &mut std::io::Cursor::new(input.as_bytes().to_vec()),
            &mut out,
        )
        .unwrap();
        (answer, String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_holder_pages_through_the_list_before_answering() {
        let (answer, shown) = asked(45, "n\nn\nn\np\na\n");
        assert_eq!(answer, Some(true));
        assert!(shown.contains("45 certificates"), "{shown}");
        assert!(shown.contains("CN=host45.example.org"), "{shown}");
        assert!(shown.contains("Page 3 of 3"), "{shown}");
        // past the last page it stays there; `p` goes back one
        assert_eq!(shown.matches("Page 3 of 3").count(), 2, "{shown}");
        assert_eq!(shown.matches("Page 2 of 3").count(), 2, "{shown}");
        assert!(shown.contains("    1. CN=host1.example.org"), "{shown}");
        assert!(shown.contains("   21. CN=host21.example.org"), "{shown}");

        // approving before the last page has been shown is refused, and asked again
        let (answer, shown) = asked(45, "a\nn\na\nn\na\n");
        assert_eq!(answer, Some(true));
        assert_eq!(
            shown
                .matches("page through to the end first (n), or decline (d)")
                .count(),
            2,
            "{shown}"
        );
        assert_eq!(asked(45, "a\n").0, None);
        assert_eq!(asked(3, "a\n").0, Some(true));

        let (answer, shown) = asked(3, "d\n");
        assert_eq!(answer, Some(false));
        assert!(shown.contains("Page 1 of 1"), "{shown}");
        // nobody to ask: the session is left unanswered
        assert_eq!(asked(3, "n\n").0, None);
    }

    #[test]
    fn a_rule_must_cover_every_certificate_and_names_the_first_it_does_not() {
        let rule = super::super::ApprovalRule {
            profile: Some("server".into()),
            san_suffix: Some("example.org".into()),
            ..Default::default()
        };
        let mut views: Vec<CertificateView> = (1..=3).map(view).collect();
        assert_eq!(rule_refuses(&rule, &views), None);
        views[1].sans = vec!["DNS:www.example.com".into()];
        views[1].subject = vec![("CN".into(), "www.example.com".into())];
        let why = rule_refuses(&rule, &views).unwrap();
        assert!(why.starts_with("certificate 2 of 3"), "{why}");
    }
}
