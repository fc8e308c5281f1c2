//! Sessions on a token: login, share data objects, the holder's EC P-256 signing key.
//! Sessions close when dropped (cryptoki closes them on `Drop`).

use super::watchdog::Watchdog;
use super::{APPLICATION, HOLDER_KEY_LABEL, HsmError, MODULE_ENV, TokenSelector, ck, share_label};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use p256::pkcs8::EncodePublicKey;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, Zeroizing};

/// DER of the prime256v1 OID, for CKA_EC_PARAMS.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A loaded and initialised PKCS#11 module.
pub struct Module {
    ctx: Pkcs11,
    path: PathBuf,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Module({})", self.path.display())
    }
}

/// What the token's flags say about its user PIN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PinState {
    pub count_low: bool,
    pub final_try: bool,
    pub locked: bool,
}

impl PinState {
    pub fn describe(&self) -> &'static str {
        if self.locked {
            "locked"
        } else if self.final_try {
            "final try"
        } else if self.count_low {
            "tries remaining low"
        } else {
            "ok"
        }
    }
}

/// A token as `token list` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TokenSummary {
    pub label: String,
    pub serial: String,
    pub manufacturer: String,
    pub model: String,
    pub pin: PinState,
    #[serde(skip)]
    slot: Option<Slot>,
}

impl Module {
    /// Loads `explicit`, else `$NKPKI_PKCS11_MODULE`, else the first OpenSC module found.
    pub fn load(explicit: Option<&Path>) -> Result<Self, HsmError> {
        let path = match explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(MODULE_ENV).map(PathBuf::from))
        {
            Some(p) => p,
            None => super::DEFAULT_MODULES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .ok_or_else(|| HsmError::NoModule(super::DEFAULT_MODULES.join(", ")))?,
        };
        if !path.exists() {
            return Err(HsmError::ModuleMissing(path.display().to_string()));
        }
        let not_module = |reason: String| HsmError::NotAModule {
            path: path.display().to_string(),
            reason,
        };
        let ctx = {
            let _w = Watchdog::arm("Initialize");
            let ctx = Pkcs11::new(&path).map_err(|e| not_module(e.to_string()))?;
            match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => ctx,
                Err(e) => return Err(not_module(format!("C_Initialize: {e}"))),
            }
        };
        Ok(Module { ctx, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every token present, with its PIN state.
    pub fn tokens(&self) -> Result<Vec<TokenSummary>, HsmError> {
        let _w = Watchdog::arm("GetSlotList");
        let slots = self.ctx.get_slots_with_initialized_token().map_err(ck)?;
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            let info = self.ctx.get_token_info(slot).map_err(ck)?;
            out.push(TokenSummary {
                label: info.label().trim_end().to_owned(),
                serial: info.serial_number().trim_end().to_owned(),
                manufacturer: info.manufacturer_id().trim_end().to_owned(),
                model: info.model().trim_end().to_owned(),
                pin: PinState {
                    count_low: info.user_pin_count_low(),
                    final_try: info.user_pin_final_try(),
                    locked: info.user_pin_locked(),
                },
                slot: Some(slot),
            });
        }
        Ok(out)
    }

    /// The one token `selector` names; refuses none and several.
    pub fn find(&self, selector: &TokenSelector) -> Result<TokenSummary, HsmError> {
        let tokens = self.tokens()?;
        let present = if tokens.is_empty() {
            "none".to_owned()
        } else {
            tokens
                .iter()
                .map(|t| format!("{} (serial {})", t.label, t.serial))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut matching: Vec<TokenSummary> = tokens
            .into_iter()
            .filter(|t| selector.matches(&t.label, &t.serial, &t.manufacturer, &t.model))
            .collect();
        match matching.len() {
            0 => Err(HsmError::NoToken {
                selector: selector.text.clone(),
                present,
            }),
            1 => Ok(matching.remove(0)),
            n => Err(HsmError::AmbiguousToken {
                selector: selector.text.clone(),
                count: n,
            }),
        }
    }

    /// Opens a read-write session on the token `selector` names.
    pub fn open(&self, selector: &TokenSelector) -> Result<Token, HsmError> {
        let summary = self.find(selector)?;
        let slot = summary.slot.ok_or_else(|| HsmError::NoToken {
            selector: selector.text.clone(),
            present: "?".into(),
        })?;
        let session = {
            let _w = Watchdog::arm("OpenSession");
            self.ctx.open_rw_session(slot).map_err(ck)?
        };
        Ok(Token {
            session,
            summary,
            ctx: self.ctx.clone(),
        })
    }
}

/// The holder's signing key on a token.
#[derive(Clone, Debug)]
pub struct HolderKey {
    private: ObjectHandle,
    /// SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
}

impl HolderKey {
    pub fn public_key_pem(&self) -> String {
        crate::pki::pem_encode("PUBLIC KEY", &self.spki_der)
    }

    /// SHA-256 of the SubjectPublicKeyInfo, hex: how the server knows the holder.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.spki_der))
    }
}

