//! Applies a plan's changes through a prioritised worker pool and records every outcome in
//! the audit trail.
//!
//! - **Lanes**: one per credential, each with `apply.concurrency` workers; every request goes
//!   through the credential's budget ([`Budget`](crate::bitbucket::Budget): the pace, a 429
//!   pause of the whole credential). A spent budget stops the lane's remaining work for this
//!   run: it is reported *deferred* with an ETA and the next run's plan picks it up (the plan
//!   is a diff: nothing done is sent again).
//! - **Priorities** ([`queue::Priority`]): off-boarding first, then other removals, then
//!   additions, then repairs; a change submitted while thousands are queued
//!   ([`Applier::submit`]) starts as soon as a worker of its lane is free.
//! - **Dependencies** stay explicit: a group is created before its members and grants (a
//!   failed create blocks exactly those), a leaver's direct grants go before their
//!   memberships.
//! - **Circuits**: a refusal (401/403/405) blocks the rest of that family's changes of the
//!   same kind; `apply.circuit_failures` failures in a row (after retries) open the family's
//!   circuit for the run.
//! - **Verify** (`apply.verify`): what Bitbucket acknowledged is read back at the end; a lost
//!   write is sent once more, and what is still missing is reported failed.

pub mod audit;
pub mod queue;
pub mod recover;

use crate::bitbucket::{
    AdminApi, ApiError, ApiFamily, Clients, GrantState, MembershipBackend, Principal, Spent,
    Target, WriteError, Written,
};
use crate::config::{ApplySettings, GrantWrites};
use crate::model::{AccountId, GroupSlug};
use crate::plan::{BlockReason, Change, ChangeKind, OrgStatus, Plan, Planned, Reason};
use queue::{Priority, Queue};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What happened to one change.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Sent, and Bitbucket made the change (read back, when `apply.verify` is on).
    Applied,
    /// Sent, and Bitbucket answered success, not yet read back (verification pending, or it
    /// could not read).
    Accepted,
    /// Bitbucket said it was already so.
    AlreadyDone,
    Failed {
        error: String,
        status: Option<u16>,
    },
    /// Not sent, and why.
    Blocked {
        reason: BlockReason,
    },
    /// Not sent in this run: the credential's request budget is spent. Still wanted: the next
    /// run's plan has it again.
    Deferred {
        why: String,
        /// When the credential's window should be open again, if known.
        resume_in_secs: Option<u64>,
    },
}

/// The kinds of [`Outcome`], for counts and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    Applied,
    Accepted,
    AlreadyDone,
    Failed,
    Blocked,
    Deferred,
}

impl OutcomeKind {
    pub fn label(self) -> &'static str {
        match self {
            OutcomeKind::Applied => "applied",
            OutcomeKind::Accepted => "accepted",
            OutcomeKind::AlreadyDone => "already_done",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Blocked => "blocked",
            OutcomeKind::Deferred => "deferred",
        }
    }
}

impl Outcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Applied => OutcomeKind::Applied,
            Outcome::Accepted => OutcomeKind::Accepted,
            Outcome::AlreadyDone => OutcomeKind::AlreadyDone,
            Outcome::Failed { .. } => OutcomeKind::Failed,
            Outcome::Blocked { .. } => OutcomeKind::Blocked,
            Outcome::Deferred { .. } => OutcomeKind::Deferred,
        }
    }

    /// Applied, acknowledged, or already so: Bitbucket now matches the change (as far as it
    /// said).
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Outcome::Applied | Outcome::Accepted | Outcome::AlreadyDone
        )
    }

    fn deferred(s: &Spent) -> Outcome {
        Outcome::Deferred {
            why: s.to_string(),
            resume_in_secs: s.resume_in.map(|d| d.as_secs()),
        }
    }
}

/// One change of the plan, why it was made, and what happened to it.
#[derive(Clone, Debug, Serialize)]
pub struct ChangeResult {
    #[serde(flatten)]
    pub change: Change,
    pub reason: Reason,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The API family that performs a change: memberships by the backend's write family,
/// repository grants of groups by the configured grant writes, project and direct user grants
/// by 2.0 permissions-config (1.0 has no calls for them).
pub fn family_of(change: &Change, membership: ApiFamily, grants: GrantWrites) -> ApiFamily {
    match change {
        Change::CreateGroup { .. } | Change::AddMember { .. } | Change::RemoveMember { .. } => {
            membership
        }
        Change::SetGrant { .. } | Change::RemoveGrant { .. } => match grants {
            GrantWrites::PermissionsConfig => ApiFamily::PermissionsWrite,
            GrantWrites::GroupPrivileges => ApiFamily::GroupPrivilegesWrite,
        },
        Change::SetProjectGrant { .. }
        | Change::RemoveProjectGrant { .. }
        | Change::RemoveUserGrant { .. } => ApiFamily::PermissionsWrite,
        Change::SuspendInOrg { .. } | Change::RestoreInOrg { .. } => ApiFamily::AdminApi,
        // The 1.0 invitations, whichever backend writes memberships (they exist on classic
        // workspaces only).
        Change::InviteToGroup { .. } => ApiFamily::GroupsWrite,
    }
}

pub struct Applier<'a> {
    pub clients: &'a Clients,
    pub members: &'a dyn MembershipBackend,
    /// The organisation directory (`[admin_api]`): suspensions and restores.
    pub org: Option<&'a AdminApi>,
    pub grant_writes: GrantWrites,
    pub audit: &'a audit::Audit,
    pub run_id: &'a str,
    pub settings: ApplySettings,
    /// Cancelled when bbsync is stopping: no new change starts; the requests in flight finish
    /// and are recorded; what is left is deferred to the next run.
    pub stop: Option<&'a tokio_util::sync::CancellationToken>,
}

