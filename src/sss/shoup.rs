//! Shoup's threshold RSA (*Practical Threshold Signatures*, Eurocrypt 2000, protocol 1,
//! trusted dealer): the CA's private exponent is dealt as shares over Z_{p'q'}, each holder
//! turns its share into a signature share with a proof of correctness, and any M of them
//! combine into an ordinary RSA PKCS#1 v1.5 SHA-256 signature. The whole exponent never
//! exists after the ceremony.
//!
//! Pure arithmetic, no I/O. Everything that touches a secret exponent (d, the polynomial,
//! the shares s_i, the proof's randomness r) goes through crypto-bigint's constant-time
//! fixed-precision operations; only public values (n, v, Lagrange coefficients, z, c) use
//! exponents whose length may show in the timing. Safe-prime generation and its primality
//! tests (crypto-primes) are variable-time on the candidate primes: acceptable because the
//! ceremony runs once, offline, on the laptop.
//!
//! Signature shares are malleable in one harmless way: the proof covers x_i², so (n − x_i,
//! c, z) verifies too. Combination raises every x_i to an even power, so the signature is
//! the same, and the token-signed envelope pins the exact bytes a holder sent.

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{
    BoxedUint, ConcatenatingMul, Gcd, Integer, NonZero, Odd, RandomBits, RandomMod, Resize,
};
use crypto_primes::hazmat::{SetBits, SmallFactorsSieveFactory};
use crypto_primes::{Flavor, is_prime, sieve_and_find};
use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The public exponent of every threshold CA key.
pub const PUBLIC_EXPONENT: u32 = 65537;
/// The modulus sizes a threshold key may have.
pub const MODULUS_BITS: [usize; 3] = [2048, 3072, 4096];
/// Fewest shares a signature needs (one share would be the key itself).
pub const MIN_THRESHOLD: u8 = 2;
/// Most shares a key may be dealt to: Δ = N! and the integer Lagrange coefficients stay
/// within 128 bits up to 20.
pub const MAX_SHARES: u8 = 20;
/// What the proof's Fiat–Shamir hash starts with.
const PROOF_DOMAIN: &[u8] = b"nkpki shoup rsa proof v1\n";
/// Bit length of the proof's challenge c (SHA-256): Shoup's L1.
const CHALLENGE_BITS: u32 = 256;
/// DER prefix of a PKCS#1 v1.5 DigestInfo for SHA-256 (RFC 8017, 9.2 note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Errors of dealing, signing with, checking and combining threshold RSA shares.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThresholdError {
    #[error(
        "threshold {threshold} of {total} shares is invalid for threshold RSA (need 2 <= threshold <= shares <= {MAX_SHARES})"
    )]
    BadParameters { threshold: u8, total: u8 },
    #[error("threshold RSA supports 2048, 3072 and 4096-bit moduli, not {0} bits")]
    UnsupportedSize(usize),
    #[error("safe-prime generation was interrupted")]
    Cancelled,
    #[error("the safe primes are unusable: {0}")]
    BadPrimes(String),
    #[error("the threshold public key is malformed: {0}")]
    MalformedKey(String),
    #[error("the key share is malformed: {0}")]
    MalformedShare(String),
    #[error("the signature share from holder {index} is malformed: {reason}")]
    MalformedSignatureShare { index: u8, reason: String },
    #[error("share index {index} is out of range for a key of {total} shares")]
    IndexOutOfRange { index: u8, total: u8 },
    #[error(
        "key share {index} does not match its verification key: it belongs to another CA or is corrupt"
    )]
    ShareMismatch { index: u8 },
    #[error(
        "the signature share from holder {index} fails its proof: it is forged, corrupt, or made for another message"
    )]
    BadProof { index: u8 },
    #[error("two signature shares from holder {index} were given")]
    DuplicateShare { index: u8 },
    #[error("{got} signature share(s) given, {needed} needed")]
    NotEnoughShares { got: usize, needed: u8 },
    #[error("the combined signature does not verify against the public key")]
    CombineFailed,
}

type Result<T> = std::result::Result<T, ThresholdError>;

// ---------------------------------------------------------------------------------------
// Safe primes
// ---------------------------------------------------------------------------------------

/// Two safe primes p = 2p'+1 and q = 2q'+1 of half the modulus size each. Wiped on drop.
pub struct SafePrimes {
    p: BoxedUint,
    q: BoxedUint,
}

impl Drop for SafePrimes {
    fn drop(&mut self) {
        self.p.zeroize();
        self.q.zeroize();
    }
}

impl ZeroizeOnDrop for SafePrimes {}

impl fmt::Debug for SafePrimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SafePrimes(<redacted>)")
    }
}

impl SafePrimes {
    /// Takes two primes given as big-endian bytes and checks that both are safe primes,
    /// distinct, and that their product has `2 × bits(p)` bits of a supported size.
    pub fn from_be_bytes(p: &[u8], q: &[u8]) -> Result<SafePrimes> {
        let p = BoxedUint::from_be_slice_vartime(p);
        let q = BoxedUint::from_be_slice_vartime(q);
        let primes = SafePrimes { p, q };
        primes.check()?;
        Ok(primes)
    }

