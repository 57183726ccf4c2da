//! The Authorizer over gRPC: one test per rule of docs/model.md, against the real
//! server on ephemeral ports with the fixture `fixtures/rules.yaml`.

mod common;

use common::{decision, request, TestServer, SUB1, SUB2};
use rampart::proto::{authorize_batch_result, AuthorizeBatchRequest, Decision, MatchKind, Reason};
use tonic::Code;

const VM_READ: &str = "Microsoft.Compute/virtualMachines/read";
const VM_RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const VM_DELETE: &str = "Microsoft.Compute/virtualMachines/delete";

fn rg(name: &str) -> String {
    format!("{SUB1}/resourceGroups/{name}")
}

fn vm(rg_name: &str, vm: &str) -> String {
    format!(
        "{}/providers/Microsoft.Compute/virtualMachines/{vm}",
        rg(rg_name)
    )
}

#[tokio::test]
async fn reader_at_a_management_group_inherits_to_every_level_below() {
    let s = TestServer::rules().await;
    let mg_platform = "/providers/Microsoft.Management/managementGroups/platform";
    let disk = format!("{}/providers/Microsoft.Compute/disks/d1", rg("rg-app"));
    let extension = format!(
        "{}/providers/Microsoft.Insights/diagnosticSettings/diag",
        vm("rg-app", "vm1")
    );
    for scope in [
        mg_platform,
        SUB1,
        &rg("rg-app"),
        &vm("rg-app", "vm1"),
        &disk,
        &extension,
    ] {
        let r = s.authorize("mg-reader", VM_READ, scope, false).await;
        assert_eq!(
            decision(&r),
            (Decision::Allow, Reason::RoleAssignment),
            "{scope}"
        );
        let w = s.authorize("mg-reader", VM_DELETE, scope, false).await;
        assert_eq!(
            decision(&w),
            (Decision::Deny, Reason::NoMatchingAssignment),
            "{scope}"
        );
    }
    // A subscription outside the management group sits under `/` only.
    let other = s.authorize("mg-reader", VM_READ, SUB2, false).await;
    assert_eq!(
        decision(&other),
        (Decision::Deny, Reason::NoMatchingAssignment)
    );
    // Nothing flows upward: the root is above the assignment.
    let root = s.authorize("mg-reader", VM_READ, "/", false).await;
    assert_eq!(
        decision(&root),
        (Decision::Deny, Reason::NoMatchingAssignment)
    );
    s.stop().await;
}

#[tokio::test]
async fn assignments_at_subscription_resource_group_and_resource_apply_at_and_below_only() {
    let s = TestServer::rules().await;
    let allow = (Decision::Allow, Reason::RoleAssignment);
    let deny = (Decision::Deny, Reason::NoMatchingAssignment);
    // Subscription level.
    assert_eq!(
        decision(
            &s.authorize("sub-contributor", VM_DELETE, &vm("rg-x", "v"), false)
                .await
        ),
        allow
    );
    assert_eq!(
        decision(&s.authorize("sub-contributor", VM_DELETE, SUB2, false).await),
        deny
    );
    // Resource group level.
    assert_eq!(
        decision(
            &s.authorize("rg-operator", VM_RESTART, &vm("rg-app", "vm9"), false)
                .await
        ),
        allow
    );
    assert_eq!(
        decision(
            &s.authorize("rg-operator", VM_RESTART, &rg("rg-app"), false)
                .await
        ),
        allow
    );
    assert_eq!(
        decision(
            &s.authorize("rg-operator", VM_RESTART, &vm("rg-other", "vm9"), false)
                .await
        ),
        deny
    );
    assert_eq!(
        decision(&s.authorize("rg-operator", VM_RESTART, SUB1, false).await),
        deny
    );
    // Resource level, and its child resources.
    let child = format!("{}/extensions/ext1", vm("rg-app", "vm1"));
    assert_eq!(
        decision(
            &s.authorize("vm-reader", VM_READ, &vm("rg-app", "vm1"), false)
                .await
        ),
        allow
    );
    assert_eq!(
        decision(&s.authorize("vm-reader", VM_READ, &child, false).await),
        allow
    );
    assert_eq!(
        decision(
            &s.authorize("vm-reader", VM_READ, &vm("rg-app", "vm2"), false)
                .await
        ),
        deny
    );
    assert_eq!(
        decision(
            &s.authorize("vm-reader", VM_READ, &rg("rg-app"), false)
                .await
        ),
        deny
    );
    s.stop().await;
}

