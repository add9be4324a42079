//! The work queue of an apply, as plain data: which change may start next on which lane (one
//! lane per credential), by priority and then by arrival, with explicit dependencies (a group
//! is created before its members and grants; a leaver's direct grants go before their
//! memberships). No I/O and no clock: the pool in `apply/mod.rs` drives it, tests drive it
//! directly.

use crate::plan::{Change, Reason};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Which work goes first. Lower is sooner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// A leaver's (or vanished person's) access: before anything else.
    Offboarding,
    /// Other revocations: removals and downgrades.
    Removal,
    /// New access: groups, memberships, grants that did not exist.
    Addition,
    /// Everything else: a grant that exists with another permission, brought to the rule's.
    Repair,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Offboarding,
        Priority::Removal,
        Priority::Addition,
        Priority::Repair,
    ];

    pub fn of(change: &Change, reason: &Reason) -> Priority {
        if reason.is_offboarding() {
            Priority::Offboarding
        } else if change.is_revocation() {
            Priority::Removal
        } else {
            match change {
                Change::SetGrant {
                    previous: Some(_), ..
                }
                | Change::SetProjectGrant {
                    previous: Some(_), ..
                } => Priority::Repair,
                _ => Priority::Addition,
            }
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Priority::Offboarding => "offboarding",
            Priority::Removal => "removal",
            Priority::Addition => "addition",
            Priority::Repair => "repair",
        }
    }
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for `n` jobs it depends on.
    Waiting(usize),
    Ready,
    Running,
    /// Finished; `true` when it is done (applied or already so).
    Finished(bool),
}

#[derive(Debug)]
struct Slot {
    lane: usize,
    priority: Priority,
    state: State,
    dependents: Vec<usize>,
}

/// Jobs by id (the order they were added), ready heaps per lane.
#[derive(Debug, Default)]
pub struct Queue {
    slots: Vec<Slot>,
    /// Per lane, by priority and then by id: ids grow with arrival, so equal priorities go
    /// first come, first served.
    ready: Vec<BinaryHeap<Reverse<(Priority, usize)>>>,
    /// Jobs not finished, per lane.
    open: Vec<usize>,
}

/// A job that will never run because a job it depends on did not succeed: (job, the
/// dependency that failed).
pub type Cancelled = Vec<(usize, usize)>;

impl Queue {
    pub fn new(lanes: usize) -> Queue {
        Queue {
            ready: (0..lanes).map(|_| BinaryHeap::new()).collect(),
            open: vec![0; lanes],
            ..Queue::default()
        }
    }

    pub fn lanes(&self) -> usize {
        self.ready.len()
    }

    pub fn state(&self, id: usize) -> State {
        self.slots[id].state
    }

    /// Adds a job that may start once every job in `deps` (earlier ids) is done. A
    /// dependency that already failed cancels it at once: the answer lists it.
    pub fn add(&mut self, lane: usize, priority: Priority, deps: &[usize]) -> (usize, Cancelled) {
        let id = self.slots.len();
        let mut waiting = 0;
        let mut failed = None;
        for &d in deps {
            match self.slots[d].state {
                State::Finished(true) => {}
                State::Finished(false) => failed = failed.or(Some(d)),
                _ => {
                    waiting += 1;
                    self.slots[d].dependents.push(id);
                }
            }
        }
        self.slots.push(Slot {
            lane,
            priority,
            state: State::Waiting(waiting),
            dependents: Vec::new(),
        });
        self.open[lane] += 1;
        if let Some(d) = failed {
            return (id, self.cancel(id, d));
        }
        if waiting == 0 {
            self.make_ready(id);
        }
        (id, Vec::new())
    }

    /// Adds a job decided before it could run (blocked): finished, not done. Jobs added
    /// later that depend on it are cancelled at once.
    pub fn add_closed(&mut self, lane: usize, priority: Priority) -> usize {
        let id = self.slots.len();
        self.slots.push(Slot {
            lane,
            priority,
            state: State::Finished(false),
            dependents: Vec::new(),
        });
        id
    }

    fn make_ready(&mut self, id: usize) {
        let s = &mut self.slots[id];
        s.state = State::Ready;
        self.ready[s.lane].push(Reverse((s.priority, id)));
    }

    /// The highest-priority ready job of `lane`, now running.
    pub fn next(&mut self, lane: usize) -> Option<usize> {
        while let Some(Reverse((_, id))) = self.ready[lane].pop() {
            // A job cancelled while ready stays in the heap: skip it.
            if self.slots[id].state == State::Ready {
                self.slots[id].state = State::Running;
                return Some(id);
            }
        }
        None
    }

    /// Puts a running job back, as it was (a worker took it but may not start it yet).
    pub fn requeue(&mut self, id: usize) {
        debug_assert_eq!(self.slots[id].state, State::Running);
        self.make_ready(id);
    }