    /// Reads primes written as text: a line `p HEX` and a line `q HEX` (`#` comments and
    /// blank lines ignored) — the form of the checked-in test fixtures.
    pub fn from_text(text: &str) -> Result<SafePrimes> {
        let mut p = None;
        let mut q = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once(' ')
                .ok_or_else(|| ThresholdError::BadPrimes("expected `p HEX` and `q HEX`".into()))?;
            let value = Zeroizing::new(
                hex::decode(value.trim())
                    .map_err(|_| ThresholdError::BadPrimes(format!("{name} is not hex")))?,
            );
            match name {
                "p" => p = Some(value),
                "q" => q = Some(value),
                _ => {
                    return Err(ThresholdError::BadPrimes(
                        "expected `p HEX` and `q HEX`".into(),
                    ));
                }
            }
        }
        match (p, q) {
            (Some(p), Some(q)) => SafePrimes::from_be_bytes(&p, &q),
            _ => Err(ThresholdError::BadPrimes("p or q is missing".into())),
        }
    }

    /// The ordinary RSA private key over these primes (e = 65537): what the dealer uses
    /// to self-sign the CA certificate and the manifest before dealing and wiping.
    pub fn to_rsa_private_key(&self) -> Result<rsa::PrivateKey> {
        rsa::PrivateKey::from_p_q(
            self.p.clone(),
            self.q.clone(),
            BoxedUint::from(PUBLIC_EXPONENT),
        )
        .map_err(|e| ThresholdError::BadPrimes(e.to_string()))
    }

    /// The modulus size these primes make.
    pub fn modulus_bits(&self) -> usize {
        self.modulus().bit_width_vartime() as usize
    }

    fn modulus(&self) -> BoxedUint {
        self.p.concatenating_mul(&self.q)
    }

    fn check(&self) -> Result<()> {
        let bits = self.modulus_bits();
        if !MODULUS_BITS.contains(&bits)
            || self.p.bit_width_vartime() as usize != bits / 2
            || self.q.bit_width_vartime() as usize != bits / 2
        {
            return Err(ThresholdError::BadPrimes(format!(
                "two primes of half a supported modulus size are needed, the product has {bits} bits"
            )));
        }
        if self.p == self.q {
            return Err(ThresholdError::BadPrimes("p and q are equal".into()));
        }
        for prime in [&self.p, &self.q] {
            if !is_prime(Flavor::Safe, prime) {
                return Err(ThresholdError::BadPrimes("not a safe prime".into()));
            }
            if half_of(prime) == BoxedUint::from(PUBLIC_EXPONENT) {
                return Err(ThresholdError::BadPrimes(
                    "p' or q' equals the public exponent".into(),
                ));
            }
        }
        Ok(())
    }
}

/// How far safe-prime generation has come: which of the two primes is being searched
/// (1 or 2) and how many candidates have been tested for it so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrimeProgress {
    pub prime: u8,
    pub candidates: u64,
}

/// Generates two safe primes for a `modulus_bits` modulus with crypto-primes (sieve, then
/// Miller–Rabin and strong Lucas on both p and (p−1)/2). `progress` is called after every
/// tested candidate; setting `cancel` stops the search with [`ThresholdError::Cancelled`].
pub fn generate_safe_primes(
    modulus_bits: usize,
    progress: &mut dyn FnMut(PrimeProgress),
    cancel: &AtomicBool,
) -> Result<SafePrimes> {
    if !MODULUS_BITS.contains(&modulus_bits) {
        return Err(ThresholdError::UnsupportedSize(modulus_bits));
    }
    let half = (modulus_bits / 2) as u32;
    let mut rng = rand::rng();
    let mut primes = Vec::with_capacity(2);
    while primes.len() < 2 {
        let prime_no = primes.len() as u8 + 1;
        let factory =
            SmallFactorsSieveFactory::<BoxedUint>::new(Flavor::Safe, half, SetBits::TwoMsb)
                .map_err(|e| ThresholdError::BadPrimes(e.to_string()))?;
        // the predicate is a `Fn`: count and report through cells
        let candidates = std::cell::Cell::new(0u64);
        let report = std::cell::RefCell::new(&mut *progress);
        let found = sieve_and_find(&mut rng, factory, |_rng, candidate: &BoxedUint| {
            if cancel.load(Ordering::Relaxed) {
                return true;
            }
            candidates.set(candidates.get() + 1);
            if let Ok(mut report) = report.try_borrow_mut() {
                report(PrimeProgress {
                    prime: prime_no,
                    candidates: candidates.get(),
                });
            }
            is_prime(Flavor::Safe, candidate)
        })
        .map_err(|e| ThresholdError::BadPrimes(e.to_string()))?;
        if cancel.load(Ordering::Relaxed) {
            return Err(ThresholdError::Cancelled);
        }
        let Some(prime) = found else {
            return Err(ThresholdError::BadPrimes("the sieve ran dry".into()));
        };
        let twin = primes.first().is_some_and(|p: &BoxedUint| *p == prime);
        let exponent = half_of(&prime) == BoxedUint::from(PUBLIC_EXPONENT);
        if !twin && !exponent {
            primes.push(prime);
        }
    }
    let q = primes.pop().unwrap_or_default();
    let p = primes.pop().unwrap_or_default();
    let primes = SafePrimes { p, q };
    primes.check()?;
    Ok(primes)
}

