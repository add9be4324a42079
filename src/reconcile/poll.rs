//! The fast off-boarding poll: between full reconciles, a light read of only who became a
//! leaver, and their revocations through the highest priority.
//!
//! - The read is [`Source::read_leavers`](crate::source::Source::read_leavers): for LDAP the
//!   people modified since the last full read (with a margin for the clocks of bbsync and the
//!   server), plus the DNs `source.disabled_filter` matches; a file source is read whole, and
//!   parsed only when it differs from what the last full read parsed.
//! - Someone is a new leaver when the poll finds them disabled and the last full run saw them
//!   active. Their revocations are planned by the same planner, from the last full run's view
//!   of Bitbucket and with the same safety guards, and only those revocations are applied:
//!   nothing else the poll could plan (drift, additions) is its business.
//! - While a full run is applying, the revocations go into that run, ahead of everything
//!   queued; otherwise the poll applies them itself (holding the run slot, so no full run
//!   plans meanwhile). A poll that fails changes nothing: the next full reconcile still finds
//!   the leaver.
//! - Direct (per-user) grants of a new leaver are not read by the poll (one listing per
//!   managed repository); the next full reconcile removes them.

use super::spill::{self, Parked, SpillError};
use super::{Reconciler, RunError};
use crate::apply::{Applier, ChangeResult, Run};
use crate::bitbucket::ApiFamily;
use crate::mapping::{Desired, Leaver};
use crate::model::{AccountId, Dn};
use crate::plan::{self, Actual, BlockReason, Change, Plan, Planned, Policy};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What the last full run saw.
pub(super) struct Snapshot {
    /// Random, per snapshot: tells two snapshots apart, in memory and on disk.
    pub generation: u64,
    /// When its directory read started.
    pub read_at: SystemTime,
    /// Everyone with a usable entry: DN and display name.
    pub people: BTreeMap<AccountId, (Dn, String)>,
    pub desired: Desired,
    pub actual: Actual,
    pub policy: Policy,
    pub membership: ApiFamily,
    /// Who is a workspace member, with the UUIDs the run's group read learnt (the 1.0
    /// backend itself, or the lookups the Admin API backend asks).
    pub members: Arc<crate::bitbucket::V1Groups>,
    /// The run's membership backend: what the poll's revocations are written with.
    pub backend: Arc<dyn crate::bitbucket::MembershipBackend>,
}

/// The last full run's snapshot: in memory, or parked on disk once that run has ended
/// (see [`super::spill`]).
#[derive(Clone)]
pub(super) enum Slot {
    Loaded(Arc<Snapshot>),
    Parked(Arc<Parked>),
}

impl Slot {
    pub fn generation(&self) -> u64 {
        match self {
            Slot::Loaded(s) => s.generation,
            Slot::Parked(p) => p.generation,
        }
    }

    fn read_at(&self) -> SystemTime {
        match self {
            Slot::Loaded(s) => s.read_at,
            Slot::Parked(p) => p.read_at,
        }
    }
}

/// The reconciler's view shared with the poll.
#[derive(Default)]
pub(super) struct Current {
    pub snapshot: Option<Slot>,
    /// The apply in progress, with its run id.
    pub live: Option<(Arc<Run>, String)>,
    /// Revoked by polls since the snapshot was taken (not revoked twice).
    pub revoked: BTreeSet<AccountId>,
    /// Normalised DNs of disabled entries a poll has already judged against this snapshot
    /// (revoked, or not a new leaver): a parked snapshot is not read back for them again.
    /// Exact, not hashed: a collision here could hide someone.
    pub settled: HashSet<String>,
}

/// What happened to a poll's revocations at the apply in progress.
enum Live {
    Submitted(String),
    /// That apply planned from a newer snapshot.
    Stale,
    None,
}

/// What one poll did.
#[derive(Debug, Default)]
pub struct PollReport {
    /// Disabled people the light read returned.
    pub seen_disabled: usize,
    /// Of them, people the last full run saw active.
    pub new_leavers: Vec<AccountId>,
    /// Revocations planned for them.
    pub planned: usize,
    /// The run they went into: the full run in progress, or the poll's own.
    pub run_id: Option<String>,
    /// True when they were added to a full run in progress (its report has the outcomes).
    pub submitted_to_live: bool,
    /// The outcomes, when the poll applied them itself (empty in dry-run mode).
    pub outcomes: Vec<ChangeResult>,
    /// The revocations a dry-run poll would make.
    pub would: Vec<Planned>,
    /// No full run has finished planning yet: nothing to compare with.
    pub no_baseline: bool,
}

