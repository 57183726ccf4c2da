//! The tamper-evident audit log, end to end with the real binary: a key
//! from `rampart audit keygen`, a server writing a chained, signed log
//! across a rotation and a restart, and `rampart audit verify` naming
//! exactly what was done to copies of it, with its exit codes.

mod common;

#[path = "common/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use process::ServerProcess;
use rampart::proto::authorizer_client::AuthorizerClient;

const READ: &str = "Microsoft.Compute/virtualMachines/read";

fn rampart(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .expect("run rampart");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn verify(files: &[&Path], key: &Path) -> (i32, String) {
    let mut args = vec!["audit", "verify", "--key", key.to_str().unwrap()];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let (code, out, err) = rampart(&args);
    assert!(code == 0 || !out.is_empty(), "no report: {err}");
    (code, out)
}

/// A server writing every decision to `log`, with a checkpoint every 4
/// records (and no timed ones during the test).
fn serve(log: &Path, key: &Path) -> ServerProcess {
    ServerProcess::start(&[
        "--audit-log",
        log.to_str().unwrap(),
        "--audit-decisions-sample",
        "1",
        "--audit-signing-key",
        key.to_str().unwrap(),
        "--audit-checkpoint-records",
        "4",
        "--audit-checkpoint-interval",
        "1h",
    ])
}

/// `n` Authorize calls, each one audit line.
fn decide(server: &ServerProcess, n: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = AuthorizerClient::connect(format!("http://{}", server.authorizer))
            .await
            .unwrap();
        for k in 0..n {
            let principal = format!("agent-{k}");
            client
                .authorize(common::request(&principal, READ, common::SUB1, false))
                .await
                .unwrap();
        }
    });
}

/// SIGTERM, as Kubernetes stops a pod, and the exit.
fn stop(mut server: ServerProcess) {
    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server
        .wait_exit(Duration::from_secs(20))
        .expect("rampart exits on SIGTERM");
    assert!(exit.success(), "{exit:?}");
}