// ---------------------------------------------------------------------------------------
// Keys and shares
// ---------------------------------------------------------------------------------------

/// The public side of a threshold RSA key: modulus, exponent, the verification base v and
/// one verification key v_i = v^{s_i} per share (share i is at position i − 1). It goes in
/// the manifest; anyone can check a signature share against it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawKey", into = "RawKey")]
pub struct ThresholdKey {
    pub n: BoxedUint,
    pub e: u32,
    pub v: BoxedUint,
    pub verification_keys: Vec<BoxedUint>,
    pub threshold: u8,
    pub total: u8,
}

/// The serialized form: big-endian hex, every number as long as the modulus.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    n: String,
    e: u32,
    v: String,
    verification_keys: Vec<String>,
    threshold: u8,
    total: u8,
}

impl From<ThresholdKey> for RawKey {
    fn from(key: ThresholdKey) -> RawKey {
        let len = key.modulus_len();
        RawKey {
            n: hex::encode(to_be_fixed(&key.n, len)),
            e: key.e,
            v: hex::encode(to_be_fixed(&key.v, len)),
            verification_keys: key
                .verification_keys
                .iter()
                .map(|vi| hex::encode(to_be_fixed(vi, len)))
                .collect(),
            threshold: key.threshold,
            total: key.total,
        }
    }
}

impl TryFrom<RawKey> for ThresholdKey {
    type Error = ThresholdError;

    fn try_from(raw: RawKey) -> Result<ThresholdKey> {
        let number = |name: &str, text: &str| -> Result<BoxedUint> {
            let bytes = hex::decode(text)
                .map_err(|_| ThresholdError::MalformedKey(format!("{name} is not hex")))?;
            if bytes.is_empty() || bytes.len() > 512 {
                return Err(ThresholdError::MalformedKey(format!(
                    "{name} has {} bytes",
                    bytes.len()
                )));
            }
            Ok(BoxedUint::from_be_slice_vartime(&bytes))
        };
        let n = number("n", &raw.n)?;
        let precision = n.bit_width_vartime().max(64);
        let fit = |name: &str, x: BoxedUint| -> Result<BoxedUint> {
            x.try_resize(precision)
                .ok_or_else(|| ThresholdError::MalformedKey(format!("{name} is longer than n")))
        };
        let n = fit("n", n)?;
        let v = fit("v", number("v", &raw.v)?)?;
        let verification_keys = raw
            .verification_keys
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let name = format!("v_{}", i + 1);
                fit(&name, number(&name, text)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let key = ThresholdKey {
            n,
            e: raw.e,
            v,
            verification_keys,
            threshold: raw.threshold,
            total: raw.total,
        };
        key.check()?;
        Ok(key)
    }
}

impl fmt::Debug for ThresholdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThresholdKey")
            .field("bits", &self.modulus_bits())
            .field("e", &self.e)
            .field("threshold", &self.threshold)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl ThresholdKey {
    /// Bit length of n.
    pub fn modulus_bits(&self) -> usize {
        self.n.bit_width_vartime() as usize
    }

    /// Byte length of n, which is the length of every signature.
    pub fn modulus_len(&self) -> usize {
        self.modulus_bits().div_ceil(8)
    }

    /// n as big-endian bytes (no leading zero).
    pub fn modulus_bytes(&self) -> Vec<u8> {
        to_be_fixed(&self.n, self.modulus_len())
    }

    /// The ordinary RSA public key (n, e): what the CA certificate carries.
    pub fn rsa_public_key(&self) -> Result<rsa::PublicKey> {
        rsa::PublicKey::new(self.n.clone(), BoxedUint::from(self.e))
            .map_err(|e| ThresholdError::MalformedKey(e.to_string()))
    }

    /// Checks what can be checked in public: a supported modulus size, odd n, e = 65537,
    /// sane threshold and share count, one verification key per share, v and every v_i
    /// units of Z_n other than 1.
    pub fn check(&self) -> Result<()> {
        let bits = self.modulus_bits();
        if !MODULUS_BITS.contains(&bits) {
            return Err(ThresholdError::MalformedKey(format!(
                "the modulus has {bits} bits (2048, 3072 or 4096 expected)"
            )));
        }
        if !bool::from(self.n.is_odd()) {
            return Err(ThresholdError::MalformedKey("the modulus is even".into()));
        }
        if self.e != PUBLIC_EXPONENT {
            return Err(ThresholdError::MalformedKey(format!(
                "public exponent {} (65537 expected)",
                self.e
            )));
        }
        check_parameters(self.threshold, self.total)?;
        if self.verification_keys.len() != self.total as usize {
            return Err(ThresholdError::MalformedKey(format!(
                "{} verification keys for {} shares",
                self.verification_keys.len(),
                self.total
            )));
        }
        let one = BoxedUint::one_with_precision(self.n.bits_precision());
        let unit = |x: &BoxedUint| {
            x.bits_precision() == self.n.bits_precision()
                && *x > one
                && *x < self.n
                && x.gcd_vartime(&self.n) == one
        };
        if !unit(&self.v) {
            return Err(ThresholdError::MalformedKey(
                "v is out of range or not a unit mod n".into(),
            ));
        }
        for (i, vi) in self.verification_keys.iter().enumerate() {
            if !unit(vi) {
                return Err(ThresholdError::MalformedKey(format!(
                    "verification key v_{} is out of range or not a unit mod n",
                    i + 1
                )));
            }
        }
        Ok(())
    }

    fn params(&self) -> Result<BoxedMontyParams> {
        let odd = Odd::new(self.n.clone())
            .into_option()
            .ok_or_else(|| ThresholdError::MalformedKey("the modulus is even".into()))?;
        Ok(BoxedMontyParams::new_vartime(odd))
    }

    fn verification_key(&self, index: u8) -> Result<&BoxedUint> {
        if index == 0 {
            return Err(ThresholdError::IndexOutOfRange {
                index,
                total: self.total,
            });
        }
        self.verification_keys
            .get(index as usize - 1)
            .ok_or(ThresholdError::IndexOutOfRange {
                index,
                total: self.total,
            })
    }

    /// Δ = N! for N = total shares.
    fn delta(&self) -> u64 {
        (1..=u64::from(self.total)).product()
    }
}

/// One holder's share s_i = f(i) of the private exponent. Wiped on drop, never printed.
pub struct KeyShare {
    pub index: u8,
    s: BoxedUint,
}

impl Drop for KeyShare {
    fn drop(&mut self) {
        self.s.zeroize();
    }
}

impl ZeroizeOnDrop for KeyShare {}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyShare")
            .field("index", &self.index)
            .field("s", &"<redacted>")
            .finish()
    }
}

