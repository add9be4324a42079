//! When to send a request again, and how long to wait first.
//!
//! [`Client::send`](super::Client::send) makes one attempt per call of the closure it hands to
//! [`RetryPolicy::run`]; the policy classifies each outcome and sleeps with `tokio::time`, so
//! tests drive it under `tokio::time::pause()`.
//!
//! Schedule: full-jitter exponential backoff, uniform in `[0, min(cap, base * 2^attempt)]`
//! (0.5 s doubling to 30 s by default), or the server's `Retry-After` (seconds or an HTTP date)
//! when it gives one, capped at `max_retry_after` (60 s) so a run stays responsive.
//!
//! What is retried:
//! - a connection that could not be made: the request was not processed, so even a POST
//!   (group create, not idempotent) may be sent again;
//! - a 429: not processed either, but it is the credential's window that is closed, not this
//!   request that failed: the client pauses the credential's whole budget
//!   ([`Budget`](super::budget::Budget)) and resends only when the budget lets it; those
//!   resends do not count against `max_retries`;
//! - a 5xx, a timeout or a cut answer: the request may have been processed, so only idempotent
//!   methods (everything but POST) are sent again;
//! - nothing else: other 4xx will not change by retrying.

use reqwest::Method;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// How one attempt ended, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Final: success, or an answer that retrying will not change.
    Final,
    /// A 429: not processed, and the credential's whole budget must pause (the client hands
    /// it to its [`Budget`](super::budget::Budget), not to the per-request backoff).
    RateLimited { retry_after: Option<Duration> },
    /// The server did not process the request (connection refused): safe to resend.
    NotProcessed { retry_after: Option<Duration> },
    /// The request may have been processed (5xx, timeout, cut answer): resend only if idempotent.
    MaybeProcessed { retry_after: Option<Duration> },
}

/// What an attempt's outcome says about retrying it.
pub trait Classify {
    fn class(&self) -> Class;
}

/// Whether sending `method` twice has the effect of sending it once.
pub fn is_idempotent(method: &Method) -> bool {
    *method != Method::POST && *method != Method::PATCH
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub max_retries: u32,
    /// First backoff ceiling; doubles per attempt.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
    /// Longest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Retries `n` times with the default schedule.
    pub fn with_retries(n: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries: n,
            ..RetryPolicy::default()
        }
    }

    /// The backoff ceiling before retry number `attempt` (0-based): `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.cap)
    }

    /// Full jitter: `unit` (uniform in [0, 1]) of the ceiling.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The wait before retry number `attempt`, or `None` when the outcome is final or the
    /// retries are spent.
    pub fn delay(
        &self,
        attempt: u32,
        class: Class,
        idempotent: bool,
        unit: f64,
    ) -> Option<Duration> {
        let retry_after = match class {
            Class::Final => return None,
            Class::MaybeProcessed { .. } if !idempotent => return None,
            Class::RateLimited { retry_after }
            | Class::NotProcessed { retry_after }
            | Class::MaybeProcessed { retry_after } => retry_after,
        };
        if attempt >= self.max_retries {
            return None;
        }
        Some(match retry_after {
            Some(d) => d.min(self.max_retry_after),
            None => self.backoff(attempt, unit),
        })
    }

    /// Runs `attempt` until its outcome is final or the retries are spent, sleeping between
    /// attempts; returns the last outcome.
    pub async fn run<T, F, Fut>(&self, idempotent: bool, what: &str, mut attempt: F) -> T
    where
        T: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut n = 0u32;
        loop {
            let out = attempt().await;
            let Some(wait) = self.delay(n, out.class(), idempotent, fastrand::f64()) else {
                return out;
            };
            tracing::warn!(
                request = what,
                attempt = n + 1,
                delay_ms = wait.as_millis() as u64,
                "retrying Bitbucket call"
            );
            tokio::time::sleep(wait).await;
            n += 1;
        }
    }
}