/// One change in the pool.
struct Job {
    change: Change,
    reason: Reason,
    family: ApiFamily,
    outcome: Option<Outcome>,
    /// The audit intent written before it was sent.
    intent: Option<audit::IntentId>,
}

/// The state of one apply: the queue and what the workers learned.
struct RunState {
    queue: Queue,
    jobs: Vec<Job>,
    /// Group -> the job creating it.
    creates: HashMap<GroupSlug, usize>,
    /// Account -> its direct grant removals.
    user_grants: HashMap<AccountId, Vec<usize>>,
    /// Account -> its membership removals (its organisation suspension waits for them).
    member_removals: HashMap<AccountId, Vec<usize>>,
    /// Refused this run: (family, kind of change), or (family, `None`) for every kind.
    refused: BTreeMap<(ApiFamily, Option<ChangeKind>), String>,
    /// Failures in a row per circuit ([`circuit`]), and the last error.
    failures: BTreeMap<(ApiFamily, bool), (u32, String)>,
    audit_broken: Option<String>,
    /// Families that have had a write succeed this run; until then one write at a time
    /// (a refused family costs one refused request, not `concurrency` of them).
    proven: std::collections::BTreeSet<ApiFamily>,
    /// Families whose first write is in flight, with that job.
    probing: BTreeMap<ApiFamily, usize>,
    /// Set once the queue ran dry: every worker of this drive stops (sticky, so a change
    /// submitted meanwhile waits for the next drive instead of stranding one worker).
    drained: bool,
    finished: usize,
    last_progress: Instant,
}

/// An apply in progress: [`Applier::drive`] works it, [`Applier::submit`] adds to it.
pub struct Run {
    state: Mutex<RunState>,
    notify: Notify,
    started: Instant,
}

impl Run {
    fn lock(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes not finished, by priority (for progress and status).
    pub fn pending(&self) -> BTreeMap<Priority, usize> {
        let st = self.lock();
        let mut out = BTreeMap::new();
        for lane in 0..st.queue.lanes() {
            for (i, n) in st.queue.pending(lane).into_iter().enumerate() {
                if n > 0 {
                    *out.entry(Priority::ALL[i]).or_insert(0) += n;
                }
            }
        }
        out
    }
}

/// How many acknowledged writes are read back one by one before a bulk listing is cheaper.
const TARGETED_VERIFY_MAX: usize = 50;

impl Applier<'_> {
    pub fn family(&self, change: &Change) -> ApiFamily {
        family_of(change, self.members.write_family(), self.grant_writes)
    }

    /// Runs the plan through the pool, verifies, and returns one result per planned change,
    /// in plan order.
    pub async fn apply(&self, plan: &Plan) -> Vec<ChangeResult> {
        let run = self.start(plan);
        self.drive(&run).await;
        self.finish(run).await
    }

    /// A run holding the plan's changes (blocked ones are recorded, not queued).
    pub fn start(&self, plan: &Plan) -> Run {
        let run = Run {
            state: Mutex::new(RunState {
                queue: Queue::new(self.clients.credential_count().max(1)),
                jobs: Vec::new(),
                creates: HashMap::new(),
                user_grants: HashMap::new(),
                member_removals: HashMap::new(),
                refused: BTreeMap::new(),
                failures: BTreeMap::new(),
                audit_broken: None,
                proven: Default::default(),
                probing: BTreeMap::new(),
                drained: false,
                finished: 0,
                last_progress: Instant::now(),
            }),
            notify: Notify::new(),
            started: Instant::now(),
        };
        self.submit(&run, &plan.changes);
        run
    }

