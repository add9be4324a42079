//! One request budget per credential, shared by its reads and writes, as Bitbucket counts them
//! (about 1,000 requests per rolling hour per credential; refused requests count too).
//!
//! - **Pacing**: a GCRA limiter from `governor` at `requests_per_hour` with a small burst, so a
//!   large apply stays below the server's limit and sees no 429 at all. Its clock is tokio's,
//!   so tests drive it under `tokio::time::pause()`.
//! - **A 429 pauses the whole credential** (every request of every worker waits): for the
//!   server's `Retry-After` when it gives one, else a full-jitter backoff that grows with each
//!   429 in a row. A 429 answered to a request sent before the current pause began does not
//!   escalate it again (four workers hitting one closed window are one event, not four).
//! - **Step down, recover slowly**: after a 429 the pace halves (down to an eighth); each
//!   `recover_after` without a 429 it steps back up one level.
//! - **Stop, don't hammer**: when the wait would exceed `max_wait` (a long `Retry-After`, or a
//!   pace too slow), or after `max_backoffs` 429s in a row without `Retry-After`, the budget is
//!   *spent* for this run: every request through it fails at once with [`Spent`] (no request is
//!   sent into a closed window), the work stays queued for the next run, and [`Spent::resume_in`]
//!   says when the window should be open again. [`Budget::new_run`] lifts the stop.

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// How a credential's requests are paced and how a 429 is handled.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetSettings {
    /// Requests per hour this credential may send (reads and writes together).
    pub requests_per_hour: u32,
    /// Requests that may go at once before pacing starts.
    pub burst: u32,
    /// Longest wait for the budget (a `Retry-After`, a backoff, the pace) before the
    /// credential's remaining work stops for this run.
    pub max_wait: Duration,
    /// 429s in a row without `Retry-After` before the work stops for this run.
    pub max_backoffs: u32,
    /// First backoff ceiling after a 429 without `Retry-After`; doubles per 429 in a row.
    pub backoff_base: Duration,
    /// Time without a 429 before the pace steps back up one level.
    pub recover_after: Duration,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            requests_per_hour: 900,
            burst: 100,
            max_wait: Duration::from_secs(300),
            max_backoffs: 4,
            backoff_base: Duration::from_secs(2),
            recover_after: Duration::from_secs(300),
        }
    }
}

/// Lowest pace after 429s: the configured rate divided by 2^MAX_LEVEL.
const MAX_LEVEL: u32 = 3;

/// Shortest pause a `Retry-After` gives (a `0` or a date in the past would resend at once).
const MIN_PAUSE: Duration = Duration::from_secs(1);

/// How long a credential rests after a storm of 429s without `Retry-After`.
const QUIET_AFTER_STORM: Duration = Duration::from_secs(900);

/// The credential's budget is spent for this run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the request budget of credential {credential:?} is spent for this run: {why}{}", resume_hint(*.resume_in))]
pub struct Spent {
    pub credential: String,
    pub why: String,
    /// When the window should be open again, if known.
    pub resume_in: Option<Duration>,
}

fn resume_hint(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!(" (expected to reopen in about {} s)", d.as_secs()),
        None => String::new(),
    }
}

/// A tokio-time clock for governor: paused time moves it in tests.
#[derive(Clone, Debug)]
struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

struct Inner {
    limiter: Arc<Limiter>,
    level: u32,
    /// Last 429 or step up: when the pace may step up next.
    level_since: Instant,
    paused_until: Option<Instant>,
    /// Incremented at each pause; a 429 to a request sent in an older epoch does not escalate.
    epoch: u64,
    /// 429s in a row without `Retry-After`.
    backoffs: u32,
    stopped: Option<Spent>,
}

/// What a request may be sent with: taken from [`Budget::acquire`], handed back on a 429.
#[derive(Clone, Copy, Debug)]
pub struct Permit {
    epoch: u64,
}

/// A point-in-time view, for logs, reports and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetStatus {
    pub credential: String,
    /// Requests per hour allowed now (the configured rate, stepped down after 429s).
    pub rate_per_hour: f64,
    pub sent: u64,
    pub rate_limited: u64,
    pub paused_for: Option<Duration>,
    pub spent: Option<Spent>,
}

