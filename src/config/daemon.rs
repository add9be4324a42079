//! The daemon's settings: `[daemon]`, `[schedule]`, `[http]` and `[log]`.

use super::credentials::read_secret;
use super::paths::Paths;
use super::raw::{Field, Problems, RawTable, Table, Word};
use super::Secret;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// When full reconciles run.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleSpec {
    /// One every `daemon.interval_secs` (from the end of one to the start of the next).
    Every(Duration),
    /// At the occurrences of `schedule.cron` (UTC), 5 fields (minute first) or 6 (seconds
    /// first).
    Cron(String),
}

/// A validated cron expression.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "{expr:?} has {fields} fields; write 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
        ));
    }
    let cron = croner::parser::CronParser::builder()
        .seconds(if fields == 6 {
            croner::parser::Seconds::Required
        } else {
            croner::parser::Seconds::Disallowed
        })
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))?;
    // An expression that never fires (`0 0 31 2 *`) would leave the daemon idle for ever.
    let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
    cron.find_next_occurrence(&now, false)
        .map_err(|e| format!("{expr:?} never fires: {e}"))?;
    Ok(cron)
}

/// The longest gap between two of the next few occurrences of `cron` (what "an interval" means
/// for a cron schedule: the readiness age and the failure backoff are counted in it).
pub fn cron_period(cron: &croner::Cron) -> Duration {
    let mut t = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
    let mut longest = Duration::ZERO;
    for _ in 0..8 {
        let Ok(next) = cron.find_next_occurrence(&t, false) else {
            break;
        };
        longest = longest.max((next - t).to_std().unwrap_or_default());
        t = next;
    }
    longest.max(Duration::from_secs(1))
}

/// `log.format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[http]`: the daemon's endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSettings {
    /// `None`: no endpoints (`http.listen = ""`).
    pub listen: Option<SocketAddr>,
    /// `/readyz` answers 200 while the last successful reconcile is younger than this.
    pub ready_max_age: Duration,
    /// Bearer token for `POST /sync` and `POST /approve`; both are disabled without one.
    pub token: Option<Secret>,
}

/// The daemon's settings, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonSettings {
    pub schedule: ScheduleSpec,
    /// A full reconcile's usual period: `daemon.interval_secs`, or the cron's longest gap.
    pub interval: Duration,
    /// How long a stopping daemon waits for the requests in flight.
    pub shutdown_timeout: Duration,
    pub http: HttpSettings,
    pub log_format: LogFormat,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9184";

/// `[daemon]` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawDaemon {
    /// Seconds between full reconciles of `bbsync run`; default 300, at least 10 (or `schedule.cron`).
    interval_secs: Field<u64>,
    /// Seconds a stopping daemon waits for the requests in flight; default 30, 1 to 600.
    shutdown_timeout_secs: Field<u64>,
}

impl RawTable for RawDaemon {}

/// `[schedule]` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawSchedule {
    /// Cron expression (UTC) for full reconciles, 5 or 6 fields; instead of `daemon.interval_secs`.
    cron: Field<String>,
}

impl RawTable for RawSchedule {}

/// `[http]` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawHttp {
    /// Address of /healthz /readyz /metrics /status; default 127.0.0.1:9184, "" for none.
    listen: Field<String>,
    /// Seconds after the last successful reconcile that /readyz still answers 200; 3 intervals.
    ready_max_age_secs: Field<u64>,
    /// Bearer token of POST /sync and POST /approve (both disabled without it).
    token: Field<String>,
    /// File holding the token (container or systemd credential).
    token_file: Field<PathBuf>,
}

impl RawTable for RawHttp {}

/// `[log]` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawLog {
    /// `"text"` (default) or `"json"` (one object per line) on stderr.
    format: Field<Word<LogFormat>>,
}

impl RawTable for RawLog {}