    /// Adds changes to a run, e.g. a leaver's revocations found while a large apply is
    /// under way: they take their place by priority, ahead of queued additions. Changes
    /// submitted after [`Applier::drive`] returned wait for the next `drive`.
    pub fn submit(&self, run: &Run, changes: &[Planned]) {
        let mut records = Vec::new();
        {
            let mut st = run.lock();
            for p in changes {
                let family = self.family(&p.change);
                let id = st.jobs.len();
                st.jobs.push(Job {
                    change: p.change.clone(),
                    reason: p.reason.clone(),
                    family,
                    outcome: None,
                    intent: None,
                });
                let lane = self.clients.credential_index(family);
                let priority = Priority::of(&p.change, &p.reason);
                let mut deps = Vec::new();
                match &p.change {
                    Change::CreateGroup { group, .. } => {
                        st.creates.insert(group.clone(), id);
                    }
                    Change::RemoveUserGrant { account_id, .. } => {
                        st.user_grants
                            .entry(account_id.clone())
                            .or_default()
                            .push(id);
                    }
                    Change::RemoveMember {
                        account_id, group, ..
                    } => {
                        deps.extend(st.user_grants.get(account_id).into_iter().flatten());
                        st.member_removals
                            .entry(account_id.clone())
                            .or_default()
                            .push(id);
                        // A removal submitted after an addition of the same membership (the
                        // person left meanwhile) goes after it.
                        deps.extend(st.jobs[..id].iter().enumerate().filter_map(|(j, job)| {
                            matches!(&job.change, Change::AddMember { group: g, account_id: a, .. }
                                if g == group && a == account_id)
                            .then_some(j)
                        }));
                    }
                    // Suspended only once their memberships and direct grants are gone.
                    Change::SuspendInOrg { account_id, .. } => {
                        deps.extend(st.user_grants.get(account_id).into_iter().flatten());
                        deps.extend(st.member_removals.get(account_id).into_iter().flatten());
                    }
                    c => deps.extend(c.group().and_then(|g| st.creates.get(g))),
                }
                if let Some(reason) = &p.blocked {
                    // Decided before the run: never queued (its dependents fall with it).
                    let qid = st.queue.add_closed(lane, priority);
                    debug_assert_eq!(qid, id);
                    records.extend(self.settle(&mut st, id, blocked(reason.clone())));
                    continue;
                }
                let (qid, cancelled) = st.queue.add(lane, priority, &deps);
                debug_assert_eq!(qid, id);
                records.extend(self.cancelled(&mut st, cancelled));
            }
        }
        self.write_records(run, records);
        run.notify.notify_waiters();
    }

    /// People who became leavers while `run` is applying: their additions that have not
    /// started are withdrawn (blocked, `became_leaver`, and audited); returns the additions
    /// already started or done, whose membership the caller removes again (a removal waits
    /// for the addition of the same membership).
    pub fn withdraw_additions(
        &self,
        run: &Run,
        leavers: &std::collections::BTreeSet<AccountId>,
    ) -> Vec<(GroupSlug, AccountId, String)> {
        let mut records = Vec::new();
        let mut started = Vec::new();
        {
            let mut st = run.lock();
            let adds: Vec<usize> = st
                .jobs
                .iter()
                .enumerate()
                .filter_map(|(i, j)| match &j.change {
                    Change::AddMember { account_id, .. } if leavers.contains(account_id) => Some(i),
                    _ => None,
                })
                .collect();
            for id in adds {
                match st.queue.withdraw(id) {
                    Some(cancelled) => {
                        // The add and whatever waited for it.
                        for (j, _) in cancelled {
                            records.extend(self.settle(
                                &mut st,
                                j,
                                blocked(BlockReason::BecameLeaver),
                            ));
                        }
                    }
                    None => {
                        if let Change::AddMember {
                            group,
                            account_id,
                            display_name,
                        } = &st.jobs[id].change
                        {
                            if !matches!(st.jobs[id].outcome, Some(ref o) if !o.is_done()) {
                                started.push((
                                    group.clone(),
                                    account_id.clone(),
                                    display_name.clone(),
                                ));
                            }
                        }
                    }
                }
            }
        }
        self.write_records(run, records);
        run.notify.notify_waiters();
        started
    }

    /// Works the run until every queued change is finished (or deferred).
    pub async fn drive(&self, run: &Run) {
        let lanes = {
            let mut st = run.lock();
            st.drained = false;
            st.queue.lanes()
        };
        let workers = (0..lanes)
            .flat_map(|lane| (0..self.settings.concurrency.max(1)).map(move |_| lane))
            .map(|lane| self.worker(run, lane));
        futures_util::future::join_all(workers).await;
    }

    /// Verifies (when configured) and returns the results in submission order.
    pub async fn finish(&self, run: Run) -> Vec<ChangeResult> {
        if self.settings.verify {
            self.verify(&run).await;
        }
        let st = run.state.into_inner().unwrap_or_else(|e| e.into_inner());
        let deferred = st
            .jobs
            .iter()
            .filter(|j| matches!(j.outcome, Some(Outcome::Deferred { .. })))
            .count();
        if deferred > 0 {
            tracing::warn!(
                deferred,
                "changes deferred to the next run: a credential's request budget is spent"
            );
        }
        st.jobs
            .into_iter()
            .map(|j| ChangeResult {
                change: j.change,
                reason: j.reason,
                outcome: j.outcome.unwrap_or(Outcome::Deferred {
                    why: "the run ended before it started".into(),
                    resume_in_secs: None,
                }),
            })
            .collect()
    }

