//! The Prometheus metrics of a real apply against the emulator: every request the emulator saw
//! is counted once, under the family and status class it had (429s, 5xx and resets included),
//! the counters go on across a reload (a new `Clients`, the same `Metrics`), no label value
//! names a person, and `promtool check metrics` accepts the exposition.

mod common;

use bbsync::bitbucket::{Budget, BudgetSettings};
use bbsync::config::Config;
use bbsync::metrics::Metrics;
use bbsync::reconcile::Reconciler;
use bbsync_emulator::{Emulator, Fault, FaultKind, Seed, SeedGroupGrant};
use common::*;
use std::collections::BTreeMap;

use std::time::Duration;
use tokio::time::Instant;

const PEOPLE: [&str; 3] = ["ann", "bob", "cid"];

/// acme with ann, bob and cid; Developers = [bob, cid] (bob is leaving); three PROJ repos, one
/// of them granted to developers already; an access token besides the admin's API token.
fn world() -> Seed {
    let mut s = with_other_credentials(seed(&PEOPLE), 7200);
    add_repos(&mut s, "PROJ", "proj", 3);
    s.groups.push(group("Developers", &["bob", "cid"]));
    s.group_grants.push(SeedGroupGrant {
        repo: "proj-000".into(),
        group: "developers".into(),
        permission: "write".into(),
    });
    s
}

/// ann and cid in eng, bob disabled, and one person entry without an account id (with an
/// email: it must not reach any label).
fn directory() -> String {
    let mut text = ldif(
        &[("ann", false), ("bob", true), ("cid", false)],
        &[("eng", &["ann", "cid"])],
    );
    text.push_str(
        "dn: uid=zed,ou=people,dc=acme,dc=test\nobjectClass: inetOrgPerson\nuid: zed\ncn: Zed Noid\nmail: zed@acme.test\n\n",
    );
    text
}

const RULES: &str = "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n[[grants]]\ngroup = \"developers\"\npermission = \"write\"\nprojects = [\"PROJ\"]\n";

/// `credentials` is the [credentials.*] TOML, `bitbucket` extra keys for [bitbucket].
fn config_with(
    emu: &Emulator,
    dir: &std::path::Path,
    credentials: &str,
    bitbucket: &str,
    max_retries: u32,
) -> Config {
    std::fs::write(dir.join("directory.ldif"), directory()).expect("write ldif");
    let text = format!(
        r#"
mode = "apply"
[bitbucket]
workspace = "acme"
api_url = "{url}"
oauth_token_url = "{url}/site/oauth2/access_token"
max_retries = {max_retries}
{bitbucket}
{credentials}
[source]
kind = "ldif"
path = "directory.ldif"
[directory]
disabled_attribute = "nsAccountLock"
[audit]
path = "audit.jsonl"
[apply]
requests_per_hour = 3600000
burst = 1000
{RULES}
"#,
        url = emu.base_url()
    );
    Config::from_toml_str(&text, "test.toml", dir).expect("valid test config")
}

const ADMIN: &str = "[credentials.admin]\nkind = \"api_token\"\nemail = \"admin@acme.test\"\ntoken = \"admin-token\"\n";
const READER: &str = "[credentials.reader]\nkind = \"access_token\"\ntoken = \"access-token-1\"\n";

/// One sample of the text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').expect("label=value");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The value of the one sample `name` with exactly these labels.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples(text)
        .into_iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// `bbsync_api_requests_total` by (family, status class).
fn requests_by_family(text: &str) -> BTreeMap<(String, String), u64> {
    samples(text)
        .into_iter()
        .filter(|s| s.name == "bbsync_api_requests_total")
        .map(|s| {
            (
                (s.labels["family"].clone(), s.labels["status_class"].clone()),
                s.value as u64,
            )
        })
        .collect()
}

