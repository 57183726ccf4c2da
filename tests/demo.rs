//! The embedded demo tenant: one principal per persona of the enterprise
//! table of the Foundry RBAC guide, assigned as the table says,
//! and what each persona can and cannot do.

use std::collections::BTreeMap;

use rampart::engine::{Loaded, Reason, Request, Verdict};
use rampart::snapshot;

const SUB: &str = "/subscriptions/11111111-1111-1111-1111-111111111111";
const ACCOUNT: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/foundry-contoso";
const ROLE_KEY: &str = "Microsoft.Authorization/roleAssignments:RoleDefinitionId";
const FOUNDRY_USER: &str = "53ca6127-db72-4b80-b1b0-d745d6d5456d";
const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";

fn project(name: &str) -> String {
    format!("{ACCOUNT}/projects/{name}")
}

struct Demo(Loaded);

impl Demo {
    fn new() -> Demo {
        Demo(Loaded::new(
            snapshot::demo().unwrap_or_else(|e| panic!("{e}")),
        ))
    }

    fn ask(
        &self,
        principal: &str,
        action: &str,
        scope: &str,
        data: bool,
        attrs: &[(&str, &str)],
    ) -> (Verdict, Reason) {
        let attributes: BTreeMap<String, String> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = self
            .0
            .decide(&Request {
                principal_id: principal,
                action,
                scope,
                data_action: data,
                attributes: &attributes,
                explain: false,
                dry_run: false,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        (d.verdict, d.reason)
    }

    fn allows(&self, principal: &str, action: &str, scope: &str, data: bool) -> bool {
        self.ask(principal, action, scope, data, &[]).0 == Verdict::Allow
    }
}

#[test]
fn each_persona_holds_exactly_the_assignments_of_the_table() {
    let demo = Demo::new();
    let t = &demo.0.snapshot.tenant;
    let personas = [
        "it-admin",
        "manager",
        "lead-dev",
        "developer",
        "agent-consumer",
    ];
    let mut held: Vec<(String, String, String)> = t
        .role_assignments
        .iter()
        .filter(|a| personas.contains(&t.principals[a.principal].id.as_str()))
        .map(|a| {
            (
                t.principals[a.principal].id.clone(),
                t.role_definitions[a.role].role_name.clone(),
                a.scope.to_string(),
            )
        })
        .collect();
    held.sort();
    let mut want = vec![
        ("it-admin".to_owned(), "Owner".to_owned(), SUB.to_owned()),
        (
            "manager".into(),
            "Foundry Account Owner".into(),
            ACCOUNT.into(),
        ),
        (
            "lead-dev".into(),
            "Foundry Project Manager".into(),
            ACCOUNT.into(),
        ),
        (
            "developer".into(),
            "Foundry User".into(),
            project("proj-chat"),
        ),
        ("developer".into(), "Reader".into(), ACCOUNT.into()),
        (
            "agent-consumer".into(),
            "Foundry Agent Consumer".into(),
            project("proj-chat"),
        ),
    ];
    want.sort();
    assert_eq!(held, want);
    assert_eq!(t.hierarchy.management_groups.len(), 1);
    assert_eq!(t.hierarchy.subscriptions.len(), 2);
}

#[test]
fn it_admin_owns_the_subscription_but_not_the_protected_account_delete() {
    let d = Demo::new();
    assert!(d.allows(
        "it-admin",
        "Microsoft.Compute/virtualMachines/write",
        &format!("{SUB}/resourceGroups/rg-app"),
        false
    ));
    assert!(d.allows(
        "it-admin",
        "Microsoft.Authorization/roleAssignments/write",
        ACCOUNT,
        false
    ));
    assert_eq!(
        d.ask(
            "it-admin",
            "Microsoft.CognitiveServices/accounts/delete",
            ACCOUNT,
            false,
            &[]
        ),
        (Verdict::Deny, Reason::DenyAssignment)
    );
    // Owner holds no data actions.
    assert!(!d.allows(
        "it-admin",
        "Microsoft.CognitiveServices/accounts/AIServices/agents/write",
        &project("proj-chat"),
        true
    ));
    // The second subscription is not the IT admin's.
    assert!(!d.allows(
        "it-admin",
        "Microsoft.Storage/storageAccounts/read",
        "/subscriptions/22222222-2222-2222-2222-222222222222",
        false
    ));
}

#[test]
fn manager_manages_the_account_but_cannot_build_and_delegates_only_foundry_user() {
    let d = Demo::new();
    assert!(d.allows(
        "manager",
        "Microsoft.CognitiveServices/accounts/projects/write",
        &project("proj-new"),
        false
    ));
    assert!(d.allows(
        "manager",
        "Microsoft.CognitiveServices/accounts/deployments/write",
        ACCOUNT,
        false
    ));
    assert!(!d.allows(
        "manager",
        "Microsoft.CognitiveServices/accounts/AIServices/agents/write",
        &project("proj-chat"),
        true
    ));
    let write = "Microsoft.Authorization/roleAssignments/write";
    assert_eq!(
        d.ask(
            "manager",
            write,
            ACCOUNT,
            false,
            &[(ROLE_KEY, FOUNDRY_USER)]
        ),
        (Verdict::Allow, Reason::RoleAssignment)
    );
    assert_eq!(
        d.ask("manager", write, ACCOUNT, false, &[(ROLE_KEY, OWNER)]),
        (Verdict::Deny, Reason::ConditionNotMet)
    );
    assert_eq!(
        d.ask("manager", write, ACCOUNT, false, &[]),
        (Verdict::Deny, Reason::ConditionNotMet)
    );
}

#[test]
fn lead_developer_builds_in_projects_and_assigns_only_foundry_user() {
    let d = Demo::new();
    assert!(d.allows(
        "lead-dev",
        "Microsoft.CognitiveServices/accounts/AIServices/agents/write",
        &project("proj-search"),
        true
    ));
    assert!(d.allows(
        "lead-dev",
        "Microsoft.CognitiveServices/accounts/projects/read",
        &project("proj-search"),
        false
    ));
    let write = "Microsoft.Authorization/roleAssignments/write";
    assert!(
        d.ask(
            "lead-dev",
            write,
            &project("proj-chat"),
            false,
            &[(ROLE_KEY, FOUNDRY_USER)]
        )
        .0 == Verdict::Allow
    );
    assert!(
        d.ask(
            "lead-dev",
            write,
            &project("proj-chat"),
            false,
            &[(ROLE_KEY, OWNER)]
        )
        .0 == Verdict::Deny
    );
}

#[test]
fn developer_builds_in_their_project_only_and_reads_the_account() {
    let d = Demo::new();
    let build = "Microsoft.CognitiveServices/accounts/AIServices/agents/write";
    assert!(d.allows("developer", build, &project("proj-chat"), true));
    assert!(!d.allows("developer", build, &project("proj-search"), true));
    assert!(d.allows(
        "developer",
        "Microsoft.CognitiveServices/accounts/read",
        ACCOUNT,
        false
    ));
    assert!(!d.allows(
        "developer",
        "Microsoft.CognitiveServices/accounts/write",
        ACCOUNT,
        false
    ));
    assert!(!d.allows(
        "developer",
        "Microsoft.Authorization/roleAssignments/write",
        &project("proj-chat"),
        false
    ));
}

#[test]
fn agent_consumer_only_interacts_with_agent_endpoints_of_its_project() {
    let d = Demo::new();
    let interact = "Microsoft.CognitiveServices/accounts/AIServices/endpoints/interact/action";
    assert!(d.allows("agent-consumer", interact, &project("proj-chat"), true));
    assert!(!d.allows("agent-consumer", interact, &project("proj-search"), true));
    assert!(!d.allows(
        "agent-consumer",
        "Microsoft.CognitiveServices/accounts/AIServices/agents/write",
        &project("proj-chat"),
        true
    ));
    assert!(!d.allows(
        "agent-consumer",
        "Microsoft.CognitiveServices/accounts/read",
        ACCOUNT,
        false
    ));
}
