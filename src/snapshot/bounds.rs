//! Bounds on a snapshot's shape, checked on the YAML event stream before
//! serde reads the text.
//!
//! serde expands YAML aliases while it deserialises, so a few hundred
//! kilobytes of nested aliases ("billion laughs") would grow into gigabytes
//! of values; nesting thousands of levels deep would recurse as deep. The
//! event stream names each alias once, without expanding it, so counting
//! what every anchor would expand to costs one pass and no memory beyond a
//! number per anchor.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// The deepest nesting of mappings and sequences accepted: a snapshot needs
/// about six levels (section, entry, field, list, condition maps…).
pub const MAX_DEPTH: usize = 64;

/// Aliases may add at most this many nodes, or as many nodes as the file
/// itself holds if that is more: anchors for shared lists stay usable, a
/// document that multiplies itself does not.
pub const MAX_ALIAS_NODES: u64 = 100_000;

/// Why a document was refused before it was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error(
        "the snapshot nests mappings and sequences deeper than {MAX_DEPTH} levels \
         (at line {line}); no snapshot needs that: look for runaway indentation or brackets"
    )]
    TooDeep { line: usize },
    #[error(
        "the snapshot's aliases expand to {expanded} nodes beyond the {literal} it holds \
         (the limit is {limit}); write the repeated entries out instead of aliasing aliases"
    )]
    AliasExpansion {
        expanded: u64,
        literal: u64,
        limit: u64,
    },
}

/// Checks nesting depth and alias expansion. A document that does not
/// parse as YAML passes: serde reports that error with its location.
pub fn check(text: &str) -> Result<(), ShapeError> {
    // Without an anchor there is nothing to expand, and serde bounds its
    // own recursion; skip the pass for the common, anchor-free file.
    if !text.contains('&') {
        return Ok(());
    }
    let mut counter = Counter::default();
    let mut parser = Parser::new_from_str(text);
    // Parse errors are serde's to report; a shape error stops the stream.
    let _ = parser.load(&mut counter, true);
    match counter.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[derive(Default)]
struct Counter {
    /// Open collections, with the anchor they define (0 = none) and the
    /// node count when they opened.
    open: Vec<(usize, u64)>,
    /// Nodes seen, aliases counted as what they expand to.
    nodes: u64,
    /// Nodes written in the file.
    literal: u64,
    /// Expanded size of each anchor, by anchor id.
    anchors: Vec<u64>,
    line: usize,
    error: Option<ShapeError>,
}

impl Counter {
    fn define(&mut self, anchor: usize, size: u64) {
        if anchor == 0 {
            return;
        }
        if self.anchors.len() <= anchor {
            self.anchors.resize(anchor + 1, 0);
        }
        self.anchors[anchor] = size;
    }

    fn expanded(&self) -> u64 {
        self.nodes - self.literal
    }
}

impl MarkedEventReceiver for Counter {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        self.line = mark.line();
        match event {
            Event::Scalar(_, _, anchor, _) => {
                self.nodes += 1;
                self.literal += 1;
                self.define(anchor, 1);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.nodes += 1;
                self.literal += 1;
                self.open.push((anchor, self.nodes - 1));
                if self.open.len() > MAX_DEPTH {
                    self.error = Some(ShapeError::TooDeep { line: self.line });
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, start)) = self.open.pop() {
                    self.define(anchor, self.nodes - start);
                }
            }
            Event::Alias(anchor) => {
                let size = self.anchors.get(anchor).copied().unwrap_or(1);
                self.nodes = self.nodes.saturating_add(size);
                let limit = MAX_ALIAS_NODES.max(self.literal);
                if self.expanded() > limit {
                    self.error = Some(ShapeError::AliasExpansion {
                        expanded: self.expanded(),
                        literal: self.literal,
                        limit,
                    });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nine levels of ten aliases each: a billion nodes from a small file.
    fn laughs(levels: usize) -> String {
        let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..levels {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            y.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        y
    }

    #[test]
    fn aliases_that_multiply_the_document_are_refused() {
        let bomb = laughs(9);
        assert!(bomb.len() < 2_000);
        match check(&bomb) {
            Err(ShapeError::AliasExpansion {
                expanded, limit, ..
            }) => {
                assert!(expanded > limit);
                assert_eq!(limit, MAX_ALIAS_NODES);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn anchors_for_shared_lists_are_fine() {
        let y = "scopes: &s [/a, /b, /c]\nagents:\n  - managedScopes: *s\n  - managedScopes: *s\n";
        assert_eq!(check(y), Ok(()));
        // A few levels of laughs stay under the bound.
        assert_eq!(check(&laughs(3)), Ok(()));
    }

    #[test]
    fn nesting_beyond_the_bound_is_refused_with_its_line() {
        let deep = format!(
            "x: &x 1\ny: {}{}\n",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert!(matches!(check(&deep), Err(ShapeError::TooDeep { line: 2 })));
        let fine = format!(
            "x: &x 1\ny: {}{}\n",
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        assert_eq!(check(&fine), Ok(()));
    }

    #[test]
    fn text_that_is_not_yaml_is_left_to_serde() {
        assert_eq!(check("a: &x [\n"), Ok(()));
        assert_eq!(check("&&&&"), Ok(()));
    }

    #[test]
    fn an_alias_to_an_unknown_anchor_counts_as_one_node() {
        assert_eq!(check("a: &a 1\nb: *nope\n"), Ok(()));
    }
}
