//! OCSP (RFC 6960) for a CA, answered by its delegated responder: a P-256 key of the
//! server's own whose certificate (OCSPSigning, ocsp-nocheck, short) the holders approved
//! in an ordinary session. The CA key is never needed. Every request, however bad, gets an
//! OCSP answer: malformed, oversized or unsigned-when-required requests and unknown CAs or
//! issuers get their RFC 6960 error status, never an HTTP error.

use super::state::State;
use crate::pki::{self, CaKey};
use crate::store::{Store, now};
use der::asn1::{BitString, GeneralizedTime, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CrlReason;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};

/// Largest request answered (a request with a nonce is about 100 bytes; a signed one with
/// its certificate a few KiB).
pub const MAX_REQUEST: usize = 16 << 10;
/// Most certificates asked about in one request.
pub const MAX_SINGLE_REQUESTS: usize = 16;
/// How long an answer may be relied on (nextUpdate − thisUpdate), in seconds.
pub const ANSWER_VALIDITY: u64 = 3600;
/// Longest nonce extension value accepted (RFC 8954 allows 32 octets of nonce).
const MAX_NONCE: usize = 64;

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");

/// The media type of OCSP answers.
pub const CONTENT_TYPE: &str = "application/ocsp-response";

/// The DER OCSP response to `request_der` for CA `ca_id`.
pub fn ocsp_answer(state: &State, ca_id: &str, request_der: &[u8]) -> Vec<u8> {
    let response = match respond(state, ca_id, request_der) {
        Ok(r) => r,
        Err(refusal) => {
            tracing::info!(ca = ca_id, status = ?refusal.status, "OCSP request refused: {}", refusal.why);
            OcspResponse {
                response_status: refusal.status,
                response_bytes: None,
            }
        }
    };
    response.to_der().unwrap_or_else(|e| {
        tracing::warn!("OCSP answer for CA {ca_id} not encodable: {e}");
        error_der(OcspResponseStatus::InternalError)
    })
}

/// The DER answer that carries only an error status (what an oversized body gets before it
/// is read to its end, and a GET whose path is not base64).
pub fn error_der(status: OcspResponseStatus) -> Vec<u8> {
    // SEQUENCE { ENUMERATED status }
    vec![0x30, 0x03, 0x0a, 0x01, status as u8]
}

struct Refusal {
    status: OcspResponseStatus,
    why: String,
}

fn refuse<T>(status: OcspResponseStatus, why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        status,
        why: why.into(),
    })
}

/// The decoded request of an OCSP GET: the path after `/ocsp/<ca-id>/`, percent-decoded,
/// then base64 (RFC 6960 appendix A.1).
pub fn decode_get(path_rest: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let bytes = path_rest.as_bytes();
    let mut text = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            text.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            text.push(bytes[i]);
            i += 1;
        }
    }
    base64::engine::general_purpose::STANDARD.decode(&text).ok()
}

/// The issuer's name and key hashes under one hash algorithm.
struct IssuerHashes {
    name_sha1: Vec<u8>,
    key_sha1: Vec<u8>,
    name_sha256: Vec<u8>,
    key_sha256: Vec<u8>,
}

impl IssuerHashes {
    fn of(ca_der: &[u8]) -> Option<Self> {
        let ca = Certificate::from_der(ca_der).ok()?;
        let name = ca.tbs_certificate.subject.to_der().ok()?;
        let key = ca
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
            .to_vec();
        Some(IssuerHashes {
            name_sha1: Sha1::digest(&name).to_vec(),
            key_sha1: Sha1::digest(&key).to_vec(),
            name_sha256: Sha256::digest(&name).to_vec(),
            key_sha256: Sha256::digest(&key).to_vec(),
        })
    }

