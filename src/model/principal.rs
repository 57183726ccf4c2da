//! Principals (docs/model.md#principals): users, groups, service principals and managed
//! identities, and the rule for comparing their ids.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// The kind of identity a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub enum PrincipalType {
    User,
    Group,
    ServicePrincipal,
    ManagedIdentity,
}

impl PrincipalType {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalType::User => "User",
            PrincipalType::Group => "Group",
            PrincipalType::ServicePrincipal => "ServicePrincipal",
            PrincipalType::ManagedIdentity => "ManagedIdentity",
        }
    }
}

impl fmt::Display for PrincipalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A principal of the snapshot. `member_of` holds direct groups by index
/// into the snapshot's principal list; transitive closure is computed when
/// the snapshot is compiled.
#[derive(Debug, Clone)]
pub struct Principal {
    pub id: String,
    pub kind: PrincipalType,
    pub display_name: Option<String>,
    pub member_of: Vec<usize>,
    pub attributes: BTreeMap<String, String>,
}

/// Length of a canonical GUID: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub const GUID_LEN: usize = 36;

/// Whether `id` is a GUID in the 8-4-4-4-12 form.
#[inline]
pub fn is_guid(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == GUID_LEN
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The 128 bits of a GUID in the 8-4-4-4-12 form (either case), or None
/// for any other id: a fixed-size key that compares GUIDs ignoring case
/// with no text to fetch or fold.
#[inline]
pub fn guid_bits(id: &str) -> Option<u128> {
    let b = id.as_bytes();
    if b.len() != GUID_LEN {
        return None;
    }
    let mut bits = 0u128;
    for (i, &c) in b.iter().enumerate() {
        let nibble = match (i, c) {
            (8 | 13 | 18 | 23, b'-') => continue,
            (8 | 13 | 18 | 23, _) => return None,
            (_, b'0'..=b'9') => c - b'0',
            (_, b'a'..=b'f') => c - b'a' + 10,
            (_, b'A'..=b'F') => c - b'A' + 10,
            _ => return None,
        };
        bits = (bits << 4) | u128::from(nibble);
    }
    Some(bits)
}

/// The key a principal id is compared by: GUIDs ignore case, other ids are
/// exact (docs/model.md#principals).
pub fn principal_key(id: &str) -> Cow<'_, str> {
    if is_guid(id) && id.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(id.to_ascii_lowercase())
    } else {
        Cow::Borrowed(id)
    }
}

/// Why a principal id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalIdError {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes long; the limit is {MAX_PRINCIPAL_ID_LEN}")]
    TooLong(usize),
    #[error("contains whitespace or a control character at byte {0}")]
    BadCharacter(usize),
}

/// The longest principal id accepted, in bytes.
pub const MAX_PRINCIPAL_ID_LEN: usize = 256;

/// Checks a principal id: non-empty, bounded, no whitespace (docs/model.md#principals).
pub fn check_principal_id(id: &str) -> Result<(), PrincipalIdError> {
    if id.is_empty() {
        return Err(PrincipalIdError::Empty);
    }
    if id.len() > MAX_PRINCIPAL_ID_LEN {
        return Err(PrincipalIdError::TooLong(id.len()));
    }
    // ASCII ids (all of Azure's) are checked byte by byte; only ids with
    // other characters pay for Unicode classification.
    if let Some(at) = id.bytes().position(|b| b <= b' ' || b == 0x7f) {
        return Err(PrincipalIdError::BadCharacter(at));
    }
    if !id.is_ascii() {
        if let Some((at, _)) = id
            .char_indices()
            .find(|(_, c)| c.is_whitespace() || c.is_control())
        {
            return Err(PrincipalIdError::BadCharacter(at));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_compare_case_insensitively_and_other_ids_exactly() {
        assert_eq!(
            principal_key("0B5F6A1E-0000-4000-8000-00000000000A"),
            "0b5f6a1e-0000-4000-8000-00000000000a"
        );
        assert_eq!(principal_key("DEV-LEADS"), "DEV-LEADS");
        assert_eq!(principal_key("dev-leads"), "dev-leads");
    }

    #[test]
    fn guid_bits_ignore_case_and_refuse_what_is_not_a_guid() {
        let lower = "0b5f6a1e-0000-4000-8000-00000000000a";
        assert_eq!(
            guid_bits(lower),
            Some(0x0b5f6a1e_0000_4000_8000_00000000000a)
        );
        assert_eq!(guid_bits(&lower.to_ascii_uppercase()), guid_bits(lower));
        assert_ne!(
            guid_bits("0b5f6a1e-0000-4000-8000-00000000000b"),
            guid_bits(lower)
        );
        for not in [
            "",
            "dev-leads",
            "0b5f6a1e-0000-4000-8000-00000000000",
            "0b5f6a1e-0000-4000-8000-00000000000g",
            "0b5f6a1e00000-4000-8000-00000000000a",
            "0b5f6a1e-0000-4000-8000-00000000000a0",
        ] {
            assert_eq!(guid_bits(not), None, "{not}");
            assert!(!is_guid(not));
        }
        assert!(is_guid(lower));
    }

    #[test]
    fn guid_shape_is_recognised() {
        assert!(is_guid("0b5f6a1e-0000-4000-8000-00000000000a"));
        assert!(!is_guid("0b5f6a1e-0000-4000-8000-00000000000"));
        assert!(!is_guid("0b5f6a1e00000-4000-8000-00000000000a"));
        assert!(!is_guid("zb5f6a1e-0000-4000-8000-00000000000a"));
    }

    #[test]
    fn principal_ids_are_checked() {
        assert_eq!(check_principal_id(""), Err(PrincipalIdError::Empty));
        assert_eq!(
            check_principal_id("a b"),
            Err(PrincipalIdError::BadCharacter(1))
        );
        assert_eq!(
            check_principal_id("a\u{0}"),
            Err(PrincipalIdError::BadCharacter(1))
        );
        assert!(check_principal_id("alice@contoso.com").is_ok());
        assert!(matches!(
            check_principal_id(&"x".repeat(300)),
            Err(PrincipalIdError::TooLong(300))
        ));
    }
}