pub(super) struct RawDaemonSections {
    pub daemon: Table<RawDaemon>,
    pub schedule: Table<RawSchedule>,
    pub http: Table<RawHttp>,
    pub log: Table<RawLog>,
}

pub(super) fn validate_daemon(
    raw: RawDaemonSections,
    paths: &Paths,
    p: &mut Problems,
) -> DaemonSettings {
    let RawDaemon {
        interval_secs,
        shutdown_timeout_secs,
    } = raw.daemon.read("daemon", p).unwrap_or_default();
    let RawSchedule { cron } = raw.schedule.read("schedule", p).unwrap_or_default();
    let RawHttp {
        listen,
        ready_max_age_secs,
        token,
        token_file,
    } = raw.http.read("http", p).unwrap_or_default();
    let RawLog { format } = raw.log.read("log", p).unwrap_or_default();

    let secs = interval_secs.get("daemon.interval_secs", p);
    let cron = cron.text("schedule.cron", p);
    let (schedule, interval) = match (secs, cron) {
        (Some(_), Some(_)) => {
            p.say(
                "schedule.cron",
                "schedule.cron and daemon.interval_secs are both set: keep one",
            );
            (
                ScheduleSpec::Every(Duration::from_secs(300)),
                Duration::from_secs(300),
            )
        }
        (None, Some(expr)) => match parse_cron(&expr) {
            Ok(c) => {
                let period = cron_period(&c);
                if period < Duration::from_secs(10) {
                    p.push(
                        "schedule.cron",
                        format!("{expr:?} fires every {} s; full reconciles need at least 10 s between them", period.as_secs()),
                    );
                }
                (ScheduleSpec::Cron(expr), period)
            }
            Err(e) => {
                p.push("schedule.cron", e);
                (
                    ScheduleSpec::Every(Duration::from_secs(300)),
                    Duration::from_secs(300),
                )
            }
        },
        (secs, None) => {
            let secs = secs.unwrap_or(300);
            if secs < 10 {
                p.say(
                    "daemon.interval_secs",
                    "daemon.interval_secs must be at least 10",
                );
            }
            let d = Duration::from_secs(secs);
            (ScheduleSpec::Every(d), d)
        }
    };
    let shutdown = shutdown_timeout_secs
        .get("daemon.shutdown_timeout_secs", p)
        .unwrap_or(30);
    if !(1..=600).contains(&shutdown) {
        p.push(
            "daemon.shutdown_timeout_secs",
            format!("{shutdown} is not between 1 and 600"),
        );
    }
    let listen = match listen.get("http.listen", p) {
        None => SocketAddr::from_str(DEFAULT_LISTEN).ok(),
        Some(s) if s.trim().is_empty() => None,
        Some(s) => match SocketAddr::from_str(s.trim()) {
            Ok(a) => Some(a),
            Err(_) => {
                p.push(
                    "http.listen",
                    format!("{s:?} is not an address with a port (like 127.0.0.1:9184 or [::1]:9184); \"\" turns the endpoints off"),
                );
                None
            }
        },
    };
    let ready_max_age = ready_max_age_secs
        .get("http.ready_max_age_secs", p)
        .map_or(interval * 3, Duration::from_secs);
    if ready_max_age < interval {
        p.push(
            "http.ready_max_age_secs",
            format!(
                "{} s is shorter than one reconcile interval ({} s): /readyz would fail between every two runs",
                ready_max_age.as_secs(),
                interval.as_secs()
            ),
        );
    }
    let token = read_secret("http.token", token, token_file, paths, p);
    if let Some(t) = &token {
        if t.expose().len() < 16 {
            p.say(
                "http.token",
                "http.token must be at least 16 characters (it guards POST /sync and POST /approve)",
            );
        }
    }
    DaemonSettings {
        schedule,
        interval,
        shutdown_timeout: Duration::from_secs(shutdown),
        http: HttpSettings {
            listen,
            ready_max_age,
            token,
        },
        log_format: format.word("log.format", p).unwrap_or_default(),
    }
}