    fn matches(&self, id: &CertId) -> Result<(), Refusal> {
        let (name, key) = match id.hash_algorithm.oid {
            SHA1 => (&self.name_sha1, &self.key_sha1),
            SHA256 => (&self.name_sha256, &self.key_sha256),
            other => {
                return refuse(
                    OcspResponseStatus::Unauthorized,
                    format!("CertID hash algorithm {other} is not SHA-1 or SHA-256"),
                );
            }
        };
        if id.issuer_name_hash.as_bytes() != name.as_slice()
            || id.issuer_key_hash.as_bytes() != key.as_slice()
        {
            return refuse(
                OcspResponseStatus::Unauthorized,
                "the request names another issuer than this CA",
            );
        }
        Ok(())
    }
}

/// A request that parsed and is within limits: what the responder works from.
#[derive(Debug)]
pub struct Parsed {
    request: OcspRequest,
    nonce: Option<Extension>,
}

/// Reads an OCSP request from outside: size, DER, number of certificates asked about,
/// nonce. A refusal is the OCSP error status it gets and why.
pub fn parse_request(request_der: &[u8]) -> Result<Parsed, (OcspResponseStatus, String)> {
    let parsed = (|| {
        use OcspResponseStatus::MalformedRequest;
        if request_der.len() > MAX_REQUEST {
            return refuse(
                MalformedRequest,
                format!("request of {} bytes", request_der.len()),
            );
        }
        let request = OcspRequest::from_der(request_der).map_err(|e| Refusal {
            status: MalformedRequest,
            why: format!("not an OCSP request: {e}"),
        })?;
        let count = request.tbs_request.request_list.len();
        if count == 0 || count > MAX_SINGLE_REQUESTS {
            return refuse(
                MalformedRequest,
                format!("{count} certificates asked about"),
            );
        }
        let nonce = nonce_of(&request)?;
        Ok(Parsed { request, nonce })
    })();
    parsed.map_err(|r| (r.status, r.why))
}

fn respond(state: &State, ca_id: &str, request_der: &[u8]) -> Result<OcspResponse, Refusal> {
    use OcspResponseStatus::{InternalError, SigRequired, Unauthorized};
    let Parsed { request, nonce } =
        parse_request(request_der).map_err(|(status, why)| Refusal { status, why })?;
    let singles = &request.tbs_request.request_list;
    let Ok(manifest) = state.manifest(ca_id) else {
        return refuse(Unauthorized, "no such CA");
    };
    let ca = &manifest.ca;
    let issuer = IssuerHashes::of(&ca.der).ok_or(Refusal {
        status: InternalError,
        why: "the CA certificate does not parse".into(),
    })?;
    for single in singles {
        issuer.matches(&single.req_cert)?;
    }
    let store_down = |e: crate::store::StoreError| Refusal {
        status: OcspResponseStatus::TryLater,
        why: format!("store: {e}"),
    };
    let require_signed = state
        .read_store(|store| store.ocsp_requires_signature(ca_id))
        .map_err(store_down)?;
    match &request.optional_signature {
        Some(_) => check_request_signature(state, ca, ca_id, &request)?,
        None if require_signed => return refuse(SigRequired, "unsigned request"),
        None => {}
    }
    let t = now();
    let Some((key_file, responder_der)) = state
        .read_store(|store| store.ocsp_responder(ca_id, t))
        .map_err(store_down)?
    else {
        return refuse(
            Unauthorized,
            "this CA has no OCSP responder certificate installed",
        );
    };
    let key = std::fs::read(&key_file)
        .ok()
        .and_then(|pem| pem_body(&pem))
        .and_then(|der| CaKey::from_pkcs8_der(&der).ok())
        .ok_or(Refusal {
            status: InternalError,
            why: format!("the responder key {key_file} is unreadable"),
        })?;
    let responder = Certificate::from_der(&responder_der).map_err(|e| Refusal {
        status: InternalError,
        why: format!("the responder certificate does not parse: {e}"),
    })?;
    let statuses = state
        .read_store(|store| {
            singles
                .iter()
                .map(|s| status_of(store, ca_id, &s.req_cert))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| Refusal {
            status: OcspResponseStatus::TryLater,
            why: e,
        })?;
    sign_answer(&key, responder, singles, statuses, nonce).map_err(|e| Refusal {
        status: InternalError,
        why: e,
    })
}

/// The request's nonce extension, to be echoed; a nonce of absurd size is malformed.
fn nonce_of(request: &OcspRequest) -> Result<Option<Extension>, Refusal> {
    let Some(nonce) = request
        .tbs_request
        .request_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == NONCE)
    else {
        return Ok(None);
    };
    let len = nonce.extn_value.as_bytes().len();
    if len == 0 || len > MAX_NONCE {
        return refuse(
            OcspResponseStatus::MalformedRequest,
            format!("nonce of {len} bytes"),
        );
    }
    Ok(Some(Extension {
        extn_id: NONCE,
        critical: false,
        extn_value: nonce.extn_value.clone(),
    }))
}

