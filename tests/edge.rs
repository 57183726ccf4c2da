//! The network edge, in-process: connection caps that keep probes and the
//! admin listener answering under a flood, the handshake, idle and
//! keepalive deadlines seen on the wire, Authorizer tokens, each listener
//! serving (and reflecting) what it is for, and the start-up checks that
//! refuse or warn about a configuration that would silently misbehave.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use common::{authed, request, Edge, TestServer, ADMIN_TOKEN, RULES, SUB1};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use rampart::cli::{Cli, Command, ServeArgs};
use rampart::daemon::{Daemon, Resources, StartError};
use rampart::proto::admin_client::AdminClient;
use rampart::proto::approvals_client::ApprovalsClient;
use rampart::proto::authorizer_client::AuthorizerClient;
use rampart::proto::{GetSnapshotStatusRequest, ListElevationsRequest};
use rampart::server::{AuthorizerTokens, ConnectionCaps, ConnectionSettings};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const ELEVATION: &str = include_str!("fixtures/elevation.yaml");
const READ: &str = "Microsoft.Compute/virtualMachines/read";
/// How long a test waits for something the server must do by itself.
const PATIENCE: Duration = Duration::from_secs(60);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

const HOUR: Duration = Duration::from_secs(3600);

/// Raises this process's open-file limit to at least `want` (soft up to
/// hard); false when the hard limit is lower.
fn raise_fd_limit(want: u64) -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return false;
        }
        if limit.rlim_cur >= want {
            return true;
        }
        if limit.rlim_max < want {
            return false;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
    }
}

async fn health(addr: SocketAddr) -> Result<ServingStatus, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = HealthClient::new(channel);
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status();
    Ok(status)
}

/// The HTTP/2 frame types the server sends until it closes the connection.
async fn frames_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("the server did not close the connection"),
        }
    }
    let mut types = Vec::new();
    let mut i = 0;
    while i + 9 <= bytes.len() {
        let length = (usize::from(bytes[i]) << 16)
            | (usize::from(bytes[i + 1]) << 8)
            | usize::from(bytes[i + 2]);
        types.push(bytes[i + 3]);
        i += 9 + length;
    }
    types
}

const GOAWAY: u8 = 7;
const SETTINGS_FRAME: u8 = 4;
const PING: u8 = 6;

