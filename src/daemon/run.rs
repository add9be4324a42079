//! `bbsync run` wired together: the reconciler (swapped on SIGHUP), the schedule and the
//! off-boarding poll, the HTTP endpoints, the metrics, systemd notify and the signals.
//!
//! Lifecycle:
//! - Start-up: the configuration is valid (or `bbsync run` exits 2 before this), the HTTP
//!   address is bound (a taken port is an error naming `http.listen`), then READY=1, then the
//!   start-up reconcile.
//! - SIGHUP: the configuration file is read again. A bad one is rejected with all its
//!   problems in the log and the running one keeps going. A good one takes over once nothing
//!   is applying (`Reconciler::reload`: same lock, audit file reopened for logrotate). The
//!   schedule, `http.*`, `log.*` and the poll interval are read at start only: a change there
//!   is logged as needing a restart.
//! - SIGTERM/SIGINT: no new change starts, the requests in flight finish and are recorded
//!   (at most `daemon.shutdown_timeout_secs`), STOPPING=1, exit 0 (1 when the timeout cut
//!   requests off).

use super::http;
use super::jobs::{FullJob, PollJob};
use super::notify::Notifier;
use super::state::{DaemonState, StateInfo};
use super::{Schedule, Triggers};
use crate::config::{Config, ConfigError, Mode};
use crate::metrics::Metrics;
use crate::reconcile::{Reconciler, RunError};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("schedule.cron: {0}")]
    Schedule(String),
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot watch signals: {0}")]
    Signals(#[source] std::io::Error),
}

impl DaemonError {
    /// Errors fixed in the configuration (exit code 2).
    pub fn is_config(&self) -> bool {
        match self {
            DaemonError::Config(_) | DaemonError::Schedule(_) | DaemonError::Listen { .. } => true,
            DaemonError::Run(e) => e.is_config(),
            _ => false,
        }
    }
}

/// The reconciler in use; SIGHUP swaps it.
pub type Current = Arc<RwLock<Arc<Reconciler>>>;

pub fn in_use(c: &Current) -> Arc<Reconciler> {
    Arc::clone(&c.read().unwrap_or_else(|e| e.into_inner()))
}

/// What the caller gets back: the exit code and the address the endpoints listened on.
pub struct Exit {
    pub code: u8,
}

/// Told when the endpoints are up (the demo prints their addresses).
pub type OnListening = Box<dyn FnOnce(Option<std::net::SocketAddr>) + Send>;

/// How the daemon is run.
#[derive(Default)]
pub struct Options {
    /// The configuration file, read again on SIGHUP; `None`: no reload (the demo).
    pub path: Option<PathBuf>,
    /// SIGTERM and SIGINT stop it, SIGHUP reloads.
    pub signals: bool,
    /// When `http.listen` is taken, listen on a free port of the same address (the demo).
    pub any_port_if_taken: bool,
    pub on_listening: Option<OnListening>,
}

