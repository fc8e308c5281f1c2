//! Policy parsing and verdicts on certificate views.

#![allow(clippy::unwrap_used)]

use super::*;

const EXAMPLE: &str = include_str!("../../examples/policy.toml");

fn holders() -> Vec<String> {
    (1..=5).map(|i| format!("NK00{i}")).collect()
}

fn view(profile: &str, sans: &[&str], key: &str, days: u32) -> CertificateView {
    CertificateView {
        profile: profile.into(),
        serial: "01".into(),
        subject: vec![("CN".into(), "www.example.org".into())],
        sans: sans.iter().map(|s| s.to_string()).collect(),
        key: key.into(),
        not_before: 0,
        not_after: 0,
        days,
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

#[test]
fn the_example_parses_and_fits_a_3_of_5_ca() {
    let p = Policy::from_toml(EXAMPLE).unwrap();
    p.check_for_ca(3, &holders()).unwrap();
    assert_eq!(p.sub_ca.as_ref().unwrap().approvals, 4);
    // it survives the manifest's JSON
    let back: Policy = serde_json::from_str(&p.to_json_pretty()).unwrap();
    assert_eq!(back, p);
}

#[test]
fn fewer_approvals_than_m_are_refused_naming_the_key() {
    let p = Policy::from_toml(EXAMPLE).unwrap();
    let err = p.check_for_ca(4, &holders()).unwrap_err().to_string();
    assert!(err.contains("server.approvals"), "{err}");
    assert!(
        err.contains("fewer than this CA's threshold M = 4"),
        "{err}"
    );
}

#[test]
fn unknown_keys_and_bad_values_are_refused_by_name() {
    let err = Policy::from_toml("version = 1\n[server]\napprovals = 3\nmax_day = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_day"), "{err}");
    let err = Policy::from_toml("version = 1\n[servers]\napprovals = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("servers"), "{err}");
    let err =
        Policy::from_toml("version = 1\n[server]\napprovals = 3\nip_ranges = [\"10.0.0.1/8\"]\n")
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("server.ip_ranges") && err.contains("host bits"),
        "{err}"
    );
    let err =
        Policy::from_toml("version = 1\n[server]\napprovals = 3\nkey_types = [\"dsa-1024\"]\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("server.key_types"), "{err}");
    let err = Policy::from_toml("version = 2\n").unwrap_err().to_string();
    assert!(err.contains("version 2"), "{err}");
    let err = Policy::from_toml("version = 1\n[sub-ca]\napprovals = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unconstrained = true"), "{err}");
    let err = Policy::from_toml(
        "version = 1\n[sub-ca]\napprovals = 3\nunconstrained = true\npermitted_dns = [\"a.org\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sub-ca.unconstrained"), "{err}");
    let p =
        Policy::from_toml("version = 1\n[server]\napprovals = 3\nrequired_holders = [\"NK009\"]\n")
            .unwrap();
    let err = p.check_for_ca(3, &holders()).unwrap_err().to_string();
    assert!(
        err.contains("server.required_holders") && err.contains("NK009"),
        "{err}"
    );
}

