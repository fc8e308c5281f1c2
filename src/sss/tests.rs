//! Property tests of the sharing: any M of N recover, M−1 do not, an altered share is named.

use super::*;
use proptest::prelude::*;

fn params() -> impl Strategy<Value = (u8, u8)> {
    (3u8..=9).prop_flat_map(|n| (2u8..=n, Just(n)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_threshold_subset_recovers(
        (t, n) in params(),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        seed in any::<u64>(),
    ) {
        let (set, shares) = split(&payload, t, n, &[]).unwrap();
        // a pseudo-random subset of exactly t shares, in a shuffled order
        let mut order: Vec<usize> = (0..n as usize).collect();
        let mut s = seed;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let subset: Vec<Share> = order[..t as usize].iter().map(|&i| shares[i].clone()).collect();
        let recovered = set.recover(&subset).unwrap();
        prop_assert_eq!(recovered.as_slice(), payload.as_slice());
    }

    #[test]
    fn fewer_than_threshold_do_not_recover((t, n) in params()) {
        let (set, shares) = split(b"secret", t, n, &[]).unwrap();
        let short = &shares[..t as usize - 1];
        let refused = matches!(set.recover(short), Err(SssError::NotEnoughShares { .. }));
        prop_assert!(refused);
        // and interpolating t-1 shares as if they were enough yields a wrong KEK
        let kek = feldman::combine(short);
        if let Ok(kek) = kek {
            prop_assert!(set.wrapped.as_ref().unwrap().open(&kek, &set.associated_data()).is_err());
        }
    }

    #[test]
    fn one_altered_share_is_named(
        (t, n) in params(),
        which in any::<prop::sample::Index>(),
        byte in 0usize..32,
        flip in 1u8..=255,
    ) {
        let (set, mut shares) = split(b"secret", t, n, &[]).unwrap();
        let victim = which.index(n as usize);
        let mut bytes: [u8; 32] = shares[victim].value.as_bytes().try_into().unwrap();
        bytes[byte] ^= flip;
        shares[victim].value = ShareValue::from_bytes(bytes);
        let index = shares[victim].index;
        match set.recover(&shares) {
            Err(SssError::CommitmentMismatch { index: named }) => prop_assert_eq!(named, index),
            // a flipped top byte can push the value past the group order: still refused
            Err(SssError::MalformedValue) => {}
            other => prop_assert!(false, "altered share accepted: {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn duplicate_share_is_refused() {
    let (set, shares) = split(b"x", 2, 3, &[]).unwrap();
    let twice = vec![shares[1].clone(), shares[1].clone()];
    assert!(matches!(
        set.recover(&twice),
        Err(SssError::DuplicateShare { index: 2 })
    ));
}

#[test]
fn share_of_another_set_is_refused() {
    let (set_a, shares_a) = split(b"x", 2, 3, &[]).unwrap();
    let (_, shares_b) = split(b"x", 2, 3, &[]).unwrap();
    let mixed = vec![shares_a[0].clone(), shares_b[1].clone()];
    assert!(matches!(
        set_a.recover(&mixed),
        Err(SssError::ForeignShare { index: 2, .. })
    ));
}

#[test]
fn debug_never_shows_the_value() {
    let (_, shares) = split(
        b"x",
        2,
        3,
        &["NK001".into(), "NK002".into(), "NK003".into()],
    )
    .unwrap();
    let json = shares[0].to_json();
    let value_hex = hex::encode(shares[0].value.as_bytes());
    assert!(json.contains(&value_hex));
    let debug = format!("{:?}", shares[0]);
    assert!(!debug.contains(&value_hex));
    assert!(debug.contains("<redacted>"));
}

#[test]
fn share_json_round_trips_and_rejects_unknown_fields() {
    let (set, shares) = split(b"x", 2, 3, &[]).unwrap();
    let json = shares[0].to_json();
    let back: Share = serde_json::from_str(&json).unwrap();
    set.verify(&back).unwrap();
    let extra = json.replacen('{', "{\"surprise\": 1,", 1);
    assert!(serde_json::from_str::<Share>(&extra).is_err());
}

#[test]
fn a_share_value_must_be_hex_of_its_schemes_length_and_is_never_echoed() {
    let (set, shares) = split(b"x", 2, 3, &[]).unwrap();
    let json = shares[0].to_json();
    let value_hex = hex::encode(shares[0].value.as_bytes());
    // read from bytes (as from a token) and from text, with escapes serde must unescape
    let from_bytes: Share = serde_json::from_slice(json.as_bytes()).unwrap();
    set.verify(&from_bytes).unwrap();
    // an escaped digit: serde_json unescapes into its scratch buffer, not the input
    let escaped = format!("\\u{:04x}{}", value_hex.as_bytes()[0], &value_hex[1..]);
    let back: Share = serde_json::from_str(&json.replacen(&value_hex, &escaped, 1)).unwrap();
    set.verify(&back).unwrap();
    // the length is the scheme's business: a Feldman value must be 32 bytes
    for wrong_length in [value_hex[..62].to_owned(), format!("{value_hex}00")] {
        let share: Share =
            serde_json::from_str(&json.replacen(&value_hex, &wrong_length, 1)).unwrap();
        let err = set.verify(&share).unwrap_err();
        assert!(
            matches!(
                err,
                SssError::MalformedValue | SssError::CommitmentMismatch { index: 1 }
            ),
            "{err}"
        );
        assert!(!err.to_string().contains(&value_hex[2..40]), "{err}");
    }
    for bad in [format!("zz{}", &value_hex[2..]), format!("{value_hex}0")] {
        let err = serde_json::from_str::<Share>(&json.replacen(&value_hex, &bad, 1))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("hex digits of a share"), "{err}");
        assert!(!err.contains(&value_hex[2..40]), "{err}");
    }
    let number = json.replacen(&format!("\"{value_hex}\""), "5", 1);
    let err = serde_json::from_str::<Share>(&number)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("a share value in hex"), "{err}");
}

#[test]
fn parameters_are_checked() {
    assert!(split(b"x", 1, 3, &[]).is_err());
    assert!(split(b"x", 4, 3, &[]).is_err());
    assert!(split(b"x", 2, 3, &["a".into()]).is_err());
    let (set, shares) = split(b"x", 15, 20, &[]).unwrap();
    let recovered = set.recover(&shares[5..]).unwrap();
    assert_eq!(recovered.as_slice(), b"x");
}

#[test]
fn a_bound_set_commits_to_its_public_key() {
    let (set, shares) = split_bound(b"key", 2, 3, &[], b"spki A").unwrap();
    assert!(set.is_bound_to(b"spki A"));
    assert!(!set.is_bound_to(b"spki B"));
    assert_eq!(set.recover(&shares[..2]).unwrap().as_slice(), b"key");
    // the same set claimed for another public key has another id: its shares are foreign
    let mut claimed = set.clone();
    claimed.binding = Some(binding_of(b"spki B"));
    assert_ne!(claimed.id(), set.id());
    assert!(matches!(
        claimed.recover(&shares[..2]),
        Err(SssError::ForeignShare { .. })
    ));
    // and even with the shares relabelled, the wrap's associated data refuses the new key
    let relabelled: Vec<Share> = shares[..2]
        .iter()
        .cloned()
        .map(|mut s| {
            s.set_id = claimed.id();
            s
        })
        .collect();
    assert!(matches!(
        claimed.recover(&relabelled),
        Err(SssError::UnwrapFailed)
    ));
    // dropping the binding (the 0.1.0 id) does not open it either
    let mut unbound = set.clone();
    unbound.binding = None;
    let relabelled: Vec<Share> = relabelled
        .into_iter()
        .map(|mut s| {
            s.set_id = unbound.id();
            s
        })
        .collect();
    assert!(matches!(
        unbound.recover(&relabelled),
        Err(SssError::UnwrapFailed)
    ));
}

#[test]
fn unbound_sets_keep_the_0_1_0_id() {
    let (set, _) = split(b"x", 2, 3, &[]).unwrap();
    let json = serde_json::to_vec(&set).unwrap();
    assert!(!String::from_utf8_lossy(&json).contains("binding"));
    let digest = sha2::Sha256::digest(&json);
    assert_eq!(set.id().0, hex::encode(&digest[..16]));
}

#[test]
fn share_signatures_name_their_share() {
    let (set, shares) = split(b"x", 2, 3, &[]).unwrap();
    let sig = shares[1].sign(b"message").unwrap();
    set.verify_share_signature(2, b"message", &sig).unwrap();
    assert!(matches!(
        set.verify_share_signature(1, b"message", &sig),
        Err(SssError::BadShareSignature { index: 1 })
    ));
    assert!(set.verify_share_signature(2, b"other", &sig).is_err());
    assert!(set.verify_share_signature(9, b"message", &sig).is_err());
    let (other, _) = split(b"x", 2, 3, &[]).unwrap();
    assert!(other.verify_share_signature(2, b"message", &sig).is_err());
}

/// A 2-of-3 threshold-mode set over the rsa-2048 fixture primes, bound to `b"spki"`.
fn threshold_set_2_of_3() -> (ShareSet, Vec<Share>) {
    let primes = shoup::SafePrimes::from_text(include_str!(
        "../../tests/fixtures/threshold/rsa-2048.primes"
    ))
    .unwrap();
    let (key, key_shares) = shoup::deal(primes, 2, 3, &mut rand::rng()).unwrap();
    let holders = ["NK001".to_owned(), "NK002".to_owned(), "NK003".to_owned()];
    threshold_set(key, &key_shares, &holders, b"spki").unwrap()
}

#[test]
fn threshold_shares_verify_sign_and_are_never_rebuilt() {
    let (set, shares) = threshold_set_2_of_3();
    assert!(set.is_threshold() && set.is_bound_to(b"spki"));
    for share in &shares {
        set.verify(share).unwrap();
        assert_eq!(set.key_share(share).unwrap().index, share.index);
        assert_eq!(set.fingerprint_of(share).unwrap().len(), 16);
    }
    // JSON round trip of set and share (format version 2)
    let json = shares[1].to_json();
    assert!(json.contains("\"version\": 2"), "{}", json.as_str());
    let back: Share = serde_json::from_str(&json).unwrap();
    let set_back: ShareSet = serde_json::from_str(&serde_json::to_string(&set).unwrap()).unwrap();
    set_back.verify(&back).unwrap();
    assert_eq!(set_back.id(), set.id());
    // proof of possession, as for enrollment: bound to its message and to the holder
    let proof = set.sign_with_share(&shares[1], b"enroll NK002").unwrap();
    set.verify_share_signature(2, b"enroll NK002", &proof)
        .unwrap();
    assert!(
        set.verify_share_signature(2, b"enroll NK003", &proof)
            .is_err()
    );
    assert!(
        set.verify_share_signature(3, b"enroll NK002", &proof)
            .is_err()
    );
    // the key is never rebuilt
    assert!(matches!(set.recover(&shares), Err(SssError::ThresholdMode)));
}

#[test]
fn a_threshold_share_with_a_wrong_value_or_mode_is_refused() {
    let (set, shares) = threshold_set_2_of_3();
    // another share's value under this share's index
    let mut swapped = shares[0].clone();
    swapped.value = shares[1].value.clone();
    assert!(matches!(
        set.verify(&swapped),
        Err(SssError::CommitmentMismatch { index: 1 })
    ));
    // a Feldman share of a reconstruct-mode set, and the other way round
    let (feldman_set, feldman_shares) = split(b"x", 2, 3, &[]).unwrap();
    let err = set.verify(&feldman_shares[0]).unwrap_err();
    assert!(
        err.to_string()
            .contains("reconstruct-mode share, but this CA is in threshold mode"),
        "{err}"
    );
    let err = feldman_set.verify(&shares[0]).unwrap_err();
    assert!(
        err.to_string()
            .contains("threshold-mode share, but this CA is in reconstruct mode"),
        "{err}"
    );
    // a threshold share claiming the Feldman format version
    let mut wrong_version = shares[0].clone();
    wrong_version.version = 1;
    assert!(matches!(
        set.verify(&wrong_version),
        Err(SssError::UnknownVersion(1))
    ));
    // a set carrying both a threshold key and a wrapped key is malformed
    let mut both = set.clone();
    both.wrapped = feldman_set.wrapped.clone();
    assert!(matches!(both.check(), Err(SssError::MalformedSet(_))));
}
