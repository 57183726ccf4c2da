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
