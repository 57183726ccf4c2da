//! Azure Resource Manager scopes (docs/model.md#scopes): parsing, validation and the
//! structural half of ancestry.
//!
//! A scope's ancestors are every prefix of it that is itself a scope, then
//! the management-group chain of its subscription, then `/`. This module
//! knows the first part, which needs only the text; the hierarchy part comes
//! from the snapshot and is resolved when it is compiled.

use std::fmt;
use std::sync::Arc;

/// The longest scope accepted, in bytes.
pub const MAX_SCOPE_LEN: usize = 2048;

const MANAGEMENT_NAMESPACE: &str = "Microsoft.Management";
const MANAGEMENT_GROUPS: &str = "managementGroups";

/// What kind of thing a scope names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    Root,
    ManagementGroup,
    Subscription,
    ResourceGroup,
    /// A resource, child resource or extension resource.
    Resource,
    /// `/providers/{Namespace}`, e.g. `/providers/Microsoft.Capacity`.
    TenantProvider,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Root => "root",
            ScopeKind::ManagementGroup => "management group",
            ScopeKind::Subscription => "subscription",
            ScopeKind::ResourceGroup => "resource group",
            ScopeKind::Resource => "resource",
            ScopeKind::TenantProvider => "tenant provider",
        }
    }
}

/// Why a scope was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes long; the limit is {MAX_SCOPE_LEN}")]
    TooLong(usize),
    #[error("must start with '/'")]
    NotAbsolute,
    #[error("must not end with '/'")]
    TrailingSlash,
    #[error("contains a control character at byte {0}")]
    ControlCharacter(usize),
    #[error("has an empty segment at byte {0}")]
    EmptySegment(usize),
    #[error("must start with /subscriptions/{{id}} or /providers/{{Namespace}}, found '{0}'")]
    UnknownRoot(String),
    #[error("has 'subscriptions' without a subscription id")]
    MissingSubscriptionId,
    #[error("has 'resourceGroups' without a resource group name")]
    MissingResourceGroupName,
    #[error("has 'managementGroups' without a management group id")]
    MissingManagementGroupId,
    #[error("expected 'providers' or 'resourceGroups' after the subscription, found '{0}'")]
    UnexpectedAfterSubscription(String),
    #[error("expected 'providers' at segment {index}, found '{found}'")]
    ExpectedProviders { index: usize, found: String },
    #[error("has 'providers' without a resource provider namespace")]
    MissingNamespace,
    #[error("has provider namespace '{0}' without a resource type and name")]
    MissingResourceType(String),
    #[error("has resource type '{0}' without a name (type/name segments must come in pairs)")]
    MissingResourceName(String),
}

/// A validated scope. Keeps the text as given (for display) and a lowercase
/// key (for comparison), plus where each ancestor prefix ends. Shared, so
/// the million assignments of a large tenant hold their few thousand
/// distinct scopes once each and a clone costs a reference count.
#[derive(Clone, PartialEq, Eq)]
pub struct Scope(Arc<Parts>);

#[derive(PartialEq, Eq)]
struct Parts {
    text: Box<str>,
    key: Box<str>,
    kind: ScopeKind,
    /// Byte lengths of the prefixes that are scopes, shallowest first; the
    /// last is the whole scope. Empty for `/`.
    boundaries: Box<[u32]>,
    top: Top,
}

/// What sits above the structural prefixes: the part of the scope that links
/// it to the management-group hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    Root,
    /// Byte range of the subscription id.
    Subscription(u32, u32),
    /// Byte range of the management group id.
    ManagementGroup(u32, u32),
}

impl Scope {
    /// The root scope, `/`.
    pub fn root() -> Scope {
        Scope(Arc::new(Parts {
            text: "/".into(),
            key: "/".into(),
            kind: ScopeKind::Root,
            boundaries: Box::new([]),
            top: Top::Root,
        }))
    }

