//! `rampart audit …`: offline work on the audit log. `verify` checks a log
//! (one file, or rotated files in order) against the checkpoint key;
//! `keygen` makes that key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::audit::chain::{self, LogFile, Outcome};
use crate::audit::keys;

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's hash chain and signed checkpoints: the first
    /// modified, deleted, inserted or reordered record, or an unsealed
    /// tail. Exit 0 intact, 1 tampered, 3 unsealed tail (truncated, or
    /// still being written), 2 cannot check.
    Verify {
        /// The log's files, oldest first (rotated files, then the current one).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The public key (PEM) matching --audit-signing-key.
        #[arg(long)]
        key: PathBuf,
    },
    /// Make an Ed25519 key pair for --audit-signing-key: the private key
    /// at FILE (mode 0600) and the public key at FILE.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs `rampart audit …`: the report on stdout, errors on stderr.
pub fn run(args: &AuditArgs) -> ExitCode {
    match &args.command {
        AuditCommand::Verify { files, key } => verify(files, key),
        AuditCommand::Keygen { out } => match keys::generate(out) {
            Ok((public, id)) => {
                println!(
                    "wrote {} (private: give it to rampart with --audit-signing-key) and {} (public, key id {id}: give it to `rampart audit verify --key`)",
                    out.display(),
                    public.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rampart audit keygen: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn verify(paths: &[PathBuf], key: &std::path::Path) -> ExitCode {
    let fail = |e: String| {
        eprintln!("rampart audit verify: {e}");
        ExitCode::from(2)
    };
    let key = match keys::load_verifying_key(key) {
        Ok(key) => key,
        Err(e) => return fail(e),
    };
    let mut texts = Vec::with_capacity(paths.len());
    for path in paths {
        match std::fs::read(path) {
            Ok(bytes) => texts.push((path.display().to_string(), bytes)),
            Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
        }
    }
    let files: Vec<LogFile> = texts
        .iter()
        .map(|(name, bytes)| LogFile { name, bytes })
        .collect();
    let report = chain::verify(&files, &key);
    print!("{report}");
    match report.outcome() {
        Outcome::Intact => ExitCode::SUCCESS,
        Outcome::Tampered => ExitCode::FAILURE,
        Outcome::Unsealed => ExitCode::from(3),
    }
}