/// An open session on one token.
pub struct Token {
    session: Session,
    summary: TokenSummary,
    ctx: Pkcs11,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({})", self.summary.label)
    }
}

/// `text`'s bytes with a NUL after them that the attribute's length does not count: OpenSC
/// reads `CKA_APPLICATION` as a C string and, without the NUL, copies whatever follows the
/// buffer onto the card (`nkpkiU…`). The NUL stays in the vector's spare capacity, so the
/// length passed is still `text.len()`.
fn nul_terminated(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(0);
    bytes.pop();
    bytes
}

fn text(attr: &Attribute) -> Option<String> {
    match attr {
        Attribute::Label(v) | Attribute::Application(v) => {
            Some(String::from_utf8_lossy(v).into_owned())
        }
        _ => None,
    }
}

impl Token {
    pub fn summary(&self) -> &TokenSummary {
        &self.summary
    }

    pub fn label(&self) -> &str {
        &self.summary.label
    }

    /// The label as holders name the token (`NK001`), without OpenSC's PIN suffix.
    pub fn holder_label(&self) -> &str {
        super::uri::holder_label(&self.summary.label)
    }

    /// What the token's flags say about the user PIN now.
    pub fn pin_state(&self) -> PinState {
        self.current_pin_state()
    }

    fn current_pin_state(&self) -> PinState {
        match self.summary.slot.map(|s| self.ctx.get_token_info(s)) {
            Some(Ok(info)) => PinState {
                count_low: info.user_pin_count_low(),
                final_try: info.user_pin_final_try(),
                locked: info.user_pin_locked(),
            },
            _ => PinState::default(),
        }
    }

    /// Logs the user in once. A wrong PIN is reported with what the token says of the
    /// remaining tries; it is never retried here.
    pub fn login(&self, pin: &SecretString) -> Result<(), HsmError> {
        if self.current_pin_state().locked {
            return Err(HsmError::PinLocked(self.summary.label.clone()));
        }
        let _w = Watchdog::arm("Login");
        match self.session.login(UserType::User, Some(pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                let state = self.current_pin_state();
                let remaining = if state.locked {
                    "; the PIN is now locked".to_owned()
                } else if state.final_try {
                    "; ONE try remains before the PIN locks".to_owned()
                } else if state.count_low {
                    "; few tries remain before the PIN locks".to_owned()
                } else {
                    String::new()
                };
                Err(HsmError::WrongPin {
                    token: self.summary.label.clone(),
                    remaining,
                })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                Err(HsmError::PinLocked(self.summary.label.clone()))
            }
            Err(e) => Err(ck(e)),
        }
    }

    /// Logs the user out (private objects become invisible until the next login).
    pub fn logout(&self) -> Result<(), HsmError> {
        let _w = Watchdog::arm("Logout");
        match self.session.logout() {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => Ok(()),
            Err(e) => Err(ck(e)),
        }
    }

