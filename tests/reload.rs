//! Live reload against a running server (docs/operations.md#live-reload): a rewritten file, a
//! broken file, a kubelet-style ConfigMap symlink swap, Admin.ReloadSnapshot
//! and SIGHUP.

mod common;

#[path = "common/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{authed, request, ADMIN_TOKEN, RULES, SUB1};
use rampart::elevation::{Broker, Store};
use rampart::engine::Engine;
use rampart::proto::admin_client::AdminClient;
use rampart::proto::authorizer_client::AuthorizerClient;
use rampart::proto::{GetSnapshotStatusRequest, ReloadOutcome, ReloadSnapshotRequest};
use rampart::server::{self, Running, ServeConfig, Tokens};
use rampart::snapshot::reload::{ReloadWatch, Reloader, SETTLE};
use tonic::transport::Channel;

const READ: &str = "Microsoft.Compute/virtualMachines/read";

struct Served {
    running: Option<Running>,
    _watch: Option<ReloadWatch>,
    authorizer: AuthorizerClient<Channel>,
    admin: AdminClient<Channel>,
}

async fn serve(path: &Path, watch: bool) -> Served {
    serve_with(path, watch, Duration::from_secs(60), SETTLE).await
}

async fn serve_with(path: &Path, watch: bool, poll: Duration, settle: Duration) -> Served {
    let snapshot = rampart::snapshot::load_file(path).unwrap_or_else(|e| panic!("{e}"));
    let hash = snapshot.info.content_sha256.clone();
    let engine = Arc::new(Engine::new(snapshot));
    let broker = Broker::start(engine.clone(), Store::in_memory().unwrap()).unwrap();
    let b = broker.clone();
    let reloader = Arc::new(
        Reloader::new(path.to_path_buf(), Some(hash), move |loaded| match loaded {
            Ok(s) => b.swap_snapshot(s),
            Err(e) => engine.record_failure(e.to_string()),
        })
        .with_settle(settle),
    );
    let watch = watch.then(|| {
        reloader
            .watch(Duration::from_millis(50), poll)
            .expect("watch")
    });
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        health_listen: None,
        tokens: Tokens::from_plain(&[(ADMIN_TOKEN, "admin", true)]),
        insecure: false,
        audit: None,
        audit_decisions_sample: 0.0,
        tls: None,
        uds: None,
        ext_authz: Default::default(),
        authorizer_tokens: None,
        connections: Default::default(),
        caps: Default::default(),
    };
    let running = server::start(config, broker, Some(reloader)).await.unwrap();
    let authorizer = AuthorizerClient::connect(format!("http://{}", running.authorizer_addr))
        .await
        .unwrap();
    let admin = AdminClient::connect(format!("http://{}", running.admin_addr))
        .await
        .unwrap();
    Served {
        running: Some(running),
        _watch: watch,
        authorizer,
        admin,
    }
}

fn rules_with(revision: &str, mg_reader_role: &str) -> String {
    RULES
        .replace("revision: rules-1", &format!("revision: {revision}"))
        .replace(
            "principal: mg-reader\n    role: Reader",
            &format!("principal: mg-reader\n    role: {mg_reader_role}"),
        )
}

