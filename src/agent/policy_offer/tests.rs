//! The agent's checks of a `policy` offer's manifest body and of a newer manifest the
//! server registered, on real ceremony manifests (a threshold CA from the test primes, so
//! that the dealer's key can sign any body a server might forge).

#![allow(clippy::unwrap_used)]

use super::*;
use crate::ceremony::{self, CaMode, CeremonyParams, Holder, NitrokeyId};
use crate::pki::{CaKey, CaSubject, KeyAlgorithm};
use crate::sss::shoup::SafePrimes;

const PRIMES: &str = include_str!("../../../tests/fixtures/threshold/rsa-2048.primes");

fn ceremony_params(mode: CaMode, key: KeyAlgorithm) -> CeremonyParams {
    let holders = (1..=3)
        .map(|i| Holder {
            nitrokey_id: NitrokeyId::parse(&format!("NK00{i}")).unwrap(),
            holder_name: format!("Holder {i}"),
            holder_email: format!("h{i}@example.org"),
            location: "Paris".into(),
            age_recipient: Some(age::x25519::Identity::generate().to_public()),
        })
        .collect();
    let subject = CaSubject {
        name: "Policy CA".into(),
        org: "nkpki tests".into(),
        country: "FR".into(),
    };
    CeremonyParams::new(subject, key, 5, None, 2, holders)
        .unwrap()
        .with_mode(mode)
        .unwrap()
}

/// A 2-of-3 threshold CA, and the dealer's key (which signs whatever a test needs).
fn threshold_ca() -> (Manifest, CaKey) {
    let params = ceremony_params(CaMode::Threshold, KeyAlgorithm::Rsa2048);
    let primes = SafePrimes::from_text(PRIMES).unwrap();
    let manifest = ceremony::perform_threshold(&params, primes, time::OffsetDateTime::now_utc())
        .unwrap()
        .manifest;
    let dealer = CaKey::from_rsa(
        SafePrimes::from_text(PRIMES)
            .unwrap()
            .to_rsa_private_key()
            .unwrap(),
    )
    .unwrap();
    (manifest, dealer)
}

fn strict() -> Policy {
    Policy::from_toml("version = 1\n[server]\napprovals = 3\nmax_days = 30\n").unwrap()
}

fn text(body: &ManifestBody) -> String {
    String::from_utf8(body.signed_bytes().unwrap()).unwrap()
}