impl KeyShare {
    /// The share as bytes: the index, then s_i big-endian (as long as the modulus).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let s = Zeroizing::new(self.s.to_be_bytes());
        let mut out = Zeroizing::new(Vec::with_capacity(1 + s.len()));
        out.push(self.index);
        out.extend_from_slice(&s);
        out
    }

    /// Reads [`KeyShare::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyShare> {
        let (&index, s) = bytes
            .split_first()
            .ok_or_else(|| ThresholdError::MalformedShare("empty".into()))?;
        if index == 0 || index > MAX_SHARES {
            return Err(ThresholdError::MalformedShare(format!(
                "index {index} is out of range"
            )));
        }
        if s.len() < 64 || s.len() > 512 || s.len() % 8 != 0 {
            return Err(ThresholdError::MalformedShare(format!(
                "a share value of {} bytes",
                s.len()
            )));
        }
        let s = BoxedUint::from_be_slice(s, 8 * s.len() as u32)
            .map_err(|_| ThresholdError::MalformedShare("bad value".into()))?;
        Ok(KeyShare { index, s })
    }

    /// s_i at the precision of `key`'s modulus, refusing a value that cannot be a share
    /// of it.
    fn exponent_for(&self, key: &ThresholdKey) -> Result<Zeroizing<BoxedUint>> {
        if self.index == 0 || self.index > key.total {
            return Err(ThresholdError::IndexOutOfRange {
                index: self.index,
                total: key.total,
            });
        }
        let s = Zeroizing::new(
            // resized from a borrow: a fresh zeroed buffer, so no unwiped copy of s_i is
            // left behind by a reallocation
            (&self.s)
                .try_resize(key.n.bits_precision())
                .ok_or(ThresholdError::ShareMismatch { index: self.index })?,
        );
        if *s >= key.n {
            return Err(ThresholdError::ShareMismatch { index: self.index });
        }
        Ok(s)
    }
}

fn check_parameters(threshold: u8, total: u8) -> Result<()> {
    if threshold < MIN_THRESHOLD || threshold > total || total > MAX_SHARES {
        return Err(ThresholdError::BadParameters { threshold, total });
    }
    Ok(())
}