    async fn worker(&self, run: &Run, lane: usize) {
        loop {
            let notified = run.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let picked = {
                let mut st = run.lock();
                if !st.drained && self.stop.is_some_and(|t| t.is_cancelled()) {
                    let why = Outcome::Deferred {
                        why: "bbsync is stopping: not started, left for the next run".into(),
                        resume_in_secs: None,
                    };
                    let mut n = 0;
                    for l in 0..st.queue.lanes() {
                        for (j, _) in st.queue.stop_lane(l) {
                            st.jobs[j].outcome = Some(why.clone());
                            st.finished += 1;
                            n += 1;
                        }
                    }
                    if n > 0 {
                        tracing::warn!(
                            deferred = n,
                            "stopping: changes not started are left for the next run"
                        );
                    }
                    // The workers still holding a change finish it; then the queue is done.
                }
                if st.drained || st.queue.is_finished() {
                    if !st.drained {
                        st.drained = true;
                        drop(st);
                        run.notify.notify_waiters();
                    }
                    return;
                }
                match st.queue.next(lane) {
                    Some(id) => {
                        let family = st.jobs[id].family;
                        let pre = self.precheck(&st, id);
                        // Until a family has had a write succeed, one of its writes at a time.
                        let probe = pre.is_none() && !st.proven.contains(&family);
                        if probe && st.probing.contains_key(&family) {
                            // Its family's first write is out: wait for its answer.
                            st.queue.requeue(id);
                            None
                        } else {
                            if probe {
                                st.probing.insert(family, id);
                            }
                            Some((
                                id,
                                st.jobs[id].change.clone(),
                                st.jobs[id].reason.clone(),
                                family,
                                pre,
                            ))
                        }
                    }
                    None => None,
                }
            };
            let Some((id, change, reason, family, pre)) = picked else {
                match self.stop {
                    // Not stopping yet: woken by new work, a finished change, or the stop.
                    Some(stop) if !stop.is_cancelled() => {
                        tokio::select! {
                            _ = notified => {}
                            _ = stop.cancelled() => {}
                        }
                    }
                    // Stopping (or no stop): only a finished change can end the wait.
                    _ => notified.await,
                }
                continue;
            };
            let (outcome, counts) = match pre {
                Some(reason) => (blocked(reason), false),
                // Written ahead: no change reaches Bitbucket without its intent on disk.
                None => match self.audit.intent(self.run_id, &change, &reason) {
                    Ok(intent) => {
                        run.lock().jobs[id].intent = Some(intent);
                        self.execute(&change, family).await
                    }
                    Err(e) => {
                        tracing::error!(error = %e, change = %change, "cannot write the audit intent; not sending, and stopping this apply");
                        let error = e.to_string();
                        run.lock().audit_broken.get_or_insert(error.clone());
                        (blocked(BlockReason::AuditUnavailable { error }), false)
                    }
                },
            };
            let records = {
                let mut st = run.lock();
                if st.probing.get(&family) == Some(&id) {
                    st.probing.remove(&family);
                }
                if outcome.is_done() {
                    st.proven.insert(family);
                }
                if counts {
                    self.learn(&mut st, id, &outcome);
                }
                let mut records = Vec::new();
                if let Outcome::Deferred { .. } = &outcome {
                    // The lane's budget is spent: its queued work waits for the next run.
                    let stopped = st.queue.stop_lane(lane);
                    for (j, _) in stopped {
                        st.jobs[j].outcome = Some(outcome.clone());
                        st.finished += 1;
                    }
                }
                let cancelled = st.queue.finish(id, outcome.is_done());
                records.extend(self.settle(&mut st, id, outcome));
                records.extend(self.cancelled(&mut st, cancelled));
                self.progress(&mut st, run);
                records
            };
            self.write_records(run, records);
            run.notify.notify_waiters();
        }
    }

    /// A reason not to send this change, decided from what the run learned so far.
    fn precheck(&self, st: &RunState, id: usize) -> Option<BlockReason> {
        let j = &st.jobs[id];
        if let Some(error) = &st.audit_broken {
            return Some(BlockReason::AuditUnavailable {
                error: error.clone(),
            });
        }
        if let Some(error) = st
            .refused
            .get(&(j.family, None))
            .or_else(|| st.refused.get(&(j.family, Some(j.change.kind()))))
        {
            return Some(BlockReason::RefusedEarlier {
                family: j.family,
                credential: self.clients.credential(j.family).to_owned(),
                error: error.clone(),
            });
        }
        match st.failures.get(&circuit(&j.change, j.family)) {
            Some((n, error)) if *n >= self.settings.circuit_failures => {
                Some(BlockReason::CircuitOpen {
                    family: j.family,
                    failures: *n,
                    error: error.clone(),
                })
            }
            _ => None,
        }
    }

