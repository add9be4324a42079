//! Off-boarding poll latency (issue 18): "directory change to access gone", with a private
//! OpenLDAP slapd and the Bitbucket emulator on 127.0.0.1, through the daemon loop itself.
//!
//! `cargo bench --bench offboarding` (a few minutes at the defaults):
//!
//! 1. **Latency.** A slapd preloaded with `BBSYNC_BENCH_PEOPLE` people (default 2,000) in
//!    `BBSYNC_BENCH_GROUPS` groups (20; everyone in one team, every fourth person in a second),
//!    each group mapped to a Bitbucket group of the same name that the emulator is seeded with
//!    the same members (so the start-up reconcile plans nothing). The emulator answers every
//!    API request after `BBSYNC_BENCH_LATENCY_MS` (30). `bbsync::daemon::serve` runs in-process
//!    with a full reconcile every `daemon.interval_secs` (`BBSYNC_BENCH_FULL_SECS`, 300) and the
//!    poll every `offboarding.poll_interval_secs` (`BBSYNC_BENCH_POLL_SECS`, 30). After the
//!    start-up reconcile, `BBSYNC_BENCH_LEAVERS` people (20) are disabled one at a time
//!    (`ldapmodify`, `nsAccountLock: TRUE`) at random offsets in `BBSYNC_BENCH_SPREAD_SECS`
//!    (150; seed `BBSYNC_BENCH_SEED`, 18). For each: the wall time from `ldapmodify` returning
//!    to the first `Emulator::state()` (read every 100 ms) that lists them in no group. Then a
//!    full reconcile is triggered ("run now"): it must plan nothing for them. The request
//!    budget is bbsync's default (900/hour, burst 100) unless `BBSYNC_BENCH_BUDGET_PER_HOUR`
//!    (and `BBSYNC_BENCH_BURST`, 100) say otherwise.
//! 2. **Cost of one poll**, apart, on a new `Reconciler` over the same servers (after one full
//!    run; budget 3,600,000/hour, burst 1,000, so that pacing is not measured):
//!    `BBSYNC_BENCH_COST_RUNS` (10) times, disable one person, then time `poll_leavers(true)`
//!    (LDAP read + plan + apply), a poll that finds nobody, and the light LDAP read on its own
//!    (the poll's window, and a window holding every person); then the two Bitbucket reads a
//!    poll makes (the workspace member listing, the groups read), timed apart.
//!
//! The preload gives every entry `modifyTimestamp` 2025-01-01 (the steady state: a poll reads
//! the people changed since the last full read, minus a 300 s margin). `BBSYNC_BENCH_FRESH=1`
//! keeps slapadd's own timestamps (everyone modified just now, as after a bulk import): then
//! every poll within ~300 s of the load reads the whole directory.
//!
//! `BENCH_RUST_LOG=bbsync=info` prints bbsync's logs to stderr.

#[path = "../tests/common/mod.rs"]
mod common;

use bbsync::config::Config;
use bbsync::daemon::{serve, Job, Schedule, Stats, Triggers};
use bbsync::plan::Change;
use bbsync::reconcile::{PollReport, Reconciler, RunReport};
use bbsync_emulator::{Emulator, RequestRecord};
use bbsync_testkit::{Options, Slapd, BASE, READER_DN, READER_PW};
use common::{acc, ADMIN_EMAIL, ADMIN_TOKEN};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

// ---- settings --------------------------------------------------------------------------------

struct Opts {
    people: usize,
    groups: usize,
    leavers: usize,
    spread: Duration,
    poll: u64,
    full: u64,
    latency: Duration,
    seed: u64,
    cost_runs: usize,
    fresh: bool,
    /// Part 1's `apply.requests_per_hour` and `apply.burst` (`None`: bbsync's defaults).
    budget: Option<u32>,
    burst: u32,
}