/// Runs the daemon for `cfg` until `shutdown` is cancelled.
pub async fn run(
    cfg: Config,
    shutdown: CancellationToken,
    opts: Options,
) -> Result<Exit, DaemonError> {
    let Options {
        path,
        signals,
        any_port_if_taken,
        on_listening,
    } = opts;
    let schedule = Schedule::from_config(&cfg).map_err(DaemonError::Schedule)?;
    let settings = cfg.daemon.clone();
    let metrics = Arc::new(Metrics::new()?);
    let rec = Reconciler::new(cfg)?.with_shutdown(shutdown.clone());
    rec.clients.set_metrics(metrics.api());
    let info = StateInfo {
        mode: mode_label(rec.cfg.mode),
        backend: rec.cfg.bitbucket.membership_backend.key().into(),
        workspace: rec.cfg.bitbucket.workspace.clone(),
        ready_max_age: settings.http.ready_max_age,
        token: settings.http.token.clone(),
    };
    tracing::info!(
        mode = info.mode,
        workspace = info.workspace,
        schedule = %schedule_label(&rec.cfg),
        poll_secs = schedule.poll.map(|d| d.as_secs()),
        "bbsync running"
    );
    let triggers = Arc::new(Triggers::default());
    let state = Arc::new(DaemonState::new(
        info,
        Arc::clone(&triggers),
        Arc::clone(&metrics),
    ));
    let current: Current = Arc::new(RwLock::new(Arc::new(rec)));

    let hup = Arc::new(Notify::new());
    if signals {
        super::watch_signals(shutdown.clone(), Arc::clone(&hup)).map_err(DaemonError::Signals)?;
    }

    // The endpoints live until the loop has stopped (a stopping daemon still answers).
    let http_stop = CancellationToken::new();
    let mut http_task = None;
    let mut bound = None;
    if let Some(addr) = settings.http.listen {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Err(e) if any_port_if_taken && e.kind() == std::io::ErrorKind::AddrInUse => {
                let any = std::net::SocketAddr::new(addr.ip(), 0);
                tokio::net::TcpListener::bind(any).await
            }
            other => other,
        }
        .map_err(|source| DaemonError::Listen { addr, source })?;
        let local = listener.local_addr().ok();
        bound = local;
        tracing::info!(
            addr = %local.map_or(addr.to_string(), |a| a.to_string()),
            sync = settings.http.token.is_some(),
            "serving /healthz /readyz /metrics /status{}",
            if settings.http.token.is_some() { " and POST /sync /approve" } else { "" }
        );
        let (state, stop) = (Arc::clone(&state), http_stop.clone());
        http_task = Some(tokio::spawn(async move {
            if let Err(e) = http::serve(listener, state, stop).await {
                tracing::error!(error = %e, "the HTTP endpoints stopped");
            }
        }));
    }
    if let Some(f) = on_listening {
        f(bound);
    }

    let notifier = Notifier::from_env().map(Arc::new);
    if let Some(n) = &notifier {
        let s = Arc::clone(&state);
        Arc::clone(n).spawn_watchdog(move || s.is_healthy(), shutdown.clone());
        n.ready_with_status("started; first reconcile under way");
    }
    {
        let (n, stop) = (notifier.clone(), shutdown.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            if let Some(n) = n {
                n.stopping();
            }
        });
    }
    let reloads = tokio::spawn(reload_on_hup(
        path,
        Arc::clone(&state),
        Arc::clone(&current),
        Arc::clone(&hup),
        notifier.clone(),
        Arc::clone(&metrics),
        (settings.clone(), schedule.poll),
    ));
    let pending = tokio::spawn(track_pending(
        Arc::clone(&current),
        Arc::clone(&state),
        Arc::clone(&metrics),
        shutdown.clone(),
    ));

    let full = FullJob {
        current: Arc::clone(&current),
        state: Arc::clone(&state),
        metrics: Arc::clone(&metrics),
        notifier: notifier.clone(),
    };
    let poll = PollJob {
        current: Arc::clone(&current),
        state: Arc::clone(&state),
        metrics: Arc::clone(&metrics),
    };
    state.set_alive(true);
    let serve = super::serve(&full, Some(&poll), &schedule, &triggers, &shutdown);
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(settings.shutdown_timeout).await;
    };
    let code = tokio::select! {
        stats = serve => {
            tracing::info!(runs = stats.runs, failed = stats.failed, polls = stats.polls, "bbsync stopped");
            0
        }
        _ = deadline => {
            tracing::error!(
                timeout_secs = settings.shutdown_timeout.as_secs(),
                "requests in flight did not finish within daemon.shutdown_timeout_secs; exiting (the next start settles them from the audit trail)"
            );
            1
        }
    };
    state.set_alive(false);
    reloads.abort();
    pending.abort();
    http_stop.cancel();
    if let Some(t) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    Ok(Exit { code })
}

fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Apply => "apply",
        Mode::DryRun => "dry-run",
    }
}

fn schedule_label(cfg: &Config) -> String {
    match &cfg.daemon.schedule {
        crate::config::ScheduleSpec::Every(d) => format!("every {} s", d.as_secs()),
        crate::config::ScheduleSpec::Cron(e) => format!("cron {e} (UTC)"),
    }
}

/// SIGHUP: reload the configuration (see the module doc).
async fn reload_on_hup(
    path: Option<PathBuf>,
    state: Arc<DaemonState>,
    current: Current,
    hup: Arc<Notify>,
    notifier: Option<Arc<Notifier>>,
    metrics: Arc<Metrics>,
    started_with: (crate::config::DaemonSettings, Option<Duration>),
) {
    loop {
        hup.notified().await;
        if let Some(n) = &notifier {
            n.reloading();
        }
        let Some(path) = &path else {
            tracing::warn!("SIGHUP: this daemon has no configuration file to read again");
            if let Some(n) = &notifier {
                n.ready();
            }
            continue;
        };
        match Config::load(path) {
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the new configuration is rejected; the running one stays in force");
                // logrotate still expects the audit file to be let go of.
                in_use(&current).reopen_audit();
            }
            Ok(cfg) => {
                if cfg.daemon != started_with.0 || cfg.offboarding.poll_interval != started_with.1 {
                    tracing::warn!("SIGHUP: changes to [daemon], [schedule], [http], [log] and offboarding.poll_interval_secs take effect at the next restart");
                }
                let old = in_use(&current);
                match old.reload(cfg).await {
                    Ok(next) => {
                        next.clients.set_metrics(metrics.api());
                        let mode = mode_label(next.cfg.mode);
                        *current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
                        state.set_mode(mode);
                        tracing::info!(
                            mode,
                            "SIGHUP: configuration reloaded; the audit file is reopened at the next write"
                        );
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: cannot switch to the new configuration; the running one stays in force");
                    }
                }
            }
        }
        if let Some(n) = &notifier {
            n.ready();
        }
    }
}

/// Keeps the pending work of an apply in progress in /status and the metrics (between
/// applies both show what the last run left undone).
async fn track_pending(
    current: Current,
    state: Arc<DaemonState>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let Some(live) = in_use(&current).live_pending() else {
            continue;
        };
        let pending: std::collections::BTreeMap<String, usize> = live
            .into_iter()
            .map(|(p, n)| (p.label().to_owned(), n))
            .collect();
        metrics.set_pending(&pending);
        state.set_pending(pending);
    }
}
