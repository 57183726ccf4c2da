//! The daemon in-process, from the same flags `rampart serve` takes: it
//! serves, reloads its file, shuts down cancelling what is pending, and
//! every refusal to start names the flag to fix.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use rampart::cli::{Cli, Command, ServeArgs};
use rampart::daemon::{Daemon, RunningDaemon, StartError};
use rampart::elevation::{ElevationState, Store};
use rampart::proto::admin_client::AdminClient;
use rampart::proto::authorizer_client::AuthorizerClient;
use rampart::proto::{
    self as pb, Decision, GetSnapshotStatusRequest, Reason, ReloadOutcome, ReloadSnapshotRequest,
    RequestElevationRequest,
};
use sha2::{Digest, Sha256};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use common::{authed, request};

const SNAPSHOT: &str = include_str!("fixtures/elevation.yaml");
const VM: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const READ: &str = "Microsoft.Compute/virtualMachines/read";
const ADMIN_TOKEN: &str = "daemon-test-admin";

/// `rampart serve` flags as clap parses them; `--listen` and
/// `--admin-listen` default to ephemeral loopback ports here.
fn serve_args(extra: &[&str]) -> ServeArgs {
    let mut argv = vec!["rampart", "serve"];
    for flag in ["--listen", "--admin-listen"] {
        if !extra.contains(&flag) {
            argv.extend([flag, "127.0.0.1:0"]);
        }
    }
    argv.extend(extra);
    match Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}")) {
        Cli {
            command: Some(Command::Serve(args)),
            ..
        } => *args,
        other => panic!("not serve: {other:?}"),
    }
}

