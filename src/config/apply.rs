//! `[apply]`: how a plan is executed: the worker pool, each credential's request budget, and
//! whether what was written is read back.

use super::raw::{Field, Problems, RawTable, Table};
use serde::Deserialize;
use std::time::Duration;

/// `[apply]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplySettings {
    /// Changes in flight at once, per credential.
    pub concurrency: usize,
    /// Requests per hour each credential may send, reads and writes together (Bitbucket
    /// allows about 1,000 per rolling hour and counts refused requests too).
    pub requests_per_hour: u32,
    /// Requests that may go at once before pacing starts. With GCRA, any hour holds at most
    /// `burst + requests_per_hour` requests: the defaults (100 + 900) stay within Bitbucket's
    /// 1,000.
    pub burst: u32,
    /// Longest a credential's work waits for its budget (a `Retry-After`, a backoff, the pace)
    /// before it stops for this run and stays queued for the next.
    pub max_wait: Duration,
    /// Failures in a row (after retries) that open an API family's circuit for the run.
    pub circuit_failures: u32,
    /// Read back what was written at the end of an apply, re-apply a lost write once, and
    /// report what is still missing as failed.
    pub verify: bool,
}

impl Default for ApplySettings {
    fn default() -> Self {
        ApplySettings {
            concurrency: 4,
            requests_per_hour: 900,
            burst: 100,
            max_wait: Duration::from_secs(300),
            circuit_failures: 5,
            verify: true,
        }
    }
}

/// `[apply]` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawApply {
    /// Changes in flight at once, per credential; default 4, 1 to 32.
    concurrency: Field<usize>,
    /// Requests per hour per credential (reads and writes); default 900.
    requests_per_hour: Field<u32>,
    /// Requests that may go at once before pacing starts; default 100 (burst + rate <= 1,000/h).
    burst: Field<u32>,
    /// Seconds a credential's work may wait for its budget before stopping for this run; 300, at most 3600.
    max_wait_secs: Field<u64>,
    /// Failures in a row that open an API family's circuit for the run; default 5.
    circuit_failures: Field<u32>,
    /// Read back what was written and re-apply a lost write once; default true.
    verify: Field<bool>,
}

impl RawTable for RawApply {}

pub(super) fn validate_apply(raw: Table<RawApply>, p: &mut Problems) -> ApplySettings {
    let RawApply {
        concurrency,
        requests_per_hour,
        burst,
        max_wait_secs,
        circuit_failures,
        verify,
    } = raw.read("apply", p).unwrap_or_default();
    let d = ApplySettings::default();
    let concurrency = concurrency
        .get("apply.concurrency", p)
        .unwrap_or(d.concurrency);
    if !(1..=32).contains(&concurrency) {
        p.push(
            "apply.concurrency",
            format!("{concurrency} is not between 1 and 32"),
        );
    }
    let requests_per_hour = requests_per_hour
        .get("apply.requests_per_hour", p)
        .unwrap_or(d.requests_per_hour);
    if requests_per_hour == 0 {
        p.say(
            "apply.requests_per_hour",
            "apply.requests_per_hour must be at least 1",
        );
    }
    let burst = burst.get("apply.burst", p).unwrap_or(d.burst);
    if burst == 0 {
        p.say("apply.burst", "apply.burst must be at least 1");
    }
    let circuit_failures = circuit_failures
        .get("apply.circuit_failures", p)
        .unwrap_or(d.circuit_failures);
    if circuit_failures == 0 {
        p.say(
            "apply.circuit_failures",
            "apply.circuit_failures must be at least 1",
        );
    }
    let max_wait = max_wait_secs
        .get("apply.max_wait_secs", p)
        .map_or(d.max_wait, Duration::from_secs);
    if max_wait > Duration::from_secs(3600) {
        p.push(
            "apply.max_wait_secs",
            format!(
                "{} s is more than an hour (Bitbucket's window is an hour; work waiting longer belongs to the next run)",
                max_wait.as_secs()
            ),
        );
    }
    ApplySettings {
        concurrency,
        requests_per_hour,
        burst,
        max_wait,
        circuit_failures,
        verify: verify.get("apply.verify", p).unwrap_or(d.verify),
    }
}
