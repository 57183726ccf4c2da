//! Envoy's `envoy.service.auth.v3.Authorization/Check` against the real
//! server over gRPC (docs/ext-authz.md): mapping, identity sources, the
//! ARM-shaped answers, elevations, routes from the snapshot, batches and
//! deployments, and the requests that try to get around them.

mod common;

use std::collections::HashMap;

use common::{authed, token, TestServer};
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use rampart::elevation::Store;
use rampart::extauthz::jwt::unsigned_token;
use rampart::extauthz::nested::MAX_BODY_BYTES;
use rampart::extauthz::{ExtAuthzSettings, IdentitySource};
use rampart::proto::ApproveElevationRequest;
use serde_json::{json, Value as Json};
use tonic::transport::Channel;

const SNAPSHOT: &str = include_str!("fixtures/ext_authz.yaml");
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const READER: &str = "00000000-0000-4000-8000-00000000000a";
const DEPLOYER: &str = "00000000-0000-4000-8000-00000000000b";
const AGENT: &str = "00000000-0000-4000-8000-00000000000c";
const SPIFFE: &str = "spiffe://cluster.local/ns/agents/sa/agent";

fn vm(name: &str) -> String {
    format!("{RG}/providers/Microsoft.Compute/virtualMachines/{name}")
}

fn bearer(oid: &str) -> String {
    format!(
        "Bearer {}",
        unsigned_token(&json!({ "oid": oid, "aud": "https://management.azure.com/" }))
    )
}

/// A check of `method path` by the holder of an unsigned token for `oid`.
fn check(oid: &str, method: &str, path: &str) -> CheckRequest {
    let mut headers = HashMap::new();
    headers.insert("authorization".to_owned(), bearer(oid));
    request(method, path, headers, None)
}

fn request(
    method: &str,
    path: &str,
    headers: HashMap<String, String>,
    body: Option<&str>,
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "req-1".into(),
                    method: method.into(),
                    path: path.into(),
                    host: "management.azure.com".into(),
                    headers,
                    body: body.unwrap_or_default().to_owned(),
                    size: body.map_or(-1, |b| b.len() as i64),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn with_body(oid: &str, method: &str, path: &str, body: &Json) -> CheckRequest {
    let mut headers = HashMap::new();
    headers.insert("authorization".to_owned(), bearer(oid));
    request(method, path, headers, Some(&body.to_string()))
}

async fn client(s: &TestServer) -> AuthorizationClient<Channel> {
    let addr = s.running.as_ref().expect("running").authorizer_addr;
    AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

async fn start(settings: ExtAuthzSettings) -> TestServer {
    TestServer::start_with(
        SNAPSHOT,
        Store::in_memory().expect("store"),
        None,
        settings,
        None,
    )
    .await
}

async fn ask(s: &TestServer, req: CheckRequest) -> CheckResponse {
    client(s)
        .await
        .check(req)
        .await
        .expect("check answers")
        .into_inner()
}

/// The answer as (HTTP status, error code, message), 200 for OK.
fn outcome(r: &CheckResponse) -> (i32, String, String) {
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) => (200, String::new(), String::new()),
        Some(HttpResponse::DeniedResponse(d)) => {
            let body: Json =
                serde_json::from_str(&d.body).unwrap_or_else(|e| panic!("{e}: {}", d.body));
            (
                d.status.as_ref().map_or(0, |s| s.code),
                body["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        }
        other => panic!("no http response: {other:?}"),
    }
}

fn meta(r: &CheckResponse, key: &str) -> String {
    match r
        .dynamic_metadata
        .as_ref()
        .and_then(|m| m.fields.get(key))
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::StringValue(s)) => s.clone(),
        other => panic!("metadata {key}: {other:?}"),
    }
}

fn denied_header(r: &CheckResponse, key: &str) -> Option<String> {
    let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
        return None;
    };
    d.headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == key)
        .map(|h| h.value.clone())
}