    /// Logs out and in again, then runs `op`. If `op` fails as it does when the login was
    /// lost meanwhile (OpenSC drops every session's PIN state whenever another program
    /// selects the card), calls `on_lost`, logs in once more and runs `op` once more.
    pub fn with_fresh_login<T>(
        &self,
        pin: &SecretString,
        mut op: impl FnMut(&Token) -> Result<T, HsmError>,
        on_lost: impl FnOnce(&HsmError),
    ) -> Result<T, HsmError> {
        // a login OpenSC has already dropped may not log out cleanly; the login says
        let _ = self.logout();
        self.login(pin)?;
        match op(self) {
            Err(e) if e.may_be_lost_login() => {
                on_lost(&e);
                let _ = self.logout();
                self.login(pin)?;
                op(self)
            }
            other => other,
        }
    }

    fn data_objects(&self, label: Option<&str>) -> Result<Vec<ObjectHandle>, HsmError> {
        let mut template = vec![Attribute::Class(ObjectClass::DATA)];
        if let Some(l) = label {
            template.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        let _w = Watchdog::arm("FindObjects");
        self.session.find_objects(&template).map_err(ck)
    }

    /// CKA_VALUE of `object`. cryptoki reads it into a buffer of its own and returns a copy;
    /// the copy is wiped by its `Zeroizing`, cryptoki's buffer by the binary's zeroizing
    /// allocator when cryptoki frees it.
    fn value(&self, object: ObjectHandle) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let _w = Watchdog::arm("GetAttributeValue");
        let attrs = self
            .session
            .get_attributes(object, &[AttributeType::Value])
            .map_err(ck)?;
        for attr in attrs {
            if let Attribute::Value(v) = attr {
                return Ok(Zeroizing::new(v));
            }
        }
        Err(HsmError::Pkcs11 {
            function: "GetAttributeValue".into(),
            rv: "CKA_VALUE not readable".into(),
        })
    }

