//! The binary's offline commands: `validate` reports every problem with
//! its line and id; `check` decides and explains; `serve` refuses a bad
//! snapshot and says why.

use std::path::PathBuf;
use std::process::Command;

fn rampart() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn validate_reports_every_problem_with_line_and_id() {
    let out = rampart()
        .arg("validate")
        .arg(fixture("broken.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stderr);
    let expected = [
        (5, "managementGroups[0].parent (a): unknown parent management group 'b'"),
        (6, "managementGroups[1].id (A): duplicate management group id 'A'"),
        (11, "principals[3].id (alice): duplicate principal id 'alice'"),
        (13, "roleDefinitions[0].id (acdd72a7-3385-48ef-bd42-f606fba81ae7): id acdd72a7-3385-48ef-bd42-f606fba81ae7 is the built-in role 'Reader' and may not be redefined"),
        (23, "roleAssignments[0].principal (ra-1): unknown principal 'nobody'"),
        (28, "roleAssignments[1].role (ra-2): unknown role 'Nope'"),
        (33, "roleAssignments[2].scope (ra-3): scope '/subscriptions/s1/resourceGroups' has 'resourceGroups' without a resource group name"),
        (37, "roleAssignments[3].scope (ra-4): role 'Narrow' is not assignable at '/subscriptions/s2'"),
        (38, "roleAssignments[4] (ra-4): duplicate role assignment id 'ra-4'"),
        (46, "roleAssignments[5].condition (ra-6): condition does not parse: at column 25"),
        (51, "agents[0].managedScopes[0] (ag): managed scopes are resource groups; '/subscriptions/s1' is a subscription"),
    ];
    for (line, text) in expected {
        let found = report
            .lines()
            .any(|l| l.contains(&format!("broken.yaml:{line}:")) && l.contains(text));
        assert!(
            found,
            "missing line {line}: {text}\n--- report ---\n{report}"
        );
    }
    assert!(
        report.contains("group membership forms a cycle: g1 -> g2 -> g1"),
        "{report}"
    );
    assert!(report.contains("(12 problems)"), "{report}");
}

#[test]
fn validate_accepts_a_good_file_and_a_json_one() {
    let out = rampart()
        .arg("validate")
        .arg(fixture("rules.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid: revision rules-1"));

    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("s.json");
    std::fs::write(&json, r#"{"principals": [{"id": "p", "type": "User"}], "roleAssignments": [{"principal": "p", "role": "reader", "scope": "/"}]}"#).unwrap();
    let out = rampart().arg("validate").arg(&json).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_reports_yaml_syntax_and_unknown_keys_with_a_location() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, "roleDefinitions:\n  - id: 11111111-0000-4000-8000-000000000001\n    roleName: x\n    permissions: [{ actions: ['*'], notAction: ['*/delete'] }]\n").unwrap();
    let out = rampart().arg("validate").arg(&typo).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("typo.yaml:4:"), "{report}");
    assert!(report.contains("unknown field `notAction`"), "{report}");

    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "\n").unwrap();
    let out = rampart().arg("validate").arg(&empty).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the snapshot is empty"));
}

#[test]
fn validate_lists_a_key_typo_and_an_unknown_role_together() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("two.yaml");
    std::fs::write(
        &file,
        "principals: [{ id: alice, type: User }]\n\
         roleDefinitions:\n\
         \x20 - id: 11111111-0000-4000-8000-000000000001\n\
         \x20   roleName: Auditor\n\
         \x20   permissions: [{ actions: ['*/read'], notAction: ['*/delete'] }]\n\
         \x20   assignableScopes: [/]\n\
         roleAssignments:\n\
         \x20 - { id: ra-1, principal: alice, role: Reeder, scope: / }\n\
         \x20 - { id: ra-2, principal: alice, role: Auditor, scope: / }\n",
    )
    .unwrap();
    let out = rampart().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("(2 problems)"), "{report}");
    for (line, text) in [
        (5, "roleDefinitions[0].permissions[0] (11111111-0000-4000-8000-000000000001): unknown field `notAction`, expected one of `actions`, `notActions`, `dataActions`, `notDataActions`, `condition`, `conditionVersion` (did you mean `notActions`?)"),
        (8, "roleAssignments[0].role (ra-1): unknown role 'Reeder' (did you mean 'Reader'?)"),
    ] {
        let found = report
            .lines()
            .any(|l| l.contains(&format!("two.yaml:{line}:")) && l.contains(text));
        assert!(found, "missing line {line}: {text}\n--- report ---\n{report}");
    }
    // ra-2 names the role whose entry is broken: not a second problem.
    assert!(!report.contains("ra-2"), "{report}");
}

