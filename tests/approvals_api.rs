//! The approvals page's JSON API on the admin listener, over HTTP: who may
//! call it, what it shows each viewer (the preview and the approver
//! rules), approving, denying and revoking with the gRPC API's messages,
//! the live event stream, and the page over mutual TLS.

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::sync::Arc;
use std::time::Duration;

use common::{authed, token, TestServer, ADMIN_TOKEN};
use rampart::elevation::{Elevation, ElevationState, Store};
use rampart::proto::{self as pb, ApproveElevationRequest, RequestElevationRequest};
use reqwest::StatusCode;
use serde_json::{json, Value};

const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const DELETE: &str = "Microsoft.Compute/virtualMachines/delete";

/// The elevation fixture, with resources declared: two VMs in rg-app, one
/// elsewhere.
fn snapshot() -> String {
    format!(
        "{}resources:\n  - {{ scope: {RG}/providers/Microsoft.Compute/virtualMachines/vm1 }}\n  - {{ scope: {RG}/providers/Microsoft.Compute/virtualMachines/vm2 }}\n  - {{ scope: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-agents/providers/Microsoft.Compute/virtualMachines/tools }}\n",
        include_str!("fixtures/elevation.yaml")
    )
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(s: &TestServer) -> Api {
        let admin = s.running.as_ref().expect("running").admin_addr;
        Api {
            base: format!("http://{admin}"),
            http: reqwest::Client::new(),
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        principal_token: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("x-rampart-ui", "1")
            .bearer_auth(principal_token)
    }

    async fn get(&self, path: &str, principal_token: &str) -> (StatusCode, Value) {
        send(self.request(reqwest::Method::GET, path, principal_token)).await
    }

    async fn post(&self, path: &str, principal_token: &str, body: Value) -> (StatusCode, Value) {
        send(
            self.request(reqwest::Method::POST, path, principal_token)
                .json(&body),
        )
        .await
    }
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the API answers");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn ask(principal: &str, action: &str, scope: &str, justification: &str) -> RequestElevationRequest {
    RequestElevationRequest {
        principal_id: principal.into(),
        action: action.into(),
        scope: scope.into(),
        justification: justification.into(),
        ..Default::default()
    }
}

fn spawn_request(
    s: &TestServer,
    req: RequestElevationRequest,
) -> tokio::task::JoinHandle<Result<pb::Elevation, tonic::Status>> {
    let mut client = s.authorizer.clone();
    tokio::spawn(async move { client.request_elevation(req).await.map(|r| r.into_inner()) })
}

/// Waits (bounded) for the pending elevation of `principal` for `action`.
async fn pending(s: &TestServer, principal: &str, action: &str) -> Elevation {
    for _ in 0..1000 {
        if let Some(e) = s.broker.list().into_iter().find(|e| {
            e.state == ElevationState::Pending && e.principal_id == principal && e.action == action
        }) {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pending elevation for {principal} {action}");
}

#[tokio::test]
async fn every_api_call_needs_the_page_header_and_a_known_caller() {
    let s = TestServer::start(&snapshot()).await;
    let api = Api::new(&s);
    let url = format!("{}/ui/api/me", api.base);

    // Without the page's header: refused, even with a good token.
    let (status, body) = send(api.http.get(&url).bearer_auth(token("oncall"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "PERMISSION_DENIED");
    assert!(
        body["message"].as_str().unwrap().contains("x-rampart-ui"),
        "{body}"
    );
    // A browser says when another site made the request.
    let (status, _) = send(
        api.request(reqwest::Method::GET, "/ui/api/me", &token("oncall"))
            .header("sec-fetch-site", "cross-site"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // No token, a wrong one, a malformed header: the interceptor's messages.
    let (status, body) = send(api.http.get(&url).header("x-rampart-ui", "1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "UNAUTHENTICATED");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("missing authorization"),
        "{body}"
    );
    let (status, body) = api.get("/ui/api/me", "not-a-token").await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unknown token"))
    );
    let (status, _) = send(
        api.http
            .get(&url)
            .header("x-rampart-ui", "1")
            .header("authorization", "Basic b25jYWxs"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // State changes are refused the same way before anything happens.
    let (status, _) = send(
        api.http
            .post(format!("{}/ui/api/elevations/x/deny", api.base))
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = api.get("/ui/api/me", &token("oncall")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"principal": "oncall", "admin": false}));
    let (_, body) = api.get("/ui/api/me", ADMIN_TOKEN).await;
    assert_eq!(body["admin"], true);

    // The page itself holds no data: served to anyone, under a strict CSP.
    for (path, kind) in [
        ("/ui/approvals", "text/html"),
        ("/ui/approvals.js", "text/javascript"),
        ("/ui/approvals.css", "text/css"),
    ] {
        let response = api
            .http
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(headers["x-frame-options"], "DENY");
    }
    // gRPC keeps working beside it on the same listener.
    let status = s
        .admin
        .clone()
        .get_snapshot_status(authed(pb::GetSnapshotStatusRequest {}, ADMIN_TOKEN))
        .await
        .expect("gRPC on the same port")
        .into_inner();
    assert_eq!(status.revision, "elevation-1");
    s.stop().await;
}

#[tokio::test]
async fn each_viewer_sees_what_approving_lends_and_whether_they_may() {
    let s = TestServer::start(&snapshot()).await;
    let api = Api::new(&s);
    let hostile = "<img src=x onerror=alert(1)> \"quotes\" & <script>alert(2)</script>";
    let waiting = spawn_request(&s, ask("agent-r", RESTART, RG, hostile));
    let e = pending(&s, "agent-r", RESTART).await;

    let (status, body) = api.get("/ui/api/elevations", &token("oncall")).await;
    assert_eq!(status, StatusCode::OK);
    let list = body["elevations"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let v = &list[0];
    assert_eq!(v["id"], e.id.as_str());
    assert_eq!(v["agentId"], "reviewer");
    assert_eq!(v["principalId"], "agent-r");
    assert_eq!(v["state"], "PENDING");
    assert_eq!(v["reason"], "NEEDS_ELEVATION");
    assert_eq!(v["justification"], hostile, "text is returned as given");
    assert_eq!(v["requestedDurationSeconds"], 900);
    assert!(v["waitLeftSeconds"].as_u64().unwrap() <= 300);
    let p = &v["preview"];
    assert_eq!(
        p["lends"],
        format!("{RESTART} at {RG} and every scope below it")
    );
    assert_eq!(p["resourcesUnderScope"], 2);
    assert_eq!(p["effect"], "ACTION");
    assert_eq!(p["plane"], "CONTROL");
    assert_eq!(
        (p["deletes"].as_bool(), p["assignsRoles"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(v["viewer"]["mayApprove"], true);
    assert!(v["viewer"]["approveRefusal"].is_null());
    assert_eq!(v["viewer"]["mayDeny"], true);

    // viewer may interact (rule a) but does not hold the operation (rule b).
    let (_, body) = api.get("/ui/api/elevations", &token("viewer")).await;
    let v = &body["elevations"][0];
    assert_eq!(v["viewer"]["mayApprove"], false);
    assert_eq!(
        v["viewer"]["approveRefusal"],
        format!(
            "viewer does not hold {RESTART} at {RG} and cannot lend what it does not hold (rule b)"
        )
    );
    assert_eq!(v["viewer"]["mayDeny"], true);
    // outsider may not interact: sees nothing, as with ListElevations.
    let (_, body) = api.get("/ui/api/elevations", &token("outsider")).await;
    assert_eq!(body["elevations"], json!([]));
    // An admin token sees everything but lends nothing it does not hold.
    let (_, body) = api.get("/ui/api/elevations", ADMIN_TOKEN).await;
    let v = &body["elevations"][0];
    assert_eq!(v["viewer"]["mayApprove"], false);
    assert!(v["viewer"]["approveRefusal"]
        .as_str()
        .unwrap()
        .ends_with("(rule a)"));

    // A delete of the whole resource group is flagged.
    let deleting = spawn_request(&s, ask("agent-p", DELETE, RG, "clean up the group"));
    pending(&s, "agent-p", DELETE).await;
    let (_, body) = api.get("/ui/api/elevations", &token("oncall")).await;
    let v = body["elevations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["action"] == DELETE)
        .expect("the delete");
    assert_eq!(v["preview"]["effect"], "DELETE");
    assert_eq!(v["preview"]["deletes"], true);
    assert_eq!(v["reason"], "REVIEW_MODE_WRITE");

    s.stop().await;
    let _ = waiting.await;
    let _ = deleting.await;
}

#[tokio::test]
async fn approving_denying_and_revoking_refuse_exactly_as_the_grpc_api_does() {
    let s = TestServer::start(&snapshot()).await;
    let api = Api::new(&s);
    let waiting = spawn_request(&s, ask("agent-r", RESTART, RG, "restart the app VMs"));
    let e = pending(&s, "agent-r", RESTART).await;
    let path = format!("/ui/api/elevations/{}/approve", e.id);

    // Each refusal: the check the page shows beforehand, the page's API and
    // the gRPC API say the same thing.
    for (principal, rule) in [
        ("viewer", "(rule b)"),
        ("outsider", "(rule a)"),
        ("agent-r", "(rule c)"),
    ] {
        let check = s
            .broker
            .check_approver(principal, &e)
            .expect_err("refused")
            .to_string();
        assert!(check.ends_with(rule), "{principal}: {check}");
        let (status, body) = api.post(&path, &token(principal), json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{principal}");
        assert_eq!(body["code"], "PERMISSION_DENIED");
        assert_eq!(body["message"], check.as_str(), "{principal}");
        let grpc = s
            .approvals
            .clone()
            .approve_elevation(authed(
                ApproveElevationRequest {
                    id: e.id.clone(),
                    ..Default::default()
                },
                &token(principal),
            ))
            .await
            .unwrap_err();
        assert_eq!(grpc.message(), check, "{principal}");
    }
    assert!(s.broker.check_approver("oncall", &e).is_ok());

    // Bad bodies name what is wrong.
    let (status, body) = api
        .post(&path, &token("oncall"), json!({"duration": "ten minutes"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "INVALID_ARGUMENT");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("duration 'ten minutes' has unknown unit"),
        "{body}"
    );
    let (_, body) = api
        .post(&path, &token("oncall"), json!({"duration": "2h"}))
        .await;
    assert_eq!(
        body["message"],
        "duration may only shorten the requested 900s"
    );
    let (_, body) = api
        .post(&path, &token("oncall"), json!({"maxUsses": 1}))
        .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `maxUsses`"),
        "{body}"
    );
    let (status, body) = send(
        api.request(reqwest::Method::POST, &path, &token("oncall"))
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("application/json"));
    let (status, body) = api
        .post(
            "/ui/api/elevations/nope/approve",
            &token("oncall"),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );

    // oncall approves: 10 minutes, 2 uses.
    let (status, body) = api
        .post(
            &path,
            &token("oncall"),
            json!({"duration": "10m", "maxUses": 2, "comment": "go"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "APPROVED");
    assert_eq!(body["resolvedBy"], "oncall");
    assert_eq!(body["comment"], "go");
    let answer = waiting.await.unwrap().expect("the agent's call returns");
    assert_eq!(answer.state(), pb::ElevationState::Approved);
    let grant = answer.grant.expect("a grant");
    let lasts = grant.expires_at.unwrap().seconds - grant.created_at.unwrap().seconds;
    assert!((599..=600).contains(&lasts), "{lasts}");
    assert_eq!(grant.max_uses, 2);
    // Resolved: approving again is FAILED_PRECONDITION, as over gRPC.
    let (status, body) = api.post(&path, &token("oncall"), json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("FAILED_PRECONDITION"))
    );

    // The grant, listed, then revoked by someone allowed to.
    let (_, body) = api.get("/ui/api/grants", &token("oncall")).await;
    assert_eq!(body["grants"][0]["id"], grant.id.as_str());
    assert_eq!(body["grants"][0]["onBehalfOf"], "oncall");
    assert!(body["grants"][0]["expiresInSeconds"].as_u64().unwrap() <= 600);
    let (_, body) = api.get("/ui/api/grants", &token("outsider")).await;
    assert_eq!(body["grants"], json!([]));
    let revoke = format!("/ui/api/grants/{}/revoke", grant.id);
    let (status, body) = api.post(&revoke, &token("outsider"), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .ends_with("so may not revoke its grants"));
    let (status, body) = api
        .post(&revoke, &token("oncall"), json!({"comment": "done"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "ENDED");
    assert_eq!(body["endedReason"], "revoked by oncall: done");
    let (_, body) = api.get("/ui/api/grants", &token("oncall")).await;
    assert_eq!(body["grants"], json!([]));

    // Deny: rule (a) only; the history lists it first.
    let waiting = spawn_request(&s, ask("agent-p", DELETE, RG, "clean up"));
    let d = pending(&s, "agent-p", DELETE).await;
    let deny = format!("/ui/api/elevations/{}/deny", d.id);
    let (status, _) = api.post(&deny, &token("outsider"), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = api
        .post(&deny, &token("viewer"), json!({"comment": "not today"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "DENIED");
    assert_eq!(
        waiting.await.unwrap().unwrap().state(),
        pb::ElevationState::Denied
    );
    let (_, body) = api
        .get("/ui/api/elevations?state=resolved", &token("oncall"))
        .await;
    let states: Vec<&str> = body["elevations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["DENIED", "APPROVED"]);
    let (status, body) = api
        .get("/ui/api/elevations?state=maybe", &token("oncall"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("pending, resolved, all"));
    s.stop().await;
}

/// Reads Server-Sent Events until one named `name` whose data passes `want`.
async fn next_event(
    response: &mut reqwest::Response,
    buffer: &mut String,
    name: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let read = async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = None;
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str::<Value>(v).expect("JSON data"));
                    }
                }
                if let Some(data) = data {
                    if event == name && want(&data) {
                        return data;
                    }
                }
            }
            let chunk = response
                .chunk()
                .await
                .expect("the stream stays open")
                .expect("the stream does not end");
            buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap_or_else(|_| panic!("no {name} event arrived"))
}

#[tokio::test]
async fn the_event_stream_pushes_new_elevations_and_their_resolutions() {
    let s = TestServer::start(&snapshot()).await;
    let api = Api::new(&s);
    // One elevation pending before the stream opens: it comes first.
    let before = spawn_request(&s, ask("agent-p", DELETE, RG, "listed first"));
    let first = pending(&s, "agent-p", DELETE).await;

    let mut stream = api
        .request(reqwest::Method::GET, "/ui/api/events", &token("oncall"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut buffer = String::new();
    let initial = next_event(&mut stream, &mut buffer, "elevation", |_| true).await;
    assert_eq!(initial["id"], first.id.as_str());
    next_event(&mut stream, &mut buffer, "ready", |_| true).await;

    // The outsider's stream lists nothing: the same visibility.
    let mut outsider = api
        .request(reqwest::Method::GET, "/ui/api/events", &token("outsider"))
        .send()
        .await
        .unwrap();
    let mut outsider_buffer = String::new();
    let ready = next_event(&mut outsider, &mut outsider_buffer, "ready", |_| true).await;
    assert_eq!(ready, json!({}));
    assert!(!outsider_buffer.contains("event: elevation"));

    // Filed after the stream opened: pushed as it happens, with its preview.
    let waiting = spawn_request(&s, ask("agent-r", RESTART, RG, "filed live"));
    let live = next_event(&mut stream, &mut buffer, "elevation", |v| {
        v["action"] == RESTART
    })
    .await;
    assert_eq!(live["state"], "PENDING");
    assert_eq!(live["justification"], "filed live");
    assert_eq!(live["preview"]["resourcesUnderScope"], 2);
    assert_eq!(live["viewer"]["mayApprove"], true);

    let (status, _) = api
        .post(
            &format!("/ui/api/elevations/{}/deny", live["id"].as_str().unwrap()),
            &token("oncall"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let resolved = next_event(&mut stream, &mut buffer, "elevation", |v| {
        v["id"] == live["id"]
    })
    .await;
    assert_eq!(resolved["state"], "DENIED");
    assert_eq!(resolved["resolvedBy"], "oncall");
    assert!(
        resolved.get("preview").is_none(),
        "only pending elevations carry a preview"
    );
    assert_eq!(
        waiting.await.unwrap().unwrap().state(),
        pb::ElevationState::Denied
    );

    // A stream without credentials never opens.
    let (status, _) = send(
        api.http
            .get(format!("{}/ui/api/events", api.base))
            .header("x-rampart-ui", "1"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Stopping the server ends open streams (shutdown does not wait on them).
    s.stop().await;
    let _ = before.await;
}

#[tokio::test]
async fn over_mutual_tls_the_client_certificate_is_the_viewer() {
    let pki = pki::Pki::new();
    let engine = Arc::new(rampart::engine::Engine::new(
        rampart::snapshot::load_str(&snapshot(), "tls").unwrap(),
    ));
    let broker = rampart::elevation::Broker::start(engine, Store::in_memory().unwrap()).unwrap();
    let config = rampart::server::ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        health_listen: None,
        tokens: rampart::server::Tokens::from_plain(&[("s3cret", "viewer", false)])
            .with_subjects(&[("CN=oncall-laptop", "oncall", false)]),
        insecure: false,
        audit: None,
        audit_decisions_sample: 0.0,
        uds: None,
        tls: Some(rampart::server::TlsFiles {
            cert_pem: pki.server.cert.clone().into_bytes(),
            key_pem: pki.server.key.clone().into_bytes(),
            admin_client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
            ..Default::default()
        }),
        ext_authz: Default::default(),
        authorizer_tokens: None,
        connections: Default::default(),
        caps: Default::default(),
    };
    let running = rampart::server::start(config, broker, None).await.unwrap();
    let base = format!("https://localhost:{}", running.admin_addr.port());
    let client = |identity: Option<&pki::Pem>| {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
            .resolve("localhost", running.admin_addr);
        if let Some(id) = identity {
            b = b.identity(
                reqwest::Identity::from_pem(format!("{}{}", id.cert, id.key).as_bytes()).unwrap(),
            );
        }
        b.build().unwrap()
    };
    let me = |c: reqwest::Client, token: Option<&'static str>| {
        let url = format!("{base}/ui/api/me");
        async move {
            let mut r = c.get(url).header("x-rampart-ui", "1");
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            send(r).await
        }
    };
    // The certificate alone signs the viewer in.
    let laptop = pki.client("oncall-laptop");
    let (status, body) = me(client(Some(&laptop)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["principal"], "oncall");
    // A token, when given, is the caller (as for gRPC).
    let (_, body) = me(client(Some(&laptop)), Some("s3cret")).await;
    assert_eq!(body["principal"], "viewer");
    // A valid certificate that maps to nobody, or none: not a viewer.
    let (status, _) = me(client(Some(&pki.client("somebody-else"))), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = me(client(None), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The certificate is presented to any site, like a cookie: the page's
    // header is what keeps another site's form from acting as the holder.
    let (status, _) = send(client(Some(&laptop)).get(format!("{base}/ui/api/me"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The page is served over the same TLS.
    let page = client(None)
        .get(format!("{base}/ui/approvals"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    running.shutdown().await.unwrap();
}
