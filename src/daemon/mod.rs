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
//!
//! Still to come with issue 18: the cron schedule, the fast off-boarding poll, the HTTP
//! endpoints, SIGHUP reload and systemd notify.

pub mod job;
pub mod notify;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One reconcile; `true` when it succeeded.
pub trait Job: Send + Sync {
    fn run(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// When runs happen.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub interval: Duration,
    /// Longest wait after failed runs.
    pub max_backoff: Duration,
    /// Share of the interval the wait may vary by (0.05: ±5%).
    pub jitter: f64,
}

impl Schedule {
    pub fn every(interval: Duration) -> Schedule {
        Schedule {
            interval,
            max_backoff: (interval * 8).max(Duration::from_secs(60)),
            jitter: 0.05,
        }
    }

    /// The wait before the next run after `failures` failed runs in a row; `unit` is uniform
    /// in [0, 1] (the jitter).
    pub fn wait(&self, failures: u32, unit: f64) -> Duration {
        let base = match failures {
            0 => self.interval,
            n => self
                .interval
                .saturating_mul(1u32 << (n - 1).min(16))
                .min(self.max_backoff.max(self.interval)),
        };
        base.mul_f64(1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0))
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
}

/// Runs `job` at start and then on `schedule` or `triggers`, until `shutdown` is cancelled.
pub async fn serve(
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
        if job.run().await {
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

/// Turns SIGTERM and SIGINT into `shutdown`; SIGHUP is logged and otherwise ignored until
/// configuration reload lands (issue 18), instead of killing the process.
pub fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
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
                _ = hup.recv() => {
                    tracing::warn!(signal = "SIGHUP", "configuration reload is not supported yet; restart bbsync to load a new configuration");
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
        let (stats, ()) = tokio::join!(serve(&*job, &s, &triggers, &stop), async move {
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
        tokio::join!(serve(&*job, &s, &triggers, &stop), async move {
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
        let (stats, ()) = tokio::join!(serve(&*job, &s, &triggers, &stop), async move {
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

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_a_wait_returns_at_once() {
        let job = Fake::new(Duration::ZERO, vec![]);
        let stop = CancellationToken::new();
        let triggers = Triggers::default();
        let s = exact(3600);
        let stopper = stop.clone();
        let started = Instant::now();
        tokio::join!(serve(&*job, &s, &triggers, &stop), async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stopper.cancel();
        });
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(job.starts(), vec![0]);
    }
}
