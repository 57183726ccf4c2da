//! Each offline subcommand as the binary runs it: output on stdout, each
//! failure printed once on stderr, and the exit code.

use std::path::Path;
use std::process::ExitCode;

use super::{elevations, CheckArgs, ImportArgs};

/// Prints `Ok` text on stdout, or `rampart NAME: error` on stderr.
fn finish(name: &str, result: Result<String, String>, failure: ExitCode) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rampart {name}: {e}");
            failure
        }
    }
}

/// `rampart validate FILE`: the summary on stdout, or every problem on stderr.
pub fn validate(file: &Path) -> ExitCode {
    let (report, valid) = super::validate(file);
    if valid {
        print!("{report}");
        ExitCode::SUCCESS
    } else {
        eprint!("{report}");
        ExitCode::FAILURE
    }
}

/// `rampart check`: exit 2 when the request cannot be decided.
pub fn check(args: &CheckArgs) -> ExitCode {
    finish("check", super::check(args), ExitCode::from(2))
}

pub fn role(args: &super::RoleArgs) -> ExitCode {
    let answer = match &args.reference {
        Some(reference) => super::role(reference),
        None => super::role_list(args.search.as_deref()),
    };
    finish("role", answer, ExitCode::FAILURE)
}

/// `rampart import`: the snapshot to `--output` or stdout, notes on stderr.
pub fn import(args: &ImportArgs) -> ExitCode {
    let (yaml, notes) = match super::import(args) {
        Ok(imported) => imported,
        Err(e) => return finish("import", Err(e), ExitCode::FAILURE),
    };
    for note in notes {
        eprintln!("note: {note}");
    }
    let written = match &args.output {
        Some(path) => std::fs::write(path, yaml)
            .map(|()| String::new())
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => Ok(yaml),
    };
    finish("import", written, ExitCode::FAILURE)
}

/// `rampart elevations …`: a client on a single-threaded runtime.
pub fn elevations(args: elevations::ElevationsArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rampart: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(elevations::run(args));
    finish(
        "elevations",
        result.map(|()| String::new()),
        ExitCode::FAILURE,
    )
}