    /// Updates the run's circuits and refusals from one outcome.
    fn learn(&self, st: &mut RunState, id: usize, outcome: &Outcome) {
        let (family, kind) = (st.jobs[id].family, st.jobs[id].change.kind());
        let circuit = circuit(&st.jobs[id].change, family);
        match outcome {
            Outcome::Failed { error, status } => {
                if *status == Some(401) || (*status == Some(405) && !circuit.1) {
                    // The credential is rejected, or the family's writes are not allowed
                    // here (an organisation-managed workspace): every kind of change.
                    st.refused.insert((family, None), error.clone());
                } else if matches!(status, Some(403 | 405)) {
                    // Scopes: a credential may hold the right to one kind and not another
                    // (a project grant and a repository grant need different scopes); an
                    // organisation suspension refused says nothing of the memberships.
                    st.refused.insert((family, Some(kind)), error.clone());
                } else {
                    let e = st.failures.entry(circuit).or_insert((0, String::new()));
                    e.0 += 1;
                    e.1 = error.clone();
                    if e.0 == self.settings.circuit_failures {
                        tracing::error!(family = family.key(), failures = e.0, error, "circuit open: this family's remaining changes are not sent in this run");
                    }
                }
            }
            o if o.is_done() => {
                st.failures.remove(&circuit);
            }
            _ => {}
        }
    }

    /// Records a job's final outcome; returns the audit record to write.
    fn settle(&self, st: &mut RunState, id: usize, outcome: Outcome) -> Option<Record> {
        st.finished += 1;
        let j = &mut st.jobs[id];
        log_outcome(&j.change, &outcome);
        j.outcome = Some(outcome.clone());
        // Deferred work that was never attempted is not decided: the next run plans it again
        // (no record). One whose intent was written (its request found the budget spent, or
        // a retry did) closes that intent.
        (!matches!(outcome, Outcome::Deferred { .. }) || j.intent.is_some()).then(|| Record {
            change: j.change.clone(),
            reason: j.reason.clone(),
            intent: j.intent.clone(),
            outcome,
        })
    }

    /// Jobs cancelled because a job they depend on did not succeed.
    fn cancelled(&self, st: &mut RunState, cancelled: queue::Cancelled) -> Vec<Record> {
        let mut out = Vec::new();
        for (id, because) in cancelled {
            let dep = &st.jobs[because];
            let suspending = match &st.jobs[id].change {
                Change::SuspendInOrg { account_id, .. } => Some(account_id.clone()),
                _ => None,
            };
            let outcome = match (&dep.outcome, &dep.change, suspending) {
                (Some(o @ Outcome::Deferred { .. }), _, _) => o.clone(),
                // A suspension not sent because the audit broke says so (not "removals").
                (
                    Some(
                        o @ Outcome::Blocked {
                            reason: BlockReason::AuditUnavailable { .. },
                        },
                    ),
                    _,
                    Some(_),
                ) => o.clone(),
                (_, _, Some(account_id)) => blocked(BlockReason::RemovalsPending { account_id }),
                (why, Change::CreateGroup { group, .. }, None) => {
                    blocked(BlockReason::GroupNotCreated {
                        group: group.clone(),
                        why: match why {
                            Some(Outcome::Failed { error, .. }) => error.clone(),
                            Some(Outcome::Blocked { reason }) => reason.to_string(),
                            _ => "it did not happen".into(),
                        },
                    })
                }
                (_, Change::RemoveUserGrant { account_id, .. }, None) => {
                    blocked(BlockReason::DirectGrantsPending {
                        account_id: account_id.clone(),
                    })
                }
                (_, other, None) => Outcome::Failed {
                    error: format!("depends on {other}, which did not happen"),
                    status: None,
                },
            };
            out.extend(self.settle(st, id, outcome));
        }
        out
    }

    fn progress(&self, st: &mut RunState, run: &Run) {
        let total = st.jobs.len();
        let now = Instant::now();
        if st.finished != total
            && !st.finished.is_multiple_of(100)
            && now.duration_since(st.last_progress).as_secs() < 10
        {
            return;
        }
        st.last_progress = now;
        let elapsed = now.duration_since(run.started).as_secs_f64().max(0.001);
        let rate = st.finished as f64 / elapsed;
        let left = total - st.finished;
        let eta_secs = if rate > 0.0 {
            (left as f64 / rate) as u64
        } else {
            0
        };
        let mut pending = [0usize; 4];
        for lane in 0..st.queue.lanes() {
            for (i, n) in st.queue.pending(lane).into_iter().enumerate() {
                pending[i] += n;
            }
        }
        tracing::info!(
            done = st.finished,
            total,
            per_minute = (rate * 60.0) as u64,
            eta_secs,
            offboarding = pending[0],
            removals = pending[1],
            additions = pending[2],
            repairs = pending[3],
            "applying changes"
        );
    }

    fn write_records(&self, run: &Run, records: Vec<Record>) {
        for r in records {
            let written = match &r.intent {
                Some(id) => self.audit.outcome(id, &r.change, &r.reason, &r.outcome),
                None => self
                    .audit
                    .record(self.run_id, &r.change, &r.reason, &r.outcome),
            };
            if let Err(e) = written {
                // Lose nothing: without an audit trail, stop changing things.
                tracing::error!(error = %e, change = %r.change, outcome = r.outcome.kind().label(), "cannot write the audit trail; stopping this apply");
                run.lock().audit_broken.get_or_insert(e.to_string());
            }
        }
    }

