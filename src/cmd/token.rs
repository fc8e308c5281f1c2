//! `nkpki token`: what a holder does with the token itself — list, enroll, list shares,
//! and the fire drill.

use super::output::{JsonFlag, print_json};
use anyhow::Context;
use nkpki::hsm::{Module, PinSource, ShareObject, TokenSelector, read_pin};
use nkpki::manifest::Manifest;
use nkpki::sss::Share;
use std::path::PathBuf;

/// Options every token command shares.
#[derive(Debug, clap::Args)]
pub struct TokenOpts {
    /// The token: its label (e.g. NK001), its serial, or a PKCS#11 URI (pkcs11:token=NK001)
    #[arg(long, value_name = "TOKEN")]
    pub token: String,
    /// PKCS#11 module (default: $NKPKI_PKCS11_MODULE, else OpenSC's opensc-pkcs11.so)
    #[arg(long, value_name = "PATH")]
    pub module: Option<PathBuf>,
    /// Read the PIN from the first line of FILE (default: $NKPKI_PIN if set, else a prompt)
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  nkpki token list\n  nkpki token enroll --token NK001 > NK001-card.json\n  \
                        nkpki token shares --token NK001\n  nkpki token drill --token NK001 --manifest manifest.json"
)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// List tokens: label, serial, manufacturer, model, PIN state
    List {
        /// PKCS#11 module (default: $NKPKI_PKCS11_MODULE, else OpenSC's opensc-pkcs11.so)
        #[arg(long, value_name = "PATH")]
        module: Option<PathBuf>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Make sure the token has the holder's signing key; print the holder card (JSON)
    Enroll(TokenOpts),
    /// List the CA shares the token holds (ids, never values)
    Shares {
        #[command(flatten)]
        token: TokenOpts,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Delete this token's share of one CA (after a re-keying ceremony, or a test)
    RemoveShare {
        #[command(flatten)]
        token: TokenOpts,
        /// The CA id whose share to delete
        #[arg(long = "ca", value_name = "CA_ID")]
        ca: String,
    },
    /// Fire drill: log in, read the share, check it against the manifest; reveals nothing
    Drill {
        #[command(flatten)]
        token: TokenOpts,
        /// The CA's manifest.json
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
        #[command(flatten)]
        output: JsonFlag,
    },
}

/// Opens the token and logs in with a PIN from the configured source.
pub fn open_logged_in(opts: &TokenOpts) -> anyhow::Result<(Module, nkpki::hsm::Token)> {
    let module = Module::load(opts.module.as_deref())?;
    let selector = TokenSelector::parse(&opts.token)?;
    let token = module.open(&selector)?;
    let pin = read_pin(&PinSource::resolve(opts.pin_file.clone()), token.label())?;
    token.login(&pin)?;
    Ok((module, token))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Sub::List { module, output } => {
            let module = Module::load(module.as_deref())?;
            let tokens = module.tokens()?;
            if output.json {
                print_json(&tokens)?;
            } else if tokens.is_empty() {
                println!("no token present (module {})", module.path().display());
            } else {
                println!(
                    "{:<16} {:<18} {:<24} {:<16} PIN",
                    "LABEL", "SERIAL", "MANUFACTURER", "MODEL"
                );
                for t in tokens {
                    println!(
                        "{:<16} {:<18} {:<24} {:<16} {}",
                        t.label,
                        t.serial,
                        t.manufacturer,
                        t.model,
                        t.pin.describe()
                    );
                }
            }
        }
        Sub::Enroll(opts) => {
            let (_module, token) = open_logged_in(&opts)?;
            let (key, created) = token.ensure_holder_key()?;
            token.prove_holder_key(&key)?;
            eprintln!(
                "{} holder key on token {}",
                if created {
                    "generated a new"
                } else {
                    "found the"
                },
                token.label()
            );
            let card = serde_json::json!({
                "nitrokey_id": token.holder_label(),
                "token_serial": token.summary().serial,
                "token_manufacturer": token.summary().manufacturer,
                "public_key_pem": key.public_key_pem(),
                "fingerprint": key.fingerprint(),
            });
            println!("{}", serde_json::to_string_pretty(&card)?);
        }
        Sub::Shares {
            token: opts,
            output,
        } => {
            let (_module, token) = open_logged_in(&opts)?;
            let shares = token.list_shares()?;
            if output.json {
                return print_json(&shares);
            }
            if shares.is_empty() {
                println!("token {} holds no nkpki share", token.label());
            }
            for s in shares {
                println!(
                    "CA {}  share {} of {} (threshold {})  holder {}  label {:?}",
                    s.ca_id,
                    s.index,
                    s.total,
                    s.threshold,
                    s.holder.as_deref().unwrap_or("-"),
                    s.label
                );
            }
        }
        Sub::Drill {
            token: opts,
            manifest,
            output,
        } => drill(&opts, &manifest, output.json)?,
        Sub::RemoveShare { token: opts, ca } => {
            let (_module, token) = open_logged_in(&opts)?;
            if !token.delete_share(&ca)? {
                anyhow::bail!(
                    "token {} holds no share of CA {ca} under nkpki's label",
                    token.label()
                );
            }
            println!("deleted the share of CA {ca} from token {}", token.label());
        }
    }
    Ok(())
}

