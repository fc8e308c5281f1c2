//! The Debian package, man pages and completions built from the real binary, and
//! `serve --config`: what a packager and an operator rely on.
//!
//! With `CI=true` and root, the package is installed into the real system with `dpkg -i`
//! (and purged afterwards); otherwise it is unpacked with `dpkg -x` and checked there.

use crate::harness::{Env, Run};
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn nkpki_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("nkpki")
}

/// Every visible subcommand path, read from `--help` the way a user sees it.
fn subcommands(env: &Env, path: &[String]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let help = env.nkpki(&args).ok().stdout();
    let names: Vec<String> = help
        .lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|name| name != "help")
        .collect();
    let mut all = Vec::new();
    for name in names {
        let mut sub = path.to_vec();
        sub.push(name);
        all.extend(subcommands(env, &sub));
        all.push(sub);
    }
    all
}

fn build_deb(env: &Env) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = env.path("deb");
    let mut cmd = assert_cmd::Command::new(root.join("scripts/deb.sh"));
    cmd.arg(nkpki_bin())
        .arg(&out)
        .env("NKPKI_DEB_COMPRESSION", "gzip");
    let run = Run {
        output: cmd.output().unwrap(),
        cmdline: "scripts/deb.sh".into(),
    };
    let deb = PathBuf::from(run.ok().stdout().trim());
    assert!(deb.exists(), "{} missing", deb.display());
    deb
}

/// `systemd-analyze verify` on a unit, as a system or a user unit; a template is checked
/// as an instance of it. With `unpacked`, the unit runs the binary and names the man page
/// found below that directory rather than under /usr.
fn verify_unit(env: &Env, unit: &Path, user: bool, unpacked: Option<&Path>) {
    let name = unit
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .replace("@.", "@0a1b2c3d.");
    let dir = env.path(if user { "units/user" } else { "units/system" });
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = std::fs::read_to_string(unit).unwrap();
    if let Some(root) = unpacked {
        let bin = root.join("usr/bin/nkpki");
        text = text.replace("/usr/bin/nkpki", bin.to_str().unwrap());
    }
    let copy = dir.join(name);
    std::fs::write(&copy, text).unwrap();
    let runtime = env.path("xdg-runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let copy = copy.to_str().unwrap();
    let mut args = vec!["verify", copy];
    if user {
        args.insert(0, "--user");
    }
    let mut cmd = assert_cmd::Command::new("systemd-analyze");
    cmd.args(&args).env("XDG_RUNTIME_DIR", &runtime);
    if let Some(root) = unpacked {
        cmd.env("MANPATH", root.join("usr/share/man"));
    }
    let run = Run {
        output: cmd.output().unwrap(),
        cmdline: format!("systemd-analyze {}", args.join(" ")),
    };
    run.ok();
    assert!(
        run.stderr().trim().is_empty(),
        "systemd-analyze has remarks on {copy}: {}",
        run.stderr()
    );
}

#[test]
fn the_deb_holds_binary_man_pages_completions_units_and_config() {
    let env = Env::new();
    let deb = build_deb(&env);
    let deb = deb.to_str().unwrap();
    eprintln!("package: {} bytes", std::fs::metadata(deb).unwrap().len());

    let info = env.tool("dpkg-deb", &["-I", deb]).ok().stdout();
    for field in [
        "Package: nkpki",
        "Depends: libc6 (>= 2.",
        "Recommends: opensc",
        "conffiles",
        "postinst",
    ] {
        assert!(info.contains(field), "control lacks {field:?}:\n{info}");
    }
    let contents = env.tool("dpkg-deb", &["-c", deb]).ok().stdout();
    for path in [
        "./usr/bin/nkpki",
        "./usr/share/man/man1/nkpki.1.gz",
        "./usr/share/bash-completion/completions/nkpki",
        "./usr/share/zsh/vendor-completions/_nkpki",
        "./usr/share/fish/vendor_completions.d/nkpki.fish",
        "./lib/systemd/system/nkpki-serve.service",
        "./usr/lib/systemd/user/nkpki-agent@.service",
        "./etc/nkpki/serve.toml",
        "./usr/share/doc/nkpki/copyright",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "package lacks {path}"
        );
    }

    let root = env.path("root");
    env.tool("dpkg-deb", &["-x", deb, root.to_str().unwrap()])
        .ok();
    let bin = root.join("usr/bin/nkpki");
    let version = env.tool(&bin, &["--version"]).ok().stdout();
    assert!(version.starts_with("nkpki "), "{version}");

    // a man page for every subcommand, nested ones too
    let man1 = root.join("usr/share/man/man1");
    let pages: BTreeSet<String> = std::fs::read_dir(&man1)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let commands = subcommands(&env, &[]);
    assert!(commands.len() > 20, "only {} subcommands", commands.len());
    for command in commands {
        let page = format!("nkpki-{}.1.gz", command.join("-"));
        assert!(pages.contains(&page), "no man page {page} in {pages:?}");
    }
    let manpath = root.join("usr/share/man");
    let found = Run {
        output: std::process::Command::new("man")
            .args(["-w", "nkpki-serve"])
            .env("MANPATH", &manpath)
            .output()
            .unwrap(),
        cmdline: "man -w nkpki-serve".into(),
    };
    assert!(found.ok().stdout().trim().ends_with("nkpki-serve.1.gz"));

    // completions: non-empty, and the bash one parses
    for file in [
        "usr/share/bash-completion/completions/nkpki",
        "usr/share/zsh/vendor-completions/_nkpki",
        "usr/share/fish/vendor_completions.d/nkpki.fish",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(text.contains("serve"), "{file} does not complete serve");
    }
    let bash = root.join("usr/share/bash-completion/completions/nkpki");
    env.tool("bash", &["-n", bash.to_str().unwrap()]).ok();

    // the shipped config file is one the binary accepts
    let conf = root.join("etc/nkpki/serve.toml");
    let conf = conf.to_str().unwrap();
    let server = env.serve_with(
        &[
            "serve",
            "--config",
            conf,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "data",
        ],
        &[],
    );
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );

    // the units, checked with the extracted binary and man pages in place of /usr's
    let serve_unit = root.join("lib/systemd/system/nkpki-serve.service");
    verify_unit(&env, &serve_unit, false, Some(&root));
    let agent_unit = root.join("usr/lib/systemd/user/nkpki-agent@.service");
    verify_unit(&env, &agent_unit, true, Some(&root));
}

