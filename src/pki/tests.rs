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

/// An RSA CA, and a server CSR made by OpenSSL, in `dir`.
fn rsa_ca_and_csr(dir: &std::path::Path) -> (CaKey, CaCertificate, Csr) {
    let key = CaKey::generate(KeyAlgorithm::Rsa2048).unwrap();
    let subject = CaSubject {
        name: "Threshold Root".into(),
        org: "Org".into(),
        country: "FR".into(),
    };
    let der = self_signed(&key, &subject, 10, Some(1), OffsetDateTime::now_utc()).unwrap();
    let ca = CaCertificate::from_der(&der).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=www.example.org/O=Org"])
        .args(["-addext", "subjectAltName=DNS:www.example.org"])
        .arg("-keyout")
        .arg(dir.join("leaf.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (key, ca, Csr::parse(&out.stdout).unwrap())
}

fn openssl_ok(args: &[&str], dir: &std::path::Path) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_signed_tbs_assembles_into_the_certificate_issue_makes() {
    let dir = tempfile::tempdir().unwrap();
    let (key, ca, csr) = rsa_ca_and_csr(dir.path());
    let terms = Terms::new(Profile::Server, 30, OffsetDateTime::now_utc()).unwrap();
    let issued = issue(&key, &ca, &csr, &terms).unwrap();

    let tbs = tbs_certificate(&ca, &csr, &terms).unwrap();
    let signature = key.sign(&tbs).unwrap();
    let der = assemble_certificate(&tbs, &signature).unwrap();
    assert_eq!(der, issued.der, "one code path: the same certificate");
    check_signed_by(&ca, &der).unwrap();
    std::fs::write(dir.path().join("leaf.pem"), pem_encode("CERTIFICATE", &der)).unwrap();
    openssl_ok(&["verify", "-CAfile", "ca.pem", "leaf.pem"], dir.path());

    // the same terms give the same bytes: what the agent recomputes is what the server offers
    assert_eq!(tbs_certificate(&ca, &csr, &terms).unwrap(), tbs);
    // a signature over other bytes assembles, but does not verify
    let other = Terms::new(Profile::Client, 30, OffsetDateTime::now_utc()).unwrap();
    let wrong = key
        .sign(&tbs_certificate(&ca, &csr, &other).unwrap())
        .unwrap();
    let forged = assemble_certificate(&tbs, &wrong).unwrap();
    assert!(matches!(
        check_signed_by(&ca, &forged),
        Err(PkiError::BadSignature)
    ));
}

#[test]
fn a_signed_tbs_crl_assembles_into_the_crl_sign_crl_makes() {
    let dir = tempfile::tempdir().unwrap();
    let (key, ca, _) = rsa_ca_and_csr(dir.path());
    let now = OffsetDateTime::now_utc();
    let revoked = [Revoked {
        serial_hex: "0a1b2c".into(),
        reason: "keyCompromise".into(),
        revoked_at: now.unix_timestamp() - 60,
    }];
    let (signed, pem) = sign_crl(&key, &ca, 7, &revoked, now).unwrap();
    let tbs = tbs_crl(&ca, 7, &revoked, now).unwrap();
    let der = assemble_crl(&tbs, &key.sign(&tbs).unwrap()).unwrap();
    assert_eq!(der, signed);
    assert_eq!(pem_encode("X509 CRL", &der), pem);
    std::fs::write(dir.path().join("crl.pem"), pem).unwrap();
    openssl_ok(
        &[
            "crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout", "-verify",
        ],
        dir.path(),
    );
}

#[test]
fn tbs_is_refused_for_an_ecdsa_ca_and_assembly_for_non_der() {
    let key = CaKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let subject = CaSubject {
        name: "EC Root".into(),
        org: "Org".into(),
        country: "FR".into(),
    };
    let der = self_signed(&key, &subject, 10, None, OffsetDateTime::now_utc()).unwrap();
    let ca = CaCertificate::from_der(&der).unwrap();
    let err = tbs_crl(&ca, 1, &[], OffsetDateTime::now_utc()).unwrap_err();
    assert!(err.to_string().contains("needs an RSA CA key"), "{err}");
    assert!(assemble_certificate(b"not der", b"sig").is_err());
    assert!(assemble_crl(&[0x30, 0x00], b"").is_err());
}

#[test]
fn a_tbs_that_differs_from_the_request_is_refused_and_the_difference_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ca, csr) = rsa_ca_and_csr(dir.path());
    let now = OffsetDateTime::now_utc();
    let terms = Terms::new(Profile::Server, 30, now).unwrap();
    let tbs = tbs_certificate(&ca, &csr, &terms).unwrap();
    check_tbs_certificate(&ca, &csr, &terms, &tbs).unwrap();

    let other_serial = Terms {
        serial: vec![0x01, 0x02],
        ..terms.clone()
    };
    let why = check_tbs_certificate(&ca, &csr, &other_serial, &tbs)
        .unwrap_err()
        .to_string();
    assert!(why.contains("serial number differs"), "{why}");
    let longer = Terms {
        days: 31,
        ..terms.clone()
    };
    let why = check_tbs_certificate(&ca, &csr, &longer, &tbs)
        .unwrap_err()
        .to_string();
    assert!(why.contains("validity differs"), "{why}");
    let sub_ca = Terms {
        profile: Profile::Client,
        ..terms.clone()
    };
    let why = check_tbs_certificate(&ca, &csr, &sub_ca, &tbs)
        .unwrap_err()
        .to_string();
    assert!(why.contains("extensions"), "{why}");
    let why = check_tbs_certificate(&ca, &csr, &terms, b"\x30\x03\x02\x01\x00")
        .unwrap_err()
        .to_string();
    assert!(why.contains("does not parse"), "{why}");
}

