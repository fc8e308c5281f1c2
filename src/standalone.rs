//! `nkpki split` / `nkpki combine` for any secret: like `ssss-split`/`ssss-combine`, but
//! every share file carries the public share set, so each share is checked on its own and
//! a bad one is named before anything is combined.

use crate::sss::{self, Share, ShareFile, SssError};
use zeroize::Zeroizing;

/// The largest secret `split` accepts (every share file carries its ciphertext).
pub const MAX_SECRET: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CombineError {
    #[error("{what} is not an nkpki share file: {reason}")]
    NotAShare { what: String, reason: String },
    #[error("{what} is corrupt: its share set does not match its set id (the file was altered)")]
    SelfInconsistent { what: String },
    #[error("{what} is invalid: {reason}")]
    BadShare { what: String, reason: SssError },
    #[error("{what} belongs to another secret (set {found}) than {first} (set {expected})")]
    MixedSets {
        what: String,
        found: String,
        first: String,
        expected: String,
    },
    #[error("{what} and {other} are the same share ({index})")]
    Duplicate {
        what: String,
        other: String,
        index: u8,
    },
    #[error("{got} share(s) given; this secret needs {needed}")]
    NotEnough { got: usize, needed: u8 },
    #[error("no share given")]
    Empty,
    #[error(transparent)]
    Recover(SssError),
}

/// Splits `secret`; returns the share files' texts in index order.
pub fn split(secret: &[u8], threshold: u8, total: u8) -> Result<Vec<Zeroizing<String>>, SssError> {
    let (set, shares) = sss::split(secret, threshold, total, &[])?;
    Ok(shares
        .into_iter()
        .map(|share| {
            ShareFile {
                share,
                set: set.clone(),
            }
            .to_json()
        })
        .collect())
}

/// Checks each named share file on its own, then recovers the secret.
pub fn combine(files: &[(String, Zeroizing<String>)]) -> Result<Zeroizing<Vec<u8>>, CombineError> {
    let mut parsed: Vec<(&str, ShareFile)> = Vec::with_capacity(files.len());
    for (what, text) in files {
        let file: ShareFile = serde_json::from_str(text).map_err(|e| CombineError::NotAShare {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        if file.set.id() != file.share.set_id {
            return Err(CombineError::SelfInconsistent { what: what.clone() });
        }
        file.set
            .verify(&file.share)
            .map_err(|reason| CombineError::BadShare {
                what: what.clone(),
                reason,
            })?;
        if let Some((first, f)) = parsed.first()
            && f.share.set_id != file.share.set_id
        {
            return Err(CombineError::MixedSets {
                what: what.clone(),
                found: file.share.set_id.to_string(),
                first: (*first).to_owned(),
                expected: f.share.set_id.to_string(),
            });
        }
        if let Some((other, _)) = parsed
            .iter()
            .find(|(_, f)| f.share.index == file.share.index)
        {
            return Err(CombineError::Duplicate {
                what: what.clone(),
                other: (*other).to_owned(),
                index: file.share.index,
            });
        }
        parsed.push((what, file));
    }
    let set = match parsed.first() {
        Some((_, f)) => f.set.clone(),
        None => return Err(CombineError::Empty),
    };
    if parsed.len() < set.threshold as usize {
        return Err(CombineError::NotEnough {
            got: parsed.len(),
            needed: set.threshold,
        });
    }
    let shares: Vec<Share> = parsed.into_iter().map(|(_, f)| f.share).collect();
    set.recover(&shares).map_err(CombineError::Recover)
}