#[tokio::test]
async fn not_actions_subtract_only_inside_their_own_block() {
    let s = TestServer::rules().await;
    let scope = vm("rg-app", "vm1");
    let alone = s.authorize("one-role", VM_RESTART, &scope, false).await;
    assert_eq!(
        decision(&alone),
        (Decision::Deny, Reason::NoMatchingAssignment)
    );
    let still = s.authorize("one-role", VM_DELETE, &scope, false).await;
    assert_eq!(decision(&still), (Decision::Allow, Reason::RoleAssignment));
    // A second role granting restart still allows it: notActions is no deny.
    let both = s.explain("two-roles", VM_RESTART, &scope, false).await;
    assert_eq!(decision(&both), (Decision::Allow, Reason::RoleAssignment));
    let ids: Vec<&str> = both.matches.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["ra-two-roles-b"],
        "only the restarter grants restart"
    );
    s.stop().await;
}

#[tokio::test]
async fn deny_assignment_wins_over_owner() {
    let s = TestServer::rules().await;
    let scope = vm("rg-prod", "db1");
    let r = s.explain("owner-denied", VM_DELETE, &scope, false).await;
    assert_eq!(decision(&r), (Decision::Deny, Reason::DenyAssignment));
    assert_eq!(r.matches.len(), 1);
    assert_eq!(r.matches[0].kind(), MatchKind::MatchDenyAssignment);
    assert_eq!(r.matches[0].id, "deny-prod-delete");
    // What the deny does not cover, Owner still allows.
    let write = s
        .authorize(
            "owner-denied",
            "Microsoft.Compute/virtualMachines/write",
            &scope,
            false,
        )
        .await;
    assert_eq!(decision(&write), (Decision::Allow, Reason::RoleAssignment));
    // A principal with no role at all is denied by the deny first (step 5).
    let nobody = s.authorize("frank", VM_DELETE, &scope, false).await;
    assert_eq!(decision(&nobody), (Decision::Deny, Reason::DenyAssignment));
    s.stop().await;
}

#[tokio::test]
async fn excluding_a_group_excludes_its_members() {
    let s = TestServer::rules().await;
    let r = s
        .authorize("owner-excluded", VM_DELETE, &vm("rg-prod", "db1"), false)
        .await;
    assert_eq!(decision(&r), (Decision::Allow, Reason::RoleAssignment));
    s.stop().await;
}

#[tokio::test]
async fn do_not_apply_to_child_scopes_limits_a_deny_to_its_own_scope() {
    let s = TestServer::rules().await;
    let write = "Microsoft.Resources/tags/write";
    let at = s
        .authorize("child-deny-user", write, &rg("rg-edge"), false)
        .await;
    assert_eq!(decision(&at), (Decision::Deny, Reason::DenyAssignment));
    let below = s
        .authorize("child-deny-user", write, &vm("rg-edge", "v1"), false)
        .await;
    assert_eq!(decision(&below), (Decision::Allow, Reason::RoleAssignment));
    s.stop().await;
}

