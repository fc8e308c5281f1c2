//! The generator ("New CA") form without the web: the fields as submitted, validated with
//! the checks `ca-init` uses into per-field errors, and the ceremony run over them as
//! `ca-init --package` runs it. The pages are in `src/web/generator.rs`.

use crate::ceremony::{
    self, CaMode, CeremonyError, CeremonyOutput, CeremonyParams, Delivery, Holder, MAX_DN_CHARS,
};
use crate::package;
use crate::pki::{CaSubject, KeyAlgorithm};
use crate::sss::shoup;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use time::OffsetDateTime;
use zeroize::Zeroize;

/// Key types the form offers, first the default.
pub const KEYS: [&str; 5] = [
    "rsa-4096",
    "rsa-3072",
    "rsa-2048",
    "ecdsa-p256",
    "ecdsa-p384",
];
/// CA modes the form offers, first the default.
pub const MODES: [&str; 2] = ["reconstruct", "threshold"];
/// Holder rows a submitted form may carry at most (more is refused, not parsed).
const MAX_ROWS: usize = 64;

/// Field name → message, for every field that is wrong. Field names are the form's:
/// `name`, `org`, `country`, `key`, `mode`, `validity_years`, `threshold`, `holders`,
/// `server_url`, `server_cert_sha256`, and per row `holders-<i>-id`, `-name`, `-email`,
/// `-location`, `-recipient`.
pub type FieldErrors = BTreeMap<String, String>;

/// One holder row as typed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HolderRow {
    pub id: String,
    pub name: String,
    pub email: String,
    pub location: String,
    /// age recipient (`age1…`), empty for a fresh passphrase.
    pub recipient: String,
}

/// The generator form as submitted (every value as typed, so it can be shown again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratorForm {
    pub name: String,
    pub org: String,
    pub country: String,
    pub key: String,
    pub mode: String,
    pub validity_years: String,
    pub threshold: String,
    pub server_url: String,
    pub server_cert_sha256: String,
    /// Accept a plain http:// server URL (a test bench, loopback).
    pub insecure_http: bool,
    pub holders: Vec<HolderRow>,
}

impl Default for GeneratorForm {
    /// An empty form with `ca-init`'s defaults and three empty rows.
    fn default() -> Self {
        GeneratorForm {
            name: String::new(),
            org: String::new(),
            country: String::new(),
            key: KEYS[0].into(),
            mode: MODES[0].into(),
            validity_years: "20".into(),
            threshold: "3".into(),
            server_url: String::new(),
            server_cert_sha256: String::new(),
            insecure_http: false,
            holders: vec![HolderRow::default(); 3],
        }
    }
}

/// The name of a row's field, e.g. `holders-0-id`.
pub fn row_field(index: usize, field: &str) -> String {
    format!("holders-{index}-{field}")
}