/// A signed request is answered only if its signature verifies with the first certificate
/// it carries, and that certificate is one this CA issued and has not revoked.
fn check_request_signature(
    state: &State,
    ca: &pki::CaCertificate,
    ca_id: &str,
    request: &OcspRequest,
) -> Result<(), Refusal> {
    let unauthorized = |why: &str| Refusal {
        status: OcspResponseStatus::Unauthorized,
        why: why.to_owned(),
    };
    let signature = request
        .optional_signature
        .as_ref()
        .ok_or_else(|| unauthorized("unsigned"))?;
    let signer = signature
        .certs
        .iter()
        .flatten()
        .next()
        .ok_or_else(|| unauthorized("the signed request carries no certificate"))?;
    let signer_der = signer
        .to_der()
        .map_err(|_| unauthorized("the requestor certificate does not encode"))?;
    pki::check_signed_by(ca, &signer_der)
        .map_err(|_| unauthorized("the requestor certificate is not issued by this CA"))?;
    let serial = serial_hex(signer.tbs_certificate.serial_number.as_bytes());
    let revoked = state
        .read_store(|store| store.revocation(ca_id, &serial))
        .map_err(|_| unauthorized("store unavailable"))?;
    if revoked.is_some() {
        return Err(unauthorized("the requestor certificate is revoked"));
    }
    let spki = signer
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| unauthorized("the requestor key does not encode"))?;
    let tbs = request
        .tbs_request
        .to_der()
        .map_err(|_| unauthorized("the request does not encode"))?;
    let sig = signature
        .signature
        .as_bytes()
        .ok_or_else(|| unauthorized("the signature is not whole bytes"))?;
    pki::verify_signature(&spki, &tbs, sig)
        .map_err(|_| unauthorized("the request's signature does not verify"))
}

/// A serial's hex as the store keeps it: lower case, no leading zero bytes.
fn serial_hex(bytes: &[u8]) -> String {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    hex::encode(bytes.get(first..).unwrap_or_default())
}

fn status_of(store: &Store, ca_id: &str, id: &CertId) -> Result<CertStatus, String> {
    let serial = serial_hex(id.serial_number.as_bytes());
    if let Some((reason, at)) = store
        .revocation(ca_id, &serial)
        .map_err(|e| e.to_string())?
    {
        return Ok(CertStatus::revoked(RevokedInfo {
            revocation_time: time_of(at.max(0) as u64)
                .ok_or("a revocation time is out of range")?,
            revocation_reason: crl_reason(&reason),
        }));
    }
    Ok(
        if store
            .certificate_known(ca_id, &serial)
            .map_err(|e| e.to_string())?
        {
            CertStatus::good()
        } else {
            CertStatus::unknown()
        },
    )
}

fn crl_reason(name: &str) -> Option<CrlReason> {
    Some(match name {
        "keyCompromise" => CrlReason::KeyCompromise,
        "cACompromise" => CrlReason::CaCompromise,
        "affiliationChanged" => CrlReason::AffiliationChanged,
        "superseded" => CrlReason::Superseded,
        "cessationOfOperation" => CrlReason::CessationOfOperation,
        "certificateHold" => CrlReason::CertificateHold,
        "privilegeWithdrawn" => CrlReason::PrivilegeWithdrawn,
        "aACompromise" => CrlReason::AaCompromise,
        // RFC 5280 §5.3.1: unspecified is left out, as in the CRL
        _ => return None,
    })
}

