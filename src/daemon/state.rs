//! What the daemon knows about itself, shared (in an `Arc`) between the scheduler loop, which
//! writes it, and the HTTP endpoints, which show it: whether the loop lives, the run in
//! progress, the last runs, the last success (for `/readyz`), what is pending, and an approval
//! of held revocations waiting for the next run.
//!
//! Everything here may end up in an HTTP answer, so nothing here names a person: runs are
//! summarised as counts by kind, and every message goes through [`redact`] first.
//!
//! Ages are measured on `tokio::time::Instant`, so tests age the state under paused time.

use super::Triggers;
use crate::apply::queue::Priority;
use crate::apply::{ChangeResult, Outcome};
use crate::metrics::Metrics;
use crate::plan::{BlockReason, Planned, Reason};
use crate::reconcile::{PollReport, RunError, RunReport};
use crate::secret::Secret;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How many finished runs `/status` shows.
pub const KEPT_RUNS: usize = 20;

/// Most distinct error lines one run summary carries (the log has all of them).
const MAX_ERRORS: usize = 20;

/// What kind of reconcile a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// The whole reconcile: directory, Bitbucket, plan, apply.
    Full,
    /// The fast off-boarding poll (leavers only).
    OffboardingPoll,
}

impl RunKind {
    pub fn label(self) -> &'static str {
        match self {
            RunKind::Full => "full",
            RunKind::OffboardingPoll => "offboarding_poll",
        }
    }
}

/// What does not change while the daemon runs.
#[derive(Clone, Debug)]
pub struct StateInfo {
    /// `"apply"` or `"dry-run"`.
    pub mode: &'static str,
    /// The membership backend as configured (`"auto"`, `"v1_groups"`, `"admin_api"`); the
    /// one a run chose is in its report (`membership_backend`).
    pub backend: String,
    pub workspace: String,
    /// `/readyz` fails once the last successful full reconcile is older than this.
    pub ready_max_age: Duration,
    /// Bearer token of `POST /sync` and `POST /approve` (both disabled without one).
    pub token: Option<Secret>,
}

/// A safety guard that held a run's revocations back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeldGuard {
    /// `absolute`, `relative`, `group` or `shrink`.
    pub guard: String,
    pub message: String,
}

/// One finished run, as `/status` shows it: counts by kind, never who (but the emails of the
/// people no resolver found, which the operator needs to fix them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub kind: RunKind,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub ended_at: String,
    pub duration_ms: u64,
    /// `"ok"`, `"failed"` (it ran, but something failed or was held back) or `"error"` (no
    /// plan: the source or Bitbucket could not be read, ...). The labels of
    /// `bbsync_reconciles_total`.
    pub outcome: &'static str,
    pub dry_run: bool,
    /// Changes by kind (`add_member`, ...) then by outcome (`applied`, `failed`, ...; for a
    /// dry run `planned` or `blocked`).
    pub changes: BTreeMap<String, BTreeMap<String, usize>>,
    /// Changes by why (`rule`, `leaver`, `vanished`, `drift`).
    pub reasons: BTreeMap<String, usize>,
    /// The safety guards that held revocations back.
    pub held: Vec<HeldGuard>,
    /// Fingerprint of the held revocation set (what `POST /approve` names), when a guard held.
    pub held_revocations: Option<String>,
    /// The run's error kind (`bbsync_reconcile_errors_total`'s label) when it produced no plan.
    pub error_kind: Option<&'static str>,
    /// What went wrong, redacted and without people's names.
    pub errors: Vec<String>,
    /// What else the operator should know about the run (counts, where its work went).
    pub notes: Vec<String>,
    /// Changes deferred to the next run (a spent request budget), by priority.
    pub pending: BTreeMap<String, usize>,
    /// When the deferred changes' budget should be open again, at the latest.
    pub eta_secs: Option<u64>,
    pub api_requests: u64,
    /// People the source has no account id for and no resolver found (HR records): how many,
    /// and their emails (nothing more about them), the first [`MAX_UNRESOLVED`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<Unresolved>,
}

/// How many emails of unresolved people `/status` lists.
pub const MAX_UNRESOLVED: usize = 100;

/// People no resolver found an account id for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unresolved {
    pub count: usize,
    /// The first [`MAX_UNRESOLVED`], sorted.
    pub emails: Vec<String>,
}