pub struct Budget {
    credential: String,
    settings: BudgetSettings,
    clock: TokioClock,
    inner: Mutex<Inner>,
    sent: AtomicU64,
    limited: AtomicU64,
}

impl Budget {
    pub fn new(credential: &str, settings: BudgetSettings) -> Budget {
        let clock = TokioClock {
            start: Instant::now(),
        };
        let limiter = Arc::new(limiter(&settings, 0, &clock, false));
        Budget {
            credential: credential.to_owned(),
            settings,
            clock,
            inner: Mutex::new(Inner {
                limiter,
                level: 0,
                level_since: Instant::now(),
                paused_until: None,
                epoch: 0,
                backoffs: 0,
                stopped: None,
            }),
            sent: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        }
    }

    /// A budget that never paces (tests of other things, one-off probes).
    pub fn unlimited(credential: &str) -> Budget {
        Budget::new(
            credential,
            BudgetSettings {
                requests_per_hour: u32::MAX / 2,
                burst: 1_000_000,
                ..BudgetSettings::default()
            },
        )
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spends the budget for this run. `resume_in`, when known, is also kept as a pause, so
    /// that the next run (a new run lifts the stop) does not send into the window either
    /// before it reopens.
    fn spend(&self, inner: &mut Inner, why: String, resume_in: Option<Duration>) -> Spent {
        let s = Spent {
            credential: self.credential.clone(),
            why,
            resume_in,
        };
        if let Some(d) = resume_in {
            let until = Instant::now().checked_add(d);
            if until > inner.paused_until {
                inner.paused_until = until;
            }
        }
        if inner.stopped.is_none() {
            tracing::warn!(credential = %self.credential, reason = %s.why, resume_in_secs = resume_in.map(|d| d.as_secs()), "request budget spent for this run: the credential's remaining work stays queued");
        }
        inner.stopped = Some(s.clone());
        s
    }

    /// Waits until a request may be sent (the pace, a 429 pause), or fails at once when the
    /// budget is spent for this run or the wait would exceed `max_wait`.
    pub async fn acquire(&self) -> Result<Permit, Spent> {
        loop {
            let (wait, paused) = {
                let mut inner = self.lock();
                if let Some(s) = &inner.stopped {
                    return Err(s.clone());
                }
                let now = Instant::now();
                self.maybe_recover(&mut inner, now);
                match inner.paused_until.filter(|u| *u > now) {
                    Some(until) => (until - now, true),
                    None => match inner.limiter.check() {
                        Ok(()) => {
                            self.sent.fetch_add(1, Ordering::Relaxed);
                            return Ok(Permit { epoch: inner.epoch });
                        }
                        Err(not_until) => (not_until.wait_time_from(self.clock.now()), false),
                    },
                }
            };
            if wait > self.settings.max_wait {
                let mut inner = self.lock();
                let why = if paused {
                    format!(
                        "Bitbucket's window for this credential reopens in {} s, more than apply.max_wait ({} s)",
                        wait.as_secs(),
                        self.settings.max_wait.as_secs()
                    )
                } else {
                    format!(
                        "the next request could only go in {} s, more than apply.max_wait ({} s)",
                        wait.as_secs(),
                        self.settings.max_wait.as_secs()
                    )
                };
                return Err(self.spend(&mut inner, why, Some(wait)));
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn maybe_recover(&self, inner: &mut Inner, now: Instant) {
        if inner.level > 0 && now.duration_since(inner.level_since) >= self.settings.recover_after {
            inner.level -= 1;
            inner.level_since = now;
            inner.limiter = Arc::new(limiter(&self.settings, inner.level, &self.clock, true));
            tracing::info!(credential = %self.credential, rate_per_hour = rate(&self.settings, inner.level), "no 429 for a while: request pace steps up");
        }
    }

    /// A 429 answered to a request sent with `permit`: pauses the credential (for `retry_after`
    /// or a backoff), steps the pace down, or spends the budget for this run. `Ok` means the
    /// request may be sent again once [`Budget::acquire`] lets it.
    pub fn rate_limited(&self, permit: Permit, retry_after: Option<Duration>) -> Result<(), Spent> {
        self.limited.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        if let Some(s) = &inner.stopped {
            return Err(s.clone());
        }
        let now = Instant::now();
        // A zero or past Retry-After would send straight back: at least a second.
        let retry_after = retry_after.map(|d| d.max(MIN_PAUSE));
        if let Some(d) = retry_after.filter(|d| *d > self.settings.max_wait) {
            // Whatever epoch it was sent in: the server says the window stays closed.
            inner.backoffs = 0;
            return Err(self.spend(
                &mut inner,
                format!(
                    "Bitbucket answered 429 with Retry-After {} s, more than apply.max_wait ({} s)",
                    d.as_secs(),
                    self.settings.max_wait.as_secs()
                ),
                Some(d),
            ));
        }
        if permit.epoch != inner.epoch {
            // Sent before the current pause: that pause answers this 429, lengthened if the
            // server now says later.
            if let Some(until) = retry_after.and_then(|d| now.checked_add(d)) {
                if Some(until) > inner.paused_until {
                    inner.paused_until = Some(until);
                }
            }
            return Ok(());
        }
        inner.epoch += 1;
        inner.level_since = now;
        if inner.level < MAX_LEVEL {
            inner.level += 1;
            inner.limiter = Arc::new(limiter(&self.settings, inner.level, &self.clock, true));
        }
        let wait = match retry_after {
            Some(d) => {
                inner.backoffs = 0;
                d
            }
            None => {
                if inner.backoffs >= self.settings.max_backoffs {
                    let why = format!("{} 429s in a row without Retry-After", inner.backoffs + 1);
                    // The rolling hour frees up as old requests age out; not trying again for
                    // a while costs less than refused probes, which count too.
                    return Err(self.spend(&mut inner, why, Some(QUIET_AFTER_STORM)));
                }
                let ceiling = self
                    .settings
                    .backoff_base
                    .saturating_mul(1u32 << inner.backoffs.min(20))
                    .min(self.settings.max_wait);
                inner.backoffs += 1;
                // Full jitter, but never less than a tenth of the ceiling: a pause of zero
                // would send straight back into the closed window.
                ceiling.mul_f64(0.1 + 0.9 * fastrand::f64())
            }
        };
        inner.paused_until = now.checked_add(wait);
        tracing::warn!(credential = %self.credential, pause_ms = wait.as_millis() as u64, rate_per_hour = rate(&self.settings, inner.level), retry_after = retry_after.is_some(), "rate limited (429): pausing every request of this credential");
        Ok(())
    }

    /// Any answer but a 429: the window is open, the backoff starts over.
    pub fn answered(&self) {
        let mut inner = self.lock();
        inner.backoffs = 0;
    }

    /// A new run may try again: lifts a stop (the pause and the stepped-down pace remain).
    pub fn new_run(&self) {
        self.lock().stopped = None;
    }

    pub fn status(&self) -> BudgetStatus {
        let inner = self.lock();
        let now = Instant::now();
        BudgetStatus {
            credential: self.credential.clone(),
            rate_per_hour: rate(&self.settings, inner.level),
            sent: self.sent.load(Ordering::Relaxed),
            rate_limited: self.limited.load(Ordering::Relaxed),
            paused_for: inner.paused_until.filter(|u| *u > now).map(|u| u - now),
            spent: inner.stopped.clone(),
        }
    }

    /// Requests per hour allowed now.
    pub fn rate_per_hour(&self) -> f64 {
        rate(&self.settings, self.lock().level)
    }

    /// Requests this budget would let go at once now, without waiting: 0 while it is spent
    /// for the run or paused after a 429, else what is left of the pace's burst. For the
    /// `bbsync_rate_budget_remaining` gauge; takes nothing from the budget.
    ///
    /// governor cannot show a limiter's state without taking from it, so this asks for the
    /// whole burst at once, under the lock [`Budget::acquire`] takes around its own check. The
    /// usual answer is a refusal saying when the burst would fit, which gives exactly what is
    /// left; a grant means the limiter was full, and it is replaced by a fresh one with the
    /// same quota, which is full too. Either way the pace is left exactly as it was.
    pub fn available_now(&self) -> u64 {
        let mut inner = self.lock();
        if inner.stopped.is_some() || inner.paused_until.is_some_and(|u| u > Instant::now()) {
            return 0;
        }
        let level = inner.level;
        let period = period(&self.settings, level);
        let burst = burst(&self.settings, level);
        match inner.limiter.check_n(burst) {
            Ok(Ok(())) => {
                inner.limiter = Arc::new(limiter(&self.settings, level, &self.clock, false));
                u64::from(burst.get())
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let short = wait.as_nanos().div_ceil(period.as_nanos().max(1));
                u64::from(burst.get()).saturating_sub(u64::try_from(short).unwrap_or(u64::MAX))
            }
            // Not reached: the burst asked for is the quota's own.
            Err(_) => 0,
        }
    }
}

fn rate(s: &BudgetSettings, level: u32) -> f64 {
    f64::from(s.requests_per_hour.max(1)) / f64::from(1u32 << level)
}

/// Time between two requests at `level`.
fn period(s: &BudgetSettings, level: u32) -> Duration {
    Duration::from_secs_f64(3600.0 / rate(s, level)).max(Duration::from_nanos(1))
}

/// Requests that may go at once at `level`.
fn burst(s: &BudgetSettings, level: u32) -> NonZeroU32 {
    NonZeroU32::new((s.burst >> level).max(1)).unwrap_or(NonZeroU32::MIN)
}

fn limiter(s: &BudgetSettings, level: u32, clock: &TokioClock, rebuilt: bool) -> Limiter {
    let period = period(s, level);
    let burst = burst(s, level);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    let l = RateLimiter::direct_with_clock(quota, clock.clone());
    if rebuilt {
        // Rebuilt after a 429 or on the way back up: it starts empty, not with a fresh burst
        // (an hour must not hold more than burst + rate).
        let _ = l.check_n(burst);
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(per_hour: u32, burst: u32) -> BudgetSettings {
        BudgetSettings {
            requests_per_hour: per_hour,
            burst,
            ..BudgetSettings::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_holds_the_configured_rate_after_the_burst() {
        let b = Budget::new("admin", settings(3600, 5));
        let start = Instant::now();
        for _ in 0..5 {
            b.acquire().await.expect("burst");
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst goes at once");
        for _ in 0..10 {
            b.acquire().await.expect("paced");
        }
        // 3,600/hour = one a second after the burst.
        let e = start.elapsed();
        assert!(
            e >= Duration::from_secs(10) && e < Duration::from_millis(10_050),
            "{e:?}"
        );
        assert_eq!(b.status().sent, 15);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_with_retry_after_pauses_every_request_and_steps_the_pace_down() {
        let b = Budget::new("admin", settings(3600, 100));
        let p = b.acquire().await.expect("permit");
        let stale = b.acquire().await.expect("permit sent in the same epoch");
        b.rate_limited(p, Some(Duration::from_secs(30)))
            .expect("paused");
        assert_eq!(b.rate_per_hour(), 1800.0, "halved");
        // A second 429 from the same window (another worker) does not escalate.
        b.rate_limited(stale, None).expect("same pause");
        assert_eq!(b.rate_per_hour(), 1800.0);
        let start = Instant::now();
        b.acquire().await.expect("after the pause");
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert_eq!(b.status().rate_limited, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_max_wait_spends_the_budget_until_the_next_run() {
        let b = Budget::new("admin", settings(3600, 100));
        let p = b.acquire().await.expect("permit");
        let e = b
            .rate_limited(p, Some(Duration::from_secs(3450)))
            .expect_err("beyond max_wait");
        assert_eq!(e.resume_in, Some(Duration::from_secs(3450)));
        assert!(e.to_string().contains("Retry-After 3450 s"), "{e}");
        assert!(
            e.to_string().contains("expected to reopen in about 3450 s"),
            "{e}"
        );
        // Every later request fails at once: nothing is sent into the closed window.
        let start = Instant::now();
        assert_eq!(b.acquire().await.expect_err("spent"), e);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The next run does not send into the window before Bitbucket said it reopens...
        b.new_run();
        let again = b.acquire().await.expect_err("still closed");
        assert!(again.why.contains("reopens in"), "{again}");
        assert_eq!(b.status().sent, 1, "nothing more was sent");
        // ...and does once it has.
        tokio::time::sleep(Duration::from_secs(3450)).await;
        b.new_run();
        assert!(b.acquire().await.is_ok(), "a later run tries again");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unlimited_budget_never_makes_a_request_wait() {
        let b = Budget::unlimited("probe");
        let start = Instant::now();
        for _ in 0..10_000 {
            b.acquire().await.expect("permit");
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(b.status().credential, "probe");
    }

    #[tokio::test(start_paused = true)]
    async fn a_longer_retry_after_from_a_concurrent_request_lengthens_the_pause() {
        let b = Budget::new("admin", settings(3600, 100));
        let a = b.acquire().await.expect("permit");
        let other = b.acquire().await.expect("permit");
        b.rate_limited(a, Some(Duration::from_secs(10)))
            .expect("paused");
        b.rate_limited(other, Some(Duration::from_secs(40)))
            .expect("same window, later");
        assert_eq!(b.rate_per_hour(), 1800.0, "stepped down once");
        let start = Instant::now();
        b.acquire().await.expect("after the longer pause");
        assert_eq!(start.elapsed(), Duration::from_secs(40));
        // A stale 429 whose Retry-After is beyond max_wait spends the budget all the same.
        let c = b.acquire().await.expect("permit");
        let d = b.acquire().await.expect("permit");
        b.rate_limited(c, Some(Duration::from_secs(1)))
            .expect("paused");
        assert!(b.rate_limited(d, Some(Duration::from_secs(3600))).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_retry_after_still_pauses_and_a_rebuilt_pace_starts_without_a_burst() {
        let b = Budget::new("admin", settings(3600, 100));
        let p = b.acquire().await.expect("permit");
        b.rate_limited(p, Some(Duration::ZERO)).expect("paused");
        let start = Instant::now();
        b.acquire().await.expect("after the pause");
        // The pause (1 s), then the emptied pace's first slot (one period of 2 s).
        assert!(start.elapsed() >= MIN_PAUSE, "at least a second");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // Stepped down to 1,800/hour (one per 2 s) with no fresh burst of 50.
        let start = Instant::now();
        for _ in 0..3 {
            b.acquire().await.expect("paced");
        }
        assert!(
            start.elapsed() >= Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_retry_after_a_few_growing_backoffs_then_stop() {
        let s = BudgetSettings {
            max_backoffs: 3,
            ..settings(3600, 100)
        };
        let b = Budget::new("admin", s);
        let start = Instant::now();
        let mut pauses = Vec::new();
        loop {
            let p = match b.acquire().await {
                Ok(p) => p,
                Err(e) => {
                    assert!(e.why.contains("4 429s in a row"), "{e}");
                    break;
                }
            };
            let before = Instant::now();
            if b.rate_limited(p, None).is_err() {
                break;
            }
            pauses.push(before);
        }
        assert_eq!(pauses.len(), 3, "three backoffs, then the budget is spent");
        assert_eq!(b.status().rate_limited, 4);
        // Ceilings 2, 4, 8 s with jitter of at least a tenth: between 1.4 s and 14 s in all.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1400) && waited <= Duration::from_secs(15),
            "{waited:?}"
        );
        assert!(b.status().spent.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_resets_the_backoff_and_the_pace_recovers_slowly() {
        let s = BudgetSettings {
            max_backoffs: 1,
            recover_after: Duration::from_secs(60),
            ..settings(3600, 100)
        };
        let b = Budget::new("admin", s);
        let p = b.acquire().await.expect("permit");
        b.rate_limited(p, None).expect("first backoff");
        let p = b.acquire().await.expect("permit");
        b.answered();
        b.rate_limited(p, None)
            .expect("the answer in between reset the count");
        assert_eq!(b.rate_per_hour(), 900.0, "two steps down");
        tokio::time::sleep(Duration::from_secs(61)).await;
        b.acquire().await.expect("permit");
        assert_eq!(b.rate_per_hour(), 1800.0, "one step up per quiet minute");
        tokio::time::sleep(Duration::from_secs(61)).await;
        b.acquire().await.expect("permit");
        assert_eq!(b.rate_per_hour(), 3600.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pace_slower_than_max_wait_stops_instead_of_waiting_for_hours() {
        let s = BudgetSettings {
            max_wait: Duration::from_secs(10),
            ..settings(60, 1)
        };
        let b = Budget::new("admin", s);
        b.acquire().await.expect("the burst");
        let e = b.acquire().await.expect_err("the next is a minute away");
        assert!(e.why.contains("apply.max_wait (10 s)"), "{e}");
        assert!(e.resume_in.is_some_and(|d| d <= Duration::from_secs(60)));
    }
}