fn refusal(result: Result<impl std::fmt::Debug, AgentError>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn the_offered_body_must_be_this_manifest_with_only_the_policy_changed() {
    let (manifest, _) = threshold_ca();
    let mine = manifest.verify().unwrap();
    let good = mine.body.with_policy(Some(strict())).unwrap();
    assert_eq!(check_body(&text(&good), &mine).unwrap(), good);

    // a server slipping in another change along with the policy
    let mut holders = good.clone();
    holders.holders[0].holder_email = "attacker@example.com".into();
    let why = refusal(check_body(&text(&holders), &mine));
    assert!(why.contains("changes the holders"), "{why}");
    let mut shares = good.clone();
    shares.share_set.threshold = 3;
    let why = refusal(check_body(&text(&shares), &mine));
    assert!(why.contains("changes the share set"), "{why}");

    // a revision other than the next one
    let mut skipped = good.clone();
    skipped.policy_revision = 2;
    let why = refusal(check_body(&text(&skipped), &mine));
    assert!(
        why.contains("policy revision 2") && why.contains("next is 1"),
        "{why}"
    );

    // the bytes approved must be the bytes signed
    let pretty = serde_json::to_string_pretty(&good).unwrap();
    let why = refusal(check_body(&pretty, &mine));
    assert!(why.contains("signed form"), "{why}");

    // a policy below M, and no change at all
    let mut low = good.clone();
    low.policy = Some(Policy::from_toml("version = 1\n[server]\napprovals = 1\n").unwrap());
    let why = refusal(check_body(&text(&low), &mine));
    assert!(
        why.contains("fewer than this CA's threshold M = 2"),
        "{why}"
    );
    let same = mine.body.with_policy(None).unwrap();
    let why = refusal(check_body(&text(&same), &mine));
    assert!(why.contains("nothing changes"), "{why}");
    assert!(check_body("{\"format\": 1}", &mine).is_err());
}

#[test]
fn a_threshold_offer_must_sign_exactly_the_offered_body() {
    let (manifest, _) = threshold_ca();
    let mine = manifest.verify().unwrap();
    let body = text(&mine.body.with_policy(Some(strict())).unwrap());
    let offer = |tbs: &str| SessionOffer {
        session_id: "s".into(),
        ca_id: mine.ca_id().0.clone(),
        ca_name: "Policy CA".into(),
        kind: crate::proto::SessionKind::Policy,
        requester: "admin".into(),
        request: body.clone(),
        request_sha256: String::new(),
        summary: crate::proto::OfferSummary {
            profile: "policy".into(),
            days: 0,
            not_before: 0,
            serial: None,
            reason: None,
            certificate: None,
            batch: None,
        },
        nonce: String::new(),
        expires_at: 0,
        recipient: String::new(),
        mode: SigningMode::Threshold,
        tbs: Some(B64.encode(tbs)),
        policy: None,
        approval_only: false,
    };
    let approving = recompute(&offer(&body), &mine).unwrap();
    assert_eq!(approving.request_sha256, pki::sha256_hex(body.as_bytes()));
    assert_eq!(approving.tbs.as_deref(), Some(body.as_bytes()));
    let why = refusal(recompute(&offer("{}"), &mine));
    assert!(why.contains("not the offered manifest body"), "{why}");
}

#[test]
fn only_a_newer_manifest_of_the_same_key_and_shares_is_adopted() {
    let (manifest, dealer) = threshold_ca();
    let original = manifest.verify().unwrap();
    let next = Manifest::sign(original.body.with_policy(Some(strict())).unwrap(), &dealer).unwrap();
    let adopted = check_newer(&original, &next).unwrap();
    assert_eq!(adopted.body.policy_revision, 1);

    // a stale manifest (the one this holder had before), or the same one again
    let why = refusal(check_newer(&adopted, &manifest));
    assert!(why.contains("not newer than this holder's (1)"), "{why}");
    let why = refusal(check_newer(&adopted, &next));
    assert!(why.contains("not newer"), "{why}");

    // a higher revision of a body the key never signed
    let mut forged = next.clone();
    forged.signed.policy_revision = 7;
    let why = refusal(check_newer(&adopted, &forged));
    assert!(why.contains("does not verify"), "{why}");

    // the same key over other shares (another dealing of the same primes)
    let params = ceremony_params(CaMode::Threshold, KeyAlgorithm::Rsa2048);
    let primes = SafePrimes::from_text(PRIMES).unwrap();
    let redealt = ceremony::perform_threshold(&params, primes, time::OffsetDateTime::now_utc())
        .unwrap()
        .manifest;
    let redealt =
        Manifest::sign(redealt.signed.with_policy(Some(strict())).unwrap(), &dealer).unwrap();
    let why = refusal(check_newer(&original, &redealt));
    assert!(
        why.contains("another CA id") || why.contains("another share set"),
        "{why}"
    );

    // another CA's key altogether
    let other = ceremony::perform(
        &ceremony_params(CaMode::Reconstruct, KeyAlgorithm::EcdsaP256),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
    .manifest;
    let why = refusal(check_newer(&original, &other));
    assert!(why.contains("another CA key"), "{why}");
}

#[test]
fn the_holder_sees_each_rule_removed_added_and_kept() {
    let (manifest, dealer) = threshold_ca();
    let loose =
        Policy::from_toml("version = 1\n[server]\napprovals = 2\nmax_days = 200\n").unwrap();
    let mine = Manifest::sign(manifest.signed.with_policy(Some(loose)).unwrap(), &dealer)
        .unwrap()
        .verify()
        .unwrap();
    let next = mine.body.with_policy(Some(strict())).unwrap();
    let offer = SessionOffer {
        session_id: "s".into(),
        ca_id: mine.ca_id().0.clone(),
        ca_name: "Policy CA".into(),
        kind: crate::proto::SessionKind::Policy,
        requester: "admin".into(),
        request: text(&next),
        request_sha256: String::new(),
        summary: crate::proto::OfferSummary {
            profile: "policy".into(),
            days: 0,
            not_before: 0,
            serial: None,
            reason: None,
            certificate: None,
            batch: None,
        },
        nonce: String::new(),
        expires_at: 0,
        recipient: String::new(),
        mode: SigningMode::Threshold,
        tbs: None,
        policy: None,
        approval_only: false,
    };
    let lines = describe(&offer, &mine);
    assert_eq!(
        lines,
        [
            "policy revision 1 -> 2",
            "- server.approvals = 2",
            "- server.max_days = 200",
            "+ server.approvals = 3",
            "+ server.max_days = 30",
            "  version = 1",
        ]
    );
    let cleared = mine.body.with_policy(None).unwrap();
    let lines = describe(
        &SessionOffer {
            request: text(&cleared),
            ..offer
        },
        &mine,
    );
    assert!(lines[0].contains("REMOVED"), "{lines:?}");
}
