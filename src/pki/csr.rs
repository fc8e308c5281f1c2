//! Parsing and checking certificate signing requests as real tools make them: OpenSSL,
//! browsers' key generators, ACME clients. Only what issuance needs is kept.

use super::PkiError;
use std::net::IpAddr;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{self, Oid};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// A subject alternative name the CSR asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
    Email(String),
    /// A kind nkpki never issues (URI, otherName…), kept to be reported.
    Other(String),
}

impl std::fmt::Display for San {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            San::Dns(d) => write!(f, "DNS:{d}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
            San::Email(e) => write!(f, "email:{e}"),
            San::Other(o) => f.write_str(o),
        }
    }
}

impl San {
    /// The name as nkpki reads it, in a CSR or a certificate.
    pub(super) fn from_general_name(name: &GeneralName<'_>) -> Result<Self, PkiError> {
        Ok(match name {
            GeneralName::DNSName(d) => San::Dns((*d).to_owned()),
            GeneralName::RFC822Name(e) => San::Email((*e).to_owned()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => San::Ip(IpAddr::from(
                    <[u8; 4]>::try_from(*b).map_err(|_| malformed("IP"))?,
                )),
                16 => San::Ip(IpAddr::from(
                    <[u8; 16]>::try_from(*b).map_err(|_| malformed("IP"))?,
                )),
                _ => return Err(malformed("IP address SAN of a bad length")),
            },
            other => San::Other(other_name(other)),
        })
    }
}

/// The kind of public key a CSR carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CsrKey {
    Rsa { bits: usize },
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl std::fmt::Display for CsrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CsrKey::Rsa { bits } => write!(f, "RSA-{bits}"),
            CsrKey::EcdsaP256 => f.write_str("ECDSA P-256"),
            CsrKey::EcdsaP384 => f.write_str("ECDSA P-384"),
            CsrKey::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// A parsed CSR whose signature has been verified.
#[derive(Clone, Debug)]
pub struct Csr {
    /// The CSR's DER, as received.
    pub der: Vec<u8>,
    /// Subject attributes in order, as (short name, value); unknown kinds are named by OID.
    pub subject: Vec<(String, String)>,
    pub sans: Vec<San>,
    pub key: CsrKey,
    /// The SubjectPublicKeyInfo DER, copied into the certificate unchanged.
    pub spki_der: Vec<u8>,
    /// Requested extensions issuance does not take from the CSR (it follows the profile).
    pub ignored_extensions: Vec<String>,
}

fn malformed(what: impl Into<String>) -> PkiError {
    PkiError::MalformedCsr(what.into())
}

fn attribute_name(oid: &Oid) -> String {
    match oid.to_id_string().as_str() {
        "2.5.4.3" => "CN".into(),
        "2.5.4.6" => "C".into(),
        "2.5.4.7" => "L".into(),
        "2.5.4.8" => "ST".into(),
        "2.5.4.10" => "O".into(),
        "2.5.4.11" => "OU".into(),
        "1.2.840.113549.1.9.1" => "emailAddress".into(),
        other => other.to_owned(),
    }
}

