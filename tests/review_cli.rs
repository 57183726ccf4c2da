//! The binary's review commands: `rampart diff` (text and JSON, exit codes
//! 0, 1 and 2) and `rampart test` (the demo's policy tests, failures with
//! their explanation, bad test files, JSON and JUnit output).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rampart() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const DEMO: &str = include_str!("../src/snapshot/demo.yaml");
const RG_APP: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";

/// The demo, and the demo with `edit` applied, as two files.
fn pair(dir: &Path, edit: impl Fn(&str) -> String) -> (PathBuf, PathBuf) {
    let (old, new) = (dir.join("old.yaml"), dir.join("new.yaml"));
    std::fs::write(&old, DEMO).unwrap();
    let changed = edit(DEMO);
    assert_ne!(changed, DEMO, "the edit changed nothing");
    std::fs::write(&new, changed).unwrap();
    (old, new)
}

/// A new group on-call SREs belong to, holding Contributor on rg-app, and
/// alice joining it.
fn alice_joins_sre_oncall(demo: &str) -> String {
    demo.replace(
        "principals:\n",
        "principals:\n  - { id: sre-oncall, type: Group }\n  - { id: alice@contoso.com, type: User, memberOf: [sre-oncall] }\n",
    )
    .replace(
        "roleAssignments:\n",
        &format!("roleAssignments:\n  - {{ id: ra-sre-oncall, principal: sre-oncall, role: Contributor, scope: {RG_APP} }}\n"),
    )
}