#[test]
fn a_tbs_crl_reads_back_and_anything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ca, _) = rsa_ca_and_csr(dir.path());
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let revoked = vec![
        Revoked {
            serial_hex: "0a1b2c".into(),
            reason: "keyCompromise".into(),
            revoked_at: now.unix_timestamp() - 60,
        },
        Revoked {
            serial_hex: "7f01".into(),
            reason: "unspecified".into(),
            revoked_at: now.unix_timestamp(),
        },
    ];
    let tbs = tbs_crl(&ca, 12, &revoked, now).unwrap();
    let read = read_tbs_crl(&ca, &tbs).unwrap();
    assert_eq!(read.number, 12);
    assert_eq!(read.this_update, now);
    assert_eq!(
        read.next_update,
        Some(now + time::Duration::days(CRL_VALIDITY_DAYS))
    );
    let entries: Vec<_> = read
        .revoked
        .iter()
        .map(|r| (r.serial_hex.as_str(), r.reason.as_str(), r.revoked_at))
        .collect();
    assert_eq!(
        entries,
        [
            ("0a1b2c", "keyCompromise", now.unix_timestamp() - 60),
            ("7f01", "unspecified", now.unix_timestamp())
        ]
    );
    // a TBSCertificate is not a CRL; another CA's CRL does not read back as this CA's
    let other = {
        let key = CaKey::generate(KeyAlgorithm::Rsa2048).unwrap();
        let subject = CaSubject {
            name: "Other Root".into(),
            org: "Org".into(),
            country: "FR".into(),
        };
        CaCertificate::from_der(&self_signed(&key, &subject, 10, None, now).unwrap()).unwrap()
    };
    let why = read_tbs_crl(&other, &tbs).unwrap_err().to_string();
    assert!(why.contains("is not the CRL this CA makes"), "{why}");
    let mut truncated = tbs.clone();
    truncated.truncate(tbs.len() - 3);
    assert!(read_tbs_crl(&ca, &truncated).is_err());
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

#[test]
fn a_constrained_sub_ca_shows_and_carries_its_constraints_and_the_view_gives_them_back() {
    use super::constraints::SubCaConstraints;
    let (key, ca) = test_ca();
    let constraints = SubCaConstraints {
        dns: vec!["example.org".into()],
        ip: vec!["10.0.0.0/8".parse().unwrap()],
        email: vec![],
        ekus: vec!["serverAuth".into(), "clientAuth".into()],
    };
    let terms = Terms::new(Profile::SubCa, 30, OffsetDateTime::now_utc())
        .unwrap()
        .with_sub_ca(Some(constraints.clone()));
    let issued = issue(&key, &ca, &client_csr(), &terms).unwrap();
    assert_eq!(
        issued.view.name_constraints,
        ["DNS:example.org", "IP:10.0.0.0/8"]
    );
    assert_eq!(issued.view.extended_key_usage, ["serverAuth", "clientAuth"]);
    assert_eq!(Terms::of_view(&issued.view).unwrap(), terms);
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).unwrap();
    let nc = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "2.5.29.30")
        .unwrap();
    assert!(nc.critical);

    // a sub-CA request naming something outside is refused, naming it
    let sub_key = CaKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Sub");
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("192.0.2.1".parse().unwrap())];
    let wide = Csr::parse(params.serialize_request(&sub_key).unwrap().der()).unwrap();
    let err = check_request(&ca, &wide, &terms).unwrap_err().to_string();
    assert!(err.contains("IP:192.0.2.1"), "{err}");
    // without constraints, the same request is an unconstrained sub-CA, as before
    let open = terms.clone().with_sub_ca(None);
    assert!(
        check_request(&ca, &wide, &open)
            .unwrap()
            .name_constraints
            .is_empty()
    );
}

#[test]
fn a_serial_with_a_leading_zero_byte_is_refused() {
    let (_key, ca) = test_ca();
    let csr = client_csr();
    let mut terms = Terms::new(Profile::Client, 10, OffsetDateTime::now_utc()).unwrap();
    terms.serial = vec![0x00, 0xab];
    let why = check_request(&ca, &csr, &terms).unwrap_err().to_string();
    assert!(
        why.contains("serial number 00ab starts with a zero byte"),
        "{why}"
    );
    terms.serial = vec![0x00];
    check_request(&ca, &csr, &terms).unwrap();
    terms.serial = vec![0x01, 0x00];
    check_request(&ca, &csr, &terms).unwrap();
}
