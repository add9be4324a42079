//! One Prometheus registry per [`Metrics`] (no process-wide default registry: tests run many
//! daemons in one process). Every name starts with `bbsync_`. Labels are kinds, outcomes, API
//! families, status classes, credential names from the config, priorities and guard labels,
//! never people, emails, groups or repositories (unbounded cardinality, and personal data).
//! docs/metrics.md lists every metric.
//!
//! # Bitbucket requests and the hand-over on reload
//!
//! Requests are counted where they are sent, in the HTTP client, once per attempt (retries
//! included), so failed runs, probes and the fast off-boarding poll count too. The client
//! records into an [`ApiMetrics`]: cloneable handles (the prometheus collectors are `Arc`s
//! inside) owned by the [`Metrics`] and handed to the clients with
//! [`Clients::set_metrics`](crate::bitbucket::Clients::set_metrics):
//!
//! ```ignore
//! let metrics = Metrics::new()?;
//! let clients = Clients::new(&cfg)?;
//! clients.set_metrics(metrics.api());      // every client of every credential records
//! // SIGHUP: a new configuration, new clients, the same collectors
//! let clients = Clients::new(&new_cfg)?;
//! clients.set_metrics(metrics.api());      // counters go on from where they were
//! ```
//!
//! Each client keeps its handles in a `OnceLock` (the first attachment wins; attaching the
//! same handles again is a no-op), so a counter never goes back on reload and no request is
//! counted twice. `set_metrics` also points the `rate_budget_remaining` gauge at the new
//! clients' budgets (weakly: dropped clients are not kept alive), and credentials the new
//! configuration no longer has disappear from the gauge. A client with no metrics attached
//! (CLI one-shots, most tests) does one atomic load per request and nothing else.

pub use crate::bitbucket::metrics::{status_class, ApiMetrics, ClientMetrics};
use crate::directory::EntryIssue;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::{BTreeMap, BTreeSet};

/// `reconcile_duration_seconds` buckets: a small workspace takes a second, a large first
/// apply under the rate budget an hour or more.
const RUN_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// `api_request_duration_seconds` buckets (Bitbucket answers in 0.1 to 2 s, listings up to
/// the client timeout).
const API_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// `revocation_latency_seconds`' triggers: the kind of run that revoked.
pub const REVOCATION_TRIGGERS: [&str; 2] = ["offboarding_poll", "reconcile"];

/// `offboarding_polls_total`'s outcomes (docs/metrics.md says what each means).
pub const POLL_OUTCOMES: [&str; 7] = [
    "no_baseline",
    "nothing_new",
    "submitted",
    "dry_run",
    "revoked",
    "failed",
    "error",
];

/// `revocation_latency_seconds` buckets: 1 s to 10 min (the goal is "within a minute").
const REVOCATION_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
];

/// The priorities of the apply queue, as `pending_changes` labels (always all four, 0 when
/// nothing waits, so that alerts see a series).
const PRIORITIES: [crate::apply::queue::Priority; 4] = crate::apply::queue::Priority::ALL;

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
    /// Unix time of the last reconcile that finished ok.
    pub last_success: IntGauge,
    durations: HistogramVec,
    pending: IntGaugeVec,
    guard_holds: IntCounterVec,
    source_entries: IntGaugeVec,
    unresolved: IntGauge,
    revocation_latency: HistogramVec,
    polls: IntCounterVec,
    api: ApiMetrics,
}

/// A label value given by the caller as a `&str` (a run kind, a trigger, an outcome) is used
/// only when it is one short lowercase word (`[a-z_]`, at most 32 characters): such a word
/// cannot be an email, an account id or a display name. Anything else becomes `other`.
fn word(label: &str) -> &str {
    let ok = !label.is_empty()
        && label.len() <= 32
        && label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if ok {
        label
    } else {
        tracing::warn!(
            len = label.len(),
            "metric label value is not a short lowercase word; recorded as \"other\""
        );
        "other"
    }
}

