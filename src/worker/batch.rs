//! The worker's batch job: one rebuilt key, every certificate of the batch, each exactly
//! as the holders approved it, or none.

use crate::manifest::VerifiedManifest;
use crate::pki::{self, CaKey, CertificateView, Csr};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Issues each CSR (DER, base64) as its view says, in order; refuses the whole batch if
/// any certificate would differ from its view (nothing is returned then).
pub(super) fn issue_batch(
    key: &CaKey,
    manifest: &VerifiedManifest,
    csr_ders: &[String],
    views: &[CertificateView],
) -> Result<Vec<String>, String> {
    if csr_ders.len() != views.len() || csr_ders.is_empty() {
        return Err(format!(
            "a batch job of {} CSRs and {} certificates",
            csr_ders.len(),
            views.len()
        ));
    }
    if csr_ders.len() > pki::batch::MAX_BATCH {
        return Err(format!(
            "a batch of {} CSRs is over the limit of {}",
            csr_ders.len(),
            pki::batch::MAX_BATCH
        ));
    }
    let mut serials = std::collections::HashSet::new();
    for (i, view) in views.iter().enumerate() {
        if !serials.insert(view.serial.to_lowercase()) {
            return Err(format!(
                "certificate {} of the batch repeats serial {}; nothing is issued",
                i + 1,
                view.serial
            ));
        }
    }
    let mut requests = Vec::with_capacity(views.len());
    for (i, (csr_der, view)) in csr_ders.iter().zip(views).enumerate() {
        let der = B64
            .decode(csr_der)
            .map_err(|_| format!("CSR {} of the batch is not base64", i + 1))?;
        let csr = Csr::parse(&der).map_err(|e| format!("CSR {} of the batch: {e}", i + 1))?;
        let terms = pki::Terms::of_view(view).map_err(|e| e.to_string())?;
        requests.push((csr, terms));
    }
    let signer = pki::batch::BatchSigner::new(key).map_err(|e| e.to_string())?;
    let issued =
        pki::batch::issue_batch(&signer, &manifest.ca, &requests).map_err(|e| e.to_string())?;
    drop(signer);
    let mut ders = Vec::with_capacity(issued.len());
    for (i, (cert, view)) in issued.into_iter().zip(views).enumerate() {
        if cert.view != *view {
            return Err(format!(
                "certificate {} of the batch would differ from the one the holders approved; \
                 nothing is issued",
                i + 1
            ));
        }
        ders.push(B64.encode(cert.der));
    }
    Ok(ders)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ceremony;
    use crate::pki::{KeyAlgorithm, Profile, Terms};

    #[test]
    fn a_batch_job_repeating_a_serial_is_refused_whole() {
        let manifest = ceremony::test_threshold_ceremony("Batch CA")
            .manifest
            .verify()
            .unwrap();
        let primes = crate::sss::shoup::SafePrimes::from_text(ceremony::TEST_PRIMES).unwrap();
        let key = CaKey::from_rsa(primes.to_rsa_private_key().unwrap()).unwrap();
        let csr_der = |cn: &str| {
            let holder = CaKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
            let mut params = rcgen::CertificateParams::default();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            params.serialize_request(&holder).unwrap().der().to_vec()
        };
        let ders = [csr_der("one"), csr_der("two")];
        let terms = Terms::new(Profile::Client, 10, time::OffsetDateTime::now_utc()).unwrap();
        let views: Vec<CertificateView> = ders
            .iter()
            .map(|d| pki::check_request(&manifest.ca, &Csr::parse(d).unwrap(), &terms).unwrap())
            .collect();
        assert_eq!(views[0].serial, views[1].serial, "one terms, one serial");
        let encoded: Vec<String> = ders.iter().map(|d| B64.encode(d)).collect();
        let why = issue_batch(&key, &manifest, &encoded, &views).unwrap_err();
        assert!(
            why.contains("certificate 2 of the batch repeats serial"),
            "{why}"
        );
    }
}