fn settings(f: impl FnOnce(&mut ConnectionSettings)) -> ConnectionSettings {
    let mut s = ConnectionSettings {
        handshake_timeout: HOUR,
        idle_timeout: HOUR,
        keepalive_interval: HOUR,
        keepalive_timeout: HOUR,
    };
    f(&mut s);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_admin_answer_while_1100_idle_connections_flood_the_authorizer() {
    // The client ends and the server's ends live in this one process.
    if !raise_fd_limit(3000) {
        eprintln!("skipped: the open-file hard limit is below 3000 (ulimit -Hn)");
        return;
    }
    let caps = ConnectionCaps::default();
    let server = TestServer::with_edge(
        RULES,
        Edge {
            // Nothing times out during the test: only the cap is at work.
            connections: settings(|_| {}),
            caps,
            authorizer_tokens: None,
        },
    )
    .await;
    let running = server.running.as_ref().unwrap();
    let (authorizer, admin, health_addr) = (
        running.authorizer_addr,
        running.admin_addr,
        running.health_addr.unwrap(),
    );

    const FLOOD: usize = 1100;
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        let mut stream = TcpStream::connect(authorizer).await.expect("connect");
        // Each waits until the server closes it (reading what it sends).
        flood.spawn(async move {
            let mut chunk = [0u8; 256];
            while let Ok(1..) = stream.read(&mut chunk).await {}
        });
    }
    // The connections beyond the cap are closed at once, the others held.
    let beyond = FLOOD - caps.authorizer;
    for closed in 0..beyond {
        tokio::time::timeout(PATIENCE, flood.join_next())
            .await
            .unwrap_or_else(|_| {
                panic!("only {closed} of the {beyond} connections beyond the cap were closed")
            });
    }

    // Probes and operators get through on their own listeners.
    assert_eq!(health(health_addr).await.unwrap(), ServingStatus::Serving);
    let mut fresh_admin = AdminClient::connect(format!("http://{admin}"))
        .await
        .expect("the admin listener accepts");
    let status = fresh_admin
        .get_snapshot_status(authed(GetSnapshotStatusRequest {}, ADMIN_TOKEN))
        .await
        .expect("admin answers")
        .into_inner();
    assert_eq!(status.revision, "rules-1");
    // The Authorizer's own slots are full: a new client is turned away…
    let turned_away = AuthorizerClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{authorizer}"))
            .unwrap()
            .connect_lazy(),
    )
    .authorize(request("mg-reader", READ, SUB1, false))
    .await;
    assert!(turned_away.is_err(), "{turned_away:?}");

    // …until the flood goes away.
    flood.abort_all();
    while flood.join_next().await.is_some() {}
    let mut answered = None;
    for _ in 0..600 {
        let client = AuthorizerClient::connect(format!("http://{authorizer}")).await;
        if let Ok(mut client) = client {
            if let Ok(r) = client
                .authorize(request("mg-reader", READ, SUB1, false))
                .await
            {
                answered = Some(r.into_inner());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        answered
            .expect("the Authorizer answers once the flood is gone")
            .decision(),
        rampart::proto::Decision::Allow
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_says_nothing_is_closed_at_the_handshake_deadline() {
    let server = TestServer::with_edge(
        RULES,
        Edge {
            connections: settings(|s| s.handshake_timeout = Duration::from_millis(300)),
            ..Edge::default()
        },
    )
    .await;
    let running = server.running.as_ref().unwrap();
    for addr in [
        running.authorizer_addr,
        running.admin_addr,
        running.health_addr.unwrap(),
    ] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Closed with nothing but the server's own SETTINGS said.
        let frames = frames_until_closed(&mut silent).await;
        assert!(
            frames.iter().all(|&t| t == SETTINGS_FRAME),
            "{addr}: {frames:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_connection_without_calls_gets_goaway_at_the_idle_deadline() {
    let server = TestServer::with_edge(
        RULES,
        Edge {
            connections: settings(|s| {
                s.idle_timeout = Duration::from_millis(300);
                s.handshake_timeout = Duration::from_millis(500);
            }),
            ..Edge::default()
        },
    )
    .await;
    let addr = server.running.as_ref().unwrap().authorizer_addr;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(PREFACE).await.unwrap();
    idle.write_all(SETTINGS).await.unwrap();
    let frames = frames_until_closed(&mut idle).await;
    assert!(frames.contains(&GOAWAY), "frames: {frames:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_answers_keepalive_pings_is_closed() {
    let server = TestServer::with_edge(
        RULES,
        Edge {
            connections: settings(|s| {
                s.keepalive_interval = Duration::from_millis(200);
                s.keepalive_timeout = Duration::from_millis(200);
            }),
            ..Edge::default()
        },
    )
    .await;
    let addr = server.running.as_ref().unwrap().authorizer_addr;
    let mut deaf = TcpStream::connect(addr).await.unwrap();
    deaf.write_all(PREFACE).await.unwrap();
    deaf.write_all(SETTINGS).await.unwrap();
    let frames = frames_until_closed(&mut deaf).await;
    assert!(frames.contains(&PING), "frames: {frames:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_watch_stream_is_not_idle() {
    // The idle deadline closes a connection only without a call in flight:
    // a WatchElevations stream open across many idle periods still gets
    // its events.
    let server = TestServer::with_edge(
        ELEVATION,
        Edge {
            connections: settings(|s| {
                s.idle_timeout = Duration::from_millis(100);
                s.handshake_timeout = Duration::from_millis(200);
            }),
            ..Edge::default()
        },
    )
    .await;
    let running = server.running.as_ref().unwrap();
    let mut approvals = ApprovalsClient::connect(format!("http://{}", running.admin_addr))
        .await
        .unwrap();
    let mut watch = approvals
        .watch_elevations(authed(
            rampart::proto::WatchElevationsRequest::default(),
            &common::token("oncall"),
        ))
        .await
        .unwrap()
        .into_inner();
    // An idle raw connection is closed: at least one idle period has passed.
    let mut idle = TcpStream::connect(running.authorizer_addr).await.unwrap();
    idle.write_all(PREFACE).await.unwrap();
    idle.write_all(SETTINGS).await.unwrap();
    assert!(frames_until_closed(&mut idle).await.contains(&GOAWAY));
    // The watch still delivers.
    let broker = server.broker.clone();
    let filed = tokio::spawn(async move {
        broker
            .request(rampart::elevation::ElevationRequest {
                principal_id: "agent-r",
                action: "Microsoft.Compute/virtualMachines/restart/action",
                scope: "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app",
                data_action: false,
                justification: "watch test",
                requested_duration: None,
                wait_timeout: Some(Duration::from_secs(1)),
                attributes: Default::default(),
                ..Default::default()
            })
            .await
    });
    let event = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("an event")
        .expect("the stream is open")
        .expect("an event, not the end");
    assert!(event.elevation.is_some());
    let _ = filed.await;
    server.stop().await;
}

#[tokio::test]
async fn authorizer_tokens_guard_every_authorizer_call_but_not_health() {
    let server = TestServer::with_edge(
        RULES,
        Edge {
            authorizer_tokens: Some(AuthorizerTokens::from_plain(&["agent-pod-secret"])),
            ..Edge::default()
        },
    )
    .await;
    let running = server.running.as_ref().unwrap();
    let ask = || request("mg-reader", READ, SUB1, false);
    let refused = server.try_authorize(ask()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        refused.message(),
        "this Authorizer requires authorization: Bearer <token> (one of --authorizer-tokens)"
    );
    let mut client = server.authorizer.clone();
    let wrong = client.authorize(authed(ask(), "guess")).await.unwrap_err();
    assert_eq!(
        wrong.message(),
        "unknown token: not one of --authorizer-tokens"
    );
    // The scheme is case-insensitive (RFC 7235).
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let mut r = tonic::Request::new(ask());
        r.metadata_mut().insert(
            "authorization",
            format!("{scheme} agent-pod-secret").parse().unwrap(),
        );
        let answer = client
            .authorize(r)
            .await
            .unwrap_or_else(|s| panic!("{scheme}: {s}"));
        assert_eq!(
            answer.into_inner().decision(),
            rampart::proto::Decision::Allow
        );
    }
    // Filing an elevation needs the token too.
    let elevation = client
        .request_elevation(rampart::proto::RequestElevationRequest {
            principal_id: "mg-reader".into(),
            action: READ.into(),
            scope: SUB1.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(elevation.code(), Code::Unauthenticated);
    // Envoy's Check, served ahead of the router, reads the tokens itself.
    let mut envoy = AuthorizationClient::connect(format!("http://{}", running.authorizer_addr))
        .await
        .unwrap();
    let check = CheckRequest::default;
    let refused = envoy.check(check()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let wrong = envoy.check(authed(check(), "guess")).await.unwrap_err();
    assert_eq!(
        wrong.message(),
        "unknown token: not one of --authorizer-tokens"
    );
    envoy
        .check(authed(check(), "agent-pod-secret"))
        .await
        .expect("with the token, an answer");
    // Probes on the Authorizer's port need none.
    assert_eq!(
        health(running.authorizer_addr).await.unwrap(),
        ServingStatus::Serving
    );
    server.stop().await;
}

#[tokio::test]
async fn a_call_at_the_wrong_listener_names_the_listener_that_serves_it() {
    let server = TestServer::rules().await;
    let running = server.running.as_ref().unwrap();
    let (authorizer, admin, health) = (
        running.authorizer_addr,
        running.admin_addr,
        running.health_addr.unwrap(),
    );
    let mut approvals = ApprovalsClient::connect(format!("http://{authorizer}"))
        .await
        .unwrap();
    let status = approvals
        .list_elevations(authed(ListElevationsRequest::default(), ADMIN_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(
        status.message(),
        format!("rampart.v1.Approvals is not served on this listener (--listen); it is on the admin listener (--admin-listen {admin})")
    );
    for at in [admin, health] {
        let here = if at == admin {
            "--admin-listen"
        } else {
            "--health-listen"
        };
        let status = AuthorizerClient::connect(format!("http://{at}"))
            .await
            .unwrap()
            .authorize(request("mg-reader", READ, SUB1, false))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(
            status.message(),
            format!("rampart.v1.Authorizer is not served on this listener ({here}); it is on the Authorizer listener (--listen {authorizer})")
        );
    }
    let status = AdminClient::connect(format!("http://{health}"))
        .await
        .unwrap()
        .get_snapshot_status(GetSnapshotStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        status.message(),
        format!("rampart.v1.Admin is not served on this listener (--health-listen); it is on the admin listener (--admin-listen {admin})")
    );
    server.stop().await;
}

/// The services a listener's reflection (v1) lists, sorted.
async fn reflected(addr: SocketAddr) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

#[tokio::test]
async fn reflection_lists_what_each_listener_serves() {
    let server = TestServer::rules().await;
    let running = server.running.as_ref().unwrap();
    let common = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let expect = |own: &[&str]| {
        let mut all: Vec<String> = own.iter().chain(&common).map(|s| s.to_string()).collect();
        all.sort();
        all
    };
    assert_eq!(
        reflected(running.authorizer_addr).await,
        expect(&[
            "rampart.v1.Authorizer",
            "envoy.service.auth.v3.Authorization"
        ])
    );
    assert_eq!(
        reflected(running.admin_addr).await,
        expect(&["rampart.v1.Admin", "rampart.v1.Approvals"])
    );
    assert_eq!(reflected(running.health_addr.unwrap()).await, expect(&[]));
    server.stop().await;
}

// ---- start-up checks -------------------------------------------------

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

fn parse_error(extra: &[&str]) -> String {
    let mut argv = vec!["rampart", "serve"];
    argv.extend(extra);
    Cli::try_parse_from(argv).unwrap_err().to_string()
}

#[tokio::test]
async fn an_authorizer_beyond_loopback_without_tls_is_refused_unless_insecure() {
    let args = serve_args(&["--listen", "0.0.0.0:0"]);
    let e = Daemon::prepare(&args)
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .await
        .err()
        .expect("refused");
    assert!(matches!(e, StartError::AdminNotLoopback(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "--listen 0.0.0.0:0 is not a loopback address and has no TLS: anyone who reaches it could read decisions and file elevations in any agent's name, in the clear; give --tls-cert and --tls-key (and --authorizer-client-ca or --authorizer-tokens to say who may call), bind it to loopback (or use --uds), or pass --insecure to accept that"
    );
    let args = serve_args(&["--listen", "0.0.0.0:0", "--insecure"]);
    let running = Daemon::prepare(&args)
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .await
        .unwrap_or_else(|e| panic!("--insecure starts: {e}"));
    running.shutdown().await.unwrap();
}

/// A snapshot with a group, and a tokens file of `entries` (YAML lines).
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(tokens: &[(&str, &str)]) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = ELEVATION.replacen(
            "principals:\n",
            "principals:\n  - { id: sre-team, type: Group }\n",
            1,
        );
        std::fs::write(dir.path().join("snapshot.yaml"), snapshot).unwrap();
        let mut text = String::from("# approvers\n");
        for (token, principal) in tokens {
            let hash = hex::encode(Sha256::digest(token.as_bytes()));
            text.push_str(&format!("- sha256: {hash}\n  principal: {principal}\n"));
        }
        let path = dir.path().join("tokens.yaml");
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn args(&self, extra: &[&str]) -> ServeArgs {
        let (snapshot, tokens) = (self.path("snapshot.yaml"), self.path("tokens.yaml"));
        let mut all = vec!["--snapshot", &snapshot, "--tokens", &tokens];
        all.extend(extra);
        serve_args(&all)
    }
}

fn warnings(args: &ServeArgs) -> Vec<String> {
    match Resources::open(args) {
        Ok(r) => r.warnings,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_token_for_a_group_is_refused_naming_its_entry_and_line() {
    let files = Files::new(&[("a", "oncall"), ("b", "sre-team")]);
    let e = match Resources::open(&files.args(&[])) {
        Ok(_) => panic!("a group's token was accepted"),
        Err(e) => e,
    };
    assert_eq!(
        e.to_string(),
        format!(
            "cannot load the --tokens file: {}: entry 1 (line 4): principal 'sre-team' is a Group in the snapshot; a group's token would let any member approve, even their own elevation: give each member a token of their own",
            files.path("tokens.yaml")
        )
    );
}

#[test]
fn a_token_for_a_principal_the_snapshot_lacks_is_reported_at_start() {
    let files = Files::new(&[("a", "oncall"), ("b", "onclal")]);
    assert_eq!(
        warnings(&files.args(&[])),
        [format!(
            "{}: entry 1 (line 4): principal 'onclal' is not in the snapshot (revision elevation-1); its token authenticates but may approve nothing until the snapshot names it",
            files.path("tokens.yaml")
        )]
    );
}

#[test]
fn a_tokens_file_others_can_read_is_reported_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let files = Files::new(&[("a", "oncall")]);
    let path = files.path("tokens.yaml");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        warnings(&files.args(&[])),
        [format!("{path} is readable or writable by its group or others (mode 0644): token hashes of short tokens can be brute-forced; chmod 600 {path}")]
    );
}

#[test]
fn a_decision_sample_without_an_audit_log_is_reported_at_start() {
    let files = Files::new(&[("a", "oncall")]);
    assert_eq!(
        warnings(&files.args(&["--audit-decisions-sample", "0.5"])),
        ["--audit-decisions-sample 0.5 has no effect without --audit-log: give --audit-log FILE to record decisions"]
    );
    let audit = files.path("audit.jsonl");
    assert!(
        warnings(&files.args(&["--audit-decisions-sample", "0.5", "--audit-log", &audit]))
            .is_empty()
    );
}

#[test]
fn listen_addresses_may_be_host_names() {
    let args = serve_args(&["--listen", "localhost:0", "--admin-listen", "localhost:0"]);
    assert!(args.listen.ip().is_loopback(), "{}", args.listen);
    assert!(args.admin_listen.ip().is_loopback());
    let e = parse_error(&["--listen", "localhost"]);
    assert!(
        e.contains("'localhost' has no port: give IP:PORT or HOST:PORT, e.g. 127.0.0.1:50051"),
        "{e}"
    );
    let e = parse_error(&["--health-listen", "localhost:http2"]);
    assert!(e.contains("'http2' is not a port number"), "{e}");
    let e = parse_error(&["--idle-timeout", "0s"]);
    assert!(e.contains("'0s' must be longer than zero"), "{e}");
    let e = parse_error(&["--admin-listen", "no-such-host.invalid:50052"]);
    assert!(
        e.contains("cannot resolve 'no-such-host.invalid'")
            && e.contains("give an IP address instead, e.g. 127.0.0.1:50052"),
        "{e}"
    );
}
