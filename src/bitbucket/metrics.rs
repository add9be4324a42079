//! What the Bitbucket clients record for the Prometheus metrics: the collectors are made and
//! registered by the process's metrics registry (the `metrics` module, `Metrics::api`), which
//! hands them over; this module only records into them (so the clients depend neither on the
//! registry nor on what a run reports).

use super::Budget;
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGaugeVec};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The collectors the Bitbucket clients record into; cheap to clone (every handle is an
/// `Arc`), shared by every [`Clients`](crate::bitbucket::Clients) attached to the same
/// `Metrics`. See the metrics module for the hand-over on reload.
#[derive(Clone)]
pub struct ApiMetrics {
    requests: IntCounterVec,
    durations: HistogramVec,
    rate_limited: IntCounterVec,
    budget_remaining: IntGaugeVec,
    /// The budgets the gauge reads: those of the clients attached last.
    budgets: Arc<Mutex<Vec<WatchedBudget>>>,
}

/// A credential name and its budget, not kept alive by the gauge.
type WatchedBudget = (String, Weak<Budget>);

/// What one credential's client records with: the shared collectors and its own 429 counter.
#[derive(Clone)]
pub struct ClientMetrics {
    requests: IntCounterVec,
    durations: HistogramVec,
    rate_limited: IntCounter,
}

/// The `status_class` label of an attempt: `2xx` .. `5xx`, or `error` when no complete
/// answer came back (connection refused or reset, timeout, a body cut short).
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "error",
    }
}

impl ApiMetrics {
    /// The handles over collectors the caller made and registered.
    pub fn new(
        requests: IntCounterVec,
        durations: HistogramVec,
        rate_limited: IntCounterVec,
        budget_remaining: IntGaugeVec,
    ) -> ApiMetrics {
        ApiMetrics {
            requests,
            durations,
            rate_limited,
            budget_remaining,
            budgets: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl ApiMetrics {
    /// The handles the client of credential `name` records with.
    pub fn for_credential(&self, name: &str) -> ClientMetrics {
        ClientMetrics {
            requests: self.requests.clone(),
            durations: self.durations.clone(),
            rate_limited: self.rate_limited.with_label_values(&[name]),
        }
    }

    /// From now on the budget gauge reads these budgets (a new `Clients` replaces the ones of
    /// the last); credentials that are no longer there leave the gauge.
    pub(crate) fn watch_budgets(&self, budgets: Vec<WatchedBudget>) {
        let mut watched = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        for (name, _) in watched.iter() {
            if !budgets.iter().any(|(n, _)| n == name) {
                let _ = self.budget_remaining.remove_label_values(&[name]);
            }
        }
        *watched = budgets;
    }

    /// Sets `rate_budget_remaining` from the watched budgets.
    pub fn refresh_budgets(&self) {
        let watched = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        for (name, budget) in watched.iter() {
            match budget.upgrade() {
                Some(b) => self
                    .budget_remaining
                    .with_label_values(&[name])
                    .set(i64::try_from(b.available_now()).unwrap_or(i64::MAX)),
                None => {
                    let _ = self.budget_remaining.remove_label_values(&[name]);
                }
            }
        }
    }
}

impl ClientMetrics {
    /// One attempt sent: its family label, its status (`None`: no complete answer) and how
    /// long it took.
    pub fn record(&self, family: &str, status: Option<u16>, elapsed: Duration) {
        self.requests
            .with_label_values(&[family, status_class(status)])
            .inc();
        self.durations
            .with_label_values(&[family])
            .observe(elapsed.as_secs_f64());
        if status == Some(429) {
            self.rate_limited.inc();
        }
    }
}