fn time_of(unix: u64) -> Option<OcspGeneralizedTime> {
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(unix))
        .ok()
        .map(OcspGeneralizedTime)
}

fn sign_answer(
    key: &CaKey,
    responder: Certificate,
    singles: &[x509_ocsp::Request],
    statuses: Vec<CertStatus>,
    nonce: Option<Extension>,
) -> Result<OcspResponse, String> {
    let t = now().max(0) as u64;
    let this_update = time_of(t).ok_or("the clock is out of range")?;
    let next_update = time_of(t + ANSWER_VALIDITY).ok_or("the clock is out of range")?;
    let key_hash = Sha1::digest(
        responder
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    );
    let responses = singles
        .iter()
        .zip(statuses)
        .map(|(single, cert_status)| SingleResponse {
            cert_id: single.req_cert.clone(),
            cert_status,
            this_update,
            next_update: Some(next_update),
            single_extensions: None,
        })
        .collect();
    let tbs = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(
            OctetString::new(key_hash.to_vec()).map_err(|e| e.to_string())?,
        ),
        produced_at: this_update,
        responses,
        response_extensions: nonce.map(|n| vec![n]),
    };
    let signature = key
        .sign(&tbs.to_der().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA256,
            parameters: None,
        },
        signature: BitString::from_bytes(&signature).map_err(|e| e.to_string())?,
        certs: Some(vec![responder]),
    };
    OcspResponse::successful(basic).map_err(|e| e.to_string())
}

/// A fresh P-256 responder key and its CSR, subject `<CA name> OCSP responder`.
pub fn responder_request(ca_name: &str) -> Result<(CaKey, pki::Csr), pki::PkiError> {
    let key = CaKey::generate(pki::KeyAlgorithm::EcdsaP256)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    let cn: String = format!("{ca_name} OCSP responder")
        .chars()
        .take(64)
        .collect();
    dn.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((key, pki::Csr::parse(csr.der())?))
}

/// Writes the responder key to `DIR/ocsp/<session-id>.key` (PKCS#8 PEM, mode 0600, a new
/// file in a 0700 directory); returns the file and the SHA-256 of its public key.
pub fn save_responder_key(
    data_dir: &std::path::Path,
    session_id: &str,
    key: &CaKey,
) -> Result<(std::path::PathBuf, String), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir.join("ocsp");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join(format!("{session_id}.key"));
    let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    let pem = zeroize::Zeroizing::new(pki::pem_encode("PRIVATE KEY", &der));
    crate::fsx::write_new(&file, pem.as_bytes(), 0o600, false)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let spki = key.spki_der().map_err(|e| e.to_string())?;
    Ok((file, pki::sha256_hex(&spki)))
}

/// The DER inside a PEM file's first block.
fn pem_body(pem: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    Some(zeroize::Zeroizing::new(block.contents))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_paths_decode_percent_and_base64() {
        assert_eq!(decode_get("MAM%3D").as_deref(), Some(&[0x30, 0x03][..]));
        assert_eq!(decode_get("MAM="), Some(vec![0x30, 0x03]));
        assert_eq!(decode_get("%zz"), None);
        assert_eq!(decode_get("%4"), None);
        assert_eq!(decode_get("not base64!"), None);
    }

    #[test]
    fn error_answers_are_ocsp_responses() {
        for status in [
            OcspResponseStatus::MalformedRequest,
            OcspResponseStatus::Unauthorized,
            OcspResponseStatus::SigRequired,
        ] {
            let r = OcspResponse::from_der(&error_der(status)).unwrap();
            assert_eq!(r.response_status, status);
            assert!(r.response_bytes.is_none());
        }
    }

    #[test]
    fn serials_lose_leading_zeros() {
        assert_eq!(serial_hex(&[0, 0x81, 2]), "8102");
        assert_eq!(serial_hex(&[0x12]), "12");
        assert_eq!(serial_hex(&[0]), "00");
    }
}