impl Unresolved {
    fn of(emails: &[String]) -> Option<Unresolved> {
        if emails.is_empty() {
            return None;
        }
        let mut sorted: Vec<String> = emails.iter().map(|e| e.trim().to_lowercase()).collect();
        sorted.sort();
        sorted.dedup();
        let count = sorted.len();
        sorted.truncate(MAX_UNRESOLVED);
        Some(Unresolved {
            count,
            emails: sorted,
        })
    }
}

/// Counts of one run's changes, built change by change.
#[derive(Default)]
struct Counts {
    changes: BTreeMap<String, BTreeMap<String, usize>>,
    reasons: BTreeMap<String, usize>,
    errors: Tally,
    pending: BTreeMap<String, usize>,
    eta_secs: Option<u64>,
    deferred: usize,
}

impl Counts {
    fn bump(&mut self, kind: &str, outcome: &str) {
        *self
            .changes
            .entry(kind.to_owned())
            .or_default()
            .entry(outcome.to_owned())
            .or_default() += 1;
    }

    fn reason(&mut self, reason: &Reason) {
        *self.reasons.entry(reason.label().to_owned()).or_default() += 1;
    }

    /// A change of a plan that was not applied (a dry run): planned or blocked.
    fn planned(&mut self, p: &Planned) {
        let kind = p.change.kind().label();
        match &p.blocked {
            None => self.bump(kind, "planned"),
            Some(b) => {
                self.bump(kind, "blocked");
                if let Some(line) = blocked_line(kind, b) {
                    self.errors.add(line);
                }
            }
        }
    }

    /// What happened to a change that was applied.
    fn outcome(&mut self, o: &ChangeResult) {
        let kind = o.change.kind().label();
        self.bump(kind, o.outcome.kind().label());
        match &o.outcome {
            // The message may name the person (a dependency, an endpoint): the status code is
            // what an operator can act on; the log has the rest.
            Outcome::Failed { status, .. } => self.errors.add(match status {
                Some(s) => format!("{kind} failed: HTTP {s}"),
                None => format!("{kind} failed: no usable answer"),
            }),
            Outcome::Blocked { reason } => {
                if let Some(line) = blocked_line(kind, reason) {
                    self.errors.add(line);
                }
            }
            Outcome::Deferred { resume_in_secs, .. } => {
                self.deferred += 1;
                *self
                    .pending
                    .entry(Priority::of(&o.change, &o.reason).label().to_owned())
                    .or_default() += 1;
                if let Some(s) = *resume_in_secs {
                    self.eta_secs = Some(self.eta_secs.map_or(s, |e| e.max(s)));
                }
            }
            _ => {}
        }
    }

    fn errors(mut self) -> (Counts, Vec<String>) {
        if self.deferred > 0 {
            self.errors.add(format!(
                "{} changes deferred to the next run: a request budget is spent",
                self.deferred
            ));
        }
        let errors = std::mem::take(&mut self.errors).lines();
        (self, errors)
    }
}

impl RunSummary {
    /// The summary of a run that produced a report (`outcome` is `ok` or `failed`).
    pub fn from_report(report: &RunReport, kind: RunKind) -> RunSummary {
        let dry_run = !report.applied;
        let mut counts = Counts::default();
        for p in &report.plan.changes {
            counts.reason(&p.reason);
            if dry_run {
                counts.planned(p);
            }
        }
        if !dry_run {
            for o in &report.outcomes {
                counts.outcome(o);
            }
        }
        let (counts, errors) = counts.errors();

        let held: Vec<HeldGuard> = report
            .plan
            .held
            .iter()
            .map(|g| HeldGuard {
                guard: g.label().to_owned(),
                message: redact(&g.to_string()),
            })
            .collect();
        let held_revocations = (!held.is_empty() && !report.plan.revocations.is_empty())
            .then(|| report.plan.revocations.clone());

        RunSummary {
            run_id: report.run_id.clone(),
            kind,
            started_at: report.started_at.clone(),
            ended_at: crate::time::now_rfc3339(),
            duration_ms: report.duration_ms,
            outcome: if report.ok() { "ok" } else { "failed" },
            dry_run,
            changes: counts.changes,
            reasons: counts.reasons,
            held,
            held_revocations,
            error_kind: None,
            errors,
            notes: Vec::new(),
            pending: counts.pending,
            eta_secs: counts.eta_secs,
            api_requests: report.api_requests,
            unresolved: Unresolved::of(&report.source.unresolved),
        }
    }

