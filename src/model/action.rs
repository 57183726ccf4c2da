//! Operations and the wildcard patterns of role definitions (docs/model.md#operations).
//!
//! Patterns are compiled once per snapshot into the cheapest shape that
//! matches them (exact, prefix, suffix, …), stored lowercase, and compared
//! against the request's operation with ASCII case folding on the fly, so a
//! decision never lowercases or allocates.

use std::fmt;

/// The longest operation accepted, in bytes.
pub const MAX_OPERATION_LEN: usize = 512;

/// Why a requested operation was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes long; the limit is {MAX_OPERATION_LEN}")]
    TooLong(usize),
    #[error("contains '*' at byte {0}; a requested operation names one operation, wildcards belong in role definitions")]
    Wildcard(usize),
    #[error("contains whitespace or a control character at byte {0}")]
    BadCharacter(usize),
    #[error("has an empty segment at byte {0}")]
    EmptySegment(usize),
    #[error("must have the form {{Namespace}}/{{resourceType}}/{{operation}}")]
    TooFewSegments,
}

/// Checks a requested operation without allocating and tells whether it is
/// read-only (its last segment is `read`).
pub fn check_operation(operation: &str) -> Result<OperationInfo, OperationError> {
    let bytes = operation.as_bytes();
    // Fast path: one branch-free pass the compiler can vectorise; anything
    // suspicious falls through to the precise checks below.
    let suspicious = bytes.iter().fold(false, |bad, &b| {
        bad | (b <= b' ') | (b == 0x7f) | (b == b'*')
    });
    let doubled = bytes
        .windows(2)
        .fold(false, |bad, w| bad | ((w[0] == b'/') & (w[1] == b'/')));
    let slashes = bytes.iter().filter(|&&b| b == b'/').count();
    if !suspicious
        && !doubled
        && slashes >= 2
        && bytes.len() <= MAX_OPERATION_LEN
        && bytes[0] != b'/'
        && bytes[bytes.len() - 1] != b'/'
    {
        let last = bytes.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        return Ok(OperationInfo {
            read_only: bytes[last..].eq_ignore_ascii_case(b"read"),
        });
    }
    check_operation_precisely(bytes)
}

#[cold]
fn check_operation_precisely(bytes: &[u8]) -> Result<OperationInfo, OperationError> {
    if bytes.is_empty() {
        return Err(OperationError::Empty);
    }
    if bytes.len() > MAX_OPERATION_LEN {
        return Err(OperationError::TooLong(bytes.len()));
    }
    let mut segments = 1;
    let mut segment_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'*' => return Err(OperationError::Wildcard(i)),
            b'/' => {
                if i == segment_start {
                    return Err(OperationError::EmptySegment(i));
                }
                segments += 1;
                segment_start = i + 1;
            }
            b if b <= b' ' || b == 0x7f => return Err(OperationError::BadCharacter(i)),
            _ => {}
        }
    }
    if segment_start == bytes.len() {
        return Err(OperationError::EmptySegment(bytes.len()));
    }
    if segments < 3 {
        return Err(OperationError::TooFewSegments);
    }
    Ok(OperationInfo {
        read_only: bytes[segment_start..].eq_ignore_ascii_case(b"read"),
    })
}

/// What a valid operation tells about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationInfo {
    /// The last segment is `read` (docs/model.md#operations); everything else is a write.
    pub read_only: bool,
}

/// Why a pattern in a role or deny definition was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("is empty")]
    Empty,
    #[error("contains whitespace or a control character at byte {0}")]
    BadCharacter(usize),
}

/// A compiled `actions`-style pattern: `*` matches any run of characters,
/// `/` included, the empty run too. Case-insensitive (ASCII).
#[derive(Clone, PartialEq, Eq)]
pub struct ActionPattern {
    source: Box<str>,
    shape: Shape,
}

#[derive(Clone, PartialEq, Eq)]
enum Shape {
    /// `*`
    Any,
    Exact(Box<[u8]>),
    /// `abc*`
    Prefix(Box<[u8]>),
    /// `*abc`
    Suffix(Box<[u8]>),
    /// `abc*def`
    PrefixSuffix(Box<[u8]>, Box<[u8]>),
    /// Anything with more stars: literal pieces between them, lowercase.
    /// `anchored_start`/`anchored_end` say whether the first/last piece is
    /// pinned to the start/end of the operation.
    General {
        pieces: Box<[Box<[u8]>]>,
        anchored_start: bool,
        anchored_end: bool,
    },
}

