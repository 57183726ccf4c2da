//! `rampart diff` and `rampart test`: their flags, and each run as the
//! binary does it (report on stdout, problems on stderr, the exit code).
//! The logic lives in [`crate::review`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::engine::Loaded;
use crate::review::{diff, policy_test};
use crate::snapshot::{self, CompiledSnapshot, SnapshotError};

/// How a report is written on standard output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// For people.
    #[default]
    Text,
    /// For tools; the schema is in docs/review.md.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// The snapshot serving now (e.g. the ConfigMap's file on the main branch).
    pub old: PathBuf,
    /// The snapshot proposed.
    pub new: PathBuf,
    /// `text` for people, `json` for tools (schema rampart.diff/v1).
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// The test file (YAML): `snapshot:` and `tests:`.
    pub file: PathBuf,
    /// Test this snapshot instead of the file's `snapshot:`; without
    /// either, the embedded demo.
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// `text` for people, `json` for tools (schema rampart.test/v1).
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// Exit code 2: the command could not do its work (a bad snapshot or test
/// file, an unwritable output).
const TROUBLE: u8 = 2;

/// `rampart diff OLD NEW`: exit 1 when anything is gained, 0 otherwise,
/// 2 when a snapshot is invalid (every problem of each is printed).
pub fn run_diff(args: &DiffArgs) -> ExitCode {
    // Both snapshots load at once: on large tenants loading is most of the work.
    let (old, new) = std::thread::scope(|s| {
        let old = s.spawn(|| snapshot::load_file(&args.old));
        let new = snapshot::load_file(&args.new);
        (join(old.join()), new)
    });
    let (old, new) = match (old, new) {
        (Ok(o), Ok(n)) => (o, n),
        (o, n) => {
            for e in [o.err(), n.err()].into_iter().flatten() {
                eprintln!("rampart diff: {e}");
            }
            return ExitCode::from(TROUBLE);
        }
    };
    let report = diff::diff(&old, &new);
    let text = match args.format {
        ReportFormat::Text => diff::text::render(&report),
        ReportFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => json + "\n",
            Err(e) => {
                eprintln!("rampart diff: cannot write JSON: {e}");
                return ExitCode::from(TROUBLE);
            }
        },
    };
    print!("{text}");
    // The process ends here: freeing two large snapshots first would only
    // cost time.
    std::mem::forget((old, new));
    ExitCode::from(u8::from(report.gained))
}

fn join(
    joined: std::thread::Result<Result<CompiledSnapshot, SnapshotError>>,
) -> Result<CompiledSnapshot, SnapshotError> {
    joined.unwrap_or_else(|_| {
        Err(SnapshotError {
            source_name: "old snapshot".into(),
            problems: vec![snapshot::Problem {
                path: String::new(),
                id: None,
                message: "loading stopped unexpectedly".into(),
                location: None,
            }],
        })
    })
}

/// `rampart test FILE`: exit 0 when every test passes, 1 when any fails,
/// 2 when the test file or the snapshot is bad.
pub fn run_test(args: &TestArgs) -> ExitCode {
    let name = args.file.display().to_string();
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("rampart test: cannot read {name}: {e}");
            return ExitCode::from(TROUBLE);
        }
    };
    let suite = match policy_test::parse(&text) {
        Ok(s) => s,
        Err(problems) => {
            let n = problems.len();
            eprintln!(
                "rampart test: {name} is not a valid test file ({n} problem{}):",
                if n == 1 { "" } else { "s" }
            );
            for p in problems {
                let sep = if p.location.is_some() { "" } else { " " };
                eprintln!("  {name}:{sep}{p}");
            }
            return ExitCode::from(TROUBLE);
        }
    };
    let path = policy_test::snapshot_path(&args.file, &suite, args.snapshot.as_deref());
    let loaded = match super::load_snapshot(path.as_ref()) {
        Ok(s) => Loaded::new(s),
        Err(e) => {
            eprintln!("rampart test: {e}");
            return ExitCode::from(TROUBLE);
        }
    };
    let report = policy_test::run(&name, &suite, &loaded);
    let out = match args.format {
        ReportFormat::Text => report.text(),
        ReportFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => json + "\n",
            Err(e) => {
                eprintln!("rampart test: cannot write JSON: {e}");
                return ExitCode::from(TROUBLE);
            }
        },
    };
    print!("{out}");
    if let Some(junit) = &args.junit {
        if let Err(e) = std::fs::write(junit, report.junit()) {
            eprintln!("rampart test: cannot write {}: {e}", junit.display());
            return ExitCode::from(TROUBLE);
        }
    }
    if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