    /// Parses and validates a scope.
    pub fn parse(text: &str) -> Result<Scope, ScopeError> {
        let parsed = parse_structure(text)?;
        Ok(Scope(Arc::new(Parts {
            text: text.into(),
            key: text.to_ascii_lowercase().into(),
            kind: parsed.kind,
            boundaries: parsed.boundaries.into_boxed_slice(),
            top: parsed.top,
        })))
    }

    /// The same number for a scope and its clones while any of them
    /// lives (its shared allocation's address): an identity to look
    /// shared scopes up by without hashing their text.
    pub fn identity(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// The scope as given.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// The lowercase comparison key.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    pub fn kind(&self) -> ScopeKind {
        self.0.kind
    }

    /// The subscription id, for scopes at or below a subscription.
    pub fn subscription_id(&self) -> Option<&str> {
        match self.0.top {
            Top::Subscription(start, end) => Some(&self.0.text[start as usize..end as usize]),
            _ => None,
        }
    }

    /// The management group id, for scopes at or below a management group.
    pub fn management_group_id(&self) -> Option<&str> {
        match self.0.top {
            Top::ManagementGroup(start, end) => Some(&self.0.text[start as usize..end as usize]),
            _ => None,
        }
    }

    /// Lowercase keys of the strict structural ancestors, deepest first.
    /// They stop at the subscription or management group: the hierarchy
    /// above that, and `/`, come from the snapshot.
    pub fn structural_ancestor_keys(&self) -> impl Iterator<Item = &str> {
        let n = self.0.boundaries.len().saturating_sub(1);
        self.0.boundaries[..n]
            .iter()
            .rev()
            .map(|&end| &self.0.key[..end as usize])
    }

    /// Whether `self` is `other` or lies below it structurally (ignores the
    /// management-group hierarchy, which only a compiled snapshot knows).
    pub fn is_structurally_within(&self, other: &Scope) -> bool {
        if other.0.kind == ScopeKind::Root || self.0.key == other.0.key {
            return true;
        }
        self.structural_ancestor_keys()
            .any(|key| key == &*other.0.key)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({:?})", &*self.0.text)
    }
}

struct Parsed {
    kind: ScopeKind,
    boundaries: Vec<u32>,
    top: Top,
}

/// Splits `text` into segments with their byte offsets, after the checks
/// that apply to the whole string.
fn segments(text: &str) -> Result<Vec<(usize, &str)>, ScopeError> {
    if text.is_empty() {
        return Err(ScopeError::Empty);
    }
    if text.len() > MAX_SCOPE_LEN {
        return Err(ScopeError::TooLong(text.len()));
    }
    if !text.starts_with('/') {
        return Err(ScopeError::NotAbsolute);
    }
    if let Some(at) = text.bytes().position(|b| b < 0x20 || b == 0x7f) {
        return Err(ScopeError::ControlCharacter(at));
    }
    if text.len() > 1 && text.ends_with('/') {
        return Err(ScopeError::TrailingSlash);
    }
    let mut out = Vec::with_capacity(16);
    let mut start = 1;
    for part in text[1..].split('/') {
        if part.is_empty() {
            return Err(ScopeError::EmptySegment(start));
        }
        out.push((start, part));
        start += part.len() + 1;
    }
    Ok(out)
}

