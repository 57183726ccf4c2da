//! `rampart test FILE`: policy tests. A YAML file names a snapshot and a
//! list of requests with the decision each must get; every test is decided
//! offline, as `rampart check` would, and compared. The file is checked
//! whole before anything runs, and every problem is reported with the path
//! of the field to fix (`tests[3].expect.decision`) and its line.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_yaml::Value;

use crate::engine::{Loaded, Match, Reason, Request, Verdict};
use crate::model::{check_operation, check_principal_id, Scope};
use crate::snapshot::locate::SourceMap;
use crate::snapshot::validate::Problems;
use crate::snapshot::Problem;

/// The schema name and version of the JSON report.
pub const SCHEMA: &str = "rampart.test/v1";

/// A parsed test file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSuite {
    /// The snapshot to test, relative to the test file.
    pub snapshot: Option<String>,
    pub tests: Vec<TestCase>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    pub name: String,
    pub principal: String,
    pub operation: String,
    pub scope: String,
    pub data_action: bool,
    pub attributes: BTreeMap<String, String>,
    pub expect: Expectation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectation {
    pub decision: Verdict,
    /// Checked only when given.
    pub reason: Option<Reason>,
}

const TOP_KEYS: [&str; 2] = ["snapshot", "tests"];
const TEST_KEYS: [&str; 8] = [
    "name",
    "principal",
    "operation",
    "action",
    "scope",
    "dataAction",
    "attributes",
    "expect",
];
const EXPECT_KEYS: [&str; 2] = ["decision", "reason"];

/// The verdict a reason always comes with.
fn verdict_of(reason: Reason) -> Verdict {
    match reason {
        Reason::RoleAssignment | Reason::ElevationGrant | Reason::KeyAccess => Verdict::Allow,
        Reason::ReviewModeWrite | Reason::NeedsElevation => Verdict::ApprovalRequired,
        Reason::NoMatchingAssignment
        | Reason::ConditionNotMet
        | Reason::DenyAssignment
        | Reason::OutOfAgentScope
        | Reason::UnknownPrincipal
        | Reason::LocalAuthDisabled => Verdict::Deny,
    }
}

/// Parses and checks a test file: the suite, or every problem in it.
pub fn parse(text: &str) -> Result<TestSuite, Vec<Problem>> {
    let map = SourceMap::build(text);
    let mut problems = Problems::new(&map);
    let root: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![Problem {
                path: String::new(),
                id: None,
                message: e.to_string(),
                location: e.location().map(|l| crate::snapshot::locate::Location {
                    line: l.line(),
                    column: l.column(),
                }),
            }])
        }
    };
    let Value::Mapping(top) = &root else {
        problems.push(
            "",
            None,
            "a test file is a mapping with `tests:` (and optionally `snapshot:`)",
        );
        return Err(problems.into_vec());
    };
    unknown_keys(top, "", &TOP_KEYS, &mut problems);
    let snapshot = match top.get("snapshot") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(_) => {
            problems.push(
                "snapshot",
                None,
                "must be the path of a snapshot file, relative to this file",
            );
            None
        }
    };
    let mut tests = Vec::new();
    match top.get("tests") {
        Some(Value::Sequence(items)) if !items.is_empty() => {
            let mut names: HashMap<String, usize> = HashMap::new();
            for (i, item) in items.iter().enumerate() {
                if let Some(test) = test_case(item, i, &mut problems) {
                    if let Some(first) = names.insert(test.name.clone(), i) {
                        problems.push(
                            format!("tests[{i}].name"),
                            Some(&test.name),
                            format!("duplicate test name '{}' (also tests[{first}])", test.name),
                        );
                    }
                    tests.push(test);
                }
            }
        }
        Some(Value::Sequence(_)) => problems.push("tests", None, "has no tests"),
        Some(_) => problems.push("tests", None, "must be a list of tests"),
        None => problems.push("tests", None, "is missing: list the tests under `tests:`"),
    }
    if problems.is_empty() {
        Ok(TestSuite { snapshot, tests })
    } else {
        Err(problems.into_vec())
    }
}

