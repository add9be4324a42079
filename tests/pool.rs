//! The worker pool over real HTTP against the emulator: circuits, answers that are not proof,
//! lost writes caught by verification, the OAuth token endpoint failing once, priorities under
//! a queue, a spent budget deferring work to the next run, one writer per workspace, and an
//! interrupted run's intents settled by the next. Waits are short real ones or none; the
//! schedules themselves are tested under paused time in `bitbucket::budget` and `retry`.

mod common;

use bbsync::apply::audit::Audit;
use bbsync::apply::{Applier, Outcome, OutcomeKind};
use bbsync::bitbucket::Clients;
use bbsync::config::{ApplySettings, Config, GrantWrites};
use bbsync::model::{AccountId, GroupSlug, Permission, RepoSlug};
use bbsync::plan::{BlockReason, Change, Plan, Planned, Reason};
use bbsync::reconcile::{Reconciler, RunError};
use bbsync_emulator::{Emulator, Fault, FaultKind, RetryAfterMode};
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// `n` repositories in PROJ and a rule giving `developers` (one member, ann) write on them.
async fn grants_setup(n: usize) -> (Emulator, tempfile::TempDir, Config) {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &["ann"]));
    add_repos(&mut s, "PROJ", "r", n);
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[("eng", &["ann"])]),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n[[grants]]\ngroup = \"developers\"\npermission = \"write\"\nprojects = [\"PROJ\"]\n",
    );
    (emu, tmp, cfg)
}

fn sent(emu: &Emulator, method: &str, contains: &str) -> usize {
    emu.requests()
        .iter()
        .filter(|r| r.method == method && r.path.contains(contains))
        .count()
}

fn blocked_labels(outcomes: &[bbsync::apply::ChangeResult]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for o in outcomes {
        if let Outcome::Blocked { reason } = &o.outcome {
            *m.entry(reason.label()).or_insert(0) += 1;
        }
    }
    m
}

#[tokio::test]
async fn a_family_that_keeps_failing_opens_its_circuit_and_stops_sending() {
    let (emu, _tmp, cfg) = grants_setup(40).await;
    emu.inject_fault(Fault {
        method: Some("PUT".into()),
        family: Some("repo permissions-config write".into()),
        status: 500,
        body: "Internal Server Error".into(),
        ..Fault::default()
    });
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(!report.ok());
    // Until one write of a family succeeds they go one at a time: five failures in a row
    // open the circuit after exactly five requests, not one per change.
    assert_eq!(sent(&emu, "PUT", "permissions-config"), 5);
    assert_eq!(report.count(OutcomeKind::Failed), 5);
    assert_eq!(
        blocked_labels(&report.outcomes),
        BTreeMap::from([("circuit_open", 35)])
    );
    let first_blocked = report
        .outcomes
        .iter()
        .find_map(|o| match &o.outcome {
            Outcome::Blocked { reason } => Some(reason.to_string()),
            _ => None,
        })
        .expect("blocked");
    assert!(
        first_blocked.contains("failed 5 times in a row"),
        "{first_blocked}"
    );
}

#[tokio::test]
async fn an_html_page_answered_200_to_every_grant_write_is_never_audited_as_applied() {
    let (emu, tmp, mut cfg) = grants_setup(3).await;
    cfg.bitbucket.max_retries = 1;
    emu.inject_fault(Fault {
        method: Some("PUT".into()),
        family: Some("repo permissions-config write".into()),
        kind: FaultKind::Html200,
        ..Fault::default()
    });
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(!report.ok());
    assert_eq!(
        report.count(OutcomeKind::Failed),
        3,
        "{:#?}",
        report.outcomes
    );
    assert!(emu.state().group_grants.is_empty());
    let trail = std::fs::read_to_string(tmp.path().join("audit.jsonl")).expect("trail");
    let finals = audit_finals(&trail);
    assert_eq!(finals.len(), 3);
    for f in &finals {
        assert_eq!(f["outcome"]["result"], "failed", "{f}");
        let error = f["outcome"]["error"].as_str().expect("error");
        assert!(
            error.contains("not with what Bitbucket documents"),
            "{error}"
        );
    }
    // Each write was sent twice (a retry): a 2xx that is not proof is retried like a 5xx.
    assert_eq!(sent(&emu, "PUT", "permissions-config"), 6);
}