/// The family a request the emulator saw belongs to, by its route template: written apart
/// from the client's own labelling, as bbsync routes the operations.
fn family_of_route(method: &str, route: &str) -> &'static str {
    let read = method == "GET";
    let pick = |r: &'static str, w: &'static str| if read { r } else { w };
    match route {
        "/site/oauth2/access_token" => "oauth_token",
        r if r.starts_with("/1.0/groups/") || r.starts_with("/1.0/users/{ws}/invitations") => {
            pick("groups_read", "groups_write")
        }
        r if r.starts_with("/1.0/group-privileges/") => {
            pick("group_privileges_read", "group_privileges_write")
        }
        r if r.contains("/permissions-config/") => pick("permissions_read", "permissions_write"),
        "/2.0/workspaces/{ws}/members" | "/2.0/workspaces/{ws}/members/{member}" => "members_read",
        "/2.0/repositories/{ws}" | "/2.0/workspaces/{ws}/projects" => "repositories_read",
        "/2.0/workspaces/{ws}/permissions" => "groups_read",
        "/2.0/workspaces/{ws}/permissions/repositories" => "permissions_read",
        _ => "other",
    }
}

fn class_of(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        // A connection closed without an answer is recorded with status 0.
        _ => "error",
    }
}

/// What the emulator saw, as (family, status class) counts.
fn emulator_counts(emu: &Emulator) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for r in emu.requests() {
        *out.entry((
            family_of_route(&r.method, &r.route).to_owned(),
            class_of(r.status).to_owned(),
        ))
        .or_default() += 1;
    }
    out
}

/// No label value names a person, an email, a group or a repository.
fn assert_no_personal_labels(text: &str, seed: &Seed) {
    let mut forbidden: Vec<String> = PEOPLE.iter().chain(&["zed"]).map(|p| acc(p)).collect();
    forbidden.extend(seed.groups.iter().map(|g| g.name.to_lowercase()));
    forbidden.extend(seed.repositories.iter().map(|r| r.slug.clone()));
    forbidden.push("eng".into());
    for s in samples(text) {
        for (k, v) in &s.labels {
            assert!(
                !v.contains('@') && !v.contains(':'),
                "{}{{{k}={v:?}}} looks like an email or an account id",
                s.name
            );
            assert!(
                !forbidden
                    .iter()
                    .any(|f| v.to_lowercase() == *f || v.contains(f.as_str())),
                "{}{{{k}={v:?}}} names a person, group or repository",
                s.name
            );
        }
    }
}