#[test]
fn diff_reports_a_gain_through_a_group_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = pair(dir.path(), alice_joins_sre_oncall);
    let out = rampart().arg("diff").arg(&old).arg(&new).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("alice@contoso.com (User), new; joins group sre-oncall"),
        "{text}"
    );
    assert!(
        text.contains(&format!("  at {RG_APP} and below:")),
        "{text}"
    );
    assert!(
        text.contains("(via group sre-oncall, role Contributor, assignment ra-sre-oncall)"),
        "{text}"
    );
    assert!(
        text.contains("result: something is gained (exit code 1)"),
        "{text}"
    );

    let out = rampart()
        .args(["diff", "--format", "json"])
        .arg(&old)
        .arg(&new)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["schema"], "rampart.diff/v1");
    assert_eq!(json["gained"], true);
    assert_eq!(json["old"]["revision"], "demo-1");
    let alice = json["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["principal"] == "alice@contoso.com")
        .unwrap_or_else(|| panic!("{json:#}"));
    assert_eq!(alice["presence"], "added");
    assert_eq!(alice["gains"], true);
    assert_eq!(alice["groupsJoined"][0], "sre-oncall");
    let change = &alice["changes"][0];
    assert_eq!(change["scope"], RG_APP);
    assert_eq!(change["coverage"], "scopeAndBelow");
    let term = &change["gains"][0];
    assert_eq!(term["kind"], "grant");
    assert_eq!(term["pattern"], "*");
    assert_eq!(term["dataAction"], false);
    assert!(term["minus"]
        .as_array()
        .is_some_and(|m| m.iter().any(|p| p == "Microsoft.Authorization/*/Write")));
    assert_eq!(term["via"][0]["group"], "sre-oncall");
    assert_eq!(term["via"][0]["role"], "Contributor");
    assert_eq!(
        term["via"][0]["roleId"],
        "b24988ac-6180-42a0-ab88-20f7382dd24c"
    );
    let delete = change["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["operation"] == "Microsoft.Compute/virtualMachines/delete")
        .unwrap_or_else(|| panic!("{change:#}"));
    assert_eq!(delete["change"], "gain");
    assert_eq!(delete["old"]["decision"], "DENY");
    assert_eq!(delete["old"]["reason"], "UNKNOWN_PRINCIPAL");
    assert_eq!(delete["new"]["decision"], "ALLOW");
    assert_eq!(delete["because"][0]["assignment"], "ra-sre-oncall");
    // Removing a role assignment write would be Authorization, subtracted.
    assert!(!change["operations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["operation"] == "Microsoft.Authorization/roleAssignments/write"));
    assert!(json["summary"]["operationsGained"]
        .as_u64()
        .is_some_and(|n| n > 100));
}

#[test]
fn diff_exits_0_on_losses_only_and_on_no_change() {
    let dir = tempfile::tempdir().unwrap();
    // The on-call engineer loses Contributor on rg-app.
    let (old, new) = pair(dir.path(), |demo| {
        demo.replace(
            &format!("  - id: ra-oncall-app\n    principal: oncall\n    role: Contributor\n    scope: {RG_APP}\n"),
            "",
        )
    });
    let out = rampart()
        .args(["diff", "--format", "json"])
        .arg(&old)
        .arg(&new)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["gained"], false);
    assert_eq!(json["summary"]["principalsLosing"], 1);
    assert_eq!(json["principals"][0]["principal"], "oncall");
    assert_eq!(json["principals"][0]["losses"], true);
    assert_eq!(
        json["principals"][0]["changes"][0]["losses"][0]["via"][0]["assignment"],
        "ra-oncall-app"
    );

    let same = rampart().arg("diff").arg(&old).arg(&old).output().unwrap();
    assert_eq!(same.status.code(), Some(0));
    let text = stdout(&same);
    assert!(
        text.contains("result: nothing is gained (exit code 0)"),
        "{text}"
    );
    assert!(
        text.contains("summary: 0 principals gaining access, 0 principals losing access"),
        "{text}"
    );
}

#[test]
fn diff_reports_an_agents_autonomy_and_a_widened_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = pair(dir.path(), |demo| {
        demo.replace("executionMode: Review", "executionMode: Auto").replace(
            "managedScopes: [/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app]",
            "managedScopes: [/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app, /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-ai]",
        )
    });
    let out = rampart()
        .args(["diff", "--format", "json"])
        .arg(&old)
        .arg(&new)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let agent = &json["agents"][0];
    assert_eq!(agent["agent"], "sre-agent");
    assert_eq!(agent["principal"], "sre-agent-mi");
    let changes = agent["changes"].as_array().unwrap();
    let mode = changes
        .iter()
        .find(|c| c["field"] == "executionMode")
        .unwrap();
    assert_eq!(
        (&mode["old"], &mode["new"], &mode["effect"]),
        (&"Review".into(), &"Auto".into(), &"gain".into())
    );
    let scope = changes
        .iter()
        .find(|c| c["field"] == "managedScopes")
        .unwrap();
    assert_eq!(
        scope["new"],
        "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-ai"
    );
    assert_eq!(scope["effect"], "gain");
    let mi = json["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["principal"] == "sre-agent-mi")
        .unwrap();
    assert_eq!(mi["gains"], true);
    assert_eq!(json["summary"]["agentsGainingAutonomy"], 1);

    let text = stdout(&rampart().arg("diff").arg(&old).arg(&new).output().unwrap());
    assert!(
        text.contains("agent sre-agent (identity sre-agent-mi), changed"),
        "{text}"
    );
    assert!(text.contains("  + executionMode: Review -> Auto"), "{text}");
    assert!(text.contains("  + managedScopes adds /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-ai"), "{text}");
}

#[test]
fn diff_refuses_an_invalid_snapshot_with_its_problems_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = pair(dir.path(), alice_joins_sre_oncall);
    let out = rampart()
        .arg("diff")
        .arg(&old)
        .arg(repo("tests/fixtures/broken.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("broken.yaml is not a valid snapshot (12 problems)"),
        "{err}"
    );
    assert!(
        err.contains("broken.yaml:28:11: roleAssignments[1].role (ra-2): unknown role 'Nope'"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());

    let missing = rampart()
        .arg("diff")
        .arg(dir.path().join("nope.yaml"))
        .arg(&old)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("cannot read the snapshot"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn the_demo_policy_tests_pass() {
    let out = rampart()
        .arg("test")
        .arg(repo("tests/policy/demo.yaml"))
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("against embedded:demo (revision demo-1)"),
        "{text}"
    );
    assert!(
        text.contains("  PASS  tests[0] IT admin creates a VM"),
        "{text}"
    );
    assert!(text.contains(" passed, 0 failed"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
}

/// The demo's tests against a snapshot where the on-call engineer lost
/// rg-app: the test that says they restart VMs there fails, with the
/// decision explained.
#[test]
fn a_failing_policy_test_shows_what_came_and_why_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snap.yaml");
    std::fs::write(
        &snapshot,
        DEMO.replace(
            &format!("  - id: ra-oncall-app\n    principal: oncall\n    role: Contributor\n    scope: {RG_APP}\n"),
            "",
        ),
    )
    .unwrap();
    let junit = dir.path().join("junit.xml");
    let out = rampart()
        .arg("test")
        .arg(repo("tests/policy/demo.yaml"))
        .arg("--snapshot")
        .arg(&snapshot)
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("  FAIL  tests[17] on-call restarts a VM of the app"),
        "{text}"
    );
    assert!(text.contains("        expected: ALLOW (ROLE_ASSIGNMENT)\n        got:      DENY (NO_MATCHING_ASSIGNMENT)"), "{text}");
    assert!(
        text.contains("          reason:    NO_MATCHING_ASSIGNMENT (no role assignment grants"),
        "{text}"
    );
    assert!(text.contains(" passed, 1 failed"), "{text}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        "{xml}"
    );
    assert!(xml.contains("failures=\"1\""), "{xml}");
    assert!(
        xml.contains("<testcase classname=")
            && xml.contains("name=\"on-call restarts a VM of the app\">"),
        "{xml}"
    );
    assert!(xml.contains("<failure message=\"expected ALLOW (ROLE_ASSIGNMENT), got DENY (NO_MATCHING_ASSIGNMENT)\">"), "{xml}");
    assert_eq!(
        xml.matches("<testcase ").count(),
        text.matches("tests[").count()
    );
}

#[test]
fn policy_tests_read_their_snapshot_beside_them_and_report_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policy")).unwrap();
    std::fs::write(
        dir.path().join("tenant.yaml"),
        "revision: t-1\nprincipals: [{ id: alice, type: User }]\nroleAssignments: [{ id: ra-a, principal: alice, role: Reader, scope: /subscriptions/s1 }]\n",
    )
    .unwrap();
    let file = dir.path().join("policy/tests.yaml");
    std::fs::write(
        &file,
        "snapshot: ../tenant.yaml\ntests:\n  - name: alice reads\n    principal: alice\n    action: Microsoft.Compute/virtualMachines/read\n    scope: /subscriptions/s1/resourceGroups/rg\n    expect: { decision: ALLOW, reason: ROLE_ASSIGNMENT }\n  - name: alice writes\n    principal: alice\n    operation: Microsoft.Compute/virtualMachines/write\n    scope: /subscriptions/s1\n    expect: { decision: ALLOW }\n",
    )
    .unwrap();
    let out = rampart()
        .args(["test", "--format", "json"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["schema"], "rampart.test/v1");
    assert_eq!(json["snapshot"]["revision"], "t-1");
    assert_eq!(
        json["summary"],
        serde_json::json!({"total": 2, "passed": 1, "failed": 1})
    );
    let first = &json["tests"][0];
    assert_eq!(first["passed"], true);
    assert_eq!(
        first["actual"]["matches"][0]["kind"],
        "MATCH_ROLE_ASSIGNMENT"
    );
    assert_eq!(first["actual"]["matches"][0]["id"], "ra-a");
    assert_eq!(first["actual"]["matches"][0]["roleName"], "Reader");
    let second = &json["tests"][1];
    assert_eq!(second["passed"], false);
    assert_eq!(second["expected"], serde_json::json!({"decision": "ALLOW"}));
    assert_eq!(second["actual"]["decision"], "DENY");
    assert_eq!(second["actual"]["reason"], "NO_MATCHING_ASSIGNMENT");
}

#[test]
fn a_bad_test_file_names_each_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "tests:\n  - { name: a, principal: p, operation: a/b/c, scope: /, expect: { decision: DENY } }\n  - { name: b, principal: p, operation: a/b/c, scope: /, expect: { decision: DENY } }\n  - { name: c, principal: p, operation: a/b/c, scope: /, expect: { decision: DENY } }\n  - name: d\n    principal: p\n    operation: a/b/c\n    scope: /\n    expect:\n      decision: ALOW\n",
    )
    .unwrap();
    let out = rampart().arg("test").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("bad.yaml is not a valid test file (1 problem):"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:10:17: tests[3].expect.decision (d): 'ALOW' is not one of ALLOW, DENY, APPROVAL_REQUIRED"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());

    std::fs::write(&file, "snapshot: missing.yaml\ntests:\n  - { name: a, principal: p, operation: a/b/c, scope: /, expect: { decision: DENY } }\n").unwrap();
    let out = rampart().arg("test").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.yaml"), "{}", stderr(&out));
}