impl ActionPattern {
    pub fn parse(pattern: &str) -> Result<ActionPattern, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if let Some(at) = pattern.bytes().position(|b| b <= b' ' || b == 0x7f) {
            return Err(PatternError::BadCharacter(at));
        }
        let lower = pattern.to_ascii_lowercase().into_bytes();
        let stars = lower.iter().filter(|&&b| b == b'*').count();
        let shape = if lower.iter().all(|&b| b == b'*') {
            Shape::Any
        } else if stars == 0 {
            Shape::Exact(lower.into())
        } else if stars == 1 && lower.ends_with(b"*") {
            Shape::Prefix(lower[..lower.len() - 1].into())
        } else if stars == 1 && lower.starts_with(b"*") {
            Shape::Suffix(lower[1..].into())
        } else if stars == 1 {
            let at = lower.iter().position(|&b| b == b'*').unwrap_or(0);
            Shape::PrefixSuffix(lower[..at].into(), lower[at + 1..].into())
        } else {
            let pieces: Box<[Box<[u8]>]> = lower
                .split(|&b| b == b'*')
                .filter(|p| !p.is_empty())
                .map(Into::into)
                .collect();
            Shape::General {
                pieces,
                anchored_start: !lower.starts_with(b"*"),
                anchored_end: !lower.ends_with(b"*"),
            }
        };
        Ok(ActionPattern {
            source: pattern.into(),
            shape,
        })
    }

    /// The pattern as written in the definition.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches `operation`, ignoring ASCII case.
    #[inline]
    pub fn matches(&self, operation: &str) -> bool {
        let op = operation.as_bytes();
        match &self.shape {
            Shape::Any => true,
            Shape::Exact(lit) => op.eq_ignore_ascii_case(lit),
            Shape::Prefix(p) => starts_with_ci(op, p),
            Shape::Suffix(s) => ends_with_ci(op, s),
            Shape::PrefixSuffix(p, s) => {
                op.len() >= p.len() + s.len() && starts_with_ci(op, p) && ends_with_ci(op, s)
            }
            Shape::General {
                pieces,
                anchored_start,
                anchored_end,
            } => match_general(op, pieces, *anchored_start, *anchored_end),
        }
    }
}

impl fmt::Debug for ActionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActionPattern({:?})", &*self.source)
    }
}

impl fmt::Display for ActionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[inline]
fn starts_with_ci(hay: &[u8], lower_prefix: &[u8]) -> bool {
    hay.len() >= lower_prefix.len() && hay[..lower_prefix.len()].eq_ignore_ascii_case(lower_prefix)
}