#[tokio::test]
async fn an_apply_with_faults_is_counted_per_family_and_passes_promtool() {
    let seed = world();
    let emu = start(seed.clone()).await;
    let tmp = tempfile::tempdir().expect("tmp");
    // Retries on: the 5xx and the reset below are sent again and counted again.
    let cfg = config_with(&emu, tmp.path(), ADMIN, "", 2);
    // A 429 to the groups listing (the budget pauses a second and sends it again), a 500 to
    // the repositories listing, and a connection closed without an answer to the members
    // listing (both retried by the retry policy).
    emu.inject_fault(Fault {
        method: Some("GET".into()),
        path_contains: "/1.0/groups/acme".into(),
        status: 429,
        body: "Rate limit for this resource has been exceeded".into(),
        headers: vec![("retry-after".into(), "1".into())],
        times: Some(1),
        ..Fault::default()
    });
    emu.inject_fault(Fault {
        method: Some("GET".into()),
        path_contains: "/2.0/repositories/acme".into(),
        status: 500,
        body: "Internal Server Error".into(),
        times: Some(1),
        ..Fault::default()
    });
    emu.inject_fault(Fault {
        method: Some("GET".into()),
        path_contains: "/2.0/workspaces/acme/members".into(),
        kind: FaultKind::Reset,
        times: Some(1),
        ..Fault::default()
    });

    let metrics = Metrics::new().expect("metrics");
    let rec = Reconciler::new(cfg).expect("reconciler");
    rec.clients.set_metrics(metrics.api());
    let started = std::time::Instant::now();
    let report = rec.run(true).await.expect("the run");
    metrics.observe_duration("full", started.elapsed().as_secs_f64());
    metrics.observe(&report, &rec.clients);
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert!(
        emu.faults().iter().all(|f| f.times == Some(0)),
        "every fault fired: {:?}",
        emu.faults()
    );
    let text = metrics.render();

    // Every request the emulator saw, counted once under its family and status class.
    let counted = requests_by_family(&text);
    assert_eq!(counted, emulator_counts(&emu), "\n{text}");
    assert_eq!(
        counted.values().sum::<u64>(),
        rec.clients.total_requests(),
        "the clients' own count"
    );
    let get = |f: &str, c: &str| counted.get(&(f.to_owned(), c.to_owned())).copied();
    assert_eq!(get("groups_read", "4xx"), Some(1), "the 429");
    assert_eq!(get("repositories_read", "5xx"), Some(1), "the 500");
    assert_eq!(get("members_read", "error"), Some(1), "the reset");
    for family in [
        "groups_read",
        "groups_write",
        "repositories_read",
        "members_read",
    ] {
        assert!(
            get(family, "2xx").unwrap_or(0) > 0,
            "{family} answered 2xx\n{text}"
        );
    }
    assert_eq!(
        value(
            &text,
            "bbsync_api_rate_limited_total",
            &[("credential", "admin")]
        ),
        Some(1.0)
    );
    let latencies: f64 = samples(&text)
        .iter()
        .filter(|s| s.name == "bbsync_api_request_duration_seconds_count")
        .map(|s| s.value)
        .sum();
    assert_eq!(latencies as u64, rec.clients.total_requests());

    // The run: ok, its changes, the leaver, the directory as read.
    assert_eq!(
        value(&text, "bbsync_reconciles_total", &[("outcome", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "bbsync_changes_total",
            &[("kind", "remove_member"), ("outcome", "applied")]
        ),
        Some(1.0),
        "bob left\n{text}"
    );
    assert_eq!(
        value(
            &text,
            "bbsync_changes_total",
            &[("kind", "add_member"), ("outcome", "applied")]
        ),
        Some(1.0),
        "ann joined\n{text}"
    );
    assert_eq!(
        value(&text, "bbsync_source_entries", &[("state", "read")]),
        Some(4.0),
        "three people and a group"
    );
    assert_eq!(
        value(&text, "bbsync_source_entries", &[("state", "invalid")]),
        Some(1.0)
    );
    assert_eq!(value(&text, "bbsync_unresolved_identities", &[]), Some(1.0));
    for p in ["offboarding", "removal", "addition", "repair"] {
        assert_eq!(
            value(&text, "bbsync_pending_changes", &[("priority", p)]),
            Some(0.0),
            "nothing left undone"
        );
    }
    assert_eq!(
        value(
            &text,
            "bbsync_reconcile_duration_seconds_count",
            &[("kind", "full")]
        ),
        Some(1.0)
    );
    let last = value(&text, "bbsync_last_success_timestamp_seconds", &[]).expect("gauge");
    assert!(last > 1.7e9, "{last}");
    let budget = value(
        &text,
        "bbsync_rate_budget_remaining",
        &[("credential", "admin")],
    )
    .expect("gauge");
    assert!((0.0..=1000.0).contains(&budget), "{budget}");
    assert_eq!(
        value(
            &text,
            "bbsync_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    assert_no_personal_labels(&text, &seed);
    promtool_accepts(&text);
}

#[tokio::test]
async fn a_reload_counts_into_the_same_collectors_and_drops_a_removed_credential() {
    let seed = world();
    let emu = start(seed.clone()).await;
    let tmp = tempfile::tempdir().expect("tmp");
    // Members and repositories are read with the access token, the rest with the admin's.
    let split = config_with(
        &emu,
        tmp.path(),
        &format!("{ADMIN}{READER}"),
        "credential = \"admin\"\n[bitbucket.families]\nmembers_read = \"reader\"\nrepositories_read = \"reader\"\n",
        0,
    );
    let metrics = Metrics::new().expect("metrics");
    let first = Reconciler::new(split).expect("reconciler");
    first.clients.set_metrics(metrics.api());
    let before = metrics.render();
    for credential in ["admin", "reader"] {
        assert_eq!(
            value(
                &before,
                "bbsync_rate_budget_remaining",
                &[("credential", credential)]
            ),
            Some(1000.0),
            "a full burst before any request\n{before}"
        );
    }
    let r1 = first.run(true).await.expect("first run");
    metrics.observe(&r1, &first.clients);
    let text1 = metrics.render();
    let counted1 = requests_by_family(&text1);
    assert_eq!(counted1, emulator_counts(&emu), "\n{text1}");

    // The families' requests went out with the credential configured for them: what the
    // access token sent (as the emulator saw it) is what was counted for its two families.
    let by_credential = |id: &str| {
        emu.requests()
            .iter()
            .filter(|r| r.credential.as_deref() == Some(id))
            .count() as u64
    };
    let counted_for = |families: &[&str]| -> u64 {
        counted1
            .iter()
            .filter(|((f, _), _)| families.contains(&f.as_str()))
            .map(|(_, n)| n)
            .sum()
    };
    assert!(by_credential("ws-token") > 0);
    assert_eq!(
        counted_for(&["members_read", "repositories_read"]),
        by_credential("ws-token")
    );
    assert_eq!(
        counted_for(&[
            "groups_read",
            "groups_write",
            "group_privileges_read",
            "group_privileges_write",
            "permissions_read",
            "permissions_write",
        ]),
        by_credential("admin")
    );

    // SIGHUP: a configuration without the access token, new clients, the same metrics.
    let admin_only = config_with(&emu, tmp.path(), ADMIN, "", 0);
    let second = Reconciler::new(admin_only).expect("reconciler");
    second.clients.set_metrics(metrics.api());
    drop(first);
    let r2 = second.run(true).await.expect("second run");
    metrics.observe(&r2, &second.clients);
    let text2 = metrics.render();
    let counted2 = requests_by_family(&text2);
    assert_eq!(
        counted2,
        emulator_counts(&emu),
        "both runs, each request once"
    );
    for (series, n) in &counted1 {
        assert!(
            counted2.get(series).copied().unwrap_or(0) >= *n,
            "{series:?} went back"
        );
    }
    assert!(
        counted2.values().sum::<u64>() > counted1.values().sum::<u64>(),
        "the second run was counted"
    );
    assert_eq!(
        value(&text2, "bbsync_reconciles_total", &[("outcome", "ok")]),
        Some(2.0)
    );
    assert!(value(
        &text2,
        "bbsync_rate_budget_remaining",
        &[("credential", "admin")]
    )
    .is_some());
    assert_eq!(
        value(
            &text2,
            "bbsync_rate_budget_remaining",
            &[("credential", "reader")]
        ),
        None,
        "a credential the configuration no longer has leaves the gauge\n{text2}"
    );

    assert_no_personal_labels(&text2, &seed);
    promtool_accepts(&text2);
}

#[tokio::test]
async fn a_guard_hold_and_a_dry_run_leave_pending_changes() {
    let seed = world();
    let emu = start(seed.clone()).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = config_with(&emu, tmp.path(), ADMIN, "", 0);
    // bob and cid left: two revocations, more than the one the absolute guard lets go.
    std::fs::write(
        tmp.path().join("directory.ldif"),
        ldif(
            &[("ann", false), ("bob", true), ("cid", true)],
            &[("eng", &["ann"])],
        ),
    )
    .expect("ldif");
    cfg.safety.max_removals = 1;
    let metrics = Metrics::new().expect("metrics");
    let rec = Reconciler::new(cfg).expect("reconciler");
    rec.clients.set_metrics(metrics.api());
    let plan = rec.run(false).await.expect("dry run");
    metrics.observe(&plan, &rec.clients);
    let text = metrics.render();
    let pending: f64 = ["offboarding", "removal", "addition", "repair"]
        .iter()
        .filter_map(|p| value(&text, "bbsync_pending_changes", &[("priority", p)]))
        .sum();
    assert_eq!(
        pending as usize,
        plan.plan.changes.len(),
        "a dry run leaves its whole plan\n{text}"
    );
    assert!(
        value(
            &text,
            "bbsync_pending_changes",
            &[("priority", "offboarding")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "the leavers' removals wait\n{text}"
    );
    let held: f64 = samples(&text)
        .iter()
        .filter(|s| s.name == "bbsync_guard_holds_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(held as usize, plan.plan.held.len(), "\n{text}");
    assert_no_personal_labels(&text, &seed);
    promtool_accepts(&text);
}

#[tokio::test]
async fn daemon_side_observations_render_and_pass_promtool() {
    let metrics = Metrics::new().expect("metrics");
    metrics.observe_duration("offboarding_poll", 0.4);
    metrics.observe_poll("revoked");
    metrics.observe_poll("error");
    metrics.observe_revocation_latency("offboarding_poll", 12.0);
    metrics.observe_revocation_latency("reconcile", 700.0);
    metrics.set_pending(&BTreeMap::from([("offboarding".to_owned(), 2)]));
    metrics.set_unresolved_identities(3);
    let text = metrics.render();
    assert_eq!(
        value(
            &text,
            "bbsync_revocation_latency_seconds_bucket",
            &[("trigger", "offboarding_poll"), ("le", "15")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "bbsync_revocation_latency_seconds_bucket",
            &[("trigger", "reconcile"), ("le", "600")]
        ),
        Some(0.0),
        "beyond the last bucket (10 min)"
    );
    assert_eq!(
        value(
            &text,
            "bbsync_revocation_latency_seconds_bucket",
            &[("trigger", "reconcile"), ("le", "+Inf")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "bbsync_offboarding_polls_total",
            &[("outcome", "error")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "bbsync_pending_changes",
            &[("priority", "offboarding")]
        ),
        Some(2.0)
    );
    assert_eq!(value(&text, "bbsync_unresolved_identities", &[]), Some(3.0));
    promtool_accepts(&text);
}

#[tokio::test(start_paused = true)]
async fn the_budget_gauge_reads_what_is_left_without_taking_any() {
    let b = Budget::new(
        "admin",
        BudgetSettings {
            requests_per_hour: 3600,
            burst: 5,
            ..BudgetSettings::default()
        },
    );
    assert_eq!(b.available_now(), 5, "a full burst");
    assert_eq!(b.available_now(), 5, "looking takes nothing");
    for _ in 0..3 {
        b.acquire().await.expect("permit");
    }
    assert_eq!(b.available_now(), 2);
    assert_eq!(b.available_now(), 2);
    // One a second comes back, up to the burst.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(b.available_now(), 3);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(b.available_now(), 5);
    // Looking did not take from the burst: it still goes at once.
    let start = Instant::now();
    let mut last = None;
    for _ in 0..5 {
        last = Some(b.acquire().await.expect("permit"));
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(b.available_now(), 0);
    // A 429 pauses the credential: nothing would go until the pause ends; then the
    // stepped-down pace (a burst of 2) has filled up again.
    b.rate_limited(last.expect("a permit"), Some(Duration::from_secs(30)))
        .expect("paused");
    assert_eq!(b.available_now(), 0);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(b.available_now(), 2);
    // Spent for the run: nothing.
    let p = b.acquire().await.expect("permit");
    assert!(b.rate_limited(p, Some(Duration::from_secs(3600))).is_err());
    assert_eq!(b.available_now(), 0);
}