    /// The summary of an off-boarding poll that found leavers; `ended_at` (RFC 3339) is when
    /// it ended and `secs` how long it took. A poll that handed its revocations to the full
    /// run in progress says so in `notes` (that run's summary has their outcomes).
    pub fn from_poll(report: &PollReport, ended_at: &str, secs: f64) -> RunSummary {
        let duration = Duration::try_from_secs_f64(secs).unwrap_or_default();
        let started_at = chrono::DateTime::parse_from_rfc3339(ended_at)
            .ok()
            .and_then(|t| SystemTime::from(t).checked_sub(duration))
            .map_or_else(|| ended_at.to_owned(), crate::time::format_rfc3339);
        let mut counts = Counts::default();
        for p in &report.would {
            counts.reason(&p.reason);
            counts.planned(p);
        }
        for o in &report.outcomes {
            counts.reason(&o.reason);
            counts.outcome(o);
        }
        let (counts, errors) = counts.errors();
        let mut notes = vec![format!(
            "{} disabled people seen, {} new leavers, {} revocations planned",
            report.seen_disabled,
            report.new_leavers.len(),
            report.planned
        )];
        if report.submitted_to_live {
            notes.push(format!(
                "the revocations went into the full run in progress ({})",
                report.run_id.as_deref().unwrap_or("unknown")
            ));
        }
        RunSummary {
            run_id: report.run_id.clone().unwrap_or_else(|| "none".to_owned()),
            kind: RunKind::OffboardingPoll,
            started_at,
            ended_at: ended_at.to_owned(),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            outcome: if report.ok() { "ok" } else { "failed" },
            dry_run: report.outcomes.is_empty() && !report.would.is_empty(),
            changes: counts.changes,
            reasons: counts.reasons,
            held: Vec::new(),
            held_revocations: None,
            error_kind: None,
            errors,
            notes,
            pending: counts.pending,
            eta_secs: counts.eta_secs,
            api_requests: 0,
            unresolved: None,
        }
    }

