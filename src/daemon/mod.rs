//! The serving process, as a library: [`Daemon::prepare`] turns the serve
//! flags into opened resources, [`Daemon::start`] binds every listener and
//! starts the background work (sweeper, reloads, metrics), and
//! [`RunningDaemon::run_until`] serves until told to stop, then shuts down:
//! pending elevations are cancelled (durably, so their callers get an
//! answer) and in-flight calls get a bounded grace.
//!
//! The binary and the integration tests take the same path; tests hand
//! [`Daemon::from_parts`] an in-memory snapshot and store and bind port 0.

mod error;
mod resources;
pub mod signals;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use error::StartError;
pub use resources::Resources;

use crate::cli::ServeArgs;
use crate::elevation::{Broker, Limits};
use crate::engine::Engine;
use crate::notifications::{self, Notifier, RunningNotifier};
use crate::server::{self, metrics, AuthorizerTokens, Running, ServeConfig, Tokens};
use crate::server::{ConnectionCaps, ConnectionSettings};
use crate::snapshot::reload::{ReloadWatch, Reloader};
use crate::snapshot::SnapshotInfo;

/// How long the snapshot's directory must be quiet before a reload.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);
/// The shortest interval between re-reads of the snapshot file.
const MIN_RELOAD_POLL: Duration = Duration::from_secs(1);
/// How often expired and used-up grants are ended (and the uses of limited
/// grants reserved); state older than `--retention` is purged hourly.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long in-flight calls get once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long queued notifications (the shutdown's cancellations among
/// them) get to go out once the listeners have stopped.
pub const NOTIFICATIONS_GRACE: Duration = Duration::from_secs(5);

/// Where to listen and how to behave; everything not opened from a file.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub health_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    /// Also serve the Authorizer on this Unix socket.
    pub uds: Option<PathBuf>,
    /// Allow the Authorizer or admin listener beyond loopback without TLS.
    pub insecure: bool,
    /// The share of decisions written to the audit log, from 0 to 1.
    pub audit_decisions_sample: f64,
    /// Watch the snapshot file's directory (when there is a file).
    pub watch: bool,
    /// Re-read the snapshot file this often, watch or not.
    pub reload_poll: Duration,
    /// Pending elevations and retention of the state store.
    pub limits: Limits,
    /// How Envoy's ext_authz `Check` reads requests.
    pub ext_authz: crate::extauthz::ExtAuthzSettings,
    /// Timeouts and keepalive of every connection.
    pub connections: ConnectionSettings,
    /// The most connections each listener holds.
    pub caps: ConnectionCaps,
}

impl From<&ServeArgs> for Options {
    fn from(args: &ServeArgs) -> Options {
        Options {
            listen: args.listen,
            admin_listen: args.admin_listen,
            health_listen: args.health_listen,
            metrics_listen: args.metrics_listen,
            uds: args.uds.clone(),
            insecure: args.insecure,
            audit_decisions_sample: args.audit_decisions_sample,
            watch: args.watch,
            reload_poll: args.reload_poll,
            limits: Limits {
                max_pending: args.max_pending_elevations as usize,
                retention: args.retention,
            },
            ext_authz: crate::extauthz::ExtAuthzSettings {
                identity: args.ext_authz_identity.clone(),
                elevate: args.ext_authz_elevate,
                justification_header: args.ext_authz_justification_header.to_ascii_lowercase(),
            },
            connections: ConnectionSettings {
                handshake_timeout: args.handshake_timeout,
                idle_timeout: args.idle_timeout,
                keepalive_interval: args.keepalive_interval,
                keepalive_timeout: args.keepalive_timeout,
            },
            caps: ConnectionCaps {
                authorizer: args.max_connections as usize,
                admin: args.max_admin_connections as usize,
                health: args.max_health_connections as usize,
            },
        }
    }
}

/// `rampart serve`: prepares, builds the runtime, and serves until SIGTERM
/// or Ctrl-C.
pub fn serve(args: &ServeArgs) -> Result<(), StartError> {
    let daemon = Daemon::prepare(args)?;
    resources::raise_open_file_limit(
        Options::from(args).caps.total(args.uds.is_some()),
        args.metrics_listen.is_some(),
    );
    // Tokio sizes its worker pool from TOKIO_WORKER_THREADS when set.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    runtime.block_on(daemon.run(signals::terminate()))
}

/// Opened resources, not yet serving. Preparing needs no async runtime,
/// so `rampart` reports a bad flag before building one.
pub struct Daemon {
    broker: Arc<Broker>,
    config: ServeConfig,
    snapshot_file: Option<PathBuf>,
    info: SnapshotInfo,
    options: Options,
    notifier: Option<Notifier>,
    files: Arc<ReopenedFiles>,
    warnings: Vec<String>,
}

