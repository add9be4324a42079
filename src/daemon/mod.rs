//! `bbsync run`: reconciles on a schedule until told to stop.
//!
//! The loop is driven by what it is given, so tests drive it under paused time: a [`Job`] (the
//! reconcile), a [`Schedule`], [`Triggers`] ("run now") and a shutdown token (a
//! `CancellationToken`, as mini-redis passes its `shutdown`).
//! - One reconcile at start-up, then one every `interval`, with a little jitter (±5%) so that
//!   several daemons do not hit Bitbucket in step.
//! - Runs never overlap: the loop runs one job at a time. A trigger during a run is kept (one
//!   permit, however many arrive) and starts one follow-up run as soon as the run ends.
//! - After a failed run the next waits longer: the interval doubled per failure in a row, at
//!   most `max_backoff`; the log says so. A trigger still runs at once.
//! - Shutdown: the loop stops waiting at once; a run in progress is asked to stop through the
//!   same token (the pool takes no new change, lets the requests in flight finish and records
//!   them) and the loop returns when it has.
//! - With `schedule.cron` the runs start at its occurrences (UTC) instead, plus the jitter
//!   (0 to 5% of its period, after the occurrence); the backoff skips occurrences.
//! - The off-boarding poll, when given, runs every `offboarding.poll_interval_secs` alongside:
//!   polls never overlap each other, and one that finds a leaver during a full run hands the
//!   revocation to that run (see `reconcile::poll`).
//!
//! The rest of the daemon: [`jobs`] (the two jobs), [`state`] (what `/status` and `/readyz`
//! show), [`http`] (the endpoints), [`notify`] (systemd), [`run`] (everything wired, signals,
//! reload). docs/operations.md is the operator's view.

pub mod http;
pub mod jobs;
pub mod notify;
pub mod run;
pub mod state;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One reconcile; `true` when it succeeded.
pub trait Job: Send + Sync {
    fn run(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// The wall clock the cron schedule reads (tests give one that follows paused tokio time).
pub type WallClock = std::sync::Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// When runs happen.
#[derive(Clone)]
pub struct Schedule {
    /// The time between runs (for a cron schedule: its longest gap, the unit of the backoff).
    pub interval: Duration,
    /// Longest wait after failed runs.
    pub max_backoff: Duration,
    /// Share of the interval the wait may vary by (0.05: ±5%).
    pub jitter: f64,
    /// Runs at these occurrences instead of every `interval`.
    pub cron: Option<croner::Cron>,
    /// The off-boarding poll's period.
    pub poll: Option<Duration>,
    pub clock: WallClock,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("interval", &self.interval)
            .field("max_backoff", &self.max_backoff)
            .field("jitter", &self.jitter)
            .field("cron", &self.cron.as_ref().map(|c| c.pattern.to_string()))
            .field("poll", &self.poll)
            .finish()
    }
}

impl Schedule {
    pub fn every(interval: Duration) -> Schedule {
        Schedule {
            interval,
            max_backoff: (interval * 8).max(Duration::from_secs(60)),
            jitter: 0.05,
            cron: None,
            poll: None,
            clock: std::sync::Arc::new(SystemTime::now),
        }
    }

    /// The schedule of the configuration: `schedule.cron` or `daemon.interval_secs`, and the
    /// off-boarding poll.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Schedule, String> {
        let mut s = Schedule::every(cfg.daemon.interval);
        if let crate::config::ScheduleSpec::Cron(expr) = &cfg.daemon.schedule {
            s.cron = Some(crate::config::parse_cron(expr)?);
        }
        s.poll = cfg.offboarding.poll_interval;
        Ok(s)
    }

    /// The wait before the next run after `failures` failed runs in a row; `unit` is uniform
    /// in [0, 1] (the jitter).
    pub fn wait(&self, failures: u32, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        let base = match failures {
            0 => self.interval,
            n => self
                .interval
                .saturating_mul(1u32 << (n - 1).min(16))
                .min(self.max_backoff.max(self.interval)),
        };
        let Some(cron) = &self.cron else {
            return base.mul_f64(1.0 + self.jitter * (2.0 * unit - 1.0));
        };
        // The first occurrence after now, or after now plus the backoff beyond one period.
        let now = (self.clock)();
        let from = now + base.saturating_sub(self.interval);
        let from_utc = chrono::DateTime::<chrono::Utc>::from(from);
        let next = match cron.find_next_occurrence(&from_utc, false) {
            Ok(t) => SystemTime::from(t),
            // Validated to fire when loaded; should it stop, fall back to the interval.
            Err(_) => now + base,
        };
        next.duration_since(now).unwrap_or_default() + self.interval.mul_f64(self.jitter * unit)
    }
}