/// Asks until the answer comes from `revision` (bounded).
async fn wait_for_revision(s: &Served, revision: &str) -> rampart::proto::AuthorizeResponse {
    let mut last = None;
    for _ in 0..500 {
        let r = s
            .authorizer
            .clone()
            .authorize(request("mg-reader", READ, SUB1, false))
            .await
            .unwrap()
            .into_inner();
        if r.snapshot_revision == revision {
            return r;
        }
        last = Some(r.snapshot_revision);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("still serving {last:?}, not {revision}");
}

async fn last_error(s: &Served) -> String {
    s.admin
        .clone()
        .get_snapshot_status(authed(GetSnapshotStatusRequest {}, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .last_error
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_rewritten_file_serves_new_decisions_with_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.yaml");
    std::fs::write(&path, RULES).unwrap();
    let s = serve(&path, true).await;
    let before = s
        .authorizer
        .clone()
        .authorize(request("mg-reader", READ, SUB1, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.decision(), rampart::proto::Decision::Allow);
    write(&path, &rules_with("rules-2", "VM Restarter"));
    let after = wait_for_revision(&s, "rules-2").await;
    assert_eq!(after.decision(), rampart::proto::Decision::Deny);
    s.running.unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn a_broken_file_is_reported_and_the_last_good_snapshot_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.yaml");
    std::fs::write(&path, RULES).unwrap();
    let s = serve(&path, true).await;
    write(&path, &RULES.replace("role: Reader", "role: No Such Role"));
    let mut error = String::new();
    for _ in 0..500 {
        error = last_error(&s).await;
        if !error.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(error.contains("unknown role 'No Such Role'"), "{error}");
    let r = s
        .authorizer
        .clone()
        .authorize(request("mg-reader", READ, SUB1, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.snapshot_revision.as_str(), r.decision()),
        ("rules-1", rampart::proto::Decision::Allow)
    );
    // Fixed again: served, and the error clears.
    write(&path, &rules_with("rules-3", "Reader"));
    wait_for_revision(&s, "rules-3").await;
    assert!(last_error(&s).await.is_empty());
    s.running.unwrap().shutdown().await.unwrap();
}

/// Lays out a directory as the kubelet does for a ConfigMap volume:
/// `..<timestamp>/snapshot.yaml`, `..data -> ..<timestamp>`,
/// `snapshot.yaml -> ..data/snapshot.yaml`.
fn kubelet_write(dir: &Path, generation: u32, text: &str) {
    let versioned = dir.join(format!("..2026_11_25_{generation:04}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("snapshot.yaml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(versioned.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if generation > 1 {
        std::fs::remove_dir_all(dir.join(format!("..2026_11_25_{:04}", generation - 1))).unwrap();
    }
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    kubelet_write(dir.path(), 1, RULES);
    let path: PathBuf = dir.path().join("snapshot.yaml");
    std::os::unix::fs::symlink("..data/snapshot.yaml", &path).unwrap();
    let s = serve(&path, true).await;
    kubelet_write(dir.path(), 2, &rules_with("rules-swapped", "VM Restarter"));
    let r = wait_for_revision(&s, "rules-swapped").await;
    assert_eq!(r.decision(), rampart::proto::Decision::Deny);
    // And again: the watch survived the first swap.
    kubelet_write(dir.path(), 3, &rules_with("rules-swapped-again", "Reader"));
    wait_for_revision(&s, "rules-swapped-again").await;
    s.running.unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn reload_snapshot_reports_reloaded_unchanged_and_failed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.yaml");
    std::fs::write(&path, RULES).unwrap();
    let s = serve(&path, false).await;
    let reload = || {
        let mut admin = s.admin.clone();
        async move {
            admin
                .reload_snapshot(authed(ReloadSnapshotRequest {}, ADMIN_TOKEN))
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(reload().await.outcome(), ReloadOutcome::Unchanged);
    write(&path, &rules_with("rules-rpc", "Reader"));
    let r = reload().await;
    assert_eq!(
        (r.outcome(), r.revision.as_str()),
        (ReloadOutcome::Reloaded, "rules-rpc")
    );
    assert_eq!(reload().await.outcome(), ReloadOutcome::Unchanged);
    write(&path, "principals: [");
    let r = reload().await;
    assert_eq!(
        (r.outcome(), r.revision.as_str()),
        (ReloadOutcome::Failed, "rules-rpc")
    );
    assert!(!r.error.is_empty());
    assert!(!last_error(&s).await.is_empty());
    s.running.unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.yaml");
    std::fs::write(&path, RULES).unwrap();
    let server =
        process::ServerProcess::start(&["--snapshot", path.to_str().unwrap(), "--watch", "false"]);
    let mut client = AuthorizerClient::connect(format!("http://{}", server.authorizer))
        .await
        .unwrap();
    write(&path, &rules_with("rules-hup", "Reader"));
    let r = client
        .authorize(request("mg-reader", READ, SUB1, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.snapshot_revision, "rules-1",
        "no watch: nothing reloads by itself"
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut revision = String::new();
    for _ in 0..500 {
        revision = client
            .authorize(request("mg-reader", READ, SUB1, false))
            .await
            .unwrap()
            .into_inner()
            .snapshot_revision;
        if revision == "rules-hup" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(revision, "rules-hup");
}

/// A tenant whose deny assignment comes last: cut before it, the file is a
/// valid snapshot that allows what the whole file denies.
fn deny_last(revision: &str) -> String {
    format!(
        "revision: {revision}
subscriptions:
  - id: 11111111-1111-1111-1111-111111111111
principals:
  - {{ id: alice, type: User }}
roleAssignments:
  - {{ principal: alice, role: Contributor, scope: {SUB1} }}
denyAssignments:
  - id: no-deletes
    everyone: true
    scope: {SUB1}
    actions: [\"*/delete\"]
"
    )
}

#[tokio::test]
async fn a_file_written_in_place_is_never_served_half_written() {
    const DELETE: &str = "Microsoft.Compute/virtualMachines/delete";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.yaml");
    std::fs::write(&path, deny_last("whole-0")).unwrap();
    // A poll as often as the watch's debounce, and a settle far longer
    // than the writer's pause, so the half-written file is in reach of
    // both and only the settle keeps it out.
    let s = serve_with(
        &path,
        true,
        Duration::from_millis(50),
        Duration::from_secs(1),
    )
    .await;
    let ask = || {
        let mut client = s.authorizer.clone();
        async move {
            client
                .authorize(request("alice", DELETE, SUB1, false))
                .await
                .unwrap()
                .into_inner()
        }
    };
    for round in 1..=3 {
        let revision = format!("whole-{round}");
        let text = deny_last(&revision);
        let cut = text.find("denyAssignments").unwrap();
        let writer = {
            let (path, text) = (path.clone(), text.clone());
            std::thread::spawn(move || {
                use std::io::Write;
                // In place: truncate, write the valid prefix, pause with the
                // file open, then the rest.
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&path)
                    .unwrap();
                f.write_all(&text.as_bytes()[..cut]).unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(100));
                f.write_all(&text.as_bytes()[cut..]).unwrap();
            })
        };
        // Every answer until (and after) the new revision serves: never an
        // ALLOW, which only the half-written file would give.
        let mut served = false;
        for _ in 0..1000 {
            let r = ask().await;
            assert_eq!(
                r.decision(),
                rampart::proto::Decision::Deny,
                "revision {} allowed a delete: a half-written file was served",
                r.snapshot_revision
            );
            if r.snapshot_revision == revision {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        writer.join().unwrap();
        assert!(served, "{revision} was never served");
    }
    s.running.unwrap().shutdown().await.unwrap();
}