fn unknown_keys(map: &serde_yaml::Mapping, at: &str, known: &[&str], problems: &mut Problems<'_>) {
    for key in map.keys() {
        let name = match key {
            Value::String(s) => s.clone(),
            other => format!("{other:?}"),
        };
        if !known.contains(&name.as_str()) {
            let path = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            problems.push(
                path,
                None,
                format!("unknown key '{name}'; expected one of {}", known.join(", ")),
            );
        }
    }
}

/// A scalar as text: strings as they are, numbers and booleans written out.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn test_case(item: &Value, i: usize, problems: &mut Problems<'_>) -> Option<TestCase> {
    let at = format!("tests[{i}]");
    let Value::Mapping(m) = item else {
        problems.push(
            at,
            None,
            "must be a mapping with name, principal, operation, scope and expect",
        );
        return None;
    };
    unknown_keys(m, &at, &TEST_KEYS, problems);
    let before = problems.len();
    let mut string = |key: &str, what: &str| -> Option<String> {
        match m.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                problems.push(format!("{at}.{key}"), None, format!("must be {what}"));
                None
            }
            None => None,
        }
    };
    let name = string("name", "a string");
    let principal = string("principal", "a principal id (a string)");
    let operation = string("operation", "an operation (a string)");
    let action = string("action", "an operation (a string)");
    let scope = string("scope", "a scope (a string)");
    let id = name.as_deref();
    match &name {
        Some(n) if n.trim().is_empty() => problems.push(format!("{at}.name"), None, "is empty"),
        None if !m.contains_key("name") => problems.push(
            format!("{at}.name"),
            None,
            "is missing: give each test a name",
        ),
        _ => {}
    }
    match &principal {
        Some(p) => {
            if let Err(e) = check_principal_id(p) {
                problems.push(
                    format!("{at}.principal"),
                    id,
                    format!("principal '{p}' {e}"),
                );
            }
        }
        None if !m.contains_key("principal") => {
            problems.push(format!("{at}.principal"), id, "is missing")
        }
        None => {}
    }
    let (operation, op_key) = match (operation, action) {
        (Some(o), None) => (Some(o), "operation"),
        (None, Some(a)) => (Some(a), "action"),
        (Some(_), Some(_)) => {
            problems.push(
                format!("{at}.action"),
                id,
                "give `operation` or `action`, not both",
            );
            (None, "operation")
        }
        (None, None) => {
            if !m.contains_key("operation") && !m.contains_key("action") {
                problems.push(
                    format!("{at}.operation"),
                    id,
                    "is missing, e.g. operation: Microsoft.Compute/virtualMachines/read",
                );
            }
            (None, "operation")
        }
    };
    if let Some(op) = &operation {
        if let Err(e) = check_operation(op) {
            problems.push(
                format!("{at}.{op_key}"),
                id,
                format!("operation '{op}' {e}"),
            );
        }
    }
    match &scope {
        Some(s) => {
            if let Err(e) = Scope::parse(s) {
                problems.push(format!("{at}.scope"), id, format!("scope '{s}' {e}"));
            }
        }
        None if !m.contains_key("scope") => problems.push(
            format!("{at}.scope"),
            id,
            "is missing, e.g. scope: /subscriptions/{id}/resourceGroups/{name}",
        ),
        None => {}
    }
    let data_action = match m.get("dataAction") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            problems.push(format!("{at}.dataAction"), id, "must be true or false");
            false
        }
    };
    let mut attributes = BTreeMap::new();
    match m.get("attributes") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(a)) => {
            for (k, v) in a {
                match (scalar(k), scalar(v)) {
                    (Some(k), Some(v)) => {
                        attributes.insert(k, v);
                    }
                    _ => problems.push(
                        format!("{at}.attributes"),
                        id,
                        "maps names to single values (strings, numbers or booleans)",
                    ),
                }
            }
        }
        Some(_) => problems.push(
            format!("{at}.attributes"),
            id,
            "must be a mapping of attribute names to values",
        ),
    }
    let expect = expectation(m.get("expect"), &format!("{at}.expect"), id, problems);
    if problems.len() > before {
        return None;
    }
    Some(TestCase {
        name: name?,
        principal: principal?,
        operation: operation?,
        scope: scope?,
        data_action,
        attributes,
        expect: expect?,
    })
}

