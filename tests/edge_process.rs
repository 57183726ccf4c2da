//! The network edge on the real binary: SIGHUP reopens the audit log and
//! re-reads the tokens, the Unix socket and the audit log get their modes
//! whatever the umask, start-up warnings reach the log, and every TLS
//! mistake is named with its file and fix on both sides (server log and
//! CLI). Certificates are made in the test (rcgen).

mod common;
#[path = "common/pki.rs"]
mod pki;
#[path = "common/process.rs"]
mod process;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{authed, request, SUB1};
use process::ServerProcess;
use rampart::proto::approvals_client::ApprovalsClient;
use rampart::proto::authorizer_client::AuthorizerClient;
use rampart::proto::ListElevationsRequest;
use sha2::{Digest, Sha256};
use tonic::Code;

const ELEVATION: &str = include_str!("fixtures/elevation.yaml");
const PATIENCE: Duration = Duration::from_secs(60);

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        files.write("snapshot.yaml", ELEVATION);
        files
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// A tokens file: each (token, principal).
    fn tokens(&self, entries: &[(&str, &str)]) -> String {
        let text: String = entries
            .iter()
            .map(|(token, principal)| {
                let hash = hex::encode(Sha256::digest(token.as_bytes()));
                format!("- {{sha256: {hash}, principal: {principal}}}\n")
            })
            .collect();
        self.write("tokens.yaml", &text)
    }
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn list_with(admin: std::net::SocketAddr, token: &str) -> Result<(), tonic::Status> {
    ApprovalsClient::connect(format!("http://{admin}"))
        .await
        .unwrap()
        .list_elevations(authed(ListElevationsRequest::default(), token))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn sighup_reopens_the_audit_log_and_rereads_the_tokens() {
    let files = Files::new();
    files.tokens(&[("old-oncall", "oncall")]);
    let audit = files.path("audit.jsonl");
    let (snapshot, tokens) = (files.path("snapshot.yaml"), files.path("tokens.yaml"));
    let mut server = ServerProcess::start_with_umask(
        "000",
        &[
            "--snapshot",
            &snapshot,
            "--tokens",
            &tokens,
            "--audit-log",
            &audit,
            "--audit-decisions-sample",
            "1",
            "--watch",
            "false",
        ],
    );
    assert_eq!(
        mode(&audit),
        0o600,
        "the audit log is private under umask 000"
    );
    list_with(server.admin, "old-oncall").await.unwrap();

    // Log rotation moves the file away; the tokens change.
    std::fs::rename(&audit, files.path("audit.jsonl.1")).unwrap();
    files.tokens(&[("new-oncall", "oncall")]);
    // SAFETY: kill sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) }, 0);
    server
        .wait_for_line("--audit-log", PATIENCE)
        .expect("the audit log is reopened");
    server
        .wait_for_line(&format!("--tokens {tokens} reloaded"), PATIENCE)
        .expect("the tokens are re-read");

    let answer = AuthorizerClient::connect(format!("http://{}", server.authorizer))
        .await
        .unwrap()
        .authorize(request(
            "oncall",
            "Microsoft.Compute/virtualMachines/read",
            SUB1,
            false,
        ))
        .await
        .unwrap();
    drop(answer);
    let written = std::fs::read_to_string(&audit).expect("a new audit log at the same path");
    assert!(written.contains("\"event\":\"decision\""), "{written}");
    assert_eq!(mode(&audit), 0o600);

    assert_eq!(
        list_with(server.admin, "old-oncall")
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    list_with(server.admin, "new-oncall").await.unwrap();
}

#[test]
fn the_unix_socket_is_0660_and_start_up_warnings_are_logged() {
    let files = Files::new();
    files.tokens(&[("t", "onclal")]);
    let tokens = files.path("tokens.yaml");
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let socket = files.path("rampart.sock");
    let snapshot = files.path("snapshot.yaml");
    let server = ServerProcess::start_with_umask(
        "000",
        &[
            "--snapshot",
            &snapshot,
            "--tokens",
            &tokens,
            "--uds",
            &socket,
            "--audit-decisions-sample",
            "0.1",
            "--watch",
            "false",
        ],
    );
    assert_eq!(mode(&socket), 0o660, "the socket under umask 000");
    let log = server.start_log().join("\n");
    for expected in [
        format!("{tokens}: entry 0 (line 1): principal 'onclal' is not in the snapshot (revision elevation-1); its token authenticates but may approve nothing until the snapshot names it"),
        format!("{tokens} is readable or writable by its group or others (mode 0644): token hashes of short tokens can be brute-forced; chmod 600 {tokens}"),
        "--audit-decisions-sample 0.1 has no effect without --audit-log: give --audit-log FILE to record decisions".to_owned(),
    ] {
        assert!(log.contains(&expected), "missing «{expected}» in:\n{log}");
    }
    // Nothing else is left beside the socket.
    let left: Vec<_> = std::fs::read_dir(files.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".rampart"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Runs `rampart ARGS` with `RAMPART_TOKEN`.
fn rampart(args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rampart"));
    cmd.args(args)
        .env_remove("RAMPART_TOKEN")
        .env_remove("RAMPART_ADMIN_ADDR");
    if let Some(t) = token {
        cmd.env("RAMPART_TOKEN", t);
    }
    cmd.output().expect("run rampart")
}

fn stderr(o: &Output) -> String {
    assert!(!o.status.success(), "succeeded: {o:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn tls_mistakes_name_the_file_and_the_fix_on_both_sides() {
    let files = Files::new();
    let pki = pki::Pki::new();
    let other = pki::Pki::named("another CA");
    let cert = files.write("server.pem", &pki.server.cert);
    let key = files.write("server.key", &pki.server.key);
    let ca = files.write("ca.pem", &pki.ca_pem);
    let other_ca = files.write("other-ca.pem", &other.ca_pem);
    let stranger = other.client("oncall-laptop");
    let stranger_cert = files.write("stranger.pem", &stranger.cert);
    let stranger_key = files.write("stranger.key", &stranger.key);
    let client = pki.client("oncall-laptop");
    let client_cert = files.write("client.pem", &client.cert);
    let client_key = files.write("client.key", &client.key);
    let v1_cert = files.write("client-v1.pem", &pki::version_1(&client.cert));
    files.tokens(&[("s3cret", "oncall")]);
    let (snapshot, tokens) = (files.path("snapshot.yaml"), files.path("tokens.yaml"));
    let mut server = ServerProcess::start(&[
        "--snapshot",
        &snapshot,
        "--tokens",
        &tokens,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--admin-client-ca",
        &ca,
        "--watch",
        "false",
    ]);
    let addr = format!("https://localhost:{}", server.admin.port());
    let list = |extra: &[&str]| {
        let mut args = vec!["elevations", "list", "--admin-addr", &addr];
        args.extend(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |extra: &[&str], token| {
        let args = list(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        rampart(&refs, token)
    };

    // A client that does not trust the server's CA.
    let out = stderr(&run(&["--ca", &other_ca], Some("s3cret")));
    assert!(
        out.contains(&format!("the server's certificate is not signed by --ca {other_ca}; give --ca the CA that signed it")),
        "{out}"
    );
    let line = server
        .wait_for_line("TLS handshake failed", PATIENCE)
        .expect("the server logs the refused handshake");
    assert!(
        line.contains(&format!(
            "the client refused rampart's certificate (--tls-cert {cert})"
        )),
        "{line}"
    );

    // A client certificate from a CA the server does not know.
    let out = stderr(&run(
        &[
            "--ca",
            &ca,
            "--cert",
            &stranger_cert,
            "--key",
            &stranger_key,
        ],
        None,
    ));
    // The server's alert arrives, or (TLS 1.3) only the closed connection.
    assert!(
        out.contains(&format!("refused --cert {stranger_cert}"))
            && out.contains("not signed by the CA the server trusts for clients (--admin-client-ca); issue it from that CA"),
        "{out}"
    );
    let line = server
        .wait_for_line("TLS handshake failed", PATIENCE)
        .expect("the server logs the refused client certificate");
    assert!(
        line.contains(&format!("the client's certificate is not signed by --admin-client-ca {ca}: issue it from that CA")),
        "{line}"
    );

    // Files the CLI names before connecting.
    let out = stderr(&run(
        &["--ca", &ca, "--cert", &client_key, "--key", &client_cert],
        None,
    ));
    assert!(
        out.contains(&format!("--cert {client_key} holds a private key and --key {client_cert} a certificate: they are swapped; give the certificate to --cert and the key to --key")),
        "{out}"
    );
    let out = stderr(&run(
        &["--ca", &ca, "--cert", &client_cert, "--key", &stranger_key],
        None,
    ));
    assert!(
        out.contains(&format!("--key {stranger_key} does not match --cert {client_cert}: the certificate was issued for another key")),
        "{out}"
    );
    let out = stderr(&run(
        &["--ca", &ca, "--cert", &v1_cert, "--key", &client_key],
        None,
    ));
    assert!(
        out.contains(&format!("--cert {v1_cert} is an X.509 version 1 certificate, which TLS refuses; re-issue it as version 3 with extensions")),
        "{out}"
    );
    // The right files work.
    let ok = rampart(
        &list(&["--ca", &ca, "--cert", &client_cert, "--key", &client_key])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        Some("s3cret"),
    );
    assert!(ok.status.success(), "{ok:?}");
}

/// `rampart serve` with these TLS files: the message it exits with.
fn refused_to_serve(cert: &str, key: &str) -> String {
    let out = rampart(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
        None,
    );
    stderr(&out)
}

#[test]
fn the_server_refuses_swapped_mismatched_and_version_1_files_naming_them() {
    let files = Files::new();
    let pki = pki::Pki::new();
    let cert = files.write("server.pem", &pki.server.cert);
    let key = files.write("server.key", &pki.server.key);
    let other_key = files.write("other.key", &pki.client("x").key);
    let v1 = files.write("server-v1.pem", &pki::version_1(&pki.server.cert));
    let text = refused_to_serve(&key, &cert);
    assert!(
        text.contains(&format!("cannot set up TLS: --tls-cert {key} holds a private key and --tls-key {cert} a certificate: they are swapped; give the certificate to --tls-cert and the key to --tls-key")),
        "{text}"
    );
    let text = refused_to_serve(&cert, &other_key);
    assert!(
        text.contains(&format!("cannot set up TLS: --tls-key {other_key} does not match --tls-cert {cert}: the certificate was issued for another key")),
        "{text}"
    );
    let text = refused_to_serve(&v1, &key);
    assert!(
        text.contains(&format!("cannot set up TLS: --tls-cert {v1} is an X.509 version 1 certificate, which TLS refuses")),
        "{text}"
    );
    assert!(Path::new(&cert).exists());
}

#[tokio::test]
async fn a_new_snapshot_rereads_the_tokens_and_a_group_token_is_never_honoured() {
    use rampart::proto::admin_client::AdminClient;
    use rampart::proto::{ReloadOutcome, ReloadSnapshotRequest};
    let files = Files::new();
    let admin_tokens = |entries: &[(&str, &str)]| {
        let text: String = entries
            .iter()
            .map(|(token, principal)| {
                let hash = hex::encode(Sha256::digest(token.as_bytes()));
                format!("- {{sha256: {hash}, principal: {principal}, admin: true}}\n")
            })
            .collect();
        files.write("tokens.yaml", &text)
    };
    let tokens = admin_tokens(&[("old", "oncall")]);
    let snapshot = files.path("snapshot.yaml");
    let mut server = ServerProcess::start(&[
        "--snapshot",
        &snapshot,
        "--tokens",
        &tokens,
        "--watch",
        "false",
    ]);
    let reload = |token: &'static str| {
        let admin = server.admin;
        async move {
            AdminClient::connect(format!("http://{admin}"))
                .await
                .unwrap()
                .reload_snapshot(authed(ReloadSnapshotRequest {}, token))
                .await
                .map(|r| r.into_inner().outcome())
        }
    };
    // A new snapshot in which `oncall` is a group, and tokens for it.
    files.write(
        "snapshot.yaml",
        &ELEVATION
            .replacen("revision: elevation-1", "revision: elevation-2", 1)
            .replacen(
                "- { id: oncall, type: User }",
                "- { id: oncall, type: Group }",
                1,
            ),
    );
    admin_tokens(&[("new", "oncall")]);
    assert_eq!(reload("old").await.unwrap(), ReloadOutcome::Reloaded);
    let line = server
        .wait_for_line("not reloaded, the previous tokens stay", PATIENCE)
        .expect("the group's tokens are refused");
    assert!(
        line.contains("principal 'oncall' is a Group in the snapshot"),
        "{line}"
    );
    // Neither the old token (now a group's) nor the refused new one works.
    for token in ["old", "new"] {
        assert_eq!(
            list_with(server.admin, token).await.unwrap_err().code(),
            Code::Unauthenticated,
            "{token}"
        );
    }
}