#[inline]
fn ends_with_ci(hay: &[u8], lower_suffix: &[u8]) -> bool {
    hay.len() >= lower_suffix.len()
        && hay[hay.len() - lower_suffix.len()..].eq_ignore_ascii_case(lower_suffix)
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// Glob with `*` only: pin the ends, then take each middle piece at its
/// leftmost occurrence, which is optimal when the only wildcard is `*`.
fn match_general(
    op: &[u8],
    pieces: &[Box<[u8]>],
    anchored_start: bool,
    anchored_end: bool,
) -> bool {
    let mut rest = op;
    let mut middle = pieces;
    if anchored_start {
        let Some((first, tail)) = middle.split_first() else {
            return true;
        };
        if !starts_with_ci(rest, first) {
            return false;
        }
        rest = &rest[first.len()..];
        middle = tail;
    }
    if anchored_end {
        let Some((last, head)) = middle.split_last() else {
            // The only piece was anchored at the start and consumed; the
            // pattern ends with a literal that must also end the operation.
            return !anchored_start || pieces.len() != 1 || rest.is_empty();
        };
        if !ends_with_ci(rest, last) {
            return false;
        }
        rest = &rest[..rest.len() - last.len()];
        middle = head;
    }
    for piece in middle {
        match find_ci(rest, piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// A list of patterns, as in one `actions` or `notActions` array.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternSet {
    patterns: Box<[ActionPattern]>,
}

impl PatternSet {
    pub fn new(patterns: Vec<ActionPattern>) -> PatternSet {
        PatternSet {
            patterns: patterns.into_boxed_slice(),
        }
    }

    /// The first pattern that matches `operation`.
    #[inline]
    pub fn first_match(&self, operation: &str) -> Option<&ActionPattern> {
        self.patterns.iter().find(|p| p.matches(operation))
    }

    #[inline]
    pub fn matches(&self, operation: &str) -> bool {
        self.first_match(operation).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ActionPattern> {
        self.patterns.iter()
    }

    pub fn sources(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, op: &str) -> bool {
        ActionPattern::parse(pattern).unwrap().matches(op)
    }

    #[test]
    fn star_matches_across_slashes_and_the_empty_run() {
        assert!(m("*", "Microsoft.Compute/virtualMachines/read"));
        assert!(m("*/read", "Microsoft.Compute/virtualMachines/read"));
        assert!(!m("*/read", "Microsoft.Compute/virtualMachines/write"));
        assert!(m(
            "Microsoft.Storage/*",
            "Microsoft.Storage/storageAccounts/blobServices/read"
        ));
        assert!(m(
            "Microsoft.Authorization/*/Write",
            "microsoft.authorization/roleAssignments/write"
        ));
        assert!(!m(
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/write"
        ));
        assert!(m(
            "Microsoft.Network/virtualNetworks*",
            "Microsoft.Network/virtualNetworks/subnets/join/action"
        ));
        assert!(m(
            "Microsoft.Network/virtualNetworks*",
            "Microsoft.Network/virtualNetworks"
        ));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXcYYb"));
        assert!(m("*b*", "abc"));
        assert!(!m("*b*", "ac"));
        assert!(m("a**", "a"));
        assert!(m("a*a", "aa"));
        assert!(!m("a*a", "a"));
    }

    #[test]
    fn matching_ignores_case_on_both_sides() {
        assert!(m(
            "MICROSOFT.AUTHORIZATION/*",
            "microsoft.authorization/locks/write"
        ));
        assert!(m(
            "microsoft.compute/virtualmachines/READ",
            "Microsoft.Compute/VirtualMachines/read"
        ));
        assert!(!m(
            "Microsoft.Compute/virtualMachines/read",
            "Microsoft.Compute/virtualMachines/rea"
        ));
    }

    #[test]
    fn operations_are_checked_and_classified() {
        assert_eq!(
            check_operation("Microsoft.Compute/virtualMachines/READ"),
            Ok(OperationInfo { read_only: true })
        );
        assert_eq!(
            check_operation("Microsoft.Compute/virtualMachines/restart/action"),
            Ok(OperationInfo { read_only: false })
        );
        assert_eq!(check_operation(""), Err(OperationError::Empty));
        assert_eq!(
            check_operation("Microsoft.Compute/*/read"),
            Err(OperationError::Wildcard(18))
        );
        assert_eq!(
            check_operation("a//b"),
            Err(OperationError::EmptySegment(2))
        );
        assert_eq!(
            check_operation("a/b/"),
            Err(OperationError::EmptySegment(4))
        );
        assert_eq!(
            check_operation("a/b c/d"),
            Err(OperationError::BadCharacter(3))
        );
        assert_eq!(
            check_operation("Microsoft.Compute/read"),
            Err(OperationError::TooFewSegments)
        );
        assert_eq!(
            check_operation(&"a/".repeat(300)),
            Err(OperationError::TooLong(600))
        );
    }

    #[test]
    fn pattern_sets_report_the_pattern_that_matched() {
        let set = PatternSet::new(vec![
            ActionPattern::parse("Microsoft.Web/*").unwrap(),
            ActionPattern::parse("*/read").unwrap(),
        ]);
        assert_eq!(
            set.first_match("Microsoft.Sql/servers/read")
                .map(|p| p.as_str()),
            Some("*/read")
        );
        assert!(set.first_match("Microsoft.Sql/servers/write").is_none());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A straightforward reference: dynamic programming over the pattern,
    /// after lowercasing both sides.
    fn reference(pattern: &str, op: &str) -> bool {
        let p = pattern.to_ascii_lowercase().into_bytes();
        let s = op.to_ascii_lowercase().into_bytes();
        let mut dp = vec![vec![false; s.len() + 1]; p.len() + 1];
        dp[0][0] = true;
        for i in 1..=p.len() {
            if p[i - 1] == b'*' {
                dp[i][0] = dp[i - 1][0];
            }
            for j in 1..=s.len() {
                dp[i][j] = if p[i - 1] == b'*' {
                    dp[i - 1][j] || dp[i][j - 1]
                } else {
                    dp[i - 1][j - 1] && p[i - 1] == s[j - 1]
                };
            }
        }
        dp[p.len()][s.len()]
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_the_reference(pattern in "[aAbB/*]{1,10}", op in "[aAbB/]{0,12}") {
            let compiled = ActionPattern::parse(&pattern).unwrap();
            prop_assert_eq!(compiled.matches(&op), reference(&pattern, &op), "pattern {} op {}", pattern, op);
        }

        #[test]
        fn a_pattern_without_stars_matches_itself_in_any_case(op in "[A-Za-z./]{1,30}") {
            let compiled = ActionPattern::parse(&op).unwrap();
            prop_assert!(compiled.matches(&op.to_ascii_uppercase()));
            prop_assert!(compiled.matches(&op.to_ascii_lowercase()));
        }

        #[test]
        fn star_slash_read_matches_exactly_the_read_only_operations(op in "[A-Za-z]{1,8}/[A-Za-z]{1,8}/(read|READ|Read|write|delete|action|reads)") {
            let read = ActionPattern::parse("*/read").unwrap();
            let info = check_operation(&op).unwrap();
            prop_assert_eq!(read.matches(&op), info.read_only);
        }

        #[test]
        fn operation_checker_never_panics(op in "\\PC{0,64}") {
            let _ = check_operation(&op);
        }

        #[test]
        fn fast_path_agrees_with_the_precise_checks(op in "[a/* .R]{0,12}(read|Read)?") {
            prop_assert_eq!(check_operation(&op), check_operation_precisely(op.as_bytes()));
        }
    }
}