fn expectation(
    value: Option<&Value>,
    at: &str,
    id: Option<&str>,
    problems: &mut Problems<'_>,
) -> Option<Expectation> {
    let verdicts: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
    let Some(Value::Mapping(m)) = value else {
        let message = if value.is_none() {
            "is missing, e.g. expect: { decision: ALLOW }"
        } else {
            "must be a mapping with `decision` (and optionally `reason`)"
        };
        problems.push(at, id, message);
        return None;
    };
    unknown_keys(m, at, &EXPECT_KEYS, problems);
    let decision = match m.get("decision") {
        Some(v) => match scalar(v) {
            Some(text) => {
                let found = Verdict::ALL.into_iter().find(|d| d.as_str() == text);
                if found.is_none() {
                    problems.push(
                        format!("{at}.decision"),
                        id,
                        format!("'{text}' is not one of {}", verdicts.join(", ")),
                    );
                }
                found
            }
            None => {
                problems.push(
                    format!("{at}.decision"),
                    id,
                    format!("must be one of {}", verdicts.join(", ")),
                );
                None
            }
        },
        None => {
            problems.push(
                format!("{at}.decision"),
                id,
                format!("is missing: one of {}", verdicts.join(", ")),
            );
            None
        }
    };
    let reasons: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    let reason = match m.get("reason") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let text = scalar(v).unwrap_or_default();
            let found = Reason::ALL.into_iter().find(|r| r.as_str() == text);
            match found {
                None => problems.push(
                    format!("{at}.reason"),
                    id,
                    format!("'{text}' is not one of {}", reasons.join(", ")),
                ),
                Some(Reason::ElevationGrant) => problems.push(
                    format!("{at}.reason"),
                    id,
                    "ELEVATION_GRANT needs an active grant; tests decide without grants",
                ),
                Some(r) => {
                    if let Some(d) = decision.filter(|&d| d != verdict_of(r)) {
                        problems.push(
                            format!("{at}.reason"),
                            id,
                            format!(
                                "{} comes with {}, not {}",
                                r.as_str(),
                                verdict_of(r).as_str(),
                                d.as_str()
                            ),
                        );
                    }
                }
            }
            found
        }
    };
    Some(Expectation {
        decision: decision?,
        reason,
    })
}

/// The snapshot a suite runs against: the `--snapshot` flag, else the
/// file's `snapshot:` (relative to the test file), else `None` (the
/// embedded demo).
pub fn snapshot_path(test_file: &Path, suite: &TestSuite, flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(f) = flag {
        return Some(f.to_path_buf());
    }
    let relative = suite.snapshot.as_deref()?;
    let dir = test_file.parent().unwrap_or_else(|| Path::new(""));
    Some(dir.join(relative))
}

