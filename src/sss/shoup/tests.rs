//! Threshold RSA against the real thing: signatures compared byte for byte with the `rsa`
//! crate's PKCS#1 v1.5 signature under the same key, and verified by the OpenSSL CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proptest::prelude::*;
use rsa::pkcs8::EncodePublicKey;
use std::sync::OnceLock;

fn fixture_text(bits: usize) -> &'static str {
    match bits {
        2048 => include_str!("../../../tests/fixtures/threshold/rsa-2048.primes"),
        3072 => include_str!("../../../tests/fixtures/threshold/rsa-3072.primes"),
        4096 => include_str!("../../../tests/fixtures/threshold/rsa-4096.primes"),
        _ => unreachable!(),
    }
}

fn primes(bits: usize) -> SafePrimes {
    SafePrimes::from_text(fixture_text(bits)).unwrap()
}

/// The ordinary signature with the whole key (test only: rebuilt from the fixture primes).
fn whole_key_signature(bits: usize, message: &[u8]) -> Vec<u8> {
    let primes = primes(bits);
    let key = rsa::PrivateKey::from_p_q(
        primes.p.clone(),
        primes.q.clone(),
        BoxedUint::from(PUBLIC_EXPONENT),
    )
    .unwrap();
    let digest = Sha256::digest(message);
    key.sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest)
        .unwrap()
}

/// A 3-of-5 key over the 2048-bit fixture, dealt once for the whole test binary.
fn dealt_2048() -> &'static (ThresholdKey, Vec<KeyShare>) {
    static DEALT: OnceLock<(ThresholdKey, Vec<KeyShare>)> = OnceLock::new();
    DEALT.get_or_init(|| deal(primes(2048), 3, 5, &mut rand::rng()).unwrap())
}

fn sign_all(
    key: &ThresholdKey,
    shares: &[KeyShare],
    message: &[u8],
    context: &[u8],
) -> Vec<SignatureShare> {
    shares
        .iter()
        .map(|s| sign_share(key, s, message, context, &mut rand::rng()).unwrap())
        .collect()
}

fn openssl_verifies(key: &ThresholdKey, message: &[u8], signature: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let pem = key
        .rsa_public_key()
        .unwrap()
        .to_public_key_pem(Default::default())
        .unwrap();
    std::fs::write(dir.path().join("pub.pem"), pem).unwrap();
    std::fs::write(dir.path().join("msg"), message).unwrap();
    std::fs::write(dir.path().join("sig"), signature).unwrap();
    let status = std::process::Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig",
            "msg",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    status.status.success()
}

#[test]
fn every_3_of_5_subset_gives_the_whole_key_signature_and_openssl_verifies_it() {
    let (key, shares) = dealt_2048();
    let message = b"TBSCertificate bytes, 3 of 5";
    let context = b"ca 1 / session 1";
    let signature_shares = sign_all(key, shares, message, context);
    let expected = whole_key_signature(2048, message);
    for a in 0..5 {
        for b in a + 1..5 {
            for c in b + 1..5 {
                let subset = [
                    signature_shares[a].clone(),
                    signature_shares[b].clone(),
                    signature_shares[c].clone(),
                ];
                let signature = combine(key, message, context, &subset).unwrap();
                assert_eq!(signature, expected, "subset {a} {b} {c}");
            }
        }
    }
    assert!(openssl_verifies(key, message, &expected));
    assert!(!openssl_verifies(key, b"another message", &expected));
}

#[test]
fn more_than_m_shares_and_any_order_combine_too() {
    let (key, shares) = dealt_2048();
    let message = b"order";
    let mut signature_shares = sign_all(key, shares, message, b"");
    signature_shares.reverse();
    let signature = combine(key, message, b"", &signature_shares).unwrap();
    assert_eq!(signature, whole_key_signature(2048, message));
}

fn larger_key_gives_the_whole_key_signature(bits: usize) {
    let (key, shares) = deal(primes(bits), 2, 3, &mut rand::rng()).unwrap();
    assert_eq!(key.modulus_bits(), bits);
    let message = format!("rsa-{bits}");
    let signature_shares = sign_all(&key, &shares[1..], message.as_bytes(), b"ctx");
    let signature = combine(&key, message.as_bytes(), b"ctx", &signature_shares).unwrap();
    assert_eq!(signature, whole_key_signature(bits, message.as_bytes()));
    assert!(openssl_verifies(&key, message.as_bytes(), &signature));
}

