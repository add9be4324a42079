//! Benchmark (issue 17): the prioritised, rate-limited worker pool that applies a plan, against
//! the emulator on 127.0.0.1 with 30 ms latency and its rate limit on.
//!
//! `cargo bench --bench pool`. Four scenarios, one table (Markdown) at the end:
//!
//! 1. **Budget below the server's limit**: 5,000 `SetGrant`s planned by a real `Reconciler`
//!    read (timed apart), applied through `Applier` with `requests_per_hour` 360,000 (100/s)
//!    against a server allowing 720,000/hour: the write rate as a fraction of the budget, 429s,
//!    wall time, the cost of `apply.verify`; beside it, on a subset, the sequential applier
//!    (concurrency 1, unlimited budget: what bbsync did before the pool), scaled linearly,
//!    and the pool with an unlimited budget (the latency ceiling).
//! 2. **Server's limit below the budget**: ~500 grants against a server allowing 300/hour,
//!    once without `Retry-After` (as captured 429s are) and once with it: 429s received, that
//!    the run stops with the rest deferred, and that the runs after (each once the window has
//!    opened: `advance_time(1 h)`, a new `Reconciler`) finish without a failure or a re-send.
//! 3. **Off-boarding latency**: 5,000 grants queued and being applied at the budget; after 1 s
//!    a leaver's three `RemoveMember`s are `submit`ted to the same `Run`: the time until they
//!    are finished, and how many other requests the emulator served in between.
//! 4. **Crash**: a `bbsync emulator` process seeded with 2,000 grants of work; `bbsync apply`
//!    is started and `kill -9`ed at a random point 20 times; after each kill every write the
//!    emulator saw must have its `intent` in the audit file; then one apply to completion,
//!    and `bbsync plan --check` must exit 0.
//!
//! Options by environment (defaults fit the 10-minute, 2-core budget):
//! BENCH_LATENCY_MS (30), BENCH_CONCURRENCY (8: at 30 ms, 4 workers reach only ~100-120/s
//! here, about the budget; see the table), BENCH_BUDGET_PER_HOUR (360000),
//! BENCH_SERVER_PER_HOUR (720000), BENCH_GRANTS (5000), BENCH_SEQ_SUBSET (300),
//! BENCH_LIMITED_CHANGES (500), BENCH_LIMITED_SERVER_PER_HOUR (300),
//! BENCH_OFFBOARD_GRANTS (5000), BENCH_OFFBOARD_AFTER_MS (1000), BENCH_CRASH_CHANGES (2000),
//! BENCH_KILLS (20), BENCH_CRASH_MAX_MS (the measured plan time + 2000), BENCH_SEED (17),
//! BENCH_ONLY (e.g. `1,3`: run only these scenarios), BENCH_RUST_LOG (a tracing filter for
//! the in-process runs, default none; the child processes log at `warn` to the bench's temp
//! directory), BENCH_AUDIT_FSYNC (`never`: the measured apply of scenario 1 without
//! `fdatasync`; default `always`).