impl PollReport {
    /// Whether every revocation it applied is done (or it had nothing to do).
    pub fn ok(&self) -> bool {
        self.outcomes.iter().all(|o| o.outcome.is_done())
    }
}

/// How far before the last full read the poll looks: the clocks of bbsync and the directory
/// server may disagree, and a change made while the full read was running may be missing
/// from it.
const CLOCK_MARGIN: Duration = Duration::from_secs(300);

/// The revocations of `leavers` (account id -> why) that `snapshot` would plan: the
/// snapshot's desired state with them marked as leavers, through the planner and its guards,
/// keeping only their off-boarding changes.
pub(super) fn revocations_for(
    snapshot: &Snapshot,
    leavers: &BTreeMap<AccountId, String>,
    now: SystemTime,
) -> Plan {
    let mut desired = snapshot.desired.clone();
    for (id, why) in leavers {
        for g in desired.groups.values_mut() {
            g.members.remove(id);
        }
        let display_name = snapshot
            .people
            .get(id)
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        desired.leavers.insert(
            id.clone(),
            Leaver {
                display_name,
                reason: why.clone(),
            },
        );
    }
    let policy = Policy {
        now,
        ..snapshot.policy.clone()
    };
    let mut planned = plan::plan(&desired, &snapshot.actual, &policy);
    planned.changes.retain(|p| {
        let who = match &p.change {
            Change::RemoveMember { account_id, .. }
            | Change::RemoveUserGrant { account_id, .. } => account_id,
            _ => return false,
        };
        p.reason.is_offboarding() && leavers.contains_key(who)
    });
    // The guards judge these revocations alone: the snapshot's own, planned from Bitbucket as
    // it was before that run applied them, are done or the full run's business.
    let revoking: Vec<&Change> = planned
        .changes
        .iter()
        .map(|p| &p.change)
        .filter(|c| c.is_revocation())
        .collect();
    planned.held = plan::guards(&revoking, &desired, &snapshot.actual, &policy);
    for p in &mut planned.changes {
        p.blocked = planned.held.first().map(|guard| BlockReason::SafetyGuard {
            guard: guard.clone(),
        });
    }
    planned.skipped.clear();
    planned.notes.clear();
    planned.warnings.clear();
    planned
}

/// Who among `found` became a leaver since `snapshot` (account id -> why): disabled now,
/// active in the snapshot under the same entry, and not revoked by a poll already.
fn new_leavers(
    found: &crate::source::ldap::Leavers,
    snapshot: &Snapshot,
    revoked: &BTreeSet<AccountId>,
) -> BTreeMap<AccountId, String> {
    let mut leavers = BTreeMap::new();
    for (id, dn, why) in &found.disabled {
        // The entry the full read had for this id: another one with the same id (which the
        // light read alone cannot see is a duplicate) is left to the next full read.
        if snapshot
            .people
            .get(id)
            .is_some_and(|(known, _)| known.normalised() == dn.normalised())
        {
            leavers.insert(id.clone(), why.clone());
        }
    }
    if !found.by_filter.is_empty() {
        let by_dn: HashMap<&str, &AccountId> = snapshot
            .people
            .iter()
            .map(|(id, (dn, _))| (dn.normalised(), id))
            .collect();
        for dn in &found.by_filter {
            if let Some(id) = by_dn.get(dn.normalised()) {
                leavers
                    .entry((*id).clone())
                    .or_insert_with(|| "matches source.disabled_filter".to_owned());
            }
        }
    }
    leavers.retain(|id, _| !snapshot.desired.leavers.contains_key(id) && !revoked.contains(id));
    leavers
}

/// Whether `found` names someone `parked` saw active who is not settled yet: only then is the
/// parked snapshot worth reading back.
fn may_be_news(
    found: &crate::source::ldap::Leavers,
    parked: &Parked,
    settled: &HashSet<String>,
) -> bool {
    found
        .dns()
        .any(|dn| parked.was_active(dn) && !settled.contains(dn.normalised()))
}