/// Whether a skipped directory entry is a person the source could not give an account id
/// (the attribute is missing or malformed). Matches the problems `source::Resolver` words;
/// a structured issue kind would be sturdier once the sources grow one.
fn lacks_account_id(issue: &EntryIssue) -> bool {
    let p = issue.problem.as_str();
    (p.starts_with("no ") && p.ends_with(" attribute")) || p.starts_with("malformed ")
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
        let gauges =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram = |name: &str,
                         help: &str,
                         labels: &[&str],
                         buckets: &[f64]|
         -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let build_info = gauges(
            "build_info",
            "Always 1; the version label says which bbsync is running",
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let pending = gauges(
            "pending_changes",
            "Changes still to make, by apply priority",
            &["priority"],
        )?;
        for p in PRIORITIES {
            pending.with_label_values(&[p.label()]).set(0);
        }
        let source_entries = gauges(
            "source_entries",
            "Directory entries of the last read: read (people and groups taken in) or invalid (skipped or flagged as bad)",
            &["state"],
        )?;
        for state in ["read", "invalid"] {
            source_entries.with_label_values(&[state]).set(0);
        }
        let api = ApiMetrics::new(
            counter(
                "api_requests_total",
                "Bitbucket API requests sent (every attempt, retries included), by API family and status class",
                &["family", "status_class"],
            )?,
            histogram(
                "api_request_duration_seconds",
                "Time from sending a Bitbucket request to having its whole answer, by API family",
                &["family"],
                API_BUCKETS,
            )?,
            counter(
                "api_rate_limited_total",
                "Bitbucket answers 429 (rate limited), by credential",
                &["credential"],
            )?,
            gauges(
                "rate_budget_remaining",
                "Requests the credential's rate budget would let go at once now (0 while paused after a 429 or spent for the run)",
                &["credential"],
            )?,
        );
        // Every outcome from the start, so that rate() and increase() see the first one.
        let runs = counter("reconciles_total", "Reconciles by outcome", &["outcome"])?;
        for outcome in ["ok", "failed", "error"] {
            runs.with_label_values(&[outcome]);
        }
        // Likewise the guards, the poll outcomes and the latency triggers: a series born at 1
        // is invisible to increase(), so an alert on the first guard hold would never fire.
        let guard_holds = counter(
            "guard_holds_total",
            "Runs whose revocations a safety guard held back, by guard",
            &["guard"],
        )?;
        for g in crate::plan::Guard::LABELS {
            guard_holds.with_label_values(&[g]);
        }
        let revocation_latency = histogram(
            "revocation_latency_seconds",
            "Time from a leaver being seen to their access being revoked, by trigger",
            &["trigger"],
            REVOCATION_BUCKETS,
        )?;
        for t in REVOCATION_TRIGGERS {
            revocation_latency.with_label_values(&[t]);
        }
        let polls = counter(
            "offboarding_polls_total",
            "Fast off-boarding polls, by outcome",
            &["outcome"],
        )?;
        for o in POLL_OUTCOMES {
            polls.with_label_values(&[o]);
        }
        Ok(Metrics {
            runs,
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
            last_success: gauge(
                "last_success_timestamp_seconds",
                "Unix time of the last successful reconcile",
            )?,
            durations: histogram(
                "reconcile_duration_seconds",
                "Run duration, by kind (full reconcile or off-boarding poll)",
                &["kind"],
                RUN_BUCKETS,
            )?,
            pending,
            guard_holds,
            source_entries,
            unresolved: gauge(
                "unresolved_identities",
                "People of the last directory read the source could not give an Atlassian account id",
            )?,
            revocation_latency,
            polls,
            api,
            registry,
        })
    }

    /// The handles to attach to a [`Clients`](crate::bitbucket::Clients) (at start and after
    /// every reload): `clients.set_metrics(metrics.api())`.
    pub fn api(&self) -> ApiMetrics {
        self.api.clone()
    }

    /// Records a finished run (planned, and applied unless dry-run). Also attaches `clients`
    /// (a no-op when they already are) and refreshes the budget gauges from them.
    pub fn observe(&self, r: &crate::reconcile::RunReport, clients: &crate::bitbucket::Clients) {
        self.runs
            .with_label_values(&[if r.ok() { "ok" } else { "failed" }])
            .inc();
        for o in &r.outcomes {
            self.observe_change(o);
        }
        if !r.applied {
            for p in r.plan.blocked() {
                if let Some(reason) = &p.blocked {
                    self.blocked.with_label_values(&[reason.label()]).inc();
                }
            }
        }
        for g in &r.plan.held {
            self.guard_holds.with_label_values(&[g.label()]).inc();
        }
        self.set_left_undone(r);
        let invalid: BTreeSet<&str> = r.source.issues.iter().map(|i| i.dn.as_str()).collect();
        let unresolved: BTreeSet<&str> = r
            .source
            .issues
            .iter()
            .filter(|i| lacks_account_id(i))
            .map(|i| i.dn.as_str())
            .collect();
        self.source_entries
            .with_label_values(&["read"])
            .set(gauge_value(r.source.people + r.source.groups));
        self.source_entries
            .with_label_values(&["invalid"])
            .set(gauge_value(invalid.len()));
        self.set_unresolved_identities(unresolved.len());
        if r.ok() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            self.last_success.set(now);
        }
        clients.set_metrics(self.api());
        self.api.refresh_budgets();
    }

    /// One change that ended (a reconcile's, through [`Metrics::observe`], or one the
    /// off-boarding poll applied itself): `changes_total`, and `blocked_changes_total` when
    /// it was not sent.
    pub fn observe_change(&self, o: &crate::apply::ChangeResult) {
        self.changes
            .with_label_values(&[o.change.kind().label(), o.outcome.kind().label()])
            .inc();
        if let crate::apply::Outcome::Blocked { reason } = &o.outcome {
            self.blocked.with_label_values(&[reason.label()]).inc();
        }
    }

    /// After a run: what it left undone, by priority (a dry run leaves its whole plan; an
    /// apply what failed, was blocked or deferred). The pool's progress, while an apply runs,
    /// comes through [`Metrics::set_pending`].
    fn set_left_undone(&self, r: &crate::reconcile::RunReport) {
        use crate::apply::queue::Priority;
        let mut left: BTreeMap<String, usize> = BTreeMap::new();
        let mut add = |p: Priority| *left.entry(p.label().to_owned()).or_default() += 1;
        if r.applied {
            for o in r.outcomes.iter().filter(|o| !o.outcome.is_done()) {
                add(Priority::of(&o.change, &o.reason));
            }
        } else {
            for p in &r.plan.changes {
                add(Priority::of(&p.change, &p.reason));
            }
        }
        self.set_pending(&left);
    }

    /// Records a run that failed before planning (the source, a Bitbucket read, the lock...).
    /// Also attaches `clients` and refreshes the budget gauges from them.
    pub fn observe_error(
        &self,
        e: &crate::reconcile::RunError,
        clients: &crate::bitbucket::Clients,
    ) {
        self.runs.with_label_values(&["error"]).inc();
        self.run_errors.with_label_values(&[e.metric_label()]).inc();
        clients.set_metrics(self.api());
        self.api.refresh_budgets();
    }

    /// How long a run took; `kind` is `full` (a reconcile) or `offboarding_poll`.
    pub fn observe_duration(&self, kind: &str, secs: f64) {
        self.durations
            .with_label_values(&[word(kind)])
            .observe(secs.max(0.0));
    }

    /// Changes waiting in the apply queue, by priority label (`offboarding`, `removal`,
    /// `addition`, `repair`, as [`Run::pending`](crate::apply::Run::pending) gives them).
    /// Priorities absent from `pending` are set to 0; unknown labels are ignored.
    pub fn set_pending(&self, pending: &BTreeMap<String, usize>) {
        for p in PRIORITIES {
            let n = pending.get(p.label()).copied().unwrap_or(0);
            self.pending
                .with_label_values(&[p.label()])
                .set(gauge_value(n));
        }
    }

    /// People the directory could not give an Atlassian account id in its last read.
    ///
    /// LDAP and LDIF: person entries skipped because the account id attribute is missing or
    /// malformed ([`Metrics::observe`] counts them from the run's entry issues). HR sources
    /// (to come) resolve people to account ids themselves, by email through the Atlassian
    /// Admin API or a mapping table: they should feed everyone they could not resolve here
    /// (through this call, or as entry issues worded `no <attribute> attribute`).
    pub fn set_unresolved_identities(&self, n: usize) {
        self.unresolved.set(gauge_value(n));
    }

    /// Time from a leaver being seen (the directory says they left, or their entry vanished)
    /// to the last of their access being revoked; `trigger` is `offboarding_poll` or
    /// `reconcile` (whichever run revoked it).
    pub fn observe_revocation_latency(&self, trigger: &str, secs: f64) {
        self.revocation_latency
            .with_label_values(&[word(trigger)])
            .observe(secs.max(0.0));
    }

    /// One fast off-boarding poll, by outcome, one word (the daemon's: `no_baseline`,
    /// `nothing_new`, `submitted`, `dry_run`, `revoked`, `failed`, `error`).
    pub fn observe_poll(&self, outcome: &str) {
        self.polls.with_label_values(&[word(outcome)]).inc();
    }

    /// The Prometheus text exposition of every metric; the budget gauges are read first.
    pub fn render(&self) -> String {
        self.api.refresh_budgets();
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        assert!(
            text.contains(&format!(
                "bbsync_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            text.contains("bbsync_pending_changes{priority=\"offboarding\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn one_client_records_status_classes_latency_and_429s() {
        let m = Metrics::new().expect("metrics");
        let c = m.api().for_credential("admin");
        c.record("groups_read", Some(200), Duration::from_millis(30));
        c.record("groups_read", Some(429), Duration::from_millis(5));
        c.record("groups_write", None, Duration::from_secs(10));
        let text = m.render();
        for line in [
            "bbsync_api_requests_total{family=\"groups_read\",status_class=\"2xx\"} 1",
            "bbsync_api_requests_total{family=\"groups_read\",status_class=\"4xx\"} 1",
            "bbsync_api_requests_total{family=\"groups_write\",status_class=\"error\"} 1",
            "bbsync_api_rate_limited_total{credential=\"admin\"} 1",
            "bbsync_api_request_duration_seconds_count{family=\"groups_read\"} 2",
            "bbsync_api_request_duration_seconds_bucket{family=\"groups_read\",le=\"0.05\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(Some(204)), "2xx");
        assert_eq!(status_class(Some(302)), "3xx");
        assert_eq!(status_class(Some(404)), "4xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(None), "error");
        assert_eq!(status_class(Some(99)), "error");
    }

    #[test]
    fn caller_labels_must_be_plain_words() {
        assert_eq!(word("offboarding_poll"), "offboarding_poll");
        assert_eq!(word("ann@acme.test"), "other");
        assert_eq!(word("557058:0a1b"), "other");
        assert_eq!(word("Ann Smith"), "other");
        assert_eq!(word(""), "other");
        let m = Metrics::new().expect("metrics");
        m.set_pending(&BTreeMap::from([
            ("removal".to_owned(), 3),
            ("ann@acme.test".to_owned(), 9),
        ]));
        m.observe_poll("ok");
        m.observe_revocation_latency("reconcile", 42.0);
        let text = m.render();
        assert!(text.contains("bbsync_pending_changes{priority=\"removal\"} 3"));
        assert!(text.contains("bbsync_pending_changes{priority=\"addition\"} 0"));
        assert!(!text.contains('@'), "{text}");
        assert!(text.contains("bbsync_offboarding_polls_total{outcome=\"ok\"} 1"));
        assert!(text.contains(
            "bbsync_revocation_latency_seconds_bucket{trigger=\"reconcile\",le=\"45\"} 1"
        ));
        assert!(text.contains(
            "bbsync_revocation_latency_seconds_bucket{trigger=\"reconcile\",le=\"30\"} 0"
        ));
    }

    /// A series born at 1 is invisible to `increase()`: every guard, poll outcome and latency
    /// trigger is exposed at 0 before anything happened.
    #[test]
    fn labelled_series_alerts_count_on_exist_from_the_start() {
        let text = Metrics::new().expect("metrics").render();
        for g in ["absolute", "relative", "group", "shrink"] {
            let line = format!("bbsync_guard_holds_total{{guard=\"{g}\"}} 0");
            assert!(text.contains(&line), "no {line} in\n{text}");
        }
        for o in POLL_OUTCOMES {
            let line = format!("bbsync_offboarding_polls_total{{outcome=\"{o}\"}} 0");
            assert!(text.contains(&line), "no {line} in\n{text}");
        }
        for t in REVOCATION_TRIGGERS {
            let line = format!("bbsync_revocation_latency_seconds_count{{trigger=\"{t}\"}} 0");
            assert!(text.contains(&line), "no {line} in\n{text}");
        }
    }

    #[test]
    fn an_entry_without_an_account_id_is_an_unresolved_identity() {
        let issue = |p: &str| EntryIssue {
            dn: "uid=x".into(),
            problem: p.into(),
        };
        assert!(lacks_account_id(&issue("no atlassianAccountId attribute")));
        assert!(lacks_account_id(&issue(
            "malformed atlassianAccountId: not an account id"
        )));
        assert!(!lacks_account_id(&issue(
            "member uid=y resolves to no person or group"
        )));
        assert!(!lacks_account_id(&issue(
            "memberUid bob resolves to no person"
        )));
    }
}