    /// Writes a share of CA `ca_id` as a private data object. Refuses to replace one
    /// unless `force`, in which case the old object is deleted after the new one is stored.
    pub fn write_share(&self, ca_id: &str, share_json: &[u8], force: bool) -> Result<(), HsmError> {
        let label = share_label(ca_id);
        let existing = self.data_objects(Some(&label))?;
        if !existing.is_empty() && !force {
            return Err(HsmError::ShareExists {
                token: self.summary.label.clone(),
                ca_id: ca_id.to_owned(),
            });
        }
        let template = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Modifiable(false),
            Attribute::Label(nul_terminated(&label)),
            Attribute::Application(nul_terminated(APPLICATION)),
            Attribute::Value(share_json.to_vec()),
        ];
        let created = {
            let _w = Watchdog::arm("CreateObject");
            self.session.create_object(&template)
        };
        // the template held a copy of the share: wipe it whatever happened
        for attribute in template {
            if let Attribute::Value(mut v) = attribute {
                v.zeroize();
            }
        }
        created.map_err(|e| match e {
            CkError::Pkcs11(RvError::DeviceMemory, _) => {
                HsmError::DeviceMemory(self.summary.label.clone())
            }
            other => ck(other),
        })?;
        for old in existing {
            let _w = Watchdog::arm("DestroyObject");
            self.session.destroy_object(old).map_err(ck)?;
        }
        Ok(())
    }

    /// Reads the share of CA `ca_id`: the object labelled for it, or else any data object
    /// whose content is a share of that CA (objects written by other tools, such as
    /// `pkcs11-tool --write-object`, under another label).
    pub fn read_share(&self, ca_id: &str) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        if let Some(object) = self.data_objects(Some(&share_label(ca_id)))?.first() {
            return self.value(*object);
        }
        for object in self.data_objects(None)? {
            let Ok(value) = self.value(object) else {
                continue;
            };
            if let Ok(share) = serde_json::from_slice::<crate::sss::Share>(&value)
                && share.set_id.0 == ca_id
            {
                return Ok(value);
            }
        }
        Err(HsmError::NoShare {
            token: self.summary.label.clone(),
            ca_id: ca_id.to_owned(),
        })
    }

    /// The CA ids of the shares on the token (never their values).
    pub fn list_shares(&self) -> Result<Vec<ShareObject>, HsmError> {
        let mut out = Vec::new();
        for object in self.data_objects(None)? {
            let attrs = {
                let _w = Watchdog::arm("GetAttributeValue");
                self.session
                    .get_attributes(object, &[AttributeType::Label, AttributeType::Application])
                    .map_err(ck)?
            };
            let label = attrs
                .iter()
                .find(|a| matches!(a, Attribute::Label(_)))
                .and_then(text)
                .unwrap_or_default();
            let application = attrs
                .iter()
                .find(|a| matches!(a, Attribute::Application(_)))
                .and_then(text)
                .unwrap_or_default();
            let parsed = self
                .value(object)
                .ok()
                .and_then(|v| serde_json::from_slice::<crate::sss::Share>(&v).ok());
            if let Some(share) = parsed {
                out.push(ShareObject {
                    label,
                    application,
                    ca_id: share.set_id.0.clone(),
                    index: share.index,
                    threshold: share.threshold,
                    total: share.total,
                    holder: share.holder.clone(),
                });
            }
        }
        Ok(out)
    }

    /// Deletes the share of CA `ca_id`; returns whether there was one.
    pub fn delete_share(&self, ca_id: &str) -> Result<bool, HsmError> {
        let objects = self.data_objects(Some(&share_label(ca_id)))?;
        for o in &objects {
            let _w = Watchdog::arm("DestroyObject");
            self.session.destroy_object(*o).map_err(ck)?;
        }
        Ok(!objects.is_empty())
    }

    /// The holder key, if the token has one: the private key labelled
    /// `nkpki-holder-key` and the public key with the same label **and** the same `CKA_ID`.
    /// A public key that only borrows the label (anyone may create public objects on some
    /// tokens, without the PIN) is never paired with the private key; two candidates are
    /// refused rather than guessed between.
    pub fn holder_key(&self) -> Result<Option<HolderKey>, HsmError> {
        let label = || Attribute::Label(HOLDER_KEY_LABEL.as_bytes().to_vec());
        let find = |template: &[Attribute]| {
            let _w = Watchdog::arm("FindObjects");
            self.session.find_objects(template).map_err(ck)
        };
        let privates = find(&[Attribute::Class(ObjectClass::PRIVATE_KEY), label()])?;
        let private = match privates.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            many => {
                return Err(HsmError::AmbiguousHolderKey {
                    token: self.summary.label.clone(),
                    what: format!("{} private keys", many.len()),
                });
            }
        };
        let id = self.attribute(private, AttributeType::Id)?.and_then(|a| {
            if let Attribute::Id(id) = a {
                Some(id)
            } else {
                None
            }
        });
        let Some(id) = id else {
            return Err(HsmError::BadPublicKey(
                "the holder's private key has no CKA_ID to find its public key by".into(),
            ));
        };
        let publics = find(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            label(),
            Attribute::Id(id),
        ])?;
        let public = match publics.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            many => {
                return Err(HsmError::AmbiguousHolderKey {
                    token: self.summary.label.clone(),
                    what: format!("{} public keys with the private key's CKA_ID", many.len()),
                });
            }
        };
        let point = self
            .attribute(public, AttributeType::EcPoint)?
            .and_then(|a| {
                if let Attribute::EcPoint(p) = a {
                    Some(p)
                } else {
                    None
                }
            })
            .ok_or_else(|| HsmError::BadPublicKey("no CKA_EC_POINT".into()))?;
        Ok(Some(HolderKey {
            private,
            spki_der: spki_from_ec_point(&point)?,
        }))
    }

    /// One attribute of an object; `None` when the token does not return it.
    fn attribute(
        &self,
        object: ObjectHandle,
        kind: AttributeType,
    ) -> Result<Option<Attribute>, HsmError> {
        let _w = Watchdog::arm("GetAttributeValue");
        let attrs = self.session.get_attributes(object, &[kind]).map_err(ck)?;
        Ok(attrs.into_iter().next())
    }

    /// Proves that `key`'s private half on the token matches the public key it reports:
    /// signs a fresh message on the token and verifies it here. Run before a public key is
    /// handed to anyone (deploy, enroll).
    pub fn prove_holder_key(&self, key: &HolderKey) -> Result<(), HsmError> {
        let mut message = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut message);
        let signature = self.sign(key, &message)?;
        crate::pki::verify_signature(&key.spki_der, &message, &signature).map_err(|_| {
            HsmError::BadPublicKey(
                "the holder's public key does not verify a signature of its private key".into(),
            )
        })
    }

    /// The holder key, generated on the token (sensitive, never extractable) if absent.
    /// Returns whether it was created now.
    pub fn ensure_holder_key(&self) -> Result<(HolderKey, bool), HsmError> {
        if let Some(key) = self.holder_key()? {
            return Ok((key, false));
        }
        let id = HOLDER_KEY_LABEL.as_bytes().to_vec();
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Label(id.clone()),
            Attribute::Id(id.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            // a signing key only: never decrypts, unwraps or derives
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(id.clone()),
            Attribute::Id(id),
        ];
        {
            let _w = Watchdog::arm("GenerateKeyPair");
            self.session
                .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
                .map_err(|e| match e {
                    CkError::Pkcs11(RvError::DeviceMemory, _) => {
                        HsmError::DeviceMemory(self.summary.label.clone())
                    }
                    other => ck(other),
                })?;
        }
        let key = self
            .holder_key()?
            .ok_or_else(|| HsmError::BadPublicKey("generated key pair not found".into()))?;
        Ok((key, true))
    }

    /// ECDSA P-256 with SHA-256 on the token (the digest is computed here, the signature
    /// there); returns a DER signature.
    pub fn sign(&self, key: &HolderKey, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let digest = Sha256::digest(message);
        let raw = {
            let _w = Watchdog::arm("Sign");
            self.session
                .sign(&Mechanism::Ecdsa, key.private, &digest)
                .map_err(ck)?
        };
        let sig = p256::ecdsa::Signature::from_slice(&raw).map_err(|_| {
            HsmError::BadPublicKey(format!("token returned a {}-byte signature", raw.len()))
        })?;
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

/// A share object as `token shares` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ShareObject {
    pub label: String,
    pub application: String,
    pub ca_id: String,
    pub index: u8,
    pub threshold: u8,
    pub total: u8,
    pub holder: Option<String>,
}

/// CKA_EC_POINT is a DER OCTET STRING around the SEC1 point on most modules, the bare point
/// on some; accept both.
fn spki_from_ec_point(point: &[u8]) -> Result<Vec<u8>, HsmError> {
    let sec1 = match point {
        [0x04, len, rest @ ..] if *len as usize == rest.len() && rest.first() == Some(&0x04) => {
            rest
        }
        _ => point,
    };
    let key = p256::PublicKey::from_sec1_bytes(sec1)
        .map_err(|_| HsmError::BadPublicKey("CKA_EC_POINT is not a P-256 point".into()))?;
    key.to_public_key_der()
        .map(|d| d.into_vec())
        .map_err(|e| HsmError::BadPublicKey(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_application_keeps_its_length_with_a_nul_behind_it() {
        let bytes = nul_terminated(APPLICATION);
        assert_eq!(bytes, b"nkpki");
        // the NUL lives in the spare capacity that OpenSC's C-string read reaches
        assert!(bytes.capacity() > bytes.len());
    }
}
