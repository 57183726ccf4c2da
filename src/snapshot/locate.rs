//! Where each entry of a snapshot file sits, for error messages.
//!
//! serde gives locations only for the first syntax or type error; the
//! semantic checks of validation (unknown role, cycle, …) need the line of
//! the entry they blame. This walks the YAML event stream once and records
//! the position of every value down to `section[index].field[index]`.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// Positions of values by path: `roleAssignments[3]`, `roleAssignments[3].role`,
/// `agents[0].managedScopes[1]`.
#[derive(Debug, Default)]
pub struct SourceMap {
    positions: HashMap<String, Location>,
}

/// How deep the map goes: section, index, field, index.
const MAX_DEPTH: usize = 4;

impl SourceMap {
    /// Builds the map; a file that does not parse as YAML gives an empty map
    /// (serde reports that error with its own location).
    pub fn build(text: &str) -> SourceMap {
        SourceMap::record(text, None)
    }

    /// Builds the map of only the `wanted` paths: the few a failed
    /// validation names, not the millions of values a large file holds.
    pub fn build_for(text: &str, wanted: &HashSet<&str>) -> SourceMap {
        if wanted.is_empty() {
            return SourceMap::default();
        }
        SourceMap::record(text, Some(wanted))
    }

    fn record(text: &str, wanted: Option<&HashSet<&str>>) -> SourceMap {
        let mut recorder = Recorder {
            wanted,
            stack: Vec::new(),
            path: String::new(),
            positions: HashMap::new(),
        };
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut recorder, false).is_err() {
            return SourceMap::default();
        }
        SourceMap {
            positions: recorder.positions,
        }
    }

    pub fn get(&self, path: &str) -> Option<Location> {
        self.positions.get(path).copied()
    }
}

enum Segment {
    Key(Option<String>),
    Index(usize),
}

/// An open mapping or sequence, and where its segment starts in the
/// current path.
struct Frame {
    segment: Segment,
    base: usize,
}

struct Recorder<'a> {
    wanted: Option<&'a HashSet<&'a str>>,
    stack: Vec<Frame>,
    /// The path of the value last started, kept up to date in place.
    path: String,
    positions: HashMap<String, Location>,
}

impl Recorder<'_> {
    /// Points `path` at the current key or item of the innermost frame.
    fn update_path(&mut self) {
        let Some(frame) = self.stack.last() else {
            return;
        };
        self.path.truncate(frame.base);
        match &frame.segment {
            Segment::Key(Some(k)) => {
                if !self.path.is_empty() {
                    self.path.push('.');
                }
                self.path.push_str(k);
            }
            Segment::Key(None) => {}
            Segment::Index(index) => {
                use std::fmt::Write as _;
                let _ = write!(self.path, "[{index}]");
            }
        }
    }

    /// A value starts: record it if it is a mapping key's value or a
    /// sequence item. Returns false when the scalar was a mapping key.
    fn value_starts(&mut self, mark: Marker, scalar_key: Option<&str>) -> bool {
        if let Some(Frame {
            segment: Segment::Key(key),
            ..
        }) = self.stack.last_mut()
        {
            if key.is_none() {
                if let Some(k) = scalar_key {
                    *key = Some(k.to_owned());
                }
                return false;
            }
        }
        self.update_path();
        let wanted = self.wanted.is_none_or(|w| w.contains(self.path.as_str()));
        if wanted && self.stack.len() <= MAX_DEPTH && !self.stack.is_empty() {
            let location = Location {
                line: mark.line(),
                column: mark.col() + 1,
            };
            if !self.positions.contains_key(&self.path) {
                self.positions.insert(self.path.clone(), location);
            }
        }
        true
    }

    /// A value ended: move the parent on to its next key or item.
    fn value_ends(&mut self) {
        match self.stack.last_mut() {
            Some(Frame {
                segment: Segment::Key(key),
                ..
            }) => *key = None,
            Some(Frame {
                segment: Segment::Index(index),
                ..
            }) => *index += 1,
            None => {}
        }
    }
}

impl Recorder<'_> {
    fn open(&mut self, segment: Segment) {
        self.stack.push(Frame {
            segment,
            base: self.path.len(),
        });
    }
}

impl MarkedEventReceiver for Recorder<'_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => {
                let is_value = self.value_starts(mark, Some(&value));
                if is_value {
                    self.value_ends();
                }
            }
            Event::Alias(_) => {
                let is_value = self.value_starts(mark, Some("*alias"));
                if is_value {
                    self.value_ends();
                }
            }
            Event::SequenceStart(..) => {
                self.value_starts(mark, None);
                self.open(Segment::Index(0));
            }
            Event::MappingStart(..) => {
                self.value_starts(mark, None);
                self.open(Segment::Key(None));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
                self.value_ends();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_fields_are_located() {
        let text = "revision: r1\nroleAssignments:\n  - id: a\n    role: Reader\n  - id: b\n    role: Nope\n    scope: /\n";
        let map = SourceMap::build(text);
        assert_eq!(map.get("roleAssignments[0]").map(|l| l.line), Some(3));
        assert_eq!(
            map.get("roleAssignments[1].role"),
            Some(Location {
                line: 6,
                column: 11
            })
        );
        assert_eq!(
            map.get("roleAssignments[1].scope"),
            Some(Location {
                line: 7,
                column: 12
            })
        );
    }

    #[test]
    fn flow_sequences_and_json_are_located() {
        let text = "{\"agents\": [{\"id\": \"x\", \"managedScopes\": [\"/a\", \"/b\"]}]}";
        let map = SourceMap::build(text);
        assert_eq!(
            map.get("agents[0].managedScopes[1]").map(|l| l.line),
            Some(1)
        );
        assert!(map.get("agents[0].managedScopes[1]").unwrap().column > 40);
    }

    #[test]
    fn a_map_for_wanted_paths_holds_only_those() {
        let text = "roleAssignments:\n  - id: a\n    role: Reader\n  - id: b\n    role: Nope\n";
        let wanted: HashSet<&str> = ["roleAssignments[1].role", "roleAssignments[1]"].into();
        let map = SourceMap::build_for(text, &wanted);
        assert_eq!(map.get("roleAssignments[1].role").map(|l| l.line), Some(5));
        assert_eq!(map.get("roleAssignments[1]").map(|l| l.line), Some(4));
        assert_eq!(map.get("roleAssignments[0].role"), None);
        assert_eq!(map.positions.len(), 2);
        let full = SourceMap::build(text);
        for path in wanted {
            assert_eq!(map.get(path), full.get(path));
        }
    }

    #[test]
    fn broken_yaml_gives_an_empty_map() {
        assert!(SourceMap::build("a: [1, 2").get("a").is_none());
    }
}