    /// Sends one change; every error becomes an outcome. The flag says whether a failure
    /// counts toward the family's circuit (a failed read needed to name the person does not:
    /// it says nothing about the writes).
    async fn execute(&self, change: &Change, family: ApiFamily) -> (Outcome, bool) {
        let result = self.apply_one(change, family).await;
        let counts = !matches!(result, Err(WriteError::MembersUnreadable(_)));
        let outcome = match result {
            Ok(Written::Done) if self.settings.verify => Outcome::Accepted,
            Ok(Written::Done) => Outcome::Applied,
            Ok(Written::AlreadyDone) => Outcome::AlreadyDone,
            Err(WriteError::NotInWorkspace) => blocked(BlockReason::NotWorkspaceMember),
            Err(WriteError::MembersUnreadable(error)) => Outcome::Failed {
                error: format!("cannot read the workspace members to find the person: {error}"),
                status: None,
            },
            Err(WriteError::Api(e)) => match e.spent() {
                Some(s) => Outcome::deferred(s),
                None => Outcome::Failed {
                    error: e.to_string(),
                    status: e.status(),
                },
            },
        };
        (outcome, counts)
    }

    async fn apply_one(&self, c: &Change, family: ApiFamily) -> Result<Written, WriteError> {
        let cl = self.clients.get(family);
        Ok(match c {
            Change::RemoveMember {
                group, account_id, ..
            } => self.members.remove_member(group, account_id).await?,
            Change::AddMember {
                group, account_id, ..
            } => self.members.add_member(group, account_id).await?,
            Change::CreateGroup { name, group } => self.members.create_group(group, name).await?,
            Change::SetGrant {
                repo,
                group,
                permission,
                ..
            } => match self.grant_writes {
                GrantWrites::PermissionsConfig => {
                    cl.put_permission(
                        Target::Repo(repo),
                        Principal::Group(group),
                        permission.as_str(),
                    )
                    .await?
                }
                GrantWrites::GroupPrivileges => {
                    cl.put_group_privilege(repo, group, *permission).await?
                }
            },
            Change::RemoveGrant { repo, group, .. } => match self.grant_writes {
                GrantWrites::PermissionsConfig => {
                    cl.delete_permission(Target::Repo(repo), Principal::Group(group))
                        .await?
                }
                GrantWrites::GroupPrivileges => cl.delete_group_privilege(repo, group).await?,
            },
            Change::SetProjectGrant {
                project,
                group,
                permission,
                ..
            } => {
                cl.put_permission(
                    Target::Project(project),
                    Principal::Group(group),
                    permission.as_str(),
                )
                .await?
            }
            Change::RemoveProjectGrant { project, group, .. } => {
                cl.delete_permission(Target::Project(project), Principal::Group(group))
                    .await?
            }
            Change::RemoveUserGrant {
                target, account_id, ..
            } => {
                cl.delete_permission(Target::from(target), Principal::User(account_id.as_str()))
                    .await?
            }
            Change::InviteToGroup { group, email } => cl.invite_to_group(email, group).await?,
            Change::SuspendInOrg { account_id, .. } | Change::RestoreInOrg { account_id, .. } => {
                let suspend = matches!(c, Change::SuspendInOrg { .. });
                match self.org {
                    Some(org) => org.set_suspended(account_id, suspend).await?,
                    None => {
                        return Err(WriteError::Api(ApiError::NoCredential {
                            family:
                                "admin_api (offboarding.suspend_in_org needs an [admin_api] table)",
                        }))
                    }
                }
            }
        })
    }

    // ---- verification ------------------------------------------------------------------------

    /// Reads back every acknowledged change; a lost one is sent once more and read again;
    /// what is still missing is failed. What cannot be read stays `Accepted`.
    async fn verify(&self, run: &Run) {
        let ids: Vec<usize> = {
            let st = run.lock();
            // An addition undone later in the run (the person left meanwhile) is not read
            // back: its absence is the point, not a lost write.
            let undone = |i: usize| match &st.jobs[i].change {
                Change::AddMember {
                    group, account_id, ..
                } => st.jobs[i + 1..].iter().any(|j| {
                    matches!(&j.change, Change::RemoveMember { group: g, account_id: a, .. }
                        if g == group && a == account_id)
                }),
                _ => false,
            };
            (0..st.jobs.len())
                .filter(|&i| st.jobs[i].outcome == Some(Outcome::Accepted) && !undone(i))
                .collect()
        };
        if ids.is_empty() {
            return;
        }
        let lost_ids = self.judge(run, &ids, false).await;
        if lost_ids.is_empty() {
            return;
        }
        tracing::warn!(
            lost = lost_ids.len(),
            "Bitbucket acknowledged writes it does not show: sending them once more"
        );
        // Once more, through the pool (fresh jobs, so the queue stays append-only).
        let again: Vec<Planned> = {
            let st = run.lock();
            lost_ids
                .iter()
                .map(|&i| Planned {
                    change: st.jobs[i].change.clone(),
                    reason: st.jobs[i].reason.clone(),
                    blocked: None,
                })
                .collect()
        };
        let first_new = run.lock().jobs.len();
        self.submit(run, &again);
        self.drive(run).await;
        let redo: Vec<usize> = {
            let st = run.lock();
            (first_new..first_new + again.len())
                .filter(|&i| st.jobs[i].outcome == Some(Outcome::Accepted))
                .collect()
        };
        self.judge(run, &redo, true).await;
        // The first attempts' final word is the second attempt's; the retries are folded
        // into the originals.
        let mut st = run.lock();
        for (k, &orig) in lost_ids.iter().enumerate() {
            if let Some(o) = st.jobs[first_new + k].outcome.clone() {
                st.jobs[orig].outcome = Some(o);
            }
        }
        st.jobs.truncate(first_new);
    }