#[test]
fn each_rule_names_itself_when_broken() {
    let p = Policy::from_toml(EXAMPLE).unwrap();
    let ok = view(
        "server",
        &["DNS:www.example.org", "IP:10.1.2.3"],
        "ECDSA P-256",
        90,
    );
    let v = verdict(&p, 3, &Request::Issue(&ok));
    assert!(v.allowed(), "{:?}", v.violations);
    assert_eq!(
        (v.approvals, v.required_holders.clone()),
        (3, vec!["NK001".to_string()])
    );

    let cases = [
        (
            view("server", &["DNS:www.example.com"], "ECDSA P-256", 90),
            "server.dns_domains",
        ),
        (
            view("server", &["IP:192.0.2.1"], "ECDSA P-256", 90),
            "server.ip_ranges",
        ),
        (
            view("server", &["DNS:a.example.org"], "Ed25519", 90),
            "server.key_types",
        ),
        (
            view("server", &["DNS:a.example.org"], "ECDSA P-256", 398),
            "server.max_days",
        ),
        (
            view("client", &["email:bob@example.com"], "ECDSA P-256", 30),
            "client.email_domains",
        ),
    ];
    for (mut view, rule) in cases {
        // the CN names the SAN, so only the rule under test is broken
        if let Some((_, name)) = view.sans[0].split_once(':') {
            view.subject = vec![("CN".into(), name.to_owned())];
        }
        let v = verdict(&p, 3, &Request::Issue(&view));
        assert_eq!(v.violations.len(), 1, "{rule}: {:?}", v.violations);
        assert_eq!(v.violations[0].rule, rule);
    }
    let mut odd = view("server", &["DNS:a.example.org"], "RSA-2048", 30);
    odd.subject.push(("L".into(), "Lyon".into()));
    let v = verdict(&p, 3, &Request::Issue(&odd));
    assert_eq!(v.violations[0].rule, "server.subject_attributes");

    let none = Policy::from_toml("version = 1\n[server]\napprovals = 3\n").unwrap();
    let v = verdict(
        &none,
        3,
        &Request::Issue(&view("client", &[], "RSA-2048", 1)),
    );
    assert_eq!(v.violations[0].rule, "client");
    // revocation without a section: M approvals
    assert_eq!(verdict(&none, 3, &Request::Revoke).approvals, 3);
    assert_eq!(verdict(&p, 3, &Request::Crl).approvals, 3);
}

#[test]
fn a_server_common_name_must_be_one_of_the_judged_names() {
    let policy = Policy::from_toml(
        "version = 1\n[server]\napprovals = 3\ndns_domains = [\"example.org\"]\nip_ranges = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let named = view("server", &["DNS:www.example.org"], "ecdsa-p256", 30);
    assert!(verdict(&policy, 3, &Request::Issue(&named)).allowed());
    // CN=www.example.org with only an IP address: a client would check the host name
    // against the CN, which no rule judged
    let ip_only = view("server", &["IP:10.1.2.3"], "ecdsa-p256", 30);
    let v = verdict(&policy, 3, &Request::Issue(&ip_only));
    assert!(!v.allowed());
    assert!(v.refusal().contains("common name"), "{}", v.refusal());
}

#[test]
fn a_policy_change_needs_the_strictest_quorum_of_the_current_policy() {
    assert_eq!(change_verdict(None, 3).approvals, 3);
    let current = Policy::from_toml(
        "version = 1\n[server]\napprovals = 4\nrequired_holders = [\"NK002\"]\n\
         [crl]\napprovals = 3\nrequired_holders = [\"NK001\", \"NK003\"]\n",
    )
    .unwrap();
    let v = change_verdict(Some(&current), 3);
    assert_eq!(v.profile, "policy");
    assert_eq!(v.approvals, 4);
    assert_eq!(v.required_holders, ["NK002", "NK001", "NK003"]);
    // more required holders than any quorum: each of them must approve
    let many = Policy::from_toml(
        "version = 1\n[server]\napprovals = 3\nrequired_holders = [\"NK001\", \"NK002\"]\n\
         [client]\napprovals = 3\nrequired_holders = [\"NK003\", \"NK004\"]\n",
    )
    .unwrap();
    assert_eq!(change_verdict(Some(&many), 3).approvals, 4);
}

#[test]
fn a_reshare_needs_the_strictest_quorum_of_the_current_policy() {
    let none = reshare_verdict(None, 3);
    assert_eq!((none.profile.as_str(), none.approvals), ("reshare", 3));
    let current = Policy::from_toml(
        "version = 1\n[server]\napprovals = 4\nrequired_holders = [\"NK002\"]\n\
         [crl]\napprovals = 3\nrequired_holders = [\"NK001\"]\n",
    )
    .unwrap();
    let v = reshare_verdict(Some(&current), 3);
    assert_eq!(v.profile, "reshare");
    assert_eq!(v.approvals, 4);
    assert_eq!(v.required_holders, ["NK002", "NK001"]);
    assert!(v.allowed());
    assert!(v.summary[1].contains("a reshare needs the strictest quorum"));
}
