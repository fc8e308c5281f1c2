//! Timings of Shoup threshold RSA per key size, for `make bench`: dealing 3 of 5, one
//! signature share with its proof, verifying that proof, and combining three shares.
//! `scripts/bench.sh` prints them against OpenSSL signing with the whole key.
//!
//! Usage: threshold_bench FIXTURES_DIR (the checked-in `tests/fixtures/threshold`).
//! Prints one line per key size: `bits deal_ms share_ms verify_ms combine_ms` (medians).

use nkpki::sss::shoup::{self, SafePrimes};
use std::time::Instant;

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: threshold_bench FIXTURES_DIR")?;
    let message = b"a TBSCertificate stands here";
    let context = b"bench";
    for bits in [2048, 3072, 4096] {
        let text = std::fs::read_to_string(format!("{dir}/rsa-{bits}.primes"))?;
        let mut dealt = None;
        let deal_ms = median_ms(3, || {
            let primes = SafePrimes::from_text(&text).ok();
            dealt = primes.and_then(|p| shoup::deal(p, 3, 5, &mut rand::rng()).ok());
        });
        let (key, shares) = dealt.ok_or("dealing failed")?;
        let mut made = Vec::new();
        let share_ms = median_ms(9, || {
            made.push(shoup::sign_share(
                &key,
                &shares[0],
                message,
                context,
                &mut rand::rng(),
            ));
        });
        let one = made.pop().ok_or("no share")??;
        let verify_ms = median_ms(9, || {
            let _ = shoup::verify_share(&key, message, context, &one);
        });
        let set = shares[..3]
            .iter()
            .map(|s| shoup::sign_share(&key, s, message, context, &mut rand::rng()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ok = true;
        let combine_ms = median_ms(5, || {
            ok &= shoup::combine(&key, message, context, &set).is_ok();
        });
        if !ok {
            return Err("combination failed".into());
        }
        println!("{bits} {deal_ms:.1} {share_ms:.1} {verify_ms:.1} {combine_ms:.1}");
    }
    Ok(())
}