#[tokio::test]
async fn data_plane_and_control_plane_are_separate() {
    let s = TestServer::rules().await;
    let container = format!(
        "{}/providers/Microsoft.Storage/storageAccounts/st1/blobServices/default/containers/c1",
        rg("rg-data")
    );
    let blob_read = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";
    let data = s
        .authorize("blob-reader", blob_read, &container, true)
        .await;
    assert_eq!(decision(&data), (Decision::Allow, Reason::RoleAssignment));
    let control = s
        .authorize("blob-reader", blob_read, &container, false)
        .await;
    assert_eq!(
        decision(&control),
        (Decision::Deny, Reason::NoMatchingAssignment)
    );
    // Contributor's `*` is control plane only: no data actions.
    let contributor = s
        .authorize("sub-contributor", blob_read, &container, true)
        .await;
    assert_eq!(
        decision(&contributor),
        (Decision::Deny, Reason::NoMatchingAssignment)
    );
    s.stop().await;
}

#[tokio::test]
async fn roles_of_nested_groups_reach_their_members_and_explain_the_group() {
    let s = TestServer::rules().await;
    let r = s
        .explain("frank", VM_DELETE, &vm("rg-app", "vm1"), false)
        .await;
    assert_eq!(decision(&r), (Decision::Allow, Reason::RoleAssignment));
    assert_eq!(r.matches.len(), 1);
    let m = &r.matches[0];
    assert_eq!(m.kind(), MatchKind::MatchRoleAssignment);
    assert_eq!(m.id, "ra-dept-contributor");
    assert_eq!(m.via_group, "dept");
    assert_eq!(m.role_name, "Contributor");
    assert_eq!(m.role_id, "b24988ac-6180-42a0-ab88-20f7382dd24c");
    assert_eq!(m.scope, rg("rg-app"));
    assert_eq!(m.pattern, "*");
    // A group may ask for itself, with its parents' assignments.
    let team = s
        .authorize("team", VM_DELETE, &vm("rg-app", "vm1"), false)
        .await;
    assert_eq!(decision(&team), (Decision::Allow, Reason::RoleAssignment));
    s.stop().await;
}

#[tokio::test]
async fn scopes_actions_and_guid_ids_compare_case_insensitively() {
    let s = TestServer::rules().await;
    let shouting = vm("rg-app", "vm1").to_uppercase();
    let r = s
        .authorize(
            "rg-operator",
            "MICROSOFT.COMPUTE/VIRTUALMACHINES/RESTART/ACTION",
            &shouting,
            false,
        )
        .await;
    assert_eq!(decision(&r), (Decision::Allow, Reason::RoleAssignment));
    let guid = s
        .authorize("0B5F6A1E-0000-4000-8000-00000000000A", VM_READ, SUB2, false)
        .await;
    assert_eq!(decision(&guid), (Decision::Allow, Reason::RoleAssignment));
    // Ids that are not GUIDs compare exactly.
    let upper = s.authorize("MG-READER", VM_READ, SUB1, false).await;
    assert_eq!(decision(&upper), (Decision::Deny, Reason::UnknownPrincipal));
    s.stop().await;
}

#[tokio::test]
async fn unknown_principal_is_denied_with_its_reason_not_an_error() {
    let s = TestServer::rules().await;
    // Even where an everyone-deny would apply.
    let r = s
        .authorize("ghost@contoso.com", VM_DELETE, &vm("rg-prod", "db1"), false)
        .await;
    assert_eq!(decision(&r), (Decision::Deny, Reason::UnknownPrincipal));
    s.stop().await;
}

#[tokio::test]
async fn responses_carry_an_id_the_revision_and_read_only() {
    let s = TestServer::rules().await;
    let a = s.authorize("mg-reader", VM_READ, SUB1, false).await;
    let b = s.authorize("mg-reader", VM_READ, SUB1, false).await;
    assert_eq!(a.snapshot_revision, "rules-1");
    assert!(a.read_only);
    assert!(
        !s.authorize("mg-reader", VM_DELETE, SUB1, false)
            .await
            .read_only
    );
    assert_eq!(a.decision_id.len(), 36);
    assert_ne!(a.decision_id, b.decision_id);
    assert!(!a.message.is_empty());
    assert!(a.matches.is_empty(), "no explanation unless asked");
    s.stop().await;
}