/// What SIGHUP re-reads besides the snapshot: the tokens files (also
/// re-read with each new snapshot) and the audit log (reopened, for log
/// rotation).
pub struct ReopenedFiles {
    tokens: Option<(PathBuf, Tokens)>,
    authorizer_tokens: Option<(PathBuf, AuthorizerTokens)>,
    audit: Option<Arc<crate::audit::AuditLog>>,
}

impl ReopenedFiles {
    /// Re-reads the tokens files against `snapshot`. A file that fails
    /// leaves its previous tokens in place, less those whose principal is
    /// now a group.
    pub fn reload_tokens(&self, snapshot: &crate::snapshot::CompiledSnapshot) {
        if let Some((path, tokens)) = &self.tokens {
            match Tokens::load_checked(path, snapshot) {
                Ok((new, warnings)) => {
                    tokens.replace_with(&new);
                    for w in warnings {
                        tracing::warn!("--tokens: {w}");
                    }
                    tracing::info!("--tokens {} reloaded", path.display());
                }
                Err(e) => {
                    tracing::error!(
                        "--tokens {} not reloaded, the previous tokens stay: {e}",
                        path.display()
                    );
                    for group in tokens.drop_groups(snapshot) {
                        tracing::error!("--tokens: the token of '{group}' no longer authenticates: '{group}' is a group in the new snapshot");
                    }
                }
            }
        }
        if let Some((path, tokens)) = &self.authorizer_tokens {
            match AuthorizerTokens::load(path) {
                Ok((new, warnings)) => {
                    tokens.replace_with(&new);
                    for w in warnings {
                        tracing::warn!("--authorizer-tokens: {w}");
                    }
                }
                Err(e) => tracing::error!(
                    "--authorizer-tokens {} not reloaded, the previous tokens stay: {e}",
                    path.display()
                ),
            }
        }
    }

    /// Reopens the audit log at its path.
    pub fn reopen_audit_log(&self) {
        if let Some(log) = &self.audit {
            match log.reopen() {
                Ok(()) => tracing::info!("--audit-log {} reopened", log.path().display()),
                Err(e) => tracing::error!(
                    "cannot reopen --audit-log {}: {e}; writing to the file already open",
                    log.path().display()
                ),
            }
        }
    }
}

impl Daemon {
    /// Opens every resource the flags name.
    pub fn prepare(args: &ServeArgs) -> Result<Daemon, StartError> {
        let daemon = Daemon::from_parts(Resources::open(args)?, Options::from(args))?;
        match &args.notifications {
            Some(path) => {
                let fail = |message| StartError::Notifications {
                    path: path.clone(),
                    message,
                };
                daemon
                    .with_notifications(notifications::Config::load(path).map_err(fail)?)
                    .map_err(fail)
            }
            None => Ok(daemon),
        }
    }

    /// Also sends notifications to the webhooks of `config` (outcomes go
    /// to the audit log).
    pub fn with_notifications(mut self, config: notifications::Config) -> Result<Daemon, String> {
        self.notifier = Some(Notifier::new(config, self.config.audit.clone())?);
        Ok(self)
    }

    /// Starts the broker on already-opened resources: elevations and grants
    /// saved in the store come back.
    pub fn from_parts(resources: Resources, options: Options) -> Result<Daemon, StartError> {
        let Resources {
            snapshot,
            snapshot_file,
            store,
            state_dir,
            state_db,
            tokens,
            tokens_file,
            authorizer_tokens,
            audit_log,
            tls,
            warnings,
        } = resources;
        let files = Arc::new(ReopenedFiles {
            tokens: tokens_file.map(|path| (path, tokens.clone())),
            authorizer_tokens: authorizer_tokens.clone(),
            audit: audit_log.clone(),
        });
        let info = snapshot.info.clone();
        let broker = Broker::start_with(
            Arc::new(Engine::new(snapshot)),
            store,
            options.limits.clone(),
        )
        .map_err(|source| match state_db {
            Some(url) => StartError::StateDb { url, source },
            None => StartError::StateStore {
                dir: state_dir,
                source,
            },
        })?;
        if let Some(log) = &audit_log {
            broker.set_audit_log(log.clone());
        }
        let config = ServeConfig {
            listen: options.listen,
            admin_listen: options.admin_listen,
            health_listen: options.health_listen,
            tokens,
            authorizer_tokens: authorizer_tokens.map(|(_, tokens)| tokens),
            insecure: options.insecure,
            audit: audit_log,
            audit_decisions_sample: options.audit_decisions_sample,
            tls,
            uds: options.uds.clone(),
            ext_authz: Arc::new(options.ext_authz.clone()),
            connections: options.connections,
            caps: options.caps,
        };
        Ok(Daemon {
            broker,
            config,
            snapshot_file,
            info,
            options,
            notifier: None,
            files,
            warnings,
        })
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Starts, serves until `shutdown` resolves, then shuts down.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        self.start().await?.run_until(shutdown).await
    }