    /// Marks a running job finished. When it did not succeed, every job that depends on it,
    /// directly or not, is cancelled and returned with the dependency that failed.
    pub fn finish(&mut self, id: usize, done: bool) -> Cancelled {
        debug_assert_eq!(self.slots[id].state, State::Running);
        self.close(id, done);
        let dependents = std::mem::take(&mut self.slots[id].dependents);
        let mut cancelled = Vec::new();
        for d in dependents {
            match self.slots[d].state {
                State::Waiting(n) if done => {
                    if n <= 1 {
                        self.make_ready(d);
                    } else {
                        self.slots[d].state = State::Waiting(n - 1);
                    }
                }
                State::Waiting(_) => cancelled.extend(self.cancel(d, id)),
                _ => {}
            }
        }
        cancelled
    }

    fn close(&mut self, id: usize, done: bool) {
        let s = &mut self.slots[id];
        s.state = State::Finished(done);
        self.open[s.lane] -= 1;
    }

    /// Cancels a job that has not started (and, transitively, its dependents).
    fn cancel(&mut self, id: usize, because: usize) -> Cancelled {
        let mut out = Vec::new();
        let mut stack = vec![(id, because)];
        while let Some((j, why)) = stack.pop() {
            if matches!(self.slots[j].state, State::Finished(_) | State::Running) {
                continue;
            }
            self.close(j, false);
            out.push((j, why));
            for d in std::mem::take(&mut self.slots[j].dependents) {
                stack.push((d, j));
            }
        }
        out
    }

    /// Takes a job that has not started out of the queue (with its dependents); `false` when
    /// it has started or finished.
    pub fn withdraw(&mut self, id: usize) -> Option<Cancelled> {
        if matches!(self.slots[id].state, State::Ready | State::Waiting(_)) {
            Some(self.cancel(id, id))
        } else {
            None
        }
    }

    /// Takes every job of `lane` that has not started out of the queue (the lane's budget is
    /// spent for this run): returned with their dependents on other lanes, each with the job
    /// of the stopped lane it waited for (itself for the lane's own jobs).
    pub fn stop_lane(&mut self, lane: usize) -> Cancelled {
        let ids: Vec<usize> = (0..self.slots.len())
            .filter(|&j| {
                self.slots[j].lane == lane
                    && matches!(self.slots[j].state, State::Ready | State::Waiting(_))
            })
            .collect();
        let mut out = Vec::new();
        for j in ids {
            out.extend(self.cancel(j, j));
        }
        self.ready[lane].clear();
        out
    }

    /// Jobs not finished, per lane and priority (for progress and ETAs).
    pub fn pending(&self, lane: usize) -> [usize; 4] {
        let mut out = [0; 4];
        for s in &self.slots {
            if s.lane == lane && !matches!(s.state, State::Finished(_)) {
                out[s.priority as usize] += 1;
            }
        }
        out
    }

    pub fn open(&self, lane: usize) -> usize {
        self.open[lane]
    }

