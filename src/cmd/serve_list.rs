//! `serve ca list` and `serve token list`: the server's CAs and operators' API tokens, as a
//! table or as JSON.

use super::output::{print_json, rfc3339};
use nkpki::pki::CertificateSummary;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
struct CaJson {
    ca_id: String,
    name: String,
    registered_at: Option<String>,
    threshold: u8,
    total: u8,
    certificate: CertificateSummary,
    holders: Vec<HolderJson>,
}

#[derive(Debug, Serialize)]
struct HolderJson {
    holder_id: String,
    share_index: u8,
    enrolled: bool,
    last_seen: Option<String>,
}

#[derive(Debug, Serialize)]
struct ApiTokenJson {
    name: String,
    role: String,
    created_at: Option<String>,
    revoked: bool,
    revoked_at: Option<String>,
}

fn when(unix: Option<i64>) -> String {
    unix.and_then(rfc3339).unwrap_or_else(|| "-".into())
}

pub fn cas(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let cas = nkpki::server::list_cas(data_dir)?;
    if json {
        let out: Vec<CaJson> = cas
            .into_iter()
            .map(|ca| CaJson {
                registered_at: rfc3339(ca.registered_at),
                holders: ca
                    .holders
                    .into_iter()
                    .map(|h| HolderJson {
                        enrolled: h.public_key_pem.is_some(),
                        last_seen: h.last_seen.and_then(rfc3339),
                        holder_id: h.holder_id,
                        share_index: h.share_index,
                    })
                    .collect(),
                ca_id: ca.ca_id,
                name: ca.name,
                threshold: ca.threshold,
                total: ca.total,
                certificate: ca.certificate,
            })
            .collect();
        return print_json(&out);
    }
    if cas.is_empty() {
        println!("no CA registered in {}", data_dir.display());
    }
    for ca in cas {
        println!(
            "CA {}  {}  {} of {}  registered {}  certificate valid until {}",
            ca.ca_id,
            nkpki::pki::text::escape(&ca.name),
            ca.threshold,
            ca.total,
            when(Some(ca.registered_at)),
            ca.certificate.not_after
        );
        for h in ca.holders {
            println!(
                "  {:<8} share {:<3} {:<12} last seen {}",
                h.holder_id,
                h.share_index,
                if h.public_key_pem.is_some() {
                    "enrolled"
                } else {
                    "not enrolled"
                },
                when(h.last_seen)
            );
        }
    }
    Ok(())
}

pub fn api_tokens(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let tokens = nkpki::server::list_api_tokens(data_dir)?;
    if json {
        let out: Vec<ApiTokenJson> = tokens
            .into_iter()
            .map(|t| ApiTokenJson {
                created_at: rfc3339(t.created_at),
                revoked_at: t.revoked_at.and_then(rfc3339),
                name: t.name,
                role: t.role,
                revoked: t.revoked,
            })
            .collect();
        return print_json(&out);
    }
    if tokens.is_empty() {
        println!("no API token in {}", data_dir.display());
        return Ok(());
    }
    println!("{:<24} {:<10} {:<22} REVOKED", "NAME", "ROLE", "CREATED");
    for t in tokens {
        let revoked = match (t.revoked, t.revoked_at) {
            (false, _) => "-".to_owned(),
            (true, Some(at)) => when(Some(at)),
            (true, None) => "yes".to_owned(),
        };
        println!(
            "{:<24} {:<10} {:<22} {revoked}",
            t.name,
            t.role,
            when(Some(t.created_at))
        );
    }
    Ok(())
}