fn env<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Opts {
    fn from_env() -> Opts {
        let o = Opts {
            people: env("BBSYNC_BENCH_PEOPLE", 2000),
            groups: env("BBSYNC_BENCH_GROUPS", 20),
            leavers: env("BBSYNC_BENCH_LEAVERS", 20),
            spread: Duration::from_secs(env("BBSYNC_BENCH_SPREAD_SECS", 150)),
            poll: env("BBSYNC_BENCH_POLL_SECS", 30),
            full: env("BBSYNC_BENCH_FULL_SECS", 300),
            latency: Duration::from_millis(env("BBSYNC_BENCH_LATENCY_MS", 30)),
            seed: env("BBSYNC_BENCH_SEED", 18),
            cost_runs: env("BBSYNC_BENCH_COST_RUNS", 10),
            fresh: env("BBSYNC_BENCH_FRESH", 0u8) == 1,
            budget: std::env::var("BBSYNC_BENCH_BUDGET_PER_HOUR")
                .ok()
                .and_then(|v| v.trim().parse().ok()),
            burst: env("BBSYNC_BENCH_BURST", 100),
        };
        assert!(
            o.groups >= 2 && o.people >= o.groups,
            "people >= groups >= 2"
        );
        assert!(
            o.leavers + o.cost_runs < o.people,
            "more leavers than people"
        );
        o
    }

    fn describe(&self) -> String {
        format!(
            "{} people in {} groups (timestamps {}); emulator latency {} ms per request; poll every {} s, full reconcile every {} s (±5%); {} leavers over {} s (seed {}); request budget {}; {} single-poll cost runs (budget 3600000/h, burst 1000)",
            self.people,
            self.groups,
            if self.fresh { "fresh from slapadd" } else { "2025-01-01" },
            self.latency.as_millis(),
            self.poll,
            self.full,
            self.leavers,
            self.spread.as_secs(),
            self.seed,
            match self.budget {
                Some(b) => format!("{b}/h, burst {}", self.burst),
                None => "bbsync's default (900/h, burst 100)".into(),
            },
            self.cost_runs
        )
    }
}

// ---- the directory and the workspace ---------------------------------------------------------

fn uid(i: usize) -> String {
    format!("p{i:05}")
}

fn team(g: usize) -> String {
    format!("team-{g:02}")
}

/// The teams of person `i`: one, and for every fourth person a second.
fn teams_of(i: usize, groups: usize) -> Vec<usize> {
    let first = i % groups;
    let mut t = vec![first];
    if i.is_multiple_of(4) {
        let second = (i / 4 + 7) % groups;
        if second != first {
            t.push(second);
        }
    }
    t
}

fn members_by_team(o: &Opts) -> Vec<Vec<usize>> {
    let mut by = vec![Vec::new(); o.groups];
    for i in 0..o.people {
        for g in teams_of(i, o.groups) {
            by[g].push(i);
        }
    }
    by
}

fn preload(o: &Opts) -> String {
    let stamp = if o.fresh {
        String::new()
    } else {
        "createTimestamp: 20250101000000Z\nmodifyTimestamp: 20250101000000Z\n".to_owned()
    };
    let mut s = String::with_capacity(o.people * 300);
    for i in 0..o.people {
        let u = uid(i);
        let _ = write!(
            s,
            "dn: uid={u},ou=people,{BASE}\nobjectClass: inetOrgPerson\nobjectClass: atlassianAccount\nuid: {u}\ncn: Person {u}\nsn: {u}\nmail: {u}@acme.test\natlassianAccountId: {}\n{stamp}\n",
            acc(&u)
        );
    }
    for (g, members) in members_by_team(o).iter().enumerate() {
        let _ = write!(
            s,
            "dn: cn={},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {}\n",
            team(g),
            team(g)
        );
        for i in members {
            let _ = writeln!(s, "member: uid={},ou=people,{BASE}", uid(*i));
        }
        s.push_str(&stamp);
        s.push('\n');
    }
    s
}

fn workspace(o: &Opts) -> bbsync_emulator::Seed {
    let names: Vec<String> = (0..o.people).map(uid).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut seed = common::seed(&refs);
    for (g, members) in members_by_team(o).iter().enumerate() {
        let m: Vec<&str> = members.iter().map(|i| refs[*i]).collect();
        seed.groups.push(common::group(&team(g), &m));
    }
    seed
}

/// `budget`: `[apply] requests_per_hour` and `burst` (`None`: bbsync's defaults).
fn config(
    o: &Opts,
    emu: &Emulator,
    slapd: &Slapd,
    dir: &Path,
    budget: Option<(u32, u32)>,
) -> Config {
    let mut text = format!(
        r#"
mode = "apply"
[bitbucket]
workspace = "acme"
api_url = "{emu}"
[credentials.admin]
kind = "api_token"
email = "{ADMIN_EMAIL}"
token = "{ADMIN_TOKEN}"
[source]
kind = "ldap"
url = "{ldap}"
bind_dn = "{READER_DN}"
bind_password = "{READER_PW}"
users_base = "ou=people,{BASE}"
groups_base = "ou=groups,{BASE}"
[directory]
disabled_attribute = "nsAccountLock"
[audit]
path = "audit.jsonl"
[daemon]
interval_secs = {full}
[offboarding]
poll_interval_secs = {poll}
"#,
        emu = emu.base_url(),
        ldap = slapd.url(),
        full = o.full,
        poll = o.poll,
    );
    if let Some((per_hour, burst)) = budget {
        let _ = write!(
            text,
            "[apply]\nrequests_per_hour = {per_hour}\nburst = {burst}\n"
        );
    }
    for g in 0..o.groups {
        let _ = write!(
            text,
            "[[groups]]\nname = \"{t}\"\nfrom = [\"{t}\"]\n",
            t = team(g)
        );
    }
    Config::from_toml_str(&text, "offboarding-bench.toml", dir).expect("a valid bench config")
}

