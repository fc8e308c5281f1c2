use super::*;
use time::OffsetDateTime;

#[test]
fn key_pkcs8_round_trip_and_manifest_style_signature() {
    for alg in [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Rsa2048,
    ] {
        let key = CaKey::generate(alg).unwrap();
        let der = key.to_pkcs8_der().unwrap();
        let back = CaKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(back.algorithm(), alg);
        assert_eq!(back.spki_der().unwrap(), key.spki_der().unwrap());
        let sig = key.sign(b"manifest").unwrap();
        verify_signature(&key.spki_der().unwrap(), b"manifest", &sig).unwrap();
        assert!(verify_signature(&key.spki_der().unwrap(), b"manifesT", &sig).is_err());
        assert!(!format!("{key:?}").contains(&hex::encode(&der[der.len() - 8..])));
    }
}

#[test]
fn ca_certificate_has_the_ca_extensions() {
    let key = CaKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let subject = CaSubject {
        name: "Test Root".into(),
        org: "Org".into(),
        country: "FR".into(),
    };
    let der = self_signed(&key, &subject, 10, Some(1), OffsetDateTime::now_utc()).unwrap();
    let ca = CaCertificate::from_der(&der).unwrap();
    assert_eq!(ca.path_len, Some(1));
    assert_eq!(ca.spki_der, key.spki_der().unwrap());
    assert!(ca.subject.contains("CN=Test Root"));
}

#[test]
fn pem_armour_is_64_columns_with_lf_and_round_trips() {
    let der: Vec<u8> = (0..=200u8).collect();
    let pem = super::pem_encode("CERTIFICATE", &der);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
    assert!(!pem.contains('\r'));
    let body: Vec<&str> = pem
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("-----"))
        .collect();
    assert_eq!(
        body.iter().map(|l| l.len()).collect::<Vec<_>>(),
        [64, 64, 64, 64, 12]
    );
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    assert_eq!(parsed.label, "CERTIFICATE");
    assert_eq!(parsed.contents, der);
}
