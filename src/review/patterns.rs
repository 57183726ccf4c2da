//! Reasoning about operation patterns without enumerating operations: when
//! one pattern's operations all match another, and when two patterns can
//! share no operation. Both answers are safe approximations: `includes` and
//! `disjoint` may say "no" where the truth is "yes", never the reverse, so
//! a diff built on them can over-report a change but never miss one.

use crate::model::ActionPattern;

/// A character no pattern or operation contains (validation refuses
/// control characters), standing for "any run" when a pattern is read as
/// an operation.
const ANY_RUN: &str = "\u{1}";

/// Whether every operation `small` matches, `big` matches too.
///
/// With `*` as the only wildcard this is exact up to the shape of
/// operations: read `small` as an operation whose stars are a character no
/// literal contains; `big` matches that string exactly when `big`'s stars
/// can absorb each of `small`'s, which is inclusion. (It ignores that
/// operations need three segments, so `*/*/*` is not seen to include `*`.)
pub fn includes(big: &ActionPattern, small: &ActionPattern) -> bool {
    let text = small.as_str();
    if text.contains('*') {
        big.matches(&text.replace('*', ANY_RUN))
    } else {
        big.matches(text)
    }
}

/// Whether no operation matches both patterns: their fixed beginnings (up
/// to the first `*`) or fixed ends (after the last `*`) contradict, or one
/// is a literal the other does not match.
pub fn disjoint(a: &ActionPattern, b: &ActionPattern) -> bool {
    let (a_text, b_text) = (a.as_str(), b.as_str());
    if !a_text.contains('*') {
        return !b.matches(a_text);
    }
    if !b_text.contains('*') {
        return !a.matches(b_text);
    }
    let (pa, pb) = (fixed_start(a_text), fixed_start(b_text));
    let (sa, sb) = (fixed_end(a_text), fixed_end(b_text));
    // The shorter fixed beginning must begin the longer, and likewise at the end.
    let n = pa.len().min(pb.len());
    let m = sa.len().min(sb.len());
    !pa[..n].eq_ignore_ascii_case(&pb[..n])
        || !sa[sa.len() - m..].eq_ignore_ascii_case(&sb[sb.len() - m..])
}

/// The pattern up to its first `*`.
fn fixed_start(pattern: &str) -> &[u8] {
    let b = pattern.as_bytes();
    &b[..b.iter().position(|&c| c == b'*').unwrap_or(b.len())]
}

/// The pattern after its last `*`.
fn fixed_end(pattern: &str) -> &[u8] {
    let b = pattern.as_bytes();
    &b[b.iter().rposition(|&c| c == b'*').map_or(0, |i| i + 1)..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(text: &str) -> ActionPattern {
        ActionPattern::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn inclusion_follows_the_stars() {
        assert!(includes(&p("*"), &p("Microsoft.Compute/*")));
        assert!(includes(
            &p("Microsoft.Compute/*"),
            &p("microsoft.compute/virtualMachines/*")
        ));
        assert!(includes(&p("*/read"), &p("Microsoft.Compute/*/read")));
        assert!(includes(
            &p("Microsoft.Compute/*/read"),
            &p("Microsoft.Compute/disks/read")
        ));
        assert!(!includes(&p("Microsoft.Compute/*"), &p("*")));
        assert!(!includes(&p("*/read"), &p("Microsoft.Compute/*")));
        assert!(!includes(&p("a/b/c"), &p("a/*/c")));
        assert!(includes(&p("a/*/c"), &p("a/b/c")));
    }

    #[test]
    fn disjointness_reads_fixed_ends() {
        assert!(disjoint(&p("*/read"), &p("*/delete")));
        assert!(disjoint(
            &p("Microsoft.Compute/*"),
            &p("Microsoft.Storage/*")
        ));
        assert!(disjoint(
            &p("Microsoft.CognitiveServices/accounts/delete"),
            &p("*/read")
        ));
        assert!(!disjoint(&p("Microsoft.Compute/*"), &p("*/delete")));
        assert!(!disjoint(&p("*"), &p("a/b/c")));
        assert!(!disjoint(&p("a/*"), &p("*/c")));
    }

    fn pattern() -> impl Strategy<Value = String> {
        "[ab/*]{1,6}"
    }

    fn operation() -> impl Strategy<Value = String> {
        "[ab/]{0,7}"
    }

    proptest! {
        /// An inclusion claimed holds for every operation.
        #[test]
        fn claimed_inclusion_holds(big in pattern(), small in pattern(), op in operation()) {
            let (big, small) = (p(&big), p(&small));
            if includes(&big, &small) && small.matches(&op) {
                prop_assert!(big.matches(&op), "{big} ⊇ {small} claimed, but {op}");
            }
        }

        /// Claimed disjoint patterns share no operation.
        #[test]
        fn claimed_disjointness_holds(a in pattern(), b in pattern(), op in operation()) {
            let (a, b) = (p(&a), p(&b));
            if disjoint(&a, &b) {
                prop_assert!(!(a.matches(&op) && b.matches(&op)), "{a} ∩ {b} claimed empty, but {op}");
            }
        }

        /// Inclusion is exact: when it is denied, a witness operation
        /// (the smaller pattern with its stars filled) shows it.
        #[test]
        fn denied_inclusion_has_a_witness(big in pattern(), small in pattern()) {
            let (bp, sp) = (p(&big), p(&small));
            if !includes(&bp, &sp) {
                let witnesses = ["", "a", "b", "/", "ab/", "zz"]
                    .iter()
                    .map(|fill| small.replace('*', fill));
                let mut found = false;
                for w in witnesses {
                    found |= sp.matches(&w) && !bp.matches(&w);
                }
                // Stars filled with a fresh letter always witness it.
                let fresh = small.replace('*', "z");
                found |= !bp.matches(&fresh);
                prop_assert!(found, "{big} ⊉ {small} but no witness");
            }
        }
    }
}