#[tokio::test]
async fn agents_are_confined_to_their_managed_scopes_with_the_derived_assignment_explained() {
    let s = TestServer::rules().await;
    let inside = s
        .explain("agent-mi", VM_READ, &vm("rg-app", "vm1"), false)
        .await;
    assert_eq!(decision(&inside), (Decision::Allow, Reason::RoleAssignment));
    assert_eq!(inside.matches[0].derived_from_agent, "ops-agent");
    assert_eq!(inside.matches[0].role_name, "Reader");
    let write = s
        .authorize("agent-mi", VM_RESTART, &vm("rg-app", "vm1"), false)
        .await;
    assert_eq!(
        decision(&write),
        (Decision::ApprovalRequired, Reason::NeedsElevation)
    );
    let outside = s
        .explain("agent-mi", VM_READ, &vm("rg-prod", "db1"), false)
        .await;
    assert_eq!(
        decision(&outside),
        (Decision::Deny, Reason::OutOfAgentScope)
    );
    assert_eq!(outside.matches[0].kind(), MatchKind::MatchAgentScope);
    s.stop().await;
}

#[tokio::test]
async fn batch_answers_in_request_order_and_a_malformed_item_fails_alone() {
    let s = TestServer::rules().await;
    let requests = vec![
        request("mg-reader", VM_READ, SUB1, false),
        request("mg-reader", VM_DELETE, SUB1, false),
        request("mg-reader", "Microsoft.Compute/*/read", SUB1, false),
        request("ghost", VM_READ, SUB1, false),
        request("mg-reader", VM_READ, "/subscriptions//x", false),
        request("sub-contributor", VM_DELETE, SUB1, false),
    ];
    let results = s
        .authorizer
        .clone()
        .authorize_batch(AuthorizeBatchRequest { requests })
        .await
        .expect("batch")
        .into_inner()
        .results;
    assert_eq!(results.len(), 6);
    let outcome = |i: usize| match results[i].result.as_ref().expect("a result") {
        authorize_batch_result::Result::Response(r) => Ok((r.decision(), r.reason())),
        authorize_batch_result::Result::Error(e) => Err((e.code, e.field.clone())),
    };
    assert_eq!(outcome(0), Ok((Decision::Allow, Reason::RoleAssignment)));
    assert_eq!(
        outcome(1),
        Ok((Decision::Deny, Reason::NoMatchingAssignment))
    );
    assert_eq!(
        outcome(2),
        Err((Code::InvalidArgument as i32, "action".into()))
    );
    assert_eq!(outcome(3), Ok((Decision::Deny, Reason::UnknownPrincipal)));
    assert_eq!(
        outcome(4),
        Err((Code::InvalidArgument as i32, "scope".into()))
    );
    assert_eq!(outcome(5), Ok((Decision::Allow, Reason::RoleAssignment)));
    s.stop().await;
}