    /// The summary of a run that produced no plan (`outcome` is `error`); `started_at` is
    /// when it started (RFC 3339), the duration is counted from it.
    pub fn from_error(
        run_id: &str,
        started_at: &str,
        kind: RunKind,
        error: &RunError,
    ) -> RunSummary {
        let now = SystemTime::now();
        let duration_ms = chrono::DateTime::parse_from_rfc3339(started_at)
            .ok()
            .and_then(|t| now.duration_since(SystemTime::from(t)).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        RunSummary {
            run_id: run_id.to_owned(),
            kind,
            started_at: started_at.to_owned(),
            ended_at: crate::time::format_rfc3339(now),
            duration_ms,
            outcome: "error",
            dry_run: false,
            changes: BTreeMap::new(),
            reasons: BTreeMap::new(),
            held: Vec::new(),
            held_revocations: None,
            error_kind: Some(error.metric_label()),
            errors: vec![redact(&error.to_string())],
            notes: Vec::new(),
            pending: BTreeMap::new(),
            eta_secs: None,
            api_requests: 0,
            unresolved: None,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.outcome == "ok"
    }
}

/// The line a blocked change adds to a summary's errors, or `None` when the block is shown
/// elsewhere (a guard: `held`) or is no failure (someone not yet in the workspace).
fn blocked_line(kind: &str, reason: &BlockReason) -> Option<String> {
    match reason {
        BlockReason::SafetyGuard { .. }
        | BlockReason::NotWorkspaceMember
        | BlockReason::BecameLeaver => None,
        // Names an account.
        BlockReason::DirectGrantsPending { .. } => Some(format!(
            "{kind} blocked: a direct grant of the person could not be removed"
        )),
        BlockReason::RemovalsPending { .. } => Some(format!(
            "{kind} blocked: a membership or direct grant of the person could not be removed"
        )),
        other => Some(format!("{kind} blocked: {}", redact(&other.to_string()))),
    }
}

/// Distinct lines in first-seen order, each with how often it came.
#[derive(Default)]
struct Tally(Vec<(String, usize)>);

impl Tally {
    fn add(&mut self, line: String) {
        match self.0.iter_mut().find(|(l, _)| *l == line) {
            Some((_, n)) => *n += 1,
            None => self.0.push((line, 1)),
        }
    }
    fn lines(self) -> Vec<String> {
        let total = self.0.len();
        let mut out: Vec<String> = self
            .0
            .into_iter()
            .take(MAX_ERRORS)
            .map(|(l, n)| if n > 1 { format!("{l} (x{n})") } else { l })
            .collect();
        if total > MAX_ERRORS {
            out.push(format!(
                "and {} more kinds of error (see the log)",
                total - MAX_ERRORS
            ));
        }
        out
    }
}

/// `text` with every whitespace-separated word that looks like it holds an email address
/// (an `@`, or its URL encoding `%40`) replaced by `<redacted>`; whitespace runs (newlines
/// too) become one space.
pub fn redact(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            if w.contains('@') || w.to_ascii_lowercase().contains("%40") {
                "<redacted>"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why `POST /approve` refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApproveError {
    #[error("nothing to approve: the last full reconcile held no revocations")]
    NothingHeld,
    #[error("that is not the held set: the last full reconcile held revocations {held}; review the current plan and approve that fingerprint")]
    Mismatch { held: String },
}

/// The run in progress.
#[derive(Clone, Debug)]
struct Current {
    run_id: String,
    kind: RunKind,
    since: String,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    alive: bool,
    /// The mode after a SIGHUP reload changed it (`info.mode` is the one at start).
    mode: Option<&'static str>,
    current: Option<Current>,
    /// When the last full reconcile succeeded: for its age, and for display.
    last_success: Option<(Instant, SystemTime)>,
    /// Newest first.
    runs: VecDeque<RunSummary>,
    pending: BTreeMap<String, usize>,
    /// The fingerprint of the revocations the last full run held.
    held: Option<String>,
    /// An approved held set the next run has not taken yet.
    approval: Option<String>,
}

/// The daemon's state; share it in an `Arc`. Locks are short and never held across an await.
pub struct DaemonState {
    info: StateInfo,
    triggers: Arc<Triggers>,
    metrics: Arc<Metrics>,
    started: Instant,
    started_at: String,
    inner: Mutex<Inner>,
}

impl DaemonState {
    pub fn new(info: StateInfo, triggers: Arc<Triggers>, metrics: Arc<Metrics>) -> DaemonState {
        DaemonState {
            info,
            triggers,
            metrics,
            started: Instant::now(),
            started_at: crate::time::now_rfc3339(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A panic elsewhere while the lock was held leaves plain data behind: still worth showing.
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mode of the configuration in force (a SIGHUP reload may change it).
    pub fn set_mode(&self, mode: &'static str) {
        self.inner().mode = Some(mode);
    }

    pub fn info(&self) -> &StateInfo {
        &self.info
    }

    pub fn triggers(&self) -> &Arc<Triggers> {
        &self.triggers
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the scheduler loop lives (`/healthz`).
    pub fn set_alive(&self, alive: bool) {
        self.inner().alive = alive;
    }

    pub fn is_healthy(&self) -> bool {
        self.inner().alive
    }

    pub fn run_started(&self, run_id: &str, kind: RunKind) {
        self.inner().current = Some(Current {
            run_id: run_id.to_owned(),
            kind,
            since: crate::time::now_rfc3339(),
            at: Instant::now(),
        });
    }

    /// Records a finished run: it ends the run in progress, becomes the newest of the last
    /// runs, and, for a full run, sets the last success (when ok) and the held revocations.
    /// Its messages are redacted (again) on the way in, whoever built it.
    pub fn run_finished(&self, mut summary: RunSummary) {
        for e in &mut summary.errors {
            *e = redact(e);
        }
        for g in &mut summary.held {
            g.message = redact(&g.message);
        }
        for n in &mut summary.notes {
            *n = redact(n);
        }
        let mut inner = self.inner();
        inner.current = None;
        if summary.kind == RunKind::Full {
            if summary.is_ok() {
                inner.last_success = Some((Instant::now(), SystemTime::now()));
            }
            inner.held = summary.held_revocations.clone();
            // An approval of a set no longer held can never be used.
            if inner.approval.is_some() && inner.approval != inner.held {
                tracing::warn!(
                    run_id = summary.run_id,
                    "the approved revocation set is no longer held; the approval is dropped"
                );
                inner.approval = None;
            }
        }
        inner.pending = summary.pending.clone();
        inner.runs.push_front(summary);
        inner.runs.truncate(KEPT_RUNS);
    }

    /// The changes still pending by priority while an apply goes on.
    pub fn set_pending(&self, pending: BTreeMap<String, usize>) {
        self.inner().pending = pending;
    }

    /// `Ok` while the loop lives and the last successful full reconcile is younger than
    /// `http.ready_max_age_secs`; otherwise why not.
    pub fn is_ready(&self) -> Result<(), String> {
        let inner = self.inner();
        if !inner.alive {
            return Err("not ready: the scheduler loop is not running".into());
        }
        let max = self.info.ready_max_age.as_secs();
        match inner.last_success {
            None => {
                let mut why = String::from("not ready: no successful reconcile yet");
                if let Some(c) = &inner.current {
                    why.push_str(&format!(" (run {} in progress)", c.run_id));
                } else if let Some(last) = inner.runs.iter().find(|r| r.kind == RunKind::Full) {
                    why.push_str(&format!(" (last run {}: {})", last.run_id, last.outcome));
                }
                Err(why)
            }
            Some((at, _)) => {
                let age = at.elapsed();
                if age > self.info.ready_max_age {
                    Err(format!(
                        "not ready: the last successful reconcile was {} s ago, more than http.ready_max_age_secs = {max}",
                        age.as_secs()
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Approves the held revocation set `fingerprint` for the next run, which this requests.
    /// Only the set the last full run held can be approved.
    pub fn approve(&self, fingerprint: &str) -> Result<(), ApproveError> {
        {
            let mut inner = self.inner();
            match &inner.held {
                None => return Err(ApproveError::NothingHeld),
                Some(held) if held != fingerprint => {
                    return Err(ApproveError::Mismatch { held: held.clone() })
                }
                Some(_) => inner.approval = Some(fingerprint.to_owned()),
            }
        }
        self.triggers.request();
        Ok(())
    }

    /// The approved held set, once: the daemon takes it before a run and passes it to the
    /// reconcile's gate.
    pub fn take_approval(&self) -> Option<String> {
        self.inner().approval.take()
    }

    /// `/status`.
    pub fn status_json(&self) -> serde_json::Value {
        let ready = self.is_ready();
        let inner = self.inner();
        let current = inner.current.as_ref().map(|c| {
            serde_json::json!({
                "run_id": c.run_id,
                "kind": c.kind,
                "since": c.since,
                "running_secs": c.at.elapsed().as_secs(),
            })
        });
        let last_success = inner.last_success.map(|(at, wall)| {
            serde_json::json!({
                "at": crate::time::format_rfc3339(wall),
                "age_secs": at.elapsed().as_secs(),
            })
        });
        serde_json::json!({
            "mode": inner.mode.unwrap_or(self.info.mode),
            "backend": self.info.backend,
            "workspace": self.info.workspace,
            "started_at": self.started_at,
            "uptime_secs": self.started.elapsed().as_secs(),
            "healthy": inner.alive,
            "ready": ready.is_ok(),
            "ready_reason": ready.err(),
            "ready_max_age_secs": self.info.ready_max_age.as_secs(),
            "current_run": current,
            "last_success": last_success,
            "pending": inner.pending,
            "held_revocations": inner.held,
            "approval_pending": inner.approval.is_some(),
            "runs": inner.runs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, GroupSlug, Permission, RepoSlug};
    use crate::plan::{Change, Guard, Plan};
    use crate::reconcile::{Inputs, SourceSummary};

    fn state(max_age: u64) -> DaemonState {
        DaemonState::new(
            StateInfo {
                mode: "apply",
                backend: "v1_groups".into(),
                workspace: "acme".into(),
                ready_max_age: Duration::from_secs(max_age),
                token: None,
            },
            Arc::new(Triggers::default()),
            Arc::new(Metrics::new().expect("metrics")),
        )
    }

    fn summary(kind: RunKind, outcome: &'static str, held: Option<&str>) -> RunSummary {
        RunSummary {
            run_id: "r".into(),
            kind,
            started_at: crate::time::now_rfc3339(),
            ended_at: crate::time::now_rfc3339(),
            duration_ms: 1,
            outcome,
            dry_run: false,
            changes: BTreeMap::new(),
            reasons: BTreeMap::new(),
            held: Vec::new(),
            held_revocations: held.map(str::to_owned),
            error_kind: None,
            errors: Vec::new(),
            notes: Vec::new(),
            pending: BTreeMap::new(),
            eta_secs: None,
            api_requests: 0,
            unresolved: None,
        }
    }

    fn remove_ann() -> Change {
        Change::RemoveMember {
            group: GroupSlug::from_name("developers"),
            account_id: AccountId::parse(&crate::model::synthetic_account_id("ann")).expect("id"),
            display_name: "Ann Example <ann@example.com>".into(),
        }
    }

    fn add_bob() -> Change {
        Change::AddMember {
            group: GroupSlug::from_name("developers"),
            account_id: AccountId::parse(&crate::model::synthetic_account_id("bob")).expect("id"),
            display_name: "Bob Stone".into(),
        }
    }

    fn grant() -> Change {
        Change::SetGrant {
            repo: RepoSlug::new("api"),
            group: GroupSlug::from_name("developers"),
            permission: Permission::parse("write").expect("permission"),
            previous: None,
        }
    }

    fn report(applied: bool, plan: Plan, outcomes: Vec<ChangeResult>) -> RunReport {
        RunReport {
            run_id: "abc123".into(),
            started_at: "2026-01-01T00:00:00.000Z".into(),
            duration_ms: 1500,
            timings_ms: Default::default(),
            applied,
            source: SourceSummary {
                description: "ldif".into(),
                people: 3,
                active: 2,
                leavers: 1,
                groups: 1,
                issues: Vec::new(),
                unresolved: Vec::new(),
            },
            repositories_in_scope: 1,
            grant_reader: None,
            membership_backend: crate::bitbucket::detect::choose(
                crate::config::MembershipBackendKind::V1Groups,
                None,
                false,
            ),
            plan,
            inputs: Inputs::default(),
            outcomes,
            api_requests: 7,
            api_requests_by_credential: BTreeMap::new(),
        }
    }

    fn planned(change: Change, reason: Reason, blocked: Option<BlockReason>) -> Planned {
        Planned {
            change,
            reason,
            blocked,
        }
    }

    fn leaver() -> Reason {
        Reason::Leaver {
            fact: "mail=ann@example.com nsAccountLock=TRUE".into(),
        }
    }

    fn rule() -> Reason {
        Reason::Rule {
            rule: "groups[0]".into(),
            detail: "member of engineering".into(),
        }
    }

    #[test]
    fn redact_replaces_every_word_with_an_address() {
        assert_eq!(
            redact("user ann@example.com (\"bob@x.org\")\nnot found: %40 ANN%40X.ORG"),
            "user <redacted> <redacted> not found: <redacted> <redacted>"
        );
        assert_eq!(redact("nothing here"), "nothing here");
    }

    #[test]
    fn a_dry_run_counts_planned_and_blocked_and_keeps_the_held_fingerprint() {
        let guard = Guard::Absolute {
            revocations: 1,
            limit: 0,
        };
        let plan = Plan {
            changes: vec![
                planned(
                    remove_ann(),
                    leaver(),
                    Some(BlockReason::SafetyGuard {
                        guard: guard.clone(),
                    }),
                ),
                planned(add_bob(), rule(), None),
                planned(grant(), rule(), None),
            ],
            held: vec![guard],
            revocations: "f00d".into(),
            ..Plan::default()
        };
        let s = RunSummary::from_report(&report(false, plan, Vec::new()), RunKind::Full);
        assert!(s.dry_run);
        assert_eq!(s.outcome, "failed", "a held revocation fails the run");
        assert_eq!(s.changes["remove_member"]["blocked"], 1);
        assert_eq!(s.changes["add_member"]["planned"], 1);
        assert_eq!(s.changes["set_grant"]["planned"], 1);
        assert_eq!(s.reasons["rule"], 2);
        assert_eq!(s.reasons["leaver"], 1);
        assert_eq!(s.held.len(), 1);
        assert_eq!(s.held[0].guard, "absolute");
        assert!(s.held[0].message.contains("safety.max_removals"));
        assert_eq!(s.held_revocations.as_deref(), Some("f00d"));
        assert!(
            s.errors.is_empty(),
            "the guard is shown in held: {:?}",
            s.errors
        );
        assert_eq!(s.api_requests, 7);
        let json = serde_json::to_string(&s).expect("json");
        for personal in ["@", "Ann", "Bob", "Stone", "Example", "example.com"] {
            assert!(!json.contains(personal), "{personal} in {json}");
        }
    }

    #[test]
    fn an_apply_counts_outcomes_pending_by_priority_and_the_latest_eta() {
        let result = |change: Change, reason: Reason, outcome: Outcome| ChangeResult {
            change,
            reason,
            outcome,
        };
        let deferred = |s: Option<u64>| Outcome::Deferred {
            why: "budget of admin spent".into(),
            resume_in_secs: s,
        };
        let plan = Plan {
            changes: vec![
                planned(remove_ann(), leaver(), None),
                planned(add_bob(), rule(), None),
                planned(grant(), rule(), None),
            ],
            revocations: "f00d".into(),
            ..Plan::default()
        };
        let outcomes = vec![
            result(remove_ann(), leaver(), deferred(Some(30))),
            result(add_bob(), rule(), deferred(Some(90))),
            result(
                grant(),
                rule(),
                Outcome::Failed {
                    error: "depends on remove Ann Example <ann@example.com>, which did not happen"
                        .into(),
                    status: Some(500),
                },
            ),
        ];
        let s = RunSummary::from_report(&report(true, plan, outcomes), RunKind::Full);
        assert!(!s.dry_run);
        assert_eq!(s.outcome, "failed");
        assert_eq!(s.changes["remove_member"]["deferred"], 1);
        assert_eq!(s.changes["set_grant"]["failed"], 1);
        assert_eq!(s.pending["offboarding"], 1);
        assert_eq!(s.pending["addition"], 1);
        assert_eq!(s.eta_secs, Some(90));
        assert_eq!(s.held_revocations, None, "nothing was held");
        assert_eq!(
            s.errors,
            vec![
                "set_grant failed: HTTP 500".to_owned(),
                "2 changes deferred to the next run: a request budget is spent".to_owned()
            ]
        );
        let json = serde_json::to_string(&s).expect("json");
        assert!(!json.contains('@') && !json.contains("Ann"), "{json}");
    }

    #[test]
    fn a_poll_summary_counts_its_revocations_and_says_where_they_went() {
        let applied = PollReport {
            seen_disabled: 4,
            new_leavers: vec![
                AccountId::parse(&crate::model::synthetic_account_id("ann")).expect("id")
            ],
            planned: 1,
            run_id: Some("p1".into()),
            outcomes: vec![ChangeResult {
                change: remove_ann(),
                reason: leaver(),
                outcome: Outcome::Applied,
            }],
            ..PollReport::default()
        };
        let s = RunSummary::from_poll(&applied, "2026-01-01T00:00:10.000Z", 2.5);
        assert_eq!(s.kind, RunKind::OffboardingPoll);
        assert_eq!(s.run_id, "p1");
        assert_eq!(s.outcome, "ok");
        assert!(!s.dry_run);
        assert_eq!(s.started_at, "2026-01-01T00:00:07.500Z");
        assert_eq!(s.duration_ms, 2500);
        assert_eq!(s.changes["remove_member"]["applied"], 1);
        assert_eq!(s.reasons["leaver"], 1);
        assert_eq!(
            s.notes,
            vec!["4 disabled people seen, 1 new leavers, 1 revocations planned"]
        );
        let json = serde_json::to_string(&s).expect("json");
        assert!(!json.contains('@') && !json.contains("Ann"), "{json}");

        let handed = PollReport {
            planned: 2,
            run_id: Some("full7".into()),
            submitted_to_live: true,
            ..PollReport::default()
        };
        let s = RunSummary::from_poll(&handed, "garbled", 0.1);
        assert_eq!(
            s.started_at, "garbled",
            "an unreadable end is kept as it is"
        );
        assert_eq!(
            s.notes[1],
            "the revocations went into the full run in progress (full7)"
        );

        let dry = PollReport {
            would: vec![planned(remove_ann(), leaver(), None)],
            ..PollReport::default()
        };
        let s = RunSummary::from_poll(&dry, "2026-01-01T00:00:10.000Z", 1.0);
        assert!(s.dry_run);
        assert_eq!(s.run_id, "none");
        assert_eq!(s.changes["remove_member"]["planned"], 1);
    }

    #[test]
    fn an_error_summary_is_redacted_and_labelled() {
        let e = RunError::PlanMoved("ann@example.com\nleft the group".into());
        let s = RunSummary::from_error("r1", &crate::time::now_rfc3339(), RunKind::Full, &e);
        assert_eq!(s.outcome, "error");
        assert_eq!(s.error_kind, Some("plan_moved"));
        assert_eq!(
            s.errors,
            vec!["the reviewed plan no longer matches, nothing changed: <redacted> left the group"]
        );
        assert!(s.duration_ms < 60_000);
        let bad = RunSummary::from_error("r2", "yesterday", RunKind::OffboardingPoll, &e);
        assert_eq!(bad.duration_ms, 0, "an unreadable start counts nothing");
    }

    #[test]
    fn many_distinct_errors_are_capped_and_repeats_counted() {
        let mut t = Tally::default();
        for i in 0..30 {
            t.add(format!("e{i}"));
        }
        t.add("e0".into());
        let lines = t.lines();
        assert_eq!(lines.len(), MAX_ERRORS + 1);
        assert_eq!(lines[0], "e0 (x2)");
        assert_eq!(
            lines[MAX_ERRORS],
            "and 10 more kinds of error (see the log)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_needs_the_loop_and_a_recent_successful_full_run() {
        let s = state(600);
        assert_eq!(
            s.is_ready(),
            Err("not ready: the scheduler loop is not running".into())
        );
        s.set_alive(true);
        assert!(s.is_healthy());
        s.run_started("r1", RunKind::Full);
        assert_eq!(
            s.is_ready(),
            Err("not ready: no successful reconcile yet (run r1 in progress)".into())
        );
        s.run_finished(summary(RunKind::Full, "error", None));
        assert_eq!(
            s.is_ready(),
            Err("not ready: no successful reconcile yet (last run r: error)".into())
        );
        s.run_finished(summary(RunKind::OffboardingPoll, "ok", None));
        assert!(
            s.is_ready().is_err(),
            "an off-boarding poll is not a reconcile"
        );
        s.run_finished(summary(RunKind::Full, "ok", None));
        assert_eq!(s.is_ready(), Ok(()));
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(s.is_ready(), Ok(()), "exactly the max age is still ready");
        s.run_finished(summary(RunKind::Full, "failed", None));
        assert_eq!(
            s.is_ready(),
            Ok(()),
            "a failure does not undo the last success"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            s.is_ready(),
            Err("not ready: the last successful reconcile was 601 s ago, more than http.ready_max_age_secs = 600".into())
        );
        s.set_alive(false);
        assert!(!s.is_healthy());
    }

    #[test]
    fn only_the_held_set_of_the_last_full_run_can_be_approved_once() {
        let s = state(600);
        assert_eq!(s.approve("f00d"), Err(ApproveError::NothingHeld));
        s.run_finished(summary(RunKind::Full, "failed", Some("f00d")));
        assert_eq!(
            s.approve("beef"),
            Err(ApproveError::Mismatch {
                held: "f00d".into()
            })
        );
        assert!(ApproveError::Mismatch {
            held: "f00d".into()
        }
        .to_string()
        .contains("f00d"));
        assert_eq!(s.take_approval(), None);
        assert_eq!(s.approve("f00d"), Ok(()));
        assert_eq!(s.status_json()["approval_pending"], true);
        assert_eq!(s.take_approval().as_deref(), Some("f00d"));
        assert_eq!(s.take_approval(), None, "once");

        // A poll does not change what the last full run held.
        s.run_finished(summary(RunKind::OffboardingPoll, "ok", None));
        assert_eq!(s.approve("f00d"), Ok(()));
        // A full run that holds another set drops the approval of the old one.
        s.run_finished(summary(RunKind::Full, "failed", Some("beef")));
        assert_eq!(s.take_approval(), None);
        s.run_finished(summary(RunKind::Full, "ok", None));
        assert_eq!(s.approve("beef"), Err(ApproveError::NothingHeld));
    }

    #[test]
    fn the_last_runs_are_kept_newest_first_and_pending_follows_them() {
        let s = state(600);
        for i in 0..25 {
            let mut r = summary(RunKind::Full, "ok", None);
            r.run_id = format!("r{i}");
            r.pending = BTreeMap::from([("removal".to_owned(), i)]);
            s.run_finished(r);
        }
        let status = s.status_json();
        let runs = status["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), KEPT_RUNS);
        assert_eq!(runs[0]["run_id"], "r24");
        assert_eq!(runs[KEPT_RUNS - 1]["run_id"], "r5");
        assert_eq!(status["pending"]["removal"], 24);
        s.set_pending(BTreeMap::from([("offboarding".to_owned(), 2)]));
        assert_eq!(s.status_json()["pending"]["offboarding"], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn status_shows_the_run_in_progress_and_the_last_success() {
        let s = state(600);
        s.set_alive(true);
        s.run_started("r9", RunKind::OffboardingPoll);
        tokio::time::advance(Duration::from_secs(5)).await;
        let st = s.status_json();
        assert_eq!(st["mode"], "apply");
        assert_eq!(st["backend"], "v1_groups");
        assert_eq!(st["workspace"], "acme");
        assert_eq!(st["uptime_secs"], 5);
        assert_eq!(st["healthy"], true);
        assert_eq!(st["ready"], false);
        assert_eq!(st["current_run"]["run_id"], "r9");
        assert_eq!(st["current_run"]["kind"], "offboarding_poll");
        assert_eq!(st["current_run"]["running_secs"], 5);
        assert!(st["last_success"].is_null());
        s.run_finished(summary(RunKind::Full, "ok", None));
        tokio::time::advance(Duration::from_secs(3)).await;
        let st = s.status_json();
        assert!(st["current_run"].is_null());
        assert_eq!(st["last_success"]["age_secs"], 3);
        assert_eq!(st["ready"], true);
        assert!(st["ready_reason"].is_null());
    }
}