fn disable(slapd: &Slapd, i: usize) {
    let done = slapd.ldapmodify(&format!(
            "dn: uid={},ou=people,{BASE}\nchangetype: modify\nreplace: nsAccountLock\nnsAccountLock: TRUE\n",
            uid(i)
        ));
    if let Err(e) = done {
        let log = std::fs::read_to_string(slapd.dir().join("slapd.log")).unwrap_or_default();
        let alive = slapd
            .pid()
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .and_then(|st| {
                st.lines()
                    .find(|l| l.starts_with("State:"))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "gone".into());
        panic!(
            "ldapmodify of {}: {e}; slapd alive: {alive}; the end of its log:\n{}",
            uid(i),
            log.lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// account id -> the groups (slugs) the emulator lists them in.
fn memberships(emu: &Emulator) -> BTreeMap<String, BTreeSet<String>> {
    let mut by = BTreeMap::<String, BTreeSet<String>>::new();
    for g in emu.state().groups {
        let slug = g.slug();
        for m in g.members {
            by.entry(m).or_default().insert(slug.clone());
        }
    }
    by
}

// ---- what bbsync logs about its LDAP searches --------------------------------------------------

/// One `search done` debug event of `bbsync::source::ldap`.
#[derive(Clone, Debug)]
struct Search {
    at: Instant,
    name: String,
    entries: u64,
    ms: u64,
}

static SEARCHES: Mutex<Vec<Search>> = Mutex::new(Vec::new());

struct SearchLayer;

#[derive(Default)]
struct SearchFields {
    message: String,
    search: String,
    entries: u64,
    ms: u64,
}

impl tracing::field::Visit for SearchFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "search" {
            value.clone_into(&mut self.search);
        }
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "entries" => self.entries = value,
            "ms" => self.ms = value,
            _ => {}
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.record_u64(field, u64::try_from(value).unwrap_or_default());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "search" => self.search = format!("{value:?}").trim_matches('"').to_owned(),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SearchLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut f = SearchFields::default();
        event.record(&mut f);
        if f.message == "search done" {
            SEARCHES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Search {
                    at: Instant::now(),
                    name: f.search,
                    entries: f.entries,
                    ms: f.ms,
                });
        }
    }
}

fn searches_between(from: Instant, to: Instant) -> Vec<Search> {
    SEARCHES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|s| s.at >= from && s.at <= to)
        .cloned()
        .collect()
}

/// Entries returned by the last "changed users" search.
fn last_changed_read() -> u64 {
    SEARCHES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .rev()
        .find(|s| s.name == "changed users")
        .map_or(0, |s| s.entries)
}

fn install_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer as _;
    let capture = SearchLayer.with_filter(
        tracing_subscriber::filter::Targets::new()
            .with_target("bbsync::source", tracing::Level::DEBUG),
    );
    let fmt = std::env::var("BENCH_RUST_LOG").ok().map(|f| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(tracing_subscriber::EnvFilter::new(f))
    });
    let subscriber = tracing_subscriber::registry().with(capture).with(fmt);
    tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
}

// ---- the two jobs the daemon loop runs ---------------------------------------------------------

struct FullRecord {
    start: Instant,
    end: Instant,
    result: Result<RunReport, String>,
}

struct FullJob {
    rec: Arc<Reconciler>,
    log: Mutex<Vec<FullRecord>>,
}

impl Job for FullJob {
    fn run(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let start = Instant::now();
            let result = self.rec.run(true).await.map_err(|e| e.to_string());
            let ok = result.as_ref().is_ok_and(RunReport::ok);
            let end = Instant::now();
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(FullRecord { start, end, result });
            ok
        })
    }
}

struct PollRecord {
    start: Instant,
    end: Instant,
    /// Indexes into the emulator's request log at the start and the end.
    requests: (usize, usize),
    result: Result<PollReport, String>,
}

struct PollJob {
    rec: Arc<Reconciler>,
    emu: Arc<Emulator>,
    log: Mutex<Vec<PollRecord>>,
}

/// `rec.poll_leavers(true)`, errors as text.
async fn poll_once(rec: &Arc<Reconciler>) -> Result<PollReport, String> {
    rec.poll_leavers(true).await.map_err(|e| e.to_string())
}

impl Job for PollJob {
    fn run(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let start = Instant::now();
            let before = self.emu.requests().len();
            let result = poll_once(&self.rec).await;
            let ok = result.as_ref().is_ok_and(PollReport::ok);
            let end = Instant::now();
            let after = self.emu.requests().len();
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(PollRecord {
                    start,
                    end,
                    requests: (before, after),
                    result,
                });
            ok
        })
    }
}

