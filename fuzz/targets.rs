//! The fuzz targets' bodies: one function per parser that takes outside input. The
//! cargo-fuzz targets (`fuzz/fuzz_targets/`) and the corpus replay of `make test`
//! (`tests/integration/fuzz_corpus.rs`) both include this file, so a corpus file replays
//! exactly the code the fuzzer ran.
//!
//! Each function returns `Ok` when nkpki accepted the input all the way and `Err` with
//! nkpki's message when it refused it; a panic (or a sanitizer report) is a finding.

use nkpki::agent::{self, ApprovalRule};
use nkpki::manifest::{Manifest, VerifiedManifest};
use nkpki::{ceremony, hsm, package, pki, proto, seal, sss, standalone};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// A target: the bytes an outsider controls, in; accepted or refused, out.
pub type Target = fn(&[u8]) -> Result<(), String>;

/// Every target by name; the name is the cargo-fuzz target and the corpus directory.
pub const TARGETS: [(&str, Target); 9] = [
    ("csr", csr),
    ("share", share),
    ("manifest", manifest),
    ("package", package_tar),
    ("wire", wire),
    ("age", age_ciphertext),
    ("pkcs11_uri", pkcs11_uri),
    ("holders", holders),
    ("ocsp", ocsp_request),
];

/// The fixed age identity the `age` and `package` targets decrypt with (a published test
/// key: it protects nothing).
const IDENTITY: &str = include_str!("fixtures/fuzz-identity.txt");
/// A real ceremony's manifest: the CA certificate issuance checks run against, and the
/// share set contributed shares are checked against.
const MANIFEST: &str = include_str!("fixtures/manifest.json");

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn text(data: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(data).map_err(|_| "not UTF-8".to_owned())
}

fn identity() -> &'static age::x25519::Identity {
    static IDENTITY_KEY: OnceLock<age::x25519::Identity> = OnceLock::new();
    IDENTITY_KEY.get_or_init(|| {
        IDENTITY
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("fuzz/fixtures/fuzz-identity.txt holds no identity"))
    })
}

fn fixture_manifest() -> &'static VerifiedManifest {
    static VERIFIED: OnceLock<VerifiedManifest> = OnceLock::new();
    VERIFIED.get_or_init(|| {
        Manifest::from_json(MANIFEST)
            .and_then(|m| m.verify())
            .unwrap_or_else(|e| panic!("fuzz/fixtures/manifest.json does not verify: {e}"))
    })
}

/// A CSR, PEM or DER, as `sign`, `POST /sessions` and the agent read it; then the
/// issuance checks of every profile against the fixture CA (what is refused before any
/// holder is asked).
pub fn csr(data: &[u8]) -> Result<(), String> {
    let csr = pki::Csr::parse(data).map_err(err)?;
    let _ = (csr.digest(), csr.subject_string());
    let _: Vec<String> = csr.sans.iter().map(ToString::to_string).collect();
    let ca = &fixture_manifest().ca;
    let now = ca.not_after - time::Duration::days(400);
    for profile in [
        pki::Profile::Server,
        pki::Profile::Client,
        pki::Profile::SubCa,
    ] {
        if let Ok(terms) = pki::Terms::new(profile, 365, now) {
            let _ = pki::check_request(ca, &csr, &terms).map(|view| view.lines());
        }
    }
    Ok(())
}

/// Share JSON two ways: a bare share (package, token object, decrypted contribution)
/// checked against the fixture manifest, and a standalone share file (`combine`).
pub fn share(data: &[u8]) -> Result<(), String> {
    let bare = serde_json::from_slice::<sss::Share>(data)
        .map_err(err)
        .and_then(|share| {
            let _ = (share.describe(), share.fingerprint());
            fixture_manifest()
                .check_share(&share, "the fuzzed share")
                .map_err(err)
        });
    let file = text(data).and_then(|text| {
        let files = [("fuzzed".to_owned(), Zeroizing::new(text.to_owned()))];
        match standalone::combine(&files) {
            // one good file is all a single input can be: combine then wants more
            Err(standalone::CombineError::NotEnough { .. }) => Ok(()),
            Ok(_) => Ok(()),
            Err(e) => Err(err(e)),
        }
    });
    bare.or(file)
}

/// A manifest, as `register`, `deploy`, `sign` and `POST /cas` read it.
pub fn manifest(data: &[u8]) -> Result<(), String> {
    let verified = Manifest::from_json(text(data)?)
        .and_then(|m| m.verify())
        .map_err(err)?;
    for holder in &verified.body.holders {
        let _ = verified.holder_by_id(&holder.nitrokey_id);
    }
    Ok(())
}

/// A package's tar, sealed to the fixed identity and opened as `deploy` opens it, so
/// the fuzzer's bytes reach the tar reader and everything behind it.
pub fn package_tar(data: &[u8]) -> Result<(), String> {
    let armored = seal::to_recipient(&identity().to_public(), data).map_err(err)?;
    let mut identities = seal::Identities::default();
    identities.add(identity().clone());
    package::open(armored.as_bytes(), &identities, || None).map_err(err)?;
    Ok(())
}

/// Parses `data` as a `T`; when it is one, checks that it survives a round trip.
fn body<T: Serialize + DeserializeOwned + Debug>(
    data: &[u8],
    same: impl Fn(&T, &T) -> bool,
) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    let again: T = serde_json::to_vec(&value)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| panic!("{value:?} does not survive serialization"));
    assert!(same(&value, &again), "{value:?} changed in a round trip");
    Some(value)
}