#[test]
fn rsa_3072_gives_the_whole_key_signature() {
    larger_key_gives_the_whole_key_signature(3072);
}

#[test]
fn rsa_4096_gives_the_whole_key_signature() {
    larger_key_gives_the_whole_key_signature(4096);
}

#[test]
fn m_minus_1_shares_cannot_sign() {
    let (key, shares) = dealt_2048();
    let signature_shares = sign_all(key, &shares[..2], b"m", b"");
    let err = combine(key, b"m", b"", &signature_shares).unwrap_err();
    assert!(
        matches!(err, ThresholdError::NotEnoughShares { got: 2, needed: 3 }),
        "{err}"
    );
}

#[test]
fn m_minus_1_shares_and_an_outsiders_forgery_cannot_sign() {
    let (key, shares) = dealt_2048();
    let mut signature_shares = sign_all(key, &shares[..2], b"m", b"");
    // an outsider with a made-up share for index 3
    let forged_share = KeyShare {
        index: 3,
        s: BoxedUint::from(123_456_789u64).resize_unchecked(2048),
    };
    signature_shares.push(sign_share(key, &forged_share, b"m", b"", &mut rand::rng()).unwrap());
    let err = combine(key, b"m", b"", &signature_shares).unwrap_err();
    assert!(
        matches!(err, ThresholdError::BadProof { index: 3 }),
        "{err}"
    );
}

#[test]
fn a_wrong_signature_share_is_rejected_by_its_proof_and_its_holder_named() {
    let (key, shares) = dealt_2048();
    let mut signature_shares = sign_all(key, &shares[..3], b"m", b"");
    // holder 2 sends a share value for another message under its proof
    let other = sign_share(key, &shares[1], b"other", b"", &mut rand::rng()).unwrap();
    signature_shares[1].x_i = other.x_i;
    let err = combine(key, b"m", b"", &signature_shares).unwrap_err();
    assert!(
        matches!(err, ThresholdError::BadProof { index: 2 }),
        "{err}"
    );
    assert!(err.to_string().contains("holder 2"), "{err}");

    // holder 3 tampers with the response
    let mut tampered = sign_share(key, &shares[2], b"m", b"", &mut rand::rng()).unwrap();
    let last = tampered.z.len() - 1;
    tampered.z[last] ^= 1;
    let err = verify_share(key, b"m", b"", &tampered).unwrap_err();
    assert!(
        matches!(err, ThresholdError::BadProof { index: 3 }),
        "{err}"
    );

    // holder 1's share presented under index 4
    let mut relabelled = sign_share(key, &shares[0], b"m", b"", &mut rand::rng()).unwrap();
    relabelled.index = 4;
    let err = verify_share(key, b"m", b"", &relabelled).unwrap_err();
    assert!(
        matches!(err, ThresholdError::BadProof { index: 4 }),
        "{err}"
    );
}

#[test]
fn a_proof_for_one_message_or_context_does_not_verify_for_another() {
    let (key, shares) = dealt_2048();
    let share = sign_share(key, &shares[0], b"tbs A", b"session 1", &mut rand::rng()).unwrap();
    verify_share(key, b"tbs A", b"session 1", &share).unwrap();
    for (message, context) in [(&b"tbs B"[..], &b"session 1"[..]), (b"tbs A", b"session 2")] {
        let err = verify_share(key, message, context, &share).unwrap_err();
        assert!(
            matches!(err, ThresholdError::BadProof { index: 1 }),
            "{err}"
        );
    }
    // a whole set made for another TBS does not combine for this one
    let set = sign_all(key, &shares[..3], b"tbs B", b"session 1");
    let err = combine(key, b"tbs A", b"session 1", &set).unwrap_err();
    assert!(
        matches!(err, ThresholdError::BadProof { index: 1 }),
        "{err}"
    );
}

#[test]
fn a_duplicated_index_is_refused() {
    let (key, shares) = dealt_2048();
    let mut set = sign_all(key, &shares[..2], b"m", b"");
    set.push(set[0].clone());
    let err = combine(key, b"m", b"", &set).unwrap_err();
    assert!(
        matches!(err, ThresholdError::DuplicateShare { index: 1 }),
        "{err}"
    );
}

