use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use rampart::cli::{self, Cli, Command, LogFormat, ServeArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Validate { file }) => cli::run::validate(&file),
        Some(Command::Check(args)) => cli::run::check(&args),
        Some(Command::Import(args)) => cli::run::import(&args),
        Some(Command::Elevations(args)) => cli::run::elevations(args),
        Some(Command::Role(args)) => cli::run::role(&args),
        Some(Command::Diff(args)) => cli::review::run_diff(&args),
        Some(Command::Test(args)) => cli::review::run_test(&args),
    }
}

/// Serves until SIGTERM or Ctrl-C; a failure to start is printed once.
fn serve(args: &ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    match rampart::daemon::serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
