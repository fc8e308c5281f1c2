//! Feldman VSS over P-256 through vsss-rs: the only place that touches group arithmetic.

use super::{ShareValue, SssError};
use p256::elliptic_curve::ff::{Field, PrimeField};
use p256::elliptic_curve::group::GroupEncoding;
use p256::{ProjectivePoint, Scalar};
use vsss_rs::{
    DefaultShare, FeldmanVerifierSet, IdentifierPrimeField, ReadableShareSet, ShareVerifierGroup,
    ValueGroup,
};
use zeroize::{Zeroize, Zeroizing};

type VShare = DefaultShare<IdentifierPrimeField<Scalar>, IdentifierPrimeField<Scalar>>;
type Verifier = ShareVerifierGroup<ProjectivePoint>;

/// The KEK as the big-endian bytes of a non-zero scalar.
pub(super) type Kek = Zeroizing<[u8; 32]>;

fn internal(e: vsss_rs::Error) -> SssError {
    SssError::Internal(e.to_string())
}

/// Makes a random non-zero KEK and splits it; returns the KEK, the share values in index
/// order (1..=total) and the hex-encoded commitments.
pub(super) fn split(
    threshold: u8,
    total: u8,
) -> Result<(Kek, Vec<ShareValue>, Vec<String>), SssError> {
    let mut rng = rand::rng();
    let mut secret = Scalar::random(&mut rng);
    while bool::from(secret.is_zero()) {
        secret = Scalar::random(&mut rng);
    }
    let kek: Kek = Zeroizing::new(secret.to_repr().into());
    let wrapped_secret = IdentifierPrimeField(secret);
    let split = vsss_rs::feldman::split_secret::<VShare, Verifier>(
        threshold as usize,
        total as usize,
        &wrapped_secret,
        None,
        &mut rng,
    )
    .map_err(internal);
    secret.zeroize();
    let mut wrapped_secret = wrapped_secret;
    wrapped_secret.0.zeroize();
    let (mut shares, verifiers) = split?;
    let values = shares
        .iter()
        .map(|s| ShareValue::from_bytes(s.value.0.to_repr().into()))
        .collect();
    for s in shares.iter_mut() {
        s.value.0.zeroize();
    }
    let commitments = FeldmanVerifierSet::<VShare, Verifier>::verifiers(&verifiers)
        .iter()
        .map(|v| hex::encode(v.0.to_bytes()))
        .collect();
    Ok((kek, values, commitments))
}

pub(super) fn decode_commitments(hexes: &[String]) -> Result<Vec<ProjectivePoint>, SssError> {
    hexes
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let bytes = hex::decode(h)
                .map_err(|_| SssError::MalformedSet(format!("commitment {i} is not hex")))?;
            let mut repr = <ProjectivePoint as GroupEncoding>::Repr::default();
            if bytes.len() != repr.len() {
                return Err(SssError::MalformedSet(format!(
                    "commitment {i} has the wrong length"
                )));
            }
            repr.copy_from_slice(&bytes);
            Option::<ProjectivePoint>::from(ProjectivePoint::from_bytes(&repr)).ok_or_else(|| {
                SssError::MalformedSet(format!("commitment {i} is not a curve point"))
            })
        })
        .collect()
}

fn scalar(value: &ShareValue) -> Result<Scalar, SssError> {
    let bytes: [u8; 32] = value
        .as_bytes()
        .try_into()
        .map_err(|_| SssError::MalformedValue)?;
    Option::<Scalar>::from(Scalar::from_repr(bytes.into())).ok_or(SssError::MalformedValue)
}

fn vshare(index: u8, value: &ShareValue) -> Result<VShare, SssError> {
    Ok(DefaultShare {
        identifier: IdentifierPrimeField(Scalar::from(u64::from(index))),
        value: IdentifierPrimeField(scalar(value)?),
    })
}

pub(super) fn verify(
    commitments: &[ProjectivePoint],
    index: u8,
    value: &ShareValue,
) -> Result<(), SssError> {
    let share = vshare(index, value).map_err(|_| SssError::CommitmentMismatch { index })?;
    let verifiers: Vec<Verifier> = commitments.iter().map(|c| ValueGroup(*c)).collect();
    let set = <Vec<Verifier> as FeldmanVerifierSet<VShare, Verifier>>::feldman_set_with_generator_and_verifiers(
        ValueGroup(ProjectivePoint::GENERATOR),
        &verifiers,
    );
    set.verify_share(&share)
        .map_err(|_| SssError::CommitmentMismatch { index })
}

/// Lagrange interpolation at zero of already verified, distinct shares.
pub(super) fn combine(shares: &[super::Share]) -> Result<Kek, SssError> {
    let mut vshares = shares
        .iter()
        .map(|s| vshare(s.index, &s.value))
        .collect::<Result<Vec<_>, _>>()?;
    let combined = vshares.combine().map_err(internal);
    for s in vshares.iter_mut() {
        s.value.0.zeroize();
    }
    let mut secret = combined?;
    let kek = Zeroizing::new(secret.0.to_repr().into());
    secret.0.zeroize();
    Ok(kek)
}

/// g^value, compressed: the public image of a share, which the commitments also yield.
pub(super) fn public_point(value: &ShareValue) -> Result<Vec<u8>, SssError> {
    let mut s = scalar(value)?;
    let point = ProjectivePoint::GENERATOR * s;
    s.zeroize();
    Ok(point.to_bytes().to_vec())
}

/// The public image g^f(index) of share `index`, from the commitments alone:
/// Σ C_j · index^j.
fn expected_point(commitments: &[ProjectivePoint], index: u8) -> ProjectivePoint {
    let x = Scalar::from(u64::from(index));
    let mut power = Scalar::ONE;
    let mut sum = ProjectivePoint::IDENTITY;
    for c in commitments {
        sum += *c * power;
        power *= x;
    }
    sum
}

/// An ECDSA P-256 signature (DER) over `msg` with the share value as the private key. Its
/// public key g^value is public already (the commitments yield it), and ECDSA reveals no
/// more about the key than that.
pub(super) fn sign_with_share(value: &ShareValue, msg: &[u8]) -> Result<Vec<u8>, SssError> {
    use p256::ecdsa::signature::Signer;
    let key = p256::ecdsa::SigningKey::from_slice(value.as_bytes())
        .map_err(|_| SssError::MalformedValue)?;
    let sig: p256::ecdsa::Signature = key.sign(msg);
    Ok(sig.to_der().as_bytes().to_vec())
}

/// Checks a [`sign_with_share`] signature of share `index` against the commitments.
pub(super) fn verify_share_signature(
    commitments: &[ProjectivePoint],
    index: u8,
    msg: &[u8],
    signature: &[u8],
) -> bool {
    use p256::ecdsa::signature::Verifier;
    let point = expected_point(commitments, index);
    let Ok(key) = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point.to_bytes()) else {
        return false;
    };
    let Ok(sig) = p256::ecdsa::Signature::from_der(signature) else {
        return false;
    };
    key.verify(msg, &sig).is_ok()
}