/// One test, run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    pub index: usize,
    pub name: String,
    pub passed: bool,
    pub principal: String,
    pub operation: String,
    pub scope: String,
    pub data_action: bool,
    pub expected: ExpectedOut,
    pub actual: ActualOut,
    /// The decision as `rampart check` explains it.
    pub explanation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedOut {
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActualOut {
    pub decision: &'static str,
    pub reason: &'static str,
    pub matches: Vec<MatchOut>,
    /// Set when the request could not be decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One thing that took part in the decision, as the API's `Match`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchOut {
    pub kind: &'static str,
    pub id: String,
    pub scope: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub role_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub role_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived_from_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

impl From<&Match> for MatchOut {
    fn from(m: &Match) -> MatchOut {
        MatchOut {
            kind: m.kind.as_str(),
            id: m.id.clone(),
            scope: m.scope.clone(),
            role_id: m.role_id.clone(),
            role_name: m.role_name.clone(),
            via_group: m.via_group.clone(),
            derived_from_agent: m.derived_from_agent.clone(),
            pattern: m.pattern.clone(),
            condition: m.condition.clone(),
        }
    }
}

/// A suite's results against one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestReport {
    pub schema: &'static str,
    pub file: String,
    pub snapshot: SnapshotOut,
    pub summary: SummaryOut,
    pub tests: Vec<TestResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotOut {
    pub source: String,
    pub revision: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SummaryOut {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
}

/// Decides every test of `suite` against `loaded` (no grants, nothing
/// consumed) and compares.
pub fn run(file: &str, suite: &TestSuite, loaded: &Loaded) -> TestReport {
    let mut tests = Vec::with_capacity(suite.tests.len());
    for (index, t) in suite.tests.iter().enumerate() {
        let request = Request {
            principal_id: &t.principal,
            action: &t.operation,
            scope: &t.scope,
            data_action: t.data_action,
            attributes: &t.attributes,
            explain: true,
            dry_run: true,
        };
        let expected = ExpectedOut {
            decision: t.expect.decision.as_str(),
            reason: t.expect.reason.map(Reason::as_str),
        };
        let (actual, explanation, passed) = match loaded.decide(&request) {
            Ok(d) => {
                let passed =
                    d.verdict == t.expect.decision && t.expect.reason.is_none_or(|r| r == d.reason);
                let actual = ActualOut {
                    decision: d.verdict.as_str(),
                    reason: d.reason.as_str(),
                    matches: d.matches.iter().map(MatchOut::from).collect(),
                    error: None,
                };
                (actual, crate::cli::render(&d), passed)
            }
            Err(e) => {
                let message = format!("invalid {}: {e}", e.field);
                let actual = ActualOut {
                    decision: "",
                    reason: "",
                    matches: Vec::new(),
                    error: Some(message.clone()),
                };
                (actual, message, false)
            }
        };
        tests.push(TestResult {
            index,
            name: t.name.clone(),
            passed,
            principal: t.principal.clone(),
            operation: t.operation.clone(),
            scope: t.scope.clone(),
            data_action: t.data_action,
            expected,
            actual,
            explanation,
        });
    }
    let passed = tests.iter().filter(|t| t.passed).count();
    let snapshot = &loaded.snapshot.info;
    TestReport {
        schema: SCHEMA,
        file: file.to_owned(),
        snapshot: SnapshotOut {
            source: snapshot.source.clone(),
            revision: snapshot.revision.clone(),
        },
        summary: SummaryOut {
            total: tests.len(),
            passed,
            failed: tests.len() - passed,
        },
        tests,
    }
}

fn expected_text(e: &ExpectedOut) -> String {
    match e.reason {
        Some(r) => format!("{} ({r})", e.decision),
        None => e.decision.to_owned(),
    }
}

fn actual_text(a: &ActualOut) -> String {
    match &a.error {
        Some(e) => e.clone(),
        None => format!("{} ({})", a.decision, a.reason),
    }
}

impl TestReport {
    pub fn all_passed(&self) -> bool {
        self.summary.failed == 0
    }

    /// One line per test; a failure shows what was expected, what came,
    /// and the decision's explanation.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{} against {} (revision {})\n",
            self.file, self.snapshot.source, self.snapshot.revision
        );
        for t in &self.tests {
            if t.passed {
                let _ = writeln!(out, "  PASS  tests[{}] {}", t.index, t.name);
                continue;
            }
            let _ = writeln!(out, "  FAIL  tests[{}] {}", t.index, t.name);
            let _ = writeln!(
                out,
                "        request:  {} {}{} at {}",
                t.principal,
                if t.data_action { "data action " } else { "" },
                t.operation,
                t.scope
            );
            let _ = writeln!(out, "        expected: {}", expected_text(&t.expected));
            let _ = writeln!(out, "        got:      {}", actual_text(&t.actual));
            for line in t.explanation.lines() {
                let _ = writeln!(out, "          {line}");
            }
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "{} test{}: {} passed, {} failed",
            s.total,
            if s.total == 1 { "" } else { "s" },
            s.passed,
            s.failed
        );
        out
    }

    /// JUnit XML, as CI systems read it: one test case per test.
    pub fn junit(&self) -> String {
        let s = &self.summary;
        let file = xml(&self.file);
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"rampart\" tests=\"{}\" failures=\"{}\">",
            s.total, s.failed
        );
        let _ = writeln!(
            out,
            "  <testsuite name=\"{file}\" tests=\"{}\" failures=\"{}\" errors=\"0\">",
            s.total, s.failed
        );
        for t in &self.tests {
            let _ = write!(
                out,
                "    <testcase classname=\"{file}\" name=\"{}\"",
                xml(&t.name)
            );
            if t.passed {
                out.push_str("/>\n");
                continue;
            }
            let message = format!(
                "expected {}, got {}",
                expected_text(&t.expected),
                actual_text(&t.actual)
            );
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                xml(&message),
                xml(&t.explanation)
            );
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}

/// Text escaped for XML attributes and content; characters XML 1.0 cannot
/// carry at all are dropped.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(c),
            c if c < ' ' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
snapshot: ../snap.yaml
tests:
  - name: reads
    principal: alice
    operation: Microsoft.Compute/virtualMachines/read
    scope: /subscriptions/s1
    expect: { decision: ALLOW, reason: ROLE_ASSIGNMENT }
  - name: blobs
    principal: alice
    action: Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read
    dataAction: true
    scope: /subscriptions/s1
    attributes: { env: test, count: 3 }
    expect: { decision: DENY }
"#;

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(s) => panic!("parsed: {s:?}"),
            Err(p) => p.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_good_file_parses() {
        let suite = parse(GOOD).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(suite.snapshot.as_deref(), Some("../snap.yaml"));
        assert_eq!(suite.tests.len(), 2);
        let blobs = &suite.tests[1];
        assert!(blobs.data_action);
        assert_eq!(blobs.attributes.get("count").map(String::as_str), Some("3"));
        assert_eq!(blobs.expect.decision, Verdict::Deny);
        assert_eq!(blobs.expect.reason, None);
        assert_eq!(suite.tests[0].expect.reason, Some(Reason::RoleAssignment));
        let path = snapshot_path(Path::new("tests/policy/t.yaml"), &suite, None);
        assert_eq!(path, Some(PathBuf::from("tests/policy/../snap.yaml")));
        let flag = snapshot_path(Path::new("t.yaml"), &suite, Some(Path::new("x.yaml")));
        assert_eq!(flag, Some(PathBuf::from("x.yaml")));
    }

    #[test]
    fn a_misspelt_decision_names_the_test_index_and_field() {
        let text = GOOD.replace("decision: DENY", "decision: ALOW");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].ends_with(
                "tests[1].expect.decision (blobs): 'ALOW' is not one of ALLOW, DENY, APPROVAL_REQUIRED"
            ),
            "{found:?}"
        );
        assert!(found[0].starts_with("15:25: "), "{found:?}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
tests:
  - name: one
    principal: "a b"
    operation: "Microsoft.Compute/*"
    scope: subscriptions/s1
    expect: { decision: ALLOW, reason: DENY_ASSIGNMENT }
  - principal: bob
    action: a/b/c
    operation: a/b/d
    scope: /
    dataAction: yes please
    extra: 1
    expect: { decision: DENY, reason: NOPE }
  - name: one
    principal: bob
    operation: a/b/c
    scope: /
"#;
        let found = problems(text).join("\n");
        for expected in [
            "tests[0].principal (one): principal 'a b' contains whitespace",
            "tests[0].operation (one): operation 'Microsoft.Compute/*' contains '*'",
            "tests[0].scope (one): scope 'subscriptions/s1' must start with '/'",
            "tests[0].expect.reason (one): DENY_ASSIGNMENT comes with DENY, not ALLOW",
            "tests[1].name: is missing",
            "tests[1].action: give `operation` or `action`, not both",
            "tests[1].dataAction: must be true or false",
            "tests[1].extra: unknown key 'extra'",
            "tests[1].expect.reason: 'NOPE' is not one of ROLE_ASSIGNMENT",
            "tests[2].expect (one): is missing",
        ] {
            assert!(found.contains(expected), "missing {expected}:\n{found}");
        }
    }

    #[test]
    fn duplicate_names_and_empty_files_are_refused() {
        let dup = r#"
tests:
  - { name: x, principal: a, operation: a/b/c, scope: /, expect: { decision: DENY } }
  - { name: x, principal: a, operation: a/b/c, scope: /, expect: { decision: DENY } }
"#;
        assert!(
            problems(dup)[0].contains("tests[1].name (x): duplicate test name 'x' (also tests[0])")
        );
        assert!(problems("tests: []")[0].contains("tests: has no tests"));
        assert!(problems("snapshot: x.yaml")[0].contains("tests: is missing"));
        assert!(problems("- a\n- b")[0].contains("a test file is a mapping"));
        assert!(problems("tests: [")[0].contains("did not find expected"));
    }

    #[test]
    fn elevation_grants_cannot_be_expected_offline() {
        let text = GOOD.replace("reason: ROLE_ASSIGNMENT", "reason: ELEVATION_GRANT");
        assert!(problems(&text)[0].contains("ELEVATION_GRANT needs an active grant"));
    }

    use proptest::prelude::*;

    const SCOPES: [&str; 3] = [
        "/",
        "/subscriptions/s1",
        "/subscriptions/s1/resourceGroups/rg-a",
    ];
    const OPERATIONS: [&str; 3] = [
        "Microsoft.Compute/virtualMachines/read",
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
        "a/b/c",
    ];

    fn case() -> impl Strategy<Value = TestCase> {
        (
            "[a-z][a-z0-9 -]{0,12}",
            "[a-zA-Z0-9@._-]{1,16}",
            0..OPERATIONS.len(),
            0..SCOPES.len(),
            any::<bool>(),
            proptest::collection::btree_map("[a-z]{1,5}", "[a-z0-9]{0,5}", 0..3),
            0..Reason::ALL.len(),
            any::<bool>(),
        )
            .prop_map(
                |(name, principal, op, scope, data, attributes, reason, with_reason)| {
                    let reason = Reason::ALL[reason];
                    let reason =
                        (with_reason && reason != Reason::ElevationGrant).then_some(reason);
                    TestCase {
                        name,
                        principal,
                        operation: OPERATIONS[op].to_owned(),
                        scope: SCOPES[scope].to_owned(),
                        data_action: data,
                        attributes,
                        expect: Expectation {
                            decision: reason.map_or(Verdict::Deny, verdict_of),
                            reason,
                        },
                    }
                },
            )
    }

    /// A suite as someone would write it, quoting every string.
    fn yaml(suite: &TestSuite) -> String {
        let mut y = String::from("tests:\n");
        for t in &suite.tests {
            let _ = writeln!(y, "  - name: '{}'\n    principal: '{}'\n    operation: '{}'\n    scope: '{}'\n    dataAction: {}", t.name, t.principal, t.operation, t.scope, t.data_action);
            if !t.attributes.is_empty() {
                y.push_str("    attributes:\n");
                for (k, v) in &t.attributes {
                    let _ = writeln!(y, "      '{k}': '{v}'");
                }
            }
            let _ = write!(y, "    expect: {{ decision: {}", t.expect.decision.as_str());
            if let Some(r) = t.expect.reason {
                let _ = write!(y, ", reason: {}", r.as_str());
            }
            y.push_str(" }\n");
        }
        y
    }

    proptest! {
        /// Written out and read back, a suite is itself.
        #[test]
        fn suites_read_back_as_written(cases in proptest::collection::vec(case(), 1..5)) {
            let mut seen = std::collections::HashSet::new();
            let tests: Vec<TestCase> = cases.into_iter().filter(|c| seen.insert(c.name.clone())).collect();
            let suite = TestSuite { snapshot: None, tests };
            let parsed = parse(&yaml(&suite));
            prop_assert_eq!(parsed, Ok(suite));
        }

        /// Anything at all gives a suite or located problems, never a panic.
        #[test]
        fn any_text_parses_or_fails_cleanly(text in "[a-zA-Z:{}\\[\\], \n'\"-]{0,200}") {
            if let Err(problems) = parse(&text) {
                prop_assert!(!problems.is_empty());
            }
        }

        /// A well-formed file with one value replaced by anything is
        /// refused with a problem or accepted, never a panic.
        #[test]
        fn any_value_in_place_is_handled(value in "[a-zA-Z0-9_ /*.:{}\\[\\]-]{0,30}", field in 0usize..8) {
            let fields = ["name", "principal", "operation", "scope", "dataAction", "attributes", "expect", "decision"];
            let key = fields[field];
            let text = if key == "decision" {
                format!("tests:\n  - {{ name: a, principal: p, operation: a/b/c, scope: /, expect: {{ decision: {value} }} }}\n")
            } else {
                let mut parts = vec![("name", "a".to_owned()), ("principal", "p".into()), ("operation", "a/b/c".into()), ("scope", "/".into()), ("expect", "{ decision: DENY }".into())];
                match parts.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = value.clone(),
                    None => parts.push((key, value.clone())),
                }
                let body: Vec<String> = parts.iter().map(|(k, v)| format!("    {k}: {v}")).collect();
                format!("tests:\n  -\n{}\n", body.join("\n"))
            };
            let _ = parse(&text);
        }
    }

    #[test]
    fn runs_report_passes_failures_and_junit() {
        let snapshot = crate::snapshot::load_str(
            "principals: [{ id: alice, type: User }]\nroleAssignments: [{ principal: alice, role: Reader, scope: /subscriptions/s1 }]\n",
            "snap",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let suite = parse(GOOD).unwrap_or_else(|p| panic!("{p:?}"));
        let mut failing = suite.clone();
        failing.tests[1].expect.decision = Verdict::Allow;
        failing.tests[1].name = "blobs <&> \"quoted\"".into();
        let report = run("t.yaml", &failing, &Loaded::new(snapshot));
        assert_eq!(
            report.summary,
            SummaryOut {
                total: 2,
                passed: 1,
                failed: 1
            }
        );
        assert!(!report.all_passed());
        let text = report.text();
        assert!(text.contains("  PASS  tests[0] reads"), "{text}");
        assert!(
            text.contains(
                "        expected: ALLOW\n        got:      DENY (NO_MATCHING_ASSIGNMENT)"
            ),
            "{text}"
        );
        assert!(text.ends_with("2 tests: 1 passed, 1 failed\n"), "{text}");
        let junit = report.junit();
        assert!(
            junit.contains("name=\"blobs &lt;&amp;&gt; &quot;quoted&quot;\""),
            "{junit}"
        );
        assert!(
            junit.contains(
                "<failure message=\"expected ALLOW, got DENY (NO_MATCHING_ASSIGNMENT)\">"
            ),
            "{junit}"
        );
        assert!(junit.contains("tests=\"2\" failures=\"1\""), "{junit}");
    }
}