#[test]
fn key_shares_check_against_their_verification_keys_only() {
    let (key, shares) = dealt_2048();
    for share in shares {
        check_key_share(key, share).unwrap();
    }
    let (other_key, other_shares) = deal(primes(2048), 3, 5, &mut rand::rng()).unwrap();
    let err = check_key_share(key, &other_shares[0]).unwrap_err();
    assert!(
        matches!(err, ThresholdError::ShareMismatch { index: 1 }),
        "{err}"
    );
    // same primes, fresh polynomial and v: nothing carries over
    assert_ne!(other_key.v, key.v);
    let relabelled = KeyShare::from_bytes(&{
        let mut bytes = shares[0].to_bytes();
        bytes[0] = 2;
        bytes
    })
    .unwrap();
    let err = check_key_share(key, &relabelled).unwrap_err();
    assert!(
        matches!(err, ThresholdError::ShareMismatch { index: 2 }),
        "{err}"
    );
}

#[test]
fn key_share_bytes_round_trip_and_debug_is_redacted() {
    let (key, shares) = dealt_2048();
    let bytes = shares[2].to_bytes();
    assert_eq!(bytes.len(), 1 + 256);
    let back = KeyShare::from_bytes(&bytes).unwrap();
    assert_eq!(back.index, 3);
    check_key_share(key, &back).unwrap();
    let debug = format!("{back:?}");
    assert!(debug.contains("redacted"), "{debug}");
    assert!(!debug.contains(&hex::encode(&bytes[1..9])));
    for bad in [&[][..], &[0u8; 257][..], &[1u8; 10][..]] {
        assert!(KeyShare::from_bytes(bad).is_err());
    }
}

#[test]
fn the_public_key_round_trips_and_tampering_is_refused() {
    let (key, _) = dealt_2048();
    let json = serde_json::to_value(key).unwrap();
    let back: ThresholdKey = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&back, key);

    // v_3 out of range (>= n)
    let mut tampered = json.clone();
    tampered["verification_keys"][2] = serde_json::Value::String(hex::encode([0xffu8; 256]));
    let err = serde_json::from_value::<ThresholdKey>(tampered).unwrap_err();
    assert!(err.to_string().contains("v_3"), "{err}");

    // a short modulus
    let mut tampered = json.clone();
    tampered["n"] = serde_json::Value::String(hex::encode([0x0fu8; 128]));
    assert!(serde_json::from_value::<ThresholdKey>(tampered).is_err());

    // one verification key missing
    let mut tampered = json.clone();
    tampered["verification_keys"].as_array_mut().unwrap().pop();
    let err = serde_json::from_value::<ThresholdKey>(tampered).unwrap_err();
    assert!(
        err.to_string().contains("4 verification keys for 5"),
        "{err}"
    );

    // another exponent
    let mut tampered = json;
    tampered["e"] = 3.into();
    assert!(serde_json::from_value::<ThresholdKey>(tampered).is_err());
}

#[test]
fn bad_dealing_parameters_and_primes_are_refused() {
    for (m, n) in [(1, 3), (4, 3), (2, 21)] {
        let err = deal(primes(2048), m, n, &mut rand::rng()).unwrap_err();
        assert!(matches!(err, ThresholdError::BadParameters { .. }), "{err}");
    }
    // p = q
    let text = fixture_text(2048);
    let p_line = text.lines().find(|l| l.starts_with("p ")).unwrap();
    let twin = format!("{p_line}\nq {}", &p_line[2..]);
    assert!(SafePrimes::from_text(&twin).is_err());
    // a 1024-bit prime that is not safe (from `openssl prime -generate -bits 1024`)
    let unsafe_prime = "E1C2041144B84FD0D8FE42491D244D4D80580B6D2BA9AF90A59EAE4D3A65F57BF341F6475C2D5179C2754AAFCFF486D377D887D388792F40913CFBE10F811105202D63E8FDEC8D0BF487D4D1875A9CEAD2015466DE4250FBC5A7E5F087610B782E4178016246B7E265C056E46FFF8F0B08AAC30F39ADA11D3800EDDC674C700D";
    let err = SafePrimes::from_text(&format!("{p_line}\nq {unsafe_prime}")).unwrap_err();
    assert!(err.to_string().contains("not a safe prime"), "{err}");
}