#[tokio::test]
async fn a_lost_write_is_caught_by_verify_and_sent_once_more() {
    let (emu, tmp, cfg) = grants_setup(3).await;
    emu.inject_fault(Fault {
        method: Some("PUT".into()),
        path_contains: "/r-001/".into(),
        kind: FaultKind::LostWrite,
        times: Some(1),
        ..Fault::default()
    });
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert_eq!(report.count(OutcomeKind::Applied), 3);
    assert_eq!(
        emu.state().group_grants.len(),
        3,
        "the lost grant is there now"
    );
    assert_eq!(sent(&emu, "PUT", "/r-001/"), 2);
    assert_eq!(sent(&emu, "PUT", "/r-000/"), 1);
    // The trail tells it: acknowledged, not seen, sent again, applied.
    let trail = std::fs::read_to_string(tmp.path().join("audit.jsonl")).expect("trail");
    let r1: Vec<String> = trail
        .lines()
        .filter(|l| l.contains("\"repo\":\"r-001\""))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            format!(
                "{}:{}",
                v["phase"].as_str().unwrap_or_default(),
                v["outcome"]["result"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        r1,
        [
            "intent:",
            "outcome:accepted",
            "outcome:failed",
            "intent:",
            "outcome:accepted",
            "outcome:applied"
        ]
    );
}

#[tokio::test]
async fn a_write_lost_every_time_is_failed_after_the_second_attempt() {
    let (emu, _tmp, cfg) = grants_setup(2).await;
    emu.inject_fault(Fault {
        method: Some("PUT".into()),
        path_contains: "/r-001/".into(),
        kind: FaultKind::LostWrite,
        ..Fault::default()
    });
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(!report.ok());
    let failed: Vec<&str> = report
        .outcomes
        .iter()
        .filter_map(|o| match &o.outcome {
            Outcome::Failed { error, .. } => Some(error.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].contains("acknowledged this write twice"),
        "{}",
        failed[0]
    );
    assert_eq!(
        sent(&emu, "PUT", "/r-001/"),
        2,
        "sent once more, not forever"
    );
    assert_eq!(report.count(OutcomeKind::Applied), 1);
}

#[tokio::test]
async fn one_bad_answer_from_the_oauth_token_endpoint_does_not_block_membership_changes() {
    let s = with_other_credentials(seed(&["ann", "bob"]), 7200);
    let mut s = s;
    s.groups.push(group("Developers", &[]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("dir.ldif"),
        ldif(
            &[("ann", false), ("bob", false)],
            &[("eng", &["ann", "bob"])],
        ),
    )
    .expect("ldif");
    let text = format!(
        r#"mode = "apply"
[bitbucket]
workspace = "acme"
api_url = "{base}"
oauth_token_url = "{base}/site/oauth2/access_token"
max_retries = 2
credential = "admin"
[bitbucket.families]
groups_write = "consumer"
[credentials.admin]
kind = "api_token"
email = "{ADMIN_EMAIL}"
token = "{ADMIN_TOKEN}"
[credentials.consumer]
kind = "oauth"
client_id = "consumer-key"
client_secret = "consumer-secret"
[apply]
requests_per_hour = 3600000
burst = 1000
[source]
kind = "ldif"
path = "dir.ldif"
[directory]
disabled_attribute = "nsAccountLock"
[audit]
path = "audit.jsonl"
[[groups]]
name = "Developers"
from = ["eng"]
"#,
        base = emu.base_url()
    );
    let cfg = Config::from_toml_str(&text, "t.toml", tmp.path()).expect("config");
    // An HTML page answered 200, then a 503: each once.
    emu.inject_fault(Fault {
        method: Some("POST".into()),
        path_contains: "/site/oauth2/access_token".into(),
        kind: FaultKind::Html200,
        times: Some(1),
        ..Fault::default()
    });
    emu.inject_fault(Fault {
        method: Some("POST".into()),
        path_contains: "/site/oauth2/access_token".into(),
        status: 503,
        body: "Service Unavailable".into(),
        times: Some(1),
        ..Fault::default()
    });
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert_eq!(report.count(OutcomeKind::Applied), 2);
    assert_eq!(emu.state().groups[0].members.len(), 2);
    assert_eq!(sent(&emu, "POST", "/site/oauth2/access_token"), 3);
}

/// `developers` gets write on r-000 .. r-(n-1), by rule.
fn write_grants(dev: &GroupSlug, n: usize) -> Vec<Planned> {
    (0..n)
        .map(|i| {
            planned(
                Change::SetGrant {
                    repo: RepoSlug::new(&format!("r-{i:03}")),
                    group: dev.clone(),
                    permission: Permission::Write,
                    previous: None,
                },
                Reason::Rule {
                    rule: "grants[0]".into(),
                    detail: "t".into(),
                },
            )
        })
        .collect()
}

fn planned(change: Change, reason: Reason) -> Planned {
    Planned {
        change,
        reason,
        blocked: None,
    }
}

#[tokio::test]
async fn a_leavers_revocation_submitted_behind_a_long_queue_starts_within_the_next_few_requests() {
    let (emu, tmp, mut cfg) = grants_setup(200).await;
    emu.set_latency(Duration::from_millis(15));
    cfg.apply.concurrency = 2;
    let clients = Clients::new(&cfg).expect("clients");
    let members = clients.v1_groups();
    let audit = Audit::to_file(&tmp.path().join("audit.jsonl")).expect("audit");
    let applier = Applier {
        clients: &clients,
        members: &members,
        org: None,
        grant_writes: GrantWrites::PermissionsConfig,
        audit: &audit,
        run_id: "t",
        settings: ApplySettings {
            concurrency: 2,
            verify: false,
            ..ApplySettings::default()
        },
        stop: None,
    };
    let dev = GroupSlug::from_name("developers");
    let grants = write_grants(&dev, 200);
    let run = applier.start(&Plan {
        changes: grants,
        ..Plan::default()
    });
    let leaver = planned(
        Change::RemoveMember {
            group: dev.clone(),
            account_id: AccountId::parse(&acc("ann")).expect("id"),
            display_name: "Person ann".into(),
        },
        Reason::Leaver {
            fact: "nsAccountLock=TRUE".into(),
        },
    );
    let mut submitted_at = 0usize;
    tokio::join!(applier.drive(&run), async {
        while sent(&emu, "PUT", "permissions-config") < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        submitted_at = emu.requests().len();
        applier.submit(&run, std::slice::from_ref(&leaver));
    });
    let results = applier.finish(run).await;
    assert_eq!(results.len(), 201);
    assert!(results.iter().all(|r| r.outcome.is_done()), "{results:#?}");
    let log = emu.requests();
    let revoked = log
        .iter()
        .position(|r| r.method == "DELETE")
        .expect("the revocation was sent");
    // Between the submission and the revocation: what was already in flight (concurrency
    // 2) and the one member read 1.0 needs to name the person, nothing more.
    assert!(
        revoked - submitted_at <= 4,
        "{} requests went before the revocation",
        revoked - submitted_at
    );
    let grants_before = log[..revoked].iter().filter(|r| r.method == "PUT").count();
    assert!(
        grants_before < 30,
        "{grants_before} grants went before the revocation: it waited for the queue"
    );
    assert!(emu.state().groups[0].members.is_empty());
}

#[tokio::test]
async fn a_spent_budget_defers_the_rest_and_the_next_run_finishes_without_resending() {
    let (emu, _tmp, cfg) = grants_setup(40).await;
    let (cfg, first_cfg) = (cfg.clone(), cfg);
    // Bitbucket's window closes after 30 requests and says when it reopens (an hour).
    emu.set_rate_limit(30);
    emu.set_retry_after(RetryAfterMode::Seconds);
    let rec = Reconciler::new(first_cfg).expect("rec");
    let first = rec.run(true).await.expect("first run");
    assert!(!first.ok());
    let deferred = first.count(OutcomeKind::Deferred);
    assert!(deferred > 0, "{:#?}", first.outcomes);
    let why = first
        .outcomes
        .iter()
        .find_map(|o| match &o.outcome {
            Outcome::Deferred {
                why,
                resume_in_secs,
            } => Some((why.clone(), *resume_in_secs)),
            _ => None,
        })
        .expect("deferred");
    assert!(why.0.contains("Retry-After"), "{}", why.0);
    assert!(why.1.is_some_and(|s| s > 3000), "{why:?}");
    // A handful of 429s, not one per change: the requests in flight when the window
    // closed (concurrency 4), then the credential stopped.
    let limited = emu.requests().iter().filter(|r| r.status == 429).count();
    assert!((1..=4).contains(&limited), "{limited} 429s");

    // A run right after sends nothing: the window is still closed.
    let mut log = emu.requests();
    emu.reset_requests();
    let e = rec.run(true).await.expect_err("still closed");
    assert!(e.to_string().contains("reopens in"), "{e}");
    assert!(emu.requests().is_empty(), "{:?}", emu.requests());

    // The window reopens (for a process started later); the next run does the rest and
    // sends nothing twice.
    emu.advance_time(Duration::from_secs(3601));
    drop(rec);
    let rec = Reconciler::new(cfg).expect("rec");
    let second = rec.run(true).await.expect("second run");
    assert!(second.ok(), "{:#?}", second.outcomes);
    assert_eq!(emu.state().group_grants.len(), 40);
    let mut per_path: BTreeMap<String, usize> = BTreeMap::new();
    log.extend(emu.requests());
    for r in log {
        if r.method == "PUT" && r.status == 200 {
            *per_path.entry(r.path.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(per_path.len(), 40);
    assert!(per_path.values().all(|&n| n == 1), "{per_path:?}");
}

#[tokio::test]
async fn a_second_instance_on_the_same_state_dir_exits_at_once_naming_the_first() {
    let (emu, tmp, mut cfg) = grants_setup(2).await;
    cfg.offboarding.state_dir = Some(tmp.path().join("state"));
    let first = Reconciler::new(cfg.clone()).expect("first");
    assert!(first.run(true).await.expect("first run").ok());
    emu.reset_requests();
    let second = Reconciler::new(cfg.clone()).expect("second");
    let e = second.run(true).await.expect_err("locked");
    assert!(matches!(e, RunError::Locked(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains("bbsync.lock"), "{msg}");
    assert!(
        emu.requests().is_empty(),
        "the second instance read or wrote"
    );
    // A plan takes no lock; once the first is gone the second may apply.
    assert!(second.run(false).await.is_ok());
    drop(first);
    assert!(second.run(true).await.is_ok());
}

#[tokio::test]
async fn intents_left_by_an_interrupted_apply_are_settled_by_the_next_run() {
    let (emu, tmp, cfg) = grants_setup(2).await;
    let trail = tmp.path().join("audit.jsonl");
    let dev = GroupSlug::from_name("developers");
    let ann = AccountId::parse(&acc("ann")).expect("id");
    {
        // A run that died after sending: one change Bitbucket shows (ann is in the group),
        // one it does not (no grant on r-000 yet).
        let audit = Audit::to_file(&trail).expect("audit");
        let rule = Reason::Rule {
            rule: "groups[0]".into(),
            detail: "t".into(),
        };
        audit
            .intent(
                "dead",
                &Change::AddMember {
                    group: dev.clone(),
                    account_id: ann,
                    display_name: "Person ann".into(),
                },
                &rule,
            )
            .expect("intent");
        audit
            .intent(
                "dead",
                &Change::SetGrant {
                    repo: RepoSlug::new("r-000"),
                    group: dev.clone(),
                    permission: Permission::Write,
                    previous: None,
                },
                &rule,
            )
            .expect("intent");
    }
    let rec = Reconciler::new(cfg).expect("rec");
    let report = rec.run(true).await.expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    let text = std::fs::read_to_string(&trail).expect("trail");
    let recovered: Vec<(String, bool)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|v| v["phase"] == "recovered")
        .map(|v| {
            (
                v["change"]["op"].as_str().unwrap_or_default().to_owned(),
                v["observed_done"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        recovered,
        [
            ("add_member".to_owned(), true),
            ("set_grant".to_owned(), false)
        ]
    );
    // The next run reads only what is new: nothing is settled twice.
    assert!(std::fs::read_to_string(trail.with_extension("jsonl.offset")).is_ok());
    rec.run(true).await.expect("again");
    let again = std::fs::read_to_string(&trail).expect("trail");
    assert_eq!(again.matches("\"phase\":\"recovered\"").count(), 2);
    let _ = emu;
}

#[tokio::test]
async fn a_refused_project_grant_does_not_block_repository_grants_of_the_same_family() {
    // The same family (permissions-config writes), two kinds: a 403 on project grants (their
    // scope) leaves repository grants going.
    let (emu, tmp, _) = grants_setup(3).await;
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[("eng", &["ann"])]),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n[[grants]]\ngroup = \"developers\"\npermission = \"write\"\nprojects = [\"PROJ\"]\n[[project_grants]]\ngroup = \"developers\"\npermission = \"read\"\nprojects = [\"PROJ\"]\n",
    );
    emu.inject_fault(Fault {
        method: Some("PUT".into()),
        family: Some("project permissions-config write".into()),
        status: 403,
        body: r#"{"type":"error","error":{"message":"Your credentials lack one or more required privilege scopes.","detail":{"required":["admin:project:bitbucket"],"granted":[]}}}"#.into(),
        content_type: Some("application/json".into()),
        ..Fault::default()
    });
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert_eq!(report.count(OutcomeKind::Failed), 1);
    assert_eq!(
        report.count(OutcomeKind::Applied),
        3,
        "{:#?}",
        report.outcomes
    );
    assert_eq!(emu.state().group_grants.len(), 3);
    let _ = BlockReason::NotWorkspaceMember;
}

#[tokio::test]
async fn a_stop_lets_the_requests_in_flight_finish_audited_and_leaves_the_rest_for_the_next_run() {
    let (emu, tmp, cfg) = grants_setup(200).await;
    emu.set_latency(Duration::from_millis(15));
    let clients = Clients::new(&cfg).expect("clients");
    let members = clients.v1_groups();
    let trail = tmp.path().join("audit.jsonl");
    let audit = Audit::to_file(&trail).expect("audit");
    let stop = tokio_util::sync::CancellationToken::new();
    let applier = Applier {
        clients: &clients,
        members: &members,
        org: None,
        grant_writes: GrantWrites::PermissionsConfig,
        audit: &audit,
        run_id: "t",
        settings: ApplySettings {
            concurrency: 2,
            ..ApplySettings::default()
        },
        stop: Some(&stop),
    };
    let dev = GroupSlug::from_name("developers");
    let grants = write_grants(&dev, 200);
    let plan = Plan {
        changes: grants,
        ..Plan::default()
    };
    let (results, ()) = tokio::join!(applier.apply(&plan), async {
        while sent(&emu, "PUT", "permissions-config") < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
    });
    let done = results.iter().filter(|r| r.outcome.is_done()).count();
    let deferred = results
        .iter()
        .filter(|r| matches!(&r.outcome, Outcome::Deferred { why, .. } if why.contains("stopping")))
        .count();
    assert_eq!(done + deferred, 200, "{results:#?}");
    assert!(
        deferred >= 170,
        "only {deferred} left: the stop did not stop"
    );
    let puts = sent(&emu, "PUT", "permissions-config");
    assert_eq!(puts, done, "every request sent finished and counts");
    // Every change sent has its intent and its outcome: nothing is left dangling.
    let (dangling, _) = bbsync::apply::audit::dangling(&trail, 0).expect("scan");
    assert!(dangling.is_empty(), "{dangling:#?}");
    let finals = audit_finals(&std::fs::read_to_string(&trail).expect("trail"));
    assert_eq!(finals.len(), done, "the ones not started have no record");
}
