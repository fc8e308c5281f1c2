//! PKCS#11 tokens (Nitrokey HSM 2 through OpenSC; SoftHSM2 in tests) through `cryptoki`:
//! choosing a token, logging in, the share data objects and the holder's signing key.
//!
//! The server never links this module's callers: shares reach it only encrypted.

mod pin;
mod token;
mod uri;
mod watchdog;

pub use pin::{PinSource, read_pin};
pub use token::{HolderKey, Module, PinState, ShareObject, Token, TokenSummary};
pub use uri::TokenSelector;

use cryptoki::error::{Error as CkError, RvError};

/// `CKA_APPLICATION` of every object nkpki writes.
pub const APPLICATION: &str = "nkpki";
/// `CKA_LABEL` and `CKA_ID` of the holder's signing key pair.
pub const HOLDER_KEY_LABEL: &str = "nkpki-holder-key";
/// Environment variable naming the PKCS#11 module.
pub const MODULE_ENV: &str = "NKPKI_PKCS11_MODULE";
/// Where OpenSC's module lives on common systems, tried in order.
pub const DEFAULT_MODULES: [&str; 5] = [
    "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib64/opensc-pkcs11.so",
    "/usr/lib/opensc-pkcs11.so",
    "/usr/local/lib/opensc-pkcs11.so",
];

/// The label of the data object holding the share of CA `ca_id`.
pub fn share_label(ca_id: &str) -> String {
    format!("nkpki-share-{ca_id}")
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    #[error("PKCS#11 module {0} does not exist")]
    ModuleMissing(String),
    #[error("{path} is not a usable PKCS#11 module: {reason}")]
    NotAModule { path: String, reason: String },
    #[error("no PKCS#11 module found (tried {0})")]
    NoModule(String),
    #[error("C_{function} failed: {rv}")]
    Pkcs11 { function: String, rv: String },
    #[error("no token matches {selector:?} (tokens present: {present})")]
    NoToken { selector: String, present: String },
    #[error("{count} tokens match {selector:?}; name one by serial (pkcs11:serial=…)")]
    AmbiguousToken { selector: String, count: usize },
    #[error("wrong PIN for token {token}{remaining}")]
    WrongPin { token: String, remaining: String },
    #[error("the user PIN of token {0} is locked")]
    PinLocked(String),
    #[error("token {token} already holds a share of CA {ca_id}")]
    ShareExists { token: String, ca_id: String },
    #[error("token {token} holds no share of CA {ca_id}")]
    NoShare { token: String, ca_id: String },
    #[error("token {0} is out of memory (CKR_DEVICE_MEMORY)")]
    DeviceMemory(String),
    #[error("the token did not answer C_{function} within {seconds} s")]
    Timeout { function: String, seconds: u64 },
    #[error("the token returned an unusable public key: {0}")]
    BadPublicKey(String),
    #[error("invalid PKCS#11 URI {uri:?}: {reason}")]
    BadUri { uri: String, reason: String },
    #[error("no PIN available: {0}")]
    NoPin(String),
    #[error("token {token} holds {what} labelled nkpki-holder-key; nkpki makes one pair")]
    AmbiguousHolderKey { token: String, what: String },
}

impl HsmError {
    /// Whether the error is what a read of a private object gives once the login is gone:
    /// `CKR_USER_NOT_LOGGED_IN`, OpenSC's `CKR_GENERAL_ERROR` after another program
    /// selected the card, or (SoftHSM) the private object no longer found.
    pub fn may_be_lost_login(&self) -> bool {
        match self {
            HsmError::Pkcs11 { rv, .. } => {
                rv == "CKR_USER_NOT_LOGGED_IN" || rv == "CKR_GENERAL_ERROR"
            }
            HsmError::NoShare { .. } => true,
            _ => false,
        }
    }
}

/// Maps a cryptoki error to one naming the failing PKCS#11 function.
pub(crate) fn ck(err: CkError) -> HsmError {
    match err {
        CkError::Pkcs11(rv, function) => HsmError::Pkcs11 {
            function: format!("{function:?}"),
            rv: rv_name(rv),
        },
        other => HsmError::Pkcs11 {
            function: "?".into(),
            rv: other.to_string(),
        },
    }
}

fn rv_name(rv: RvError) -> String {
    let name = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in name.chars() {
        if c.is_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn errors_name_the_function_and_return_value() {
        let e = ck(CkError::Pkcs11(
            RvError::DeviceMemory,
            Function::CreateObject,
        ));
        assert_eq!(e.to_string(), "C_CreateObject failed: CKR_DEVICE_MEMORY");
        let e = ck(CkError::Pkcs11(RvError::PinIncorrect, Function::Login));
        assert_eq!(e.to_string(), "C_Login failed: CKR_PIN_INCORRECT");
    }
}
