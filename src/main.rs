use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use rampart::audit::AuditLog;
use rampart::cli::{self, Cli, Command, LogFormat, ServeArgs};
use rampart::elevation::{Broker, Store};
use rampart::engine::Engine;
use rampart::server::{self, metrics, ServeConfig, TlsFiles, Tokens};
use rampart::snapshot::reload::Reloader;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Validate { file }) => {
            let (report, valid) = cli::validate(&file);
            if valid {
                print!("{report}");
                ExitCode::SUCCESS
            } else {
                eprint!("{report}");
                ExitCode::FAILURE
            }
        }
        Some(Command::Import(args)) => match cli::import(&args) {
            Ok((yaml, notes)) => {
                for note in notes {
                    eprintln!("note: {note}");
                }
                match &args.output {
                    Some(path) => match std::fs::write(path, yaml) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("rampart import: cannot write {}: {e}", path.display());
                            ExitCode::FAILURE
                        }
                    },
                    None => {
                        print!("{yaml}");
                        ExitCode::SUCCESS
                    }
                }
            }
            Err(e) => {
                eprintln!("rampart import: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Elevations(args)) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("rampart: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(cli::elevations::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rampart elevations: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Role { reference }) => match cli::role(&reference) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rampart role: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Check(args)) => match cli::check(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rampart check: {e}");
                ExitCode::from(2)
            }
        },
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

fn serve(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    let snapshot = match cli::load_snapshot(args.snapshot.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("refusing to start: {e}");
            eprintln!("rampart: refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let store = match &args.state_dir {
        Some(dir) => Store::open(dir),
        None => {
            tracing::warn!(
                "no --state-dir: elevations, grants and the audit trail live in memory only"
            );
            Store::in_memory()
        }
    };
    let store = match store {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rampart: {e}");
            return ExitCode::FAILURE;
        }
    };
    let demo = args.snapshot.is_none();
    let tokens = match &args.tokens {
        Some(path) => match Tokens::load(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("rampart: --tokens {e}");
                return ExitCode::FAILURE;
            }
        },
        None if demo && args.admin_listen.ip().is_loopback() => {
            tracing::warn!(
                "demo tokens (embedded demo snapshot on loopback only): 'demo-oncall' for oncall, 'demo-admin' for it-admin (admin)"
            );
            Tokens::from_plain(&[
                ("demo-oncall", "oncall", false),
                ("demo-admin", "it-admin", true),
            ])
        }
        None => {
            tracing::warn!("no --tokens: every Approvals and Admin call will be UNAUTHENTICATED");
            Tokens::default()
        }
    };
    // Tokio sizes its worker pool from TOKIO_WORKER_THREADS when set.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rampart: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let info = snapshot.info.clone();
    let engine = Arc::new(Engine::new(snapshot));
    let broker = match Broker::start(engine, store) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("rampart: {e}");
            return ExitCode::FAILURE;
        }
    };
    let audit = match &args.audit_log {
        Some(path) => match AuditLog::open(path) {
            Ok(log) => Some(Arc::new(log)),
            Err(e) => {
                eprintln!("rampart: cannot open --audit-log {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    if let Some(log) = &audit {
        broker.set_audit_log(log.clone());
    }
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let files = read(cert).and_then(|cert_pem| {
                Ok(TlsFiles {
                    cert_pem,
                    key_pem: read(key)?,
                    admin_client_ca_pem: args.admin_client_ca.as_deref().map(read).transpose()?,
                })
            });
            match files {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!("rampart: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let config = ServeConfig {
        listen: args.listen,
        admin_listen: args.admin_listen,
        health_listen: args.health_listen,
        tokens,
        insecure: args.insecure,
        audit,
        audit_decisions_sample: args.audit_decisions_sample,
        tls,
        uds: args.uds.clone(),
    };
    runtime.block_on(async move {
        let _sweeper = broker.spawn_sweeper(std::time::Duration::from_secs(1));
        let reloader = args.snapshot.clone().map(|path| {
            let (broker, engine) = (broker.clone(), broker.engine().clone());
            Arc::new(Reloader::new(path, Some(info.content_sha256.clone()), move |loaded| match loaded {
                Ok(snapshot) => {
                    metrics::record_reload(true);
                    broker.swap_snapshot(snapshot);
                }
                Err(e) => {
                    metrics::record_reload(false);
                    engine.record_failure(e.to_string());
                }
            }))
        });
        let _watch = match (&reloader, args.watch) {
            (Some(r), true) => match r.watch(RELOAD_DEBOUNCE, args.reload_poll.max(std::time::Duration::from_secs(1))) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!("cannot watch the snapshot's directory ({e}); polling every {:?}", args.reload_poll);
                    None
                }
            },
            _ => None,
        };
        if let Some(r) = reloader.clone() {
            tokio::spawn(reload_on_sighup(r));
        }
        if let Some(addr) = args.metrics_listen {
            match metrics::start(addr, broker.clone()).await {
                Ok(bound) => tracing::info!(metrics = %bound, "serving Prometheus metrics on /metrics"),
                Err(e) => {
                    eprintln!("rampart: cannot listen on --metrics-listen {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let running = match server::start(config, broker.clone(), reloader).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("rampart: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            authorizer = %running.authorizer_addr,
            admin = %running.admin_addr,
            health = ?running.health_addr,
            revision = %info.revision,
            source = %info.source,
            "rampart serving"
        );
        let stop = running.stopper();
        let wait = running.wait();
        tokio::pin!(wait);
        let result = tokio::select! {
            result = &mut wait => result,
            () = shutdown_signal() => {
                tracing::info!("shutting down: cancelling pending elevations, finishing in-flight calls");
                broker.cancel_all_pending("rampart is shutting down");
                let _ = stop.send(true);
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut wait).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!("in-flight calls did not finish within {SHUTDOWN_GRACE:?}; exiting");
                        Ok(())
                    }
                }
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// How long the snapshot's directory must be quiet before a reload.
const RELOAD_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(200);

async fn reload_on_sighup(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the snapshot");
        let r = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || r.reload()).await;
    }
}

/// How long in-flight calls get after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