#[test]
fn cancelling_safe_prime_generation_stops_it() {
    let cancel = AtomicBool::new(true);
    let mut calls = 0;
    let err = generate_safe_primes(2048, &mut |_| calls += 1, &cancel).unwrap_err();
    assert!(matches!(err, ThresholdError::Cancelled), "{err}");
    assert_eq!(calls, 0);
    let err = generate_safe_primes(1024, &mut |_| {}, &cancel).unwrap_err();
    assert!(
        matches!(err, ThresholdError::UnsupportedSize(1024)),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn any_m_of_n_combine_and_m_minus_1_do_not(
        (m, n) in (2u8..=5).prop_flat_map(|n| (2u8..=n, Just(n))),
        seed in any::<u64>(),
    ) {
        let (key, shares) = deal(primes(2048), m, n, &mut rand::rng()).unwrap();
        // a pseudo-random subset of exactly m shares, from the seed
        let mut order: Vec<usize> = (0..n as usize).collect();
        let mut state = seed;
        for i in (1..order.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (state >> 33) as usize % (i + 1));
        }
        let chosen: Vec<&KeyShare> = order[..m as usize].iter().map(|&i| &shares[i]).collect();
        let message = seed.to_be_bytes();
        let set: Vec<SignatureShare> = chosen
            .iter()
            .map(|s| sign_share(&key, s, &message, b"p", &mut rand::rng()).unwrap())
            .collect();
        let signature = combine(&key, &message, b"p", &set).unwrap();
        let primes = primes(2048);
        let whole = rsa::PrivateKey::from_p_q(
            primes.p.clone(),
            primes.q.clone(),
            BoxedUint::from(PUBLIC_EXPONENT),
        )
        .unwrap()
        .sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(message))
        .unwrap();
        prop_assert_eq!(signature, whole);
        let short = combine(&key, &message, b"p", &set[..m as usize - 1]);
        let refused = matches!(short, Err(ThresholdError::NotEnoughShares { .. }));
        prop_assert!(refused);
    }
}

#[test]
fn lagrange_coefficients_and_bezout_fit_their_integers_up_to_twenty_shares() {
    let delta: u64 = (1..=u64::from(MAX_SHARES)).product();
    for threshold in MIN_THRESHOLD..=MAX_SHARES {
        for first in 1..=(MAX_SHARES - threshold + 1) {
            let used: Vec<u8> = (first..first + threshold).collect();
            let lambdas: Vec<i128> = (0..used.len())
                .map(|position| lagrange_at_zero(&used, position, delta).unwrap())
                .collect();
            // interpolating f(x) = 1 and f(x) = x at zero gives Δ·1 and Δ·0
            let constant: i128 = lambdas.iter().sum();
            assert_eq!(constant, i128::from(delta), "M={threshold} from {first}");
            let linear = lambdas
                .iter()
                .zip(&used)
                .try_fold(0i128, |sum, (l, &j)| {
                    sum.checked_add(l.checked_mul(i128::from(j))?)
                })
                .unwrap();
            assert_eq!(linear, 0, "M={threshold} from {first}");
        }
    }
    let e_prime = 4 * u128::from(delta) * u128::from(delta);
    let (a, b) = bezout(e_prime, u128::from(PUBLIC_EXPONENT)).unwrap();
    let big = |v: i128| num_bigint::BigInt::from(v);
    assert_eq!(
        big(i128::try_from(e_prime).unwrap()) * big(a) + big(PUBLIC_EXPONENT.into()) * big(b),
        big(1)
    );
}

#[test]
fn m_key_shares_give_back_the_safe_primes_and_fewer_or_forged_ones_do_not() {
    let (key, shares) = dealt_2048();
    let expected = primes(2048);
    for subset in [[0usize, 1, 2], [4, 2, 0], [1, 3, 4]] {
        let picked: Vec<KeyShare> = subset
            .iter()
            .map(|&i| KeyShare::from_bytes(&shares[i].to_bytes()).unwrap())
            .collect();
        let got = recover_primes(key, &picked).unwrap();
        let mut found = [got.p.clone(), got.q.clone()];
        found.sort();
        let mut want = [expected.p.clone(), expected.q.clone()];
        want.sort();
        assert_eq!(found, want);
    }
    let two: Vec<KeyShare> = shares[..2]
        .iter()
        .map(|s| KeyShare::from_bytes(&s.to_bytes()).unwrap())
        .collect();
    assert!(matches!(
        recover_primes(key, &two),
        Err(ThresholdError::NotEnoughShares { .. })
    ));
    let mut forged: Vec<KeyShare> = shares[..3]
        .iter()
        .map(|s| KeyShare::from_bytes(&s.to_bytes()).unwrap())
        .collect();
    forged[1].s = forged[1]
        .s
        .wrapping_add(BoxedUint::one_with_precision(forged[1].s.bits_precision()));
    assert!(recover_primes(key, &forged).is_err());
}
