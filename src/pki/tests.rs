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

fn test_ca() -> (CaKey, CaCertificate) {
    let key = CaKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let subject = CaSubject {
        name: "Test Root".into(),
        org: "Org".into(),
        country: "FR".into(),
    };
    let der = self_signed(&key, &subject, 100, Some(1), OffsetDateTime::now_utc()).unwrap();
    (key, CaCertificate::from_der(&der).unwrap())
}

fn client_csr() -> Csr {
    let key = CaKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "alice");
    Csr::parse(params.serialize_request(&key).unwrap().der()).unwrap()
}

#[test]
fn urls_are_in_the_view_and_the_certificate_and_views_without_them_keep_their_json() {
    let (key, ca) = test_ca();
    let csr = client_csr();
    let plain = Terms::new(Profile::Client, 10, OffsetDateTime::now_utc()).unwrap();
    let view = check_request(&ca, &csr, &plain).unwrap();
    let json = serde_json::to_string(&view).unwrap();
    assert!(!json.contains("urls"), "{json}");
    let urls = Urls {
        crl: vec!["http://pki.example.org/crl/x.crl".into()],
        ca_issuers: vec!["http://pki.example.org/ca/x.der".into()],
        ocsp: vec!["http://pki.example.org/ocsp/x".into()],
    };
    let terms = plain.clone().with_urls(urls.clone());
    let issued = issue(&key, &ca, &csr, &terms).unwrap();
    assert_eq!(issued.view.crl_urls, urls.crl);
    assert_ne!(issued.view.digest(), view.digest());
    assert!(
        issued
            .view
            .lines()
            .iter()
            .any(|l| l.starts_with("OCSP URL:"))
    );
    // the view alone gives the terms back, URLs included
    assert_eq!(Terms::of_view(&issued.view).unwrap(), terms);
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).unwrap();
    let aia = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.1")
        .unwrap();
    assert!(contains(aia.value, b"http://pki.example.org/ocsp/x"));
    assert!(contains(aia.value, b"http://pki.example.org/ca/x.der"));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn urls_that_cannot_go_into_a_certificate_are_refused() {
    let (_, ca) = test_ca();
    let csr = client_csr();
    for bad in [
        "https://pki.example.org/crl",
        "http://pki.example.org/a b",
        "http:///crl",
        "ftp://pki.example.org/",
        "http://pki.example.org/\u{e9}",
    ] {
        let terms = Terms::new(Profile::Client, 10, OffsetDateTime::now_utc())
            .unwrap()
            .with_urls(Urls {
                crl: vec![bad.into()],
                ..Urls::default()
            });
        assert!(
            matches!(check_request(&ca, &csr, &terms), Err(PkiError::BadUrl(_))),
            "{bad}"
        );
    }
}

#[test]
fn the_ocsp_profile_is_short_nocheck_and_carries_no_urls() {
    let (key, ca) = test_ca();
    let csr = client_csr();
    let now = OffsetDateTime::now_utc();
    let long = Terms::new(Profile::Ocsp, OCSP_MAX_DAYS + 1, now).unwrap();
    assert!(matches!(
        check_request(&ca, &csr, &long),
        Err(PkiError::ValidityTooLong { .. })
    ));
    let terms = Terms::new(Profile::Ocsp, 7, now).unwrap().with_urls(Urls {
        crl: vec!["http://pki.example.org/crl/x.crl".into()],
        ..Urls::default()
    });
    let issued = issue(&key, &ca, &csr, &terms).unwrap();
    assert!(issued.view.crl_urls.is_empty());
    assert_eq!(issued.view.extended_key_usage, ["OCSPSigning"]);
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).unwrap();
    let oids: Vec<String> = cert
        .extensions()
        .iter()
        .map(|e| e.oid.to_id_string())
        .collect();
    assert!(
        oids.contains(&"1.3.6.1.5.5.7.48.1.5".to_owned()),
        "{oids:?}"
    );
    assert!(!oids.contains(&"2.5.29.31".to_owned()), "{oids:?}");
}
