//! `rampart import` on `az` output (fixtures in tests/fixtures/azure), round
//! tripped through `rampart validate` and checked with decisions.

use std::path::PathBuf;
use std::process::Command;

fn rampart() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
}

fn azure(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/azure")
        .join(name)
}

const SUB: &str = "/subscriptions/7f1c2a9e-3d4b-4c5a-9e8f-1a2b3c4d5e6f";
const SRE: &str = "1f2e3d4c-0000-4000-8000-0000000000c3";

fn check(snapshot: &PathBuf, principal: &str, action: &str, scope: &str, extra: &[&str]) -> String {
    let out = rampart()
        .arg("check")
        .arg("--snapshot")
        .arg(snapshot)
        .args([
            "--principal",
            principal,
            "--action",
            action,
            "--scope",
            scope,
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("decision:")
        .trim()
        .to_owned()
}

#[test]
fn az_output_imports_validates_and_decides() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("imported.yaml");
    let out = rampart()
        .arg("import")
        .arg("--role-definitions")
        .arg(azure("role-definitions.json"))
        .arg("--role-assignments")
        .arg(azure("role-assignments.json"))
        .arg("--output")
        .arg(&snapshot)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(
        notes.contains("1 built-in role definitions skipped"),
        "{notes}"
    );

    let validated = rampart().arg("validate").arg(&snapshot).output().unwrap();
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stderr)
    );
    let report = String::from_utf8_lossy(&validated.stdout);
    assert!(
        report.contains("4 principals, 1 custom role, 5 role assignments"),
        "{report}"
    );

    let text = std::fs::read_to_string(&snapshot).unwrap();
    assert!(text.contains("roleName: VM Operator"), "{text}");
    assert!(
        text.contains("id: 0a1b2c3d-0000-4000-8000-000000000003"),
        "{text}"
    );

    // Reader at the subscription, by a role id written as a full resource id.
    let alice = "9c8b7a6d-0000-4000-8000-0000000000a1";
    assert_eq!(
        check(
            &snapshot,
            alice,
            "Microsoft.Compute/virtualMachines/read",
            &format!("{SUB}/resourceGroups/rg-app"),
            &[]
        ),
        "ALLOW"
    );
    assert_eq!(
        check(
            &snapshot,
            alice,
            "Microsoft.Compute/virtualMachines/delete",
            SUB,
            &[]
        ),
        "DENY"
    );
    // The custom role at one VM.
    let vm1 =
        format!("{SUB}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1");
    assert_eq!(
        check(
            &snapshot,
            SRE,
            "Microsoft.Compute/virtualMachines/restart/action",
            &vm1,
            &[]
        ),
        "ALLOW"
    );
    assert_eq!(
        check(
            &snapshot,
            SRE,
            "Microsoft.Compute/virtualMachines/delete",
            &vm1,
            &[]
        ),
        "DENY"
    );
    // The assignment's condition: blob reads only in the logs container.
    let container = format!("{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/st1/blobServices/default/containers/logs");
    let blob_read = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";
    let name = "Microsoft.Storage/storageAccounts/blobServices/containers:name";
    assert_eq!(
        check(
            &snapshot,
            SRE,
            blob_read,
            &container,
            &["--data", "--attribute", &format!("{name}=logs")]
        ),
        "ALLOW"
    );
    assert_eq!(
        check(
            &snapshot,
            SRE,
            blob_read,
            &container,
            &["--data", "--attribute", &format!("{name}=secrets")]
        ),
        "DENY"
    );
    // Owner at a management group reaches a subscription only once the
    // hierarchy says the subscription is below it: import notes that.
    assert!(
        notes.contains("management groups are imported without their parents"),
        "{notes}"
    );
}

#[test]
fn unknown_principal_types_and_broken_json_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("assignments.json");
    std::fs::write(&bad, r#"[{"name": "x", "principalId": "p", "principalType": "Device", "roleDefinitionId": "/r/acdd72a7-3385-48ef-bd42-f606fba81ae7", "scope": "/"}]"#).unwrap();
    let out = rampart()
        .arg("import")
        .arg("--role-assignments")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("principalType Some(\"Device\")"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(&bad, "{not json").unwrap();
    let out = rampart()
        .arg("import")
        .arg("--role-assignments")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the JSON array az prints"));
}

#[test]
fn roles_resolve_by_id_name_or_earlier_name_on_the_command_line() {
    for reference in [
        "Azure AI User",
        "foundry user",
        "53CA6127-DB72-4B80-B1B0-D745D6D5456D",
    ] {
        let out = rampart().args(["role", reference]).output().unwrap();
        assert!(out.status.success(), "{reference}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("roleName: Foundry User"), "{text}");
        assert!(text.contains("aliases:  Azure AI User"), "{text}");
    }
    let out = rampart().args(["role", "No Such Role"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}