#[test]
fn the_deb_installs_with_dpkg_on_a_ci_machine() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !ci || !rustix::process::geteuid().is_root() {
        eprintln!("skipped: installs into the real system only with CI=true as root");
        return;
    }
    let env = Env::new();
    let deb = build_deb(&env);
    let _purge = Purge;
    env.tool("dpkg", &["-i", deb.to_str().unwrap()]).ok();

    let version = env.tool("/usr/bin/nkpki", &["--version"]).ok().stdout();
    assert!(version.starts_with("nkpki "), "{version}");
    let page = env.tool("man", &["-w", "nkpki"]).ok().stdout();
    assert_eq!(page.trim(), "/usr/share/man/man1/nkpki.1.gz");
    verify_unit(
        &env,
        Path::new("/lib/systemd/system/nkpki-serve.service"),
        false,
        None,
    );
    verify_unit(
        &env,
        Path::new("/usr/lib/systemd/user/nkpki-agent@.service"),
        true,
        None,
    );

    // postinst: the nkpki user, its private state directory, a config only it can read
    env.tool("getent", &["passwd", "nkpki"]).ok();
    let state = std::fs::metadata("/var/lib/nkpki").unwrap();
    assert_eq!(state.mode() & 0o777, 0o700);
    let conf = std::fs::metadata("/etc/nkpki/serve.toml").unwrap();
    assert_eq!(conf.mode() & 0o777, 0o640);
    assert_ne!(state.uid(), 0, "/var/lib/nkpki belongs to root");
    installed_server_runs_as_nkpki();
    assert_eq!(conf.uid(), 0);
    assert_eq!(
        state.gid(),
        conf.gid(),
        "serve.toml is not in the nkpki group"
    );
}

