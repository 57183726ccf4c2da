//! The whole `Check` path in process, without the network: the request
//! decoded from its bytes, identity from the bearer token, mapping,
//! decision, metrics and the encoded answer Envoy gets
//! (`envoy.service.auth.v3.CheckResponse`):
//!
//! - `allow_read`: GET of a VM by a Reader;
//! - `deny_delete`: DELETE of the same VM, answered with ARM's 403 body;
//! - `deployment_3_resources`: a template deployment whose three resources
//!   are each decided (body parsed, probe and decide passes);
//! - `decode/*`: decoding alone, rampart's view of the message against
//!   Envoy's whole message.
//!
//! The gRPC transport adds to these; docs/ext-authz.md gives the figures
//! measured over gRPC. Run with `cargo bench --bench ext_authz`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use prost::bytes::Bytes;
use prost::Message;
use rampart::elevation::{Broker, Store};
use rampart::engine::Engine;
use rampart::extauthz::jwt::unsigned_token;
use rampart::extauthz::service::CheckService;
use rampart::extauthz::wire;
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

/// A request as Envoy sends it for an SDK's call: eleven headers and an
/// Entra-shaped bearer token of about 1.5 KB.
fn check(oid: &str, method: &str, path: &str, body: Option<String>) -> CheckRequest {
    let token = unsigned_token(&json!({
        "aud": "https://management.azure.com/",
        "iss": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
        "iat": 1764676800, "nbf": 1764676800, "exp": 1764680700,
        "aio": "k2BgYNDfz3Zl9c1bXbT8xqjX3nA0AA==",
        "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46", "appidacr": "0",
        "idp": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
        "idtyp": "app", "oid": oid,
        "rh": "0.AQEAv4j5cvGGr0GRqy180BHbR0ZIf3kAutdPukPawfj2MBMBAAA.",
        "sub": oid, "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "uti": "x1yNXzr7yUyBDGXlbQ0tAA", "ver": "1.0",
        "xms_mirid": "/subscriptions/11111111-1111-1111-1111-111111111111/resourcegroups/rg-agents/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agent",
        "xms_tcdt": 1289241547
    }));
    let headers: HashMap<String, String> = [
        ("authorization", format!("Bearer {token}")),
        ("host", "management.azure.com".into()),
        (
            "user-agent",
            "azsdk-python-mgmt-compute/30.0.0 Python/3.12.3 (Linux-6.8.0-x86_64-with-glibc2.39)"
                .into(),
        ),
        ("accept", "application/json".into()),
        ("accept-encoding", "gzip, deflate".into()),
        ("content-type", "application/json".into()),
        (
            "x-ms-client-request-id",
            "6f0c8a9e-8f3b-11ef-9c1e-0242ac120002".into(),
        ),
        (
            "x-request-id",
            "2b1f9c4e-7d3a-4e55-9f0a-1c2d3e4f5a6b".into(),
        ),
        ("x-forwarded-proto", "https".into()),
        ("x-envoy-expected-rq-timeout-ms", "15000".into()),
        (":authority", "management.azure.com".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    size: body.as_ref().map_or(-1, |b| b.len() as i64),
                    body: body.unwrap_or_default(),
                    headers,
                    id: "8431769563921850147".into(),
                    host: "management.azure.com".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
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
    // What arrives: the encoded message, decoded as the server does; what
    // leaves: the encoded answer.
    let answer = |bytes: &Bytes| {
        let request = wire::CheckRequest::decode(bytes.clone()).expect("a request");
        runtime.block_on(service.answer(&request))
    };
    let mut group = c.benchmark_group("check");
    for (name, request) in &cases {
        let bytes = Bytes::from(request.encode_to_vec());
        // Measure what the name says.
        let decided = answer(&bytes).to_envoy().expect("Envoy reads the answer");
        let allowed = matches!(decided.http_response, Some(HttpResponse::OkResponse(_)));
        assert_eq!(allowed, *name != "deny_delete", "{name}: {decided:?}");
        group.bench_function(*name, |b| b.iter(|| black_box(answer(&bytes))));
    }
    group.finish();

    // Decoding alone: the parts rampart reads, against Envoy's whole message.
    let mut group = c.benchmark_group("decode");
    let bytes = Bytes::from(cases[0].1.encode_to_vec());
    group.bench_function("rampart_wire", |b| {
        b.iter(|| black_box(wire::CheckRequest::decode(bytes.clone()).expect("decodes")))
    });
    group.bench_function("envoy_types", |b| {
        b.iter(|| black_box(CheckRequest::decode(bytes.clone()).expect("decodes")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