/// "Run now" requests (`POST /sync`, a signal): coalesced, never lost.
#[derive(Debug, Default)]
pub struct Triggers {
    notify: Notify,
}

impl Triggers {
    /// Asks for a run as soon as none is in progress. Several requests before it starts are
    /// one run.
    pub fn request(&self) {
        self.notify.notify_one();
    }
}

/// What the loop did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub runs: u32,
    pub failed: u32,
    pub triggered: u32,
    pub polls: u32,
}

/// Runs `job` at start and then on `schedule` or `triggers`, and `poll` every
/// `schedule.poll`, until `shutdown` is cancelled.
pub async fn serve(
    job: &dyn Job,
    poll: Option<&dyn Job>,
    schedule: &Schedule,
    triggers: &Triggers,
    shutdown: &CancellationToken,
) -> Stats {
    let polls = async {
        let (Some(poll), Some(every)) = (poll, schedule.poll) else {
            return 0;
        };
        let mut n = 0u32;
        // The first poll one period after start (the start-up reconcile is the baseline).
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return n,
                _ = ticks.tick() => {}
            }
            n += 1;
            // Not raced against the shutdown: an apply the poll started stops through the
            // same token as a full run's, letting its requests in flight finish.
            poll.run().await;
            crate::memory::release();
        }
    };
    let (mut stats, polls) = tokio::join!(serve_runs(job, schedule, triggers, shutdown), polls);
    stats.polls = polls;
    stats
}