/// The dealer (the ceremony): from two safe primes, makes the public key and `total`
/// shares of d = e⁻¹ mod p'q' on a random polynomial of degree `threshold − 1` over
/// Z_{p'q'}. The primes, p'q', d and the polynomial are wiped before returning.
pub fn deal(
    primes: SafePrimes,
    threshold: u8,
    total: u8,
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<(ThresholdKey, Vec<KeyShare>)> {
    check_parameters(threshold, total)?;
    primes.check()?;
    let n = primes.modulus();
    let precision = n.bit_width_vartime();
    let n = n
        .try_resize(precision)
        .ok_or_else(|| ThresholdError::BadPrimes("modulus size".into()))?;
    let p_half = Zeroizing::new(half_of(&primes.p));
    let q_half = Zeroizing::new(half_of(&primes.q));
    drop(primes);
    let m = Zeroizing::new(
        p_half
            .concatenating_mul(&*q_half)
            .try_resize(precision)
            .ok_or_else(|| ThresholdError::BadPrimes("p'q' size".into()))?,
    );
    let m_odd = Odd::new(BoxedUint::clone(&m))
        .into_option()
        .ok_or_else(|| ThresholdError::BadPrimes("p'q' is even".into()))?;
    let m_nz = NonZero::new(BoxedUint::clone(&m))
        .into_option()
        .ok_or_else(|| ThresholdError::BadPrimes("p'q' is zero".into()))?;
    let e = BoxedUint::from(PUBLIC_EXPONENT).resize_unchecked(precision);
    let d = Zeroizing::new(
        e.invert_odd_mod(&m_odd)
            .into_option()
            .ok_or_else(|| ThresholdError::BadPrimes("e is not invertible mod p'q'".into()))?,
    );
    let mut coefficients: Vec<Zeroizing<BoxedUint>> = vec![d];
    for _ in 1..threshold {
        coefficients.push(Zeroizing::new(BoxedUint::random_mod_vartime(rng, &m_nz)));
    }
    let shares: Vec<KeyShare> = (1..=total)
        .map(|i| {
            let x = BoxedUint::from(u64::from(i)).resize_unchecked(precision);
            let mut acc = Zeroizing::new(BoxedUint::zero_with_precision(precision));
            for a in coefficients.iter().rev() {
                let product = Zeroizing::new(acc.mul_mod(&x, &m_nz));
                let next = product.add_mod(a, &m_nz);
                acc.zeroize();
                *acc = next;
            }
            KeyShare {
                index: i,
                s: BoxedUint::clone(&acc),
            }
        })
        .collect();
    drop(coefficients);
    let (mut m_odd, mut m_nz) = (m_odd, m_nz);
    m_odd.zeroize();
    m_nz.zeroize();

    let key_params = BoxedMontyParams::new_vartime(
        Odd::new(n.clone())
            .into_option()
            .ok_or_else(|| ThresholdError::BadPrimes("n is even".into()))?,
    );
    let n_nz = NonZero::new(n.clone())
        .into_option()
        .ok_or_else(|| ThresholdError::BadPrimes("n is zero".into()))?;
    let one = BoxedUint::one_with_precision(precision);
    let v = loop {
        let r = BoxedUint::random_mod_vartime(rng, &n_nz);
        let v = BoxedMontyForm::new(r, &key_params).square().retrieve();
        if v > one && v.gcd_vartime(&n) == one {
            break v;
        }
    };
    let v_monty = BoxedMontyForm::new(v.clone(), &key_params);
    let verification_keys = shares
        .iter()
        .map(|share| v_monty.pow(&share.s).retrieve())
        .collect();
    let key = ThresholdKey {
        n,
        e: PUBLIC_EXPONENT,
        v,
        verification_keys,
        threshold,
        total,
    };
    key.check()?;
    Ok((key, shares))
}

/// Rebuilds the safe primes of `key` from `threshold` of its (checked) key shares, for a
/// reshare's re-deal: x = Σ λ_j s_j ≡ Δ·d (mod p'q'), so e·x − Δ is a multiple of p'q' and
/// 4(e·x − Δ) one of φ(n), which factors n (Miller). Every intermediate is wiped.
pub fn recover_primes(key: &ThresholdKey, shares: &[KeyShare]) -> Result<SafePrimes> {
    key.check()?;
    let mut used: Vec<u8> = Vec::with_capacity(shares.len());
    for share in shares {
        if used.contains(&share.index) {
            return Err(ThresholdError::DuplicateShare { index: share.index });
        }
        check_key_share(key, share)?;
        used.push(share.index);
    }
    if shares.len() < key.threshold as usize {
        return Err(ThresholdError::NotEnoughShares {
            got: shares.len(),
            needed: key.threshold,
        });
    }
    let threshold = key.threshold as usize;
    let used = &used[..threshold];
    let delta = key.delta();
    let precision = key.n.bits_precision() + 256;
    let widen = |x: &BoxedUint| -> Result<Zeroizing<BoxedUint>> {
        x.try_resize(precision)
            .map(Zeroizing::new)
            .ok_or(ThresholdError::CombineFailed)
    };
    let mut positive = Zeroizing::new(BoxedUint::zero_with_precision(precision));
    let mut negative = Zeroizing::new(BoxedUint::zero_with_precision(precision));
    for (position, share) in shares.iter().take(threshold).enumerate() {
        let lambda = lagrange_at_zero(used, position, delta)?;
        let magnitude = BoxedUint::from(lambda.unsigned_abs()).resize_unchecked(precision);
        let term = Zeroizing::new(widen(&share.s)?.wrapping_mul(&magnitude));
        let sum = if lambda >= 0 {
            &mut positive
        } else {
            &mut negative
        };
        let next = sum.wrapping_add(&term);
        sum.zeroize();
        **sum = next;
    }
    let e = BoxedUint::from(u64::from(key.e)).resize_unchecked(precision);
    let delta = BoxedUint::from(delta).resize_unchecked(precision);
    let a = Zeroizing::new(positive.wrapping_mul(&e));
    let b = Zeroizing::new(negative.wrapping_mul(&e).wrapping_add(&delta));
    let k = Zeroizing::new(if *a >= *b {
        a.wrapping_sub(&b)
    } else {
        b.wrapping_sub(&a)
    });
    if bool::from(k.is_zero()) {
        return Err(ThresholdError::CombineFailed);
    }
    let zeros = k.trailing_zeros_vartime();
    let r = Zeroizing::new(k.wrapping_shr_vartime(zeros));
    let squarings = zeros + 2;
    let params = key.params()?;
    let n_bits = key.n.bits_precision();
    let one = BoxedMontyForm::one(&params);
    let minus_one = one.neg();
    let one_n = BoxedUint::one_with_precision(n_bits);
    for g in 2u64..200 {
        let base = BoxedMontyForm::new(BoxedUint::from(g).resize_unchecked(n_bits), &params);
        let mut y = pow_public(&base, &r);
        if y == one || y == minus_one {
            continue;
        }
        for _ in 0..squarings {
            let z = y.square();
            if z == one {
                // y is a non-trivial square root of 1: y − 1 shares a prime with n
                let root = Zeroizing::new(y.retrieve());
                let factor = Zeroizing::new(root.wrapping_sub(&one_n).gcd_vartime(&key.n));
                if *factor == one_n || *factor == key.n {
                    break;
                }
                let divisor = NonZero::new((*factor).clone())
                    .into_option()
                    .ok_or(ThresholdError::CombineFailed)?;
                let (other, _) = key.n.div_rem(&divisor);
                let other = Zeroizing::new(other);
                let p_bytes = Zeroizing::new(factor.to_be_bytes());
                let q_bytes = Zeroizing::new(other.to_be_bytes());
                let p = Zeroizing::new(trim_leading_zeros(&p_bytes));
                let q = Zeroizing::new(trim_leading_zeros(&q_bytes));
                drop(Zeroizing::new(divisor.get()));
                return SafePrimes::from_be_bytes(&p, &q);
            }
            if z == minus_one {
                break;
            }
            y = z;
        }
    }
    Err(ThresholdError::CombineFailed)
}

/// Checks that `share` is the share its index names for `key`: v^{s_i} = v_i. Reveals
/// nothing about s_i beyond yes or no.
pub fn check_key_share(key: &ThresholdKey, share: &KeyShare) -> Result<()> {
    key.check()?;
    let s = share.exponent_for(key)?;
    let expected = key.verification_key(share.index)?;
    let params = key.params()?;
    let got = BoxedMontyForm::new(key.v.clone(), &params)
        .pow(&s)
        .retrieve();
    if got == *expected {
        Ok(())
    } else {
        Err(ThresholdError::ShareMismatch { index: share.index })
    }
}

// ---------------------------------------------------------------------------------------
// Signature shares
// ---------------------------------------------------------------------------------------

/// One holder's contribution to one signature: x_i = x^{2Δs_i} and the proof (c, z) that
/// it was made with the share behind v_i. Public: it signs nothing else.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureShare {
    pub index: u8,
    #[serde(with = "hex_bytes")]
    pub x_i: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub c: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub z: Vec<u8>,
}