/// A snapshot file, a tokens file with one admin token, and a state dir.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snapshot.yaml"), SNAPSHOT).unwrap();
        let hash = hex::encode(Sha256::digest(ADMIN_TOKEN.as_bytes()));
        std::fs::write(
            dir.path().join("tokens.yaml"),
            format!("- {{sha256: {hash}, principal: admin, admin: true}}\n"),
        )
        .unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// Flags for a daemon on every listener, port 0 each.
    fn flags(&self) -> Vec<String> {
        [
            "--snapshot",
            &self.path("snapshot.yaml"),
            "--tokens",
            &self.path("tokens.yaml"),
            "--state-dir",
            &self.path("state"),
            "--health-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--watch",
            "false",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

async fn start(args: &ServeArgs) -> RunningDaemon {
    Daemon::prepare(args)
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn prepare_refused(args: &ServeArgs) -> StartError {
    match Daemon::prepare(args) {
        Ok(_) => panic!("prepared despite {args:?}"),
        Err(e) => e,
    }
}

async fn authorizer(addr: SocketAddr) -> AuthorizerClient<tonic::transport::Channel> {
    AuthorizerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// One line, naming the flag and the path or address at fault.
fn assert_names(e: &StartError, flag: &str, what: &str) {
    let text = e.to_string();
    assert!(text.contains(flag), "no {flag} in: {text}");
    assert!(text.contains(what), "no {what} in: {text}");
    assert!(!text.contains('\n'), "more than one line: {text}");
}

#[tokio::test]
async fn a_daemon_from_serve_flags_serves_authorize_health_and_metrics() {
    let files = Files::new();
    let flags = files.flags();
    let args = serve_args(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let running = start(&args).await;

    let mut client = authorizer(running.authorizer_addr).await;
    let allowed = client
        .authorize(request("oncall", READ, VM, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (allowed.decision(), allowed.reason()),
        (Decision::Allow, Reason::RoleAssignment)
    );
    let denied = client
        .authorize(request("reader-user", RESTART, VM, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.decision(), Decision::Deny);

    let health_addr = running.health_addr.expect("--health-listen was given");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{health_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "rampart.v1.Authorizer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);

    let metrics_addr = running.metrics_addr.expect("--metrics-listen was given");
    let scraped = scrape(metrics_addr).await;
    assert!(
        scraped.contains("rampart_snapshot_info{revision=\"elevation-1\"} 1"),
        "{scraped}"
    );

    running.shutdown().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(health_addr).await.is_err(),
        "the health listener still accepts after shutdown"
    );
}

async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn shutdown_cancels_a_pending_elevation_answers_its_caller_and_records_it() {
    let files = Files::new();
    let flags = files.flags();
    let args = serve_args(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let running = start(&args).await;
    let broker = running.broker.clone();
    let mut client = authorizer(running.authorizer_addr).await;
    let waiting = tokio::spawn(async move {
        client
            .request_elevation(RequestElevationRequest {
                principal_id: "agent-r".into(),
                action: RESTART.into(),
                scope: VM.into(),
                justification: "stuck".into(),
                ..Default::default()
            })
            .await
    });
    let id = loop {
        if let Some(e) = broker
            .list()
            .into_iter()
            .find(|e| e.state == ElevationState::Pending)
        {
            break e.id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    // What SIGTERM does in the binary: the shutdown future resolves.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(running.run_until(async {
        let _ = stopped.await;
    }));
    stop.send(()).unwrap();

    let answer = waiting
        .await
        .unwrap()
        .expect("answered, not dropped")
        .into_inner();
    assert_eq!(answer.id, id);
    assert_eq!(answer.state(), pb::ElevationState::Cancelled, "{answer:?}");
    serving.await.unwrap().expect("a clean shutdown");
    drop(broker);
    let (elevations, _) = Store::open(Path::new(&files.path("state")))
        .unwrap()
        .load()
        .unwrap();
    let stored = elevations.iter().find(|e| e.id == id).unwrap();
    assert_eq!(stored.state, ElevationState::Cancelled);
}

#[tokio::test]
async fn a_daemon_from_snapshot_reloads_that_file_for_an_admin_token_from_tokens() {
    let files = Files::new();
    let flags = files.flags();
    let args = serve_args(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let running = start(&args).await;
    let mut admin = AdminClient::connect(format!("http://{}", running.admin_addr))
        .await
        .unwrap();
    let refused = admin
        .reload_snapshot(authed(ReloadSnapshotRequest {}, "not-the-token"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    std::fs::write(
        files.path("snapshot.yaml"),
        SNAPSHOT.replace("revision: elevation-1", "revision: elevation-2"),
    )
    .unwrap();
    let r = admin
        .reload_snapshot(authed(ReloadSnapshotRequest {}, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.outcome(), r.revision.as_str()),
        (ReloadOutcome::Reloaded, "elevation-2")
    );
    let status = admin
        .get_snapshot_status(authed(GetSnapshotStatusRequest {}, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.revision, "elevation-2");
    running.shutdown().await.unwrap();
}

#[test]
fn a_missing_snapshot_file_names_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let e = prepare_refused(&serve_args(&["--snapshot", missing.to_str().unwrap()]));
    assert!(matches!(e, StartError::Snapshot { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "refusing to start: --snapshot {}",
            missing.display()
        )),
        "{text}"
    );
}

#[test]
fn an_unreadable_or_malformed_tokens_file_names_tokens() {
    let files = Files::new();
    // A directory cannot be read as a file, whoever runs the test.
    let e = prepare_refused(&serve_args(&["--tokens", &files.path("")]));
    assert!(matches!(e, StartError::Tokens { .. }), "{e:?}");
    assert_names(&e, "--tokens", files.dir.path().to_str().unwrap());

    std::fs::write(files.path("bad.yaml"), "- {sha256: nothex, principal: a}\n").unwrap();
    let e = prepare_refused(&serve_args(&["--tokens", &files.path("bad.yaml")]));
    assert!(matches!(e, StartError::Tokens { .. }), "{e:?}");
    assert_names(&e, "--tokens", "sha256 must be 64 hex digits");
}

#[test]
fn an_unreadable_tls_file_names_its_flag() {
    let files = Files::new();
    let present = files.path("snapshot.yaml");
    let missing = files.path("missing.pem");
    for (flag, args) in [
        (
            "--tls-cert",
            vec!["--tls-cert", &missing, "--tls-key", &present],
        ),
        (
            "--tls-key",
            vec!["--tls-cert", &present, "--tls-key", &missing],
        ),
        (
            "--admin-client-ca",
            vec![
                "--tls-cert",
                &present,
                "--tls-key",
                &present,
                "--admin-client-ca",
                &missing,
            ],
        ),
    ] {
        let e = prepare_refused(&serve_args(&args));
        assert!(matches!(e, StartError::Tls { .. }), "{e:?}");
        assert_names(&e, flag, &missing);
    }
}

#[tokio::test]
async fn tls_files_that_are_not_pem_are_refused_naming_the_tls_flags() {
    let files = Files::new();
    std::fs::write(files.path("cert.pem"), "not a certificate").unwrap();
    std::fs::write(files.path("key.pem"), "not a key").unwrap();
    let args = serve_args(&[
        "--tls-cert",
        &files.path("cert.pem"),
        "--tls-key",
        &files.path("key.pem"),
    ]);
    // Refused before anything is opened or bound.
    let e = prepare_refused(&args);
    assert!(matches!(e, StartError::TlsSetup(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot set up TLS: --tls-cert {} holds no PEM certificate; expected a '-----BEGIN CERTIFICATE-----' block",
            files.path("cert.pem")
        )
    );
}

#[test]
fn a_bad_audit_log_path_names_audit_log() {
    let files = Files::new();
    for path in [files.path("no-such-dir/audit.jsonl"), files.path("")] {
        let e = prepare_refused(&serve_args(&["--audit-log", &path]));
        assert!(matches!(e, StartError::AuditLog { .. }), "{e:?}");
        assert_names(&e, "--audit-log", path.trim_end_matches('/'));
    }
}

#[test]
fn a_state_dir_that_is_a_file_names_state_dir() {
    let files = Files::new();
    let file = files.path("snapshot.yaml");
    let e = prepare_refused(&serve_args(&["--state-dir", &file]));
    assert!(matches!(e, StartError::StateStore { .. }), "{e:?}");
    assert_names(&e, "--state-dir", &file);
}

#[tokio::test]
async fn a_port_in_use_names_the_flag_to_change() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for flag in [
        "--listen",
        "--admin-listen",
        "--health-listen",
        "--metrics-listen",
    ] {
        let args = serve_args(&[flag, &addr]);
        let daemon = Daemon::prepare(&args).unwrap_or_else(|e| panic!("{e}"));
        let e = daemon.run(std::future::pending()).await.unwrap_err();
        assert!(matches!(e, StartError::Listen { .. }), "{flag}: {e:?}");
        assert_names(&e, flag, &addr);
        assert!(
            e.to_string().ends_with(&format!("give another {flag}")),
            "{e}"
        );
    }
}

#[tokio::test]
async fn an_admin_listener_beyond_loopback_without_tls_is_refused() {
    let args = serve_args(&["--admin-listen", "0.0.0.0:0"]);
    let daemon = Daemon::prepare(&args).unwrap_or_else(|e| panic!("{e}"));
    let e = daemon.run(std::future::pending()).await.unwrap_err();
    assert!(matches!(e, StartError::AdminNotLoopback(_)), "{e:?}");
    assert_names(&e, "--admin-listen", "--insecure");
}