fn any<T>(_: &T, _: &T) -> bool {
    true
}

/// What the server does with a session request before any holder is asked: the CSR,
/// profile and validity checked against the CA (here the fixture's), or the reason parsed.
fn create_session(create: &proto::CreateSession) {
    if let Some(reason) = &create.reason {
        let _ = pki::parse_reason(reason);
    }
    let Some(pem) = &create.csr_pem else { return };
    let Ok(csr) = pki::Csr::parse(pem.as_bytes()) else {
        return;
    };
    let Ok(profile) = create.profile.as_deref().unwrap_or("server").parse() else {
        return;
    };
    let ca = &fixture_manifest().ca;
    let now = ca.not_after - time::Duration::days(400);
    if let Ok(terms) = pki::Terms::new(profile, create.days.unwrap_or(90), now) {
        let _ = pki::check_request(ca, &csr, &terms);
    }
}

/// Every JSON body of the wire, tried as each type in turn, with what the receiving side
/// does next (the server parses the CSR, reason and manifest; the agent recomputes the
/// request digest and applies its approval rule).
pub fn wire(data: &[u8]) -> Result<(), String> {
    let mut accepted = false;
    if let Some(create) = body::<proto::CreateSession>(data, any) {
        accepted = true;
        create_session(&create);
    }
    accepted |= body::<proto::SessionStatus>(data, any).is_some();
    let rule = ApprovalRule {
        profile: Some("server".into()),
        san_suffix: Some(".example.org".into()),
        ..ApprovalRule::default()
    };
    let offers = body::<proto::SessionOffer>(data, PartialEq::eq)
        .into_iter()
        .chain(
            body::<proto::Poll>(data, any)
                .into_iter()
                .flat_map(|p| p.sessions),
        );
    for offer in offers {
        accepted = true;
        let approving = agent::recompute(&offer, fixture_manifest());
        let view = approving.ok().and_then(|a| a.certificate);
        let _ = rule.refuses(&offer, view.as_ref());
    }
    accepted |= body::<proto::OfferSummary>(data, PartialEq::eq).is_some();
    if let Some(envelope) = body::<proto::Envelope>(data, PartialEq::eq) {
        accepted = true;
        let _ = envelope.signed_bytes();
    }
    if let Some(contribution) = body::<proto::Contribution>(data, any) {
        accepted = true;
        assert_eq!(
            body::<proto::Envelope>(
                &serde_json::to_vec(&contribution.envelope).unwrap_or_default(),
                PartialEq::eq
            ),
            Some(contribution.envelope.clone()),
        );
        let _ = contribution.envelope.signed_bytes();
    }
    accepted |= body::<proto::Decline>(data, any).is_some();
    accepted |= body::<proto::ChallengeRequest>(data, any).is_some();
    accepted |= body::<proto::Challenge>(data, any).is_some();
    if let Some(login) = body::<proto::Login>(data, any) {
        accepted = true;
        let _ = proto::login_signed_bytes(&login.ca_id, &login.holder_id, &login.challenge);
    }
    accepted |= body::<proto::LoginOk>(data, any).is_some();
    if let Some(enroll) = body::<proto::Enroll>(data, any) {
        accepted = true;
        let _ =
            proto::enroll_signed_bytes(&enroll.ca_id, &enroll.holder_id, &enroll.public_key_pem);
    }
    accepted |= body::<proto::ApiError>(data, any).is_some();
    if let Some(register) = body::<proto::RegisterCa>(data, any) {
        accepted = true;
        let _ = Manifest::from_json(&register.manifest).and_then(|m| m.verify());
    }
    if accepted {
        Ok(())
    } else {
        Err("no wire body type accepts it".into())
    }
}

/// An age ciphertext as the server receives a contribution: opened with the session's
/// identity (here the fixed one), the plaintext read as a share and checked against the
/// manifest.
pub fn age_ciphertext(data: &[u8]) -> Result<(), String> {
    let plain = seal::open_with_identity(data, identity()).map_err(err)?;
    let share: sss::Share = serde_json::from_slice(&plain).map_err(err)?;
    fixture_manifest()
        .check_share(&share, "the decrypted share")
        .map_err(err)
}

/// A PKCS#11 URI or token name, as `--token` takes it, matched against a few tokens.
pub fn pkcs11_uri(data: &[u8]) -> Result<(), String> {
    let selector = hsm::TokenSelector::parse(text(data)?).map_err(err)?;
    for (label, serial, manufacturer, model) in [
        (
            "NK001",
            "DENK0100123",
            "www.CardContact.de",
            "PKCS#15 emulated",
        ),
        (
            "NK002 (UserPIN)",
            "DENK0100124",
            "www.CardContact.de",
            "PKCS#15 emulated",
        ),
        ("", "", "", ""),
    ] {
        let _ = selector.matches(label, serial, manufacturer, model);
    }
    Ok(())
}

/// `holders.json`, as `ca-init` reads it.
pub fn holders(data: &[u8]) -> Result<(), String> {
    ceremony::parse_holders(text(data)?).map_err(err)?;
    Ok(())
}

/// An OCSP request as `POST /ocsp/<ca-id>` receives it, and the same bytes as the path of
/// a GET (percent-encoded base64).
pub fn ocsp_request(data: &[u8]) -> Result<(), String> {
    if let Ok(path) = std::str::from_utf8(data) {
        let _ = nkpki::server::ocsp::decode_get(path);
    }
    nkpki::server::ocsp::parse_request(data)
        .map(drop)
        .map_err(|(status, why)| format!("{status:?}: {why}"))
}
