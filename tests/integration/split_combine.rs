//! `nkpki split` / `nkpki combine` for arbitrary secrets.

use crate::harness::Env;
use std::os::unix::fs::PermissionsExt;

#[test]
fn any_three_of_five_recover_from_stdin_and_file() {
    let env = Env::new();
    let secret: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    env.write("secret.bin", &secret);
    env.nkpki(&[
        "split",
        "--threshold",
        "3",
        "--shares",
        "5",
        "--in",
        "secret.bin",
        "--out",
        "shares",
    ])
    .ok();
    for i in 1..=5 {
        let meta = std::fs::metadata(env.path(&format!("shares/share-{i}"))).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    for pick in [[1, 2, 3], [1, 3, 5], [2, 4, 5], [5, 4, 1]] {
        let files: Vec<String> = pick.iter().map(|i| format!("shares/share-{i}")).collect();
        let mut args = vec!["combine"];
        args.extend(files.iter().map(String::as_str));
        let run = env.nkpki(&args);
        run.ok();
        assert_eq!(run.output.stdout, secret, "shares {pick:?}");
    }
    // from standard input, to a file
    env.nkpki_stdin(
        &["split", "-t", "2", "-n", "3", "--out", "s2"],
        b"stdin secret",
    )
    .ok();
    env.nkpki(&["combine", "s2/share-3", "s2/share-1", "--out", "back.txt"])
        .ok();
    assert_eq!(env.read("back.txt"), b"stdin secret");
    assert_eq!(
        std::fs::metadata(env.path("back.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn fifteen_of_twenty() {
    let env = Env::new();
    env.write("k", b"0123456789abcdef0123456789abcdef");
    env.nkpki(&[
        "split",
        "--threshold",
        "15",
        "--shares",
        "20",
        "--in",
        "k",
        "--out",
        "s",
    ])
    .ok();
    let files: Vec<String> = (6..=20).map(|i| format!("s/share-{i}")).collect();
    let mut args = vec!["combine"];
    args.extend(files.iter().map(String::as_str));
    assert_eq!(
        env.nkpki(&args).ok().output.stdout,
        b"0123456789abcdef0123456789abcdef"
    );
    // fourteen are not enough
    let mut args = vec!["combine"];
    args.extend(files[1..].iter().map(String::as_str));
    env.nkpki(&args)
        .fails_with(&["14 share(s) given", "needs 15"]);
}

#[test]
fn split_refuses_to_overwrite_and_bad_parameters() {
    let env = Env::new();
    env.write("k", b"secret");
    env.nkpki(&["split", "-t", "2", "-n", "3", "--in", "k", "--out", "s"])
        .ok();
    let before = env.read("s/share-1");
    env.nkpki(&["split", "-t", "2", "-n", "3", "--in", "k", "--out", "s"])
        .fails_with(&["already exists", "--force"]);
    assert_eq!(env.read("s/share-1"), before);
    env.nkpki(&[
        "split", "-t", "2", "-n", "3", "--in", "k", "--out", "s", "--force",
    ])
    .ok();
    assert_ne!(env.read("s/share-1"), before);

    env.nkpki(&["split", "-t", "4", "-n", "3", "--in", "k", "--out", "x"])
        .fails_with(&["more than --shares"]);
    env.write("empty", b"");
    env.nkpki(&["split", "-t", "2", "-n", "3", "--in", "empty", "--out", "x"])
        .fails_with(&["empty"]);
    let usage = env.nkpki(&["split", "-t", "1", "-n", "3", "--in", "k", "--out", "x"]);
    assert_eq!(
        usage.output.status.code(),
        Some(2),
        "threshold 1 is a usage error"
    );
}
