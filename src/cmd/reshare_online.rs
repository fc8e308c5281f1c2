//! `nkpki reshare --server`: open a `reshare` session, follow it while M holders approve,
//! and write the new manifest and the packages (sealed to the new holders) into `--out`.

use super::hinted;
use super::online::{EXIT_SERVER, Exit, ServerArgs, follow_session, server_error};
use anyhow::Context;
use nkpki::fsx;
use nkpki::proto::{API, OpenReshare, ReshareDownload, ReshareHolder, SessionStatus};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// What the online reshare needs from the command line.
pub struct Online {
    pub server: ServerArgs,
    pub holders: PathBuf,
    pub threshold: u32,
    pub out: PathBuf,
    pub server_url: Option<String>,
    pub server_cert_sha256: Option<String>,
    pub insecure_http: bool,
}

pub fn run(args: Online) -> anyhow::Result<()> {
    let ca_id = args.server.ca()?.to_owned();
    let text = std::fs::read_to_string(&args.holders)
        .with_context(|| format!("cannot read holders file {}", args.holders.display()))?;
    // the server checks every field (and audits a refusal); here only the JSON's shape
    let holders: Vec<ReshareHolder> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a holders file", args.holders.display()))?;
    if !fsx::is_absent_or_empty(&args.out)? {
        return Err(hinted(
            format!("{} already exists and is not empty", args.out.display()),
            "choose a new --out directory; an earlier ceremony or reshare is never overwritten",
        ));
    }
    let client = args.server.operator_client()?;
    let request = OpenReshare {
        ca_id: ca_id.clone(),
        threshold: args.threshold,
        holders,
        server_url: Some(
            args.server_url
                .clone()
                .unwrap_or_else(|| args.server.url().unwrap_or_default().to_owned()),
        ),
        server_cert_sha256: args.server_cert_sha256.clone(),
        insecure_http: args.insecure_http,
    };
    let started = std::time::Instant::now();
    let status: SessionStatus = client
        .post(&format!("{API}/reshare"), &request)
        .map_err(server_error)?;
    eprintln!(
        "Reshare of CA {ca_id} to {} of {} holders: the current holders see the old and new \
         sets on their agents",
        request.threshold,
        request.holders.len()
    );
    let status = follow_session(&client, status, false)?;
    let download: ReshareDownload = client
        .get(&format!("{API}/sessions/{}/packages", status.session_id))
        .map_err(|e| Exit(EXIT_SERVER, e.to_string()))?;
    write_out(&args.out, &download)?;

    println!("CA id:        {} (unchanged)", download.ca_id);
    println!(
        "Share set:    version {}, pending: the current set signs until {} new holders enroll",
        download.set_version, download.needed
    );
    println!(
        "Packages:     {} (sealed to each holder's age recipient)",
        download
            .result
            .packages
            .iter()
            .map(|p| p.holder_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("Approved by:  {}", status.approved.join(", "));
    println!("Output:       {}/", args.out.display());
    println!("Took:         {:.2} s", started.elapsed().as_secs_f64());
    eprintln!(
        "next: give each holder its package; each deploys it (`nkpki deploy`) and restarts its \
         agent, which enrolls the token for the new set. At the {}th enrollment the server \
         switches; then remove every old share object (`nkpki token drill` names them)",
        download.needed
    );
    Ok(())
}

/// Writes the new set as an offline reshare lays it out: `manifest.json`,
/// `enrollment.json`, `reshare.json`, `reshare.log` and `packages/` (0700, files 0600).
fn write_out(out: &std::path::Path, d: &ReshareDownload) -> anyhow::Result<()> {
    let staged =
        fsx::StagedDir::new(out).with_context(|| format!("cannot create {}", out.display()))?;
    let dir = staged.path();
    let write = |name: &str, text: &str, mode: u32| {
        fsx::write_new(&dir.join(name), text.as_bytes(), mode, false)
            .with_context(|| format!("cannot write {name}"))
    };
    write("manifest.json", &d.result.manifest_json, 0o644)?;
    write("enrollment.json", &d.result.enrollment_json, 0o644)?;
    write("reshare.json", &d.result.record_json, 0o644)?;
    write("reshare.log", &d.result.log, 0o644)?;
    let packages = dir.join("packages");
    std::fs::create_dir(&packages).context("cannot create packages/")?;
    std::fs::set_permissions(&packages, std::fs::Permissions::from_mode(0o700))?;
    for p in &d.result.packages {
        // a file name from the server: only NK###.nkpkg is written
        let name = format!("{}.{}", p.holder_id, nkpki::package::EXTENSION);
        if p.file_name != name || nkpki::ceremony::NitrokeyId::parse(&p.holder_id).is_none() {
            anyhow::bail!(
                "the server sent a package with an unexpected name {:?}",
                p.file_name
            );
        }
        fsx::write_new(&packages.join(&name), p.armored.as_bytes(), 0o600, false)
            .with_context(|| format!("cannot write packages/{name}"))?;
    }
    staged
        .commit()
        .with_context(|| format!("cannot move the reshare into {}", out.display()))
}
