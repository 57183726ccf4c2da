//! Where each entry of a snapshot file sits, for error messages.
//!
//! serde gives locations only for the first syntax or type error; the
//! semantic checks of validation (unknown role, cycle, …) need the line of
//! the entry they blame. This walks the YAML event stream once and records
//! the position of every value down to `section[index].field[index]`.

use std::collections::HashMap;

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
        let mut recorder = Recorder::default();
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

enum Frame {
    Mapping { key: Option<String> },
    Sequence { index: usize },
}

#[derive(Default)]
struct Recorder {
    stack: Vec<Frame>,
    positions: HashMap<String, Location>,
}

impl Recorder {
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Mapping { key: Some(k) } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                }
                Frame::Mapping { key: None } => {}
                Frame::Sequence { index } => {
                    path.push('[');
                    path.push_str(&index.to_string());
                    path.push(']');
                }
            }
        }
        path
    }

    /// A value starts: record it if it is a mapping key's value or a
    /// sequence item. Returns false when the scalar was a mapping key.
    fn value_starts(&mut self, mark: Marker, scalar_key: Option<&str>) -> bool {
        if let Some(Frame::Mapping { key }) = self.stack.last_mut() {
            if key.is_none() {
                if let Some(k) = scalar_key {
                    *key = Some(k.to_owned());
                }
                return false;
            }
        }
        if self.stack.len() <= MAX_DEPTH && !self.stack.is_empty() {
            let location = Location {
                line: mark.line(),
                column: mark.col() + 1,
            };
            self.positions.entry(self.path()).or_insert(location);
        }
        true
    }

    /// A value ended: move the parent on to its next key or item.
    fn value_ends(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Mapping { key }) => *key = None,
            Some(Frame::Sequence { index }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Recorder {
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
                self.stack.push(Frame::Sequence { index: 0 });
            }
            Event::MappingStart(..) => {
                self.value_starts(mark, None);
                self.stack.push(Frame::Mapping { key: None });
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
    fn broken_yaml_gives_an_empty_map() {
        assert!(SourceMap::build("a: [1, 2").get("a").is_none());
    }
}