fn parse_structure(text: &str) -> Result<Parsed, ScopeError> {
    if text == "/" {
        return Ok(Parsed {
            kind: ScopeKind::Root,
            boundaries: Vec::new(),
            top: Top::Root,
        });
    }
    let segs = segments(text)?;
    let end_of = |i: usize| (segs[i].0 + segs[i].1.len()) as u32;
    let range_of = |i: usize| (segs[i].0 as u32, end_of(i));
    let mut boundaries = Vec::new();
    let first = segs[0].1;

    let (mut kind, top, chain_start) = if first.eq_ignore_ascii_case("subscriptions") {
        if segs.len() < 2 {
            return Err(ScopeError::MissingSubscriptionId);
        }
        let (start, end) = range_of(1);
        boundaries.push(end);
        let top = Top::Subscription(start, end);
        match segs.get(2) {
            None => (ScopeKind::Subscription, top, 2),
            Some((_, s)) if s.eq_ignore_ascii_case("resourceGroups") => {
                if segs.len() < 4 {
                    return Err(ScopeError::MissingResourceGroupName);
                }
                boundaries.push(end_of(3));
                (ScopeKind::ResourceGroup, top, 4)
            }
            Some((_, s)) if s.eq_ignore_ascii_case("providers") => {
                (ScopeKind::Subscription, top, 2)
            }
            Some((_, s)) => return Err(ScopeError::UnexpectedAfterSubscription((*s).into())),
        }
    } else if first.eq_ignore_ascii_case("providers") {
        let Some(&(_, namespace)) = segs.get(1) else {
            return Err(ScopeError::MissingNamespace);
        };
        let is_management = namespace.eq_ignore_ascii_case(MANAGEMENT_NAMESPACE)
            && segs
                .get(2)
                .is_some_and(|(_, s)| s.eq_ignore_ascii_case(MANAGEMENT_GROUPS));
        if is_management {
            if segs.len() < 4 {
                return Err(ScopeError::MissingManagementGroupId);
            }
            let (start, end) = range_of(3);
            boundaries.push(end);
            (
                ScopeKind::ManagementGroup,
                Top::ManagementGroup(start, end),
                4,
            )
        } else {
            // `/providers/{Namespace}` is a scope of its own (the tenant
            // provider); resources below it are parsed as a provider chain.
            boundaries.push(end_of(1));
            if segs.len() == 2 {
                return Ok(Parsed {
                    kind: ScopeKind::TenantProvider,
                    boundaries,
                    top: Top::Root,
                });
            }
            parse_pairs(&segs, 2, namespace, &mut boundaries)?;
            return Ok(Parsed {
                kind: ScopeKind::Resource,
                boundaries,
                top: Top::Root,
            });
        }
    } else {
        return Err(ScopeError::UnknownRoot(first.into()));
    };

    let mut i = chain_start;
    while i < segs.len() {
        let (_, word) = segs[i];
        if !word.eq_ignore_ascii_case("providers") {
            return Err(ScopeError::ExpectedProviders {
                index: i,
                found: word.into(),
            });
        }
        let Some(&(_, namespace)) = segs.get(i + 1) else {
            return Err(ScopeError::MissingNamespace);
        };
        i = parse_pairs(&segs, i + 2, namespace, &mut boundaries)?;
        kind = ScopeKind::Resource;
    }
    Ok(Parsed {
        kind,
        boundaries,
        top,
    })
}