impl fmt::Debug for SignatureShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureShare")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// The message as Shoup's x: the PKCS#1 v1.5 (EMSA-PKCS1-v1_5) encoding of its SHA-256
/// digest, as a number below n.
fn encode_message(key: &ThresholdKey, message: &[u8]) -> Result<BoxedUint> {
    let k = key.modulus_len();
    let digest = Sha256::digest(message);
    let t_len = SHA256_DIGEST_INFO.len() + digest.len();
    let mut em = vec![0xffu8; k];
    em[0] = 0;
    em[1] = 1;
    em[k - t_len - 1] = 0;
    em[k - t_len..k - digest.len()].copy_from_slice(&SHA256_DIGEST_INFO);
    em[k - digest.len()..].copy_from_slice(&digest);
    BoxedUint::from_be_slice(&em, key.n.bits_precision())
        .map_err(|_| ThresholdError::MalformedKey("modulus size".into()))
}

/// Public exponentiation: the exponent's length may show, its value is public anyway.
fn pow_public(base: &BoxedMontyForm, exponent: &BoxedUint) -> BoxedMontyForm {
    base.pow_bounded_exp(exponent, exponent.bit_width_vartime().max(1))
}

/// base^exponent for a signed public exponent (negative ones through the inverse).
fn pow_signed(base: &BoxedMontyForm, exponent: i128) -> Result<BoxedMontyForm> {
    let magnitude = BoxedUint::from(exponent.unsigned_abs());
    if exponent >= 0 {
        Ok(pow_public(base, &magnitude))
    } else {
        let inverse = base
            .invert_vartime()
            .into_option()
            .ok_or(ThresholdError::CombineFailed)?;
        Ok(pow_public(&inverse, &magnitude))
    }
}

/// Everything the proof's challenge commits to, in a fixed layout.
struct Transcript<'a> {
    key: &'a ThresholdKey,
    message: &'a [u8],
    context: &'a [u8],
    index: u8,
    x_tilde: &'a BoxedUint,
    x_i_squared: &'a BoxedUint,
    v_commit: &'a BoxedUint,
    x_commit: &'a BoxedUint,
}

impl Transcript<'_> {
    fn challenge(&self) -> [u8; 32] {
        let len = self.key.modulus_len();
        let mut h = Sha256::new();
        h.update(PROOF_DOMAIN);
        h.update((self.context.len() as u64).to_be_bytes());
        h.update(self.context);
        h.update(Sha256::digest(self.message));
        h.update([self.index, self.key.threshold, self.key.total]);
        let vi = self
            .key
            .verification_keys
            .get(usize::from(self.index).wrapping_sub(1))
            .cloned()
            .unwrap_or_default();
        for number in [
            &self.key.n,
            &self.key.v,
            self.x_tilde,
            &vi,
            self.x_i_squared,
            self.v_commit,
            self.x_commit,
        ] {
            h.update(to_be_fixed(number, len));
        }
        h.finalize().into()
    }
}