// ---- figures -----------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted values.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    nearest_rank(&s, 50.0)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Seconds from `t0` to `t` (negative when `t` is earlier).
fn since(t0: Instant, t: Instant) -> f64 {
    if t >= t0 {
        secs(t - t0)
    } else {
        -secs(t0 - t)
    }
}

/// `METHOD route` -> count.
fn by_route(reqs: &[RequestRecord]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in reqs {
        *m.entry(format!("{} {} {}", r.method, r.route, r.status))
            .or_default() += 1;
    }
    m
}

fn show_routes(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, n)| format!("{n} x {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- 1. latency through the daemon loop --------------------------------------------------------

struct Leaver {
    person: usize,
    account: String,
    groups: BTreeSet<String>,
    disabled: Instant,
    gone: Option<Instant>,
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns the people disabled (so the cost phase picks others) and whether every goal was met.
async fn latency(
    o: &Opts,
    slapd: &Arc<Slapd>,
    emu: &Arc<Emulator>,
    cfg: Config,
) -> (BTreeSet<usize>, bool) {
    let schedule = Schedule::from_config(&cfg).expect("the schedule");
    let shutdown = CancellationToken::new();
    let rec = Arc::new(
        Reconciler::new(cfg)
            .expect("a reconciler")
            .with_shutdown(shutdown.clone()),
    );
    let full = Arc::new(FullJob {
        rec: Arc::clone(&rec),
        log: Mutex::new(Vec::new()),
    });
    let poll = Arc::new(PollJob {
        rec: Arc::clone(&rec),
        emu: Arc::clone(emu),
        log: Mutex::new(Vec::new()),
    });
    let triggers = Arc::new(Triggers::default());
    let t_serve = Instant::now();
    let daemon: tokio::task::JoinHandle<Stats> = tokio::spawn({
        let (full, poll, triggers, shutdown) = (
            Arc::clone(&full),
            Arc::clone(&poll),
            Arc::clone(&triggers),
            shutdown.clone(),
        );
        async move { serve(&*full, Some(&*poll), &schedule, &triggers, &shutdown).await }
    });
    let full_runs = |f: &FullJob| f.log.lock().unwrap_or_else(|e| e.into_inner()).len();
    wait_for("the start-up reconcile", Duration::from_secs(300), || {
        full_runs(&full) >= 1
    })
    .await;
    let t0 = {
        let log = full.log.lock().unwrap_or_else(|e| e.into_inner());
        let first = &log[0];
        match &first.result {
            Ok(r) => eprintln!(
                "[1] start-up reconcile: {:.2} s, {} people ({} leavers), {} changes planned, {} requests",
                secs(first.end - first.start),
                r.source.people,
                r.source.leavers,
                r.plan.changes.len(),
                r.api_requests
            ),
            Err(e) => panic!("the start-up reconcile failed: {e}"),
        }
        first.end
    };

    // Who leaves, and when (offsets from the end of the start-up reconcile).
    let mut rng = fastrand::Rng::with_seed(o.seed);
    let mut chosen = BTreeSet::new();
    while chosen.len() < o.leavers {
        chosen.insert(rng.usize(0..o.people));
    }
    let mut order: Vec<usize> = chosen.iter().copied().collect();
    rng.shuffle(&mut order);
    let mut offsets: Vec<Duration> = (0..o.leavers)
        .map(|_| Duration::from_millis(rng.u64(0..o.spread.as_millis().max(1) as u64)))
        .collect();
    offsets.sort();

    let leavers: Arc<Mutex<Vec<Leaver>>> = Arc::new(Mutex::new(Vec::new()));
    let watching = CancellationToken::new();
    let watcher = tokio::spawn({
        let (leavers, emu, watching) = (Arc::clone(&leavers), Arc::clone(emu), watching.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = watching.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let waiting = leavers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .any(|l| l.gone.is_none());
                if !waiting {
                    continue;
                }
                let by = memberships(&emu);
                let now = Instant::now();
                for l in leavers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter_mut()
                    .filter(|l| l.gone.is_none())
                {
                    if by.get(&l.account).is_none_or(BTreeSet::is_empty) {
                        l.gone = Some(now);
                    }
                }
            }
        }
    });

    for (k, (&person, &at)) in order.iter().zip(&offsets).enumerate() {
        tokio::time::sleep_until((t0 + at).into()).await;
        let account = acc(&uid(person));
        let groups = memberships(emu).remove(&account).unwrap_or_default();
        assert!(
            !groups.is_empty(),
            "{} is in no group before leaving",
            uid(person)
        );
        let s = Arc::clone(slapd);
        tokio::task::spawn_blocking(move || disable(&s, person))
            .await
            .expect("ldapmodify task");
        let disabled = Instant::now();
        eprintln!(
            "[1] leaver {:2}/{} {} ({} group(s)) disabled at +{:.1} s",
            k + 1,
            o.leavers,
            uid(person),
            groups.len(),
            since(t0, disabled)
        );
        leavers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Leaver {
                person,
                account,
                groups,
                disabled,
                gone: None,
            });
    }
    let limit = Duration::from_secs(o.poll * 4 + 120);
    let t_last = Instant::now();
    while leavers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|l| l.gone.is_none())
        && t_last.elapsed() < limit
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watching.cancel();
    watcher.await.expect("the watcher");

    // A full reconcile now: it must find nothing left to do for them.
    let runs_before = full_runs(&full);
    triggers.request();
    wait_for(
        "the triggered full reconcile",
        Duration::from_secs(300),
        || full_runs(&full) > runs_before,
    )
    .await;
    shutdown.cancel();
    let stats = daemon.await.expect("the daemon loop");
    let t_end = Instant::now();

    // ---- report ----
    let leavers = std::mem::take(&mut *leavers.lock().unwrap_or_else(|e| e.into_inner()));
    let polls = std::mem::take(&mut *poll.log.lock().unwrap_or_else(|e| e.into_inner()));
    let fulls = std::mem::take(&mut *full.log.lock().unwrap_or_else(|e| e.into_inner()));
    let log = emu.requests();
    let mut ok = true;

    println!("\n== 1. latency: directory change to access gone, through the daemon loop ==");
    println!("(times +s are from the end of the start-up reconcile)");
    println!(
        "daemon: {} full runs, {} polls ({} failed runs) in {:.0} s",
        stats.runs,
        stats.polls,
        stats.failed,
        since(t_serve, t_end)
    );
    for (n, f) in fulls.iter().enumerate() {
        let what = match &f.result {
            Ok(r) => format!(
                "{} changes planned ({} remove_member), {} requests, ok {}",
                r.plan.changes.len(),
                r.plan
                    .changes
                    .iter()
                    .filter(|p| matches!(p.change, Change::RemoveMember { .. }))
                    .count(),
                r.api_requests,
                r.ok()
            ),
            Err(e) => format!("FAILED: {e}"),
        };
        println!(
            "full run {}: {:+.1} .. {:+.1} s, {:.2} s: {what}",
            n + 1,
            since(t0, f.start),
            since(t0, f.end),
            secs(f.end - f.start)
        );
    }

    // Which poll removed whom; whether a poll that started after a change missed it.
    let overlaps_full = |p: &PollRecord| fulls.iter().any(|f| f.start < p.end && p.start < f.end);
    let mut rows = Vec::new();
    let mut latencies = Vec::new();
    let mut misses = Vec::new();
    for (k, l) in leavers.iter().enumerate() {
        let after: Vec<(usize, &PollRecord)> = polls
            .iter()
            .enumerate()
            .filter(|(_, p)| p.start >= l.disabled)
            .collect();
        let found_by = after.iter().find(|(_, p)| {
            p.result
                .as_ref()
                .is_ok_and(|r| r.new_leavers.iter().any(|a| a.as_str() == l.account))
        });
        if let Some((n, _)) = found_by {
            for (m, p) in after.iter().filter(|(m, _)| m < n) {
                misses.push(format!(
                    "{} disabled at +{:.1} s, not found by poll {} (+{:.1} s: {})",
                    uid(l.person),
                    since(t0, l.disabled),
                    m + 1,
                    since(t0, p.start),
                    match &p.result {
                        Ok(r) => format!("{} new leavers", r.new_leavers.len()),
                        Err(e) => format!("failed: {e}"),
                    }
                ));
            }
        }
        let lat = l.gone.map(|g| g - l.disabled);
        if let Some(d) = lat {
            latencies.push(secs(d));
        }
        let (tick_wait, cost, poll_no) = match found_by {
            Some((n, p)) => (
                format!("{:.1}", secs(p.start - l.disabled)),
                format!("{:.0}", ms(p.end - p.start)),
                format!("{}", n + 1),
            ),
            None => ("-".into(), "-".into(), "none".into()),
        };
        rows.push(format!(
            "| {:2} | {} | {} | +{:.1} | {} | {} | {} | {} |",
            k + 1,
            uid(l.person),
            l.groups.len(),
            since(t0, l.disabled),
            lat.map_or("NOT GONE".into(), |d| format!("{:.1}", secs(d))),
            tick_wait,
            cost,
            poll_no
        ));
    }
    println!("\n| # | person | groups | disabled at (s) | latency (s) | wait for the tick (s) | poll (ms) | poll # |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }

    latencies.sort_by(f64::total_cmp);
    let gone = latencies.len();
    let max = latencies.last().copied().unwrap_or(f64::NAN);
    let goal = 60.0;
    let met = gone == leavers.len() && max <= goal;
    ok &= met;
    println!(
        "\nlatency over {gone} of {} leavers (s, nearest rank): p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}; goal <= {goal:.0} s: {}",
        leavers.len(),
        nearest_rank(&latencies, 50.0),
        nearest_rank(&latencies, 90.0),
        nearest_rank(&latencies, 99.0),
        max,
        if met { "met" } else { "NOT MET" }
    );
    if !misses.is_empty() {
        ok = false;
        println!("MISSED by a poll that started after the change:");
        for m in &misses {
            println!("  {m}");
        }
    }

    // What the polls did and sent.
    let mut poll_requests = 0;
    let mut with_leavers = Vec::new();
    let mut idle_requests = 0;
    let mut idle_routes = BTreeMap::new();
    let mut leaver_routes = BTreeMap::new();
    let mut failed = Vec::new();
    let mut reads = Vec::new();
    let mut concurrent = 0;
    for (n, p) in polls.iter().enumerate() {
        let sent = &log[p.requests.0..p.requests.1.min(log.len())];
        poll_requests += sent.len();
        if overlaps_full(p) {
            concurrent += 1;
        }
        let searches = searches_between(p.start, p.end);
        let changed: Vec<&Search> = searches
            .iter()
            .filter(|s| s.name == "changed users")
            .collect();
        reads.push(format!(
            "{}:{}",
            n + 1,
            changed
                .iter()
                .map(|s| format!("{}/{}ms", s.entries, s.ms))
                .collect::<Vec<_>>()
                .join("+")
        ));
        match &p.result {
            Ok(r) if !r.new_leavers.is_empty() => {
                with_leavers.push((n, r, sent.len(), p.end - p.start));
                for (k, v) in by_route(sent) {
                    *leaver_routes.entry(k).or_insert(0) += v;
                }
            }
            Ok(_) => {
                idle_requests += sent.len();
                for (k, v) in by_route(sent) {
                    *idle_routes.entry(k).or_insert(0) += v;
                }
            }
            Err(e) => failed.push(format!("poll {}: {e}", n + 1)),
        }
    }
    let idle = polls.len() - with_leavers.len() - failed.len();
    println!(
        "\npolls: {} ({} found leavers, {idle} found none, {} failed; {concurrent} overlapped a full run, whose requests in that time are counted with theirs; the full runs sent {} in all)",
        polls.len(),
        with_leavers.len(),
        failed.len(),
        fulls
            .iter()
            .filter_map(|f| f.result.as_ref().ok())
            .map(|r| r.api_requests)
            .sum::<u64>()
    );
    println!(
        "requests the polls sent: {poll_requests} in all; polls that found leavers: {}; polls that found none: {idle_requests}",
        poll_requests - idle_requests
    );
    println!(
        "  by the polls that found leavers: {}",
        show_routes(&leaver_routes)
    );
    println!(
        "  by the polls that found none: {}",
        show_routes(&idle_routes)
    );
    for (n, r, sent, took) in &with_leavers {
        println!(
            "  poll {} at +{:.1} s: {} new leaver(s), {} revocations planned, outcomes [{}], {} requests, {:.0} ms{}",
            n + 1,
            since(t0, polls[*n].start),
            r.new_leavers.len(),
            r.planned,
            r.outcomes
                .iter()
                .map(|o| o.outcome.kind().label())
                .collect::<Vec<_>>()
                .join(", "),
            sent,
            ms(*took),
            if r.submitted_to_live { " (into a full run)" } else { "" }
        );
    }
    for f in &failed {
        println!("  {f}");
    }
    ok &= failed.is_empty();
    let durations: Vec<f64> = polls.iter().map(|p| ms(p.end - p.start)).collect();
    let idle_durations: Vec<f64> = polls
        .iter()
        .filter(|p| p.result.as_ref().is_ok_and(|r| r.new_leavers.is_empty()))
        .map(|p| ms(p.end - p.start))
        .collect();
    println!(
        "poll duration: median {:.0} ms (all), {} (found none), max {:.0} ms",
        median(&durations),
        if idle_durations.is_empty() {
            "no such poll".to_owned()
        } else {
            format!("{:.0} ms", median(&idle_durations))
        },
        durations.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "entries the poll's LDAP read returned (poll:entries/search time): {}",
        reads.join(" ")
    );
    let disabled_so_far = |p: &PollRecord| leavers.iter().filter(|l| l.disabled <= p.start).count();
    let too_much: Vec<String> = polls
        .iter()
        .enumerate()
        .filter_map(|(n, p)| {
            let read: u64 = searches_between(p.start, p.end)
                .iter()
                .filter(|s| s.name == "changed users")
                .map(|s| s.entries)
                .sum();
            // Only the people changed in the window: the leavers so far (and whoever
            // is disabled while the read runs).
            (read as usize > disabled_so_far(p) + 1).then(|| {
                format!(
                    "poll {} read {read} entries with {} changed",
                    n + 1,
                    disabled_so_far(p)
                )
            })
        })
        .collect();
    if !too_much.is_empty() {
        println!(
            "polls that read more than the changed people: {}{}",
            too_much.len(),
            if o.fresh {
                " (expected with BBSYNC_BENCH_FRESH=1: every entry was modified at load time)"
            } else {
                ""
            }
        );
        for t in too_much.iter().take(5) {
            println!("  {t}");
        }
        ok &= o.fresh;
    }

    // Removals sent twice, or sent for someone who did not leave.
    let leaver_accounts: BTreeSet<&str> = leavers.iter().map(|l| l.account.as_str()).collect();
    let mut deletes: BTreeMap<String, usize> = BTreeMap::new();
    for r in log.iter().filter(|r| r.method == "DELETE") {
        *deletes.entry(r.path.clone()).or_default() += 1;
    }
    let expected: usize = leavers.iter().map(|l| l.groups.len()).sum();
    let twice: Vec<&String> = deletes
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| p)
        .collect();
    println!(
        "membership DELETEs sent: {} for {expected} memberships of the leavers; paths sent more than once: {}",
        deletes.values().sum::<usize>(),
        twice.len()
    );
    let still: BTreeMap<String, BTreeSet<String>> = memberships(emu)
        .into_iter()
        .filter(|(a, g)| leaver_accounts.contains(a.as_str()) && !g.is_empty())
        .collect();
    ok &= twice.is_empty() && still.is_empty() && deletes.values().sum::<usize>() == expected;
    let triggered = fulls.get(runs_before);
    match triggered.map(|f| &f.result) {
        Some(Ok(r)) => {
            let removals = r
                .plan
                .changes
                .iter()
                .filter(|p| matches!(p.change, Change::RemoveMember { .. }))
                .count();
            println!(
                "full run after the leavers (triggered): {} leavers in the directory, {} changes planned ({removals} remove_member)",
                r.source.leavers,
                r.plan.changes.len()
            );
            ok &= r.plan.changes.is_empty();
        }
        Some(Err(e)) => {
            println!("full run after the leavers (triggered) FAILED: {e}");
            ok = false;
        }
        None => ok = false,
    }
    drop((full, poll, rec));
    (chosen, ok)
}