impl GeneratorForm {
    /// Reads the form from its submitted pairs; unknown names (csrf, nonce, buttons) are
    /// ignored, rows are kept in the order of their indexes. Rows past [`MAX_ROWS`] make
    /// an error on `holders`.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, FieldErrors> {
        let mut form = GeneratorForm {
            holders: Vec::new(),
            insecure_http: false,
            ..GeneratorForm::default()
        };
        let mut rows: BTreeMap<usize, HolderRow> = BTreeMap::new();
        for (name, value) in pairs {
            let value = value.to_owned();
            match name {
                "name" => form.name = value,
                "org" => form.org = value,
                "country" => form.country = value,
                "key" => form.key = value,
                "mode" => form.mode = value,
                "validity_years" => form.validity_years = value,
                "threshold" => form.threshold = value,
                "server_url" => form.server_url = value,
                "server_cert_sha256" => form.server_cert_sha256 = value,
                "insecure_http" => form.insecure_http = !value.is_empty(),
                _ => {
                    let Some((index, field)) = name
                        .strip_prefix("holders-")
                        .and_then(|rest| rest.split_once('-'))
                    else {
                        continue;
                    };
                    let Ok(index) = index.parse::<usize>() else {
                        continue;
                    };
                    if index >= MAX_ROWS {
                        return Err(FieldErrors::from([(
                            "holders".to_owned(),
                            format!("at most {MAX_ROWS} rows can be submitted"),
                        )]));
                    }
                    let row = rows.entry(index).or_default();
                    match field {
                        "id" => row.id = value,
                        "name" => row.name = value,
                        "email" => row.email = value,
                        "location" => row.location = value,
                        "recipient" => row.recipient = value,
                        _ => {}
                    }
                }
            }
        }
        form.holders = rows.into_values().collect();
        Ok(form)
    }

    /// Adds an empty holder row (the form's "add holder" button).
    pub fn add_row(&mut self) {
        if self.holders.len() < MAX_ROWS {
            self.holders.push(HolderRow::default());
        }
    }

    /// Removes row `index` (its "remove" button); out of range does nothing.
    pub fn remove_row(&mut self, index: usize) {
        if index < self.holders.len() {
            self.holders.remove(index);
        }
    }

    /// Validates every field with the checks `ca-init` uses: the ceremony parameters, or
    /// every problem at once, each under its field's name.
    pub fn validate(&self) -> Result<CeremonyParams, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut check = |field: String, result: Result<(), String>| {
            if let Err(message) = result {
                errors.entry(field).or_insert(message);
            }
        };
        check(
            "name".into(),
            ceremony::check_length(&self.name, MAX_DN_CHARS),
        );
        check(
            "org".into(),
            ceremony::check_length(&self.org, MAX_DN_CHARS),
        );
        check("country".into(), ceremony::check_country(&self.country));
        let key = self
            .key
            .parse::<KeyAlgorithm>()
            .map_err(|_| format!("{:?} is not a key type ({})", self.key, KEYS.join(", ")));
        check("key".into(), key.as_ref().map(|_| ()).map_err(Clone::clone));
        let mode = self.mode.parse::<CaMode>().map_err(|_| {
            format!(
                "{:?} is not a CA mode (reconstruct or threshold)",
                self.mode
            )
        });
        check(
            "mode".into(),
            mode.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        if let (Ok(key), Ok(mode)) = (&key, &mode) {
            check("key".into(), ceremony::check_mode_key(*mode, *key));
        }
        let number = |text: &str| {
            text.trim()
                .parse::<u32>()
                .map_err(|_| format!("{text:?} is not a whole number"))
        };
        let years = number(&self.validity_years);
        check(
            "validity_years".into(),
            years.clone().and_then(ceremony::check_validity_years),
        );
        let threshold = number(&self.threshold);
        check(
            "threshold".into(),
            threshold.clone().and_then(ceremony::check_threshold),
        );
        check(
            "holders".into(),
            ceremony::check_holder_count(self.holders.len()),
        );
        if let Ok(t) = threshold {
            check(
                "threshold".into(),
                ceremony::check_threshold_fits(t, self.holders.len()),
            );
        }

        let mut holders: Vec<Holder> = Vec::with_capacity(self.holders.len());
        let mut ids_seen = Vec::with_capacity(self.holders.len());
        for (i, row) in self.holders.iter().enumerate() {
            let id = ceremony::parse_nitrokey_id(row.id.trim()).and_then(|id| {
                if ids_seen.contains(&id) {
                    Err(ceremony::duplicate_id(&id))
                } else {
                    ids_seen.push(id.clone());
                    Ok(id)
                }
            });
            check(
                row_field(i, "id"),
                id.as_ref().map(|_| ()).map_err(Clone::clone),
            );
            check(row_field(i, "name"), ceremony::check_holder_text(&row.name));
            check(row_field(i, "email"), ceremony::check_email(&row.email));
            check(
                row_field(i, "location"),
                ceremony::check_holder_text(&row.location),
            );
            let recipient = ceremony::parse_age_recipient(Some(&row.recipient));
            check(
                row_field(i, "recipient"),
                recipient.as_ref().map(|_| ()).map_err(Clone::clone),
            );
            if let (Ok(nitrokey_id), Ok(age_recipient)) = (id, recipient) {
                holders.push(Holder {
                    nitrokey_id,
                    holder_name: row.name.clone(),
                    holder_email: row.email.clone(),
                    location: row.location.clone(),
                    age_recipient,
                });
            }
        }

        let server = package::check_server_info(
            Some(self.server_url.trim().to_owned()),
            Some(self.server_cert_sha256.trim().to_owned()),
            self.insecure_http,
        );
        if let Err(problem) = &server {
            let message = match &problem.hint {
                Some(hint) => format!("{}; {hint}", problem.message),
                None => problem.message.clone(),
            };
            check(problem.field.to_owned(), Err(message));
        }

        match (errors.is_empty(), key, mode, years, threshold, server) {
            (true, Ok(key), Ok(mode), Ok(years), Ok(threshold), Ok(server)) => {
                let subject = CaSubject {
                    name: self.name.clone(),
                    org: self.org.clone(),
                    country: self.country.clone(),
                };
                let params = CeremonyParams::new(subject, key, years, None, threshold, holders)
                    .and_then(|p| p.with_mode(mode))
                    .map_err(|e| FieldErrors::from([("form".to_owned(), e.to_string())]))?;
                Ok(CeremonyParams {
                    delivery: Delivery::Packages(server),
                    ..params
                })
            }
            _ => Err(errors),
        }
    }
}