/// Bits of precision for the proof's r and z: |n| + 2·L1 bits for r, and room for
/// s_i·c + r above it, rounded to whole limbs.
fn proof_precision(key: &ThresholdKey) -> u32 {
    key.n.bits_precision() + 2 * CHALLENGE_BITS + 64
}

/// Holder i's signature share on `message` (the exact bytes the CA signs, e.g. a
/// TBSCertificate), with a proof bound to `context` (e.g. CA id and session id).
pub fn sign_share(
    key: &ThresholdKey,
    share: &KeyShare,
    message: &[u8],
    context: &[u8],
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<SignatureShare> {
    key.check()?;
    let s = share.exponent_for(key)?;
    let params = key.params()?;
    let delta = u128::from(key.delta());
    let x = BoxedMontyForm::new(encode_message(key, message)?, &params);
    let x_2delta = pow_public(&x, &BoxedUint::from(2 * delta));
    let x_tilde = pow_public(&x, &BoxedUint::from(4 * delta));
    let x_i = x_2delta.pow(&s);
    let x_i_squared = x_i.square().retrieve();

    let precision = proof_precision(key);
    let r_bits = key.n.bits_precision() + 2 * CHALLENGE_BITS;
    let r = Zeroizing::new(
        BoxedUint::try_random_bits_with_precision(rng, r_bits, precision)
            .map_err(|_| ThresholdError::MalformedKey("random generation failed".into()))?,
    );
    let v = BoxedMontyForm::new(key.v.clone(), &params);
    let v_commit = v.pow(&r).retrieve();
    let x_commit = x_tilde.pow(&r).retrieve();
    let c = Transcript {
        key,
        message,
        context,
        index: share.index,
        x_tilde: &x_tilde.retrieve(),
        x_i_squared: &x_i_squared,
        v_commit: &v_commit,
        x_commit: &x_commit,
    }
    .challenge();
    let c_number = BoxedUint::from_be_slice(&c, precision)
        .map_err(|_| ThresholdError::MalformedKey("challenge size".into()))?;
    let s_wide = Zeroizing::new((&*s).resize_unchecked(precision));
    let sc = Zeroizing::new(s_wide.wrapping_mul(&c_number));
    let z = sc.wrapping_add(&*r);
    Ok(SignatureShare {
        index: share.index,
        x_i: to_be_fixed(&x_i.retrieve(), key.modulus_len()),
        c: c.to_vec(),
        z: trim_leading_zeros(&z.to_be_bytes()),
    })
}

/// Checks a signature share's proof against holder `share.index`'s verification key, for
/// exactly this `message` and `context`.
pub fn verify_share(
    key: &ThresholdKey,
    message: &[u8],
    context: &[u8],
    share: &SignatureShare,
) -> Result<()> {
    key.check()?;
    verify_checked(key, &key.params()?, message, context, share).map(|_| ())
}

/// [`verify_share`] for a key already checked; returns x_i as a number mod n.
fn verify_checked(
    key: &ThresholdKey,
    params: &BoxedMontyParams,
    message: &[u8],
    context: &[u8],
    share: &SignatureShare,
) -> Result<BoxedMontyForm> {
    let index = share.index;
    let vi = key.verification_key(index)?;
    let malformed = |reason: &str| ThresholdError::MalformedSignatureShare {
        index,
        reason: reason.to_owned(),
    };
    if share.x_i.len() != key.modulus_len() {
        return Err(malformed("x_i is not as long as the modulus"));
    }
    if share.c.len() != 32 {
        return Err(malformed("the challenge is not 32 bytes"));
    }
    let precision = proof_precision(key);
    if share.z.is_empty() || share.z.len() * 8 > precision as usize {
        return Err(malformed("the response z is out of range"));
    }
    let x_i = BoxedUint::from_be_slice(&share.x_i, key.n.bits_precision())
        .map_err(|_| malformed("x_i is out of range"))?;
    let one = BoxedUint::one_with_precision(key.n.bits_precision());
    if x_i < one || x_i >= key.n || x_i.gcd_vartime(&key.n) != one {
        return Err(malformed("x_i is not a unit mod n"));
    }
    let z = BoxedUint::from_be_slice(&share.z, precision)
        .map_err(|_| malformed("the response z is out of range"))?;
    let c = BoxedUint::from_be_slice(&share.c, CHALLENGE_BITS)
        .map_err(|_| malformed("the challenge is out of range"))?;

    let delta = u128::from(key.delta());
    let x = BoxedMontyForm::new(encode_message(key, message)?, params);
    let x_tilde = pow_public(&x, &BoxedUint::from(4 * delta));
    let x_i_monty = BoxedMontyForm::new(x_i, params);
    let x_i_squared = x_i_monty.square();
    let v = BoxedMontyForm::new(key.v.clone(), params);
    let vi = BoxedMontyForm::new(vi.clone(), params);
    let inverse = |m: &BoxedMontyForm| {
        m.invert_vartime()
            .into_option()
            .ok_or(ThresholdError::BadProof { index })
    };
    let v_commit = pow_public(&v, &z).mul(&pow_public(&inverse(&vi)?, &c));
    let x_commit = pow_public(&x_tilde, &z).mul(&pow_public(&inverse(&x_i_squared)?, &c));
    let expected = Transcript {
        key,
        message,
        context,
        index,
        x_tilde: &x_tilde.retrieve(),
        x_i_squared: &x_i_squared.retrieve(),
        v_commit: &v_commit.retrieve(),
        x_commit: &x_commit.retrieve(),
    }
    .challenge();
    if expected[..] == share.c[..] {
        Ok(x_i_monty)
    } else {
        Err(ThresholdError::BadProof { index })
    }
}

/// Combines signature shares on `message` into the RSA PKCS#1 v1.5 SHA-256 signature
/// (k bytes). Every proof is checked first (the first bad one is named), indices must be
/// distinct and at least `threshold`; the result is checked (y^e = x) before it is
/// returned.
pub fn combine(
    key: &ThresholdKey,
    message: &[u8],
    context: &[u8],
    shares: &[SignatureShare],
) -> Result<Vec<u8>> {
    key.check()?;
    let params = key.params()?;
    let mut seen: Vec<u8> = Vec::with_capacity(shares.len());
    let mut values = Vec::with_capacity(shares.len());
    for share in shares {
        if seen.contains(&share.index) {
            return Err(ThresholdError::DuplicateShare { index: share.index });
        }
        seen.push(share.index);
        values.push(verify_checked(key, &params, message, context, share)?);
    }
    if shares.len() < key.threshold as usize {
        return Err(ThresholdError::NotEnoughShares {
            got: shares.len(),
            needed: key.threshold,
        });
    }
    let used = &seen[..key.threshold as usize];
    let delta = key.delta();
    let mut w = BoxedMontyForm::one(&params);
    for (position, x_j) in values.iter().take(used.len()).enumerate() {
        let lambda = lagrange_at_zero(used, position, delta)?;
        let exponent = lambda.checked_mul(2).ok_or(ThresholdError::CombineFailed)?;
        w = w.mul(&pow_signed(x_j, exponent)?);
    }
    // w^e = x^{e'} with e' = 4Δ², and gcd(e', e) = 1: y = w^a · x^b for a·e' + b·e = 1.
    let e_prime = 4 * u128::from(delta) * u128::from(delta);
    let (a, b) = bezout(e_prime, u128::from(key.e)).ok_or(ThresholdError::CombineFailed)?;
    let x = BoxedMontyForm::new(encode_message(key, message)?, &params);
    let y = pow_signed(&w, a)?.mul(&pow_signed(&x, b)?);
    let check = pow_public(&y, &BoxedUint::from(key.e));
    if check != x {
        return Err(ThresholdError::CombineFailed);
    }
    Ok(to_be_fixed(&y.retrieve(), key.modulus_len()))
}

/// Δ · Π_{j' ≠ j} (0 − j') / (j − j'), an integer (Shoup, lemma 1), for j = used[position].
fn lagrange_at_zero(used: &[u8], position: usize, delta: u64) -> Result<i128> {
    let j = i128::from(*used.get(position).ok_or(ThresholdError::CombineFailed)?);
    let mut numerator = i128::from(delta);
    let mut denominator: i128 = 1;
    for (other_position, &other) in used.iter().enumerate() {
        if other_position == position {
            continue;
        }
        let other = i128::from(other);
        numerator = numerator
            .checked_mul(-other)
            .ok_or(ThresholdError::CombineFailed)?;
        denominator = denominator
            .checked_mul(j - other)
            .ok_or(ThresholdError::CombineFailed)?;
    }
    if denominator == 0 || numerator % denominator != 0 {
        return Err(ThresholdError::CombineFailed);
    }
    Ok(numerator / denominator)
}

/// (a, b) with a·x + b·y = 1, or `None` when gcd(x, y) ≠ 1.
fn bezout(x: u128, y: u128) -> Option<(i128, i128)> {
    let (mut old_r, mut r) = (i128::try_from(x).ok()?, i128::try_from(y).ok()?);
    let (mut old_s, mut s) = (1i128, 0i128);
    let (mut old_t, mut t) = (0i128, 1i128);
    while r != 0 {
        let quotient = old_r / r;
        (old_r, r) = (r, old_r - quotient * r);
        (old_s, s) = (s, old_s.checked_sub(quotient.checked_mul(s)?)?);
        (old_t, t) = (t, old_t.checked_sub(quotient.checked_mul(t)?)?);
    }
    (old_r == 1).then_some((old_s, old_t))
}

/// `x` big-endian in exactly `len` bytes (left-padded, or cut to its low `len` bytes).
fn to_be_fixed(x: &BoxedUint, len: usize) -> Vec<u8> {
    let bytes = x.to_be_bytes();
    if bytes.len() >= len {
        bytes[bytes.len() - len..].to_vec()
    } else {
        let mut out = vec![0u8; len - bytes.len()];
        out.extend_from_slice(&bytes);
        out
    }
}

/// p' = (p − 1) / 2 for an odd p.
fn half_of(p: &BoxedUint) -> BoxedUint {
    p.wrapping_shr_vartime(1)
}

fn trim_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests;
