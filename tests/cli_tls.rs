//! `rampart elevations` (the binary) against admin listeners in plaintext,
//! TLS and mutual TLS: addresses with or without a scheme, connection
//! flags before or after the subcommand, a client certificate instead of a
//! token, times in RFC 3339, and the errors when something does not fit.
//! Certificates are made in the test (rcgen).

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use rampart::elevation::{Broker, Elevation, ElevationRequest, ElevationState, Store};
use rampart::server::{self, ServeConfig, TlsFiles, Tokens};

const SNAPSHOT: &str = include_str!("fixtures/elevation.yaml");
const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

/// Starts the server: TLS (with client certificates checked against the
/// test CA) when `pki` is given, else plaintext.
async fn serve(pki: Option<&pki::Pki>) -> (server::Running, Arc<Broker>) {
    let engine = Arc::new(rampart::engine::Engine::new(
        rampart::snapshot::load_str(SNAPSHOT, "cli").unwrap(),
    ));
    let broker = Broker::start(engine, Store::in_memory().unwrap()).unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        health_listen: None,
        tokens: Tokens::from_plain(&[("s3cret-oncall", "oncall", false)]).with_subjects(&[(
            "CN=oncall-laptop",
            "oncall",
            false,
        )]),
        insecure: false,
        audit: None,
        audit_decisions_sample: 0.0,
        uds: None,
        tls: pki.map(|pki| TlsFiles {
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
    let running = server::start(config, broker.clone(), None).await.unwrap();
    (running, broker)
}

/// Files an elevation for agent-r at `scope` in the background.
fn file_elevation(broker: &Arc<Broker>, scope: &str) -> tokio::task::JoinHandle<ElevationState> {
    let broker = broker.clone();
    let scope = scope.to_owned();
    tokio::spawn(async move {
        broker
            .request(ElevationRequest {
                principal_id: "agent-r",
                action: RESTART,
                scope: &scope,
                data_action: false,
                justification: "disk pressure\u{1b}[2J; a restart clears it",
                requested_duration: None,
                wait_timeout: None,
                attributes: BTreeMap::new(),
                ticket: "",
                exact: None,
            })
            .await
            .map(|e| e.state)
            .unwrap_or(ElevationState::Cancelled)
    })
}

async fn pending(broker: &Broker, scope: &str) -> Elevation {
    for _ in 0..1000 {
        if let Some(e) = broker
            .list()
            .into_iter()
            .find(|e| e.state == ElevationState::Pending && e.scope == scope)
        {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing pending at {scope}");
}

/// Runs `rampart` with `args`, and `RAMPART_TOKEN` when given.
async fn rampart(args: Vec<String>, token: Option<&str>) -> Output {
    let token = token.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rampart"));
        cmd.args(&args)
            .env_remove("RAMPART_TOKEN")
            .env_remove("RAMPART_ADMIN_ADDR");
        if let Some(t) = token {
            cmd.env("RAMPART_TOKEN", t);
        }
        cmd.output().expect("run rampart")
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An RFC 3339 UTC time after `key=` in `line`.
fn time_after(line: &str, key: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let start = line
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        + key.len()
        + 1;
    let text = line[start..].split_whitespace().next().unwrap();
    assert!(text.ends_with('Z'), "{text}");
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_token_then_with_a_client_certificate_alone() {
    let pki = pki::Pki::new();
    let files = Files {
        dir: tempfile::tempdir().unwrap(),
    };
    let ca = files.write("ca.pem", &pki.ca_pem);
    let laptop = pki.client("oncall-laptop");
    let cert = files.write("laptop.pem", &laptop.cert);
    let key = files.write("laptop.key", &laptop.key);
    let (running, broker) = serve(Some(&pki)).await;
    let addr = running.admin_addr.to_string();

    let vm1 = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1");
    let waiting = file_elevation(&broker, &vm1);
    let e = pending(&broker, &vm1).await;

    // HOST:PORT with --ca is https; the flags may follow the subcommand.
    let out = rampart(
        args(&["elevations", "list", "--admin-addr", &addr, "--ca", &ca]),
        Some("s3cret-oncall"),
    )
    .await;
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with(&e.id))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("PENDING") && line.contains("agent=reviewer"),
        "{line}"
    );
    let since = time_after(line, "since");
    let until = time_after(line, "until");
    assert_eq!((until - since).num_seconds(), 300, "{line}");
    assert!(line.contains("requested=900s"), "{line}");
    // The justification's escape sequence reaches the terminal escaped.
    assert!(
        line.contains("disk pressure\\u{1b}[2J;") && !line.contains('\u{1b}'),
        "{line}"
    );

    // An https:// URL, flags before the subcommand.
    let out = rampart(
        args(&[
            "elevations",
            "--admin-addr",
            &format!("https://localhost:{}", running.admin_addr.port()),
            "--ca",
            &ca,
            "list",
        ]),
        Some("s3cret-oncall"),
    )
    .await;
    assert!(stdout(&out).contains(&e.id));

    // Mutual TLS: the certificate is the approver; no token at all.
    let out = rampart(
        args(&[
            "elevations",
            "approve",
            &e.id,
            "--duration",
            "10m",
            "--admin-addr",
            &addr,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ]),
        None,
    )
    .await;
    let text = stdout(&out);
    assert!(
        text.contains("APPROVED") && text.contains("by oncall"),
        "{text}"
    );
    time_after(&text, "at");
    assert_eq!(waiting.await.unwrap(), ElevationState::Approved);
    let out = rampart(
        args(&[
            "elevations",
            "grants",
            "--admin-addr",
            &addr,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ]),
        None,
    )
    .await;
    let text = stdout(&out);
    let lasts = time_after(&text, "expires_at") - time_after(&text, "created_at");
    assert!((599..=600).contains(&lasts.num_seconds()), "{text}");
    let grant_id = text.split_whitespace().next().unwrap().to_owned();
    let out = rampart(
        args(&[
            "elevations",
            "revoke",
            &grant_id,
            "--admin-addr",
            &addr,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ]),
        None,
    )
    .await;
    let text = stdout(&out);
    assert!(
        text.contains("ENDED") && text.contains("ended: revoked by oncall"),
        "{text}"
    );
    time_after(&text, "ended_at");

    // What does not fit is said plainly.
    let no_ca = rampart(
        args(&[
            "elevations",
            "list",
            "--admin-addr",
            &format!("https://{addr}"),
        ]),
        Some("s3cret-oncall"),
    )
    .await;
    assert!(
        stderr(&no_ca).starts_with("rampart elevations: cannot reach https://"),
        "{}",
        stderr(&no_ca)
    );
    let plain = rampart(
        args(&[
            "elevations",
            "list",
            "--admin-addr",
            &format!("http://{addr}"),
            "--ca",
            &ca,
        ]),
        Some("s3cret-oncall"),
    )
    .await;
    assert!(stderr(&plain).contains("is plaintext, but --ca or --cert ask for TLS"));
    let no_token = rampart(
        args(&["elevations", "list", "--admin-addr", &addr, "--ca", &ca]),
        None,
    )
    .await;
    assert!(stderr(&no_token)
        .contains("set RAMPART_TOKEN or give --token-file (or --cert and --key for mutual TLS)"));
    let stranger = pki.client("somebody-else");
    let s_cert = files.write("stranger.pem", &stranger.cert);
    let s_key = files.write("stranger.key", &stranger.key);
    let refused = rampart(
        args(&[
            "elevations",
            "list",
            "--admin-addr",
            &addr,
            "--ca",
            &ca,
            "--cert",
            &s_cert,
            "--key",
            &s_key,
        ]),
        None,
    )
    .await;
    assert!(
        stderr(&refused).contains("UNAUTHENTICATED: missing authorization"),
        "{}",
        stderr(&refused)
    );
    let missing = rampart(
        args(&[
            "elevations",
            "list",
            "--admin-addr",
            &addr,
            "--ca",
            "/nonexistent/ca.pem",
        ]),
        Some("s3cret-oncall"),
    )
    .await;
    assert!(stderr(&missing).contains("cannot read --ca /nonexistent/ca.pem"));
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_without_a_scheme_and_with_a_token_file() {
    let files = Files {
        dir: tempfile::tempdir().unwrap(),
    };
    let token_file = files.write("token", "s3cret-oncall\n");
    let (running, broker) = serve(None).await;
    let addr: SocketAddr = running.admin_addr;
    let vm2 = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm2");
    let waiting = file_elevation(&broker, &vm2);
    let e = pending(&broker, &vm2).await;

    let out = rampart(
        args(&[
            "elevations",
            "deny",
            &e.id,
            "--comment",
            "not now",
            "--token-file",
            &token_file,
            "--admin-addr",
            &addr.to_string(),
        ]),
        None,
    )
    .await;
    let text = stdout(&out);
    assert!(
        text.contains("DENIED") && text.contains("by oncall"),
        "{text}"
    );
    assert_eq!(waiting.await.unwrap(), ElevationState::Denied);
    let out = rampart(
        args(&[
            "elevations",
            "--admin-addr",
            &format!("http://{addr}"),
            "list",
            "--all",
        ]),
        Some("s3cret-oncall"),
    )
    .await;
    let text = stdout(&out);
    assert!(text.contains(&e.id) && text.contains("DENIED"), "{text}");
    let _: PathBuf = files.dir.path().to_owned();
    running.shutdown().await.unwrap();
}