/// What `token drill --json` prints.
#[derive(Debug, serde::Serialize)]
struct DrillReport {
    token: DrillToken,
    ca_id: String,
    ca_name: String,
    share: DrillShare,
    objects: Vec<ShareObject>,
    holder_key: DrillHolderKey,
    warnings: Vec<String>,
    seconds: f64,
}

#[derive(Debug, serde::Serialize)]
struct DrillToken {
    label: String,
    serial: String,
}

#[derive(Debug, serde::Serialize)]
struct DrillShare {
    index: u8,
    holder: Option<String>,
    threshold: u8,
    total: u8,
}

#[derive(Debug, serde::Serialize)]
struct DrillHolderKey {
    present: bool,
    fingerprint: Option<String>,
}

/// The drill's result lines (standard output, unless JSON) and warnings (standard error).
struct Say {
    json: bool,
    warnings: Vec<String>,
}

impl Say {
    fn line(&self, line: String) {
        if !self.json {
            println!("{line}");
        }
    }

    fn warn(&mut self, warning: String) {
        eprintln!("{warning}");
        self.warnings.push(warning);
    }
}

fn drill(opts: &TokenOpts, manifest_path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(manifest_path)
        .with_context(|| format!("cannot read manifest {}", manifest_path.display()))?;
    let manifest = Manifest::from_json(&text)
        .and_then(|m| m.verify())
        .with_context(|| format!("manifest {}", manifest_path.display()))?;
    let started = std::time::Instant::now();
    let mut say = Say {
        json,
        warnings: Vec::new(),
    };
    let (_module, token) = open_logged_in(opts)?;
    say.line(format!(
        "PIN:        accepted by token {} (serial {})",
        token.label(),
        token.summary().serial
    ));
    let bytes = token.read_share(&manifest.ca_id().0)?;
    let share: Share = serde_json::from_slice(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "the share object on token {} is not an nkpki share: {e}",
            token.label()
        )
    })?;
    drop(bytes);
    let what = format!("the share on token {}", token.label());
    manifest.check_share(&share, &what)?;
    say.line(format!(
        "Share:      {} of CA {} ({}) matches the manifest's commitments",
        share.describe(),
        manifest.body.ca.name,
        manifest.ca_id()
    ));
    // OpenSC keeps data objects modifiable whatever nkpki asks: check the object's label
    // and application too, as the agent finds it
    let objects = object_check(&token, &manifest.ca_id().0, &mut say)?;
    if let Some(holder) = manifest.holder(share.index)
        && holder.nitrokey_id != token.holder_label()
    {
        say.warn(format!(
            "warning: the manifest gives this share to {}, but the token is labelled {}",
            holder.nitrokey_id,
            token.label()
        ));
    }
    let fingerprint = token.holder_key()?.map(|key| key.fingerprint());
    match &fingerprint {
        Some(fp) => say.line(format!("Holder key: present, fingerprint {fp}")),
        None => say.line(format!(
            "Holder key: absent (run `nkpki token enroll --token {}`)",
            opts.token
        )),
    }
    let seconds = started.elapsed().as_secs_f64();
    say.line(format!("Drill OK in {seconds:.2} s"));
    if json {
        print_json(&DrillReport {
            token: DrillToken {
                label: token.label().to_owned(),
                serial: token.summary().serial.clone(),
            },
            ca_id: manifest.ca_id().0.clone(),
            ca_name: manifest.body.ca.name.clone(),
            share: DrillShare {
                index: share.index,
                holder: share.holder.clone(),
                threshold: manifest.threshold(),
                total: manifest.body.share_set.total,
            },
            objects,
            holder_key: DrillHolderKey {
                present: fingerprint.is_some(),
                fingerprint,
            },
            warnings: say.warnings,
            seconds,
        })?;
    }
    Ok(())
}

/// Reports the share object's label and application; warns about what differs from what
/// nkpki writes (another tool's label, an application OpenSC stored with garbage after it,
/// several objects holding a share of this CA).
fn object_check(
    token: &nkpki::hsm::Token,
    ca_id: &str,
    say: &mut Say,
) -> anyhow::Result<Vec<ShareObject>> {
    let label = nkpki::hsm::share_label(ca_id);
    let objects: Vec<_> = token
        .list_shares()?
        .into_iter()
        .filter(|s| s.ca_id == ca_id)
        .collect();
    for o in &objects {
        say.line(format!(
            "Object:     label {:?}, application {:?}",
            o.label, o.application
        ));
    }
    if objects.len() > 1 {
        say.warn(format!(
            "warning: {} objects on token {} hold a share of this CA; the agent reads the one \
             labelled {label:?}; remove the others (pkcs11-tool --delete-object)",
            objects.len(),
            token.label()
        ));
    }
    match objects.iter().find(|o| o.label == label) {
        Some(o) if o.application != nkpki::hsm::APPLICATION => say.warn(format!(
            "warning: the share object's CKA_APPLICATION reads {:?}, not {:?} (nkpki before \
             0.2 let OpenSC read past the name); the share itself is checked above",
            o.application,
            nkpki::hsm::APPLICATION
        )),
        Some(_) => {}
        None => say.warn(format!(
            "note: the share object is not labelled {label:?} (another tool wrote it); the \
             agent finds it by its content"
        )),
    }
    Ok(objects)
}
