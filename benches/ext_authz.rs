//! The whole `Check` path in process, without the network: identity from
//! the bearer token, mapping, decision, metrics and the answer Envoy gets
//! (`envoy.service.auth.v3.CheckResponse`):
//!
//! - `allow_read`: GET of a VM by a Reader;
//! - `deny_delete`: DELETE of the same VM, answered with ARM's 403 body;
//! - `deployment_3_resources`: a template deployment whose three resources
//!   are each decided (body parsed, probe and decide passes).
//!
//! The gRPC transport adds to these; docs/ext-authz.md gives the figures
//! measured over gRPC. Run with `cargo bench --bench ext_authz`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use rampart::elevation::{Broker, Store};
use rampart::engine::Engine;
use rampart::extauthz::jwt::unsigned_token;
use rampart::extauthz::service::CheckService;
use serde_json::json;

const SNAPSHOT: &str = r#"
subscriptions: [{ id: 11111111-1111-1111-1111-111111111111 }]
principals:
  - { id: 00000000-0000-4000-8000-00000000000a, type: User }
  - { id: 00000000-0000-4000-8000-00000000000b, type: ServicePrincipal }
roleAssignments:
  - { id: ra-reader, principal: 00000000-0000-4000-8000-00000000000a, role: Reader, scope: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app }
  - { id: ra-deployer, principal: 00000000-0000-4000-8000-00000000000b, role: Contributor, scope: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app }
"#;
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";

fn check(oid: &str, method: &str, path: &str, body: Option<String>) -> CheckRequest {
    let token = unsigned_token(
        &json!({ "oid": oid, "aud": "https://management.azure.com/", "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47" }),
    );
    let mut headers = HashMap::new();
    headers.insert("authorization".to_owned(), format!("Bearer {token}"));
    headers.insert(
        "user-agent".to_owned(),
        "azsdk-python-mgmt-compute/30.0.0".to_owned(),
    );
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    size: body.as_ref().map_or(-1, |b| b.len() as i64),
                    body: body.unwrap_or_default(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let snapshot = rampart::snapshot::load_str(SNAPSHOT, "bench").expect("snapshot");
    let broker = runtime.block_on(async {
        Broker::start(
            Arc::new(Engine::new(snapshot)),
            Store::in_memory().expect("store"),
        )
        .expect("broker")
    });
    let service = CheckService::new(broker, Arc::default(), None);
    let vm = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1?api-version=2024-03-01");
    let template = json!({ "properties": { "mode": "Incremental", "template": { "resources": [
        { "type": "Microsoft.Storage/storageAccounts", "apiVersion": "2023-01-01", "name": "st1" },
        { "type": "Microsoft.Network/virtualNetworks", "apiVersion": "2023-04-01", "name": "vnet1" },
        { "type": "Microsoft.Network/virtualNetworks/subnets", "apiVersion": "2023-04-01", "name": "vnet1/s1" }
    ] } } });
    let cases = [
        (
            "allow_read",
            check("00000000-0000-4000-8000-00000000000a", "GET", &vm, None),
        ),
        (
            "deny_delete",
            check("00000000-0000-4000-8000-00000000000a", "DELETE", &vm, None),
        ),
        (
            "deployment_3_resources",
            check(
                "00000000-0000-4000-8000-00000000000b",
                "PUT",
                &format!(
                    "{RG}/providers/Microsoft.Resources/deployments/d1?api-version=2024-03-01"
                ),
                Some(template.to_string()),
            ),
        ),
    ];
    let mut group = c.benchmark_group("check");
    for (name, request) in cases {
        // Measure what the name says.
        let answer = runtime
            .block_on(service.check(tonic::Request::new(request.clone())))
            .expect("an answer")
            .into_inner();
        let allowed = matches!(answer.http_response, Some(HttpResponse::OkResponse(_)));
        assert_eq!(allowed, name != "deny_delete", "{name}: {answer:?}");
        group.bench_function(name, |b| {
            b.iter(|| {
                let answer = runtime
                    .block_on(service.check(tonic::Request::new(request.clone())))
                    .expect("an answer");
                black_box(answer)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
