//! The fuzz corpus, replayed on the stable toolchain: every file of every target's corpus
//! and seeds goes through the very function the cargo-fuzz target calls
//! (`fuzz/targets.rs`), and must not panic. Named seeds say what nkpki must answer:
//! `ok-*` is accepted, `bad-*` refused; `crash-*` (a past finding) must only not panic.

#[allow(dead_code)]
#[path = "../../fuzz/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(name: &str, target: targets::Target) -> usize {
    let mut count = 0;
    for kind in ["corpus", "seeds"] {
        for file in files(&fuzz_dir().join(kind).join(name)) {
            let data = std::fs::read(&file).unwrap();
            let shown = file.strip_prefix(fuzz_dir()).unwrap().display().to_string();
            let outcome = std::panic::catch_unwind(|| target(&data))
                .unwrap_or_else(|_| panic!("{shown} makes target {name} panic"));
            let base = file.file_name().unwrap().to_string_lossy().into_owned();
            if base.starts_with("ok-") {
                assert!(outcome.is_ok(), "{shown} must be accepted: {outcome:?}");
            }
            if base.starts_with("bad-") {
                assert!(outcome.is_err(), "{shown} must be refused");
            }
            count += 1;
        }
    }
    count
}

#[test]
fn every_target_replays_its_corpus_without_panicking() {
    for (name, target) in targets::TARGETS {
        let count = replay(name, target);
        assert!(count > 0, "target {name} has no corpus under fuzz/");
        let seeds = files(&fuzz_dir().join("seeds").join(name));
        assert!(
            seeds.iter().any(|p| p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ok-"))),
            "target {name} has no accepted seed (ok-*): the fuzzer would start blind"
        );
    }
}

#[test]
fn every_fuzz_target_is_replayed() {
    let listed: Vec<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
    let mut built: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    built.sort();
    let mut expected: Vec<String> = listed.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(
        built, expected,
        "fuzz/fuzz_targets and targets::TARGETS differ"
    );
}

#[test]
fn garbage_is_refused_by_every_target() {
    let garbage: [&[u8]; 7] = [
        b"",
        b"\xff\xfe\x00garbage",
        b"null",
        b"{}",
        b"[]",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        b"age-encryption.org/v1\n-> X25519 AAAA\n--- AAAA\n",
    ];
    for (name, target) in targets::TARGETS {
        for input in garbage {
            // an empty array is a valid (empty) holders file; a bare word names a token
            let fine = name == "pkcs11_uri" || (name == "holders" && input == b"[]");
            if !fine {
                let outcome = target(input);
                assert!(
                    outcome.is_err(),
                    "target {name} accepts {:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }
}

#[test]
fn malformed_pkcs11_uris_are_refused() {
    for uri in [
        "",
        "pkcs11:",
        "pkcs11:token",
        "pkcs11:token=%zz",
        "pkcs11:token=%4",
        "pkcs11:token=%ff",
        "pkcs11:token=%+1",
        "pkcs11:object=ca-key;type=private",
    ] {
        assert!(
            targets::pkcs11_uri(uri.as_bytes()).is_err(),
            "{uri:?} is accepted"
        );
    }
}

/// Fuzz finding (target `wire`, then the CLI): a validity so long that its end falls past
/// the year 9999 made issuance panic on the date arithmetic; it is refused like any
/// validity past the CA's.
#[test]
fn a_validity_past_the_year_9999_is_refused_not_a_panic() {
    let env = crate::harness::Env::new();
    let h = env.ceremony("ecdsa-p256", 3, 2);
    let csr = env.csr(
        "long",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=long.example.org",
        &["subjectAltName=DNS:long.example.org"],
    );
    env.sign(&[&h[0], &h[1]], &csr, "server", "4294967295", "x.crt")
        .fails_with(&["4294967295 days", "ends after the CA certificate"]);
}