impl Csr {
    /// Reads a PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) or DER CSR and
    /// verifies its signature.
    pub fn parse(input: &[u8]) -> Result<Self, PkiError> {
        let der = if input.trim_ascii_start().starts_with(b"-----BEGIN") {
            let (_, pem) = x509_parser::pem::parse_x509_pem(input)
                .map_err(|e| malformed(format!("PEM: {e}")))?;
            if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
                return Err(malformed(format!(
                    "PEM block is a {:?}, not a CERTIFICATE REQUEST",
                    pem.label
                )));
            }
            pem.contents
        } else {
            input.to_vec()
        };
        let (rest, req) =
            X509CertificationRequest::from_der(&der).map_err(|e| malformed(format!("DER: {e}")))?;
        if !rest.is_empty() {
            return Err(malformed("trailing bytes after the request"));
        }
        let info = &req.certification_request_info;
        let spki = &info.subject_pki;
        let key = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => CsrKey::Rsa {
                bits: rsa.key_size(),
            },
            Ok(PublicKey::EC(_)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .ok_or_else(|| malformed("EC key without a named curve"))?;
                if curve == oid_registry::OID_EC_P256 {
                    CsrKey::EcdsaP256
                } else if curve == oid_registry::OID_NIST_EC_P384 {
                    CsrKey::EcdsaP384
                } else {
                    return Err(PkiError::UnsupportedCsrKey(format!(
                        "EC curve {curve} (P-256 and P-384 are accepted)"
                    )));
                }
            }
            _ if spki.algorithm.algorithm == oid_registry::OID_SIG_ED25519 => CsrKey::Ed25519,
            _ => {
                return Err(PkiError::UnsupportedCsrKey(format!(
                    "algorithm {} (RSA, ECDSA P-256/P-384 and Ed25519 are accepted)",
                    spki.algorithm.algorithm
                )));
            }
        };
        // the size check comes first: a weak key is refused for what it is
        if let CsrKey::Rsa { bits } = key {
            if bits < 2048 {
                return Err(PkiError::WeakRsaKey { bits });
            }
            if bits > 8192 {
                return Err(PkiError::UnsupportedCsrKey(format!(
                    "RSA-{bits} (at most 8192 bits)"
                )));
            }
        }
        if req.signature_algorithm.algorithm == oid_registry::OID_PKCS1_RSASSAPSS {
            return Err(PkiError::UnsupportedCsrKey(
                "RSA-PSS signed request (sign the CSR with PKCS#1 v1.5, ECDSA or Ed25519)".into(),
            ));
        }
        req.verify_signature()
            .map_err(|_| PkiError::CsrSignatureInvalid)?;

        let mut subject = Vec::new();
        for rdn in info.subject.iter_rdn() {
            for attr in rdn.iter() {
                let value = attr.as_str().map_err(|_| {
                    malformed(format!(
                        "subject attribute {} is not a string",
                        attr.attr_type()
                    ))
                })?;
                let name = attribute_name(attr.attr_type());
                refuse_unsafe(&format!("subject {name}"), value)?;
                subject.push((name, value.to_owned()));
            }
        }
        let mut sans = Vec::new();
        let mut ignored_extensions = Vec::new();
        if let Some(extensions) = req.requested_extensions() {
            for ext in extensions {
                match ext {
                    ParsedExtension::SubjectAlternativeName(san) => {
                        for name in &san.general_names {
                            refuse_unsafe_name(name)?;
                            sans.push(San::from_general_name(name)?);
                        }
                    }
                    ParsedExtension::ParseError { error } => {
                        return Err(malformed(format!("requested extension: {error}")));
                    }
                    other => ignored_extensions.push(extension_name(other)),
                }
            }
        }
        Ok(Csr {
            der: der.clone(),
            subject,
            sans,
            key,
            spki_der: spki.raw.to_vec(),
            ignored_extensions,
        })
    }

    /// SHA-256 of the CSR's DER, hex: what holders approve.
    pub fn digest(&self) -> String {
        super::sha256_hex(&self.der)
    }

    /// The subject as `CN=…, O=…` for display.
    pub fn subject_string(&self) -> String {
        self.subject
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Refuses text a holder could be deceived by (see [`super::text`]).
fn refuse_unsafe(field: &str, value: &str) -> Result<(), PkiError> {
    match super::text::first_unsafe(value) {
        Some((position, c, why)) => Err(PkiError::UnsafeText {
            field: field.to_owned(),
            why,
            code: c as u32,
            position: position + 1,
        }),
        None => Ok(()),
    }
}

/// Every string a subjectAltName carries is checked, of every kind, kept or not.
fn refuse_unsafe_name(name: &GeneralName<'_>) -> Result<(), PkiError> {
    match name {
        GeneralName::DNSName(s) => refuse_unsafe("subjectAltName DNS name", s),
        GeneralName::RFC822Name(s) => refuse_unsafe("subjectAltName e-mail", s),
        GeneralName::URI(s) => refuse_unsafe("subjectAltName URI", s),
        GeneralName::DirectoryName(dn) => {
            for attr in dn.iter_attributes() {
                let value = attr.as_str().map_err(|_| {
                    malformed(format!(
                        "subjectAltName directory name attribute {} is not a string",
                        attr.attr_type()
                    ))
                })?;
                refuse_unsafe("subjectAltName directory name", value)?;
            }
            Ok(())
        }
        other => refuse_unsafe("subjectAltName", &format!("{other:?}")),
    }
}

/// A subjectAltName kind nkpki never issues, named for the holder and the operator.
fn other_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::URI(s) => format!("URI:{s}"),
        GeneralName::DirectoryName(dn) => format!("dirName:{dn}"),
        GeneralName::OtherName(oid, _) => format!("otherName:{oid}"),
        GeneralName::RegisteredID(oid) => format!("registeredID:{oid}"),
        GeneralName::X400Address(_) => "x400Address".into(),
        GeneralName::EDIPartyName(_) => "ediPartyName".into(),
        _ => "unknown name".into(),
    }
}

fn extension_name(ext: &ParsedExtension<'_>) -> String {
    match ext {
        ParsedExtension::SubjectKeyIdentifier(_) => "subjectKeyIdentifier".into(),
        ParsedExtension::KeyUsage(_) => "keyUsage".into(),
        ParsedExtension::ExtendedKeyUsage(_) => "extendedKeyUsage".into(),
        ParsedExtension::BasicConstraints(_) => "basicConstraints".into(),
        other => format!("{other:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("extension")
            .to_owned(),
    }
}