/// A `Retry-After` value: delay seconds, or an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`)
/// measured from `now` (a date in the past means "now"). Uncapped; the policy caps it.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn backoff_doubles_from_half_a_second_to_thirty_with_full_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(0), Duration::from_millis(500));
        assert_eq!(p.ceiling(1), S(1));
        assert_eq!(p.ceiling(3), S(4));
        assert_eq!(p.ceiling(6), S(30));
        assert_eq!(p.ceiling(40), S(30), "no overflow for large attempts");
        assert_eq!(p.backoff(3, 1.0), S(4));
        assert_eq!(p.backoff(3, 0.5), S(2));
        assert_eq!(p.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(3, 7.0), S(4), "the unit is clamped");
    }

    #[test]
    fn only_idempotent_requests_are_resent_after_they_may_have_been_processed() {
        let p = RetryPolicy::with_retries(3);
        let maybe = Class::MaybeProcessed { retry_after: None };
        let not = Class::NotProcessed { retry_after: None };
        assert_eq!(
            p.delay(0, maybe, true, 1.0),
            Some(Duration::from_millis(500))
        );
        assert_eq!(p.delay(0, maybe, false, 1.0), None, "a POST after a 5xx");
        assert_eq!(
            p.delay(0, not, false, 1.0),
            Some(Duration::from_millis(500))
        );
        assert_eq!(p.delay(0, Class::Final, true, 1.0), None);
        assert_eq!(p.delay(3, not, true, 1.0), None, "retries spent");
        assert!(is_idempotent(&Method::PUT) && is_idempotent(&Method::DELETE));
        assert!(is_idempotent(&Method::GET));
        assert!(!is_idempotent(&Method::POST));
    }

    #[test]
    fn retry_after_is_honoured_in_both_forms_and_capped() {
        let now = SystemTime::UNIX_EPOCH + S(784_111_747); // Sun, 06 Nov 1994 08:49:07 GMT
        assert_eq!(parse_retry_after(" 120 ", now), Some(S(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(S(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:48:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past: now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        let p = RetryPolicy::default();
        let long = Class::NotProcessed {
            retry_after: Some(S(3450)),
        };
        assert_eq!(p.delay(0, long, true, 0.1), Some(S(60)), "capped at 60 s");
        let short = Class::NotProcessed {
            retry_after: Some(S(7)),
        };
        assert_eq!(p.delay(2, short, true, 0.1), Some(S(7)), "not jittered");
    }

    /// A scripted outcome for the retry loop.
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Out(Class);
    impl Classify for Out {
        fn class(&self) -> Class {
            self.0
        }
    }

    async fn scripted(p: &RetryPolicy, idempotent: bool, script: &[Class]) -> (u32, Duration) {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        p.run(idempotent, "test", || {
            let i = calls.fetch_add(1, Ordering::SeqCst) as usize;
            let c = script[i.min(script.len() - 1)];
            async move { Out(c) }
        })
        .await;
        (calls.load(Ordering::SeqCst), start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_waits_between_attempts_and_stops_when_the_outcome_is_final() {
        let p = RetryPolicy::with_retries(3);
        let five_hundred = Class::MaybeProcessed { retry_after: None };
        let (calls, waited) = scripted(&p, true, &[five_hundred, five_hundred, Class::Final]).await;
        assert_eq!(calls, 3);
        assert!(waited <= Duration::from_millis(1500), "{waited:?}");

        let (calls, waited) = scripted(&p, false, &[five_hundred, Class::Final]).await;
        assert_eq!((calls, waited), (1, Duration::ZERO), "a POST is not resent");

        let limited = Class::NotProcessed {
            retry_after: Some(S(3450)),
        };
        let (calls, waited) = scripted(&p, false, &[limited]).await;
        assert_eq!(calls, 4, "1 + 3 retries, even for a POST");
        assert_eq!(waited, S(180), "three waits, each capped at 60 s");
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_without_retry_after_really_waits() {
        let p = RetryPolicy::with_retries(6);
        let mut total = Duration::ZERO;
        for _ in 0..20 {
            let (calls, waited) =
                scripted(&p, true, &[Class::NotProcessed { retry_after: None }]).await;
            assert_eq!(calls, 7);
            assert!(waited <= Duration::from_millis(31_500), "{waited:?}");
            total += waited;
        }
        // Uniform jitter under ceilings 0.5 + 1 + ... + 16 = 31.5 s: the mean of 20 runs is
        // near 15.75 s (its standard deviation is about 2 s).
        let mean = total / 20;
        assert!(mean > S(8) && mean < S(24), "mean wait {mean:?}");
    }
}