impl Reconciler {
    pub(super) fn keep_snapshot(&self, snapshot: Snapshot) {
        // The directory text this snapshot was built from is the poll's baseline now.
        self.source.confirm_full_read();
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        cur.snapshot = Some(Slot::Loaded(Arc::new(snapshot)));
        cur.revoked.clear();
        cur.settled.clear();
    }

    /// Moves the last full run's snapshot out of memory into the state directory (see
    /// [`super::spill`]); the daemon calls it after each full run. No-op without a state
    /// directory, while an apply is in progress, or when it is parked already; a snapshot
    /// that cannot be written stays in memory.
    pub async fn park_snapshot(&self) {
        let Some(dir) = self.lock_dir() else {
            return;
        };
        let snapshot = {
            let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
            match (&cur.snapshot, &cur.live) {
                (Some(Slot::Loaded(s)), None) => Arc::clone(s),
                _ => return,
            }
        };
        let started = std::time::Instant::now();
        let generation = snapshot.generation;
        let parked =
            tokio::task::spawn_blocking(move || spill::park(&snapshot, &dir).map(Arc::new)).await;
        let parked = match parked {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot park the off-boarding poll's snapshot on disk; it stays in memory");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "parking the off-boarding poll's snapshot failed; it stays in memory");
                return;
            }
        };
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        // A run that started meanwhile has a newer snapshot: this file is not its.
        if cur.snapshot.as_ref().map(Slot::generation) == Some(generation) && cur.live.is_none() {
            tracing::info!(
                path = %parked.path.display(),
                bytes = parked.bytes,
                ms = started.elapsed().as_millis() as u64,
                "off-boarding poll's snapshot parked on disk until a poll needs it"
            );
            cur.snapshot = Some(Slot::Parked(parked));
        }
    }

    /// Whether the poll's snapshot is parked on disk (else in memory, or there is none yet).
    pub fn snapshot_parked(&self) -> bool {
        matches!(self.slot(), Some(Slot::Parked(_)))
    }

    /// Reads a parked snapshot back.
    async fn unpark(&self, parked: &Arc<Parked>) -> Result<Arc<Snapshot>, RunError> {
        let members = self.clients.v1_groups();
        let p = Arc::clone(parked);
        let started = std::time::Instant::now();
        let read = tokio::task::spawn_blocking(move || spill::unpark(&p, members))
            .await
            .map_err(|e| SpillError::Io {
                path: parked.path.display().to_string(),
                source: std::io::Error::other(e),
            })??;
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "off-boarding poll read its parked snapshot back"
        );
        let mut read = read;
        // The run wrote with the Admin API: so do its poll's revocations.
        if read.membership == ApiFamily::AdminApi {
            read.backend = self.backend_for(
                crate::config::MembershipBackendKind::AdminApi,
                &read.members,
            );
        }
        Ok(Arc::new(read))
    }

    /// Applies `plan` as the live run: a poll meanwhile adds its revocations to it.
    pub(super) async fn apply_live(&self, applier: &Applier<'_>, plan: &Plan) -> Vec<ChangeResult> {
        let run = Arc::new(applier.start(plan));
        self.set_live(Some((Arc::clone(&run), applier.run_id.to_owned())));
        loop {
            applier.drive(&run).await;
            // Submissions happen under this lock: once cleared, none can come, and what was
            // submitted after the drive ended is driven now.
            let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if run.pending().is_empty() || self.shutdown.is_cancelled() {
                cur.live = None;
                break;
            }
        }
        self.live_changed.notify_waiters();
        match Arc::try_unwrap(run) {
            Ok(run) => applier.finish(run).await,
            // Unreachable: only this function and `current.live` held it.
            Err(_) => Vec::new(),
        }
    }

    fn set_live(&self, live: Option<(Arc<Run>, String)>) {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).live = live;
        self.live_changed.notify_waiters();
    }

    /// One off-boarding poll (see the module doc). `apply`: write (else log what it would do).
    pub async fn poll_leavers(&self, apply: bool) -> Result<PollReport, RunError> {
        let Some(first) = self.slot() else {
            return Ok(PollReport {
                no_baseline: true,
                ..PollReport::default()
            });
        };
        let since = first
            .read_at()
            .checked_sub(CLOCK_MARGIN)
            .unwrap_or(first.read_at());
        let found = self.source.read_leavers(since).await?;
        let mut report = PollReport {
            seen_disabled: found.disabled.len() + found.by_filter.len(),
            ..PollReport::default()
        };
        // A parked snapshot read back by this poll.
        let mut loaded: Option<Arc<Snapshot>> = None;
        loop {
            // Armed before the live run is looked at: one that goes live after the look
            // still wakes this poll.
            let wait_live = self.live_changed.notified();
            tokio::pin!(wait_live);
            wait_live.as_mut().enable();
            // The newest snapshot: a full run may have finished planning meanwhile, and seen
            // some of these people disabled already.
            let (slot, revoked, unsettled) = {
                let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
                let slot = cur.snapshot.clone().unwrap_or_else(|| first.clone());
                let unsettled = match &slot {
                    Slot::Parked(p) => may_be_news(&found, p, &cur.settled),
                    Slot::Loaded(_) => true,
                };
                (slot, cur.revoked.clone(), unsettled)
            };
            let snapshot = match slot {
                Slot::Loaded(s) => s,
                Slot::Parked(p) => match loaded.as_ref().filter(|s| s.generation == p.generation) {
                    Some(s) => Arc::clone(s),
                    // Nobody the snapshot saw active, or only people judged already.
                    None if !unsettled => {
                        report.new_leavers.clear();
                        report.planned = 0;
                        return Ok(report);
                    }
                    None => {
                        let s = self.unpark(&p).await?;
                        loaded = Some(Arc::clone(&s));
                        s
                    }
                },
            };
            let leavers = new_leavers(&found, &snapshot, &revoked);
            self.settle(&snapshot, &found, &leavers);
            report.new_leavers = leavers.keys().cloned().collect();
            if leavers.is_empty() {
                report.planned = 0;
                return Ok(report);
            }
            let mut plan = revocations_for(&snapshot, &leavers, SystemTime::now());
            report.planned = plan.changes.len();
            tracing::warn!(
                leavers = leavers.len(),
                revocations = plan.changes.len(),
                held = !plan.held.is_empty(),
                "off-boarding poll: people became leavers since the last full reconcile"
            );
            if !apply {
                for p in &plan.changes {
                    tracing::info!(change = %p.change, reason = %p.reason, kind = p.change.kind().label(), "would change (dry run, off-boarding poll)");
                }
                report.would = plan.changes;
                return Ok(report);
            }
            self.block_what_credentials_cannot_do(&mut plan, snapshot.membership)
                .await;
            // Into the apply in progress, if there is one (its additions for them withdrawn).
            match self.submit_to_live(&snapshot, &mut plan, &leavers) {
                Live::Submitted(run_id) => {
                    self.mark_revoked(&snapshot, &leavers);
                    report.planned = plan.changes.len();
                    report.run_id = Some(run_id);
                    report.submitted_to_live = true;
                    return Ok(report);
                }
                Live::Stale => continue,
                Live::None => {}
            }
            if plan.changes.is_empty() {
                // In no managed group: nothing to take (the next full run re-checks).
                self.mark_revoked(&snapshot, &leavers);
                return Ok(report);
            }
            tokio::select! {
                slot = self.slot.lock() => {
                    // The slot is ours. A full run that finished meanwhile may have seen them
                    // already, or changed what they have: plan again from its view.
                    let same = self
                        .slot()
                        .is_some_and(|s| s.generation() == snapshot.generation);
                    if !same {
                        drop(slot);
                        continue;
                    }
                    let _slot = slot;
                    return self.apply_poll(plan, leavers, report, &snapshot).await;
                }
                _ = wait_live => {}
            }
        }
    }

    /// The unfinished work of the apply in progress, by priority (`None`: none is running).
    pub fn live_pending(&self) -> Option<BTreeMap<crate::apply::queue::Priority, usize>> {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        cur.live.as_ref().map(|(run, _)| run.pending())
    }

    fn slot(&self) -> Option<Slot> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot
            .clone()
    }

    fn mark_revoked(&self, snapshot: &Snapshot, leavers: &BTreeMap<AccountId, String>) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        cur.revoked.extend(leavers.keys().cloned());
        if cur.snapshot.as_ref().map(Slot::generation) == Some(snapshot.generation) {
            let dns = leavers
                .keys()
                .filter_map(|id| snapshot.people.get(id))
                .map(|(dn, _)| dn.normalised().to_owned());
            cur.settled.extend(dns);
        }
    }

    /// Notes that the entries of `found` other than `leavers`' are no news for `snapshot`
    /// (leavers already, unknown, or another entry's id): a parked snapshot is not read back
    /// for them again. The leavers' own are settled once their revocations are decided.
    fn settle(
        &self,
        snapshot: &Snapshot,
        found: &crate::source::ldap::Leavers,
        leavers: &BTreeMap<AccountId, String>,
    ) {
        let pending: HashSet<&str> = leavers
            .keys()
            .filter_map(|id| snapshot.people.get(id))
            .map(|(dn, _)| dn.normalised())
            .collect();
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.snapshot.as_ref().map(Slot::generation) == Some(snapshot.generation) {
            let dns = found
                .dns()
                .map(|dn| dn.normalised())
                .filter(|dn| !pending.contains(dn))
                .map(str::to_owned);
            cur.settled.extend(dns);
        }
    }

    /// Adds the plan's changes to the full run applying now; its run id, or `None`. That
    /// run's additions for the leavers are withdrawn first, and those already made are
    /// undone (a removal after the addition).
    fn submit_to_live(
        &self,
        snapshot: &Arc<Snapshot>,
        plan: &mut Plan,
        leavers: &BTreeMap<AccountId, String>,
    ) -> Live {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let (Some((run, run_id)), Some(live_snapshot)) = (cur.live.as_ref(), cur.snapshot.as_ref())
        else {
            return Live::None;
        };
        if live_snapshot.generation() != snapshot.generation {
            // The apply in progress planned from a newer view: plan again from it.
            return Live::Stale;
        }
        let members = Arc::clone(&snapshot.backend);
        let Ok(audit) = self.audit() else {
            return Live::None;
        };
        let applier = Applier {
            clients: &self.clients,
            members: &*members,
            // The poll plans no organisation suspension (the next full run does).
            org: None,
            grant_writes: self.cfg.bitbucket.grant_writes,
            audit: &audit,
            run_id,
            settings: self.cfg.apply.clone(),
            stop: Some(&self.shutdown),
        };
        let ids: BTreeSet<AccountId> = leavers.keys().cloned().collect();
        let held = plan.held.first().cloned();
        for (group, account_id, display_name) in applier.withdraw_additions(run, &ids) {
            let fact = leavers.get(&account_id).cloned().unwrap_or_default();
            plan.changes.push(Planned {
                change: Change::RemoveMember {
                    group,
                    account_id,
                    display_name,
                },
                reason: plan::Reason::Leaver { fact },
                blocked: held.clone().map(|guard| BlockReason::SafetyGuard { guard }),
            });
        }
        applier.submit(run, &plan.changes);
        tracing::info!(
            run_id,
            revocations = plan.changes.len(),
            "off-boarding poll: revocations added to the apply in progress, ahead of its queue; its additions for these people withdrawn"
        );
        Live::Submitted(run_id.clone())
    }

    /// The poll's own apply (no full run in progress; the slot is held).
    async fn apply_poll(
        &self,
        plan: Plan,
        leavers: BTreeMap<AccountId, String>,
        mut report: PollReport,
        snapshot: &Snapshot,
    ) -> Result<PollReport, RunError> {
        self.take_lock()?;
        self.clients.new_run();
        let audit = self.audit()?;
        let run_id = format!("poll-{:x}", fastrand::u64(..));
        let applier = Applier {
            clients: &self.clients,
            members: &*snapshot.backend,
            org: None,
            grant_writes: self.cfg.bitbucket.grant_writes,
            audit: &audit,
            run_id: &run_id,
            settings: self.cfg.apply.clone(),
            stop: Some(&self.shutdown),
        };
        report.outcomes = tracing::Instrument::instrument(
            applier.apply(&plan),
            tracing::info_span!("offboarding_poll", run_id),
        )
        .await;
        // Done, or decided (a guard held it: the full run reports and holds it too); what
        // failed or was deferred is tried again by the next poll.
        let decided = report.outcomes.iter().all(|o| {
            o.outcome.is_done() || matches!(o.outcome, crate::apply::Outcome::Blocked { .. })
        });
        if decided {
            self.mark_revoked(snapshot, &leavers);
        }
        tracing::info!(
            run_id,
            revocations = report.outcomes.len(),
            done = report
                .outcomes
                .iter()
                .filter(|o| o.outcome.is_done())
                .count(),
            "off-boarding poll applied"
        );
        report.run_id = Some(run_id);
        Ok(report)
    }
}
