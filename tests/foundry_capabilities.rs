//! Seed 001's capability tables reproduced by evaluation (see
//! docs/foundry-capabilities.md): every role row against every column, at
//! the Foundry resource and at a project, ✔ and ✘ alike; plus conditional
//! delegation evaluated from the roles' own conditions.

use std::collections::BTreeMap;

use rampart::engine::{Loaded, MatchKind, Reason, Request, Verdict};

const SUB: &str = "/subscriptions/11111111-1111-1111-1111-111111111111";
const ACCOUNT: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/foundry1";
const PROJECT: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/foundry1/projects/p1";
const ROLE_KEY: &str = "Microsoft.Authorization/roleAssignments:RoleDefinitionId";
const FOUNDRY_USER: &str = "53ca6127-db72-4b80-b1b0-d745d6d5456d";
const FOUNDRY_AGENT_CONSUMER: &str = "eed3b665-ab3a-47b6-8f48-c9382fb1dad6";
const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";

/// Each role of both tables, assigned as the seed says: Foundry roles on
/// the Foundry resource, the classic roles on the subscription.
const ROLES: [(&str, &str); 8] = [
    ("Foundry Agent Consumer", ACCOUNT),
    ("Foundry User", ACCOUNT),
    ("Foundry Project Manager", ACCOUNT),
    ("Foundry Account Owner", ACCOUNT),
    ("Foundry Owner", ACCOUNT),
    ("Owner", SUB),
    ("Contributor", SUB),
    ("Reader", SUB),
];

struct Op {
    action: &'static str,
    data: bool,
    attributes: &'static [(&'static str, &'static str)],
}

const fn control(action: &'static str) -> Op {
    Op {
        action,
        data: false,
        attributes: &[],
    }
}

const fn data(action: &'static str) -> Op {
    Op {
        action,
        data: true,
        attributes: &[],
    }
}

/// The columns, in the seed's order, as the operations each needs.
fn columns() -> Vec<(&'static str, Vec<Op>)> {
    vec![
        (
            "Create Foundry projects",
            vec![control(
                "Microsoft.CognitiveServices/accounts/projects/write",
            )],
        ),
        (
            "Create Foundry accounts",
            vec![control("Microsoft.CognitiveServices/accounts/write")],
        ),
        (
            "Build and develop in a project",
            vec![data(
                "Microsoft.CognitiveServices/accounts/AIServices/agents/write",
            )],
        ),
        (
            "Complete role assignments",
            vec![Op {
                action: "Microsoft.Authorization/roleAssignments/write",
                data: false,
                attributes: &[(ROLE_KEY, FOUNDRY_USER)],
            }],
        ),
        (
            "Reader access to projects and accounts",
            vec![
                control("Microsoft.CognitiveServices/accounts/projects/read"),
                control("Microsoft.CognitiveServices/accounts/deployments/read"),
            ],
        ),
        (
            "Manage models",
            vec![control(
                "Microsoft.CognitiveServices/accounts/deployments/write",
            )],
        ),
        (
            "Publish agents",
            vec![
                control("Microsoft.CognitiveServices/accounts/projects/applications/write"),
                data("Microsoft.CognitiveServices/accounts/AIServices/agents/read"),
            ],
        ),
        (
            "Interact with agent endpoints",
            vec![data(
                "Microsoft.CognitiveServices/accounts/AIServices/endpoints/interact/action",
            )],
        ),
    ]
}

/// The seed's tables, ✔ = true, in column order.
const TABLE: [(&str, [bool; 8]); 8] = [
    (
        "Foundry Agent Consumer",
        [false, false, false, false, false, false, false, true],
    ),
    (
        "Foundry User",
        [false, false, true, false, true, false, false, true],
    ),
    (
        "Foundry Project Manager",
        [false, false, true, true, true, false, true, true],
    ),
    (
        "Foundry Account Owner",
        [true, true, false, true, true, true, false, false],
    ),
    (
        "Foundry Owner",
        [true, true, true, true, true, true, true, true],
    ),
    ("Owner", [true, true, false, true, true, true, true, false]),
    (
        "Contributor",
        [true, true, false, false, true, true, false, false],
    ),
    (
        "Reader",
        [false, false, false, false, true, false, false, false],
    ),
];

/// Cells where the published role definitions decide otherwise than the
/// table; docs/foundry-capabilities.md says why.
const DIVERGENT: [(&str, &str); 2] = [
    ("Foundry Project Manager", "Create Foundry projects"),
    ("Owner", "Publish agents"),
];

fn principal(role: &str) -> String {
    role.to_lowercase().replace(' ', "-")
}

fn tenant() -> Loaded {
    let mut yaml = format!("subscriptions:\n  - id: {}\nprincipals:\n", &SUB[15..]);
    for (role, _) in ROLES {
        yaml.push_str(&format!("  - {{ id: {}, type: User }}\n", principal(role)));
    }
    yaml.push_str("roleAssignments:\n");
    for (role, scope) in ROLES {
        yaml.push_str(&format!(
            "  - {{ principal: {}, role: {role}, scope: '{scope}' }}\n",
            principal(role)
        ));
    }
    Loaded::new(
        rampart::snapshot::load_str(&yaml, "capabilities").unwrap_or_else(|e| panic!("{e}")),
    )
}