// ---- 2. the cost of one poll -------------------------------------------------------------------

async fn cost(
    o: &Opts,
    slapd: &Arc<Slapd>,
    emu: &Arc<Emulator>,
    cfg: Config,
    taken: &BTreeSet<usize>,
) -> bool {
    let rec = Reconciler::new(cfg).expect("a reconciler");
    let read_at = SystemTime::now();
    let base = rec.run(true).await.expect("a full run");
    let mut ok = base.ok() && base.plan.changes.is_empty();
    println!("\n== 2. cost of one poll (a new reconciler, after one full run) ==");
    println!(
        "baseline full run: {} ms, {} changes planned, {} requests",
        base.duration_ms,
        base.plan.changes.len(),
        base.api_requests
    );
    let window = read_at - Duration::from_secs(300);
    let mut rng = fastrand::Rng::with_seed(o.seed ^ 0x5eed);
    let mut found = Vec::new();
    let mut idle = Vec::new();
    let mut reads = Vec::new();
    let mut read_all = Vec::new();
    let mut full_reads = Vec::new();
    let mut requests = Vec::new();
    let mut idle_requests = 0;
    let mut removed = 0;
    let (mut window_entries, mut all_entries) = (0, 0);
    let mut used = taken.clone();
    for k in 0..o.cost_runs {
        let person = loop {
            let p = rng.usize(0..o.people);
            if used.insert(p) {
                break p;
            }
        };
        let s = Arc::clone(slapd);
        tokio::task::spawn_blocking(move || disable(&s, person))
            .await
            .expect("ldapmodify task");

        let before = emu.requests().len();
        let t = Instant::now();
        let r = rec.poll_leavers(true).await.expect("a poll");
        let took = t.elapsed();
        let sent = emu.requests().len() - before;
        let mine = r.new_leavers.len() == 1 && r.new_leavers[0].as_str() == acc(&uid(person));
        if !(mine && r.ok() && r.planned == teams_of(person, o.groups).len()) {
            println!("  run {}: {} expected alone: {r:?}", k + 1, uid(person));
            ok = false;
        }
        removed += r.outcomes.iter().filter(|o| o.outcome.is_done()).count();
        found.push(ms(took));
        requests.push(sent as f64);

        // The next poll finds nobody new.
        let before = emu.requests().len();
        let t = Instant::now();
        let r = rec.poll_leavers(true).await.expect("a poll");
        idle.push(ms(t.elapsed()));
        idle_requests += emu.requests().len() - before;
        ok &= r.new_leavers.is_empty();

        // The light read alone: the poll's window, and one holding everyone.
        let t = Instant::now();
        let l = rec
            .source
            .read_leavers(window)
            .await
            .expect("the light read");
        reads.push(ms(t.elapsed()));
        window_entries = last_changed_read();
        ok &= l.disabled.len() > k;
        let t = Instant::now();
        rec.source
            .read_leavers(SystemTime::UNIX_EPOCH)
            .await
            .expect("the light read of everyone");
        read_all.push(ms(t.elapsed()));
        all_entries = last_changed_read();
        let t = Instant::now();
        rec.source.read().await.expect("a full directory read");
        full_reads.push(ms(t.elapsed()));
    }
    println!(
        "poll that finds one leaver (read + plan + apply, 1-2 removals): median {:.0} ms (min {:.0}, max {:.0}) over {} runs; {} requests per poll (median); {removed} removals done",
        median(&found),
        found.iter().copied().fold(f64::INFINITY, f64::min),
        found.iter().copied().fold(0.0, f64::max),
        found.len(),
        median(&requests)
    );
    println!(
        "poll that finds nobody new: median {:.0} ms, {idle_requests} requests in all",
        median(&idle)
    );
    println!(
        "light LDAP read alone, the poll's window: median {:.1} ms (the last returned {window_entries} entries)",
        median(&reads)
    );
    println!(
        "light LDAP read of a window holding every person: median {:.1} ms ({all_entries} entries); a full directory read (people + groups, resolved): median {:.1} ms",
        median(&read_all),
        median(&full_reads)
    );
    // Where a poll's time goes: the two Bitbucket reads it makes, each through bbsync's
    // clients, timed on their own.
    use bbsync::bitbucket::membership::MembershipBackend as _;
    let (mut listing, mut groups_read) = (Vec::new(), Vec::new());
    let mut pages = 0;
    for _ in 0..3 {
        let before = emu.requests().len();
        let t = Instant::now();
        let m = rec
            .clients
            .shared(bbsync::bitbucket::ApiFamily::MembersRead)
            .list_members()
            .await
            .expect("the member listing");
        listing.push(ms(t.elapsed()));
        pages = emu.requests().len() - before;
        ok &= m.len() > o.people;
        let t = Instant::now();
        rec.clients
            .v1_groups()
            .read_groups()
            .await
            .expect("the groups read");
        groups_read.push(ms(t.elapsed()));
    }
    println!(
        "where the poll's time goes, timed apart (median of 3): the workspace member listing {:.0} ms ({pages} pages); the groups read that verifies the removal {:.0} ms (1 request)",
        median(&listing),
        median(&groups_read)
    );
    ok &= idle_requests == 0 && removed > 0;
    ok
}

