//! `offboarding.suspend_in_org`: offboarded people are suspended in the organisation directory
//! (Atlassian Admin API) once their memberships and direct grants are gone, and restored when
//! they come back active, but only the people bbsync suspended; protected accounts never.
//! Against the emulator, on an organisation-managed workspace (Admin API memberships) and on a
//! classic one (1.0 memberships, the suspension still through the Admin API).

mod common;

use bbsync::config::Config;
use bbsync::reconcile::Reconciler;
use bbsync_emulator::{Emulator, Fault};
use common::*;
use std::collections::BTreeSet;

fn suspend_config(emu: &Emulator, dir: &std::path::Path, ldif_text: &str, extra: &str) -> Config {
    let rules = format!(
        r#"
[[groups]]
name = "Developers"
from = ["eng"]
[protected]
accounts = ["{pat}"]
[offboarding]
state_dir = "state"
suspend_in_org = true
{extra}
[admin_api]
url = "{url}/admin"
org_id = "{ORG}"
api_key = "{ORG_KEY}"
"#,
        pat = acc("pat"),
        url = emu.base_url()
    );
    config(emu, dir, ldif_text, &rules)
}

fn suspended(emu: &Emulator) -> BTreeSet<String> {
    emu.state()
        .organisation
        .map(|o| o.suspended.into_iter().collect())
        .unwrap_or_default()
}

fn accs(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| acc(n)).collect()
}

fn developers(emu: &Emulator) -> BTreeSet<String> {
    emu.state()
        .groups
        .iter()
        .find(|g| g.name == "Developers")
        .map(|g| g.members.iter().cloned().collect())
        .unwrap_or_default()
}

/// The state file, as JSON.
fn state_of(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(dir.join("state/bbsync-state.json")).expect("state file"),
    )
    .expect("state JSON")
}

