//! What `serve ca list` and `serve token list` show, read from the data directory: the
//! registered CAs with their certificate and holders, and every API token, revoked ones
//! too.

use super::ServerError;
use crate::manifest::Manifest;
use crate::pki::CertificateSummary;
use crate::store::{ApiTokenRow, HolderRow, Store};
use std::path::Path;

/// A registered CA.
#[derive(Clone, Debug)]
pub struct CaListing {
    pub ca_id: String,
    pub name: String,
    /// Unix seconds.
    pub registered_at: i64,
    pub threshold: u8,
    pub total: u8,
    /// The CA certificate, read from the registered manifest.
    pub certificate: CertificateSummary,
    /// Holders with their enrollment and the last time the server recorded them polling.
    pub holders: Vec<HolderRow>,
}

/// Opens an existing database only: a listing never creates one.
fn open_existing(data_dir: &Path) -> Result<Store, ServerError> {
    if !data_dir.join("nkpki.sqlite3").exists() {
        return Err(ServerError::Invalid(format!(
            "{} holds no nkpki database",
            data_dir.display()
        )));
    }
    Ok(Store::open(data_dir)?)
}

/// Every registered CA, in the order they were registered.
pub fn list_cas(data_dir: &Path) -> Result<Vec<CaListing>, ServerError> {
    let store = open_existing(data_dir)?;
    let mut out = Vec::new();
    for row in store.cas()? {
        let manifest = Manifest::from_json(&row.manifest)?;
        let body = manifest.signed;
        let certificate = CertificateSummary::from_pem(&body.certificate).map_err(|e| {
            ServerError::Invalid(format!("CA {}: the registered manifest: {e}", row.ca_id))
        })?;
        out.push(CaListing {
            holders: store.holders(&row.ca_id)?,
            ca_id: row.ca_id,
            name: row.name,
            registered_at: row.added_at,
            threshold: body.share_set.threshold,
            total: body.share_set.total,
            certificate,
        });
    }
    Ok(out)
}

/// Every operator API token, revoked ones too, oldest first.
pub fn list_api_tokens(data_dir: &Path) -> Result<Vec<ApiTokenRow>, ServerError> {
    Ok(open_existing(data_dir)?.api_tokens()?)
}
