//! Replays the 3,000 conformance questions of `../shared/conformance`
//! against the engine; decisions and reasons must match exactly. Skips,
//! saying so, where `../shared/` is absent (a user's fresh clone).

use std::collections::BTreeMap;
use std::path::PathBuf;

use rampart::engine::{Loaded, Request, Verdict};
use rampart::snapshot;

fn shared_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    dir.join("cases.jsonl").exists().then_some(dir)
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "ALLOW",
        Verdict::Deny => "DENY",
        Verdict::ApprovalRequired => "APPROVAL_REQUIRED",
    }
}

#[test]
fn every_conformance_case_gets_the_specified_decision_and_reason() {
    let Some(dir) = shared_dir() else {
        eprintln!(
            "skipped: ../shared/conformance is not here (it exists only in the workspace and CI)"
        );
        return;
    };
    let snapshot =
        snapshot::load_file(&dir.join("snapshot.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let loaded = Loaded::new(snapshot);
    let cases = std::fs::read_to_string(dir.join("cases.jsonl")).expect("cases.jsonl");
    let attributes: BTreeMap<String, String> = BTreeMap::new();
    let mut total = 0;
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).expect("a JSON case");
        let s = |k: &str| case[k].as_str().unwrap_or_default().to_owned();
        total += 1;
        let request = Request {
            principal_id: &s("principal_id"),
            action: &s("action"),
            scope: &s("scope"),
            data_action: case["data_action"].as_bool().unwrap_or(false),
            attributes: &attributes,
            explain: false,
            dry_run: false,
        };
        let got = match loaded.decide(&request) {
            Ok(d) => (
                verdict_name(d.verdict).to_owned(),
                d.reason.as_str().to_owned(),
            ),
            Err(e) => ("INVALID_ARGUMENT".to_owned(), e.message),
        };
        let want = (s("expect_decision"), s("expect_reason"));
        if got != want {
            let detail = format!(
                "{}: {} {} {} data={} -> got {}/{}, want {}/{}",
                s("id"),
                s("principal_id"),
                s("action"),
                s("scope"),
                case["data_action"],
                got.0,
                got.1,
                want.0,
                want.1
            );
            for tag in case["tags"].as_array().into_iter().flatten() {
                failures
                    .entry(tag.as_str().unwrap_or("?").to_owned())
                    .or_default()
                    .push(detail.clone());
            }
            failures.entry("(all)".into()).or_default().push(detail);
        }
    }
    assert!(total >= 3000, "only {total} cases");
    if let Some(all) = failures.get("(all)") {
        let mut report = format!("{} of {total} cases differ; by tag:\n", all.len());
        for (tag, list) in &failures {
            report.push_str(&format!("  {tag}: {}\n", list.len()));
        }
        for detail in all.iter().take(25) {
            report.push_str(&format!("  {detail}\n"));
        }
        panic!("{report}");
    }
}
