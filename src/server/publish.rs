//! What relying parties fetch without credentials, and where: the URLs a CA writes into its
//! certificates (derived from its public base URL), the CA certificate as DER, and how
//! soon its latest CRL runs out.

use crate::pki;
use crate::store::{Store, StoreError};
use time::OffsetDateTime;

/// The URLs written into the certificates of `ca_id`, served from `public_url`:
/// `/crl/<ca-id>.crl`, `/ca/<ca-id>.der` and, when enabled, `/ocsp/<ca-id>`.
pub fn urls_for(public_url: &str, ca_id: &str, ocsp: bool) -> pki::Urls {
    let base = public_url.trim_end_matches('/');
    pki::Urls {
        crl: vec![format!("{base}/crl/{ca_id}.crl")],
        ca_issuers: vec![format!("{base}/ca/{ca_id}.der")],
        ocsp: if ocsp {
            vec![format!("{base}/ocsp/{ca_id}")]
        } else {
            Vec::new()
        },
    }
}

/// Checks a CA's public base URL: every URL derived from it must fit in a certificate.
pub fn check_public_url(public_url: &str, ca_id: &str) -> Result<(), pki::PkiError> {
    if public_url.contains(['?', '#']) {
        return Err(pki::PkiError::BadUrl(public_url.to_owned()));
    }
    let urls = urls_for(public_url, ca_id, true);
    for url in urls.crl.iter().chain(&urls.ca_issuers).chain(&urls.ocsp) {
        pki::check_url(url)?;
    }
    Ok(())
}

/// The URLs the certificates of `ca_id` carry now (none when no base URL is set).
pub fn ca_urls(store: &Store, ca_id: &str) -> Result<pki::Urls, StoreError> {
    Ok(match store.ca_urls(ca_id)? {
        Some((public_url, ocsp)) => urls_for(&public_url, ca_id, ocsp),
        None => pki::Urls::default(),
    })
}

/// The nextUpdate of the CA's latest CRL, if it has signed one.
pub fn crl_next_update(store: &Store, ca_id: &str) -> Result<Option<OffsetDateTime>, StoreError> {
    Ok(crl_times(store, ca_id)?.map(|(_, next)| next))
}

/// (thisUpdate, nextUpdate) of the latest CRL.
fn crl_times(
    store: &Store,
    ca_id: &str,
) -> Result<Option<(OffsetDateTime, OffsetDateTime)>, StoreError> {
    let Some((der, _)) = store.latest_crl(ca_id)? else {
        return Ok(None);
    };
    let Ok((_, crl)) = x509_parser::parse_x509_crl(&der) else {
        return Ok(None);
    };
    let this = crl.last_update().to_datetime();
    Ok(crl.next_update().map(|next| (this, next.to_datetime())))
}

/// Warn this long before a CRL's nextUpdate at the latest.
pub const CRL_WARN_BEFORE: time::Duration = time::Duration::hours(24);

/// A warning for each CA whose latest CRL runs out soon or already has.
pub fn crl_warnings(store: &Store, now: OffsetDateTime) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for (ca_id, _) in store.ca_manifests()? {
        if let Some((this, next)) = crl_times(store, &ca_id)? {
            out.extend(crl_warning(&ca_id, this, next, now));
        }
    }
    Ok(out)
}

/// The warning for a CRL valid from `this` to `next`, at `now`: due within a quarter of its
/// lifetime or [`CRL_WARN_BEFORE`] (whichever is longer), or already past.
pub fn crl_warning(
    ca_id: &str,
    this: OffsetDateTime,
    next: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<String> {
    let lifetime: time::Duration = next - this;
    let margin = std::cmp::max(lifetime / 4_i32, CRL_WARN_BEFORE);
    if now >= next {
        Some(format!(
            "the CRL of CA {ca_id} expired at {next}: relying parties that check it now \
             refuse its certificates (hint: `nkpki crl --sign`)"
        ))
    } else if next - now <= margin {
        Some(format!(
            "the CRL of CA {ca_id} runs out at {next}, in {} h (hint: `nkpki crl --sign` \
             before then)",
            (next - now).whole_hours()
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn a_crl_is_due_in_its_last_quarter_or_day() {
        let this = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let week = this + Duration::days(7);
        assert_eq!(crl_warning("x", this, week, this + Duration::days(5)), None);
        let soon = crl_warning("x", this, week, this + Duration::hours(127)).unwrap();
        assert!(
            soon.contains("runs out") && soon.contains("in 41 h"),
            "{soon}"
        );
        let past = crl_warning("x", this, week, week).unwrap();
        assert!(past.contains("expired"), "{past}");
        // a short-lived CRL still warns a day ahead
        let day = this + Duration::hours(30);
        assert!(crl_warning("x", this, day, this + Duration::hours(7)).is_some());
        assert_eq!(crl_warning("x", this, day, this + Duration::hours(5)), None);
    }

    #[test]
    fn urls_derive_from_the_base() {
        let urls = urls_for("http://pki.example.org/", "ab", true);
        assert_eq!(urls.crl, ["http://pki.example.org/crl/ab.crl"]);
        assert_eq!(urls.ca_issuers, ["http://pki.example.org/ca/ab.der"]);
        assert_eq!(urls.ocsp, ["http://pki.example.org/ocsp/ab"]);
        assert!(urls_for("http://h", "ab", false).ocsp.is_empty());
        assert!(check_public_url("http://h?x=1", "ab").is_err());
        assert!(check_public_url("https://h", "ab").is_err());
        assert!(check_public_url("http://h:8080/pki", "ab").is_ok());
    }
}