/// The requests of `emu` as "METHOD path", in order (for failure messages).
fn sent(emu: &Emulator) -> Vec<String> {
    emu.requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// One scenario on both kinds of workspace: bob leaves (removed, then suspended), zed
/// vanished (removed and suspended), cid left long ago and holds nothing (suspended), pat is
/// protected and disabled (never suspended), eve was suspended by an admin; then bob and eve
/// come back: bob is restored, eve (not bbsync's suspension) is not. Each converged run sends
/// no write, and a settled leaver is not asked again.
#[tokio::test]
async fn leavers_are_suspended_after_their_removals_and_only_bbsyncs_suspensions_are_restored() {
    for managed in [true, false] {
        let mut s = seed(&["ann", "bob", "cid", "eve", "pat", "zed"]);
        s.groups
            .push(group("Developers", &["ann", "bob", "pat", "zed"]));
        let emu = start(org_seed(s, managed, &["eve"])).await;
        let tmp = tempfile::tempdir().expect("tmp");
        let people = [
            ("ann", false),
            ("bob", true),
            ("cid", true),
            ("eve", false),
            ("pat", true),
        ];
        let dir = ldif(&people, &[("eng", &["ann", "bob", "pat"])]);
        let rec = Reconciler::new(suspend_config(&emu, tmp.path(), &dir, "")).expect("rec");
        let report = rec.run(true).await.expect("run");
        assert!(report.ok(), "{managed}: {:#?}", report.outcomes);
        assert_eq!(developers(&emu), accs(&["ann", "pat"]), "{managed}");
        assert_eq!(
            suspended(&emu),
            accs(&["bob", "cid", "eve", "zed"]),
            "{managed}"
        );
        // bob's suspension was sent after his removal had succeeded (the audit trail is in
        // the order things happened), and the change was audited with why.
        let trail = std::fs::read_to_string(tmp.path().join("audit.jsonl")).expect("audit");
        let lines: Vec<serde_json::Value> = trail
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let bob = acc("bob");
        let at = |op: &str, with_outcome: bool| {
            lines
                .iter()
                .position(|r| {
                    r["change"]["op"] == op
                        && r["change"]["account_id"] == bob.as_str()
                        && r.get("outcome").is_some() == with_outcome
                })
                .unwrap_or_else(|| panic!("{op} of bob: {trail}"))
        };
        assert!(
            at("remove_member", true) < at("suspend_in_org", false),
            "{managed}: {trail}"
        );
        let finals = audit_finals(&trail);
        let suspensions: Vec<&serde_json::Value> = finals
            .iter()
            .filter(|r| r["change"]["op"] == "suspend_in_org")
            .collect();
        assert_eq!(suspensions.len(), 3, "{managed}: {finals:#?}");
        assert!(suspensions
            .iter()
            .all(|r| r["outcome"]["result"] == "applied" || r["outcome"]["result"] == "accepted"));
        let text = bbsync::report::human(&report);
        assert!(
            text.contains(&format!(
                "suspend Person bob ({}) in the organisation directory",
                acc("bob")
            )),
            "{text}"
        );

        // Converged: nothing planned, nothing written, and the settled leavers not asked.
        emu.reset_requests();
        let again = rec.run(true).await.expect("second run");
        assert!(
            again.plan.is_empty(),
            "{managed}: {:#?}",
            again.plan.changes
        );
        assert!(writes(&emu).is_empty(), "{managed}: {:?}", writes(&emu));
        let asked = emu
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/users/search"))
            .count();
        assert_eq!(
            asked,
            usize::from(managed),
            "{managed}: only the membership read searches users: {:#?}",
            sent(&emu)
        );

        // bob and eve are back: bob is restored (bbsync suspended him), eve is not.
        emu.reset_requests();
        let people = [
            ("ann", false),
            ("bob", false),
            ("cid", true),
            ("eve", false),
            ("pat", true),
        ];
        let dir = ldif(&people, &[("eng", &["ann", "bob", "pat"])]);
        drop(rec);
        let rec = Reconciler::new(suspend_config(&emu, tmp.path(), &dir, "")).expect("rec");
        // The first restore fails: bob stays bbsync's, and the next run restores him.
        emu.inject_fault(Fault {
            path_contains: "/restore".into(),
            status: 500,
            times: Some(1),
            ..Default::default()
        });
        let failed = rec.run(true).await.expect("restore fails");
        assert!(!failed.ok());
        assert!(suspended(&emu).contains(&acc("bob")));
        assert!(state_of(tmp.path())["org_suspended"]
            .get(acc("bob"))
            .is_some());
        let report = rec.run(true).await.expect("come back");
        assert!(report.ok(), "{managed}: {:#?}", report.outcomes);
        assert!(state_of(tmp.path())["org_suspended"]
            .get(acc("bob"))
            .is_none());
        assert_eq!(suspended(&emu), accs(&["cid", "eve", "zed"]), "{managed}");
        assert_eq!(developers(&emu), accs(&["ann", "bob", "pat"]), "{managed}");
        let restores: Vec<String> = report
            .plan
            .changes
            .iter()
            .filter(|p| matches!(p.change, bbsync::plan::Change::RestoreInOrg { .. }))
            .map(|p| format!("{} [{}]", p.change, p.reason))
            .collect();
        assert_eq!(restores.len(), 1, "{restores:?}");
        assert!(restores[0].contains(&acc("bob")), "{restores:?}");
        assert!(
            restores[0].contains("offboarding.suspend_in_org"),
            "{restores:?}"
        );
        emu.reset_requests();
        let again = rec.run(true).await.expect("converged");
        assert!(
            again.plan.is_empty(),
            "{managed}: {:#?}",
            again.plan.changes
        );
        assert!(writes(&emu).is_empty(), "{managed}: {:?}", writes(&emu));
    }
}

/// A removal that fails keeps the person unsuspended (blocked, with why) and visible; a
/// suspension that fails after a vanished person's memberships are gone is kept pending in
/// the state file and sent by the next run, although the person is no longer in any group.
#[tokio::test]
async fn a_failed_removal_holds_the_suspension_and_a_failed_suspension_is_not_forgotten() {
    let mut s = seed(&["ann", "bob", "zed"]);
    s.groups.push(group("Developers", &["ann", "bob", "zed"]));
    let emu = start(org_seed(s, true, &[])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = ldif(
        &[("ann", false), ("bob", true)],
        &[("eng", &["ann", "bob"])],
    );
    emu.inject_fault(Fault {
        method: Some("DELETE".into()),
        path_contains: acc("bob"),
        status: 500,
        ..Default::default()
    });
    emu.inject_fault(Fault {
        method: Some("POST".into()),
        path_contains: format!("users/{}/suspend", acc("zed")),
        status: 503,
        ..Default::default()
    });
    let cfg = || suspend_config(&emu, tmp.path(), &dir, "");
    let report = Reconciler::new(cfg())
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(!report.ok());
    let outcome = |who: &str, op: &str| {
        report
            .outcomes
            .iter()
            .find(|o| {
                o.change.kind().label() == op
                    && o.change.account().map(|a| a.as_str()) == Some(&acc(who))
            })
            .map(|o| o.outcome.clone())
            .unwrap_or_else(|| panic!("no {op} for {who}: {:#?}", report.outcomes))
    };
    assert!(
        matches!(
            outcome("bob", "suspend_in_org"),
            bbsync::apply::Outcome::Blocked {
                reason: bbsync::plan::BlockReason::RemovalsPending { .. }
            }
        ),
        "{:#?}",
        report.outcomes
    );
    assert!(matches!(
        outcome("zed", "suspend_in_org"),
        bbsync::apply::Outcome::Failed { .. }
    ));
    assert!(outcome("zed", "remove_member").is_done());
    assert!(suspended(&emu).is_empty());
    assert_eq!(developers(&emu), accs(&["ann", "bob"]));
    let state = std::fs::read_to_string(tmp.path().join("state/bbsync-state.json")).expect("state");
    assert!(
        state.contains("org_pending") && state.contains(&acc("zed")),
        "{state}"
    );

    // The Admin API works again: bob is removed then suspended; zed, in no group any more, is
    // suspended from the pending list.
    emu.clear_faults();
    let report = Reconciler::new(cfg())
        .expect("rec")
        .run(true)
        .await
        .expect("again");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert_eq!(suspended(&emu), accs(&["bob", "zed"]));
    assert_eq!(developers(&emu), accs(&["ann"]));
    let report = Reconciler::new(cfg())
        .expect("rec")
        .run(true)
        .await
        .expect("converged");
    assert!(report.plan.is_empty(), "{:#?}", report.plan.changes);
}

/// A plan shows the suspensions; the safety limits count them; the poll's snapshot is not
/// needed for them. Held suspensions are not sent.
#[tokio::test]
async fn suspensions_are_planned_and_held_by_the_safety_limits() {
    let s = seed(&["ann", "l1", "l2", "l3"]);
    let emu = start(org_seed(s, false, &[])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = ldif(
        &[("ann", false), ("l1", true), ("l2", true), ("l3", true)],
        &[("eng", &["ann"])],
    );
    let cfg = suspend_config(&emu, tmp.path(), &dir, "[safety]\nmax_removals = 2\n");
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    let suspensions = report
        .plan
        .changes
        .iter()
        .filter(|p| matches!(p.change, bbsync::plan::Change::SuspendInOrg { .. }))
        .count();
    assert_eq!(suspensions, 3, "{:#?}", report.plan.changes);
    assert!(!report.plan.held.is_empty());
    assert!(suspended(&emu).is_empty());
    assert!(
        writes(&emu).iter().all(|w| !w.contains("/suspend")),
        "{:?}",
        writes(&emu)
    );
}

/// Where 250 leavers stand is read in 3 searches (100 accounts a request), not one per person
/// (and read back by apply.verify in 3 more);
/// the next run asks none of them again (settled until offboarding.recheck_secs).
#[tokio::test]
async fn the_organisation_status_is_read_in_pages_of_a_hundred() {
    let names: Vec<String> = (0..250).map(|i| format!("l{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut people: Vec<(&str, bool)> = refs.iter().map(|p| (*p, true)).collect();
    people.push(("ann", false));
    let mut all = refs.clone();
    all.push("ann");
    let emu = start(org_seed(seed(&all), false, &[])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = ldif(&people, &[("eng", &["ann"])]);
    let cfg = || suspend_config(&emu, tmp.path(), &dir, "[safety]\nmax_removals = 1000\n");
    let searches = |emu: &Emulator| {
        emu.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/users/search"))
            .count()
    };
    let report = Reconciler::new(cfg())
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.plan.held);
    assert_eq!(suspended(&emu).len(), 250);
    // 3 before planning, 3 more for apply.verify reading the suspensions back.
    assert_eq!(searches(&emu), 6);
    emu.reset_requests();
    let report = Reconciler::new(cfg())
        .expect("rec")
        .run(true)
        .await
        .expect("again");
    assert!(report.plan.is_empty());
    assert_eq!(searches(&emu), 0);
}

#[test]
fn suspend_in_org_needs_the_admin_api_and_a_state_dir() {
    let base = "mode = \"dry-run\"\n[bitbucket]\nworkspace = \"acme\"\n[credentials.a]\nkind = \"access_token\"\ntoken = \"t\"\n[source]\nkind = \"ldif\"\npath = \"d.ldif\"\n[[groups]]\nname = \"x\"\nfrom = [\"y\"]\n";
    let err = Config::from_toml_str(
        &format!("{base}[offboarding]\nsuspend_in_org = true\n"),
        "t.toml",
        std::path::Path::new("."),
    )
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("offboarding.suspend_in_org: true needs an [admin_api] table"),
        "{err}"
    );
    assert!(
        err.contains("offboarding.state_dir is required when offboarding.suspend_in_org"),
        "{err}"
    );
    let ok = Config::from_toml_str(
        &format!("{base}[offboarding]\nsuspend_in_org = true\nstate_dir = \"s\"\n[admin_api]\norg_id = \"o\"\napi_key = \"k\"\n"),
        "t.toml",
        std::path::Path::new("."),
    )
    .expect("valid");
    assert!(ok.offboarding.suspend_in_org);
    let off = Config::from_toml_str(base, "t.toml", std::path::Path::new(".")).expect("valid");
    assert!(!off.offboarding.suspend_in_org);
}

fn outcome_of(
    report: &bbsync::reconcile::RunReport,
    who: &str,
    op: &str,
) -> Option<bbsync::apply::Outcome> {
    report
        .outcomes
        .iter()
        .find(|o| {
            o.change.kind().label() == op
                && o.change.account().map(|a| a.as_str()) == Some(acc(who).as_str())
        })
        .map(|o| o.outcome.clone())
}

/// The workspace owner is protected even when the directory has them disabled and they hold
/// nothing bbsync manages (so nothing else in the run asks who the owner is).
#[tokio::test]
async fn the_workspace_owner_is_never_suspended() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &["ann"]));
    let emu = start(org_seed(s, false, &[])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = ldif(&[("ann", false), ("admin", true)], &[("eng", &["ann"])]);
    let report = Reconciler::new(suspend_config(&emu, tmp.path(), &dir, ""))
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.plan.is_empty(), "{:#?}", report.plan.changes);
    assert!(suspended(&emu).is_empty());
}

/// A direct grant that cannot be removed holds the person's memberships and their suspension;
/// a failing suspend endpoint does not stop anyone else's removals (its circuit is its own).
#[tokio::test]
async fn a_failed_direct_grant_holds_the_suspension_and_failed_suspensions_stop_no_removal() {
    let mut s = seed(&["ann", "bob", "l1", "l2", "l3"]);
    s.groups
        .push(group("Developers", &["ann", "bob", "l1", "l2", "l3"]));
    s.projects.push(bbsync_emulator::SeedProject {
        key: "CORE".into(),
        ..Default::default()
    });
    s.repositories.push(bbsync_emulator::SeedRepo {
        slug: "app".into(),
        project: "CORE".into(),
        ..Default::default()
    });
    s.user_grants = vec![bbsync_emulator::SeedUserGrant {
        repo: "app".into(),
        account_id: acc("bob"),
        permission: "write".into(),
    }];
    let emu = start(org_seed(s, true, &[])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let people = [
        ("ann", false),
        ("bob", true),
        ("l1", true),
        ("l2", true),
        ("l3", true),
    ];
    let dir = ldif(&people, &[("eng", &["ann", "bob", "l1", "l2", "l3"])]);
    emu.inject_fault(Fault {
        method: Some("DELETE".into()),
        path_contains: format!("permissions-config/users/{}", acc("bob")),
        status: 500,
        ..Default::default()
    });
    emu.inject_fault(Fault {
        path_contains: "/suspend".into(),
        status: 500,
        ..Default::default()
    });
    let mut cfg = suspend_config(
        &emu,
        tmp.path(),
        &dir,
        "[scope]\n[scope.include]\nprojects = [\"CORE\"]\n",
    );
    cfg.apply.circuit_failures = 1;
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(
        matches!(
            outcome_of(&report, "bob", "suspend_in_org"),
            Some(bbsync::apply::Outcome::Blocked {
                reason: bbsync::plan::BlockReason::RemovalsPending { .. }
            })
        ),
        "{:#?}",
        report.outcomes
    );
    assert!(
        matches!(
            outcome_of(&report, "bob", "remove_member"),
            Some(bbsync::apply::Outcome::Blocked {
                reason: bbsync::plan::BlockReason::DirectGrantsPending { .. }
            })
        ),
        "{:#?}",
        report.outcomes
    );
    // The three other leavers are out of the group although every suspension failed.
    assert_eq!(developers(&emu), accs(&["ann", "bob"]));
    for who in ["l1", "l2", "l3"] {
        assert!(outcome_of(&report, who, "remove_member").is_some_and(|o| o.is_done()));
        assert!(!outcome_of(&report, who, "suspend_in_org").is_some_and(|o| o.is_done()));
    }
    assert!(suspended(&emu).is_empty());
}

/// A suspension whose answer was lost (served, then a 502) is bbsync's: found suspended by the
/// next run, it is restored when the person comes back. One the organisation answered 409
/// for (already suspended) is not bbsync's, and is never restored.
#[tokio::test]
async fn a_lost_answer_is_bbsyncs_suspension_and_an_already_suspended_one_is_not() {
    let mut s = seed(&["ann", "bob", "cid"]);
    s.groups.push(group("Developers", &["ann", "bob", "cid"]));
    let emu = start(org_seed(s, false, &[])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    emu.inject_fault(Fault {
        path_contains: format!("users/{}/suspend", acc("bob")),
        status: 502,
        after_serving: true,
        times: Some(1),
        ..Default::default()
    });
    emu.inject_fault(Fault {
        path_contains: format!("users/{}/suspend", acc("cid")),
        status: 409,
        body: r#"{"errors":[{"status":"409","code":"ADMIN-409","title":"Already suspended"}]}"#
            .into(),
        content_type: Some("application/json".into()),
        times: Some(1),
        ..Default::default()
    });
    let gone = ldif(
        &[("ann", false), ("bob", true), ("cid", true)],
        &[("eng", &["ann", "bob", "cid"])],
    );
    let rec = Reconciler::new(suspend_config(&emu, tmp.path(), &gone, "")).expect("rec");
    let report = rec.run(true).await.expect("run");
    assert!(matches!(
        outcome_of(&report, "bob", "suspend_in_org"),
        Some(bbsync::apply::Outcome::Failed { .. })
    ));
    assert_eq!(
        outcome_of(&report, "cid", "suspend_in_org"),
        Some(bbsync::apply::Outcome::AlreadyDone)
    );
    assert_eq!(suspended(&emu), accs(&["bob"]));
    // An administrator suspends cid (the 409 was right after all).
    let mut st = emu.state();
    if let Some(o) = st.organisation.as_mut() {
        o.suspended.push(acc("cid"));
    }
    emu.replace_state(st).expect("state");
    let report = rec.run(true).await.expect("settles");
    assert!(report.plan.is_empty(), "{:#?}", report.plan.changes);
    drop(rec);
    // Both come back: bob is restored, cid (not bbsync's suspension) is not.
    let back = ldif(
        &[("ann", false), ("bob", false), ("cid", false)],
        &[("eng", &["ann", "bob", "cid"])],
    );
    let report = Reconciler::new(suspend_config(&emu, tmp.path(), &back, ""))
        .expect("rec")
        .run(true)
        .await
        .expect("back");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert_eq!(suspended(&emu), accs(&["cid"]));
}

/// A suspension an interrupted run sent (its intent in the audit trail, no outcome) and the
/// organisation shows done is settled as bbsync's: the person is restored when back.
#[tokio::test]
async fn an_interrupted_suspension_is_settled_as_bbsyncs() {
    let mut s = seed(&["ann", "bob"]);
    s.groups.push(group("Developers", &["ann", "bob"]));
    let emu = start(org_seed(s, false, &["bob"])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let audit =
        bbsync::apply::audit::Audit::to_file(&tmp.path().join("audit.jsonl")).expect("audit");
    let bob = bbsync::model::AccountId::parse(&acc("bob")).expect("id");
    audit
        .intent(
            "crashed",
            &bbsync::plan::Change::SuspendInOrg {
                account_id: bob,
                display_name: "Person bob".into(),
            },
            &bbsync::plan::Reason::Leaver {
                fact: "nsAccountLock=TRUE".into(),
            },
        )
        .expect("intent");
    drop(audit);
    let back = ldif(
        &[("ann", false), ("bob", false)],
        &[("eng", &["ann", "bob"])],
    );
    let report = Reconciler::new(suspend_config(&emu, tmp.path(), &back, ""))
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert!(
        outcome_of(&report, "bob", "restore_in_org").is_some_and(|o| o.is_done()),
        "{:#?}",
        report.outcomes
    );
    assert!(suspended(&emu).is_empty());
}

/// When the state file cannot be written before the apply, a vanished person to be suspended
/// keeps their memberships (what keeps them visible) and is not suspended; a leaver, visible
/// anyway, is removed and suspended.
#[tokio::test]
async fn an_unwritable_state_file_holds_the_vanished_not_the_leavers() {
    let mut s = seed(&["ann", "bob", "zed", "yan"]);
    s.groups
        .push(group("Developers", &["ann", "bob", "zed", "yan"]));
    // yan vanished too, but is suspended already: nothing to remember, removed as usual.
    let emu = start(org_seed(s, true, &["yan"])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    // The state file's temporary name is taken by a directory: every save fails.
    std::fs::create_dir_all(
        tmp.path()
            .join("state")
            .join(format!(".bbsync-state.{}.tmp", std::process::id())),
    )
    .expect("dir");
    let dir = ldif(
        &[("ann", false), ("bob", true)],
        &[("eng", &["ann", "bob"])],
    );
    let report = Reconciler::new(suspend_config(&emu, tmp.path(), &dir, ""))
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    for op in ["remove_member", "suspend_in_org"] {
        assert!(
            matches!(
                outcome_of(&report, "zed", op),
                Some(bbsync::apply::Outcome::Blocked {
                    reason: bbsync::plan::BlockReason::StateUnwritable { .. }
                })
            ),
            "{op}: {:#?}",
            report.outcomes
        );
        assert!(outcome_of(&report, "bob", op).is_some_and(|o| o.is_done()));
    }
    assert!(outcome_of(&report, "yan", "remove_member").is_some_and(|o| o.is_done()));
    assert_eq!(developers(&emu), accs(&["ann", "zed"]));
    assert_eq!(suspended(&emu), accs(&["bob", "yan"]));
    assert!(
        report
            .plan
            .warnings
            .iter()
            .any(|w| w.contains("vanished people to be suspended")),
        "{:?}",
        report.plan.warnings
    );
}

/// An administrator's hand is respected both ways: someone bbsync suspended and an admin
/// restored is no longer bbsync's once back; someone whose suspension bbsync could not send
/// (refused, 403) and an admin suspended instead is never restored by bbsync.
#[tokio::test]
async fn an_administrators_restore_or_suspension_is_never_taken_for_bbsyncs() {
    let mut s = seed(&["ann", "bob", "cid"]);
    s.groups.push(group("Developers", &["ann", "bob", "cid"]));
    let emu = start(org_seed(s, false, &[])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    emu.inject_fault(Fault {
        path_contains: format!("users/{}/suspend", acc("cid")),
        status: 403,
        times: Some(1),
        ..Default::default()
    });
    let gone = ldif(
        &[("ann", false), ("bob", true), ("cid", true)],
        &[("eng", &["ann", "bob", "cid"])],
    );
    let cfg = |dir: &str| suspend_config(&emu, tmp.path(), dir, "");
    Reconciler::new(cfg(&gone))
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert_eq!(suspended(&emu), accs(&["bob"]));
    // The admin restores bob and suspends cid by hand.
    let mut st = emu.state();
    if let Some(o) = st.organisation.as_mut() {
        o.suspended = vec![acc("cid")];
    }
    emu.replace_state(st).expect("state");
    // cid, still a leaver, is found suspended: settled, not bbsync's.
    let report = Reconciler::new(cfg(&gone))
        .expect("rec")
        .run(true)
        .await
        .expect("again");
    let planned: Vec<String> = report
        .plan
        .changes
        .iter()
        .map(|p| p.change.to_string())
        .collect();
    assert!(
        planned.iter().all(|c| !c.contains(&acc("cid"))),
        "{planned:?}"
    );
    // Both come back: neither is restored or suspended by bbsync, and bob is not bbsync's.
    let back = ldif(
        &[("ann", false), ("bob", false), ("cid", false)],
        &[("eng", &["ann", "bob", "cid"])],
    );
    let report = Reconciler::new(cfg(&back))
        .expect("rec")
        .run(true)
        .await
        .expect("back");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert!(
        report
            .plan
            .changes
            .iter()
            .all(|p| p.change.kind().label() != "restore_in_org"),
        "{:#?}",
        report.plan.changes
    );
    assert_eq!(suspended(&emu), accs(&["cid"]));
    assert_eq!(state_of(tmp.path())["org_suspended"], serde_json::json!({}));
}
