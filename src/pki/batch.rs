//! Batch issuance: the digests that bind a batch (its CSRs, its certificates) and the
//! signer that issues many certificates with one rebuilt key (ring for RSA: see
//! docs/decisions.md (bo)).

use super::issue::issue_with;
use super::{CaCertificate, CaKey, CertificateView, Csr, Issued, PkiError, Terms};
use sha2::{Digest, Sha256};

/// The most CSRs one batch session takes.
pub const MAX_BATCH: usize = 1000;

/// SHA-256 (hex) over a canonical list of digests: a domain line, the count, then each
/// digest on its own line, in order.
fn list_digest(domain: &str, digests: impl ExactSizeIterator<Item = String>) -> String {
    let mut hash = Sha256::new();
    hash.update(format!("{domain}\n{}\n", digests.len()).as_bytes());
    for d in digests {
        hash.update(d.as_bytes());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}

/// The batch's digest: over the SHA-256 of each CSR's DER ([`Csr::digest`]), in order.
/// What a holder's envelope binds as `request_sha256`, so an approval covers exactly this
/// list of requests.
pub fn batch_digest(csr_digests: &[String]) -> String {
    list_digest("nkpki batch v1", csr_digests.iter().cloned())
}

/// The digest of a batch's certificates as they will be issued: over each view's
/// [`CertificateView::digest`], in order (the envelope's `certificate_sha256`).
pub fn certificates_digest(views: &[CertificateView]) -> String {
    list_digest(
        "nkpki batch certificates v1",
        views.iter().map(CertificateView::digest),
    )
}

/// Every distinct name of a batch (each subject CN as `CN=…`, each SAN as written in the
/// view), sorted.
pub fn distinct_names(views: &[CertificateView]) -> Vec<String> {
    let mut names: Vec<String> = views
        .iter()
        .flat_map(|v| {
            v.subject
                .iter()
                .filter(|(k, _)| k == "CN")
                .map(|(_, cn)| format!("CN={cn}"))
                .chain(v.sans.iter().cloned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The CSRs of a PEM bundle (several `CERTIFICATE REQUEST` blocks), DER, in order.
pub fn split_csr_bundle(text: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let blocks = pem::parse_many(text.as_bytes())
        .map_err(|e| PkiError::Build(format!("the batch is not a PEM bundle: {e}")))?;
    Ok(blocks.into_iter().map(pem::Pem::into_contents).collect())
}

/// Signs for a batch: RSA through ring (several times faster than the `rsa` crate for
/// RSA-4096, which is what a 1,000-certificate batch spends its time on), ECDSA through
/// the CA key itself. Its key pair lives as long as the batch; ring does not wipe it, the
/// process's zeroizing allocator does when it is freed (docs/decisions.md (bp)).
pub struct BatchSigner<'a> {
    key: &'a CaKey,
    rsa: Option<ring::signature::RsaKeyPair>,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for BatchSigner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchSigner(<redacted>)")
    }
}

impl<'a> BatchSigner<'a> {
    pub fn new(key: &'a CaKey) -> Result<Self, PkiError> {
        let rsa = match key.algorithm().rsa_bits() {
            Some(_) => {
                // `sign` below makes PKCS#1 v1.5 with SHA-256: what the CA key announces
                if rcgen::PublicKeyData::algorithm(key) != &rcgen::PKCS_RSA_SHA256 {
                    return Err(PkiError::Crypto(
                        "the batch signer signs RSA with PKCS#1 v1.5 and SHA-256, which the CA \
                         key does not announce"
                            .into(),
                    ));
                }
                let pkcs8 = key.to_pkcs8_der()?;
                let pair = ring::signature::RsaKeyPair::from_pkcs8(&pkcs8)
                    .map_err(|e| PkiError::Crypto(format!("the RSA key for batch signing: {e}")))?;
                Some(pair)
            }
            None => None,
        };
        Ok(BatchSigner {
            key,
            rsa,
            rng: ring::rand::SystemRandom::new(),
        })
    }
}

impl rcgen::PublicKeyData for BatchSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        rcgen::PublicKeyData::der_bytes(self.key)
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        rcgen::PublicKeyData::algorithm(self.key)
    }
}

impl rcgen::SigningKey for BatchSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match &self.rsa {
            Some(pair) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    msg,
                    &mut signature,
                )
                .map_err(|_| rcgen::Error::RemoteKeyError)?;
                Ok(signature)
            }
            None => self.key.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError),
        }
    }
}

/// Issues each CSR under its terms (same order), by the one path single issuance takes.
pub fn issue_batch(
    signer: &BatchSigner<'_>,
    ca: &CaCertificate,
    requests: &[(Csr, Terms)],
) -> Result<Vec<Issued>, PkiError> {
    requests
        .iter()
        .map(|(csr, terms)| issue_with(signer, ca, csr, terms))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_digest_binds_every_csr_and_its_place() {
        let a = "aa".repeat(32);
        let b = "bb".repeat(32);
        let ab = batch_digest(&[a.clone(), b.clone()]);
        assert_eq!(ab, batch_digest(&[a.clone(), b.clone()]));
        assert_ne!(ab, batch_digest(&[b.clone(), a.clone()]), "order matters");
        assert_ne!(ab, batch_digest(std::slice::from_ref(&a)), "count matters");
        assert_ne!(ab, batch_digest(&[a.clone(), b.clone(), b.clone()]));
        // no two lists run together into the same text
        assert_ne!(batch_digest(&[format!("{a}\n{b}")]), ab);
        assert_eq!(ab.len(), 64);
        // a batch digest is never a single CSR's digest of the same bytes
        assert_ne!(
            batch_digest(std::slice::from_ref(&a)),
            certificates_digest(&[])
        );
    }

    /// PKCS#1 v1.5 is deterministic: the batch signer's RSA signature must be the one
    /// the CA key makes, whatever either is changed to.
    #[test]
    fn the_batch_signer_signs_as_the_ca_key_does() {
        #![allow(clippy::unwrap_used)]
        let primes =
            crate::sss::shoup::SafePrimes::from_text(crate::ceremony::TEST_PRIMES).unwrap();
        let key = CaKey::from_rsa(primes.to_rsa_private_key().unwrap()).unwrap();
        let signer = BatchSigner::new(&key).unwrap();
        let message = b"nkpki batch signer test";
        assert_eq!(
            rcgen::SigningKey::sign(&signer, message).unwrap(),
            key.sign(message).unwrap()
        );
    }

    #[test]
    fn a_bundle_splits_into_its_requests_in_order() {
        let one = super::super::pem_encode("CERTIFICATE REQUEST", b"one");
        let two = super::super::pem_encode("CERTIFICATE REQUEST", b"two");
        let parts = split_csr_bundle(&format!("{one}{two}")).unwrap();
        assert_eq!(parts, vec![b"one".to_vec(), b"two".to_vec()]);
    }
}
