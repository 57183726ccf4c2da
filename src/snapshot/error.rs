//! Snapshot problems: every one found, each with where it is and what it
//! names, so an operator can fix a file in one pass.

use std::fmt;

use super::locate::Location;

/// One problem in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path of the offending value, e.g. `roleAssignments[3].role`.
    pub path: String,
    /// The id of the entry at fault, when it has one.
    pub id: Option<String>,
    pub message: String,
    pub location: Option<Location>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = self.location {
            write!(f, "{}:{}: ", loc.line, loc.column)?;
        }
        if !self.path.is_empty() {
            f.write_str(&self.path)?;
            if let Some(id) = &self.id {
                write!(f, " ({id})")?;
            }
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a snapshot could not be loaded: the source it came from and every
/// problem found in it.
#[derive(Debug, Clone, thiserror::Error)]
pub struct SnapshotError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{} is not a valid snapshot ({n} problem{}):",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}:", self.source_name)?;
            if p.location.is_none() {
                f.write_str(" ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl SnapshotError {
    /// A problem with the file as a whole (unreadable, too large, …).
    pub fn whole(source_name: String, message: String) -> SnapshotError {
        SnapshotError {
            source_name,
            problems: vec![Problem {
                path: String::new(),
                id: None,
                message,
                location: None,
            }],
        }
    }
}