#[test]
fn serve_refuses_an_invalid_snapshot_and_says_why() {
    let out = rampart()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--snapshot",
        ])
        .arg(fixture("broken.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to start"), "{err}");
    assert!(err.contains("unknown role 'Nope'"), "{err}");
}

#[test]
fn check_explains_an_offline_decision() {
    let out = rampart()
        .args(["check", "--snapshot"])
        .arg(fixture("rules.yaml"))
        .args([
            "--principal",
            "frank",
            "--action",
            "Microsoft.Compute/virtualMachines/delete",
            "--scope",
            "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("decision:  ALLOW"), "{text}");
    assert!(text.contains("reason:    ROLE_ASSIGNMENT"), "{text}");
    assert!(text.contains("role assignment ra-dept-contributor: Contributor (b24988ac-6180-42a0-ab88-20f7382dd24c)"), "{text}");
    assert!(text.contains("via group dept"), "{text}");

    let data = rampart()
        .args(["check", "--principal", "developer", "--data", "--action"])
        .arg("Microsoft.CognitiveServices/accounts/AIServices/agents/write")
        .arg("--scope")
        .arg("/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/foundry-contoso/projects/proj-chat")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&data.stdout);
    assert!(
        text.contains("decision:  ALLOW"),
        "demo developer builds in the project: {text}"
    );

    let bad = rampart()
        .args([
            "check",
            "--principal",
            "x",
            "--action",
            "a/*/read",
            "--scope",
            "/",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid action"));
}

#[test]
fn validate_refuses_alias_bombs_and_runaway_nesting_before_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    // 647 bytes that would expand to a billion values.
    let mut bomb = String::from("revision: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("l{i}: &a{i} [{refs}]\n"));
    }
    let deep = format!(
        "revision: &x r\nprincipals: {}{}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    let anchor_free_deep = format!("principals: {}{}\n", "[".repeat(5_000), "]".repeat(5_000));
    for (name, text, expect) in [
        ("bomb.yaml", bomb, "aliases expand"),
        ("deep.yaml", deep, "deeper than 64 levels"),
        (
            "deep-plain.yaml",
            anchor_free_deep,
            "invalid type: sequence",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = rampart().arg("validate").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let report = String::from_utf8_lossy(&out.stderr);
        assert!(report.contains(expect), "{name}: {report}");
    }
}

#[test]
fn misspelt_keys_and_roles_get_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.yaml");
    std::fs::write(
        &key,
        "roleDefinitions:\n  - id: 00000000-0000-4000-8000-00000000abcd\n    roleName: Ops\n    assignableScopes: [/]\n    permissions: [{ actions: ['Microsoft.Compute/*'], notAction: ['x'] }]\n",
    )
    .unwrap();
    let out = rampart().arg("validate").arg(&key).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        report.contains("unknown field `notAction`")
            && report.contains("(did you mean `notActions`?)"),
        "{report}"
    );

    let role = dir.path().join("role.yaml");
    std::fs::write(
        &role,
        "subscriptions: [{ id: s1 }]\nprincipals: [{ id: alice, type: User }]\nroleAssignments:\n  - { id: ra, principal: alice, role: Contributer, scope: /subscriptions/s1 }\n",
    )
    .unwrap();
    let out = rampart().arg("validate").arg(&role).output().unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        report.contains("unknown role 'Contributer' (did you mean 'Contributor'?)"),
        "{report}"
    );

    let out = rampart().args(["role", "Contributer"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(did you mean 'Contributor'?)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn role_lists_and_searches_the_catalog() {
    let out = rampart().args(["role", "--list"]).output().unwrap();
    assert!(out.status.success());
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("acdd72a7-3385-48ef-bd42-f606fba81ae7  Reader\n"),
        "{list}"
    );
    assert!(list.lines().count() > 100, "{list}");

    // By operation: the roles that allow it, and no role that does not.
    let out = rampart()
        .args([
            "role",
            "--search",
            "Microsoft.Compute/virtualMachines/restart/action",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(found.contains("  Virtual Machine Contributor\n"), "{found}");
    assert!(found.contains("  Contributor\n"), "{found}");
    assert!(!found.contains("  Reader\n"), "{found}");

    // By name, any case.
    let out = rampart()
        .args(["role", "--search", "foundry user"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Foundry User"));

    let out = rampart()
        .args(["role", "--search", "no-such-thing"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
