//! A throwaway working directory per test, with helpers that run `nkpki` and the peers and
//! print the exact command line they ran.

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::process::Output;

pub struct Env {
    pub dir: tempfile::TempDir,
    /// Variables set for every command run (SoftHSM configuration, module path).
    envs: Vec<(String, String)>,
}

/// SoftHSM2's PKCS#11 module (Debian's path).
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// User PIN of every test token.
pub const PIN: &str = "123456";
const SO_PIN: &str = "12345678";

/// Where `make deps` puts pkilint.
pub fn pkilint(tool: &str) -> PathBuf {
    pkilint_bin(tool)
}

fn pkilint_bin(tool: &str) -> PathBuf {
    let dir = std::env::var_os("NKPKI_PKILINT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pkilint-venv/bin"));
    let bin = dir.join(tool);
    assert!(
        bin.exists(),
        "{} missing: run `make deps` (or set NKPKI_PKILINT_BIN)",
        bin.display()
    );
    bin
}

pub struct Run {
    pub output: Output,
    pub cmdline: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert!(
            self.output.status.success(),
            "`{}` failed ({}):\nstdout: {}\nstderr: {}",
            self.cmdline,
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// Asserts a clean failure (exit 1, no panic) whose stderr contains every `needle`.
    pub fn fails_with(&self, needles: &[&str]) -> &Self {
        let err = self.stderr();
        assert_eq!(
            self.output.status.code(),
            Some(1),
            "`{}` should fail with exit 1; stderr: {err}",
            self.cmdline
        );
        assert!(
            !err.contains("panicked"),
            "`{}` panicked: {err}",
            self.cmdline
        );
        for needle in needles {
            assert!(
                err.contains(needle),
                "`{}`: stderr lacks {needle:?}:\n{err}",
                self.cmdline
            );
        }
        self
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// A holder of the test ceremony: id and the age identity file made by `age-keygen`.
#[derive(Clone)]
pub struct Holder {
    pub id: String,
    pub key_file: PathBuf,
    pub recipient: String,
}

impl Env {
    pub fn new() -> Self {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
            envs: Vec::new(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    fn run(&self, mut cmd: Command, cmdline: String) -> Run {
        cmd.current_dir(self.dir.path());
        cmd.env_remove("NKPKI_PIN");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let output = cmd.output().expect("spawn");
        Run { output, cmdline }
    }

    pub fn nkpki(&self, args: &[&str]) -> Run {
        self.nkpki_stdin(args, b"")
    }

    pub fn nkpki_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut cmd = Command::cargo_bin("nkpki").expect("nkpki binary");
        cmd.args(args).write_stdin(stdin.to_vec());
        self.run(cmd, format!("nkpki {}", args.join(" ")))
    }

    pub fn tool(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Run {
        let program = program.as_ref();
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.run(
            cmd,
            format!("{} {}", program.to_string_lossy(), args.join(" ")),
        )
    }

    pub fn openssl(&self, args: &[&str]) -> Run {
        self.tool("openssl", args)
    }

    /// Runs `nkpki ARGS` (a command given `--insert-tokens`) with a one-slot "reader":
    /// every SoftHSM token is taken out first, and at each "Insert a holder's token" prompt
    /// the previous token goes out and the next one (in file-name order) comes in, then
    /// Enter. The command must succeed; returns how many tokens went in and its stderr.
    pub fn run_inserting_tokens(&self, args: &[&str]) -> (usize, String) {
        use std::io::BufRead;
        let away = self.path("away");
        std::fs::create_dir(&away).unwrap();
        let mut tokens: Vec<_> = std::fs::read_dir(self.token_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        tokens.sort();
        for t in &tokens {
            std::fs::rename(t, away.join(t.file_name().unwrap())).unwrap();
        }
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("nkpki"))
            .args(args)
            .current_dir(self.dir.path())
            .env("SOFTHSM2_CONF", self.path("softhsm2.conf"))
            .env("NKPKI_PKCS11_MODULE", SOFTHSM_MODULE)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut inserted = 0;
        let mut transcript = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            transcript.push_str(&line);
            transcript.push('\n');
            if line.starts_with("Insert a holder's token") {
                if inserted > 0 {
                    let prev = &tokens[inserted - 1];
                    std::fs::rename(prev, away.join(prev.file_name().unwrap())).unwrap();
                }
                let next = &tokens[inserted];
                std::fs::rename(away.join(next.file_name().unwrap()), next).unwrap();
                inserted += 1;
                std::io::Write::write_all(&mut stdin, b"\n").unwrap();
            }
        }
        assert!(child.wait().unwrap().success(), "{transcript}");
        (inserted, transcript)
    }

    /// The serial of the certificate at `cert` as OpenSSL prints it, lower-case hex.
    pub fn cert_serial(&self, cert: &str) -> String {
        self.openssl(&["x509", "-in", cert, "-noout", "-serial"])
            .ok()
            .stdout()
            .trim()
            .trim_start_matches("serial=")
            .to_lowercase()
    }

    /// `nkpki revoke` of `serial` (keyCompromise) on the server at `url` with the
    /// operator token `op.token`, the new CRL written to `crl_out`.
    pub fn revoke_online(&self, url: &str, ca_id: &str, serial: &str, crl_out: &str) {
        self.nkpki(&[
            "revoke",
            "--server",
            url,
            "--ca",
            ca_id,
            "--serial",
            serial,
            "--reason",
            "keyCompromise",
            "--api-token-file",
            "op.token",
            "--crl-out",
            crl_out,
        ])
        .ok();
    }

    /// `openssl verify -CAfile ca cert` must say OK.
    pub fn openssl_verify(&self, ca: &str, cert: &str) {
        let run = self.openssl(&["verify", "-CAfile", ca, cert]);
        run.ok();
        assert!(run.stdout().contains(": OK"), "{}", run.stdout());
    }

    /// pkilint finds nothing at WARNING or above in a certificate.
    pub fn pkilint_cert(&self, cert: &str) {
        let run = self.tool(
            pkilint_bin("lint_pkix_cert"),
            &["lint", "-s", "WARNING", cert],
        );
        assert!(
            run.output.status.success(),
            "pkilint on {cert}: {}{}",
            run.stdout(),
            run.stderr()
        );
    }

    /// pkilint finds nothing at WARNING or above in an issuer/subject pair.
    pub fn pkilint_chain(&self, issuer: &str, subject: &str) {
        let run = self.tool(
            pkilint_bin("lint_pkix_signer_signee_cert_chain"),
            &["lint", "-s", "WARNING", issuer, subject],
        );
        assert!(
            run.output.status.success(),
            "pkilint chain {issuer} -> {subject}: {}{}",
            run.stdout(),
            run.stderr()
        );
    }

    /// Makes `n` holders NK001…, each with an age key from `age-keygen`.
    pub fn holders(&self, n: usize) -> Vec<Holder> {
        (1..=n)
            .map(|i| {
                let id = format!("NK{i:03}");
                let key_file = self.path(&format!("{id}.key"));
                self.tool("age-keygen", &["-o", key_file.to_str().unwrap()])
                    .ok();
                let text = std::fs::read_to_string(&key_file).unwrap();
                let recipient = text
                    .lines()
                    .find_map(|l| l.strip_prefix("# public key: "))
                    .expect("age-keygen public key line")
                    .to_owned();
                Holder {
                    id,
                    key_file,
                    recipient,
                }
            })
            .collect()
    }

    /// Writes holders.json; holders listed in `without_recipient` get passphrases.
    pub fn holders_json(&self, holders: &[Holder], without_recipient: &[&str]) -> PathBuf {
        let entries: Vec<serde_json::Value> = holders
            .iter()
            .map(|h| {
                let mut v = serde_json::json!({
                    "nitrokey_id": h.id,
                    "holder_name": format!("Holder {}", h.id),
                    "holder_email": format!("{}@example.org", h.id.to_lowercase()),
                    "location": "Paris",
                });
                if !without_recipient.contains(&h.id.as_str()) {
                    v["age_recipient"] = serde_json::Value::String(h.recipient.clone());
                }
                v
            })
            .collect();
        self.write("holders.json", serde_json::to_vec_pretty(&entries).unwrap())
    }

    /// `nkpki ca-init` into `ca/` from the holders.json already written, with the tests'
    /// usual subject and 5-year validity, plus `extra` flags.
    pub fn ca_init(&self, key: &str, threshold: usize, extra: &[&str]) -> Run {
        let threshold = threshold.to_string();
        let mut args = vec![
            "ca-init",
            "--name",
            "Test Root CA",
            "--org",
            "nkpki tests",
            "--country",
            "FR",
            "--key",
            key,
            "--validity-years",
            "5",
            "--threshold",
            &threshold,
            "--holders",
            "holders.json",
            "--out",
            "ca",
        ];
        args.extend_from_slice(extra);
        self.nkpki(&args)
    }

    /// Runs a ceremony into `ca/` with all holders sealed to age recipients.
    pub fn ceremony(&self, key: &str, n: usize, threshold: usize) -> Vec<Holder> {
        let holders = self.holders(n);
        self.holders_json(&holders, &[]);
        self.ca_init(key, threshold, &[]).ok();
        holders
    }

    /// `openssl req` with a fresh key: `newkey` as given to -newkey (or `ed25519`).
    pub fn csr(&self, name: &str, newkey: &[&str], subject: &str, extensions: &[&str]) -> String {
        let csr = format!("{name}.csr");
        let key = format!("{name}.key");
        let mut args = vec![
            "req", "-new", "-nodes", "-keyout", &key, "-subj", subject, "-out", &csr,
        ];
        args.extend_from_slice(newkey);
        for e in extensions {
            args.push("-addext");
            args.push(e);
        }
        self.openssl(&args).ok();
        csr
    }

    /// Offline signing with the given holders' shares; returns the run.
    pub fn sign(
        &self,
        holders: &[&Holder],
        csr: &str,
        profile: &str,
        days: &str,
        out: &str,
    ) -> Run {
        self.sign_with(holders, csr, profile, days, out, &[])
    }

    /// [`Env::sign`] with `extra` flags.
    pub fn sign_with(
        &self,
        holders: &[&Holder],
        csr: &str,
        profile: &str,
        days: &str,
        out: &str,
        extra: &[&str],
    ) -> Run {
        let mut args: Vec<String> = vec![
            "sign".into(),
            "--offline".into(),
            "--manifest".into(),
            "ca/manifest.json".into(),
            "--csr".into(),
            csr.into(),
            "--profile".into(),
            profile.into(),
            "--days".into(),
            days.into(),
            "--out".into(),
            out.into(),
        ];
        for h in holders {
            args.push("--share".into());
            args.push(format!("ca/shares/{}.age", h.id));
            args.push("--identity".into());
            args.push(h.key_file.to_string_lossy().into_owned());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nkpki(&refs)
    }

    /// Every regular file below `dir`, recursively.
    pub fn files_below(&self, dir: &str) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(p).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path(dir), &mut out);
        out
    }
}

/// True when `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

impl Env {
    /// Sets `key` to `value` in the environment of every command this `Env` runs.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// A throwaway SoftHSM2 token directory for this test, with one token per label (user
    /// PIN [`PIN`]); every command this `Env` runs sees it. Also writes `pin.txt`.
    pub fn with_softhsm(mut self, labels: &[&str]) -> Self {
        let tokens = self.path("softhsm-tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = self.write(
            "softhsm2.conf",
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        );
        self.envs
            .push(("SOFTHSM2_CONF".into(), conf.display().to_string()));
        self.envs
            .push(("NKPKI_PKCS11_MODULE".into(), SOFTHSM_MODULE.into()));
        for label in labels {
            self.init_token(label);
        }
        self.write("pin.txt", format!("{PIN}\n"));
        self
    }

    pub fn init_token(&self, label: &str) {
        self.tool(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                SO_PIN,
                "--pin",
                PIN,
            ],
        )
        .ok();
    }

    /// The SoftHSM token directory.
    pub fn token_dir(&self) -> PathBuf {
        self.path("softhsm-tokens")
    }

    /// `pkcs11-tool` on the SoftHSM module, logged in to token `label`.
    pub fn pkcs11_tool(&self, label: &str, args: &[&str]) -> Run {
        let mut all = vec![
            "--module",
            SOFTHSM_MODULE,
            "--token-label",
            label,
            "--login",
            "--pin",
            PIN,
        ];
        all.extend_from_slice(args);
        self.tool("pkcs11-tool", &all)
    }

    /// A packaged ceremony into `ca/` (packages sealed to each holder's age key).
    pub fn packaged_ceremony(&self, n: usize, threshold: usize) -> Vec<Holder> {
        self.packaged_ceremony_with_key("ecdsa-p256", n, threshold)
    }

    /// [`Env::packaged_ceremony`] for a CA key of type `key` (`rsa-2048`, `ecdsa-p256`…).
    pub fn packaged_ceremony_with_key(&self, key: &str, n: usize, threshold: usize) -> Vec<Holder> {
        let holders = self.holders(n);
        self.holders_json(&holders, &[]);
        self.ca_init(
            key,
            threshold,
            &["--package", "--server-url", "https://pki.example.org:8443"],
        )
        .ok();
        holders
    }

    /// A packaged ceremony whose every package is deployed onto the token of its holder's
    /// label (tokens made by [`Env::with_softhsm`]).
    pub fn packaged_and_deployed(&self, n: usize, threshold: usize) -> Vec<Holder> {
        let holders = self.packaged_ceremony(n, threshold);
        for h in &holders {
            self.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
                .ok();
        }
        holders
    }

    /// `nkpki deploy` of holder `h`'s package onto token `token`.
    pub fn deploy(&self, h: &Holder, package: &str, token: &str, extra: &[&str]) -> Run {
        let cfg = format!("cfg-{}", h.id);
        let key = h.key_file.to_string_lossy().into_owned();
        let mut args = vec![
            "deploy",
            package,
            "--token",
            token,
            "--identity",
            &key,
            "--pin-file",
            "pin.txt",
            "--config-dir",
            &cfg,
        ];
        args.extend_from_slice(extra);
        self.nkpki(&args)
    }
}

/// A background process killed when dropped.
pub struct Proc {
    pub child: std::process::Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `nkpki serve`.
pub struct Server {
    pub proc: Proc,
    pub url: String,
}

impl Env {
    fn spawn_with(
        &self,
        args: &[&str],
        stdout: std::process::Stdio,
        log: &str,
        overrides: &[(&str, &str)],
    ) -> Proc {
        let log = std::fs::File::create(self.path(log)).unwrap();
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("nkpki"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(log);
        cmd.env_remove("NKPKI_PIN");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        for (k, v) in overrides {
            cmd.env(k, v);
        }
        Proc {
            child: cmd.spawn().unwrap(),
        }
    }

    /// Starts `nkpki serve` on a free loopback port with `data/` as its data directory.
    pub fn serve(&self, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"];
        args.extend_from_slice(extra);
        self.serve_with(&args, &[])
    }

    /// Starts `nkpki` with exactly `args` (a `serve` that must print where it listens) and
    /// these extra variables.
    pub fn serve_with(&self, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut proc = self.spawn_with(args, std::process::Stdio::piped(), "serve.log", envs);
        let stdout = proc.child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("serve said {line:?}"))
            .to_owned();
        Server { proc, url }
    }

    /// A SoftHSM configuration that sees only token `label`, as a holder's machine sees
    /// only its own token (a copy of it: several processes on one SoftHSM directory race).
    pub fn own_token_conf(&self, label: &str) -> PathBuf {
        let list: serde_json::Value =
            serde_json::from_str(&self.nkpki(&["token", "list", "--json"]).ok().stdout()).unwrap();
        let serial = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["label"] == label)
            .unwrap()["serial"]
            .as_str()
            .unwrap()
            .to_owned();
        let dir = std::fs::read_dir(self.token_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .replace('-', "")
                    .ends_with(&serial)
            })
            .unwrap();
        let home = self.path(&format!("machine-{label}"));
        std::fs::create_dir_all(home.join("tokens")).unwrap();
        // a copy: SoftHSM does not follow symbolic links in its token directory
        let copy = home.join("tokens").join(dir.file_name().unwrap());
        if !copy.exists() {
            self.tool("cp", &["-a", dir.to_str().unwrap(), copy.to_str().unwrap()])
                .ok();
        }
        let conf = home.join("softhsm2.conf");
        std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", home.join("tokens").display())).unwrap();
        conf
    }

    /// Starts holder `id`'s agent (deployed with [`Env::deploy`]) with an approval rule, on
    /// a "machine" that sees only its own token (`--insecure-http` for a loopback server).
    pub fn agent(&self, id: &str, ca_id: &str, url: &str, rule: &[&str]) -> Proc {
        let conf = self.own_token_conf(id);
        let config = format!("cfg-{id}/{ca_id}/agent.json");
        let mut args = vec![
            "agent",
            "--config",
            &config,
            "--pin-file",
            "pin.txt",
            "--server",
            url,
        ];
        if url.starts_with("http://") {
            args.push("--insecure-http");
        }
        args.extend_from_slice(rule);
        self.spawn_with(
            &args,
            std::process::Stdio::null(),
            &format!("agent-{id}.log"),
            &[("SOFTHSM2_CONF", conf.to_str().unwrap())],
        )
    }

    /// The SHA-256 fingerprint of `ca/ca.crt` as OpenSSL prints it (`AA:BB:…`).
    pub fn ca_fingerprint(&self, dir: &str) -> String {
        let cert = format!("{dir}/ca.crt");
        let out = self
            .openssl(&["x509", "-in", &cert, "-noout", "-fingerprint", "-sha256"])
            .ok()
            .stdout();
        out.trim()
            .split_once('=')
            .expect("openssl fingerprint line")
            .1
            .to_owned()
    }

    /// Makes an operator API token with role `ca-admin` in `data/`, writes it to
    /// `admin.token` and returns it.
    pub fn admin_token(&self) -> String {
        let token = self
            .nkpki(&[
                "serve",
                "token",
                "create",
                "--data-dir",
                "data",
                "--name",
                "admin",
                "--role",
                "ca-admin",
            ])
            .ok()
            .stdout()
            .trim()
            .to_owned();
        self.write("admin.token", &token);
        token
    }

    /// Registers `ca/` with the server data directory and makes an operator token file.
    pub fn register(&self) -> String {
        let fingerprint = self.ca_fingerprint("ca");
        self.nkpki(&[
            "serve",
            "ca",
            "add",
            "--data-dir",
            "data",
            "--manifest",
            "ca/manifest.json",
            "--enrollment",
            "ca/enrollment.json",
            "--expect-fingerprint",
            &fingerprint,
        ])
        .ok();
        let token = self
            .nkpki(&[
                "serve",
                "token",
                "create",
                "--data-dir",
                "data",
                "--name",
                "alice",
            ])
            .ok()
            .stdout();
        self.write("op.token", token.trim());
        self.ca_id()
    }

    /// The CA id of `ca/manifest.json`.
    pub fn ca_id(&self) -> String {
        let manifest: serde_json::Value =
            serde_json::from_slice(&self.read("ca/manifest.json")).unwrap();
        manifest["signed"]["ca_id"].as_str().unwrap().to_owned()
    }

    /// Waits until `pred` holds on the file's text (up to `secs`).
    pub fn wait_for(&self, file: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let text = std::fs::read_to_string(self.path(file)).unwrap_or_default();
            if pred(&text) || std::time::Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// The children of process `pid` (its session workers, for `serve`).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}
