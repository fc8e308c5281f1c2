//! The sharing at nkpki's core, as a library user sees it: split a secret 3-of-5, check
//! each share on its own against the public set, catch a tampered share by its index, and
//! recover the secret from any three.
//!
//! `cargo run --example verifiable_sharing`

use nkpki::sss::{self, SssError};

fn main() -> Result<(), SssError> {
    let secret = b"the key-encryption key protects this";
    let (set, shares) = sss::split(secret, 3, 5, &[])?;
    println!(
        "share set {} ({} of {}), {} commitments",
        set.id(),
        set.threshold,
        set.total,
        set.commitments.len()
    );
    for share in &shares {
        set.verify(share)?;
        println!(
            "  {} verifies alone; public fingerprint {}",
            share.describe(),
            share.fingerprint()?
        );
    }

    // a share carried in a file whose value was altered is named before any combining
    let mut text = shares[1].to_json().to_string();
    let at = text.find("\"value\": \"").map(|i| i + 10).unwrap_or(0);
    let flipped = if &text[at..at + 1] == "0" { "1" } else { "0" };
    text.replace_range(at..at + 1, flipped);
    if let Ok(tampered) = serde_json::from_str(&text) {
        match set.recover(&[shares[0].clone(), tampered, shares[2].clone()]) {
            Err(e) => println!("tampered share refused: {e}"),
            Ok(_) => println!("unexpected: a tampered share was accepted"),
        }
    }

    let recovered = set.recover(&[shares[4].clone(), shares[0].clone(), shares[3].clone()])?;
    println!(
        "recovered from shares 5, 1, 4: {:?}",
        String::from_utf8_lossy(&recovered)
    );
    Ok(())
}