/// The installed binary, as the nkpki user (setpriv execs it, so the kill reaches it), with
/// the installed config file and state directory: what the unit runs.
fn installed_server_runs_as_nkpki() {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid",
        "nkpki",
        "--regid",
        "nkpki",
        "--init-groups",
        "--",
    ])
    .args([
        "/usr/bin/nkpki",
        "serve",
        "--config",
        "/etc/nkpki/serve.toml",
    ])
    .args(["--listen", "127.0.0.1:0"])
    .current_dir("/")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped());
    let mut proc = crate::harness::Proc {
        child: cmd.spawn().unwrap(),
    };
    let stdout = proc.child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert!(
        line.starts_with("listening on http://127.0.0.1:"),
        "serve said {line:?}"
    );
    let db = std::fs::metadata("/var/lib/nkpki/nkpki.sqlite3").unwrap();
    let state = std::fs::metadata("/var/lib/nkpki").unwrap();
    assert_eq!(
        db.uid(),
        state.uid(),
        "the database is not the nkpki user's"
    );
}

/// Removes the installed package even when an assertion fails.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("dpkg")
            .args(["--purge", "nkpki"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

fn write_config(env: &Env, text: &str) -> String {
    env.write("serve.toml", text).to_str().unwrap().to_owned()
}

#[test]
fn serve_config_refuses_an_unknown_key_naming_it_and_its_line() {
    let env = Env::new();
    let conf = write_config(
        &env,
        "listen = \"127.0.0.1:0\"\nlisten-address = \"::1:8443\"\n",
    );
    env.nkpki(&["serve", "--config", &conf]).fails_with(&[
        "serve.toml line 2: unknown key `listen-address`",
        "hint: the keys are the long flags of `nkpki serve`",
        "data-dir",
    ]);
}

#[test]
fn serve_config_refuses_a_wrong_type_naming_the_key() {
    let env = Env::new();
    let conf = write_config(&env, "\n\nmax-connections = \"many\"\n");
    env.nkpki(&["serve", "--config", &conf])
        .fails_with(&["serve.toml line 3: key `max-connections`: must be an integer, not string"]);
    let conf = write_config(&env, "session-ttl = 1\n");
    env.nkpki(&["serve", "--config", &conf])
        .fails_with(&["key `session-ttl`", "1 is not in 10..=86400"]);
    let conf = write_config(&env, "tls-cert = \"/etc/nkpki/server.crt\"\n");
    env.nkpki(&["serve", "--config", &conf, "--listen", "127.0.0.1:0"])
        .fails_with(&["a TLS certificate needs its key"]);
}

#[test]
fn serve_flags_override_the_config_file_and_it_overrides_the_defaults() {
    let env = Env::new();
    // 192.0.2.1 (TEST-NET-1) is no address of this machine: a server listening there fails
    let conf = write_config(&env, "listen = \"192.0.2.1:1\"\ndata-dir = \"from-file\"\n");
    let _server = env.serve_with(
        &["serve", "--config", &conf, "--listen", "127.0.0.1:0"],
        &[],
    );
    assert!(
        env.path("from-file").is_dir(),
        "data-dir from the file not used"
    );
}

#[test]
fn serve_nkpki_variables_override_the_config_file() {
    let env = Env::new();
    let conf = write_config(&env, "listen = \"192.0.2.1:1\"\ndata-dir = \"from-file\"\n");
    let _server = env.serve_with(
        &["serve"],
        &[
            ("NKPKI_CONFIG", &conf),
            ("NKPKI_LISTEN", "127.0.0.1:0"),
            ("NKPKI_DATA_DIR", "from-env"),
        ],
    );
    assert!(env.path("from-env").is_dir(), "NKPKI_DATA_DIR not used");
    assert!(
        !env.path("from-file").exists(),
        "the file beat NKPKI_DATA_DIR"
    );
}
