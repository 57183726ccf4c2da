//! Values every section shares: scopes, action patterns, ABAC conditions,
//! durations, and the one check for an id declared twice.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use foldhash::fast::RandomState;

use super::Problems;
use crate::model::agent::parse_duration;
use crate::model::condition::CONDITION_VERSION;
use crate::model::{ActionPattern, Condition, PatternSet, Scope};

/// Parses a scope; a bad one is reported at `path`.
pub(super) fn scope(
    text: &str,
    path: &str,
    id: Option<&str>,
    problems: &mut Problems,
) -> Option<Scope> {
    match Scope::parse(text) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(path, id, format!("scope '{text}' {e}"));
            None
        }
    }
}

/// Scopes parsed so far, by their text: a large tenant writes its few
/// thousand distinct scopes a million times, and each is parsed (and held)
/// once. Bad scopes are not kept, so each entry that writes one is told.
#[derive(Default)]
pub(super) struct Scopes<'a> {
    by_text: HashMap<&'a str, Scope, RandomState>,
}

impl<'a> Scopes<'a> {
    /// As [`scope`], with the path made only when there is a problem.
    pub fn parse(
        &mut self,
        text: &'a str,
        path: impl FnOnce() -> String,
        id: Option<&str>,
        problems: &mut Problems,
    ) -> Option<Scope> {
        if let Some(known) = self.by_text.get(text) {
            return Some(known.clone());
        }
        match Scope::parse(text) {
            Ok(s) => {
                self.by_text.insert(text, s.clone());
                Some(s)
            }
            Err(e) => {
                problems.push(path(), id, format!("scope '{text}' {e}"));
                None
            }
        }
    }
}

/// Parses a list of action patterns; each bad one is reported at
/// `path[i]` and left out.
pub(super) fn patterns(
    list: &[String],
    path: &str,
    id: Option<&str>,
    problems: &mut Problems,
) -> PatternSet {
    let mut out = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        match ActionPattern::parse(text) {
            Ok(p) => out.push(p),
            Err(e) => problems.push(format!("{path}[{i}]"), id, format!("pattern '{text}' {e}")),
        }
    }
    PatternSet::new(out)
}

/// Parses an ABAC condition and checks its version, both fields of the
/// entry at `path`.
pub(super) fn condition(
    text: Option<&str>,
    version: Option<&str>,
    path: &str,
    id: Option<&str>,
    problems: &mut Problems,
) -> Option<Condition> {
    if let Some(v) = version {
        if v != CONDITION_VERSION {
            problems.push(
                format!("{path}.conditionVersion"),
                id,
                format!("conditionVersion '{v}' is not supported; only {CONDITION_VERSION} is"),
            );
        }
    }
    let text = text?;
    match Condition::parse(text) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(
                format!("{path}.condition"),
                id,
                format!("condition does not parse: {e}"),
            );
            None
        }
    }
}

/// Parses a duration such as `15m`; a bad one is reported at `path` and
/// read as zero so that the checks after it still run.
pub(super) fn duration(
    text: &str,
    path: String,
    id: Option<&str>,
    problems: &mut Problems,
) -> Duration {
    parse_duration(text).unwrap_or_else(|err| {
        problems.push(path, id, format!("duration '{text}' {err}"));
        Duration::ZERO
    })
}

/// The wording of every "declared twice" problem about an id.
pub(super) fn duplicate_id(what: &str, id: &str) -> String {
    format!("duplicate {what} id '{id}'")
}

/// The keys declared so far in one section, each with what it stands for
/// (an index, an id): the one place a repeated declaration is detected.
/// A repeat replaces the earlier value, so later look-ups find the last
/// declaration.
pub(super) struct Declared<K = String, V = ()> {
    by_key: HashMap<K, V, RandomState>,
}

impl<K: Hash + Eq, V> Declared<K, V> {
    pub fn with_capacity(capacity: usize) -> Self {
        Declared {
            by_key: HashMap::with_capacity_and_hasher(capacity, RandomState::default()),
        }
    }

    /// Declares `key`; the value it had when it was declared before.
    pub fn declare(&mut self, key: K, value: V) -> Option<V> {
        self.by_key.insert(key, value)
    }

    /// Declares an id under its comparison `key`, reporting a repeat at
    /// `path` as a duplicate `what` id.
    pub fn declare_id(
        &mut self,
        key: K,
        value: V,
        what: &str,
        id: &str,
        path: impl Into<String>,
        problems: &mut Problems,
    ) {
        if self.declare(key, value).is_some() {
            problems.push(path, Some(id), duplicate_id(what, id));
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.by_key.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_is_reported_once_per_repeat_and_the_last_one_wins() {
        let mut problems = Problems::new();
        let mut seen: Declared<String, usize> = Declared::with_capacity(3);
        for (i, id) in ["a", "b", "a"].into_iter().enumerate() {
            seen.declare_id(
                id.into(),
                i,
                "thing",
                id,
                format!("things[{i}]"),
                &mut problems,
            );
        }
        let list = problems.into_vec();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].path, "things[2]");
        assert_eq!(list[0].message, "duplicate thing id 'a'");
        assert_eq!(seen.get("a"), Some(&2));
    }

    #[test]
    fn a_bad_duration_reads_as_zero() {
        let mut problems = Problems::new();
        assert_eq!(
            duration("2h", "d".into(), None, &mut problems),
            Duration::from_secs(7200)
        );
        assert_eq!(
            duration("2", "d".into(), None, &mut problems),
            Duration::ZERO
        );
        assert_eq!(problems.into_vec().len(), 1);
    }
}