#[tokio::test]
async fn an_allowed_read_goes_on_with_its_decision_id() {
    let s = start(ExtAuthzSettings::default()).await;
    let r = ask(
        &s,
        check(
            READER,
            "GET",
            &format!("{}?api-version=2024-03-01", vm("vm1")),
        ),
    )
    .await;
    assert_eq!(outcome(&r).0, 200, "{r:?}");
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(0));
    assert_eq!(meta(&r, "decision"), "ALLOW");
    assert_eq!(meta(&r, "reason"), "ROLE_ASSIGNMENT");
    assert_eq!(
        meta(&r, "operation"),
        "Microsoft.Compute/virtualMachines/read"
    );
    assert_eq!(meta(&r, "scope"), vm("vm1"));
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        unreachable!()
    };
    let header = ok.response_headers_to_add[0].header.as_ref().unwrap();
    assert_eq!(header.key, "x-rampart-decision-id");
    assert_eq!(header.value, meta(&r, "decision_id"));
    assert_eq!(ok.headers_to_remove, ["x-rampart-justification"]);
    s.stop().await;
}

#[tokio::test]
async fn a_denied_delete_is_an_arm_shaped_403() {
    let s = start(ExtAuthzSettings::default()).await;
    let r = ask(
        &s,
        check(
            READER,
            "DELETE",
            &format!("{}?api-version=2024-03-01", vm("vm1")),
        ),
    )
    .await;
    let (status, code, message) = outcome(&r);
    assert_eq!((status, code.as_str()), (403, "AuthorizationFailed"));
    assert!(
        message.starts_with(&format!(
            "The client '{READER}' with object id '{READER}' does not have authorization to perform action 'Microsoft.Compute/virtualMachines/delete' over scope '{}' or the scope is invalid.",
            vm("vm1")
        )),
        "{message}"
    );
    assert_eq!(meta(&r, "decision"), "DENY");
    assert_eq!(meta(&r, "reason"), "NO_MATCHING_ASSIGNMENT");
    assert_eq!(
        denied_header(&r, "x-rampart-decision-id"),
        Some(meta(&r, "decision_id"))
    );
    assert_eq!(
        r.status.as_ref().map(|s| s.code),
        Some(tonic::Code::PermissionDenied as i32)
    );
    s.stop().await;
}