    /// Binds every listener and starts serving in background tasks.
    pub async fn start(self) -> Result<RunningDaemon, StartError> {
        let Daemon {
            broker,
            config,
            snapshot_file,
            info,
            options,
            notifier,
            files,
            warnings,
        } = self;
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        // Bind everything before spawning anything, so a refusal leaves
        // nothing running.
        let metrics_listener = match options.metrics_listen {
            Some(addr) => Some(bind_metrics(addr).await?),
            None => None,
        };
        let reloader = snapshot_file.map(|path| reloader(path, &info, &broker, files.clone()));
        let server = server::start(config, broker.clone(), reloader.clone()).await?;
        let notifier = notifier.map(|n| {
            tracing::info!(sinks = n.sink_count(), "sending notifications");
            n.start(&broker)
        });

        let mut tasks = vec![broker.spawn_sweeper(SWEEP_EVERY)];
        let metrics_addr = metrics_listener.map(|(listener, bound)| {
            tasks.push(tokio::spawn(metrics::serve(listener, broker.clone())));
            tracing::info!(metrics = %bound, "serving Prometheus metrics on /metrics");
            bound
        });
        let mut watch = None;
        if let Some(r) = &reloader {
            if options.watch {
                let poll = options.reload_poll.max(MIN_RELOAD_POLL);
                match r.watch(RELOAD_DEBOUNCE, poll) {
                    Ok(w) => watch = Some(w),
                    Err(e) => {
                        tracing::warn!(
                            "cannot watch the snapshot's directory ({e}); polling every {}s",
                            poll.as_secs()
                        );
                        watch = Some(r.poll(poll));
                    }
                }
            }
        }
        tasks.push(tokio::spawn(signals::reload_on_sighup(
            reloader.clone(),
            files,
            broker.clone(),
        )));
        tracing::info!(
            authorizer = %server.authorizer_addr,
            admin = %server.admin_addr,
            health = ?server.health_addr,
            revision = %info.revision,
            source = %info.source,
            "rampart serving"
        );
        Ok(RunningDaemon {
            authorizer_addr: server.authorizer_addr,
            admin_addr: server.admin_addr,
            health_addr: server.health_addr,
            metrics_addr,
            broker,
            server,
            tasks,
            notifier,
            _watch: watch,
        })
    }
}

async fn bind_metrics(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let fail = |source| StartError::Listen {
        flag: "--metrics-listen",
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(fail)?;
    let bound = listener.local_addr().map_err(fail)?;
    Ok((listener, bound))
}

/// Reloads `path` into the broker, which ends the grants a new snapshot no
/// longer supports; a bad file is recorded and the last good one serves on.
fn reloader(
    path: PathBuf,
    info: &SnapshotInfo,
    broker: &Arc<Broker>,
    files: Arc<ReopenedFiles>,
) -> Arc<Reloader> {
    let (broker, engine) = (broker.clone(), broker.engine().clone());
    let serving = Some(info.content_sha256.clone());
    Arc::new(Reloader::new(path, serving, move |loaded| match loaded {
        Ok(snapshot) => {
            metrics::record_reload(true);
            // The tokens are checked against the snapshot about to serve.
            files.reload_tokens(&snapshot);
            broker.swap_snapshot(snapshot);
        }
        Err(e) => {
            metrics::record_reload(false);
            engine.record_failure(e.to_string());
        }
    }))
}

/// A serving daemon: its bound addresses (port 0 becomes a real port) and
/// its broker.
pub struct RunningDaemon {
    pub authorizer_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub health_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub broker: Arc<Broker>,
    server: Running,
    /// Sweeper, metrics and SIGHUP tasks, aborted at shutdown.
    tasks: Vec<JoinHandle<()>>,
    /// Webhook notifications, given a grace to flush at shutdown.
    notifier: Option<RunningNotifier>,
    _watch: Option<ReloadWatch>,
}

impl RunningDaemon {
    /// Serves until `shutdown` resolves (or a listener fails), then shuts
    /// down: pending elevations are cancelled, listeners stop accepting,
    /// and in-flight calls get [`SHUTDOWN_GRACE`] to finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let RunningDaemon {
            broker,
            server,
            tasks,
            notifier,
            _watch,
            ..
        } = self;
        let stop = server.stopper();
        let wait = server.wait();
        tokio::pin!(wait);
        let result = tokio::select! {
            result = &mut wait => result,
            () = shutdown => {
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
        if let Some(notifier) = notifier {
            notifier.shutdown(NOTIFICATIONS_GRACE).await;
        }
        for task in tasks {
            task.abort();
        }
        result.map_err(StartError::from)
    }

    /// Shuts down now, as on SIGTERM.
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.run_until(std::future::ready(())).await
    }
}
