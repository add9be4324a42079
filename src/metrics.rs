//! One Prometheus registry for the process. Labels are kinds and outcomes only, never people,
//! groups or repositories (unbounded cardinality, and personal data).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Metrics {
    pub registry: Registry,
    /// Reconciles by outcome: ok | failed | error.
    pub runs: IntCounterVec,
    /// Changes by kind (add_member, remove_grant, ...) and outcome (applied, failed, ...).
    pub changes: IntCounterVec,
    /// Changes not sent, by why (safety_guard, credential_cannot, group_not_created, ...).
    pub blocked: IntCounterVec,
    /// Run errors by kind (parse, io, mapping, unauthorized, rate_limited, ...).
    pub run_errors: IntCounterVec,
    /// Bitbucket API requests sent since start (`bbsync_api_requests_total`).
    pub api_requests: IntCounter,
    /// The clients' request total when last observed (the counter advances by the difference).
    api_requests_seen: AtomicU64,
    /// Unix time of the last reconcile that finished ok.
    pub last_success: IntGauge,
    /// Directory entries skipped as bad in the last run.
    pub skipped_entries: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("bbsync".into()), None)?;
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(Metrics {
            runs: counter("reconciles_total", "Reconciles by outcome", &["outcome"])?,
            changes: counter(
                "changes_total",
                "Changes by kind and outcome",
                &["kind", "outcome"],
            )?,
            blocked: counter(
                "blocked_changes_total",
                "Changes not sent, by reason",
                &["reason"],
            )?,
            run_errors: counter(
                "reconcile_errors_total",
                "Reconciles that produced no plan, by error kind",
                &["kind"],
            )?,
            api_requests: {
                let c = IntCounter::new(
                    "api_requests_total",
                    "Bitbucket API requests sent since start",
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            api_requests_seen: AtomicU64::new(0),
            last_success: gauge(
                "last_success_timestamp_seconds",
                "Unix time of the last successful reconcile",
            )?,
            skipped_entries: gauge(
                "skipped_directory_entries",
                "Directory entries skipped as bad in the last run",
            )?,
            registry,
        })
    }

    /// Advances the request counter to the clients' running total (failed runs send
    /// requests too, so this is fed from the clients, not from run reports).
    pub fn observe_requests(&self, total: u64) {
        let before = self.api_requests_seen.swap(total, Ordering::Relaxed);
        self.api_requests.inc_by(total.saturating_sub(before));
    }

    /// Records a finished run.
    pub fn observe(&self, r: &crate::reconcile::RunReport, api_requests_total: u64) {
        self.runs
            .with_label_values(&[if r.ok() { "ok" } else { "failed" }])
            .inc();
        for o in &r.outcomes {
            self.changes
                .with_label_values(&[o.change.kind().label(), o.outcome.kind().label()])
                .inc();
            if let crate::apply::Outcome::Blocked { reason } = &o.outcome {
                self.blocked.with_label_values(&[reason.label()]).inc();
            }
        }
        if !r.applied {
            for p in r.plan.blocked() {
                if let Some(reason) = &p.blocked {
                    self.blocked.with_label_values(&[reason.label()]).inc();
                }
            }
        }
        self.observe_requests(api_requests_total);
        self.skipped_entries.set(r.source.issues.len() as i64);
        if r.ok() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            self.last_success.set(now);
        }
    }

    /// Records a run that failed before planning.
    pub fn observe_error(&self, e: &crate::reconcile::RunError) {
        self.runs.with_label_values(&["error"]).inc();
        self.run_errors.with_label_values(&[e.metric_label()]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics_with_kind_labels_only() {
        let m = Metrics::new().expect("metrics");
        m.changes
            .with_label_values(&["add_member", "applied"])
            .inc();
        let text = m.render();
        assert!(
            text.contains("bbsync_changes_total{kind=\"add_member\",outcome=\"applied\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bbsync_last_success_timestamp_seconds 0"),
            "{text}"
        );
        m.observe_requests(5);
        m.observe_requests(12);
        let text = m.render();
        assert!(
            text.contains("# TYPE bbsync_api_requests_total counter"),
            "{text}"
        );
        assert!(text.contains("bbsync_api_requests_total 12"), "{text}");
    }
}