    /// Reads back acknowledged jobs and records the verdicts: shown, applied; not shown,
    /// failed (a lost write); not readable, left acknowledged. Returns the lost ones.
    async fn judge(&self, run: &Run, ids: &[usize], second: bool) -> Vec<usize> {
        let changes: Vec<Change> = {
            let st = run.lock();
            ids.iter().map(|&i| st.jobs[i].change.clone()).collect()
        };
        let verdicts = self.read_back(&changes).await;
        let unread = verdicts.iter().filter(|v| v.is_none()).count();
        if unread > 0 {
            tracing::warn!(
                unread,
                "cannot read back some acknowledged changes; they stay acknowledged, not verified"
            );
        }
        let mut lost = Vec::new();
        let mut records = Vec::new();
        {
            let mut st = run.lock();
            for (&i, verdict) in ids.iter().zip(verdicts) {
                let outcome = match verdict {
                    None => continue,
                    Some(true) => Outcome::Applied,
                    Some(false) => {
                        lost.push(i);
                        Outcome::Failed {
                            error: if second {
                                "Bitbucket acknowledged this write twice but does not show it (a lost write)".into()
                            } else {
                                "Bitbucket acknowledged this write but does not show it (a lost write); sending it once more".into()
                            },
                            status: None,
                        }
                    }
                };
                let j = &mut st.jobs[i];
                log_outcome(&j.change, &outcome);
                j.outcome = Some(outcome.clone());
                records.push(Record {
                    change: j.change.clone(),
                    reason: j.reason.clone(),
                    intent: j.intent.clone(),
                    outcome,
                });
            }
        }
        self.write_records(run, records);
        lost
    }

    /// Whether Bitbucket shows each change: `Some(true)` shown, `Some(false)` not shown,
    /// `None` when it could not be read.
    async fn read_back(&self, changes: &[Change]) -> Vec<Option<bool>> {
        let warn = |what: &str, e: &ApiError| {
            tracing::warn!(error = %e, what, "read-back failed");
        };
        let memberships = changes.iter().any(|c| {
            matches!(
                c,
                Change::CreateGroup { .. } | Change::AddMember { .. } | Change::RemoveMember { .. }
            )
        });
        let groups = match memberships {
            true => self
                .members
                .read_groups()
                .await
                .map_err(|e| warn("groups", &e))
                .ok(),
            false => None,
        };
        let repo_grants = changes
            .iter()
            .filter(|c| matches!(c, Change::SetGrant { .. } | Change::RemoveGrant { .. }))
            .count();
        let bulk = match repo_grants > TARGETED_VERIFY_MAX {
            true => crate::bitbucket::V1GroupPrivileges(
                self.clients.shared(ApiFamily::GroupPrivilegesRead),
            )
            .read(&[])
            .await
            .map_err(|e| warn("group privileges", &e))
            .ok(),
            false => None,
        };
        let org_ids: Vec<AccountId> = changes
            .iter()
            .filter_map(|c| match c {
                Change::SuspendInOrg { account_id, .. }
                | Change::RestoreInOrg { account_id, .. } => Some(account_id.clone()),
                _ => None,
            })
            .collect();
        let org = match (org_ids.is_empty(), self.org) {
            (false, Some(o)) => o
                .org_users(&org_ids)
                .await
                .map_err(|e| warn("organisation users", &e))
                .ok(),
            _ => None,
        };
        let invitations = match changes
            .iter()
            .any(|c| matches!(c, Change::InviteToGroup { .. }))
        {
            true => self
                .clients
                .get(ApiFamily::GroupsRead)
                .group_invitations()
                .await
                .map_err(|e| warn("invitations", &e))
                .ok(),
            false => None,
        };
        let org_status = |id: &AccountId, want: OrgStatus| -> Option<bool> {
            org.as_ref()
                .map(|o| o.get(id).map(|u| u.status) == Some(want))
        };
        let read = self.clients.get(ApiFamily::PermissionsRead);
        let member = |group: &GroupSlug, id: &AccountId| -> Option<bool> {
            groups
                .as_ref()
                .map(|g| g.get(group).is_some_and(|g| g.members.contains_key(id)))
        };
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            let verdict = match (c, &bulk) {
                (Change::CreateGroup { group, .. }, _) => {
                    groups.as_ref().map(|g| g.contains_key(group))
                }
                (
                    Change::AddMember {
                        group, account_id, ..
                    },
                    _,
                ) => member(group, account_id),
                (
                    Change::RemoveMember {
                        group, account_id, ..
                    },
                    _,
                ) => member(group, account_id).map(|m| !m),
                (
                    Change::SetGrant {
                        repo,
                        group,
                        permission,
                        ..
                    },
                    Some(b),
                ) => Some(b.get(&(repo.clone(), group.clone())) == Some(permission)),
                (Change::RemoveGrant { repo, group, .. }, Some(b)) => {
                    Some(!b.contains_key(&(repo.clone(), group.clone())))
                }
                (Change::SuspendInOrg { account_id, .. }, _) => {
                    org_status(account_id, OrgStatus::Suspended)
                }
                (Change::RestoreInOrg { account_id, .. }, _) => {
                    org_status(account_id, OrgStatus::Active)
                }
                (Change::InviteToGroup { group, email }, _) => invitations.as_ref().map(|i| {
                    i.contains(&(
                        crate::model::Email::new(email).folded().to_owned(),
                        group.clone(),
                    ))
                }),
                (grant, _) => match shows_grant(read, grant).await {
                    Ok(v) => v,
                    Err(e) => {
                        warn("permission", &e);
                        None
                    }
                },
            };
            out.push(verdict);
        }
        out
    }
}

