//! The daemon's two jobs: a full reconcile and the off-boarding poll. Each takes the
//! reconciler in use at its start (SIGHUP swaps it), logs and counts what happened, keeps it
//! for `/status`, and, in dry-run mode, logs every change it would make.

use super::notify::Notifier;
use super::run::{in_use, Current};
use super::state::{DaemonState, RunKind, RunSummary};
use super::Job;
use crate::apply::OutcomeKind;
use crate::config::Mode;
use crate::metrics::Metrics;
use crate::reconcile::{Gate, RunReport};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// A full reconcile (read everything, plan, apply).
pub struct FullJob {
    pub current: Current,
    pub state: Arc<DaemonState>,
    pub metrics: Arc<Metrics>,
    pub notifier: Option<Arc<Notifier>>,
}

/// The off-boarding poll (`reconcile::poll`).
pub struct PollJob {
    pub current: Current,
    pub state: Arc<DaemonState>,
    pub metrics: Arc<Metrics>,
}

/// Logs what a dry run would do, change by change, with the reason.
fn log_dry_run(r: &RunReport) {
    for p in &r.plan.changes {
        match &p.blocked {
            None => {
                tracing::info!(change = %p.change, reason = %p.reason, kind = p.change.kind().label(), "would change (dry run)")
            }
            Some(b) => {
                tracing::warn!(change = %p.change, reason = %p.reason, blocked = %b, "would be blocked (dry run)")
            }
        }
    }
}

impl Job for FullJob {
    fn run(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let rec = in_use(&self.current);
            let apply = rec.cfg.mode == Mode::Apply;
            let approved = self.state.take_approval();
            if let Some(fp) = &approved {
                tracing::warn!(
                    revocations = fp,
                    "this run lets through the held revocation set approved over POST /approve (if it is still exactly that set)"
                );
            }
            let gate = Gate {
                approved,
                expect: None,
            };
            let started = Instant::now();
            let started_at = crate::time::now_rfc3339();
            let run_id = crate::reconcile::new_run_id();
            self.state.run_started(&run_id, RunKind::Full);
            let result = rec.run_as(apply, &gate, run_id.clone()).await;
            self.metrics
                .observe_duration("full", started.elapsed().as_secs_f64());
            // Between runs the poll's snapshot waits on disk, not in memory.
            rec.park_snapshot().await;
            match result {
                Ok(r) => {
                    self.metrics.observe(&r, &rec.clients);
                    let latency_secs = started.elapsed().as_secs_f64();
                    if r.applied
                        && r.outcomes.iter().any(|o| {
                            o.reason.is_offboarding()
                                && o.change.is_revocation()
                                && o.outcome.is_done()
                        })
                    {
                        // Detected by this run's read, gone by its end.
                        self.metrics
                            .observe_revocation_latency("reconcile", latency_secs);
                    }
                    if !apply {
                        log_dry_run(&r);
                    }
                    tracing::info!(
                        run_id = r.run_id,
                        changes = r.plan.changes.len(),
                        applied = r.count(OutcomeKind::Applied) + r.count(OutcomeKind::Accepted),
                        failed = r.count(OutcomeKind::Failed),
                        blocked = r.count(OutcomeKind::Blocked),
                        deferred = r.count(OutcomeKind::Deferred),
                        ok = r.ok(),
                        dry_run = !apply,
                        "reconcile finished"
                    );
                    let ok = r.ok();
                    self.state
                        .run_finished(RunSummary::from_report(&r, RunKind::Full));
                    if let Some(n) = &self.notifier {
                        n.status(&format!(
                            "last reconcile {} at {}: {} changes",
                            if ok { "ok" } else { "failed" },
                            crate::time::now_rfc3339(),
                            r.plan.changes.len()
                        ));
                    }
                    ok
                }
                Err(e) => {
                    self.metrics.observe_error(&e, &rec.clients);
                    tracing::error!(error = %e, kind = e.metric_label(), "reconcile failed; nothing changed");
                    self.state.run_finished(RunSummary::from_error(
                        &run_id,
                        &started_at,
                        RunKind::Full,
                        &e,
                    ));
                    if let Some(n) = &self.notifier {
                        n.status(&format!("last reconcile failed: {}", e.metric_label()));
                    }
                    false
                }
            }
        })
    }
}

impl Job for PollJob {
    fn run(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let rec = in_use(&self.current);
            let apply = rec.cfg.mode == Mode::Apply;
            let started = Instant::now();
            let result = rec.poll_leavers(apply).await;
            let secs = started.elapsed().as_secs_f64();
            match result {
                Ok(r) if r.no_baseline => {
                    self.metrics.observe_poll("no_baseline");
                    true
                }
                Ok(r) if r.new_leavers.is_empty() => {
                    self.metrics.observe_poll("nothing_new");
                    self.metrics.observe_duration("offboarding_poll", secs);
                    true
                }
                Ok(r) => {
                    self.metrics.observe_duration("offboarding_poll", secs);
                    let ok = r.ok();
                    self.metrics.observe_poll(if r.submitted_to_live {
                        "submitted"
                    } else if !apply {
                        "dry_run"
                    } else if ok {
                        "revoked"
                    } else {
                        "failed"
                    });
                    if apply && !r.submitted_to_live && ok && !r.outcomes.is_empty() {
                        self.metrics
                            .observe_revocation_latency("offboarding_poll", secs);
                    }
                    for o in &r.outcomes {
                        self.metrics.observe_change(o);
                    }
                    let summary = RunSummary::from_poll(&r, &crate::time::now_rfc3339(), secs);
                    self.state.run_finished(summary);
                    ok
                }
                Err(e) => {
                    self.metrics.observe_poll("error");
                    tracing::error!(error = %e, kind = e.metric_label(), "off-boarding poll failed; nothing changed (the next full reconcile reads everything again)");
                    false
                }
            }
        })
    }
}