/// Parses `{type}/{name}` pairs from `start` up to the next `providers`
/// segment in a type position (an extension resource) or the end. Records a
/// boundary after each pair and returns the index where it stopped.
fn parse_pairs(
    segs: &[(usize, &str)],
    start: usize,
    namespace: &str,
    boundaries: &mut Vec<u32>,
) -> Result<usize, ScopeError> {
    let mut i = start;
    if i >= segs.len() {
        return Err(ScopeError::MissingResourceType(namespace.into()));
    }
    while i < segs.len() {
        let (_, resource_type) = segs[i];
        if i > start && resource_type.eq_ignore_ascii_case("providers") {
            break;
        }
        let Some(&(offset, name)) = segs.get(i + 1) else {
            return Err(ScopeError::MissingResourceName(resource_type.into()));
        };
        boundaries.push((offset + name.len()) as u32);
        i += 2;
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "/subscriptions/11111111-1111-1111-1111-111111111111";

    fn ancestors(s: &str) -> Vec<String> {
        Scope::parse(s)
            .unwrap()
            .structural_ancestor_keys()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_form_of_the_spec_parses_with_its_kind() {
        let cases = [
            ("/", ScopeKind::Root),
            (
                "/providers/Microsoft.Management/managementGroups/platform",
                ScopeKind::ManagementGroup,
            ),
            (SUB, ScopeKind::Subscription),
            (&format!("{SUB}/resourceGroups/rg"), ScopeKind::ResourceGroup),
            (
                &format!("{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"),
                ScopeKind::Resource,
            ),
            (
                &format!("{SUB}/providers/Microsoft.Network/networkWatchers/nw"),
                ScopeKind::Resource,
            ),
            (
                &format!("{SUB}/resourceGroups/rg/providers/Microsoft.Web/sites/app/providers/Microsoft.Insights/diagnosticSettings/d"),
                ScopeKind::Resource,
            ),
            ("/providers/Microsoft.Capacity", ScopeKind::TenantProvider),
        ];
        for (text, kind) in cases {
            assert_eq!(Scope::parse(text).unwrap().kind(), kind, "{text}");
        }
    }

    #[test]
    fn ancestors_of_a_foundry_project_follow_the_spec_example() {
        let s = format!(
            "{SUB}/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/acct/projects/p1"
        );
        let sub = SUB.to_ascii_lowercase();
        assert_eq!(
            ancestors(&s),
            vec![
                format!(
                    "{sub}/resourcegroups/rg/providers/microsoft.cognitiveservices/accounts/acct"
                ),
                format!("{sub}/resourcegroups/rg"),
                sub.clone(),
            ]
        );
    }

    #[test]
    fn extension_resource_has_its_parent_resource_as_ancestor() {
        let s = format!(
            "{SUB}/resourceGroups/rg/providers/Microsoft.Web/sites/app/providers/Microsoft.Insights/diagnosticSettings/d"
        );
        let a = ancestors(&s);
        assert_eq!(a.len(), 3);
        assert!(a[0].ends_with("/microsoft.web/sites/app"));
    }

    #[test]
    fn management_group_and_tenant_provider_have_no_structural_ancestors() {
        assert!(ancestors("/providers/Microsoft.Management/managementGroups/mg").is_empty());
        assert!(ancestors("/providers/Microsoft.Capacity").is_empty());
        assert_eq!(
            ancestors("/providers/Microsoft.Capacity/reservationOrders/r1"),
            vec!["/providers/microsoft.capacity"]
        );
    }

    #[test]
    fn reserved_words_are_names_in_name_position() {
        let s = format!(
            "{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/providers"
        );
        assert_eq!(Scope::parse(&s).unwrap().kind(), ScopeKind::Resource);
    }

    #[test]
    fn ids_are_extracted() {
        let s = Scope::parse(&format!("{SUB}/resourceGroups/rg")).unwrap();
        assert_eq!(
            s.subscription_id(),
            Some("11111111-1111-1111-1111-111111111111")
        );
        let mg = Scope::parse("/providers/Microsoft.Management/managementGroups/Corp-EU").unwrap();
        assert_eq!(mg.management_group_id(), Some("Corp-EU"));
    }

    #[test]
    fn malformed_scopes_are_rejected_with_the_problem() {
        let long = format!("{SUB}/resourceGroups/{}", "a".repeat(MAX_SCOPE_LEN));
        let cases: Vec<(String, ScopeError)> = vec![
            ("".into(), ScopeError::Empty),
            ("subscriptions/x".into(), ScopeError::NotAbsolute),
            (format!("{SUB}/"), ScopeError::TrailingSlash),
            (
                format!("{SUB}//resourceGroups/rg"),
                ScopeError::EmptySegment(52),
            ),
            (
                format!("{SUB}/resourceGroups/r\ng"),
                ScopeError::ControlCharacter(68),
            ),
            (
                "/tenants/x".into(),
                ScopeError::UnknownRoot("tenants".into()),
            ),
            ("/subscriptions".into(), ScopeError::MissingSubscriptionId),
            (
                format!("{SUB}/resourceGroups"),
                ScopeError::MissingResourceGroupName,
            ),
            (
                format!("{SUB}/resourcegroups/rg/vm"),
                ScopeError::ExpectedProviders {
                    index: 4,
                    found: "vm".into(),
                },
            ),
            (
                format!("{SUB}/resourceGroups/rg/providers"),
                ScopeError::MissingNamespace,
            ),
            (
                format!("{SUB}/resourceGroups/rg/providers/Microsoft.Compute"),
                ScopeError::MissingResourceType("Microsoft.Compute".into()),
            ),
            (
                format!("{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines"),
                ScopeError::MissingResourceName("virtualMachines".into()),
            ),
            (
                "/providers/Microsoft.Management/managementGroups".into(),
                ScopeError::MissingManagementGroupId,
            ),
            (
                format!("{SUB}/foo/bar"),
                ScopeError::UnexpectedAfterSubscription("foo".into()),
            ),
            (long.clone(), ScopeError::TooLong(long.len())),
        ];
        for (text, want) in cases {
            assert_eq!(Scope::parse(&text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn comparison_key_is_lowercase_and_text_is_kept() {
        let s = Scope::parse("/SUBSCRIPTIONS/AbC/resourceGroups/RG").unwrap();
        assert_eq!(s.key(), "/subscriptions/abc/resourcegroups/rg");
        assert_eq!(s.as_str(), "/SUBSCRIPTIONS/AbC/resourceGroups/RG");
    }

    #[test]
    fn structural_containment() {
        let rg = Scope::parse(&format!("{SUB}/resourceGroups/rg")).unwrap();
        let vm = Scope::parse(&format!(
            "{SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/vm"
        ))
        .unwrap();
        let other = Scope::parse(&format!("{SUB}/resourceGroups/rg2")).unwrap();
        assert!(vm.is_structurally_within(&rg));
        assert!(rg.is_structurally_within(&rg));
        assert!(!rg.is_structurally_within(&vm));
        assert!(!vm.is_structurally_within(&other));
        assert!(vm.is_structurally_within(&Scope::root()));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._()-]{1,12}"
    }

    fn resource_scope() -> impl Strategy<Value = (String, usize)> {
        (
            name(),
            name(),
            name(),
            proptest::collection::vec((name(), name()), 1..4),
        )
            .prop_map(|(sub, rg, ns, pairs)| {
                let mut s = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns}");
                for (t, n) in &pairs {
                    s.push_str(&format!("/{t}/{n}"));
                }
                // subscription + resource group + each pair, minus itself
                (s, 2 + pairs.len() - 1)
            })
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in "\\PC{0,80}") {
            let _ = Scope::parse(&text);
        }

        #[test]
        fn parser_never_panics_on_slashy_input(text in "(/[a-zA-Z]{0,3}){0,10}/?") {
            let _ = Scope::parse(&text);
        }

        #[test]
        fn well_formed_resource_scopes_parse_with_their_ancestors((text, n) in resource_scope()) {
            let scope = Scope::parse(&text).unwrap();
            prop_assert_eq!(scope.kind(), ScopeKind::Resource);
            let ancestors: Vec<&str> = scope.structural_ancestor_keys().collect();
            prop_assert_eq!(ancestors.len(), n);
            for a in &ancestors {
                prop_assert!(scope.key().starts_with(a));
                prop_assert!(Scope::parse(a).is_ok());
            }
        }

        #[test]
        fn case_changes_do_not_change_the_key((text, _) in resource_scope()) {
            let upper = Scope::parse(&text.to_ascii_uppercase()).unwrap();
            let lower = Scope::parse(&text.to_ascii_lowercase()).unwrap();
            prop_assert_eq!(upper.key(), lower.key());
        }

        #[test]
        fn a_trailing_slash_or_doubled_slash_is_always_rejected((text, _) in resource_scope(), cut in 1usize..60) {
            let with_slash = format!("{text}/");
            prop_assert!(Scope::parse(&with_slash).is_err());
            let slashes: Vec<usize> = text.match_indices('/').map(|(i, _)| i).collect();
            let at = slashes[cut % slashes.len()];
            let doubled = format!("{}/{}", &text[..at], &text[at..]);
            prop_assert!(Scope::parse(&doubled).is_err());
        }
    }
}