#[tokio::test]
async fn each_malformed_field_is_invalid_argument_naming_the_field() {
    let s = TestServer::rules().await;
    let cases = [
        (
            request("", VM_READ, SUB1, false),
            "principal_id",
            "is empty",
        ),
        (
            request("a b", VM_READ, SUB1, false),
            "principal_id",
            "whitespace",
        ),
        (request("mg-reader", "", SUB1, false), "action", "is empty"),
        (
            request("mg-reader", "Microsoft.Compute/*", SUB1, false),
            "action",
            "'*'",
        ),
        (
            request("mg-reader", "read", SUB1, false),
            "action",
            "{Namespace}",
        ),
        (
            request("mg-reader", VM_READ, "", false),
            "scope",
            "is empty",
        ),
        (
            request("mg-reader", VM_READ, "subscriptions/x", false),
            "scope",
            "must start with '/'",
        ),
        (
            request("mg-reader", VM_READ, &format!("{SUB1}/"), false),
            "scope",
            "must not end with '/'",
        ),
        (
            request(
                "mg-reader",
                VM_READ,
                &format!("{SUB1}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines"),
                false,
            ),
            "scope",
            "pairs",
        ),
        (
            request(
                "mg-reader",
                VM_READ,
                &format!("{SUB1}/resourceGroups/rg/providers"),
                false,
            ),
            "scope",
            "namespace",
        ),
        (
            request(
                "mg-reader",
                VM_READ,
                &format!("{SUB1}/resourceGroups/r\u{7}g"),
                false,
            ),
            "scope",
            "control character",
        ),
        (
            request(
                "mg-reader",
                VM_READ,
                &format!("{SUB1}/resourceGroups/{}", "x".repeat(3000)),
                false,
            ),
            "scope",
            "limit",
        ),
    ];
    for (req, field, problem) in cases {
        let status = s.try_authorize(req.clone()).await.expect_err("malformed");
        assert_eq!(status.code(), Code::InvalidArgument, "{req:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
        assert!(
            status.message().contains(problem),
            "{problem}: {}",
            status.message()
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn oversized_requests_are_refused_whole() {
    let s = TestServer::rules().await;
    let huge = request(&"p".repeat(2 << 20), VM_READ, SUB1, false);
    let status = s.try_authorize(huge).await.expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status}");
    let too_many = AuthorizeBatchRequest {
        requests: vec![request("mg-reader", VM_READ, SUB1, false); 1001],
    };
    let status = s
        .authorizer
        .clone()
        .authorize_batch(too_many)
        .await
        .expect_err("too many");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("requests"));
    s.stop().await;
}

#[tokio::test]
async fn a_condition_that_does_not_hold_is_named_without_explain() {
    let sub = "/subscriptions/11111111-1111-1111-1111-111111111111";
    let snapshot = format!(
        r#"
subscriptions: [{{ id: 11111111-1111-1111-1111-111111111111 }}]
principals:
  - {{ id: tagged, type: User }}
  - {{ id: plain, type: User }}
roleAssignments:
  - id: ra-tagged
    principal: tagged
    role: Reader
    scope: {sub}
    conditionVersion: "2.0"
    condition: "@Request[env] StringEquals 'test'"
"#
    );
    let s = TestServer::start(&snapshot).await;
    let client = s.authorizer.clone();
    let ask = |principal: &str, env: Option<&str>| {
        let mut r = request(principal, VM_READ, sub, false);
        if let Some(env) = env {
            r.attributes.insert("env".into(), env.into());
        }
        r
    };
    let answer = |r| {
        let mut client = client.clone();
        async move { client.authorize(r).await.map(|a| a.into_inner()) }
    };
    let held = answer(ask("tagged", Some("test"))).await.unwrap();
    assert_eq!(decision(&held), (Decision::Allow, Reason::RoleAssignment));
    let unmet = answer(ask("tagged", Some("prod"))).await.unwrap();
    assert_eq!(decision(&unmet), (Decision::Deny, Reason::ConditionNotMet));
    assert!(
        unmet.message.contains("condition does not hold"),
        "{}",
        unmet.message
    );
    assert!(unmet.matches.is_empty(), "no explanation was asked for");
    // An operation the role does not cover is not a condition's doing.
    let uncovered = answer(request("tagged", VM_DELETE, sub, false))
        .await
        .unwrap();
    assert_eq!(
        decision(&uncovered),
        (Decision::Deny, Reason::NoMatchingAssignment)
    );
    let nothing = answer(ask("plain", Some("prod"))).await.unwrap();
    assert_eq!(
        decision(&nothing),
        (Decision::Deny, Reason::NoMatchingAssignment)
    );
    s.stop().await;
}