fn allowed(t: &Loaded, principal: &str, op: &Op, scope: &str) -> bool {
    let attributes: BTreeMap<String, String> = op
        .attributes
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let d = t
        .decide(&Request {
            principal_id: principal,
            action: op.action,
            scope,
            data_action: op.data,
            attributes: &attributes,
            explain: false,
            dry_run: false,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    d.verdict == Verdict::Allow
}

#[test]
fn every_role_row_against_every_column_at_the_resource_and_a_project() {
    let t = tenant();
    let columns = columns();
    let mut mismatches = Vec::new();
    for (role, expected) in TABLE {
        for ((column, ops), table_says) in columns.iter().zip(expected) {
            let divergent = DIVERGENT.contains(&(role, *column));
            let want = table_says != divergent;
            for scope in [ACCOUNT, PROJECT] {
                let got = ops
                    .iter()
                    .all(|op| allowed(&t, &principal(role), op, scope));
                if got != want {
                    mismatches.push(format!(
                        "{role} / {column} at {}: got {got}, want {want}",
                        if scope == ACCOUNT {
                            "resource"
                        } else {
                            "project"
                        }
                    ));
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

fn assign(
    t: &Loaded,
    principal: &str,
    action: &str,
    role_id: &str,
    explain: bool,
) -> rampart::engine::Decision<'static> {
    let attributes = BTreeMap::from([(ROLE_KEY.to_owned(), role_id.to_owned())]);
    let d = t
        .decide(&Request {
            principal_id: principal,
            action,
            scope: PROJECT,
            data_action: false,
            attributes: &attributes,
            explain,
            dry_run: false,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // Detach from the borrow of `t` for the assertions.
    rampart::engine::Decision {
        snapshot_revision: "",
        ..d
    }
}

#[test]
fn project_manager_delegates_only_the_roles_its_condition_lists() {
    let t = tenant();
    let pm = principal("Foundry Project Manager");
    for action in [
        "Microsoft.Authorization/roleAssignments/write",
        "Microsoft.Authorization/roleAssignments/delete",
    ] {
        for ok in [FOUNDRY_USER, FOUNDRY_AGENT_CONSUMER] {
            assert_eq!(
                assign(&t, &pm, action, ok, false).verdict,
                Verdict::Allow,
                "{action} {ok}"
            );
        }
        // Foundry Account Owner's list is longer: 3bc748fc… is on it, not on the manager's.
        let not_listed = "3bc748fc-213d-45c1-8d91-9da5725539b9";
        assert_eq!(
            assign(&t, &pm, action, not_listed, false).verdict,
            Verdict::Deny,
            "{action}"
        );
        let owner = assign(&t, &pm, action, OWNER, true);
        assert_eq!(
            (owner.verdict, owner.reason),
            (Verdict::Deny, Reason::ConditionNotMet)
        );
        let unmet = owner
            .matches
            .iter()
            .find(|m| m.kind == MatchKind::ConditionNotMet)
            .expect("the failed condition is explained");
        assert_eq!(unmet.role_name, "Foundry Project Manager");
        assert!(unmet
            .condition
            .as_deref()
            .unwrap_or_default()
            .contains("ActionMatches{'Microsoft.Authorization/roleAssignments/write'}"));
    }
}

#[test]
fn account_owner_delegates_its_listed_roles_and_never_owner() {
    let t = tenant();
    let ao = principal("Foundry Account Owner");
    for listed in [
        FOUNDRY_USER,
        FOUNDRY_AGENT_CONSUMER,
        "3bc748fc-213d-45c1-8d91-9da5725539b9",
        "2a1e307c-b015-4ebd-883e-5b7698a07328",
        "73c42c96-874c-492b-b04d-ab87d138a893",
    ] {
        assert_eq!(
            assign(
                &t,
                &ao,
                "Microsoft.Authorization/roleAssignments/write",
                listed,
                false
            )
            .verdict,
            Verdict::Allow,
            "{listed}"
        );
    }
    let owner = assign(
        &t,
        &ao,
        "Microsoft.Authorization/roleAssignments/write",
        OWNER,
        true,
    );
    assert_eq!(owner.verdict, Verdict::Deny);
    assert!(owner
        .matches
        .iter()
        .any(|m| m.kind == MatchKind::ConditionNotMet && m.role_name == "Foundry Account Owner"));
    // Deleting an assignment of Owner is refused too (the condition reads
    // the role of the assignment being deleted).
    assert_eq!(
        assign(
            &t,
            &ao,
            "Microsoft.Authorization/roleAssignments/delete",
            OWNER,
            false
        )
        .verdict,
        Verdict::Deny
    );
    // The classic Owner may assign anything, Owner included.
    assert_eq!(
        assign(
            &t,
            &principal("Owner"),
            "Microsoft.Authorization/roleAssignments/write",
            OWNER,
            false
        )
        .verdict,
        Verdict::Allow
    );
}