use bbsync::apply::audit::{Audit, FsyncPolicy};
use bbsync::apply::queue::Priority;
use bbsync::apply::{Applier, ChangeResult, Outcome, OutcomeKind};
use bbsync::bitbucket::{Clients, MembershipBackend};
use bbsync::config::Config;
use bbsync::model::{AccountId, GroupSlug, Permission, RepoSlug};
use bbsync::plan::{Change, Plan, Planned, Reason};
use bbsync::reconcile::Reconciler;
use bbsync_emulator::{
    CredentialKind, Emulator, RequestRecord, RetryAfterMode, Seed, SeedCredential, SeedGroup,
    SeedProject, SeedRepo, SeedUser, SeedWorkspace,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

const ADMIN_EMAIL: &str = "admin@acme.test";
const ADMIN_TOKEN: &str = "admin-token";
const LEAVER: &str = "lee";

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bench-wide settings.
#[derive(Clone)]
struct Opts {
    latency: Duration,
    concurrency: usize,
    budget: u32,
    server: u32,
    grants: usize,
    seq_subset: usize,
    limited_changes: usize,
    limited_server: u32,
    offboard_grants: usize,
    offboard_after: Duration,
    crash_changes: usize,
    kills: usize,
    crash_max_ms: Option<u64>,
    seed: u64,
}

impl Opts {
    fn from_env() -> Opts {
        Opts {
            latency: Duration::from_millis(env_or("BENCH_LATENCY_MS", 30)),
            concurrency: env_or("BENCH_CONCURRENCY", 8),
            budget: env_or("BENCH_BUDGET_PER_HOUR", 360_000),
            server: env_or("BENCH_SERVER_PER_HOUR", 720_000),
            grants: env_or("BENCH_GRANTS", 5_000),
            seq_subset: env_or("BENCH_SEQ_SUBSET", 300),
            limited_changes: env_or("BENCH_LIMITED_CHANGES", 500),
            limited_server: env_or("BENCH_LIMITED_SERVER_PER_HOUR", 300),
            offboard_grants: env_or("BENCH_OFFBOARD_GRANTS", 5_000),
            offboard_after: Duration::from_millis(env_or("BENCH_OFFBOARD_AFTER_MS", 1_000)),
            crash_changes: env_or("BENCH_CRASH_CHANGES", 2_000),
            kills: env_or("BENCH_KILLS", 20),
            crash_max_ms: std::env::var("BENCH_CRASH_MAX_MS")
                .ok()
                .and_then(|v| v.parse().ok()),
            seed: env_or("BENCH_SEED", 17),
        }
    }

    /// Requests per second the budget allows.
    fn budget_per_sec(&self) -> f64 {
        f64::from(self.budget) / 3600.0
    }
}

// ---- the table --------------------------------------------------------------------------------

struct Row {
    scenario: &'static str,
    measure: String,
    value: String,
    goal: String,
    /// `None`: informational, no goal to meet.
    ok: Option<bool>,
}

fn row(
    scenario: &'static str,
    measure: impl Into<String>,
    value: impl Into<String>,
    goal: impl Into<String>,
    ok: Option<bool>,
) -> Row {
    Row {
        scenario,
        measure: measure.into(),
        value: value.into(),
        goal: goal.into(),
        ok,
    }
}

fn info(scenario: &'static str, measure: impl Into<String>, value: impl Into<String>) -> Row {
    row(scenario, measure, value, "-", None)
}

fn print_table(rows: &[Row]) {
    println!("| scenario | measure | value | goal | met |");
    println!("|---|---|---|---|---|");
    for r in rows {
        let met = match r.ok {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            r.scenario, r.measure, r.value, r.goal, met
        );
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

// ---- fixtures (after tests/common, which a bench cannot import) ------------------------------

fn acc(name: &str) -> String {
    bbsync::model::synthetic_account_id(name)
}

fn account(name: &str) -> AccountId {
    AccountId::parse(&acc(name)).expect("a synthetic account id is well formed")
}

fn all_scopes() -> Vec<String> {
    bbsync_emulator::auth::API_TOKEN_SCOPES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn repo_slug(i: usize) -> String {
    format!("proj-{i:05}")
}

/// Workspace `acme` owned by `admin` with an admin API token; `people` are members; `repos`
/// repositories in project PROJ; group Contractors (kim, lou); the leaver in three groups.
fn seed(repos: usize, server_per_hour: u32) -> Seed {
    let people = ["kim", "lou", LEAVER];
    let mut users = vec![SeedUser {
        account_id: acc("admin"),
        display_name: "IT Admin".into(),
        nickname: "admin".into(),
        ..Default::default()
    }];
    users.extend(people.iter().map(|p| SeedUser {
        account_id: acc(p),
        display_name: format!("Person {p}"),
        nickname: p.to_string(),
        email: Some(format!("{p}@acme.test")),
        ..Default::default()
    }));
    let group = |name: &str, members: &[&str]| SeedGroup {
        name: name.into(),
        members: members.iter().map(|m| acc(m)).collect(),
        ..Default::default()
    };
    Seed {
        workspace: SeedWorkspace {
            slug: "acme".into(),
            owner: acc("admin"),
            admins: vec![acc("admin")],
            ..Default::default()
        },
        users,
        projects: vec![SeedProject {
            key: "PROJ".into(),
            ..Default::default()
        }],
        repositories: (0..repos)
            .map(|i| SeedRepo {
                slug: repo_slug(i),
                project: "PROJ".into(),
                ..Default::default()
            })
            .collect(),
        groups: vec![
            group("Contractors", &["kim", "lou"]),
            group("Developers", &["kim", LEAVER]),
            group("Ops", &[LEAVER]),
            group("Data Team", &["lou", LEAVER]),
        ],
        credentials: vec![SeedCredential {
            id: "admin".into(),
            kind: CredentialKind::ApiToken,
            email: Some(ADMIN_EMAIL.into()),
            token: Some(ADMIN_TOKEN.into()),
            account_id: Some(acc("admin")),
            scopes: all_scopes(),
            ..Default::default()
        }],
        rate_limit_per_hour: server_per_hour,
        ..Default::default()
    }
}

/// The directory: kim and lou in `contractors`; nobody else managed.
const LDIF: &str = "dn: uid=kim,ou=people,dc=acme,dc=test\nobjectClass: inetOrgPerson\nuid: kim\ncn: Person kim\natlassianAccountId: KIM\n\n\
dn: uid=lou,ou=people,dc=acme,dc=test\nobjectClass: inetOrgPerson\nuid: lou\ncn: Person lou\natlassianAccountId: LOU\n\n\
dn: cn=contractors,ou=groups,dc=acme,dc=test\nobjectClass: groupOfNames\ncn: contractors\nmember: uid=kim,ou=people,dc=acme,dc=test\nmember: uid=lou,ou=people,dc=acme,dc=test\n\n";

/// Contractors is managed from the directory and gets write on every repository of PROJ.
const RULES: &str = "[[groups]]\nname = \"Contractors\"\nfrom = [\"contractors\"]\n[[grants]]\ngroup = \"contractors\"\npermission = \"write\"\nprojects = [\"PROJ\"]\n";

/// A config for bbsync at `api_url`, files in `dir` (absolute paths), the given `[apply]`.
fn config_text(api_url: &str, dir: &Path, budget: u32, burst: u32, concurrency: usize) -> String {
    let ldif = LDIF.replace("KIM", &acc("kim")).replace("LOU", &acc("lou"));
    std::fs::write(dir.join("directory.ldif"), ldif).expect("write the LDIF directory");
    format!(
        r#"mode = "apply"
[bitbucket]
workspace = "acme"
api_url = "{api_url}"
[credentials.admin]
kind = "api_token"
email = "{ADMIN_EMAIL}"
token = "{ADMIN_TOKEN}"
[source]
kind = "ldif"
path = "{ldif}"
[directory]
disabled_attribute = "nsAccountLock"
[audit]
path = "{audit}"
[offboarding]
state_dir = "{state}"
[apply]
requests_per_hour = {budget}
burst = {burst}
concurrency = {concurrency}
{RULES}"#,
        ldif = dir.join("directory.ldif").display(),
        audit = dir.join("audit.jsonl").display(),
        state = dir.join("state").display(),
    )
}

fn config(emu: &Emulator, dir: &Path, budget: u32, burst: u32, concurrency: usize) -> Config {
    let text = config_text(&emu.base_url(), dir, budget, burst, concurrency);
    Config::from_toml_str(&text, "bench.toml", dir).expect("a valid bench config")
}

async fn start(seed: Seed, o: &Opts) -> Emulator {
    let emu = Emulator::start(seed, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the emulator starts");
    emu.set_latency(o.latency);
    emu
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn is_write(r: &RequestRecord) -> bool {
    r.method != "GET"
}

fn count_429(log: &[RequestRecord]) -> usize {
    log.iter().filter(|r| r.status == 429).count()
}

fn counts(results: &[ChangeResult]) -> BTreeMap<OutcomeKind, usize> {
    let mut out = BTreeMap::new();
    for r in results {
        *out.entry(r.outcome.kind()).or_insert(0) += 1;
    }
    out
}

fn show_counts(c: &BTreeMap<OutcomeKind, usize>) -> String {
    c.iter()
        .map(|(k, n)| format!("{} {n}", k.label()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn grant(repo: &str) -> Planned {
    Planned {
        change: Change::SetGrant {
            repo: RepoSlug::new(repo),
            group: GroupSlug::from_name("contractors"),
            permission: Permission::Write,
            previous: None,
        },
        reason: Reason::Rule {
            rule: "grants[0]".into(),
            detail: "project PROJ".into(),
        },
        blocked: None,
    }
}

fn plan_of(changes: Vec<Planned>) -> Plan {
    Plan {
        changes,
        ..Plan::default()
    }
}

/// Writes served with a 2xx, per path, that were served more than once.
fn written_twice(log: &[RequestRecord]) -> usize {
    let mut per_path: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for r in log
        .iter()
        .filter(|r| is_write(r) && (200..300).contains(&r.status))
    {
        *per_path.entry((&r.method, &r.path)).or_insert(0) += 1;
    }
    per_path.values().filter(|&&n| n > 1).count()
}

// ---- 1. budget below the server's limit --------------------------------------------------------

struct Applied {
    drive: Duration,
    verify: Duration,
    writes: usize,
    verify_requests: usize,
    too_many: usize,
    results: Vec<ChangeResult>,
}

/// Applies `plan` on a fresh emulator through an `Applier` with `settings`.
async fn apply_fresh(o: &Opts, plan: &Plan, conc: usize, fsync: FsyncPolicy) -> Applied {
    let emu = start(seed(o.grants, o.server), o).await;
    let tmp = tempdir();
    // No budget to speak of: 1,000,000 requests a second.
    let cfg = config(&emu, tmp.path(), 3_600_000_000, 1_000, conc);
    let clients = Clients::new(&cfg).expect("clients");
    let a = apply_on(&emu, &clients, &cfg, plan, tmp.path(), fsync).await;
    emu.shutdown().await;
    a
}

async fn apply_on(
    emu: &Emulator,
    clients: &Clients,
    cfg: &Config,
    plan: &Plan,
    dir: &Path,
    fsync: FsyncPolicy,
) -> Applied {
    let members = clients.v1_groups();
    let audit =
        Audit::to_file_with(&dir.join("audit-direct.jsonl"), fsync).expect("open the audit file");
    let applier = Applier {
        clients,
        members: &members,
        org: None,
        grant_writes: cfg.bitbucket.grant_writes,
        audit: &audit,
        run_id: "bench",
        settings: cfg.apply.clone(),
        stop: None,
    };
    emu.reset_requests();
    let t = Instant::now();
    let run = applier.start(plan);
    applier.drive(&run).await;
    let drive = t.elapsed();
    let after_drive = emu.requests().len();
    let results = applier.finish(run).await;
    let verify = t.elapsed() - drive;
    let log = emu.requests();
    Applied {
        drive,
        verify,
        writes: log.iter().filter(|r| is_write(r)).count(),
        verify_requests: log.len() - after_drive,
        too_many: count_429(&log),
        results,
    }
}

async fn budget_bound(o: &Opts, rows: &mut Vec<Row>) {
    const S: &str = "1 budget < server";
    let n = o.grants;
    eprintln!(
        "[1] {n} grants, budget {}/h ({:.0}/s), server {}/h, concurrency {}",
        o.budget,
        o.budget_per_sec(),
        o.server,
        o.concurrency
    );
    // The plan, from a real read: 5,000 repositories in PROJ, a rule giving contractors write.
    let emu = start(seed(n, o.server), o).await;
    let tmp = tempdir();
    let cfg = config(&emu, tmp.path(), o.budget, 10, o.concurrency);
    let rec = Reconciler::new(cfg.clone()).expect("reconciler");
    let t = Instant::now();
    let report = rec.run(false).await.expect("the plan-only run");
    let read = t.elapsed();
    let plan = report.plan;
    let grants = plan
        .changes
        .iter()
        .filter(|p| matches!(p.change, Change::SetGrant { .. }) && p.blocked.is_none())
        .count();
    assert_eq!(grants, n, "the plan grants contractors every repository");
    let read_requests = emu.requests().len();

    // Applied through the pool with the same clients (the same budget) the read used.
    // `audit.fsync` of the measured apply (`always`, the default; BENCH_AUDIT_FSYNC=never).
    let fsync = match std::env::var("BENCH_AUDIT_FSYNC").as_deref() {
        Ok("never") => FsyncPolicy::Never,
        _ => FsyncPolicy::Always,
    };
    let a = apply_on(&emu, &rec.clients, &cfg, &plan, tmp.path(), fsync).await;
    let budget = rec.clients.budgets();
    emu.shutdown().await;
    let rate = a.writes as f64 / a.drive.as_secs_f64();
    let fraction = rate / o.budget_per_sec();
    let c = counts(&a.results);
    eprintln!(
        "[1] pool: {} writes in {:.2} s = {rate:.1}/s ({:.1}% of budget), verify {:.0} ms; {}",
        a.writes,
        a.drive.as_secs_f64(),
        fraction * 100.0,
        a.verify.as_secs_f64() * 1000.0,
        show_counts(&c)
    );

    // Side by side: the sequential applier of before the pool (one at a time, no budget), and
    // the pool without a budget (latency-bound), each on a subset of the same plan.
    let m = o.seq_subset.min(n);
    let subset = plan_of(plan.changes[..m].to_vec());
    let seq = apply_fresh(o, &subset, 1, FsyncPolicy::Always).await;
    let seq_nosync = apply_fresh(o, &subset, 1, FsyncPolicy::Never).await;
    let free = apply_fresh(o, &subset, o.concurrency, FsyncPolicy::Always).await;
    let free4 = apply_fresh(o, &subset, 4, FsyncPolicy::Always).await;
    let seq_scaled = seq.drive.mul_f64(n as f64 / m as f64);
    let per_change = |a: &Applied| a.drive.as_secs_f64() * 1000.0 / m as f64;
    let rate_of = |a: &Applied| a.writes as f64 / a.drive.as_secs_f64();
    let free_rate = rate_of(&free);
    eprintln!(
        "[1] sequential: {m} in {:.2} s ({:.1} ms per change; {:.1} ms without fdatasync); pool without budget: {:.1}/s at concurrency {}, {:.1}/s at 4",
        seq.drive.as_secs_f64(),
        per_change(&seq),
        per_change(&seq_nosync),
        free_rate,
        o.concurrency,
        rate_of(&free4),
    );

    rows.push(info(
        S,
        "read + plan (Reconciler, plan only)",
        format!(
            "{} ({read_requests} requests; {grants} set_grant planned)",
            secs(read)
        ),
    ));
    rows.push(row(
        S,
        format!(
            "write rate, budget {}/h = {:.0}/s, concurrency {}",
            o.budget,
            o.budget_per_sec(),
            o.concurrency
        ),
        format!(
            "{rate:.1}/s = **{:.1}%** of the budget ({} writes in {})",
            fraction * 100.0,
            a.writes,
            secs(a.drive)
        ),
        ">= 95%",
        Some(fraction >= 0.95),
    ));
    rows.push(row(
        S,
        format!("429s received (server limit {}/h)", o.server),
        format!("{}", a.too_many),
        "0",
        Some(a.too_many == 0),
    ));
    rows.push(row(
        S,
        "outcomes",
        show_counts(&c),
        format!("applied {n}"),
        Some(c.get(&OutcomeKind::Applied) == Some(&n)),
    ));
    rows.push(info(
        S,
        "apply.verify (read back at the end)",
        format!(
            "{} ({} request{})",
            ms(a.verify),
            a.verify_requests,
            if a.verify_requests == 1 { "" } else { "s" }
        ),
    ));
    rows.push(info(
        S,
        format!("apply.verify of the {m}-change sequential runs: with / without fdatasync"),
        format!(
            "{} / {} (one read each; the rest is one audit record per change)",
            ms(seq.verify),
            ms(seq_nosync.verify)
        ),
    ));
    rows.push(info(
        S,
        "wall time, pool (apply + verify)",
        secs(a.drive + a.verify),
    ));
    rows.push(row(
        S,
        format!(
            "sequential applier (concurrency 1, no budget), measured on {m} changes, x{:.1}",
            n as f64 / m as f64
        ),
        format!(
            "{} for {n} ({:.1} ms per change, {:.1}/s)",
            secs(seq_scaled),
            seq.drive.as_secs_f64() * 1000.0 / m as f64,
            m as f64 / seq.drive.as_secs_f64()
        ),
        "pool faster",
        Some(seq_scaled > a.drive),
    ));
    rows.push(info(
        S,
        format!("the same sequential run with `audit.fsync = never`, {m} changes"),
        format!(
            "{:.1} ms per change: fdatasync of the intent and outcome records costs {:.1} ms of it",
            per_change(&seq_nosync),
            per_change(&seq) - per_change(&seq_nosync)
        ),
    ));
    rows.push(row(
        S,
        format!(
            "pool without budget (concurrency {}), {m} changes: the latency ceiling",
            o.concurrency
        ),
        format!(
            "{free_rate:.1}/s ({:.2}x the budget)",
            free_rate / o.budget_per_sec()
        ),
        "> budget (bound by the budget, not latency)",
        Some(free_rate > o.budget_per_sec()),
    ));
    if o.concurrency != 4 {
        rows.push(info(
            S,
            format!("pool without budget, concurrency 4 (the default), {m} changes"),
            format!(
                "{:.1}/s ({:.2}x the budget, {:.1} ms per change per worker)",
                rate_of(&free4),
                rate_of(&free4) / o.budget_per_sec(),
                4.0 * per_change(&free4)
            ),
        ));
    }
    for b in budget {
        rows.push(info(
            S,
            format!("budget {:?} after the run", b.credential),
            format!(
                "sent {}, rate-limited {}, pace now {:.0}/h",
                b.sent, b.rate_limited, b.rate_per_hour
            ),
        ));
    }
}

// ---- 2. server's limit below the budget --------------------------------------------------------

async fn server_bound(o: &Opts, mode: RetryAfterMode, rows: &mut Vec<Row>) {
    let s: &'static str = match mode {
        RetryAfterMode::None => "2 server < budget, no Retry-After",
        _ => "2 server < budget, Retry-After",
    };
    let n = o.limited_changes;
    eprintln!(
        "[2] {n} grants, server {}/h, budget {}/h, Retry-After {mode:?}",
        o.limited_server, o.budget
    );
    let emu = start(seed(n, o.limited_server), o).await;
    emu.set_retry_after(mode);
    let tmp = tempdir();
    let cfg = config(&emu, tmp.path(), o.budget, 10, o.concurrency);
    let mut runs = Vec::new();
    let mut failed_later = 0;
    let mut errors = Vec::new();
    for k in 0..6 {
        if k > 0 {
            // The next run, once the server's window has opened again.
            emu.advance_time(Duration::from_secs(3600));
        }
        let before = emu.requests().len();
        let rec = Reconciler::new(cfg.clone()).expect("reconciler");
        let t = Instant::now();
        let out = rec.run(true).await;
        let took = t.elapsed();
        let log = emu.requests();
        let this = &log[before..];
        let too_many = count_429(this);
        let writes_ok = this
            .iter()
            .filter(|r| is_write(r) && (200..300).contains(&r.status))
            .count();
        // Reads sent after the first write: the read-back of `apply.verify`.
        let read_back = this
            .iter()
            .skip_while(|r| !is_write(r))
            .filter(|r| !is_write(r) && r.status != 429)
            .count();
        match out {
            Ok(r) => {
                let c = counts(&r.outcomes);
                let deferred = c.get(&OutcomeKind::Deferred).copied().unwrap_or(0);
                let failed = c.get(&OutcomeKind::Failed).copied().unwrap_or(0);
                if k > 0 {
                    failed_later += failed;
                }
                let why = r.outcomes.iter().find_map(|o| match &o.outcome {
                    Outcome::Deferred { why, .. } => Some(why.clone()),
                    _ => None,
                });
                eprintln!(
                    "[2] run {}: {:.1} s, {} requests, {too_many} 429s, {writes_ok} writes ok; {}",
                    k + 1,
                    took.as_secs_f64(),
                    this.len(),
                    show_counts(&c)
                );
                let planned = r.plan.changes.len();
                runs.push((
                    took,
                    this.len(),
                    too_many,
                    writes_ok,
                    c,
                    why,
                    planned,
                    read_back,
                ));
                if deferred == 0 {
                    break;
                }
            }
            Err(e) => {
                eprintln!("[2] run {}: error {e}", k + 1);
                errors.push(format!("run {}: {e}", k + 1));
                if k > 0 {
                    failed_later += 1;
                }
            }
        }
    }
    // Converged: one more plan, after the window opened, finds nothing to do.
    emu.advance_time(Duration::from_secs(3600));
    let last = Reconciler::new(cfg.clone())
        .expect("reconciler")
        .run(false)
        .await;
    let converged = last.as_ref().is_ok_and(|r| r.plan.is_empty());
    let log = emu.requests();
    let twice = written_twice(&log);
    let granted = emu
        .state()
        .group_grants
        .iter()
        .filter(|g| g.group == "contractors" && g.permission == "write")
        .count();
    emu.shutdown().await;

    if let Some((took, requests, too_many, writes_ok, c, why, planned, read_back)) = runs.first() {
        let deferred = c.get(&OutcomeKind::Deferred).copied().unwrap_or(0);
        rows.push(row(
            s,
            format!("run 1: 429s received (server limit {}/h)", o.limited_server),
            format!(
                "{too_many} of {requests} requests ({writes_ok} writes went through, {})",
                secs(*took)
            ),
            format!(
                "a handful (<= 3 x concurrency + 8 = {}), not one per change ({})",
                3 * o.concurrency + 8,
                planned - writes_ok
            ),
            Some(*too_many <= 3 * o.concurrency + 8),
        ));
        rows.push(info(
            s,
            "run 1: requests wasted (429s)",
            format!("{too_many}"),
        ));
        rows.push(row(
            s,
            "run 1: stops with the rest deferred",
            format!(
                "{}; of {planned} planned; why: {}",
                show_counts(c),
                why.as_deref().unwrap_or("-")
            ),
            "deferred > 0, failed 0",
            Some(deferred > 0 && c.get(&OutcomeKind::Failed).is_none()),
        ));
        // The budget is spent before `apply.verify` reads back: nothing was read, so nothing
        // should be reported (and audited) `applied`, only `accepted`.
        let applied = c.get(&OutcomeKind::Applied).copied().unwrap_or(0);
        rows.push(row(
            s,
            "run 1: read-back requests sent by apply.verify / changes reported applied",
            format!("{read_back} / {applied}"),
            "applied only if read back (else accepted)",
            Some(*read_back > 0 || applied == 0),
        ));
    }
    for (k, (took, requests, too_many, writes_ok, c, _, planned, _)) in
        runs.iter().enumerate().skip(1)
    {
        rows.push(info(
            s,
            format!("run {} (window open again)", k + 1),
            format!(
                "planned {planned}, {}; {requests} requests, {too_many} 429s, {writes_ok} writes, {}",
                show_counts(c),
                secs(*took)
            ),
        ));
    }
    rows.push(row(
        s,
        "later runs: failures",
        if errors.is_empty() {
            format!("{failed_later}")
        } else {
            format!("{failed_later}: {}", errors.join("; "))
        },
        "0",
        Some(failed_later == 0 && errors.is_empty()),
    ));
    rows.push(row(
        s,
        "writes sent twice (2xx more than once on one path)",
        format!("{twice}"),
        "0",
        Some(twice == 0),
    ));
    rows.push(row(
        s,
        "converged (grants in the emulator; a plan after finds nothing)",
        format!(
            "{granted} of {n} grants in {} runs; final plan {}",
            runs.len(),
            match &last {
                Ok(r) => format!("{} changes", r.plan.changes.len()),
                Err(e) => format!("failed: {e}"),
            }
        ),
        "all, empty",
        Some(converged && granted == n),
    ));
}

// ---- 3. off-boarding latency --------------------------------------------------------------------

async fn offboarding(o: &Opts, rows: &mut Vec<Row>) {
    const S: &str = "3 off-boarding";
    let n = o.offboard_grants;
    eprintln!(
        "[3] {n} grants queued at {:.0}/s, a leaver's revocations submitted after {} ms",
        o.budget_per_sec(),
        o.offboard_after.as_millis()
    );
    let emu = start(seed(n, o.server), o).await;
    let tmp = tempdir();
    let cfg = config(&emu, tmp.path(), o.budget, 10, o.concurrency);
    let clients = Clients::new(&cfg).expect("clients");
    let members = clients.v1_groups();
    // What a run reads first: the groups (and so the members' uuids the 1.0 writes need).
    members.read_groups().await.expect("read the groups");
    let audit = Audit::to_file(&tmp.path().join("audit.jsonl")).expect("open the audit file");
    let applier = Applier {
        clients: &clients,
        members: &members,
        org: None,
        grant_writes: cfg.bitbucket.grant_writes,
        audit: &audit,
        run_id: "bench-offboarding",
        settings: cfg.apply.clone(),
        stop: None,
    };
    let plan = plan_of((0..n).map(|i| grant(&repo_slug(i))).collect());
    let leaver = account(LEAVER);
    let revocations: Vec<Planned> = ["developers", "ops", "data-team"]
        .iter()
        .map(|g| Planned {
            change: Change::RemoveMember {
                group: GroupSlug::from_name(g),
                account_id: leaver.clone(),
                display_name: format!("Person {LEAVER}"),
            },
            reason: Reason::Leaver {
                fact: "nsAccountLock=TRUE".into(),
            },
            blocked: None,
        })
        .collect();
    emu.reset_requests();
    let t = Instant::now();
    let run = applier.start(&plan);
    let ((), (latency, at, finished_at)) = tokio::join!(applier.drive(&run), async {
        tokio::time::sleep(o.offboard_after).await;
        let at = emu.requests().len();
        let submitted = Instant::now();
        applier.submit(&run, &revocations);
        loop {
            let left = run
                .pending()
                .get(&Priority::Offboarding)
                .copied()
                .unwrap_or(0);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let latency = submitted.elapsed();
        (latency, at, emu.requests().len())
    });
    let drive = t.elapsed();
    let results = applier.finish(run).await;
    let log = emu.requests();
    emu.shutdown().await;
    let is_revocation = |r: &RequestRecord| r.method == "DELETE" && r.path.contains("/members/");
    let positions: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, r)| is_revocation(r))
        .map(|(i, _)| i)
        .collect();
    let first = positions.first().copied().unwrap_or(log.len());
    let lastp = positions.last().copied().unwrap_or(log.len());
    let others_before_first = log[at.min(first)..first].len();
    let others_until_last = log[at.min(lastp)..=lastp.min(log.len().saturating_sub(1))]
        .iter()
        .filter(|r| !is_revocation(r))
        .count();
    let revoked: Vec<&ChangeResult> = results
        .iter()
        .filter(|r| matches!(r.change, Change::RemoveMember { .. }))
        .collect();
    let all_done =
        revoked.len() == revocations.len() && revoked.iter().all(|r| r.outcome.is_done());
    let c = counts(&results);
    eprintln!(
        "[3] revocations done {:.0} ms after submission; {others_until_last} other requests served meanwhile; whole run {:.1} s; {}",
        latency.as_secs_f64() * 1000.0,
        drive.as_secs_f64(),
        show_counts(&c)
    );
    rows.push(row(
        S,
        format!(
            "time from submit to the {} revocations finished",
            revocations.len()
        ),
        format!(
            "**{}** (submitted {} ms into the run, {} requests served by then)",
            ms(latency),
            o.offboard_after.as_millis(),
            at
        ),
        "within the next few requests",
        Some(latency < Duration::from_millis(500)),
    ));
    rows.push(row(
        S,
        "other requests served between submit and the last revocation",
        format!(
            "{others_until_last} ({others_before_first} before the first revocation; {} served by the time all were reported finished)",
            finished_at - at
        ),
        format!("about concurrency ({})", o.concurrency),
        Some(others_until_last <= 3 * o.concurrency),
    ));
    rows.push(row(
        S,
        "revocation outcomes",
        revoked
            .iter()
            .map(|r| r.outcome.kind().label())
            .collect::<Vec<_>>()
            .join(", "),
        "done",
        Some(all_done),
    ));
    rows.push(info(
        S,
        "the whole run",
        format!(
            "{} for {} changes ({}), {} 429s; a FIFO would have revoked after all {n} grants, ~{:.0} s in",
            secs(drive),
            results.len(),
            show_counts(&c),
            count_429(&log),
            n as f64 / o.budget_per_sec()
        ),
    ));
}

// ---- 4. crash --------------------------------------------------------------------------------

/// A child `bbsync emulator` and a client for its control routes.
struct ChildEmulator {
    child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
}

impl ChildEmulator {
    async fn start(bin: &str, seed: &Path) -> ChildEmulator {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(bin)
            .args(["emulator", "--listen", "127.0.0.1:0", "--seed"])
            .arg(seed)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start bbsync emulator");
        let stdout = child.stdout.take().expect("the emulator's stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut base = None;
        while let Some(line) = lines.next_line().await.expect("read the emulator's stdout") {
            if let Some(rest) = line.split("listening on ").nth(1) {
                base = Some(rest.trim().to_owned());
                break;
            }
        }
        let base = base.expect("the emulator says where it listens");
        // Keep reading its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        bbsync::tls::install_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client");
        ChildEmulator { child, base, http }
    }

    async fn post(&self, route: &str, body: Value) {
        let r = self
            .http
            .post(format!("{}{route}", self.base))
            .json(&body)
            .send()
            .await
            .expect("emulator control route");
        assert!(r.status().is_success(), "{route}: {}", r.status());
    }

    async fn get(&self, route: &str) -> Value {
        self.http
            .get(format!("{}{route}", self.base))
            .send()
            .await
            .expect("emulator control route")
            .json()
            .await
            .expect("JSON from the emulator")
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    async fn requests(&self) -> Vec<RequestRecord> {
        serde_json::from_value(self.get("/_emulator/requests").await["requests"].clone())
            .expect("the request log")
    }
}

/// The grant a write is about, from its path: (repo, group).
fn grant_of(path: &str) -> Option<(String, String)> {
    let path = path.split('?').next().unwrap_or(path);
    let seg: Vec<&str> = path.split('/').collect();
    // ["", "2.0", "repositories", ws, repo, "permissions-config", "groups", group]
    (seg.len() == 8 && seg[2] == "repositories" && seg[5] == "permissions-config")
        .then(|| (seg[4].to_owned(), seg[7].to_owned()))
}

/// What the audit file says.
#[derive(Default)]
struct Trail {
    /// (repo, group) of every `set_grant`/`remove_grant` intent.
    intents: BTreeSet<(String, String)>,
    intent_ids: BTreeSet<String>,
    closed: BTreeSet<String>,
    recovered: usize,
    recovered_done: usize,
    unreadable: usize,
    lines: usize,
}

impl Trail {
    fn read(path: &Path) -> Trail {
        let mut t = Trail::default();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            t.lines += 1;
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                t.unreadable += 1;
                continue;
            };
            let id = v["id"].as_str().map(str::to_owned);
            match v["phase"].as_str() {
                Some("intent") => {
                    let c = &v["change"];
                    if let (Some(repo), Some(group)) = (c["repo"].as_str(), c["group"].as_str()) {
                        t.intents.insert((repo.to_owned(), group.to_owned()));
                    }
                    t.intent_ids.extend(id);
                }
                Some("outcome") => t.closed.extend(id),
                Some("recovered") => {
                    t.recovered += 1;
                    if v["observed_done"] == Value::Bool(true) {
                        t.recovered_done += 1;
                    }
                    t.closed.extend(id);
                }
                _ => {}
            }
        }
        t
    }

    fn dangling(&self) -> usize {
        self.dangling_ids().len()
    }

    fn dangling_ids(&self) -> BTreeSet<String> {
        self.intent_ids.difference(&self.closed).cloned().collect()
    }
}

async fn exit_code(bin: &str, args: &[&str], cfg: &Path, log: &Path) -> (Option<i32>, Duration) {
    let t = Instant::now();
    let status = tokio::process::Command::new(bin)
        .args(args)
        .arg("-c")
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log_file(log))
        .status()
        .await
        .expect("run bbsync");
    (status.code(), t.elapsed())
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log file")
}

async fn crash(o: &Opts, rows: &mut Vec<Row>) {
    const S: &str = "4 crash (kill -9)";
    let bin = env!("CARGO_BIN_EXE_bbsync");
    let n = o.crash_changes;
    let tmp = tempdir();
    let dir = tmp.path();
    let seed_path = dir.join("seed.json");
    std::fs::write(
        &seed_path,
        serde_json::to_string(&seed(n, o.server)).expect("seed JSON"),
    )
    .expect("write the seed");
    let emu = ChildEmulator::start(bin, &seed_path).await;
    emu.post(
        "/_emulator/latency",
        serde_json::json!({"ms": o.latency.as_millis() as u64}),
    )
    .await;
    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        config_text(&emu.base, dir, o.budget, 10, o.concurrency),
    )
    .expect("write the config");
    let log = dir.join("bbsync.log");
    let (code, plan_time) = exit_code(bin, &["plan", "--check"], &cfg, &log).await;
    assert_eq!(code, Some(3), "the first plan finds the {n} grants to make");
    let max_ms = o
        .crash_max_ms
        .unwrap_or(plan_time.as_millis() as u64 + 2_000);
    eprintln!(
        "[4] {n} grants; plan takes {:.2} s; {} kills at random points in 200..{max_ms} ms",
        plan_time.as_secs_f64(),
        o.kills
    );
    let mut rng = fastrand::Rng::with_seed(o.seed);
    let audit = dir.join("audit.jsonl");
    let mut seen_writes = 0;
    let mut worst_without = 0;
    let mut dangling_after_kills = BTreeSet::new();
    let mut exited_early = 0;
    let mut kill_points = Vec::new();
    let mut per_kill = Vec::new();
    for k in 0..o.kills {
        let at = Duration::from_millis(rng.u64(200..=max_ms.max(201)));
        let mut child = tokio::process::Command::new(bin)
            .args(["apply", "-c"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_file(&log))
            .spawn()
            .expect("start bbsync apply");
        tokio::time::sleep(at).await;
        if child.try_wait().expect("child status").is_some() {
            exited_early += 1;
        } else {
            child.kill().await.expect("kill -9 bbsync apply");
        }
        kill_points.push(at.as_millis());
        let log = emu.requests().await;
        let writes: Vec<&RequestRecord> = log.iter().filter(|r| is_write(r)).collect();
        let trail = Trail::read(&audit);
        let without = writes
            .iter()
            .filter(|w| grant_of(&w.path).is_none_or(|g| !trail.intents.contains(&g)))
            .count();
        let new = writes.len() - seen_writes;
        seen_writes = writes.len();
        worst_without = worst_without.max(without);
        dangling_after_kills.extend(trail.dangling_ids());
        per_kill.push(new);
        eprintln!(
            "[4] kill {:2} at {:4} ms: {new:4} new writes ({} in all), {without} without an intent, {} intents dangling",
            k + 1,
            at.as_millis(),
            writes.len(),
            trail.dangling()
        );
    }
    let before_final = Trail::read(&audit);
    let (apply_code, apply_time) = exit_code(bin, &["apply"], &cfg, &log).await;
    let (check_code, _) = exit_code(bin, &["plan", "--check"], &cfg, &log).await;
    let log_all = emu.requests().await;
    let trail = Trail::read(&audit);
    let writes: Vec<&RequestRecord> = log_all.iter().filter(|r| is_write(r)).collect();
    let without = writes
        .iter()
        .filter(|w| grant_of(&w.path).is_none_or(|g| !trail.intents.contains(&g)))
        .count();
    let twice = written_twice(&log_all);
    let state = emu.get("/_emulator/state").await;
    let granted = state["group_grants"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|g| g["group"] == "contractors" && g["permission"] == "write")
                .count()
        })
        .unwrap_or(0);
    emu.stop().await;
    let during_apply = per_kill.iter().filter(|&&w| w > 0).count();
    eprintln!(
        "[4] final apply: exit {apply_code:?} in {:.1} s; plan --check exit {check_code:?}; {granted} grants",
        apply_time.as_secs_f64()
    );
    rows.push(info(
        S,
        "kills",
        format!(
            "{} ({during_apply} while writing; {} with no new write: killed while reading, or nothing left; {exited_early} had exited by itself); at {}..{} ms after start (seed {})",
            o.kills,
            o.kills - during_apply,
            kill_points.iter().min().copied().unwrap_or(0),
            kill_points.iter().max().copied().unwrap_or(0),
            o.seed
        ),
    ));
    rows.push(info(
        S,
        "writes that reached the emulator",
        format!(
            "{seen_writes} during the killed runs, {} in all",
            writes.len()
        ),
    ));
    rows.push(row(
        S,
        "writes without an intent in the audit file",
        format!("{without} (worst after a kill: {worst_without})"),
        "0",
        Some(without == 0 && worst_without == 0),
    ));
    rows.push(info(
        S,
        "intents left dangling by the kills (distinct)",
        format!(
            "{}; {} still open before the final apply",
            dangling_after_kills.len(),
            before_final.dangling()
        ),
    ));
    rows.push(row(
        S,
        "dangling intents recovered (`recovered` records)",
        format!(
            "{} ({} observed done); {} still dangling at the end",
            trail.recovered,
            trail.recovered_done,
            trail.dangling()
        ),
        "every dangling intent recovered",
        Some(trail.dangling() == 0),
    ));
    rows.push(row(
        S,
        "audit lines unreadable (torn)",
        format!("{} of {}", trail.unreadable, trail.lines),
        "0",
        Some(trail.unreadable == 0),
    ));
    rows.push(row(
        S,
        "writes sent twice (2xx more than once on one path)",
        format!("{twice}"),
        "0",
        Some(twice == 0),
    ));
    rows.push(row(
        S,
        "converged: final apply exit, then plan --check exit",
        format!(
            "apply {} in {}, plan --check {}; {granted} of {n} grants",
            apply_code.map_or("killed".into(), |c| c.to_string()),
            secs(apply_time),
            check_code.map_or("killed".into(), |c| c.to_string())
        ),
        "0, 0, all",
        Some(apply_code == Some(0) && check_code == Some(0) && granted == n),
    ));
}

fn main() {
    if let Ok(filter) = std::env::var("BENCH_RUST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let o = Opts::from_env();
    let only: Option<BTreeSet<u32>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect());
    let wanted = |k: u32| only.as_ref().is_none_or(|s| s.contains(&k));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let t = Instant::now();
    let mut rows = Vec::new();
    let mut took = Vec::new();
    rt.block_on(async {
        if wanted(1) {
            let t = Instant::now();
            budget_bound(&o, &mut rows).await;
            took.push(("1", t.elapsed()));
        }
        if wanted(2) {
            let t = Instant::now();
            server_bound(&o, RetryAfterMode::None, &mut rows).await;
            server_bound(&o, RetryAfterMode::Seconds, &mut rows).await;
            took.push(("2", t.elapsed()));
        }
        if wanted(3) {
            let t = Instant::now();
            offboarding(&o, &mut rows).await;
            took.push(("3", t.elapsed()));
        }
        if wanted(4) {
            let t = Instant::now();
            crash(&o, &mut rows).await;
            took.push(("4", t.elapsed()));
        }
    });
    let mut header = String::new();
    let _ = write!(
        header,
        "bbsync pool bench: emulator on 127.0.0.1, latency {} ms, concurrency {}, budget {}/h, {} CPUs; took {:.0} s (",
        o.latency.as_millis(),
        o.concurrency,
        o.budget,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        t.elapsed().as_secs_f64()
    );
    let _ = write!(
        header,
        "{})",
        took.iter()
            .map(|(k, d)| format!("scenario {k} {:.0} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("\n{header}\n");
    print_table(&rows);
    let failed = rows.iter().filter(|r| r.ok == Some(false)).count();
    if failed > 0 {
        println!("\n{failed} goal(s) not met");
    }
}
