//! Choosing a token: by label, by serial, or by a PKCS#11 URI (RFC 7512) such as
//! `pkcs11:token=NK001` or `pkcs11:serial=DENK0100123;manufacturer=www.CardContact.de`.

use super::HsmError;

/// What identifies a token on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSelector {
    /// The text as given, for messages.
    pub text: String,
    pub label: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    /// A bare word matches a label or a serial.
    pub label_or_serial: Option<String>,
}

fn percent_decode(value: &str, uri: &str) -> Result<String, HsmError> {
    let bad = |reason: &str| HsmError::BadUri {
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    };
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .ok_or_else(|| bad("truncated %-escape"))?;
            // from_str_radix alone would take "%+1" for 0x01
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("bad %-escape"));
            }
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad("bad %-escape"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("not UTF-8"))
}

impl TokenSelector {
    pub fn parse(text: &str) -> Result<Self, HsmError> {
        let mut sel = TokenSelector {
            text: text.to_owned(),
            label: None,
            serial: None,
            manufacturer: None,
            model: None,
            label_or_serial: None,
        };
        let Some(rest) = text.strip_prefix("pkcs11:") else {
            if text.is_empty() {
                return Err(HsmError::BadUri {
                    uri: text.into(),
                    reason: "empty token name".into(),
                });
            }
            sel.label_or_serial = Some(text.to_owned());
            return Ok(sel);
        };
        // the path part ends at '?' (query attributes such as pin-source are ignored)
        let path = rest.split('?').next().unwrap_or_default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr.split_once('=').ok_or_else(|| HsmError::BadUri {
                uri: text.into(),
                reason: format!("{attr:?} has no '='"),
            })?;
            let value = percent_decode(value, text)?;
            match name {
                "token" => sel.label = Some(value),
                "serial" => sel.serial = Some(value),
                "manufacturer" => sel.manufacturer = Some(value),
                "model" => sel.model = Some(value),
                // object, type, id, library-*, slot-* do not select a token here
                _ => {}
            }
        }
        if sel.label.is_none()
            && sel.serial.is_none()
            && sel.manufacturer.is_none()
            && sel.model.is_none()
        {
            return Err(HsmError::BadUri {
                uri: text.into(),
                reason: "names no token (use token=, serial=, manufacturer= or model=)".into(),
            });
        }
        Ok(sel)
    }

    /// Whether a token with these attributes is the one meant. A label matches with or
    /// without the ` (UserPIN)` suffix OpenSC adds to SmartCard-HSM (Nitrokey HSM) tokens.
    pub fn matches(&self, label: &str, serial: &str, manufacturer: &str, model: &str) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let short = holder_label(label);
        let label_eq = self
            .label
            .as_deref()
            .is_none_or(|w| w == label || w == short);
        let bare = self
            .label_or_serial
            .as_deref()
            .is_none_or(|w| w == label || w == short || w == serial);
        bare && label_eq
            && eq(&self.serial, serial)
            && eq(&self.manufacturer, manufacturer)
            && eq(&self.model, model)
    }
}

/// A token's label without the PIN-name suffix OpenSC appends (`NK001 (UserPIN)` → `NK001`).
pub fn holder_label(label: &str) -> &str {
    label
        .strip_suffix(" (UserPIN)")
        .or_else(|| label.strip_suffix(" (User PIN)"))
        .unwrap_or(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opensc_pin_suffix_is_ignored() {
        let s = TokenSelector::parse("NK001").unwrap();
        assert!(s.matches(
            "NK001 (UserPIN)",
            "DENK01",
            "www.CardContact.de",
            "PKCS#15 emulated"
        ));
        let u = TokenSelector::parse("pkcs11:token=NK001").unwrap();
        assert!(u.matches("NK001 (UserPIN)", "DENK01", "m", "o"));
        assert_eq!(holder_label("NK002 (UserPIN)"), "NK002");
    }

    #[test]
    fn bare_names_and_uris() {
        let s = TokenSelector::parse("NK001").unwrap();
        assert!(s.matches("NK001", "x", "m", "o"));
        assert!(s.matches("other", "NK001", "m", "o"));
        assert!(!s.matches("NK002", "x", "m", "o"));
        let u = TokenSelector::parse(
            "pkcs11:token=NK%20001;manufacturer=SoftHSM%20project?pin-source=x",
        )
        .unwrap();
        assert!(u.matches("NK 001", "1", "SoftHSM project", "SoftHSM v2"));
        assert!(!u.matches("NK 001", "1", "CardContact", "SoftHSM v2"));
        assert!(TokenSelector::parse("pkcs11:").is_err());
        assert!(TokenSelector::parse("pkcs11:token").is_err());
        assert!(TokenSelector::parse("pkcs11:token=%4").is_err());
        assert!(TokenSelector::parse("").is_err());
    }
}
