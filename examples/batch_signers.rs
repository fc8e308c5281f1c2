//! Why batches sign RSA through ring: the time of one PKCS#1 v1.5 SHA-256 signature by the
//! `rsa` crate (what single issuance uses) and by ring (what a batch uses), for a CA key
//! given as a PKCS#8 PEM file (`openssl genpkey`), and by ECDSA P-256 for comparison.
//! Prints milliseconds per signature; asserts nothing. Run through `make bench`
//! (scripts/bench-batch.sh), or `cargo run --release --example batch_signers -- KEY.pem`.

use nkpki::pki::CaKey;
use nkpki::pki::batch::BatchSigner;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const RUNS: u32 = 30;

/// Milliseconds per call of `f`, over [`RUNS`] calls.
fn per_call(mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    f()?;
    let start = Instant::now();
    for _ in 0..RUNS {
        f()?;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0 / f64::from(RUNS))
}

fn main() -> Res<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: batch_signers KEY.pem (a PKCS#8 private key)")?;
    let pem = pem::parse(std::fs::read(&path)?)?;
    let key = CaKey::from_pkcs8_der(pem.contents())?;
    let msg = vec![0x5a_u8; 1200];
    let rsa_crate = per_call(|| {
        key.sign(&msg)?;
        Ok(())
    })?;
    let signer = BatchSigner::new(&key)?;
    let batch = per_call(|| {
        rcgen::SigningKey::sign(&signer, &msg).map_err(|e| e.to_string())?;
        Ok(())
    })?;
    println!(
        "{} signature: single issuance {rsa_crate:.2} ms, batch (ring for RSA) {batch:.2} ms, {:.1}x",
        key.algorithm(),
        rsa_crate / batch.max(f64::MIN_POSITIVE)
    );
    Ok(())
}
