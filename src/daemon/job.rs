//! The reconcile as the daemon's [`Job`]: runs it, logs and counts what happened, and, in
//! dry-run mode, logs every change it would make.

use super::Job;
use crate::apply::OutcomeKind;
use crate::metrics::Metrics;
use crate::reconcile::Reconciler;
use std::future::Future;
use std::pin::Pin;

pub struct ReconcileJob<'a> {
    pub rec: &'a Reconciler,
    pub apply: bool,
    pub metrics: &'a Metrics,
}

impl Job for ReconcileJob<'_> {
    fn run(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            // Idempotent: the clients record every request from the first run on.
            self.rec.clients.set_metrics(self.metrics.api());
            let started = std::time::Instant::now();
            let result = self.rec.run(self.apply).await;
            self.metrics
                .observe_duration("full", started.elapsed().as_secs_f64());
            match &result {
                Ok(r) => self.metrics.observe(r, &self.rec.clients),
                Err(e) => self.metrics.observe_error(e, &self.rec.clients),
            }
            match result {
                Ok(r) => {
                    if !self.apply {
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
                    tracing::info!(
                        run_id = r.run_id,
                        changes = r.plan.changes.len(),
                        applied = r.count(OutcomeKind::Applied) + r.count(OutcomeKind::Accepted),
                        failed = r.count(OutcomeKind::Failed),
                        blocked = r.count(OutcomeKind::Blocked),
                        deferred = r.count(OutcomeKind::Deferred),
                        ok = r.ok(),
                        dry_run = !self.apply,
                        "reconcile finished"
                    );
                    r.ok()
                }
                Err(e) => {
                    tracing::error!(error = %e, kind = e.metric_label(), "reconcile failed; nothing changed");
                    false
                }
            }
        })
    }
}
