#![allow(dead_code)]
//! Runs the built `rampart` binary as a server and learns its addresses
//! from its start-up log line.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct ServerProcess {
    child: Child,
    pub authorizer: SocketAddr,
    pub admin: SocketAddr,
    /// Every line of standard error, the start-up line included.
    log: Vec<String>,
    lines: std::sync::mpsc::Receiver<String>,
    /// Everything it wrote to stderr so far.
    all: Arc<Mutex<String>>,
}

impl ServerProcess {
    pub fn start(extra: &[&str]) -> ServerProcess {
        ServerProcess::spawn(Command::new(env!("CARGO_BIN_EXE_rampart")), extra)
    }

    /// Starts the server with these environment variables set.
    pub fn start_with_env(env: &[(&str, &str)], extra: &[&str]) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rampart"));
        command.envs(env.iter().copied());
        ServerProcess::spawn(command, extra)
    }

    /// Starts the server under `umask` (through `sh`, so the test process
    /// keeps its own).
    pub fn start_with_umask(umask: &str, extra: &[&str]) -> ServerProcess {
        let mut sh = Command::new("sh");
        sh.args([
            "-c",
            &format!("umask {umask} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_rampart"),
        ]);
        ServerProcess::spawn(sh, extra)
    }

    fn spawn(mut command: Command, extra: &[&str]) -> ServerProcess {
        let mut child = command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rampart");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let all: Arc<Mutex<String>> = Arc::default();
        let kept = all.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut kept) = kept.lock() {
                    kept.push_str(&line);
                    kept.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let field = |line: &str, key: &str| -> Option<SocketAddr> {
            let start = line.find(&format!("{key}="))? + key.len() + 1;
            line[start..].split_whitespace().next()?.parse().ok()
        };
        let mut log = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rampart did not report its addresses");
            });
            log.push(line.clone());
            if line.contains("rampart serving") {
                let authorizer = field(&line, "authorizer").expect("authorizer address");
                let admin = field(&line, "admin").expect("admin address");
                return ServerProcess {
                    child,
                    authorizer,
                    admin,
                    log,
                    lines: rx,
                    all,
                };
            }
        }
    }
}

impl ServerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines logged up to the start-up line.
    pub fn start_log(&self) -> &[String] {
        &self.log
    }

    /// Waits (up to `limit`) for a log line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.log.push(line.clone());
            if line.contains(needle) {
                return Some(line);
            }
        }
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.all.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Kills the process with SIGKILL and reaps it: no shutdown, no
    /// flushing, as a crash.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The grpcurl binary: `$GRPCURL`, else the first on `PATH`.
pub fn grpcurl() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("GRPCURL") {
        return Some(p.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("grpcurl"))
        .find(|p| p.is_file())
}