/// The circuit a change counts toward: its family, with the side features apart (the
/// organisation suspensions and restores, the invitations): their keys write memberships
/// too, and a failing suspend or invitation endpoint (an HR email Bitbucket refuses) must not
/// stop anyone's removals.
fn circuit(change: &Change, family: ApiFamily) -> (ApiFamily, bool) {
    (
        family,
        matches!(
            change,
            Change::SuspendInOrg { .. }
                | Change::RestoreInOrg { .. }
                | Change::InviteToGroup { .. }
        ),
    )
}

/// An audit record to write once the run's lock is released.
struct Record {
    change: Change,
    reason: Reason,
    /// The intent it closes (sent changes); `None` for decisions (never sent).
    intent: Option<audit::IntentId>,
    outcome: Outcome,
}

fn blocked(reason: BlockReason) -> Outcome {
    Outcome::Blocked { reason }
}

/// Whether Bitbucket shows a grant change, by one targeted permissions-config read (verify
/// and crash recovery alike); `None` for membership changes, which are read in bulk.
pub(crate) async fn shows_grant(
    read: &crate::bitbucket::Client,
    change: &Change,
) -> Result<Option<bool>, ApiError> {
    let (on, who) = match change {
        Change::SetGrant { repo, group, .. } | Change::RemoveGrant { repo, group, .. } => {
            (Target::Repo(repo), Principal::Group(group))
        }
        Change::SetProjectGrant { project, group, .. }
        | Change::RemoveProjectGrant { project, group, .. } => {
            (Target::Project(project), Principal::Group(group))
        }
        Change::RemoveUserGrant {
            target, account_id, ..
        } => (Target::from(target), Principal::User(account_id.as_str())),
        _ => return Ok(None),
    };
    let now = read.permission(on, who).await?;
    Ok(Some(match change {
        Change::SetGrant { permission, .. } => now.as_deref() == Some(permission.as_str()),
        Change::SetProjectGrant { permission, .. } => now.as_deref() == Some(permission.as_str()),
        _ => now.is_none(),
    }))
}

fn log_outcome(change: &Change, outcome: &Outcome) {
    match outcome {
        Outcome::Failed { error, .. } => tracing::error!(change = %change, error, "change failed"),
        Outcome::Blocked { reason } => {
            tracing::warn!(change = %change, reason = %reason, kind = reason.label(), "change blocked")
        }
        Outcome::Deferred { .. } => {
            tracing::debug!(change = %change, "change deferred to the next run")
        }
        _ => tracing::info!(change = %change, outcome = outcome.kind().label(), "change"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_are_the_results_the_audit_trail_records() {
        for (o, kind) in [
            (Outcome::Applied, OutcomeKind::Applied),
            (Outcome::AlreadyDone, OutcomeKind::AlreadyDone),
            (
                Outcome::Failed {
                    error: "e".into(),
                    status: None,
                },
                OutcomeKind::Failed,
            ),
            (
                Outcome::Blocked {
                    reason: BlockReason::NotWorkspaceMember,
                },
                OutcomeKind::Blocked,
            ),
        ] {
            assert_eq!(o.kind(), kind);
            assert_eq!(
                serde_json::to_value(&o).expect("json")["result"],
                kind.label()
            );
            assert_eq!(serde_json::to_value(kind).expect("json"), kind.label());
            assert_eq!(
                o.is_done(),
                matches!(kind, OutcomeKind::Applied | OutcomeKind::AlreadyDone)
            );
        }
    }
}