fn events(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["event"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Writes `lines` as a log file named `name` beside `dir`.
fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_real_log_verifies_and_every_kind_of_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit-key.pem");
    let public = dir.path().join("audit-key.pem.pub");
    let (code, out, err) = rampart(&["audit", "keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("key id "), "{out}");
    let log = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");

    // Three decisions, then logrotate moves the file away: rampart seals
    // it and begins a new one.
    let server = serve(&log, &key);
    decide(&server, 3);
    std::fs::rename(&log, &rotated).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.exists() {
        assert!(
            Instant::now() < deadline,
            "rampart did not follow the rotation"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    decide(&server, 2);
    stop(server);
    // A restart continues the chain in the same file.
    let server = serve(&log, &key);
    decide(&server, 1);
    stop(server);

    assert_eq!(
        events(&rotated),
        [
            "audit.file",
            "decision",
            "decision",
            "decision",
            "audit.checkpoint",
            "audit.checkpoint"
        ]
    );
    assert_eq!(
        events(&log),
        [
            "audit.file",
            "decision",
            "decision",
            "audit.checkpoint",
            "decision",
            "audit.checkpoint"
        ]
    );
    let (r, l) = (rotated.display(), log.display());
    let (code, out) = verify(&[&rotated, &log], &public);
    assert_eq!(
        out,
        format!("ok: seq 1–12 in 2 files, 4 signed checkpoint(s), sealed by the closing checkpoint at {l} line 6 (seq 12)\n")
    );
    assert_eq!(code, 0);
    // The current file alone: sealed, and it says where it begins.
    let (code, out) = verify(&[&log], &public);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("continues an earlier file"), "{out}");
    // Files in the wrong order.
    let (code, out) = verify(&[&log, &rotated], &public);
    assert_eq!(
        (code, out.as_str()),
        (
            1,
            format!("TAMPERED: {r} line 1 (seq 1): inserted (not part of the chain here)\n")
                .as_str()
        )
    );
    let original = lines(&rotated);
    let tampered = |name: &str, edit: &dyn Fn(&mut Vec<String>)| {
        let mut copy = original.clone();
        edit(&mut copy);
        let path = write(dir.path(), name, &copy);
        let (code, out) = verify(&[&path], &public);
        (code, out, path)
    };

    // Modified: one principal changed.
    let (code, out, p) = tampered("modified.jsonl", &|l| {
        l[2] = l[2].replace("agent-1", "agent-9")
    });
    let p = p.display();
    assert_eq!(
        (code, out),
        (1, format!("TAMPERED: {p} line 3 (seq 3): modified\n"))
    );

    // Deleted: one record gone.
    let (code, out, p) = tampered("deleted.jsonl", &|l| {
        l.remove(2);
    });
    let p = p.display();
    assert_eq!(
        (code, out),
        (
            1,
            format!("TAMPERED: record seq 3 deleted after {p} line 2 (seq 2)\n")
        )
    );

    // Inserted: a copy of an earlier record replayed.
    let (code, out, p) = tampered("inserted.jsonl", &|l| {
        let copy = l[1].clone();
        l.insert(3, copy);
    });
    let p = p.display();
    assert_eq!(
        (code, out),
        (
            1,
            format!("TAMPERED: {p} line 4 (seq 2): inserted (not part of the chain here)\n")
        )
    );

    // Reordered: two records swapped.
    let (code, out, p) = tampered("reordered.jsonl", &|l| l.swap(2, 3));
    let p = p.display();
    assert_eq!(
        (code, out),
        (
            1,
            format!(
                "TAMPERED: {p} line 3 (seq 4): reordered (seq 3 should come here; it is at {p} line 4 (seq 3))\n"
            )
        )
    );

    // Truncated: the closing checkpoint and a record before it cut off.
    let (code, out, p) = tampered("truncated.jsonl", &|l| l.truncate(3));
    let p = p.display();
    assert_eq!(
        (code, out),
        (
            3,
            format!(
                "UNSEALED: {p} line 1 (seq 1) to {p} line 3 (seq 3) are unsigned, with no checkpoint before them: they may have been rewritten, and records after them removed (seq 1–3 in 1 file)\n"
            )
        )
    );

    // Rewritten with a consistent chain: the attacker cannot sign.
    let (code, out, p) = tampered("rechained.jsonl", &|l| {
        let mut prev = hex_sha256(&l[1]);
        for line in l.iter_mut().skip(2) {
            let body = line
                .split(",\"prev\":")
                .next()
                .unwrap()
                .replace("agent-1", "agent-9");
            let tail = line
                .split_once(",\"signature\":")
                .map(|(_, s)| s.to_owned());
            *line = match tail {
                Some(sig) => format!("{body},\"prev\":\"{prev}\",\"signature\":{sig}"),
                None => format!("{body},\"prev\":\"{prev}\"}}"),
            };
            prev = hex_sha256(line);
        }
    });
    let p = p.display();
    assert_eq!(
        (code, out),
        (
            1,
            format!("TAMPERED: {p} line 5 (seq 5): checkpoint signature does not verify: a record before it was rewritten\n")
        )
    );

    // Another key, and a private key given where the public one goes.
    let other = dir.path().join("other.pem");
    rampart(&["audit", "keygen", "--out", other.to_str().unwrap()]);
    let (code, out) = verify(&[&rotated], &dir.path().join("other.pem.pub"));
    assert_eq!(code, 1);
    assert!(out.contains("signed by another key"), "{out}");
    let (code, _, err) = rampart(&[
        "audit",
        "verify",
        "--key",
        key.to_str().unwrap(),
        rotated.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("is a private key"), "{err}");
}

#[test]
fn a_bad_signing_key_stops_the_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "not a key").unwrap();
    let log = dir.path().join("audit.jsonl");
    let (code, _, err) = rampart(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--audit-log",
        log.to_str().unwrap(),
        "--audit-signing-key",
        key.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--audit-signing-key") && err.contains("rampart audit keygen"),
        "{err}"
    );
}

fn hex_sha256(line: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(line.as_bytes()))
}