#[tokio::test]
async fn approval_required_names_how_to_get_it() {
    let s = start(ExtAuthzSettings::default()).await;
    let r = ask(
        &s,
        check(
            AGENT,
            "POST",
            &format!("{}/restart?api-version=2024-03-01", vm("vm1")),
        ),
    )
    .await;
    let (status, code, message) = outcome(&r);
    assert_eq!(
        (status, code.as_str()),
        (403, "ApprovalRequired"),
        "{message}"
    );
    assert!(message.contains("RequestElevation"), "{message}");
    assert_eq!(meta(&r, "decision"), "APPROVAL_REQUIRED");
    assert_eq!(
        meta(&r, "operation"),
        "Microsoft.Compute/virtualMachines/restart/action"
    );
    assert_eq!(denied_header(&r, "x-rampart-elevation-id"), None);
    assert!(
        s.broker.list().is_empty(),
        "nothing is filed unless --ext-authz-elevate"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_elevation_round_trip_through_check() {
    let settings = ExtAuthzSettings {
        elevate: true,
        ..Default::default()
    };
    let s = start(settings).await;
    let path = format!("{}/restart?api-version=2024-03-01", vm("vm1"));
    let mut first = check(AGENT, "POST", &path);
    if let Some(http) = first
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.headers
            .insert("x-rampart-justification".into(), "the VM is wedged".into());
    }
    let r = ask(&s, first).await;
    let (status, code, message) = outcome(&r);
    assert_eq!((status, code.as_str()), (403, "ApprovalRequired"));
    let id = denied_header(&r, "x-rampart-elevation-id").expect("the filed elevation's id");
    assert!(
        message.contains(&format!("Elevation {id} was filed and is PENDING")),
        "{message}"
    );
    let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
        unreachable!()
    };
    let body: Json = serde_json::from_str(&d.body).unwrap();
    assert_eq!(
        body["error"]["additionalInfo"][0]["info"]["elevationId"],
        id.as_str()
    );
    let elevation = s.broker.get(&id).expect("filed");
    assert_eq!(elevation.justification, "the VM is wedged");
    assert_eq!(
        elevation.action,
        "Microsoft.Compute/virtualMachines/restart/action"
    );

    // Asking again joins the same pending elevation.
    let again = ask(&s, check(AGENT, "POST", &path)).await;
    assert_eq!(
        denied_header(&again, "x-rampart-elevation-id").as_deref(),
        Some(id.as_str())
    );

    // A human approves; the agent's retry goes through on the grant.
    s.approvals
        .clone()
        .approve_elevation(authed(
            ApproveElevationRequest {
                id: id.clone(),
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await
        .expect("oncall approves");
    let retry = ask(&s, check(AGENT, "POST", &path)).await;
    assert_eq!(outcome(&retry).0, 200, "{retry:?}");
    assert_eq!(meta(&retry, "reason"), "ELEVATION_GRANT");
    s.stop().await;
}

/// Exact-change approval through Check: the elevation carries the body
/// (redacted for the approver), and the approval allows that body once.
#[tokio::test]
async fn an_approval_through_check_allows_exactly_the_body_approved_once() {
    let settings = ExtAuthzSettings {
        elevate: true,
        ..Default::default()
    };
    let s = start(settings).await;
    let path = format!("{}/restart?api-version=2024-03-01", vm("vm1"));
    let approved_body = json!({ "reason": "wedged", "adminPassword": "hunter2" });
    let other_body = json!({ "reason": "wedged", "adminPassword": "hunter2", "force": true });
    let r = ask(&s, with_body(AGENT, "POST", &path, &approved_body)).await;
    assert_eq!(outcome(&r).1, "ApprovalRequired");
    let id = denied_header(&r, "x-rampart-elevation-id").expect("filed");
    let elevation = s.broker.get(&id).expect("filed");
    let exact = elevation.request.clone().expect("the request is recorded");
    assert_eq!(
        (exact.method.as_str(), exact.path.as_str()),
        ("POST", path.as_str())
    );
    assert_eq!(
        exact.digest,
        rampart::elevation::policy::exact::sha256_hex(approved_body.to_string().as_bytes())
    );
    let preview = exact.body_preview.unwrap_or_default();
    assert!(
        !preview.contains("hunter2") && preview.contains("wedged"),
        "{preview}"
    );

    let approved = s
        .approvals
        .clone()
        .approve_elevation(authed(
            ApproveElevationRequest {
                id: id.clone(),
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await
        .expect("oncall approves")
        .into_inner();
    let grant = approved.grant.expect("a grant");
    assert_eq!(grant.request_digest, exact.digest);

    // Another body is another change: APPROVAL_REQUIRED, a new elevation.
    let other = ask(&s, with_body(AGENT, "POST", &path, &other_body)).await;
    assert_eq!(outcome(&other).1, "ApprovalRequired");
    assert_ne!(
        denied_header(&other, "x-rampart-elevation-id").as_deref(),
        Some(id.as_str())
    );
    // No body at all: not this grant either.
    assert_eq!(
        outcome(&ask(&s, check(AGENT, "POST", &path)).await).1,
        "ApprovalRequired"
    );
    // The approved body goes through, once.
    let retry = ask(&s, with_body(AGENT, "POST", &path, &approved_body)).await;
    assert_eq!(outcome(&retry).0, 200, "{retry:?}");
    assert_eq!(meta(&retry, "reason"), "ELEVATION_GRANT");
    let twice = ask(&s, with_body(AGENT, "POST", &path, &approved_body)).await;
    assert_eq!(outcome(&twice).1, "ApprovalRequired");
    s.stop().await;
}

#[tokio::test]
async fn malformed_paths_are_400_never_a_guess() {
    let s = start(ExtAuthzSettings::default()).await;
    for path in [
        format!("{RG}//providers/Microsoft.Compute/virtualMachines/vm1"),
        format!("{RG}/providers/Microsoft.Compute/virtualMachines/..%2Fvm1"),
        format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1%2Fextensions"),
        format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1/../vm2"),
        format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm%31"),
        format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1."),
        format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1#x"),
        "/not/arm".to_owned(),
        "relative".to_owned(),
    ] {
        let r = ask(&s, check(READER, "GET", &path)).await;
        let (status, code, _) = outcome(&r);
        assert_eq!(
            (status, code.as_str()),
            (400, "InvalidRequestPath"),
            "{path}"
        );
    }
    let r = ask(&s, check(READER, "TRACE", &vm("vm1"))).await;
    assert_eq!(outcome(&r).0, 400);
    let r = ask(&s, check(READER, "get", &vm("vm1"))).await;
    assert_eq!(outcome(&r).0, 400, "methods are case-sensitive");
    s.stop().await;
}

#[tokio::test]
async fn case_games_decide_the_same_as_the_canonical_spelling() {
    let s = start(ExtAuthzSettings::default()).await;
    let shouted = format!(
        "{}/PROVIDERS/microsoft.compute/VIRTUALMACHINES/vm1",
        RG.to_uppercase()
    );
    let r = ask(&s, check(READER, "DELETE", &shouted)).await;
    assert_eq!(outcome(&r).1, "AuthorizationFailed");
    let r = ask(&s, check(READER, "GET", &shouted)).await;
    assert_eq!(outcome(&r).0, 200);
    s.stop().await;
}

#[tokio::test]
async fn no_identity_is_its_own_403() {
    let s = start(ExtAuthzSettings::default()).await;
    let r = ask(&s, request("GET", &vm("vm1"), HashMap::new(), None)).await;
    let (status, code, message) = outcome(&r);
    assert_eq!(
        (status, code.as_str()),
        (403, "IdentityNotFound"),
        "{message}"
    );
    assert!(message.contains("authorization: Bearer"), "{message}");
    let mut headers = HashMap::new();
    headers.insert("authorization".to_owned(), "Bearer not-a-jwt".to_owned());
    let r = ask(&s, request("GET", &vm("vm1"), headers, None)).await;
    assert_eq!(outcome(&r).1, "IdentityNotFound");
    s.stop().await;
}

#[tokio::test]
async fn an_unsigned_token_cannot_stand_in_for_mtls() {
    let settings = ExtAuthzSettings {
        identity: IdentitySource::Mtls,
        ..Default::default()
    };
    let s = start(settings).await;
    // The deployer may write; a token claiming to be the deployer, sent
    // over a connection without its certificate, gets nothing.
    let write =
        format!("{RG}/providers/Microsoft.Storage/storageAccounts/st1?api-version=2023-01-01");
    let r = ask(&s, check(DEPLOYER, "PUT", &write)).await;
    assert_eq!(outcome(&r).1, "IdentityNotFound");
    // With the agent's certificate, the token is ignored: the agent reads, not writes.
    let mut req = check(DEPLOYER, "PUT", &write);
    req.attributes.as_mut().unwrap().source = Some(Peer {
        principal: SPIFFE.into(),
        ..Default::default()
    });
    let r = ask(&s, req.clone()).await;
    let (_, code, message) = outcome(&r);
    assert_eq!(code, "AuthorizationFailed");
    assert!(message.contains(SPIFFE), "{message}");
    if let Some(http) = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.method = "GET".into();
    }
    assert_eq!(outcome(&ask(&s, req).await).0, 200);
    s.stop().await;
}

#[tokio::test]
async fn an_unsigned_token_cannot_stand_in_for_verified_metadata() {
    let settings = ExtAuthzSettings {
        identity: "metadata:envoy.filters.http.jwt_authn/payload/oid"
            .parse()
            .unwrap(),
        ..Default::default()
    };
    let s = start(settings).await;
    let write =
        format!("{RG}/providers/Microsoft.Storage/storageAccounts/st1?api-version=2023-01-01");
    let r = ask(&s, check(DEPLOYER, "PUT", &write)).await;
    assert_eq!(
        outcome(&r).1,
        "IdentityNotFound",
        "no verified payload, no identity"
    );
    let mut req = check(DEPLOYER, "PUT", &write);
    let payload = Struct {
        fields: [(
            "oid".to_owned(),
            Value {
                kind: Some(Kind::StringValue(READER.into())),
            },
        )]
        .into(),
    };
    let filter = Struct {
        fields: [(
            "payload".to_owned(),
            Value {
                kind: Some(Kind::StructValue(payload)),
            },
        )]
        .into(),
    };
    req.attributes.as_mut().unwrap().metadata_context = Some(Metadata {
        filter_metadata: [("envoy.filters.http.jwt_authn".to_owned(), filter)].into(),
        ..Default::default()
    });
    let (_, code, message) = outcome(&ask(&s, req).await);
    assert_eq!(code, "AuthorizationFailed");
    assert!(
        message.contains(READER) && !message.contains(DEPLOYER),
        "{message}"
    );
    s.stop().await;
}

#[tokio::test]
async fn snapshot_routes_map_and_reload_with_the_snapshot() {
    let s = start(ExtAuthzSettings::default()).await;
    let list = format!(
        "{RG}/providers/Microsoft.Web/sites/site1/config/appsettings/list?api-version=2023-01-01"
    );
    let r = ask(&s, check(DEPLOYER, "POST", &list)).await;
    assert_eq!(
        meta(&r, "operation"),
        "Microsoft.Web/sites/config/list/action"
    );
    // A reload whose route names another operation swaps it in.
    let changed = SNAPSHOT.replace(
        "operation: Microsoft.Web/sites/config/list/action",
        "operation: Microsoft.Web/sites/config/appsettings/read",
    );
    s.broker
        .swap_snapshot(rampart::snapshot::load_str(&changed, "reloaded").unwrap());
    let r = ask(&s, check(DEPLOYER, "POST", &list)).await;
    assert_eq!(
        meta(&r, "operation"),
        "Microsoft.Web/sites/config/appsettings/read"
    );
    s.stop().await;
}

fn deployment_path() -> String {
    format!("{RG}/providers/Microsoft.Resources/deployments/d1?api-version=2024-03-01")
}

fn template(resources: Json) -> Json {
    json!({ "properties": { "mode": "Incremental", "template": {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0", "resources": resources } } })
}

#[tokio::test]
async fn a_deployment_is_allowed_when_every_resource_is() {
    let s = start(ExtAuthzSettings::default()).await;
    let body = template(json!([
        { "type": "Microsoft.Storage/storageAccounts", "apiVersion": "2023-01-01", "name": "st1" },
        { "type": "Microsoft.Network/virtualNetworks", "apiVersion": "2023-04-01", "name": "vnet1",
          "resources": [{ "type": "subnets", "apiVersion": "2023-04-01", "name": "s1" }] }
    ]));
    let r = ask(&s, with_body(DEPLOYER, "PUT", &deployment_path(), &body)).await;
    assert_eq!(outcome(&r).0, 200, "{r:?}");
    assert_eq!(
        meta(&r, "operation"),
        "Microsoft.Resources/deployments/write"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_deployment_creating_a_role_assignment_is_refused() {
    let s = start(ExtAuthzSettings::default()).await;
    let body = template(json!([
        { "type": "Microsoft.Storage/storageAccounts", "apiVersion": "2023-01-01", "name": "st1" },
        { "type": "Microsoft.Authorization/roleAssignments", "apiVersion": "2022-04-01",
          "name": "0d3c4f1e-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
          "properties": { "roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "principalId": DEPLOYER } }
    ]));
    for path in [
        deployment_path(),
        format!("{RG}/providers/Microsoft.Resources/deployments/d1/whatIf?api-version=2024-03-01"),
    ] {
        let method = if path.contains("whatIf") {
            "POST"
        } else {
            "PUT"
        };
        let r = ask(&s, with_body(DEPLOYER, method, &path, &body)).await;
        let (status, code, message) = outcome(&r);
        assert_eq!(
            (status, code.as_str()),
            (403, "AuthorizationFailed"),
            "{message}"
        );
        assert!(
            message.contains("'Microsoft.Authorization/roleAssignments/write'"),
            "{message}"
        );
        assert!(
            message.contains("properties.template.resources[1]"),
            "{message}"
        );
        assert_eq!(
            meta(&r, "operation"),
            "Microsoft.Authorization/roleAssignments/write"
        );
    }
    // The same, named by an expression rampart cannot evaluate.
    let hidden = template(
        json!([{ "type": "Microsoft.Authorization/roleAssignments", "apiVersion": "2022-04-01",
        "name": "[guid(resourceGroup().id)]" }]),
    );
    let (status, code, message) =
        outcome(&ask(&s, with_body(DEPLOYER, "PUT", &deployment_path(), &hidden)).await);
    assert_eq!((status, code.as_str()), (403, "RequestBodyNotVerifiable"));
    assert!(message.contains("[guid(resourceGroup().id)]"), "{message}");
    s.stop().await;
}

#[tokio::test]
async fn a_deployment_without_its_body_is_refused() {
    let s = start(ExtAuthzSettings::default()).await;
    let r = ask(&s, check(DEPLOYER, "PUT", &deployment_path())).await;
    let (_, code, message) = outcome(&r);
    assert_eq!(code, "RequestBodyNotVerifiable");
    assert!(message.contains("with_request_body"), "{message}");
    // Truncated by Envoy: the flag, or fewer bytes than the request's size.
    let body = template(json!([])).to_string();
    let mut partial = with_body(DEPLOYER, "PUT", &deployment_path(), &template(json!([])));
    let http = partial
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    http.headers
        .insert("x-envoy-auth-partial-body".into(), "true".into());
    assert_eq!(
        outcome(&ask(&s, partial.clone()).await).1,
        "RequestBodyNotVerifiable"
    );
    let http = partial
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    http.headers.remove("x-envoy-auth-partial-body");
    http.size = body.len() as i64 + 100;
    assert_eq!(
        outcome(&ask(&s, partial).await).1,
        "RequestBodyNotVerifiable"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_batch_smuggling_a_delete_is_refused() {
    let s = start(ExtAuthzSettings::default()).await;
    let reads = json!({ "requests": [
        { "httpMethod": "GET", "url": format!("https://management.azure.com{}?api-version=2024-03-01", vm("vm1")) },
        { "httpMethod": "GET", "relativeUrl": format!("{RG}?api-version=2021-04-01") }
    ] });
    let r = ask(
        &s,
        with_body(READER, "POST", "/batch?api-version=2020-06-01", &reads),
    )
    .await;
    assert_eq!(outcome(&r).0, 200, "{r:?}");
    assert_eq!(meta(&r, "operation"), "batch of 2");

    let smuggled = json!({ "requests": [
        { "httpMethod": "GET", "url": vm("vm1") },
        { "httpMethod": "DELETE", "url": format!("https://management.azure.com{}?api-version=2024-03-01", vm("vm1")) }
    ] });
    let r = ask(
        &s,
        with_body(READER, "POST", "/batch?api-version=2020-06-01", &smuggled),
    )
    .await;
    let (status, code, message) = outcome(&r);
    assert_eq!((status, code.as_str()), (403, "AuthorizationFailed"));
    assert!(
        message.contains("'Microsoft.Compute/virtualMachines/delete'")
            && message.contains("requests[1]"),
        "{message}"
    );

    // A malformed inner path is no loophole either.
    let tricky = json!({ "requests": [{ "httpMethod": "DELETE", "url": format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1%2F..") }] });
    let r = ask(&s, with_body(READER, "POST", "/batch", &tricky)).await;
    assert_eq!(outcome(&r).1, "RequestBodyNotVerifiable");

    // A deployment inside a batch is inspected too.
    let nested = json!({ "requests": [{ "httpMethod": "PUT", "url": deployment_path(), "content": template(json!([
        { "type": "Microsoft.Authorization/roleAssignments", "name": "0d3c4f1e-5a6b-4c7d-8e9f-0a1b2c3d4e5f" }
    ])) }] });
    let r = ask(&s, with_body(DEPLOYER, "POST", "/batch", &nested)).await;
    let (_, code, message) = outcome(&r);
    assert_eq!(code, "AuthorizationFailed");
    assert!(message.contains("roleAssignments/write"), "{message}");
    s.stop().await;
}

#[tokio::test]
async fn huge_bodies_are_refused() {
    let s = start(ExtAuthzSettings::default()).await;
    let padding = "x".repeat(MAX_BODY_BYTES);
    let body =
        json!({ "requests": [{ "httpMethod": "GET", "url": vm("vm1") }], "padding": padding });
    let r = ask(&s, with_body(READER, "POST", "/batch", &body)).await;
    let (status, code, message) = outcome(&r);
    assert_eq!((status, code.as_str()), (403, "RequestBodyNotVerifiable"));
    assert!(message.contains("bytes"), "{message}");
    s.stop().await;
}

/// The uses taken of the one active grant.
fn grant_uses(s: &TestServer) -> u32 {
    let grants = s.engine.grants.all();
    assert_eq!(grants.len(), 1, "one active grant");
    grants[0].uses.load(std::sync::atomic::Ordering::Acquire)
}

#[tokio::test]
async fn a_refused_deployment_takes_no_use_of_a_grant() {
    let s = start(ExtAuthzSettings {
        elevate: true,
        ..Default::default()
    })
    .await;
    let storage = template(json!([{ "type": "Microsoft.Storage/storageAccounts", "name": "st1" }]));
    // The agent (Review mode) needs approval for the deployment itself.
    let r = ask(&s, with_body(AGENT, "PUT", &deployment_path(), &storage)).await;
    assert_eq!(
        meta(&r, "operation"),
        "Microsoft.Resources/deployments/write"
    );
    let id = denied_header(&r, "x-rampart-elevation-id").expect("filed");
    s.approvals
        .clone()
        .approve_elevation(authed(
            ApproveElevationRequest {
                id,
                max_uses: 1,
                // Not bound to this body: any deployment may take the use.
                bind_to_request: Some(false),
                ..Default::default()
            },
            &token("oncall"),
        ))
        .await
        .expect("oncall approves one use");
    // The envelope is granted now, but the storage account it carries is
    // not: refused, and the single use is still there.
    let r = ask(&s, with_body(AGENT, "PUT", &deployment_path(), &storage)).await;
    assert_eq!(outcome(&r).1, "ApprovalRequired");
    assert_eq!(
        meta(&r, "operation"),
        "Microsoft.Storage/storageAccounts/write"
    );
    assert_eq!(grant_uses(&s), 0);
    // A deployment with nothing else in it goes through on that one use.
    let r = ask(
        &s,
        with_body(AGENT, "PUT", &deployment_path(), &template(json!([]))),
    )
    .await;
    assert_eq!(outcome(&r).0, 200, "{r:?}");
    assert_eq!(meta(&r, "reason"), "ELEVATION_GRANT");
    assert_eq!(grant_uses(&s), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_frozen_rampart_denies_agents_at_envoy_and_lets_people_through() {
    let s = start(ExtAuthzSettings::default()).await;
    let read = format!("{}?api-version=2024-03-01", vm("vm1"));
    assert_eq!(outcome(&ask(&s, check(AGENT, "GET", &read)).await).0, 200);
    s.admin
        .clone()
        .freeze(authed(
            rampart::proto::FreezeRequest {
                reason: "incident".into(),
            },
            common::ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    let r = ask(&s, check(AGENT, "GET", &read)).await;
    let (status, code, message) = outcome(&r);
    assert_eq!(
        (status, code.as_str()),
        (403, "AuthorizationFailed"),
        "{message}"
    );
    assert_eq!(meta(&r, "decision"), "DENY");
    assert_eq!(meta(&r, "reason"), "FROZEN");
    assert!(message.contains("(rampart: FROZEN,"), "{message}");
    assert_eq!(outcome(&ask(&s, check(READER, "GET", &read)).await).0, 200);
    s.stop().await;
}

// The wire: what no gRPC client sends, sent frame by frame.

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// `message` with its gRPC prefix (uncompressed unless `flag` says).
fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// What came back from a raw call: its gRPC status and message (from the
/// trailers, or the headers of a trailers-only answer) and the body.
struct Raw {
    status: String,
    message: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn answer(&self) -> CheckResponse {
        assert_eq!(self.status, "0", "{}", self.message);
        assert_eq!(self.body[0], 0, "uncompressed");
        let length = u32::from_be_bytes(self.body[1..5].try_into().unwrap()) as usize;
        assert_eq!(self.body.len(), 5 + length, "one message");
        prost::Message::decode(&self.body[5..]).expect("a CheckResponse")
    }
}

/// Sends `chunks` as separate DATA frames of one Check call, ending the
/// stream after the last when `end`, with `headers` beside gRPC's own.
async fn raw_check(s: &TestServer, headers: &[(&str, &str)], chunks: &[&[u8]], end: bool) -> Raw {
    raw_call(s, CHECK_PATH, headers, chunks, end).await
}

async fn raw_call(
    s: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
    end: bool,
) -> Raw {
    let addr = s.running.as_ref().expect("running").authorizer_addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2");
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut stream) = client
        .send_request(request.body(()).unwrap(), false)
        .expect("send");
    for (i, chunk) in chunks.iter().enumerate() {
        let last = end && i + 1 == chunks.len();
        stream
            .send_data(bytes::Bytes::copy_from_slice(chunk), last)
            .expect("data");
    }
    if end && chunks.is_empty() {
        stream.send_data(bytes::Bytes::new(), true).expect("end");
    }
    let (parts, mut body) = response.await.expect("a response").into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.expect("trailers");
    let from = trailers.as_ref().unwrap_or(&parts.headers);
    let status = from
        .get("grpc-status")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    // tonic reads grpc-message as clients do, percent-decoding it.
    let message = tonic::Status::from_header_map(from)
        .map(|s| s.message().to_owned())
        .unwrap_or_default();
    Raw {
        status,
        message,
        headers: parts.headers,
        body: data,
    }
}

fn encoded(request: &CheckRequest) -> Vec<u8> {
    prost::Message::encode_to_vec(request)
}

#[tokio::test]
async fn a_check_split_across_many_frames_is_answered_as_one() {
    let s = start(ExtAuthzSettings::default()).await;
    let whole = framed(0, &encoded(&check(READER, "GET", &vm("vm1"))));
    // The prefix itself split, then the message in 7-byte pieces.
    let mut chunks: Vec<&[u8]> = vec![&whole[..2], &whole[2..5]];
    chunks.extend(whole[5..].chunks(7));
    let raw = raw_check(&s, &[], &chunks, true).await;
    assert_eq!(raw.headers["content-type"], "application/grpc");
    assert!(
        !raw.headers.contains_key("content-length"),
        "no gRPC response carries one"
    );
    let answer = raw.answer();
    assert_eq!(outcome(&answer).0, 200);
    assert_eq!(
        meta(&answer, "operation"),
        "Microsoft.Compute/virtualMachines/read"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_second_request_smuggled_into_one_check_is_refused() {
    let s = start(ExtAuthzSettings::default()).await;
    // An allowed read, then a delete the reader may not do, in one call.
    let mut both = framed(0, &encoded(&check(READER, "GET", &vm("vm1"))));
    both.extend(framed(0, &encoded(&check(READER, "DELETE", &vm("vm1")))));
    for chunks in [vec![&both[..]], both.chunks(100).collect()] {
        let raw = raw_check(&s, &[], &chunks, true).await;
        assert_eq!(raw.status, "13", "INTERNAL: {}", raw.message);
        assert!(raw.message.contains("second"), "{}", raw.message);
        assert!(raw.body.is_empty(), "no answer to either");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_check_cut_short_or_empty_is_refused() {
    let s = start(ExtAuthzSettings::default()).await;
    let whole = framed(0, &encoded(&check(READER, "GET", &vm("vm1"))));
    let raw = raw_check(&s, &[], &[&whole[..whole.len() - 1]], true).await;
    assert_eq!(raw.status, "13", "{}", raw.message);
    assert!(raw.message.contains("ended inside"), "{}", raw.message);
    let raw = raw_check(&s, &[], &[], true).await;
    assert_eq!(raw.status, "13", "{}", raw.message);
    assert!(raw.message.contains("no message"), "{}", raw.message);
    s.stop().await;
}

#[tokio::test]
async fn a_compressed_check_is_refused_naming_what_is_accepted() {
    let s = start(ExtAuthzSettings::default()).await;
    let message = encoded(&check(READER, "GET", &vm("vm1")));
    let raw = raw_check(
        &s,
        &[("grpc-encoding", "gzip")],
        &[&framed(1, &message)],
        true,
    )
    .await;
    assert_eq!(raw.status, "12", "UNIMPLEMENTED: {}", raw.message);
    assert_eq!(raw.headers["grpc-accept-encoding"], "identity");
    // The flag without the header is refused too, never read as plain.
    let raw = raw_check(&s, &[], &[&framed(1, &message)], true).await;
    assert_eq!(raw.status, "13", "{}", raw.message);
    assert!(raw.message.contains("compressed"), "{}", raw.message);
    s.stop().await;
}

#[tokio::test]
async fn a_check_over_the_limit_is_refused_from_its_prefix() {
    let s = start(ExtAuthzSettings::default()).await;
    let too_long = rampart::extauthz::service::MAX_CHECK_MESSAGE as u32 + 1;
    let mut prefix = vec![0];
    prefix.extend_from_slice(&too_long.to_be_bytes());
    // The stream stays open: the refusal cannot be waiting for the bytes.
    let raw = raw_check(&s, &[], &[&prefix], false).await;
    assert_eq!(raw.status, "8", "RESOURCE_EXHAUSTED: {}", raw.message);
    assert!(
        raw.message.contains(&too_long.to_string()),
        "{}",
        raw.message
    );
    s.stop().await;
}

#[tokio::test]
async fn another_method_of_the_service_is_unimplemented_naming_check() {
    let s = start(ExtAuthzSettings::default()).await;
    let message = framed(0, &encoded(&check(READER, "GET", &vm("vm1"))));
    let raw = raw_call(
        &s,
        "/envoy.service.auth.v3.Authorization/CheckAll",
        &[],
        &[&message],
        true,
    )
    .await;
    assert_eq!(raw.status, "12", "UNIMPLEMENTED: {}", raw.message);
    assert!(raw.message.contains(CHECK_PATH), "{}", raw.message);
    s.stop().await;
}