async fn serve_runs(
    job: &dyn Job,
    schedule: &Schedule,
    triggers: &Triggers,
    shutdown: &CancellationToken,
) -> Stats {
    let mut stats = Stats::default();
    let mut failures = 0u32;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        stats.runs += 1;
        let ok = job.run().await;
        crate::memory::release();
        if ok {
            failures = 0;
        } else {
            failures += 1;
            stats.failed += 1;
        }
        if shutdown.is_cancelled() {
            break;
        }
        let wait = schedule.wait(failures, fastrand::f64());
        if failures > 0 {
            tracing::warn!(
                failures,
                next_in_secs = wait.as_secs(),
                "reconcile failed; backing off before the next"
            );
        } else {
            tracing::debug!(next_in_secs = wait.as_secs(), "next reconcile");
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = triggers.notify.notified() => {
                stats.triggered += 1;
                tracing::info!("reconcile requested");
            }
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::info!(runs = stats.runs, failed = stats.failed, "stopped");
    stats
}

/// Turns SIGTERM and SIGINT into `shutdown`, and SIGHUP into `hup` (configuration reload).
pub fn watch_signals(
    shutdown: CancellationToken,
    hup: std::sync::Arc<Notify>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!(signal = "SIGTERM", "stopping: no new change starts; the requests in flight finish and are recorded");
                    shutdown.cancel();
                }
                _ = int.recv() => {
                    tracing::info!(signal = "SIGINT", "stopping: no new change starts; the requests in flight finish and are recorded");
                    shutdown.cancel();
                }
                _ = hangup.recv() => {
                    tracing::info!(signal = "SIGHUP", "reloading the configuration");
                    hup.notify_one();
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    /// Records when each run started; takes `takes` per run; fails the runs listed.
    struct Fake {
        started: Mutex<Vec<Duration>>,
        t0: Instant,
        takes: Duration,
        fail: Vec<u32>,
        n: AtomicU32,
        running: AtomicU32,
        overlapped: AtomicU32,
    }

    impl Fake {
        fn new(takes: Duration, fail: Vec<u32>) -> Arc<Fake> {
            Arc::new(Fake {
                started: Mutex::new(Vec::new()),
                t0: Instant::now(),
                takes,
                fail,
                n: AtomicU32::new(0),
                running: AtomicU32::new(0),
                overlapped: AtomicU32::new(0),
            })
        }
        fn starts(&self) -> Vec<u64> {
            self.started
                .lock()
                .expect("lock")
                .iter()
                .map(|d| d.as_secs())
                .collect()
        }
    }

    impl Job for Fake {
        fn run(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
            Box::pin(async move {
                if self.running.fetch_add(1, Ordering::SeqCst) > 0 {
                    self.overlapped.fetch_add(1, Ordering::SeqCst);
                }
                let i = self.n.fetch_add(1, Ordering::SeqCst);
                self.started.lock().expect("lock").push(self.t0.elapsed());
                tokio::time::sleep(self.takes).await;
                self.running.fetch_sub(1, Ordering::SeqCst);
                !self.fail.contains(&i)
            })
        }
    }

    fn exact(interval: u64) -> Schedule {
        Schedule {
            jitter: 0.0,
            ..Schedule::every(Duration::from_secs(interval))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_run_at_start_then_one_per_interval_until_shutdown() {
        let job = Fake::new(Duration::from_secs(10), vec![]);
        let stop = CancellationToken::new();
        let triggers = Triggers::default();
        let s = exact(300);
        let stopper = stop.clone();
        let (stats, ()) = tokio::join!(serve(&*job, None, &s, &triggers, &stop), async move {
            tokio::time::sleep(Duration::from_secs(1000)).await;
            stopper.cancel();
        });
        // Runs take 10 s; the interval counts from the end of one to the start of the next.
        assert_eq!(job.starts(), vec![0, 310, 620, 930]);
        assert_eq!(stats.runs, 4);
        assert_eq!(stats.failed, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn triggers_during_a_run_become_one_follow_up_run_and_runs_never_overlap() {
        let job = Fake::new(Duration::from_secs(60), vec![]);
        let stop = CancellationToken::new();
        let triggers = Triggers::default();
        let s = exact(300);
        let (t, stopper) = (&triggers, stop.clone());
        tokio::join!(serve(&*job, None, &s, &triggers, &stop), async move {
            // A burst of ten triggers during the first run.
            tokio::time::sleep(Duration::from_secs(5)).await;
            for _ in 0..10 {
                t.request();
            }
            tokio::time::sleep(Duration::from_secs(200)).await;
            stopper.cancel();
        });
        assert_eq!(job.starts(), vec![0, 60], "one follow-up, at once");
        assert_eq!(job.overlapped.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_runs_back_off_and_a_success_restores_the_interval() {
        let job = Fake::new(Duration::ZERO, vec![0, 1, 2]);
        let stop = CancellationToken::new();
        let triggers = Triggers::default();
        let s = Schedule {
            max_backoff: Duration::from_secs(1000),
            ..exact(100)
        };
        let stopper = stop.clone();
        let (stats, ()) = tokio::join!(serve(&*job, None, &s, &triggers, &stop), async move {
            tokio::time::sleep(Duration::from_secs(1950)).await;
            stopper.cancel();
        });
        // Waits 100, 200, 400 after the failures, then 100 again.
        assert_eq!(
            job.starts(),
            vec![
                0, 100, 300, 700, 800, 900, 1000, 1100, 1200, 1300, 1400, 1500, 1600, 1700, 1800,
                1900
            ]
        );
        assert_eq!(stats.failed, 3);
        assert_eq!(s.wait(10, 0.5), Duration::from_secs(1000), "bounded");
    }

    #[test]
    fn the_jitter_stays_within_five_percent() {
        let s = Schedule::every(Duration::from_secs(300));
        assert_eq!(s.wait(0, 0.0), Duration::from_secs(285));
        assert_eq!(s.wait(0, 1.0), Duration::from_secs(315));
        assert_eq!(s.wait(0, 0.5), Duration::from_secs(300));
        assert_eq!(s.max_backoff, Duration::from_secs(2400));
    }

    /// A wall clock that starts at `start` and follows (paused) tokio time.
    fn paused_clock(start: SystemTime) -> WallClock {
        let t0 = Instant::now();
        std::sync::Arc::new(move || start + t0.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_cron_schedule_runs_at_its_occurrences_and_backs_off_by_skipping_them() {
        // 10:02:30 UTC on some day; the cron fires every 5 minutes.
        let start = std::time::UNIX_EPOCH + Duration::from_secs(1_795_000_000 / 300 * 300 + 150);
        let job = Fake::new(Duration::from_secs(10), vec![1, 2]);
        let stop = CancellationToken::new();
        let triggers = Triggers::default();
        let s = Schedule {
            jitter: 0.0,
            cron: Some(crate::config::parse_cron("*/5 * * * *").expect("cron")),
            clock: paused_clock(start),
            ..Schedule::every(Duration::from_secs(300))
        };
        let stopper = stop.clone();
        tokio::join!(serve(&*job, None, &s, &triggers, &stop), async move {
            tokio::time::sleep(Duration::from_secs(3000)).await;
            stopper.cancel();
        });
        // Start-up at 0; then the occurrences at 150 s, 450 s...; runs 1 and 2 fail: after
        // the first the next occurrence runs, after the second one is skipped (750), and a
        // success restores every occurrence.
        assert_eq!(
            job.starts(),
            vec![0, 150, 450, 1050, 1350, 1650, 1950, 2250, 2550, 2850]
        );
    }

    #[test]
    fn cron_jitter_only_delays_and_by_at_most_five_percent() {
        let start = std::time::UNIX_EPOCH + Duration::from_secs(1_795_000_000 / 300 * 300);
        let s = Schedule {
            cron: Some(crate::config::parse_cron("*/5 * * * *").expect("cron")),
            clock: std::sync::Arc::new(move || start),
            ..Schedule::every(Duration::from_secs(300))
        };
        // At an occurrence: the next is a full period away.
        assert_eq!(s.wait(0, 0.0), Duration::from_secs(300));
        assert_eq!(s.wait(0, 1.0), Duration::from_secs(315));
    }

    /// Counts polls and whether one ever overlapped another.
    struct Poll {
        started: Mutex<Vec<u64>>,
        t0: Instant,
        takes: Duration,
        running: AtomicU32,
        overlapped: AtomicU32,
    }

    impl Job for Poll {
        fn run(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
            Box::pin(async move {
                if self.running.fetch_add(1, Ordering::SeqCst) > 0 {
                    self.overlapped.fetch_add(1, Ordering::SeqCst);
                }
                self.started
                    .lock()
                    .expect("lock")
                    .push(self.t0.elapsed().as_secs());
                tokio::time::sleep(self.takes).await;
                self.running.fetch_sub(1, Ordering::SeqCst);
                true
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_poll_runs_every_period_alongside_full_runs_and_never_overlaps_itself() {
        // Full runs take 100 s (a long apply); polls take 45 s, longer than their period.
        let job = Fake::new(Duration::from_secs(100), vec![]);
        let poll = Poll {
            started: Mutex::new(Vec::new()),
            t0: Instant::now(),
            takes: Duration::from_secs(45),
            running: AtomicU32::new(0),
            overlapped: AtomicU32::new(0),
        };
        let stop = CancellationToken::new();
        let triggers = Triggers::default();
        let s = Schedule {
            poll: Some(Duration::from_secs(30)),
            ..exact(300)
        };
        let stopper = stop.clone();
        let (stats, ()) = tokio::join!(
            serve(&*job, Some(&poll), &s, &triggers, &stop),
            async move {
                tokio::time::sleep(Duration::from_secs(200)).await;
                stopper.cancel();
            }
        );
        // During the first full run (0-100 s) polls happen too; a late tick is delayed, not
        // doubled.
        assert_eq!(*poll.started.lock().expect("lock"), vec![30, 75, 120, 165]);
        assert_eq!(poll.overlapped.load(Ordering::SeqCst), 0);
        assert_eq!(stats.polls, 4);
        assert_eq!(job.starts(), vec![0]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_a_wait_returns_at_once() {
        let job = Fake::new(Duration::ZERO, vec![]);
        let stop = CancellationToken::new();
        let triggers = Triggers::default();
        let s = exact(3600);
        let stopper = stop.clone();
        let started = Instant::now();
        tokio::join!(serve(&*job, None, &s, &triggers, &stop), async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stopper.cancel();
        });
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(job.starts(), vec![0]);
    }
}