    pub fn is_finished(&self) -> bool {
        self.open.iter().all(|&n| n == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    #[test]
    fn priority_first_then_arrival() {
        let mut q = Queue::new(1);
        let (add1, _) = q.add(0, Addition, &[]);
        let (repair, _) = q.add(0, Repair, &[]);
        let (add2, _) = q.add(0, Addition, &[]);
        let (leaver, _) = q.add(0, Offboarding, &[]);
        let (removal, _) = q.add(0, Removal, &[]);
        let order: Vec<usize> = std::iter::from_fn(|| q.next(0)).collect();
        assert_eq!(order, vec![leaver, removal, add1, add2, repair]);
    }

    #[test]
    fn a_revocation_added_behind_thousands_of_queued_grants_starts_next() {
        let mut q = Queue::new(1);
        for _ in 0..5000 {
            q.add(0, Addition, &[]);
        }
        let first = q.next(0).expect("one running");
        let (revoke, _) = q.add(0, Offboarding, &[]);
        q.finish(first, true);
        assert_eq!(q.next(0), Some(revoke));
    }

    #[test]
    fn dependents_wait_for_their_dependency_and_fall_with_it() {
        let mut q = Queue::new(2);
        let (create, _) = q.add(0, Addition, &[]);
        let (member, _) = q.add(0, Addition, &[create]);
        // A grant on another lane (another credential) waits for the create too.
        let (grant, _) = q.add(1, Addition, &[create]);
        let (other, _) = q.add(1, Addition, &[]);
        assert_eq!(q.next(1), Some(other), "the grant is not ready");
        assert_eq!(q.next(1), None);
        assert_eq!(q.next(0), Some(create));
        assert_eq!(q.next(0), None, "the member add waits for the create");
        let mut cancelled = q.finish(create, false);
        cancelled.sort();
        assert_eq!(cancelled, vec![(member, create), (grant, create)]);
        assert_eq!(q.state(member), State::Finished(false));
        assert_eq!(q.next(1), None);
        q.finish(other, true);
        assert!(q.is_finished());
    }

    #[test]
    fn a_dependency_already_done_does_not_hold_a_job_back() {
        let mut q = Queue::new(2);
        assert_eq!(q.lanes(), 2);
        let (create, _) = q.add(0, Addition, &[]);
        assert_eq!(q.next(0), Some(create));
        q.finish(create, true);
        let (member, cancelled) = q.add(1, Addition, &[create]);
        assert!(cancelled.is_empty());
        assert_eq!(q.state(member), State::Ready);
        assert_eq!(q.next(1), Some(member));
    }

    #[test]
    fn a_job_decided_before_the_run_takes_the_next_id_and_its_dependents_with_it() {
        let mut q = Queue::new(1);
        let (a, _) = q.add(0, Addition, &[]);
        let blocked = q.add_closed(0, Removal);
        assert_eq!(blocked, a + 1);
        assert_eq!(q.state(blocked), State::Finished(false));
        let (c, cancelled) = q.add(0, Addition, &[blocked]);
        assert_eq!(c, blocked + 1);
        assert_eq!(cancelled, vec![(c, blocked)]);
        assert_eq!(q.open(0), 1, "only the first is open");
        assert_eq!(q.next(0), Some(a));
    }

    #[test]
    fn priority_labels_are_the_metric_labels() {
        let labels: Vec<&str> = Priority::ALL.iter().map(|p| p.label()).collect();
        assert_eq!(labels, ["offboarding", "removal", "addition", "repair"]);
        for p in Priority::ALL {
            assert_eq!(serde_json::to_value(p).expect("json"), p.label());
        }
    }

    #[test]
    fn a_requeued_job_is_next_again() {
        let mut q = Queue::new(1);
        let (a, _) = q.add(0, Removal, &[]);
        let (b, _) = q.add(0, Addition, &[]);
        assert_eq!(q.next(0), Some(a));
        q.requeue(a);
        assert_eq!(q.state(a), State::Ready);
        assert_eq!(q.next(0), Some(a));
        assert_eq!(q.next(0), Some(b));
    }

    #[test]
    fn a_job_waits_for_all_of_its_dependencies() {
        let mut q = Queue::new(1);
        let (a, _) = q.add(0, Offboarding, &[]);
        let (b, _) = q.add(0, Offboarding, &[]);
        let (c, _) = q.add(0, Offboarding, &[a, b]);
        assert_eq!(q.next(0), Some(a));
        assert!(q.finish(a, true).is_empty());
        assert_eq!(q.state(c), State::Waiting(1));
        assert_eq!(q.next(0), Some(b));
        q.finish(b, true);
        assert_eq!(q.next(0), Some(c));
        // A dependency that already failed cancels a job added later at once.
        q.finish(c, false);
        let (d, cancelled) = q.add(0, Addition, &[c]);
        assert_eq!(cancelled, vec![(d, c)]);
        assert!(q.is_finished());
    }

    #[test]
    fn stopping_a_lane_takes_its_queued_work_and_the_work_waiting_for_it() {
        let mut q = Queue::new(2);
        let (running, _) = q.add(0, Addition, &[]);
        let (queued, _) = q.add(0, Addition, &[]);
        let (create, _) = q.add(0, Addition, &[]);
        let (grant, _) = q.add(1, Addition, &[create]);
        let (free, _) = q.add(1, Addition, &[]);
        assert_eq!(q.next(0), Some(running));
        let mut stopped = q.stop_lane(0);
        stopped.sort();
        assert_eq!(
            stopped,
            vec![(queued, queued), (create, create), (grant, create)]
        );
        assert_eq!(q.next(0), None);
        assert_eq!(q.open(0), 1, "one is still running");
        q.finish(running, true);
        assert_eq!(q.open(0), 0);
        assert_eq!(q.next(1), Some(free));
        assert_eq!(q.pending(1), [0, 0, 1, 0]);
        q.finish(free, true);
        assert!(q.is_finished());
    }

    #[test]
    fn priorities_follow_the_reason_and_the_change() {
        use crate::model::{AccountId, GroupSlug, Permission, RepoSlug};
        let leaver = Reason::Leaver { fact: "x".into() };
        let rule = Reason::Rule {
            rule: "grants[0]".into(),
            detail: "d".into(),
        };
        let drift = Reason::Drift { detail: "d".into() };
        let remove = Change::RemoveMember {
            group: GroupSlug::from_name("g"),
            account_id: AccountId::parse("557058:00000000-0000-0000-0000-000000000001")
                .expect("id"),
            display_name: "A".into(),
        };
        let grant = |previous| Change::SetGrant {
            repo: RepoSlug::new("r"),
            group: GroupSlug::from_name("g"),
            permission: Permission::Write,
            previous,
        };
        assert_eq!(Priority::of(&remove, &leaver), Offboarding);
        assert_eq!(Priority::of(&remove, &drift), Removal);
        assert_eq!(Priority::of(&grant(None), &rule), Addition);
        assert_eq!(Priority::of(&grant(Some(Permission::Read)), &rule), Repair);
        assert_eq!(
            Priority::of(&grant(Some(Permission::Admin)), &drift),
            Removal,
            "a downgrade is a revocation"
        );
    }
}
