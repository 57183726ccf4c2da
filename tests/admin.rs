//! The Admin service, reflection and health on every listener, and the
//! snapshot swap the reload path will use.

mod common;

use common::{authed, decision, TestServer, ADMIN_TOKEN, SUB1};
use rampart::proto::{
    AuthorizeRequest, Decision, GetEffectivePermissionsRequest, GetSnapshotStatusRequest, Reason,
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn snapshot_status_reports_revision_source_and_counts() {
    let s = TestServer::rules().await;
    let status = s
        .admin
        .clone()
        .get_snapshot_status(authed(GetSnapshotStatusRequest {}, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.revision, "rules-1");
    assert_eq!(status.source, "test");
    assert_eq!(status.content_sha256.len(), 64);
    assert!(status.loaded_at.is_some());
    assert!(status.last_error.is_empty());
    let counts = status.counts.expect("counts");
    assert_eq!(counts.principals, 16);
    assert_eq!(counts.custom_role_definitions, 3);
    // 13 declared plus the agent's derived Reader assignment.
    assert_eq!(counts.role_assignments, 14);
    assert_eq!(counts.deny_assignments, 2);
    assert_eq!(counts.management_groups, 2);
    assert_eq!(counts.subscriptions, 2);
    assert_eq!(counts.agents, 1);
    s.stop().await;
}

#[tokio::test]
async fn effective_permissions_list_assignments_with_their_origin() {
    let s = TestServer::rules().await;
    let scope =
        format!("{SUB1}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1");
    let e = s
        .admin
        .clone()
        .get_effective_permissions(authed(
            GetEffectivePermissionsRequest {
                principal_id: "frank".into(),
                scope: scope.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.principal_type, "User");
    let mut groups = e.groups.clone();
    groups.sort();
    assert_eq!(groups, vec!["dept", "team"]);
    assert_eq!(e.assignments.len(), 1);
    let a = &e.assignments[0];
    assert_eq!(
        (
            a.assignment_id.as_str(),
            a.via_group.as_str(),
            a.role_name.as_str()
        ),
        ("ra-dept-contributor", "dept", "Contributor")
    );
    assert_eq!(a.permissions[0].actions, vec!["*"]);
    assert!(a.permissions[0]
        .not_actions
        .iter()
        .any(|n| n == "Microsoft.Authorization/*/Delete"));

    let prod = format!("{SUB1}/resourceGroups/rg-prod");
    let denied = s
        .admin
        .clone()
        .get_effective_permissions(authed(
            GetEffectivePermissionsRequest {
                principal_id: "owner-denied".into(),
                scope: prod,
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.deny_assignments.len(), 1);
    assert!(denied.deny_assignments[0].everyone);

    let unknown = s
        .admin
        .clone()
        .get_effective_permissions(authed(
            GetEffectivePermissionsRequest {
                principal_id: "ghost".into(),
                scope,
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("unknown principal");
    assert_eq!(unknown.code(), Code::NotFound);
    let bad = s
        .admin
        .clone()
        .get_effective_permissions(authed(
            GetEffectivePermissionsRequest {
                principal_id: "frank".into(),
                scope: "nope".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("bad scope");
    assert_eq!(bad.code(), Code::InvalidArgument);
    s.stop().await;
}

#[tokio::test]
async fn check_access_always_explains() {
    let s = TestServer::rules().await;
    let r = s
        .admin
        .clone()
        .check_access(authed(
            AuthorizeRequest {
                principal_id: "mg-reader".into(),
                action: "Microsoft.Compute/virtualMachines/read".into(),
                scope: SUB1.into(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision(&r), (Decision::Allow, Reason::RoleAssignment));
    assert_eq!(r.matches.len(), 1);
    assert_eq!(r.matches[0].id, "ra-mg-reader");
    s.stop().await;
}

#[tokio::test]
async fn health_is_serving_on_all_three_listeners() {
    let s = TestServer::rules().await;
    let running = s.running.as_ref().unwrap();
    let addrs = [
        running.authorizer_addr,
        running.admin_addr,
        running.health_addr.unwrap(),
    ];
    for addr in addrs {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        for service in ["", "rampart.v1.Authorizer"] {
            let r = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("{addr} {service}: {e}"))
                .into_inner();
            assert_eq!(r.status(), ServingStatus::Serving, "{addr} {service:?}");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn a_swapped_snapshot_answers_with_its_own_revision_and_cache() {
    let s = TestServer::rules().await;
    let scope = format!("{SUB1}/resourceGroups/rg-app");
    let before = s
        .authorize(
            "mg-reader",
            "Microsoft.Compute/virtualMachines/read",
            &scope,
            false,
        )
        .await;
    assert_eq!(decision(&before), (Decision::Allow, Reason::RoleAssignment));
    let without = common::RULES
        .replace("revision: rules-1", "revision: rules-2")
        .replace(
            "principal: mg-reader\n    role: Reader",
            "principal: mg-reader\n    role: VM Restarter",
        );
    let next = rampart::snapshot::load_str(&without, "test-2").unwrap_or_else(|e| panic!("{e}"));
    s.broker.swap_snapshot(next);
    let after = s
        .authorize(
            "mg-reader",
            "Microsoft.Compute/virtualMachines/read",
            &scope,
            false,
        )
        .await;
    assert_eq!(after.snapshot_revision, "rules-2");
    assert_eq!(
        decision(&after),
        (Decision::Deny, Reason::NoMatchingAssignment)
    );
    s.stop().await;
}

#[tokio::test]
async fn the_admin_listener_binds_beyond_loopback_only_when_told_insecure() {
    use rampart::elevation::{Broker, Store};
    use rampart::server::{self, ServeConfig, ServeError, Tokens};
    let snapshot = rampart::snapshot::load_str(common::RULES, "t").unwrap();
    let engine = std::sync::Arc::new(rampart::engine::Engine::new(snapshot));
    let broker = Broker::start(engine, Store::in_memory().unwrap()).unwrap();
    let config = |insecure| ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "0.0.0.0:0".parse().unwrap(),
        health_listen: None,
        tokens: Tokens::default(),
        insecure,
        audit: None,
        audit_decisions_sample: 0.0,
        tls: None,
        uds: None,
        ext_authz: Default::default(),
        authorizer_tokens: None,
        connections: Default::default(),
        caps: Default::default(),
    };
    let refused = server::start(config(false), broker.clone(), None)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(refused, ServeError::AdminNotLoopback(_)),
        "{refused}"
    );
    assert!(refused.to_string().contains("--insecure"));
    let running = server::start(config(true), broker, None)
        .await
        .expect("allowed with --insecure");
    running.shutdown().await.unwrap();
}