fn main() {
    install_tracing();
    let o = Opts::from_env();
    println!("bbsync off-boarding poll bench: {}", o.describe());
    println!(
        "machine: {} CPUs; slapd and the emulator on 127.0.0.1",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    let ok = rt.block_on(async {
        let t = Instant::now();
        let slapd = Arc::new(
            Slapd::start(Options {
                preload: Some(preload(&o)),
                ..Default::default()
            })
            .expect("slapd"),
        );
        let emu = Arc::new(
            Emulator::start(workspace(&o), ([127, 0, 0, 1], 0).into())
                .await
                .expect("the emulator"),
        );
        emu.set_latency(o.latency);
        eprintln!(
            "slapd ({}) and the emulator ({}) up in {:.1} s",
            slapd.url(),
            emu.base_url(),
            t.elapsed().as_secs_f64()
        );
        let tmp = tempfile::Builder::new()
            .prefix("bbsync-offboarding-bench-")
            .tempdir()
            .expect("a temporary directory");
        let budget = o.budget.map(|b| (b, o.burst));
        let (taken, ok1) = latency(
            &o,
            &slapd,
            &emu,
            config(&o, &emu, &slapd, tmp.path(), budget),
        )
        .await;
        let phase1 = emu.requests().len();
        // The cost of the work, not of the budget's pacing.
        let ok2 = cost(
            &o,
            &slapd,
            &emu,
            config(&o, &emu, &slapd, tmp.path(), Some((3_600_000, 1000))),
            &taken,
        )
        .await;
        println!(
            "\nemulator: {phase1} requests in part 1, {} in part 2",
            emu.requests().len() - phase1
        );
        let total = emu.requests().len();
        let limited = emu.requests().iter().filter(|r| r.status == 429).count();
        println!("emulator: {total} requests served in all, {limited} answered 429 (its limit: 1000/hour per credential)");
        ok1 && ok2 && limited == 0
    });
    println!(
        "\ntook {:.0} s; {}",
        started.elapsed().as_secs_f64(),
        if ok {
            "every check passed"
        } else {
            "SOME CHECK FAILED (see above)"
        }
    );
}