/// A finished ceremony held for the result page; the sealed packages are wiped from
/// memory when it is dropped (the passphrases wipe themselves).
#[derive(Debug)]
pub struct Generated {
    pub output: CeremonyOutput,
}

impl Generated {
    pub fn ca_id(&self) -> &str {
        &self.output.manifest.signed.ca_id.0
    }

    /// The CA certificate's SHA-256 fingerprint (`AA:BB:…`).
    pub fn fingerprint(&self) -> &str {
        &self.output.manifest.signed.certificate_sha256
    }

    /// Holder details from the manifest for share `index` (name, e-mail, location).
    pub fn holder(&self, index: u8) -> Option<&crate::manifest::ManifestHolder> {
        self.output
            .manifest
            .signed
            .holders
            .iter()
            .find(|h| h.index == index)
    }
}

impl Drop for Generated {
    fn drop(&mut self) {
        for share in &mut self.output.shares {
            share.armored.zeroize();
        }
    }
}

/// Runs the ceremony `ca-init --package` runs over validated parameters. A threshold-mode
/// CA first needs two safe primes (minutes for rsa-4096); `cancel` stops that search.
pub fn generate(params: &CeremonyParams, cancel: &AtomicBool) -> Result<Generated, CeremonyError> {
    let now = OffsetDateTime::now_utc();
    let output = match params.mode {
        CaMode::Reconstruct => ceremony::perform(params, now)?,
        CaMode::Threshold => {
            let primes = match ceremony::test_safe_primes() {
                Some(primes) => primes?,
                None => shoup::generate_safe_primes(
                    params.key.rsa_bits().unwrap_or_default(),
                    &mut |_| {},
                    cancel,
                )?,
            };
            ceremony::perform_threshold(params, primes, now)?
        }
    };
    Ok(Generated { output })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn valid() -> GeneratorForm {
        let mut form = GeneratorForm {
            name: "Example Root CA".into(),
            org: "Example".into(),
            country: "FR".into(),
            key: "ecdsa-p256".into(),
            ..GeneratorForm::default()
        };
        for (i, row) in form.holders.iter_mut().enumerate() {
            *row = HolderRow {
                id: format!("NK00{}", i + 1),
                name: format!("Holder {i}"),
                email: format!("h{i}@example.org"),
                location: "Paris".into(),
                recipient: String::new(),
            };
        }
        form
    }

    /// The only error of `form` is on `field`, and its message contains `needle`.
    fn only_error(form: &GeneratorForm, field: &str, needle: &str) {
        let errors = form.validate().expect_err("the form must be refused");
        assert_eq!(
            errors.keys().collect::<Vec<_>>(),
            vec![field],
            "errors: {errors:?}"
        );
        assert!(errors[field].contains(needle), "{field}: {}", errors[field]);
    }

    #[test]
    fn a_valid_form_gives_packaged_parameters() {
        let params = valid().validate().unwrap();
        assert_eq!(params.threshold, 3);
        assert_eq!(params.holders.len(), 3);
        assert_eq!(params.key, KeyAlgorithm::EcdsaP256);
        assert!(matches!(params.delivery, Delivery::Packages(_)));
        let mut with_recipient = valid();
        with_recipient.holders[1].recipient = RECIPIENT.into();
        let params = with_recipient.validate().unwrap();
        assert!(params.holders[1].age_recipient.is_some());
        assert!(params.holders[0].age_recipient.is_none());
    }

    #[test]
    fn ca_fields_have_their_limits() {
        let mut f = valid();
        f.name = " ".into();
        only_error(&f, "name", "must not be empty");
        f.name = "x".repeat(65);
        only_error(&f, "name", "at most 64");
        f.name = "x".repeat(64);
        assert!(f.validate().is_ok());
        f.name = "a\u{1b}b".into();
        only_error(&f, "name", "control characters");

        let mut f = valid();
        f.org = String::new();
        only_error(&f, "org", "must not be empty");
        f.org = "o".repeat(65);
        only_error(&f, "org", "at most 64");

        for bad in ["fr", "FRA", "F", "", "F1"] {
            let mut f = valid();
            f.country = bad.into();
            only_error(&f, "country", "two upper-case letters");
        }
    }

    #[test]
    fn key_and_mode_are_from_the_lists() {
        let mut f = valid();
        f.key = "rsa-1024".into();
        only_error(&f, "key", "is not a key type");
        let mut f = valid();
        f.mode = "split".into();
        only_error(&f, "mode", "not a CA mode");
        let mut f = valid();
        f.mode = "threshold".into();
        only_error(&f, "key", "cannot be a threshold-mode key");
        f.key = "rsa-2048".into();
        assert_eq!(f.validate().unwrap().mode, CaMode::Threshold);
        for key in KEYS {
            let mut f = valid();
            f.key = key.into();
            assert!(f.validate().is_ok(), "{key}");
        }
    }

    #[test]
    fn validity_is_one_to_thirty_years() {
        for (years, ok) in [("0", false), ("1", true), ("30", true), ("31", false)] {
            let mut f = valid();
            f.validity_years = years.into();
            if ok {
                assert!(f.validate().is_ok(), "{years}");
            } else {
                only_error(&f, "validity_years", "outside 1..=30");
            }
        }
        let mut f = valid();
        f.validity_years = "ten".into();
        only_error(&f, "validity_years", "not a whole number");
        f.validity_years = "-1".into();
        only_error(&f, "validity_years", "not a whole number");
    }

    #[test]
    fn threshold_is_two_to_fifteen_and_at_most_the_holders() {
        let mut f = valid();
        f.threshold = "1".into();
        only_error(&f, "threshold", "outside 2..=15");
        f.threshold = "16".into();
        only_error(&f, "threshold", "outside 2..=15");
        f.threshold = "4".into();
        only_error(&f, "threshold", "more than the 3 shares");
        f.threshold = "".into();
        only_error(&f, "threshold", "not a whole number");
        f.threshold = "2".into();
        assert!(f.validate().is_ok());
        // 15 of 20 is the largest
        let mut f = valid();
        while f.holders.len() < 20 {
            let i = f.holders.len();
            f.holders.push(HolderRow {
                id: format!("NK{:03}", i + 1),
                name: "H".into(),
                email: "h@example.org".into(),
                location: "L".into(),
                recipient: String::new(),
            });
        }
        f.threshold = "15".into();
        assert_eq!(f.validate().unwrap().holders.len(), 20);
        f.add_row();
        let errors = f.validate().unwrap_err();
        assert!(
            errors["holders"].contains("21 holder(s) given"),
            "{errors:?}"
        );
    }

    #[test]
    fn three_to_twenty_holders() {
        let mut f = valid();
        f.threshold = "2".into();
        f.remove_row(2);
        only_error(&f, "holders", "2 holder(s) given; between 3 and 20");
        f.remove_row(7); // out of range: nothing
        assert_eq!(f.holders.len(), 2);
    }

    #[test]
    fn holder_rows_are_checked_each_beside_its_field() {
        let mut f = valid();
        f.holders[1].id = "NK01".into();
        only_error(&f, "holders-1-id", "NK followed by three digits");
        f.holders[1].id = "nk002".into();
        only_error(&f, "holders-1-id", "NK followed by three digits");
        f.holders[1].id = "NK001".into();
        only_error(&f, "holders-1-id", "appears twice");

        let mut f = valid();
        f.holders[2].name = String::new();
        only_error(&f, "holders-2-name", "must not be empty");
        f.holders[2].name = "n".repeat(256);
        only_error(&f, "holders-2-name", "at most 255");

        for bad in [
            "",
            "alice",
            "alice@",
            "@example.org",
            "a b@example.org",
            "a@example",
        ] {
            let mut f = valid();
            f.holders[0].email = bad.into();
            only_error(&f, "holders-0-email", "not an e-mail address");
        }

        let mut f = valid();
        f.holders[0].location = "\t".into();
        only_error(&f, "holders-0-location", "must not be empty");

        let mut f = valid();
        f.holders[0].recipient = "age1notakey".into();
        only_error(&f, "holders-0-recipient", "not an age X25519 recipient");
        f.holders[0].recipient = "AGE-SECRET-KEY-1XYZ".into();
        only_error(&f, "holders-0-recipient", "not an age X25519 recipient");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut f = valid();
        f.name = String::new();
        f.threshold = "99".into();
        f.holders[0].email = "nope".into();
        f.holders[2].id = "X".into();
        let errors = f.validate().unwrap_err();
        let fields: Vec<_> = errors.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            ["holders-0-email", "holders-2-id", "name", "threshold"]
        );
    }

    #[test]
    fn server_url_and_pin_are_checked() {
        let mut f = valid();
        f.server_url = "http://127.0.0.1:8080".into();
        only_error(&f, "server_url", "plain http");
        f.insecure_http = true;
        assert!(f.validate().is_ok());
        f.server_url = "ftp://example.org".into();
        only_error(&f, "server_url", "must start with https://");
        let mut f = valid();
        f.server_cert_sha256 = "abc".into();
        only_error(&f, "server_cert_sha256", "64 hex digits");
        f.server_cert_sha256 = "AB".repeat(32);
        f.server_url = "https://pki.example.org".into();
        let params = f.validate().unwrap();
        let Delivery::Packages(server) = params.delivery else {
            panic!("not packages")
        };
        assert_eq!(server.cert_sha256, Some("ab".repeat(32)));
    }

    #[test]
    fn pairs_make_rows_in_index_order_and_ignore_other_names() {
        let pairs = [
            ("name", "CA"),
            ("csrf", "x"),
            ("holders-1-id", "NK002"),
            ("holders-0-id", "NK001"),
            ("holders-0-recipient", RECIPIENT),
            ("holders-x-id", "NK009"),
            ("insecure_http", "on"),
        ];
        let form = GeneratorForm::from_pairs(pairs).unwrap();
        assert_eq!(form.name, "CA");
        assert_eq!(form.holders.len(), 2);
        assert_eq!(form.holders[0].id, "NK001");
        assert_eq!(form.holders[0].recipient, RECIPIENT);
        assert_eq!(form.holders[1].id, "NK002");
        assert!(form.insecure_http);
        let errors = GeneratorForm::from_pairs([("holders-64-id", "NK001")]).unwrap_err();
        assert!(errors.contains_key("holders"));
    }

    #[test]
    fn a_generated_ca_has_one_package_per_holder() {
        let mut f = valid();
        f.holders[0].recipient = RECIPIENT.into();
        f.holders[2].recipient = RECIPIENT.into();
        let params = f.validate().unwrap();
        let generated = generate(&params, &AtomicBool::new(false)).unwrap();
        assert_eq!(generated.output.shares.len(), 3);
        assert!(generated.output.shares[0].passphrase.is_none());
        assert!(generated.output.shares[1].passphrase.is_some());
        assert!(generated.output.enrollment_json().is_some());
        assert!(generated.fingerprint().contains(':'));
        assert_eq!(generated.holder(1).unwrap().nitrokey_id, "NK001");
        assert!(
            generated
                .output
                .shares
                .iter()
                .all(|s| s.package.as_ref().is_some_and(|p| !p.qr_png.is_empty()))
        );
    }
}
